"""Durable topics under faults: 8 writers, a hub whose backend is killed again and again, a
server restart, then the consumer's own process killed with SIGKILL and started again.

The promise checked (docs/durable.md, "From Python"): within one hub's lifetime every event
committed on the topic arrives exactly once, whatever happens to the connections and the
server; each writer's events arrive in the order it committed them; across a crash of the
consumer's process what it acknowledged never comes again and nothing is missing.

Writers commit a random 1 to 8 events a transaction, sleeping before some commits, so that
commit order differs from transaction-id order. Each records, in the same transaction, how far
it got, so that after the restart it resumes exactly after what committed. Runs on a private
server (pgserver.py) that it may crash; the consumer is tests/python/durable_worker.py.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pgserver
import psycopg
import pytest
from pgserver import Server

pytestmark = pytest.mark.slow

TOPIC = "faults"
NAME = "fault-consumer"
WRITERS = 8
EVENTS = int(os.environ.get("PGHUB_FAULT_EVENTS", "20000"))  # per writer, before the SIGKILL
MORE = EVENTS // 10  # per writer, written around the SIGKILL
CATCH_UP = 300  # seconds for the consumer to receive what was written
STALL = 30  # seconds without a new event before the test gives up on the rest
WRITER_APP = "faults-writer"
WORKER = Path(__file__).with_name("durable_worker.py")

Key = tuple[int, int]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with (
        pgserver.workdir("pghub-durable-faults-") as root,
        pgserver.running_server(root, "main") as server,
        server.connect() as conn,
    ):
        conn.execute("CREATE EXTENSION pghub")
        conn.execute("SELECT pghub.make_durable(%s)", [TOPIC])
        conn.execute("CREATE TABLE progress (writer integer PRIMARY KEY, upto integer NOT NULL)")
        yield server


class Writer(threading.Thread):
    """Commits events ``[number, seq]`` for seq in ``first..last``, resuming after a lost
    connection from what its progress row says committed."""

    def __init__(self, server: Server, number: int, first: int, last: int) -> None:
        super().__init__(name=f"writer-{number}", daemon=True)
        self.server, self.number, self.first, self.last = server, number, first, last
        self.rng = random.Random(number * 7919 + first)
        self.error: BaseException | None = None
        self.reconnects = 0
        self.committed = first - 1  # the last seq known committed

    def run(self) -> None:
        deadline = time.monotonic() + CATCH_UP
        seq = self.first
        while seq <= self.last:
            try:
                with self.server.connect(application_name=WRITER_APP) as conn:
                    seq = max(seq, self._committed(conn) + 1)
                    while seq <= self.last:
                        seq = self._commit_some(conn, seq)
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    self.error = exc
                    return
                self.reconnects += 1
                time.sleep(0.1)
            except BaseException as exc:
                self.error = exc
                return

    def _committed(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT upto FROM progress WHERE writer = %s", [self.number]).fetchone()
        return int(row[0]) if row else self.first - 1

    def _commit_some(self, conn: psycopg.Connection[Any], seq: int) -> int:
        upto = min(seq + self.rng.randint(1, 8) - 1, self.last)
        with conn.transaction():
            conn.execute(
                "SELECT pghub.notify(%s, ARRAY[%s, s]::bigint[], NULL)"
                " FROM generate_series(%s::integer, %s::integer) AS s ORDER BY s",
                [TOPIC, self.number, seq, upto],
            )
            conn.execute(
                "INSERT INTO progress VALUES (%s, %s)"
                " ON CONFLICT (writer) DO UPDATE SET upto = excluded.upto",
                [self.number, upto],
            )
            if self.rng.random() < 0.3:
                time.sleep(self.rng.random() * 0.004)  # commit later than the xid says
        self.committed = upto
        return upto + 1


def write(server: Server, first: int, last: int) -> list[Writer]:
    writers = [Writer(server, n, first, last) for n in range(WRITERS)]
    for w in writers:
        w.start()
    return writers


def finish(writers: list[Writer]) -> None:
    for w in writers:
        w.join(CATCH_UP)
        assert not w.is_alive(), f"{w.name} did not finish within {CATCH_UP} s"
        assert w.error is None, f"{w.name} failed: {w.error!r}"


def progress(writers: list[Writer]) -> float:
    """How much of their work the writers have committed, 0 to 1."""
    done = sum(w.committed - w.first + 1 for w in writers)
    return done / sum(w.last - w.first + 1 for w in writers)


def await_progress(writers: list[Writer], share: float) -> None:
    deadline = time.monotonic() + CATCH_UP
    while progress(writers) < share:
        assert any(w.is_alive() for w in writers), "the writers stopped early"
        assert time.monotonic() < deadline, f"the writers did not reach {share:.0%}"
        time.sleep(0.01)


def kill_hub_backends(server: Server) -> int:
    """Terminate every client backend but the writers' and our own: the hub's sessions."""
    with server.connect() as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            " AND application_name <> %s",
            [WRITER_APP],
        ).fetchone()
    return int(killed[0]) if killed else 0


class Worker:
    """durable_worker.py in a process of its own, and what its callback recorded."""

    def __init__(self, server: Server, out: Path) -> None:
        self.out = out
        out.touch()
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), server.dsn(), TOPIC, NAME, str(out)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "ready", or EOF if it died
        assert line.strip() == "ready", f"the worker did not start: {line!r}"

    def received(self) -> list[Key]:
        lines = self.out.read_text(encoding="ascii").splitlines()
        if lines and not self.out.read_text(encoding="ascii").endswith("\n"):
            lines = lines[:-1]  # a line half written when we looked
        return [(int(w), int(s)) for w, s in (line.split() for line in lines)]

    def wait_for(self, count: int, what: str) -> list[Key]:
        """Wait until the callback has seen ``count`` events; fail if it sees none for STALL
        seconds (a lost event would otherwise hold the test for CATCH_UP)."""
        deadline = time.monotonic() + CATCH_UP
        seen, moved = 0, time.monotonic()
        while len(got := self.received()) < count:
            assert self.process.poll() is None, f"the worker died ({self.process.returncode})"
            now = time.monotonic()
            if len(got) > seen:
                seen, moved = len(got), now
            if now > deadline or now - moved > STALL:
                raise AssertionError(f"{what}: {len(got)} of {count} events came")
            time.sleep(0.05)
        return got

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def expected(first: int, last: int) -> set[Key]:
    return {(w, s) for w in range(WRITERS) for s in range(first, last + 1)}


def assert_once_in_order(got: list[Key], what: str) -> None:
    twice = [key for key, n in Counter(got).items() if n > 1]
    assert not twice, f"{what}: {len(twice)} events came more than once, e.g. {twice[:5]}"
    last: dict[int, int] = {}
    for w, s in got:
        assert s > last.get(w, 0), f"{what}: writer {w}'s event {s} came after {last[w]}"
        last[w] = s


def unacknowledged(server: Server) -> list[Key]:
    """The events after the named consumer's acknowledged position, read with SQL alone."""
    keys: list[Key] = []
    with server.connect() as conn:
        row = conn.execute("SELECT pghub.consumer_position(%s, %s)", [NAME, TOPIC]).fetchone()
        assert row is not None
        position = row[0]
        while True:
            rows = conn.execute(
                "SELECT pos, (pghub.decode(payload)).key FROM pghub.read(%s, %s, 10000)",
                [TOPIC, position],
            ).fetchall()
            keys += [(int(k[0]), int(k[1])) for _, k in rows if k is not None]
            position = rows[-1][0]
            if all(k is None for _, k in rows):
                return keys


def test_each_event_once_across_kills_and_a_restart_at_least_once_across_sigkill(
    server: Server, tmp_path: Path
) -> None:
    first = Worker(server, tmp_path / "first.txt")
    try:
        writers = write(server, 1, EVENTS)
        kills = 0
        for share in (0.1, 0.2, 0.3, 0.5, 0.7, 0.85):  # while the writers write
            await_progress(writers, share)
            if share == 0.5:
                server.stop()  # crash the server, writers and hub alike
                server.start()
            else:
                kills += kill_hub_backends(server)
        finish(writers)
        assert kills >= 5, "the hub's sessions were hardly ever there to kill"
        assert sum(w.reconnects for w in writers) >= WRITERS, "the restart was never seen"

        got = first.wait_for(WRITERS * EVENTS, "after kills and a restart")
        time.sleep(1.0)  # time for a duplicate to show
        got = first.received()
        assert_once_in_order(got, "the first process")
        assert set(got) == expected(1, EVENTS)

        # Now a crash of the consumer's process in the middle of a stream.
        writers = write(server, EVENTS + 1, EVENTS + MORE)
        first.wait_for(WRITERS * EVENTS + WRITERS * MORE // 3, "before the SIGKILL")
        first.kill()
        finish(writers)
    finally:
        first.stop()
    before_crash = first.received()
    assert_once_in_order(before_crash, "the first process")
    owed = unacknowledged(server)  # what the second process must receive: no more, no less

    second = Worker(server, tmp_path / "second.txt")
    try:
        got = second.wait_for(len(owed), "after the SIGKILL")
        time.sleep(1.0)
        got = second.received()
    finally:
        second.stop()
    assert_once_in_order(got, "the second process")
    assert got == owed, "the second process received other events than the unacknowledged"
    assert set(before_crash) | set(got) == expected(1, EVENTS + MORE), "events are missing"
    acknowledged = set(before_crash) - set(owed)
    assert not acknowledged & set(got), "acknowledged events came again"
