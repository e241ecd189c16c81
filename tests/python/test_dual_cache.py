"""The seed's "dual cache" test at the SQL and psycopg level, with pghub.publish_table.

A table is published; two caches, each fed by a LISTEN connection of its own on its own
thread, follow it through seven statements. Per statement the events are applied in one of two
ways: re-read the affected keys from the table (a key that is gone leaves the cache), or apply
the row data that per-row events carry. After each statement the writer sends a sentinel event
on the topic; once both caches have reached it they are compared row by row with the table.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pghub import decode_payload

WAIT_SECONDS = 30.0
TOPIC = "test_stm"
Row = tuple[str, int]

FIRST_SIX_STATEMENTS = [
    "INSERT INTO test SELECT g, 'quartile 4', g % 16 FROM generate_series(0, 1999) g",
    "UPDATE test SET col1 = 'quartile 3' WHERE id < 1500",
    "UPDATE test SET id = id + 10000 WHERE id % 7 = 0",
    "DELETE FROM test WHERE id % 5 = 0",
    "INSERT INTO test SELECT g, 'quartile 1', g % 16 FROM generate_series(20000, 20499) g",
    "UPDATE test SET col2 = col2 + 1",
]
LAST_STATEMENTS = {"delete": "DELETE FROM test", "truncate": "TRUNCATE test"}


class Cache:
    """A copy of table ``test`` (id -> (col1, col2)) kept in step by events alone."""

    def __init__(self, dsn: str, apply_data: bool) -> None:
        self.apply_data = apply_data
        self.rows: dict[int, Row] = {}
        self.events = 0
        self._listening = psycopg.connect(dsn, autocommit=True)
        self._listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier(TOPIC)))
        self._reading = psycopg.connect(dsn, autocommit=True)
        self._reached = -1
        self._failure: BaseException | None = None
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                for note in self._listening.notifies(timeout=0.2):
                    self._apply(*decode_payload(note.payload))
        except BaseException as exc:  # reported to the waiting test, never lost in the thread
            with self._changed:
                self._failure = exc
                self._changed.notify_all()

    def _apply(self, key: tuple[int, ...], value: Any) -> None:
        if "sentinel" in value:
            with self._changed:
                self._reached = value["sentinel"]
                self._changed.notify_all()
            return
        self.events += 1
        if value["op"] == "tru":
            self.rows.clear()
        elif "data" in value and self.apply_data:
            if "old_key" in value:
                self.rows.pop(value["old_key"][0], None)
            data = value["data"]
            if value["op"] == "del":
                self.rows.pop(data["id"], None)
            else:
                self.rows[data["id"]] = (data["col1"], data["col2"])
        else:
            self._reread(list(key) + value.get("old_key", []))

    def _reread(self, ids: list[int]) -> None:
        found = {
            row_id: (col1, col2)
            for row_id, col1, col2 in self._reading.execute(
                "SELECT id, col1, col2 FROM test WHERE id = ANY(%s)", [ids]
            )
        }
        for row_id in ids:
            if row_id in found:
                self.rows[row_id] = found[row_id]
            else:
                self.rows.pop(row_id, None)

    def wait_for(self, mark: int) -> None:
        with self._changed:
            done = self._changed.wait_for(
                lambda: self._reached >= mark or self._failure is not None, WAIT_SECONDS
            )
        if self._failure is not None:
            raise AssertionError("the cache's listener failed") from self._failure
        assert done, f"sentinel {mark} not reached within {WAIT_SECONDS} s"

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(WAIT_SECONDS)
        self._listening.close()
        self._reading.close()


@pytest.fixture
def caches(dsn: str, request: pytest.FixtureRequest) -> Iterator[list[Cache]]:
    pair = [Cache(dsn, apply_data=request.param), Cache(dsn, apply_data=request.param)]
    yield pair
    for cache in pair:
        cache.close()


@pytest.mark.parametrize("last", sorted(LAST_STATEMENTS))
@pytest.mark.parametrize(
    ("level", "caches"),
    [("statement", False), ("row", True)],
    ids=["per statement, re-read", "per row, row data"],
    indirect=["caches"],
)
def test_two_caches_stay_in_step_with_the_table(
    conn: psycopg.Connection[Any], caches: list[Cache], level: str, last: str
) -> None:
    conn.execute(
        "CREATE TABLE test (id bigint PRIMARY KEY, col1 varchar(40) NOT NULL, col2 int NOT NULL)"
    )
    row = conn.execute(
        "SELECT pghub.publish_table('test', %s, level => %s, with_data => %s)",
        [TOPIC, level, level == "row"],
    ).fetchone()
    assert row == (TOPIC,)

    sizes = []
    for mark, statement in enumerate([*FIRST_SIX_STATEMENTS, LAST_STATEMENTS[last]]):
        conn.execute(statement)
        conn.execute("SELECT pghub.notify(%s, NULL, %s)", [TOPIC, Jsonb({"sentinel": mark})])
        table = {
            row_id: (col1, col2)
            for row_id, col1, col2 in conn.execute("SELECT id, col1, col2 FROM test")
        }
        sizes.append(len(table))
        for cache in caches:
            cache.wait_for(mark)
            assert cache.rows == table, f"cache differs from the table after: {statement}"
    assert sizes == [2000, 2000, 2000, 1600, 2100, 2100, 0]
    assert all(cache.events > 0 for cache in caches)
