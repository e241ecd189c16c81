"""Durable topics on the real server, across sessions (docs/durable.md).

What one session cannot show: that a read by snapshots never skips an event whose transaction
committed later than one with a higher id, that rolled-back work journals nothing, that paging is
exact, that prune() under concurrent writers loses nothing a consumer has yet to read within
retention and says GAP for what it did remove, what a plain LISTEN sees on a durable topic, and
tick mode. Every wait is bounded.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from wire_support import json_value

from pghub import Hub, decode_payload, encode_payload, sql_notify

WAIT_SECONDS = 10.0  # every wait for a notification is bounded
VECTORS = Path(__file__).resolve().parents[1] / "vectors.json"


@dataclass
class Drained:
    """What reading a topic until it had nothing new gave: events, GAP records, the position."""

    events: list[tuple[str, str]] = field(default_factory=list)  # (position, payload)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    position: str = "earliest"

    @property
    def keys(self) -> list[tuple[int, ...]]:
        return [decode_payload(payload)[0] for _, payload in self.events]


def read_page(
    conn: psycopg.Connection[Any], topic: str, since: str, page: int
) -> list[tuple[str, str | None, dict[str, Any] | None]]:
    rows = conn.execute(
        "SELECT pos, payload, gap FROM pghub.read(%s, %s, %s)", [topic, since, page]
    ).fetchall()
    return [(str(pos), payload, gap) for pos, payload, gap in rows]


def drain(
    conn: psycopg.Connection[Any], topic: str, since: str = "earliest", page: int = 1000
) -> Drained:
    """Read from ``since`` until a read returns no event; the last position is where to go on."""
    got = Drained(position=since)
    for _ in range(100_000):
        rows = read_page(conn, topic, got.position, page)
        assert rows, "a read always returns at least the position to continue from"
        for position, payload, gap in rows:
            if gap is not None:
                got.gaps.append(gap)
            elif payload is not None:
                got.events.append((position, payload))
        got.position = rows[-1][0]
        if all(payload is None for _, payload, _ in rows):
            return got
    raise AssertionError("the read never ran out of events")


@pytest.fixture
def connect(dsn: str) -> Iterator[Callable[[], psycopg.Connection[Any]]]:
    """A factory of autocommit connections to this test's database, closed after the test."""
    opened: list[psycopg.Connection[Any]] = []

    def open_one() -> psycopg.Connection[Any]:
        conn = psycopg.connect(dsn, autocommit=True)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.close()


def notify(conn: psycopg.Connection[Any], topic: str, key: int, value: Any = None) -> None:
    conn.execute(
        "SELECT pghub.notify(%s, ARRAY[%s]::bigint[], %s)",
        [topic, key, None if value is None else Jsonb(value)],
    )


# ==== Snapshots: order, commit order against id order, rollbacks ====


def test_a_transaction_that_commits_late_is_read_after_the_ones_before_it(
    conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    """A lower transaction id that commits later is not skipped: it comes in a later batch."""
    conn.execute("SELECT pghub.make_durable('orders')")
    early, late, reader = connect(), connect(), connect()
    start = drain(reader, "orders").position
    early.execute("BEGIN")
    notify(early, "orders", 1)  # gets the lower xid and the lower event id
    notify(late, "orders", 2)  # autocommit: commits first
    first = drain(reader, "orders", start)
    assert first.keys == [(2,)]
    early.execute("COMMIT")
    second = drain(reader, "orders", first.position)
    assert second.keys == [(1,)]
    assert drain(reader, "orders", second.position).keys == []


def test_rolled_back_transactions_and_savepoints_journal_nothing(
    conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, note text)")
    conn.execute("SELECT pghub.publish_table('items', 'orders', 'row', NULL, true)")
    writer = connect()
    with writer.transaction(force_rollback=True):
        notify(writer, "orders", 1)
        writer.execute("INSERT INTO items VALUES (2, 'rolled back')")
    with writer.transaction():
        notify(writer, "orders", 3)
        savepoint = writer.transaction()
        with pytest.raises(psycopg.errors.UniqueViolation), savepoint:
            writer.execute(
                "SELECT pghub.notify('orders', '{4}'); INSERT INTO items VALUES (5, 'x'), (5, 'y')"
            )
        with writer.transaction(force_rollback=True):  # a savepoint, rolled back
            writer.execute("INSERT INTO items VALUES (6, 'rolled back')")
        writer.execute("INSERT INTO items VALUES (7, repeat('z', 9000))")
    assert drain(conn, "orders").keys == [(3,), (7,)]
    assert conn.execute("SELECT count(*) FROM pghub.orders").fetchone() == (2,)


@pytest.mark.slow
def test_interleaved_commits_from_several_connections_are_each_read_once(
    conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    """Writers that hold their transactions open for random times, while a reader pages through
    with small pages: every committed event is read exactly once, nothing rolled back is."""
    conn.execute("SELECT pghub.make_durable('orders')")
    writers, per_writer = 6, 60
    committed: set[int] = set()
    failures: list[BaseException] = []
    lock = threading.Lock()

    def write(number: int) -> None:
        rng = random.Random(number)
        try:
            with psycopg.connect(conn.info.dsn, autocommit=True) as writer:
                for i in range(per_writer):
                    key = number * 1000 + i
                    writer.execute("BEGIN")
                    notify(writer, "orders", key)
                    notify(writer, "orders", -key)  # two events a transaction, in order
                    time.sleep(rng.random() * 0.01)
                    if rng.random() < 0.1:
                        writer.execute("ROLLBACK")
                        continue
                    writer.execute("COMMIT")
                    with lock:
                        committed.add(key)
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)

    threads = [threading.Thread(target=write, args=(n + 1,)) for n in range(writers)]
    reader = connect()
    position = "earliest"
    seen: list[int] = []
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        for position_row, payload, gap in read_page(reader, "orders", position, 7):
            assert gap is None
            if payload is not None:
                seen.append(decode_payload(payload)[0][0])
            position = position_row
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures
    rest = drain(reader, "orders", position, 7)
    seen.extend(key[0] for key in rest.keys)
    positives = [k for k in seen if k > 0]
    assert sorted(positives) == sorted(committed), "each committed event once, no rolled back one"
    assert len(seen) == 2 * len(committed)
    # the two events of a transaction are read one after the other, in their order
    for index, key in enumerate(seen):
        if key > 0:
            assert seen[index + 1] == -key


# ==== Paging ====


def test_paging_is_exact(
    conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    writer = connect()
    for batch in range(5):
        with writer.transaction():
            for i in range(7):
                notify(writer, "orders", batch * 100 + i)
    whole = drain(conn, "orders", "earliest", 1000)
    assert len(whole.events) == 35
    # page by page: the same events, and each page read twice gives the same rows
    position = "earliest"
    paged: list[tuple[str, str]] = []
    first_page = read_page(conn, "orders", position, 4)
    while True:
        page = read_page(conn, "orders", position, 4)
        if "/" in position:  # inside a batch: the same position gives the same page
            assert page == read_page(conn, "orders", position, 4)
        events = [(p, payload) for p, payload, _ in page if payload is not None]
        if not events:
            break
        paged.extend(events)
        position = page[-1][0]
    assert [payload for _, payload in paged] == [payload for _, payload in whole.events]
    assert len(first_page) == 4
    assert all("/" in p for p, _, _ in first_page), "a full page ends inside its batch"


def test_a_read_from_a_finished_position_moves_on_without_events(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    empty = read_page(conn, "orders", "earliest", 10)
    assert [(payload, gap) for _, payload, gap in empty] == [(None, None)]
    notify(conn, "orders", 1)
    rows = read_page(conn, "orders", empty[0][0], 10)
    assert [decode_payload(payload)[0] for _, payload, _ in rows if payload] == [(1,)]
    assert "/" not in rows[-1][0], "the last event of a finished batch carries its end"


def test_read_refuses_other_isolation_levels(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    for level in ("REPEATABLE READ", "SERIALIZABLE"):
        conn.execute(f"BEGIN ISOLATION LEVEL {level}")
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="READ COMMITTED"):
            conn.execute("SELECT * FROM pghub.read('orders', 'earliest')")
        conn.execute("ROLLBACK")


# ==== Named consumers ====


def test_a_named_consumer_continues_from_what_it_acknowledged(
    conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    notify(conn, "orders", 1)
    consumer = connect()
    start = consumer.execute("SELECT pghub.consumer_position('mailer', 'orders')").fetchone()
    assert start is not None
    notify(conn, "orders", 2)
    notify(conn, "orders", 3)
    rows = read_page(consumer, "orders", start[0], 1)
    assert [decode_payload(p)[0] for _, p, _ in rows if p] == [(2,)]
    consumer.execute("SELECT pghub.ack('mailer', 'orders', %s)", [rows[-1][0]])
    consumer.close()  # a crash: 3 was never acknowledged
    again = connect()
    kept = again.execute("SELECT pghub.consumer_position('mailer', 'orders', 'earliest')")
    position = kept.fetchone()
    assert position == (rows[-1][0],), "since applies only to a consumer not yet known"
    assert drain(again, "orders", position[0]).keys == [(3,)]
    lag = again.execute("SELECT lag FROM pghub.durable_consumers() WHERE consumer = 'mailer'")
    assert lag.fetchone() == (1,)


# ==== What a plain listener sees ====


def collect(listener: psycopg.Connection[Any], count: int) -> list[tuple[str, str]]:
    got = [
        (n.channel, n.payload) for n in listener.notifies(timeout=WAIT_SECONDS, stop_after=count)
    ]
    assert len(got) == count, got
    return got


def test_a_plain_listener_sees_todays_payloads_on_a_durable_topic(
    conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    """The same writes on a plain topic and on a durable one (commit mode): the raw LISTEN
    payloads are the same bytes. An event too large for NOTIFY gives plain listeners what a
    plain topic gives them: the row trigger's stand-in, and nothing for pghub.notify (which a
    plain topic refuses); durable consumers get a wake-up and read it whole."""
    conn.execute("SELECT pghub.make_durable('kept')")
    listener = connect()
    listener.execute('LISTEN kept; LISTEN plain; LISTEN "pghub:wake"')
    writer = connect()
    for topic in ("plain", "kept"):
        writer.execute(f"CREATE TABLE {topic}_rows (id bigint PRIMARY KEY, body text)")
        writer.execute(f"SELECT pghub.publish_table('{topic}_rows', '{topic}', 'row', NULL, true)")
        writer.execute(f"CREATE TABLE {topic}_stm (id bigint PRIMARY KEY)")
        writer.execute(f"SELECT pghub.publish_table('{topic}_stm', '{topic}')")
    heard: dict[str, list[str]] = {}
    for topic in ("plain", "kept"):
        notify(writer, topic, 1, {"a": "$", "n": None, "é": [1.5]})
        with writer.transaction():
            writer.execute(f"INSERT INTO {topic}_rows VALUES (1, 'a'), (2, repeat('b', 9000))")
            writer.execute(f"INSERT INTO {topic}_stm SELECT generate_series(1, 3000)")
        writer.execute(f"TRUNCATE {topic}_rows")
        got = collect(listener, 6 if topic == "plain" else 7)  # 1, 2 rows, 2 parts, tru
        channels = {channel for channel, _ in got}
        wakes = [payload for channel, payload in got if channel == "pghub:wake"]
        heard[topic] = [payload for channel, payload in got if channel == topic]
        assert channels <= {topic, "pghub:wake"}
        assert wakes == ([] if topic == "plain" else ["kept"])
    assert heard["kept"] == [p.replace("public.plain", "public.kept") for p in heard["plain"]]
    assert '"data_omitted":true' in heard["kept"][2]
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        notify(writer, "plain", 9, "x" * 9000)
    notify(writer, "kept", 9, "x" * 9000)
    assert collect(listener, 1) == [("pghub:wake", "kept")]
    whole = drain(conn, "kept").events
    assert decode_payload(whole[-1][1]) == ((9,), "x" * 9000)
    assert [n for n in listener.notifies(timeout=0.3)] == []


# ==== Tick mode ====


def test_tick_mode_writers_send_nothing_and_tick_announces_in_order(
    conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    conn.execute("SELECT pghub.make_durable('ticked', wake => 'tick')")
    listener = connect()
    listener.execute('LISTEN ticked; LISTEN "pghub:wake"')
    writer = connect()
    notify(writer, "ticked", 1)
    notify(writer, "ticked", 2, "x" * 9000)  # too large: a wake-up only
    notify(writer, "ticked", 1)  # the same payload as the first, another transaction
    assert [n for n in listener.notifies(timeout=0.3)] == [], "writers NOTIFY nothing"
    ticker = connect()
    first = ticker.execute("SELECT events, more FROM pghub.tick()").fetchone()
    # PostgreSQL would deliver e1 once if one transaction sent it twice: the tick stops before
    # the second and leaves it to the next
    assert first == (2, True)
    assert ticker.execute("SELECT events, more FROM pghub.tick()").fetchone() == (1, False)
    assert ticker.execute("SELECT events, more FROM pghub.tick()").fetchone() == (0, False)
    got = collect(listener, 4)
    assert got == [
        ("ticked", "e1"),
        ("pghub:wake", "ticked"),
        ("ticked", "e1"),
        ("pghub:wake", "ticked"),
    ]


def test_an_idle_tick_writes_nothing(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pghub.make_durable('ticked', wake => 'tick')")
    notify(conn, "ticked", 1)
    assert conn.execute("SELECT events FROM pghub.tick()").fetchone() == (1,)
    conn.execute("BEGIN")
    assert conn.execute("SELECT events, more FROM pghub.tick()").fetchone() == (0, False)
    assert conn.execute("SELECT pg_current_xact_id_if_assigned()").fetchone() == (None,)
    conn.execute("ROLLBACK")


# ==== prune, retention and GAP ====


def backdate(conn: psycopg.Connection[Any], seconds: int) -> None:
    """Make every journal table look as old as if it had stopped being current long ago."""
    conn.execute(
        "UPDATE pghub.journal$slot SET opened_at = opened_at - make_interval(secs => %s),"
        " closed_at = closed_at - make_interval(secs => %s)",
        [seconds, seconds],
    )


def make_rotation_due(conn: psycopg.Connection[Any]) -> None:
    """Make the current journal table look current for a long time: prune() switches."""
    conn.execute(
        "UPDATE pghub.journal$slot SET opened_at = opened_at - interval '30 days'"
        " WHERE closed_at IS NULL AND NOT ready"
    )


def rotate(conn: psycopg.Connection[Any]) -> None:
    """Make prune() switch the table writers append to."""
    make_rotation_due(conn)
    assert conn.execute("SELECT rotated FROM pghub.prune()").fetchone() == (True,)


def test_prune_keeps_what_a_named_consumer_has_not_acknowledged(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("SELECT pghub.make_durable('orders', '1 day')")
    conn.execute("SELECT pghub.consumer_position('slow', 'orders', 'earliest')")
    conn.execute("SELECT pghub.consumer_position('quick', 'orders', 'earliest')")
    for i in range(10):
        notify(conn, "orders", i)
    rotate(conn)
    done = drain(conn, "orders")
    conn.execute("SELECT pghub.ack('quick', 'orders', %s)", [done.position])
    backdate(conn, 10)
    assert conn.execute("SELECT emptied FROM pghub.prune()").fetchone() == (0,)
    assert len(drain(conn, "orders").events) == 10, "slow has not acknowledged them"
    conn.execute("SELECT pghub.ack('slow', 'orders', %s)", [done.position])
    assert conn.execute("SELECT emptied, events FROM pghub.prune()").fetchone() == (1, 10)
    assert drain(conn, "orders").events == []
    assert drain(conn, "orders", done.position).gaps == []


def test_a_reader_behind_retention_gets_gap_once_and_then_the_rest(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("SELECT pghub.make_durable('orders', '1 hour')")
    old = conn.execute("SELECT pghub.current_position()").fetchone()
    assert old is not None
    for i in range(5):
        notify(conn, "orders", i)
    rotate(conn)
    notify(conn, "orders", 100)  # in the new current table: kept
    backdate(conn, 7200)  # the first table is now past retention
    assert conn.execute("SELECT emptied, events FROM pghub.prune()").fetchone() == (1, 5)
    behind = drain(conn, "orders", old[0])
    assert len(behind.gaps) == 1
    gap = behind.gaps[0]
    assert gap["events"] == 5
    assert gap["last_id"] - gap["first_id"] == 4
    assert gap["oldest_at"] <= gap["newest_at"] <= gap["removed_at"]
    assert behind.keys == [(100,)], "then the events kept"
    assert drain(conn, "orders", behind.position).gaps == [], "GAP is said once"
    assert drain(conn, "orders", "earliest").gaps == [], "earliest asks for what is kept"
    assert drain(conn, "orders", "earliest").keys == [(100,)]


def test_a_reader_held_lock_makes_prune_wait_no_longer_than_lock_wait(
    conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    conn.execute("SELECT pghub.make_durable('orders', '1 second')")
    notify(conn, "orders", 1)
    rotate(conn)
    backdate(conn, 60)
    reader, writer = connect(), connect()
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM pghub.read('orders', 'earliest')")  # holds its locks
    started = time.monotonic()
    assert conn.execute("SELECT emptied FROM pghub.prune('50 ms')").fetchone() == (0,)
    assert time.monotonic() - started < 5
    notify(writer, "orders", 2)  # writers are not held up by any of this
    reader.execute("COMMIT")
    assert conn.execute("SELECT emptied FROM pghub.prune('50 ms')").fetchone() == (1,)


@pytest.mark.slow
def test_prune_under_concurrent_writers_loses_nothing_unacknowledged(
    conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    """Writers append, a named consumer reads and acknowledges, prune() runs in a loop and
    rotates every second: the consumer gets every committed event, exactly once, and no GAP."""
    conn.execute("SELECT pghub.make_durable('orders', '1 hour')")
    consumer = connect()
    position = consumer.execute("SELECT pghub.consumer_position('c', 'orders')").fetchone()
    assert position is not None
    stop = threading.Event()
    written: list[int] = []
    failures: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            with psycopg.connect(conn.info.dsn, autocommit=True) as writer:
                i = 0
                while not stop.is_set():
                    notify(writer, "orders", offset + i)
                    written.append(offset + i)
                    i += 1
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)

    def prune() -> None:
        try:
            with psycopg.connect(conn.info.dsn, autocommit=True) as pruner:
                while not stop.is_set():
                    make_rotation_due(pruner)
                    pruner.execute("SELECT * FROM pghub.prune('20 ms')")
                    time.sleep(0.05)
        except BaseException as error:  # pragma: no cover
            failures.append(error)

    threads = [threading.Thread(target=write, args=(n * 1_000_000,)) for n in range(3)]
    threads.append(threading.Thread(target=prune))
    for thread in threads:
        thread.start()
    seen: list[int] = []
    at = position[0]
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        rows = read_page(consumer, "orders", at, 50)
        assert all(gap is None for _, _, gap in rows)
        seen.extend(decode_payload(p)[0][0] for _, p, _ in rows if p is not None)
        at = rows[-1][0]
        consumer.execute("SELECT pghub.ack('c', 'orders', %s)", [at])
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures
    rest = drain(consumer, "orders", at, 500)
    assert rest.gaps == []
    seen.extend(key[0] for key in rest.keys)
    assert sorted(seen) == sorted(written)
    emptied = conn.execute("SELECT count(*) > 0 FROM pghub.journal$gap").fetchone()
    assert emptied == (True,), "prune emptied tables meanwhile"


def test_the_journal_holds_what_encode_writes_for_every_vector(
    conn: psycopg.Connection[Any],
) -> None:
    """_journal has its own copy of encode's code (without the size limit): same bytes."""
    conn.execute("SELECT pghub.make_durable('vectors')")
    valid = json.loads(VECTORS.read_text(encoding="utf-8"))["valid"]
    for vector in valid:
        conn.execute(
            "SELECT pghub.notify('vectors', %s::bigint[], %s::jsonb)",
            [vector["key"], vector["value"]],
        )
    journaled = [row[0] for row in conn.execute("SELECT payload FROM pghub.vectors ORDER BY id")]
    assert journaled == [vector["payload"] for vector in valid]


def test_sql_the_hub_and_sql_notify_journal_the_same_bytes(
    conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]], dsn: str
) -> None:
    """Cross-language: an event journaled by SQL pghub.notify, by the Python hub (notify and
    notify_many) and by sql_notify is the same event to every consumer, byte for byte, in the
    journal and on the wire (commit mode), for every valid vector and for one over 7999 bytes."""
    paths = ("by_sql", "by_hub", "by_batch", "by_sql_notify")
    listener = connect()
    for topic in paths:
        conn.execute("SELECT pghub.make_durable(%s)", [topic])
        listener.execute(f"LISTEN {topic}")
    events = [
        (vector["key"], vector["value"], vector["payload"])
        for vector in json.loads(VECTORS.read_text(encoding="utf-8"))["valid"]
    ]
    big = {"text": "é$" * 3000}  # over 7999 bytes: journaled whole, announced on pghub:wake
    events.append(([7], json.dumps(big), encode_payload([7], big, limit=None)))
    for key, value, _ in events:
        conn.execute("SELECT pghub.notify('by_sql', %s::bigint[], %s::jsonb)", [key, value])
    with Hub(dsn, tick_interval=None, prune_interval=None) as hub:
        sent = [hub.notify("by_hub", key, json_value(value)) for key, value, _ in events]
        batch = [("by_batch", key, json_value(value)) for key, value, _ in events]
        sent.append(hub.notify_many(batch))
        assert [future.result(WAIT_SECONDS) for future in sent] == [True] * len(sent)
    with psycopg.connect(dsn) as caller:
        for key, value, _ in events:
            sql_notify(caller, "by_sql_notify", key, json_value(value))
        caller.commit()
    want = [payload for _, _, payload in events]
    for topic in paths:
        assert [payload for _, payload in drain(conn, topic).events] == want, topic
    # On the wire, what fits, as each path's transactions let PostgreSQL deliver it: one
    # transaction (notify_many, the caller's) delivers identical notifications once.
    fits = [payload for payload in want if len(payload.encode()) <= 7999]
    once = list(dict.fromkeys(fits))
    expected = {"by_sql": fits, "by_hub": fits, "by_batch": once, "by_sql_notify": once}
    heard: dict[str, list[str]] = {topic: [] for topic in paths}
    total = sum(map(len, expected.values()))
    deadline = time.monotonic() + WAIT_SECONDS
    while sum(map(len, heard.values())) < total and time.monotonic() < deadline:
        for note in listener.notifies(timeout=0.2):
            heard[note.channel].append(note.payload)
    assert heard == expected


def buffers_of(conn: psycopg.Connection[Any], statement: str, params: list[Any]) -> int:
    """Shared buffers a statement touched, its nested queries included (EXPLAIN BUFFERS)."""
    plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", params)
    row = plan.fetchone()
    assert row is not None
    top = row[0][0]["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


def test_a_page_costs_what_it_reads_not_what_is_left_of_its_batch(
    conn: psycopg.Connection[Any],
) -> None:
    """50,000 events of one transaction in a table with no statistics yet (as after a burst, or
    after prune emptied it): a page of 100 touches a few buffers, at the start of the batch as
    at its end. Before, the planner sorted the rest of the batch for each page (and the range
    scan started at the batch's start, not at the cursor)."""
    conn.execute("SELECT pghub.make_durable('orders', wake => 'tick')")
    start = conn.execute("SELECT pghub.current_position()").fetchone()
    assert start is not None
    conn.execute(
        "DO $$ BEGIN FOR i IN 1..50000 LOOP"
        " PERFORM pghub.notify('orders', ARRAY[i]::bigint[], '{\"op\": \"ins\"}');"
        " END LOOP; END $$"
    )
    whole = conn.execute(
        "SELECT pg_relation_size('pghub.journal$0') / current_setting('block_size')::int"
    ).fetchone()
    assert whole is not None
    assert whole[0] > 300, "the journal table holds hundreds of pages"
    read = "SELECT count(*) FROM pghub.read('orders', %s, 100)"
    for _ in range(7):  # past the plans' first calls (catalog reads) and plpgsql's custom plans
        read_page(conn, "orders", "earliest", 100)
    # The least of three: a catalog cache reset (other sessions' DDL on the server) adds reads.
    first = min(buffers_of(conn, read, [start[0]]) for _ in range(3))
    rows = read_page(conn, "orders", start[0], 49_900)
    late = min(buffers_of(conn, read, [rows[-1][0]]) for _ in range(3))
    assert first < 150, first
    assert late < 150, late
