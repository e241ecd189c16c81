"""Durable consumers through the hub: replay rate and live latency (issue 13's targets).

    python bench/hub_durable.py replay --events 1000000    # a named consumer catches up
    python bench/hub_durable.py latency --seconds 20      # commit mode, 1,000 events/s

``replay``: a named consumer is created ("now"), 1,000,000 events are committed while no hub
runs, then a :class:`pghub.Hub` starts it again and its callback (a counter) is timed from
``hub.consumer(...)`` to the last event; each page acknowledged as in production. Commit mode
by default: with ``--wake tick`` the hub's elected ticker announces the backlog to plain
listeners meanwhile (a NOTIFY an event, which the durable consumer's hub also hears).

``latency``: a writer commits 1,000 events a second (commit mode), each carrying its send time
(CLOCK_MONOTONIC, the same in every process); a hub in another process delivers them to a
durable consumer, whose callback times each one from just before its writer's statement.

Databases as in bench/durable.py (``--dsn`` is a maintenance database; a fresh
``pghub_bench_*`` database each run, dropped afterwards).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

import durable as sql_bench  # noqa: E402  (bench/durable.py: database(), fill())
import pghub  # noqa: E402  (this tree's pghub)


class Counter:
    """The trivial callback: counts events, says when it has ``expected`` of them."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = threading.Event()

    def __call__(self, event: pghub.Event) -> None:
        if event.topic is not None:
            self.count += 1
            if self.count == self.expected:
                self.done.set()


def replay(admin_dsn: str, events: int, rounds: int, wake: str) -> None:
    with sql_bench.database(admin_dsn, f"pghub_bench_hub_replay_{os.getpid()}") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pghub.make_durable('orders', wake => %s)", [wake])
            for r in range(rounds):
                conn.execute("SELECT pghub.consumer_position(%s, 'orders', 'now')", [f"c{r}"])
            started = time.perf_counter()
            sql_bench.fill(conn, "orders", events)
            print(f"{events} events committed in {time.perf_counter() - started:.1f} s")
        for r in range(rounds):
            counter = Counter(events)
            with pghub.Hub(dsn) as hub:
                started = time.perf_counter()
                hub.consumer(counter, "orders", durable=f"c{r}")
                if not counter.done.wait(600):
                    raise RuntimeError(f"only {counter.count} of {events} events within 600 s")
                elapsed = time.perf_counter() - started
            print(
                f"round {r + 1}: {events} events to a callback in {elapsed:.2f} s:"
                f" {events / elapsed:,.0f} events/s"
                + (" (first read of the journal: sets hint bits)" if r == 0 else "")
            )
            raw_rate = raw_replay(dsn, events)
            print(
                f"  the same journal read by raw psycopg in pages of 1,000 and decoded, just"
                f" after: {raw_rate:,.0f} events/s (hub / raw: {events / elapsed / raw_rate:.2f})"
            )


def raw_replay(dsn: str, events: int) -> float:
    """The floor the hub adds to: pghub.read page after page and pghub.decode_payload on each
    payload, in one thread, no callback; events a second."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        position, got = "earliest", 0
        started = time.perf_counter()
        while True:
            rows = conn.execute(
                "SELECT pos, payload FROM pghub.read('orders', %s, 1000)", [position]
            ).fetchall()
            position = rows[-1][0]
            for _, payload in rows:
                if payload is not None:
                    pghub.decode_payload(payload)
                    got += 1
            if "/" not in position:
                break
        elapsed = time.perf_counter() - started
    assert got == events, f"{got} read, {events} written"
    return got / elapsed


def _latency_consumer(dsn: str, ready: Any, stop: Any, out: Any, named: bool) -> None:
    delays: list[float] = []
    subscribed = threading.Event()

    def on_event(event: pghub.Event) -> None:
        if event.topic is None:
            return
        delays.append((time.monotonic() - float(event.value)) * 1000)

    with pghub.Hub(dsn) as hub:
        if named:
            consumer = hub.consumer(on_event, "lat", durable="lat")
        else:  # an anonymous reader: no acknowledgements
            consumer = hub.consumer(on_event, "lat", since="now")
        if consumer.wait_subscribed(30):
            subscribed.set()
        ready.set()
        stop.wait(600)
        time.sleep(0.2)
    out.put(delays)


def latency(admin_dsn: str, rate: int, seconds: int, named: bool) -> None:
    context = multiprocessing.get_context("spawn")
    with sql_bench.database(admin_dsn, f"pghub_bench_hub_latency_{os.getpid()}") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pghub.make_durable('lat', wake => 'commit')")
        ready, stop, out = context.Event(), context.Event(), context.Queue()
        proc = context.Process(target=_latency_consumer, args=(dsn, ready, stop, out, named))
        proc.start()
        if not ready.wait(60):
            raise RuntimeError("the consumer did not start")
        with psycopg.connect(dsn, autocommit=True) as writer:
            started = time.monotonic()
            for number in range(rate * seconds):
                pause = started + number / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                writer.execute(
                    "SELECT pghub.notify('lat', ARRAY[%s]::bigint[], to_jsonb(%s::float8))",
                    [number, time.monotonic()],
                )
        time.sleep(0.5)
        stop.set()
        delays: list[float] = sorted(out.get(timeout=120))
        proc.join(60)
        if not delays:
            raise RuntimeError("no event arrived")
        n = len(delays)
        print(
            f"commit mode, {'named' if named else 'anonymous'}, {n} of {rate * seconds} events"
            f" at {rate}/s, writer's statement to the"
            f" hub's callback: p50 {delays[n // 2]:.2f} ms, p90 {delays[int(n * 0.9)]:.2f} ms,"
            f" p99 {delays[int(n * 0.99)]:.2f} ms, max {delays[-1]:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default="host=127.0.0.1 dbname=postgres user=postgres")
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("replay")
    r.add_argument("--events", type=int, default=1_000_000)
    r.add_argument("--rounds", type=int, default=2)
    r.add_argument("--wake", choices=("commit", "tick"), default="commit")
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=int, default=1000)
    lat.add_argument("--seconds", type=int, default=20)
    lat.add_argument("--anonymous", action="store_true", help="since='now', no name: no acks")
    args = parser.parse_args()
    if args.what == "replay":
        replay(args.dsn, args.events, args.rounds, args.wake)
    else:
        latency(args.dsn, args.rate, args.seconds, not args.anonymous)


if __name__ == "__main__":
    main()
