"""Table publishing by trigger: pghub.publish_table, row_trigger and statement_trigger.

Each test writes to a table from one autocommit connection and receives with a psycopg LISTEN
connection of its own. After the statements under test the writer sends a sentinel event on
the same channel in a later transaction: PostgreSQL delivers notifications in commit order, so
everything the statements sent has arrived once the sentinel has, and "nothing was sent" can be
asserted exactly. Every wait is bounded.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pghub import decode_payload, encode_payload

WAIT_SECONDS = 30.0  # generous for 5,000 events on a busy machine; a lost event still fails
LIMIT = 7999
INT64_MIN = -(2**63)
_marks = itertools.count()


class Received(NamedTuple):
    payload: str
    key: tuple[int, ...]
    value: Any


class Listener:
    """A LISTEN connection on one channel that collects events up to a sentinel."""

    def __init__(self, dsn: str, channel: str) -> None:
        self.channel = channel
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def close(self) -> None:
        self.conn.close()

    def collect(self, writer: psycopg.Connection[Any]) -> list[Received]:
        """Every event sent on the channel since the last collect, in delivery order."""
        mark = {"sentinel": next(_marks)}
        writer.execute("SELECT pghub.notify(%s, NULL, %s)", (self.channel, Jsonb(mark)))
        received: list[Received] = []
        deadline = time.monotonic() + WAIT_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            for note in self.conn.notifies(timeout=remaining):
                assert note.channel == self.channel
                assert len(note.payload.encode()) <= LIMIT, "a payload over the limit"
                key, value = decode_payload(note.payload)
                if value == mark:
                    return received
                received.append(Received(note.payload, key, value))
        raise AssertionError(f"sentinel not received within {WAIT_SECONDS} s ({len(received)})")


@pytest.fixture
def listen(dsn: str) -> Iterator[Any]:
    opened: list[Listener] = []

    def open_listener(channel: str) -> Listener:
        listener = Listener(dsn, channel)
        opened.append(listener)
        return listener

    yield open_listener
    for listener in opened:
        listener.close()


def statement_keys(
    events: list[Received], op: str, table: str, arity: int, first_seq: int = 1
) -> list[tuple[int, ...]]:
    """The keys of one statement's events, after checking their values say what they carry."""
    assert events, "no event for a statement that touched rows"
    parts = len(events)
    total = sum(event.value["count"] for event in events)
    keys: list[tuple[int, ...]] = []
    for number, event in enumerate(events, start=1):
        assert event.value == {
            "op": op,
            "table": table,
            "arity": arity,
            "count": event.value["count"],
            "total": total,
            "part": number,
            "parts": parts,
            "seq": first_seq + number - 1,  # numbered within the transaction
        }
        assert len(event.key) == arity * event.value["count"]
        keys.extend(tuple(event.key[i : i + arity]) for i in range(0, len(event.key), arity))
    assert len(keys) == len(set(keys)) == total, "keys of one statement are distinct"
    assert keys == sorted(keys), "keys come sorted across the parts"
    return keys


def row_events(events: list[Received], op: str, table: str) -> dict[tuple[int, ...], Any]:
    """One event per row: the value of each, by key, after checking no key came twice."""
    assert all(event.value["op"] == op and event.value["table"] == table for event in events)
    # The statement is its transaction's only one: its events are numbered 1, 2, ...
    assert [event.value["seq"] for event in events] == list(range(1, len(events) + 1))
    by_key = {event.key: event.value for event in events}
    assert len(by_key) == len(events), "a row published twice"
    return by_key


def singles(ids: Iterable[int]) -> set[tuple[int, ...]]:
    return {(i,) for i in ids}


def publish(conn: psycopg.Connection[Any], table: str, **options: Any) -> str:
    names = ", ".join(f"{name} => %({name})s" for name in options)
    query = f"SELECT pghub.publish_table(%(table)s{', ' if names else ''}{names})"
    row = conn.execute(query, {"table": table, **options}).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("rows", [1, 300, 5000])
@pytest.mark.parametrize("level", ["statement", "row"])
def test_writes_publish_exactly_the_affected_keys(
    conn: psycopg.Connection[Any], listen: Any, level: str, rows: int
) -> None:
    conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, n int NOT NULL)")
    assert publish(conn, "items", level=level) == "items"
    listener = listen("items")
    ids = set(range(1, rows + 1))

    def keys_of(events: list[Received], op: str) -> set[tuple[int, ...]]:
        if level == "statement":
            return set(statement_keys(events, op, "public.items", 1))
        assert all("old_key" not in event.value for event in events)
        return set(row_events(events, op, "public.items"))

    conn.execute(
        "INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, %s) g", [rows]
    )
    assert keys_of(listener.collect(conn), "ins") == singles(ids)

    conn.execute("UPDATE items SET n = n + 1")
    assert keys_of(listener.collect(conn), "upd") == singles(ids)

    # Key changes: odd ids move up by a million; a statement names old and new keys.
    moved = {i for i in ids if i % 2 == 1}
    conn.execute("UPDATE items SET id = id + 1000000 WHERE id % 2 = 1")
    events = listener.collect(conn)
    if level == "statement":
        expected = singles(moved) | singles(i + 1_000_000 for i in moved)
        assert set(statement_keys(events, "upd", "public.items", 1)) == expected
    else:
        by_key = row_events(events, "upd", "public.items")
        assert set(by_key) == singles(i + 1_000_000 for i in moved)
        for (new_id,), value in by_key.items():
            assert value["old_key"] == [new_id - 1_000_000]
    ids = (ids - moved) | {i + 1_000_000 for i in moved}

    conn.execute("DELETE FROM items")
    assert keys_of(listener.collect(conn), "del") == singles(ids)

    # Statements that touch no row send nothing at all.
    conn.execute("INSERT INTO items SELECT g, 'x', 0 FROM generate_series(1, 10) g WHERE false")
    conn.execute("UPDATE items SET n = 0 WHERE id < 0")
    conn.execute("DELETE FROM items WHERE id < 0")
    assert listener.collect(conn) == []


def test_a_big_statement_is_split_into_parts_that_fit(
    conn: psycopg.Connection[Any], listen: Any
) -> None:
    # Composite keys at the widest: every element 20 characters, so parts fill to the byte.
    conn.execute("CREATE TABLE wide (a bigint NOT NULL, b bigint NOT NULL, PRIMARY KEY (a, b))")
    publish(conn, "wide")
    listener = listen("wide")
    conn.execute(
        "INSERT INTO wide SELECT %s + g, -%s + g FROM generate_series(0, 4999) g",
        [INT64_MIN, 2**63 - 1],
    )
    events = listener.collect(conn)
    keys = statement_keys(events, "ins", "public.wide", 2)
    assert set(keys) == {(INT64_MIN + g, -(2**63 - 1) + g) for g in range(5000)}
    # Each part but the last is nearly full: a cut wastes less than two widest keys (42 bytes
    # each), and the header's numbers may be a few digits shorter than the estimate's.
    sizes = [len(event.payload.encode()) for event in events]
    assert all(LIMIT - 2 * 42 - 12 < size <= LIMIT for size in sizes[:-1]), sizes
    assert len(events) >= 5000 * 42 // LIMIT


@pytest.mark.parametrize("level", ["statement", "row"])
def test_composite_keys_follow_the_primary_key_order(
    conn: psycopg.Connection[Any], listen: Any, level: str
) -> None:
    conn.execute(
        "CREATE TABLE lines (item int NOT NULL, region smallint NOT NULL, qty int NOT NULL,"
        " PRIMARY KEY (region, item))"
    )
    publish(conn, "lines", level=level)
    listener = listen("lines")
    conn.execute("INSERT INTO lines SELECT g, g % 3, 1 FROM generate_series(1, 300) g")
    expected = {(i % 3, i) for i in range(1, 301)}
    events = listener.collect(conn)
    if level == "statement":
        assert set(statement_keys(events, "ins", "public.lines", 2)) == expected
    else:
        assert set(row_events(events, "ins", "public.lines")) == expected

    conn.execute("UPDATE lines SET region = region + 10 WHERE item <= 4")
    events = listener.collect(conn)
    old = {(i % 3, i) for i in range(1, 5)}
    new = {(i % 3 + 10, i) for i in range(1, 5)}
    if level == "statement":
        assert set(statement_keys(events, "upd", "public.lines", 2)) == old | new
    else:
        by_key = row_events(events, "upd", "public.lines")
        assert set(by_key) == new
        assert {tuple(value["old_key"]) for value in by_key.values()} == old


def test_key_columns_are_taken_in_the_order_given(
    conn: psycopg.Connection[Any], listen: Any
) -> None:
    conn.execute("CREATE TABLE log (seq bigint NOT NULL, shard int NOT NULL, note text)")
    publish(conn, "log", topic="Log_Events", key_columns=["shard", "seq"])
    listener = listen("log_events")
    conn.execute("INSERT INTO log VALUES (10, 1, 'a'), (11, 1, 'b'), (10, 2, 'c'), (10, 2, 'd')")
    # Keys need not be unique: a statement's event carries each distinct key once.
    assert statement_keys(listener.collect(conn), "ins", "public.log", 2) == [
        (1, 10),
        (1, 11),
        (2, 10),
    ]


def test_row_data_is_sent_when_asked_and_left_out_when_too_large(
    conn: psycopg.Connection[Any], listen: Any
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, tags jsonb)")
    publish(conn, "docs", level="row", with_data=True)
    listener = listen("docs")

    conn.execute("""INSERT INTO docs VALUES (1, 'short $ text', '{"b": [1, 2.50], "a": null}')""")
    conn.execute("UPDATE docs SET id = 2, body = 'moved' WHERE id = 1")
    conn.execute("DELETE FROM docs")
    events = listener.collect(conn)
    assert [(event.key, event.value) for event in events] == [
        (
            (1,),
            {
                "op": "ins",
                "table": "public.docs",
                "seq": 1,
                "data": {"id": 1, "body": "short $ text", "tags": {"a": None, "b": [1, 2.50]}},
            },
        ),
        (
            (2,),
            {
                "op": "upd",
                "table": "public.docs",
                "seq": 1,
                "old_key": [1],
                "data": {"id": 2, "body": "moved", "tags": {"a": None, "b": [1, 2.50]}},
            },
        ),
        (
            (2,),
            {
                "op": "del",
                "table": "public.docs",
                "seq": 1,
                "data": {"id": 2, "body": "moved", "tags": {"a": None, "b": [1, 2.50]}},
            },
        ),
    ]

    # A body that makes the payload exactly 7999 bytes goes with its data; one byte more
    # does not. '$' is written as six bytes, so the boundary is found with the real encoder.
    def payload_size(body: str) -> int:
        data = {"id": 3, "body": body, "tags": None}
        value = {"op": "ins", "table": "public.docs", "seq": 1, "data": data}
        return len(encode_payload((3,), value).encode())

    dollars = "$" * 1000
    filler = LIMIT - payload_size(dollars)
    fits = dollars + "é" * (filler // 2) + "x" * (filler % 2)
    assert payload_size(fits) == LIMIT
    conn.execute("INSERT INTO docs (id, body) VALUES (3, %s)", [fits])
    conn.execute("UPDATE docs SET body = body || 'x' WHERE id = 3")
    conn.execute("INSERT INTO docs (id, body) VALUES (4, repeat('y', 100000))")
    events = listener.collect(conn)
    assert [event.key for event in events] == [(3,), (3,), (4,)]
    assert len(events[0].payload.encode()) == LIMIT
    assert events[0].value["data"]["body"] == fits
    omitted = {"table": "public.docs", "seq": 1, "data_omitted": True}
    assert events[1].value == {"op": "upd", **omitted}
    assert events[2].value == {"op": "ins", **omitted}
    row = conn.execute("SELECT length(body) FROM docs WHERE id = 4").fetchone()
    assert row == (100000,), "the write of a large row commits"


@pytest.mark.parametrize("level", ["statement", "row"])
def test_truncate_is_published_without_keys(
    conn: psycopg.Connection[Any], listen: Any, level: str
) -> None:
    conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
    publish(conn, "items", level=level)
    listener = listen("items")
    conn.execute("INSERT INTO items VALUES (1), (2)")
    listener.collect(conn)
    conn.execute("TRUNCATE items")
    events = listener.collect(conn)
    assert [(event.key, event.value) for event in events] == [
        ((), {"op": "tru", "table": "public.items", "seq": 1})
    ]


def test_partitioned_table(conn: psycopg.Connection[Any], listen: Any) -> None:
    conn.execute("CREATE TABLE parts (id int PRIMARY KEY) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (100)")
    conn.execute("CREATE TABLE parts_high PARTITION OF parts FOR VALUES FROM (100) TO (200)")
    publish(conn, "parts")
    listener = listen("parts")
    conn.execute("INSERT INTO parts SELECT generate_series(95, 104)")
    keys = statement_keys(listener.collect(conn), "ins", "public.parts", 1)
    assert keys == [(i,) for i in range(95, 105)]

    # Per row, PostgreSQL runs a move between partitions as a delete and an insert, and the
    # row triggers are the partitions' own.
    publish(conn, "parts", level="row")
    conn.execute("UPDATE parts SET id = 150 WHERE id = 95")
    events = listener.collect(conn)
    assert [(event.key, event.value) for event in events] == [
        ((95,), {"op": "del", "table": "public.parts_low", "seq": 1}),
        ((150,), {"op": "ins", "table": "public.parts_high", "seq": 2}),
    ]


def pghub_triggers(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger"
        " WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY tgname",
        [table],
    ).fetchall()
    return [(str(name), str(definition)) for name, definition in rows]


def test_publish_and_unpublish_are_idempotent(conn: psycopg.Connection[Any], listen: Any) -> None:
    conn.execute('CREATE TABLE "Orders" (id int PRIMARY KEY, total int NOT NULL)')
    conn.execute(
        "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;"
        ' CREATE TRIGGER audit AFTER INSERT ON "Orders" FOR EACH ROW EXECUTE FUNCTION audit()'
    )
    assert publish(conn, '"Orders"') == "orders"
    once = pghub_triggers(conn, '"Orders"')
    assert publish(conn, '"Orders"') == "orders"
    assert pghub_triggers(conn, '"Orders"') == once
    assert [name for name, _ in once] == [
        "audit",
        "pghub_del",
        "pghub_ins",
        "pghub_tru",
        "pghub_upd",
    ]

    listener = listen("orders")
    conn.execute('INSERT INTO "Orders" VALUES (1, 10)')
    events = listener.collect(conn)
    assert [event.key for event in events] == [(1,)], "published twice, sent once"
    assert events[0].value["table"] == 'public."Orders"'

    publish(conn, '"Orders"', level="row")
    assert [name for name, _ in pghub_triggers(conn, '"Orders"')] == [
        "audit",
        "pghub_row",
        "pghub_tru",
    ]
    conn.execute(
        'CREATE TRIGGER by_hand AFTER DELETE ON "Orders" FOR EACH ROW'
        " EXECUTE FUNCTION pghub.row_trigger('orders')"
    )
    assert conn.execute("""SELECT pghub.unpublish_table('"Orders"')""").fetchone() == (3,)
    assert conn.execute("""SELECT pghub.unpublish_table('"Orders"')""").fetchone() == (0,)
    assert [name for name, _ in pghub_triggers(conn, '"Orders"')] == ["audit"]
    conn.execute('UPDATE "Orders" SET total = 11')
    conn.execute('DELETE FROM "Orders"')
    assert listener.collect(conn) == []


def test_triggers_written_by_hand(conn: psycopg.Connection[Any], listen: Any) -> None:
    conn.execute("CREATE TABLE t (k int NOT NULL, id int PRIMARY KEY, v text)")
    conn.execute(
        "CREATE TRIGGER r AFTER INSERT OR UPDATE OR DELETE ON t FOR EACH ROW"
        " EXECUTE FUNCTION pghub.row_trigger('+data', 'by_row', 'k');"
        " CREATE TRIGGER s AFTER UPDATE ON t REFERENCING NEW TABLE AS fresh OLD TABLE AS stale"
        " FOR EACH STATEMENT EXECUTE FUNCTION pghub.statement_trigger('by_statement');"
        " CREATE TRIGGER d AFTER DELETE ON t FOR EACH ROW"
        " EXECUTE FUNCTION pghub.row_trigger('by_row')"
    )
    by_row, by_statement = listen("by_row"), listen("by_statement")
    conn.execute("INSERT INTO t VALUES (7, 1, 'a')")
    conn.execute("UPDATE t SET id = 2")
    conn.execute("DELETE FROM t")
    assert [(event.key, event.value) for event in by_row.collect(conn)] == [
        ((7,), {"op": "ins", "table": "public.t", "seq": 1, "data": {"k": 7, "id": 1, "v": "a"}}),
        # the UPDATE's statement trigger s comes after the row triggers: seq 2 is its
        ((7,), {"op": "upd", "table": "public.t", "seq": 1, "data": {"k": 7, "id": 2, "v": "a"}}),
        ((2,), {"op": "del", "table": "public.t", "seq": 1}),  # trigger d: primary key, no data
        ((7,), {"op": "del", "table": "public.t", "seq": 2, "data": {"k": 7, "id": 2, "v": "a"}}),
    ]
    upd = statement_keys(by_statement.collect(conn), "upd", "public.t", 1, first_seq=2)
    assert upd == [(1,), (2,)]


PUBLISH_ERRORS = [
    pytest.param("SELECT pghub.publish_table('nopk')", "55000", id="no primary key"),
    pytest.param("SELECT pghub.publish_table('nopk', key_columns => '{zz}')", "42703", id="no col"),
    pytest.param("SELECT pghub.publish_table('nopk', key_columns => '{c}')", "42804", id="numeric"),
    pytest.param("SELECT pghub.publish_table('nopk', key_columns => '{b}')", "42804", id="text"),
    pytest.param("SELECT pghub.publish_table('nopk', key_columns => '{a}')", "55000", id="null"),
    pytest.param("SELECT pghub.publish_table('nopk', key_columns => '{d,d}')", "42701", id="twice"),
    pytest.param("SELECT pghub.publish_table('items', 'bad-topic')", "22023", id="bad topic"),
    pytest.param("SELECT pghub.publish_table('items', '')", "22023", id="empty topic"),
    pytest.param("""SELECT pghub.publish_table('"bad-name"')""", "22023", id="bad table name"),
    pytest.param("SELECT pghub.publish_table('items', level => 'rows')", "22023", id="level"),
    pytest.param("SELECT pghub.publish_table('items', with_data => true)", "22023", id="data"),
    pytest.param("SELECT pghub.publish_table('a_view')", "42809", id="view"),
    pytest.param("SELECT pghub.publish_table(NULL)", "22004", id="null table"),
    pytest.param("SELECT pghub.unpublish_table(NULL)", "22004", id="unpublish null"),
]


@pytest.mark.parametrize(("statement", "sqlstate"), PUBLISH_ERRORS)
def test_tables_that_cannot_be_published(
    conn: psycopg.Connection[Any], statement: str, sqlstate: str
) -> None:
    conn.execute(
        "CREATE TABLE nopk (a int, b text NOT NULL, c numeric NOT NULL, d int NOT NULL);"
        " CREATE TABLE items (id int PRIMARY KEY);"
        ' CREATE TABLE "bad-name" (id int PRIMARY KEY);'
        " CREATE VIEW a_view AS SELECT 1 AS id"
    )
    with pytest.raises(psycopg.Error) as failure:
        conn.execute(statement)
    assert failure.value.sqlstate == sqlstate, str(failure.value)
    count = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgfoid IN"
        " ('pghub.row_trigger()'::regprocedure, 'pghub.statement_trigger()'::regprocedure)"
    ).fetchone()
    assert count == (0,), "a failed publish leaves no trigger"


MISUSES = [
    pytest.param(
        "CREATE TRIGGER x AFTER INSERT ON t FOR EACH ROW"
        " EXECUTE FUNCTION pghub.statement_trigger('t')",
        id="statement trigger per row",
    ),
    pytest.param(
        "CREATE TRIGGER x AFTER INSERT ON t FOR EACH STATEMENT"
        " EXECUTE FUNCTION pghub.statement_trigger('t')",
        id="no transition table",
    ),
    pytest.param(
        "CREATE TRIGGER x AFTER INSERT ON t FOR EACH STATEMENT"
        " EXECUTE FUNCTION pghub.row_trigger('t')",
        id="row trigger per statement",
    ),
    pytest.param(
        "CREATE TRIGGER x BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION pghub.row_trigger('t')",
        id="before",
    ),
    pytest.param(
        "CREATE TRIGGER x AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION pghub.row_trigger()",
        id="no topic",
    ),
    pytest.param(
        "CREATE TRIGGER x AFTER INSERT ON t FOR EACH ROW"
        " EXECUTE FUNCTION pghub.row_trigger('+data')",
        id="an option and no topic",
    ),
    pytest.param(
        "CREATE TRIGGER x AFTER INSERT ON t FOR EACH ROW"
        " EXECUTE FUNCTION pghub.row_trigger('+rows', 't')",
        id="unknown option",
    ),
]


@pytest.mark.parametrize("trigger", MISUSES)
def test_triggers_used_wrongly_stop_the_write(
    conn: psycopg.Connection[Any], listen: Any, trigger: str
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    conn.execute(trigger)
    listener = listen("t")
    with pytest.raises(psycopg.Error) as failure:
        conn.execute("INSERT INTO t VALUES (1)")
    assert failure.value.sqlstate == "39P01", str(failure.value)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert listener.collect(conn) == []


def test_a_row_trigger_naming_a_missing_column_fails_the_write(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(
        "CREATE TABLE t (id int PRIMARY KEY);"
        " CREATE TRIGGER x AFTER INSERT ON t FOR EACH ROW"
        " EXECUTE FUNCTION pghub.row_trigger('t', 'nope')"
    )
    with pytest.raises(psycopg.Error) as failure:
        conn.execute("INSERT INTO t VALUES (1)")
    assert failure.value.sqlstate == "42703"
    assert failure.value.diag.message_hint is None
    # '+data' after the topic is a key column like any other; the hint says where options go.
    conn.execute(
        "DROP TRIGGER x ON t; CREATE TRIGGER x AFTER INSERT ON t FOR EACH ROW"
        " EXECUTE FUNCTION pghub.row_trigger('t', '+data')"
    )
    with pytest.raises(psycopg.Error) as failure:
        conn.execute("INSERT INTO t VALUES (1)")
    assert failure.value.sqlstate == "42703"
    assert 'key column "+data" does not exist' in str(failure.value)
    assert "go before the topic" in (failure.value.diag.message_hint or "")


@pytest.mark.parametrize("with_data", [False, True])
def test_a_key_column_may_be_named_plus_data(
    conn: psycopg.Connection[Any], listen: Any, with_data: bool
) -> None:
    """The '+data' option is passed before the topic, so a key column named +data is a column.

    Before, the row trigger took any argument '+data' for the option: the key column was lost
    (the primary key was used) and the row was sent whether asked for or not.
    """
    conn.execute('CREATE TABLE t (id int PRIMARY KEY, "+data" bigint NOT NULL, v text)')
    assert publish(conn, "t", level="row", key_columns=["+data"], with_data=with_data) == "t"
    listener = listen("t")
    conn.execute("INSERT INTO t VALUES (1, 70, 'a')")
    conn.execute('UPDATE t SET "+data" = 71')
    row = {"id": 1, "+data": 71, "v": "a"}
    inserted = {"data": {**row, "+data": 70}} if with_data else {}
    updated = {"data": row} if with_data else {}
    assert [(event.key, event.value) for event in listener.collect(conn)] == [
        ((70,), {"op": "ins", "table": "public.t", "seq": 1, **inserted}),
        ((71,), {"op": "upd", "table": "public.t", "seq": 1, "old_key": [70], **updated}),
    ]
    # The same by hand: the option first, then the topic, then the key column.
    conn.execute(
        "SELECT pghub.unpublish_table('t');"
        " CREATE TRIGGER r AFTER DELETE ON t FOR EACH ROW"
        " EXECUTE FUNCTION pghub.row_trigger('+data', 't', '+data')"
    )
    conn.execute("DELETE FROM t")
    assert [(event.key, event.value) for event in listener.collect(conn)] == [
        ((71,), {"op": "del", "table": "public.t", "seq": 1, "data": row}),
    ]


def test_key_columns_reports_what_publish_would_use(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE t (b int NOT NULL, a bigint NOT NULL, PRIMARY KEY (a, b))")
    assert conn.execute("SELECT pghub.key_columns('t')").fetchone() == (["a", "b"],)
    assert conn.execute("SELECT pghub.key_columns('t', '{b}')").fetchone() == (["b"],)


def test_every_event_of_a_statement_counts_once(conn: psycopg.Connection[Any], listen: Any) -> None:
    # Seed consumers read "count" as the number of keys in the event's key list.
    conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
    publish(conn, "items")
    listener = listen("items")
    conn.execute("INSERT INTO items SELECT generate_series(1, 3000)")
    events = listener.collect(conn)
    assert len(events) > 1
    assert Counter(event.value["count"] == len(event.key) for event in events) == {
        True: len(events)
    }


def test_upsert_publishes_each_action(conn: psycopg.Connection[Any], listen: Any) -> None:
    conn.execute("CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL)")
    publish(conn, "kv")
    listener = listen("kv")
    conn.execute("INSERT INTO kv VALUES (1, 1), (2, 2)")
    listener.collect(conn)
    conn.execute(
        "INSERT INTO kv VALUES (2, 20), (3, 3) ON CONFLICT (id) DO UPDATE SET v = excluded.v"
    )
    events = listener.collect(conn)
    assert sorted((event.value["op"], event.key) for event in events) == [
        ("ins", (3,)),
        ("upd", (2,)),
    ]


def test_merge_publishes_each_action(conn: psycopg.Connection[Any], listen: Any) -> None:
    if conn.info.server_version < 150000:
        pytest.skip("MERGE came with PostgreSQL 15")
    conn.execute("CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL)")
    conn.execute("INSERT INTO kv VALUES (1, 1), (3, 3)")
    publish(conn, "kv")
    listener = listen("kv")
    conn.execute(
        "MERGE INTO kv USING (VALUES (3, 30), (4, 4), (1, 0)) AS s (id, v) ON kv.id = s.id"
        " WHEN MATCHED AND s.v = 0 THEN DELETE WHEN MATCHED THEN UPDATE SET v = s.v"
        " WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)"
    )
    events = listener.collect(conn)
    assert sorted((event.value["op"], event.key) for event in events) == [
        ("del", (1,)),
        ("ins", (4,)),
        ("upd", (3,)),
    ]


@pytest.fixture
def plain_roles(conn: psycopg.Connection[Any]) -> Iterator[tuple[str, str]]:
    """Two roles without any special right: a table owner and a writer (dropped afterwards)."""
    owner, writer = (f"pghub_{who}_{os.getpid()}_{next(_marks)}" for who in ("owner", "writer"))
    for role in (owner, writer):
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(owner)))
    yield owner, writer
    conn.execute("RESET ROLE")
    for role in (owner, writer):
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.parametrize("level", ["statement", "row"])
def test_a_plain_role_publishes_its_table_and_another_writes(
    conn: psycopg.Connection[Any], listen: Any, plain_roles: tuple[str, str], level: str
) -> None:
    owner, writer = (sql.Identifier(role) for role in plain_roles)
    conn.execute(sql.SQL("SET ROLE {}").format(owner))
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
    publish(conn, "notes", level=level)
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO {}").format(writer))
    listener = listen("notes")
    conn.execute(sql.SQL("SET ROLE {}").format(writer))
    conn.execute("INSERT INTO notes VALUES (1, 'a'), (2, 'b')")
    conn.execute("UPDATE notes SET id = 3 WHERE id = 1")
    conn.execute("DELETE FROM notes WHERE id = 2")
    got = [(event.value["op"], event.key) for event in listener.collect(conn)]
    if level == "statement":
        assert got == [("ins", (1, 2)), ("upd", (1, 3)), ("del", (2,))]
    else:
        assert got == [("ins", (1,)), ("ins", (2,)), ("upd", (3,)), ("del", (2,))]
    conn.execute(sql.SQL("SET ROLE {}").format(owner))
    assert conn.execute("SELECT pghub.unpublish_table('notes')").fetchone() == (
        4 if level == "statement" else 2,
    )


@pytest.mark.parametrize("level", ["statement", "row"])
def test_no_event_of_a_transaction_is_folded_into_an_earlier_one(
    conn: psycopg.Connection[Any], listen: Any, level: str
) -> None:
    # PostgreSQL delivers identical notifications of one transaction once. A row updated
    # 1 -> 2 -> 1 must still end at 1 for a consumer of row data: "seq" keeps events apart.
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
    conn.execute("INSERT INTO items VALUES (1, 1)")
    publish(conn, "items", level=level, with_data=level == "row")
    listener = listen("items")
    with conn.transaction():
        for n in (2, 1, 2, 1):
            conn.execute("UPDATE items SET n = %s WHERE id = 1", [n])
        conn.execute("TRUNCATE items")
        conn.execute("TRUNCATE items")
    events = listener.collect(conn)
    assert [(event.value["op"], event.value["seq"]) for event in events] == [
        ("upd", 1),
        ("upd", 2),
        ("upd", 3),
        ("upd", 4),
        ("tru", 5),
        ("tru", 6),
    ]
    if level == "row":
        assert [event.value["data"]["n"] for event in events[:4]] == [2, 1, 2, 1]
    # A new transaction numbers from 1 again.
    conn.execute("INSERT INTO items VALUES (5, 5)")
    assert [event.value["seq"] for event in listener.collect(conn)] == [1]


PUBLISHING_FUNCTIONS = [
    "publish_table",
    "unpublish_table",
    "key_columns",
    "row_trigger",
    "statement_trigger",
]
PUBLISHING_SQLSTATES = ["22004", "22023", "42809", "55000", "42703", "42804", "42701", "39P01"]


def test_the_publishing_functions_are_documented(conn: psycopg.Connection[Any]) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "sql.md").read_text(encoding="utf-8")
    assert "## Publishing tables" in docs, "docs/sql.md lost its Publishing tables section"
    section = docs[docs.index("## Publishing tables") :]
    for name in PUBLISHING_FUNCTIONS:
        assert f"pghub.{name}" in section, name
        comment = conn.execute(
            "SELECT obj_description(p.oid, 'pg_proc') FROM pg_proc AS p"
            " WHERE p.pronamespace = 'pghub'::regnamespace AND p.proname = %s",
            [name],
        ).fetchone()
        assert comment is not None, name
        assert comment[0], f"no COMMENT ON pghub.{name}"
    for sqlstate in PUBLISHING_SQLSTATES:
        assert f"| {sqlstate} " in section, sqlstate
