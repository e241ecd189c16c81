"""The durable scenarios of ``pghub bench`` (issue 13): replay, live latency, writers, a large
event. Each runs once (not per ``--runs``) in a database of its own, created from the bench's
connection (which must be allowed to CREATE DATABASE) and dropped afterwards, with pghub made
by ``CREATE EXTENSION pghub``: where the server has no pghub extension, or one without durable
topics, the scenario is skipped with a note.

The writers are processes (multiprocessing, spawn) with a psycopg connection each, not pgbench,
which an installed wheel cannot count on. Clocks compared across processes are
``time.monotonic()`` (CLOCK_MONOTONIC, the same in every process on one machine).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

import pghub

from .progress import Progress
from .scenarios import DurableSizes

EXTENSION = "pghub"


class Skipped(Exception):
    """The server cannot run a durable scenario; the message says why."""


@contextmanager
def database(admin_dsn: str, scenario: str) -> Iterator[str]:
    """A fresh database with ``CREATE EXTENSION pghub``; dropped afterwards, whatever happens."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        found = admin.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = %s", [EXTENSION]
        ).fetchone()
        if found is None:
            raise Skipped(
                f"the server has no {EXTENSION!r} extension to CREATE (make install, see "
                "docs/install.md)"
            )
        name = f"pghub_bench_{scenario.replace('-', '_')}_{os.getpid()}"
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            try:
                conn.execute(sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(EXTENSION)))
            except psycopg.errors.InsufficientPrivilege as error:
                raise Skipped(f"cannot CREATE EXTENSION {EXTENSION}: {error}") from None
            row = conn.execute("SELECT to_regproc('pghub.make_durable') IS NOT NULL").fetchone()
            if not (row and row[0]):
                raise Skipped("the server's pghub has no durable topics (pghub.make_durable)")
        yield dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(drop)


def run_scenario(
    scenario: str, admin_dsn: str, sizes: DurableSizes, progress: Progress
) -> dict[str, Any]:
    """One durable scenario: its figures, or ``skipped`` with the reason; ``seconds`` in all."""
    progress.start(scenario, "", 0, None)
    progress.phase("running")
    started = time.monotonic()
    try:
        with database(admin_dsn, scenario) as dsn:
            figures = _RUNS[scenario](dsn, sizes, progress)
        out: dict[str, Any] = {"figures": figures, "skipped": None}
    except Skipped as why:
        out = {"figures": {}, "skipped": str(why)}
    finally:
        progress.end()
    out["seconds"] = time.monotonic() - started
    return out


# --- durable-replay -------------------------------------------------------------------------


def fill(conn: psycopg.Connection[Any], topic: str, events: int, chunk: int = 200_000) -> None:
    """``events`` row-trigger-sized events on ``topic``, committed in chunks of ``chunk``."""
    conn.execute(
        "CREATE OR REPLACE FUNCTION bench_fill(topic text, first bigint, n integer) RETURNS void"
        " LANGUAGE plpgsql AS $$ BEGIN FOR i IN first..first + n - 1 LOOP"
        " PERFORM pghub.notify(topic, ARRAY[i], jsonb_build_object('op', 'ins',"
        " 'table', 'public.orders', 'seq', 1)); END LOOP; END $$"
    )
    for done in range(0, events, chunk):
        conn.execute("SELECT bench_fill(%s, %s, %s)", [topic, done, min(chunk, events - done)])


def raw_read(dsn: str, topic: str, events: int) -> float:
    """Seconds for raw psycopg to read the whole journal of ``topic`` in pages of 1,000 and
    decode every payload (pghub.decode_payload), one thread, no callback: the floor."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        position, got = "earliest", 0
        started = time.perf_counter()
        while True:
            rows = conn.execute(
                "SELECT pos, payload FROM pghub.read(%s, %s, 1000)", [topic, position]
            ).fetchall()
            position = rows[-1][0]
            for _, payload in rows:
                if payload is not None:
                    pghub.decode_payload(payload)
                    got += 1
            if "/" not in position:  # the end of what is committed
                break
        elapsed = time.perf_counter() - started
    if got != events:
        raise RuntimeError(f"durable-replay: raw psycopg read {got} events, {events} written")
    return elapsed


class _Counter:
    """The trivial callback: counts events, says when it has ``expected`` of them."""

    def __init__(self, expected: int) -> None:
        self.expected, self.count = expected, 0
        self.done = threading.Event()

    def __call__(self, event: pghub.Event) -> None:
        if event.topic is not None:
            self.count += 1
            if self.count >= self.expected:
                self.done.set()


def replay(dsn: str, sizes: DurableSizes, progress: Progress) -> dict[str, Any]:
    """A named consumer, stopped while ``replay_events`` are committed, catches up through
    pghub.Hub (a counter as its callback, each page acknowledged as in production); raw
    psycopg reads the same journal before (which sets its hint bits, untimed) and after."""
    events = sizes.replay_events
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pghub.make_durable('orders')")
        conn.execute("SELECT pghub.consumer_position('bench', 'orders', 'now')")
        progress.phase(f"committing {events:,} events")
        started = time.perf_counter()
        fill(conn, "orders", events)
        filled = time.perf_counter() - started
    progress.phase("raw psycopg reads the journal once (sets hint bits)")
    raw_read(dsn, "orders", events)
    progress.phase(f"the hub's consumer catches up on {events:,} events")
    counter = _Counter(events)
    limit = max(60.0, events / 5_000)
    with pghub.Hub(dsn) as hub:
        started = time.perf_counter()
        hub.consumer(counter, "orders", durable="bench")
        if not counter.done.wait(limit):
            raise RuntimeError(f"durable-replay: {counter.count} of {events} events in {limit} s")
        hub_s = time.perf_counter() - started
    progress.phase("raw psycopg reads the journal")
    raw_s = raw_read(dsn, "orders", events)
    return {
        "events": events,
        "fill_s": filled,
        "hub_s": hub_s,
        "hub_events_per_s": events / hub_s,
        "raw_events_per_s": events / raw_s,
        "hub_over_raw": raw_s / hub_s,
    }


# --- durable-latency ------------------------------------------------------------------------


def _latency_consumer(dsn: str, wake: str, ready: Any, stop: Any, out: Any) -> None:
    """In a child process: a hub (ticking every 10 ms in tick mode: the only hub, so elected)
    with a named durable consumer; each event's delay from its send time, in ms."""
    delays: list[float] = []

    def on_event(event: pghub.Event) -> None:
        if event.topic is not None:
            delays.append((time.monotonic() - float(event.value)) * 1000)

    try:
        with pghub.Hub(dsn, tick_interval=0.01) as hub:
            consumer = hub.consumer(on_event, f"lat_{wake}", durable="lat")
            ready.put(bool(consumer.wait_subscribed(60)))
            stop.wait(3600)
            time.sleep(0.5)  # the last events' reads
    finally:
        out.put(delays)


def latency(dsn: str, sizes: DurableSizes, progress: Progress) -> dict[str, Any]:
    """Commit mode, then tick mode: a writer here commits ``latency_rate`` events a second,
    each carrying its send time, for ``latency_seconds``; a hub in another process delivers
    them to a named durable consumer, whose callback times each from just before the writer's
    statement (so the commit's own time, reported as ``writer_*``, is inside the delay)."""
    out: dict[str, Any] = {"rate": sizes.latency_rate}
    for wake in ("commit", "tick"):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pghub.make_durable(%s, wake => %s)", [f"lat_{wake}", wake])
        delays, writes = _paced(dsn, wake, sizes, progress)
        n, sent = len(delays), len(writes)
        out[wake] = {
            "sent": sent,
            "writer_p50_ms": writes[sent // 2],
            "writer_p99_ms": writes[min(sent - 1, int(sent * 0.99))],
            "received": n,
            "p50_ms": delays[n // 2] if n else None,
            "p99_ms": delays[min(n - 1, int(n * 0.99))] if n else None,
            "max_ms": delays[-1] if n else None,
        }
    return out


def _paced(
    dsn: str, wake: str, sizes: DurableSizes, progress: Progress
) -> tuple[list[float], list[float]]:
    """The delays the consumer saw, sorted; the writer's statement times, sorted."""
    context = multiprocessing.get_context("spawn")
    ready, out, stop = context.Queue(), context.Queue(), context.Event()
    child = context.Process(target=_latency_consumer, args=(dsn, wake, ready, stop, out))
    child.start()
    try:
        if not ready.get(timeout=120):
            raise RuntimeError("durable-latency: the consumer did not subscribe within 60 s")
        progress.phase(f"{wake} mode, {sizes.latency_rate}/s for {sizes.latency_seconds:g} s")
        total = int(sizes.latency_rate * sizes.latency_seconds)
        topic = f"lat_{wake}"
        writes: list[float] = []  # the writer's own statement and commit, ms
        with psycopg.connect(dsn, autocommit=True) as writer:
            started = time.monotonic()
            for number in range(total):
                pause = started + number / sizes.latency_rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                sent = time.monotonic()
                writer.execute(
                    "SELECT pghub.notify(%s, ARRAY[%s]::bigint[], to_jsonb(%s::float8))",
                    [topic, number, sent],
                    prepare=True,
                )
                writes.append((time.monotonic() - sent) * 1000)
        time.sleep(0.5)
        stop.set()
        delays: list[float] = sorted(out.get(timeout=120))
    finally:
        stop.set()
        child.join(30)
        if child.is_alive():
            child.terminate()
            child.join()
    return delays, sorted(writes)


# --- durable-writers ------------------------------------------------------------------------

WRITER_VARIANTS = {
    "unpublished": "",
    "pg_notify row trigger": (
        "CREATE FUNCTION w_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " PERFORM pg_notify('w_pg', NEW.id::text); RETURN NULL; END $$;"
        " CREATE TRIGGER w AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION w_notify()"
    ),
    "durable, tick": (
        "SELECT pghub.make_durable('w_tick', wake => 'tick');"
        " SELECT pghub.publish_table('{t}', 'w_tick', 'row')"
    ),
    "durable, commit": (
        "SELECT pghub.make_durable('w_commit');"
        " SELECT pghub.publish_table('{t}', 'w_commit', 'row')"
    ),
}
_LISTENED = ("w_pg", "w_tick", "w_commit", "pghub:wake")


def _writer(dsn: str, inbox: Any, outbox: Any) -> None:
    """In a child process: for each (table, start, stop) from ``inbox``, one INSERT a
    transaction from ``start`` to ``stop`` (monotonic), then the commits made to ``outbox``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        outbox.put(0)  # connected
        while (job := inbox.get()) is not None:
            table, start, stop = job
            statement = sql.SQL("INSERT INTO {} (body) VALUES ('a small row')").format(
                sql.Identifier(table)
            )
            pause = start - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            commits = 0
            while time.monotonic() < stop:
                conn.execute(statement, prepare=True)
                commits += 1
            outbox.put(commits)


def _drain(dsn: str, stop: threading.Event) -> None:
    """One listener on every channel, draining, as a listening application would."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for channel in _LISTENED:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.2):
                pass


def writers(dsn: str, sizes: DurableSizes, progress: Progress) -> dict[str, Any]:
    """``writers`` processes insert into one table per variant, the variants in alternating
    order each round; a listener drains every channel and a hub (tick_interval 0.01, elected)
    ticks. Commits/s per variant and the median of the per-round ratios."""
    tables: dict[str, str] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for number, (variant, setup) in enumerate(WRITER_VARIANTS.items()):
            tables[variant] = table = f"w{number}"
            conn.execute(sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, body text)").format(
                sql.Identifier(table)
            ))  # fmt: skip
            if setup:
                conn.execute(setup.format(t=table))
    context = multiprocessing.get_context("spawn")
    outbox = context.Queue()
    inboxes = [context.Queue() for _ in range(sizes.writers)]
    children = [context.Process(target=_writer, args=(dsn, box, outbox)) for box in inboxes]
    stop = threading.Event()
    drainer = threading.Thread(target=_drain, args=(dsn, stop), daemon=True)
    results: dict[str, list[float]] = {variant: [] for variant in tables}
    try:
        for child in children:
            child.start()
        for _ in children:
            outbox.get(timeout=120)
        drainer.start()
        with pghub.Hub(dsn, tick_interval=0.01):
            for round_number in range(sizes.writer_rounds):
                order = list(tables) if round_number % 2 == 0 else list(reversed(tables))
                for variant in order:
                    progress.phase(
                        f"round {round_number + 1}/{sizes.writer_rounds}, {variant}, "
                        f"{sizes.writers} writers for {sizes.writer_seconds:g} s"
                    )
                    start = time.monotonic() + 0.2
                    for box in inboxes:
                        box.put((tables[variant], start, start + sizes.writer_seconds))
                    commits = sum(outbox.get(timeout=sizes.writer_seconds + 120) for _ in inboxes)
                    results[variant].append(commits / sizes.writer_seconds)
    finally:
        stop.set()
        for box in inboxes:
            box.put(None)
        for child in children:
            child.join(30)
            if child.is_alive():
                child.terminate()
                child.join()
        if drainer.is_alive():
            drainer.join(5)
    base = results["unpublished"]
    pg = results["pg_notify row trigger"]
    return {
        "writers": sizes.writers,
        "rounds": sizes.writer_rounds,
        "seconds": sizes.writer_seconds,
        "commits_per_s": {v: statistics.median(r) for v, r in results.items()},
        "ratio": {
            v: statistics.median(x / b for x, b in zip(r, base, strict=True))
            for v, r in results.items()
        },
        "commit_over_pg_notify": statistics.median(
            x / p for x, p in zip(results["durable, commit"], pg, strict=True)
        ),
        "rounds_commits_per_s": results,
    }


# --- durable-large --------------------------------------------------------------------------


def large(dsn: str, sizes: DurableSizes, progress: Progress) -> dict[str, Any]:
    """Five events sent at once through hub.notify on a durable topic, the third of
    ``large_bytes``: a named durable consumer must get all five, whole and in order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pghub.make_durable('large')")
    got: list[pghub.Event] = []
    arrived: dict[int, float] = {}
    done = threading.Event()

    def on_event(event: pghub.Event) -> None:
        if event.topic is not None:
            got.append(event)
            arrived[len(got)] = time.monotonic()
            if len(got) == 5:
                done.set()

    values: list[dict[str, Any]] = [{"n": n} for n in range(1, 6)]
    values[2]["pad"] = "x" * sizes.large_bytes
    progress.phase(f"an event of {sizes.large_bytes:,} bytes between four small ones")
    with pghub.Hub(dsn) as hub:
        consumer = hub.consumer(on_event, "large", durable="large")
        if not consumer.wait_subscribed(60):
            raise RuntimeError("durable-large: the consumer did not subscribe within 60 s")
        started = time.monotonic()
        futures = [hub.notify("large", [n], value) for n, value in enumerate(values, 1)]
        confirmed = all(f.result(60) for f in futures)
        done.wait(60)
    in_order = [tuple(e.key) for e in got] == [(n,) for n in range(1, 6)]
    whole = len(got) == 5 and [e.value for e in got] == values
    return {
        "bytes": sizes.large_bytes,
        "confirmed": confirmed,
        "received": len(got),
        "whole_and_in_order": bool(in_order and whole),
        "large_ms": (arrived[3] - started) * 1000 if 3 in arrived else None,
        "all_ms": (arrived[5] - started) * 1000 if 5 in arrived else None,
    }


_RUNS = {
    "durable-replay": replay,
    "durable-latency": latency,
    "durable-writers": writers,
    "durable-large": large,
}
