"""Durable topics, the SQL side: what they cost writers, plain topics, disk and prune.

Each measurement runs against the PostgreSQL of ``--dsn`` (a maintenance database: it creates and
drops databases of its own, named ``pghub_bench_*``), with pghub installed by the script route
from this tree's sql/ (and, for ``plain-cost``, from a baseline git revision side by side).

    python bench/durable.py writers              # 8 writers, one INSERT a transaction (pgbench)
    python bench/durable.py plain-cost           # notify and row trigger: this tree vs baseline
    python bench/durable.py storage --events 1000000
    python bench/durable.py prune --events 1000000 10000000
    python bench/durable.py replay --events 1000000
    python bench/durable.py latency --wake commit      # commit to read, 1,000 events/s
    python bench/durable.py hub-send             # the hub's sends, with pghub and without

The machine is shared and noisy: every figure that compares is taken side by side, in rounds
that alternate the variants, and reported as the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from pghub.install import install  # noqa: E402  (this tree's pghub)

BASELINE = "acd243f"  # the last revision before durable topics


@contextmanager
def database(admin_dsn: str, name: str, sql_dir: Path = ROOT / "sql") -> Iterator[str]:
    """A fresh database with pghub installed by script from ``sql_dir``; dropped afterwards."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            install(conn, sql_dir=sql_dir)
        yield dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def baseline_sql(revision: str) -> Iterator[Path]:
    """The sql/ directory of a git revision, in a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("pghub.control", "pghub--0.3.sql"):
            text = subprocess.run(
                ["git", "show", f"{revision}:sql/{name}"],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        yield Path(tmp)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ==== writers: 8 clients, one INSERT a transaction ====

WRITER_TABLES = {
    "unpublished": "",
    "pg_notify row trigger": (
        "CREATE FUNCTION w_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " PERFORM pg_notify('w_pg', NEW.id::text); RETURN NULL; END $$;"
        " CREATE TRIGGER w AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION w_notify()"
    ),
    "pghub row trigger": "SELECT pghub.publish_table('{t}', 'w_plain', 'row')",
    "durable, commit": (
        "SELECT pghub.make_durable('w_commit');"
        " SELECT pghub.publish_table('{t}', 'w_commit', 'row')"
    ),
    "durable, tick": (
        "SELECT pghub.make_durable('w_tick', wake => 'tick');"
        " SELECT pghub.publish_table('{t}', 'w_tick', 'row')"
    ),
}
LISTENED = ("w_pg", "w_plain", "w_commit", "w_tick", "pghub:wake")


def drain_notifications(
    dsn: str, stop: threading.Event, channels: tuple[str, ...] = LISTENED
) -> None:
    """One listener on every channel, draining, as a hub would."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for channel in channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.2):
                pass


def tick_loop(dsn: str, stop: threading.Event, period: float) -> None:
    """What an elected hub does in tick mode: tick() every period (a fixed cadence), at once
    again while it says more."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        due = time.monotonic()
        while not stop.is_set():
            row = conn.execute("SELECT more FROM pghub.tick()").fetchone()
            if row and row[0]:
                continue
            due = max(due + period, time.monotonic() - period)
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)


def pgbench(dsn: str, table: str, clients: int, seconds: int) -> float:
    """Transactions per second of ``clients`` pgbench clients inserting one row each."""
    script = Path(tempfile.mkstemp(suffix=".sql")[1])
    script.write_text(f"INSERT INTO {table} (body) VALUES ('a small row');\n", encoding="utf-8")
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    done = subprocess.run(
        [
            "pgbench", "-n", "-f", str(script), "-c", str(clients), "-j", str(clients),
            "-T", str(seconds), "-h", str(info.get("host", "127.0.0.1")),
            "-p", str(info.get("port", 5432)), "-U", str(info.get("user", "postgres")),
            str(info["dbname"]),
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    script.unlink()
    for line in done.stdout.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(done.stdout + done.stderr)


def writers(
    admin_dsn: str, rounds: int, seconds: int, clients: int, tick_ms: float, hub_ticker: bool
) -> None:
    with database(admin_dsn, f"pghub_bench_writers_{os.getpid()}") as dsn:
        tables: dict[str, str] = {}
        with psycopg.connect(dsn, autocommit=True) as conn:
            for number, (variant, setup) in enumerate(WRITER_TABLES.items()):
                table = f"w{number}"
                conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, body text)")
                if setup:
                    conn.execute(setup.format(t=table))
                tables[variant] = table
        stop = threading.Event()
        helpers = [threading.Thread(target=drain_notifications, args=(dsn, stop))]
        if not hub_ticker:
            helpers.append(threading.Thread(target=tick_loop, args=(dsn, stop, tick_ms / 1000)))
        for helper in helpers:
            helper.start()
        results: dict[str, list[float]] = {variant: [] for variant in tables}
        # The ticker of tick mode: a hub's elected ticker (pghub._ticker), as in production,
        # or (--bench-ticker) this script's own loop.
        from pghub import Hub

        ticker = Hub(dsn, tick_interval=tick_ms / 1000) if hub_ticker else None
        if ticker is not None:
            ticker.start()
        try:
            for round_number in range(rounds):
                order = list(tables) if round_number % 2 == 0 else list(reversed(tables))
                for variant in order:
                    results[variant].append(pgbench(dsn, tables[variant], clients, seconds))
                print(f"round {round_number + 1}: " + ", ".join(
                    f"{v} {results[v][-1]:.0f}" for v in tables
                ), flush=True)  # fmt: skip
        finally:
            stop.set()
            for helper in helpers:
                helper.join()
            if ticker is not None:
                print(f"the hub's ticker: {ticker._ticker.figures}")
                ticker.stop()
        base = results["unpublished"]
        who = "a hub's elected ticker" if hub_ticker else "this script's tick loop"
        print(f"\n{clients} writers, one INSERT a transaction, {rounds} rounds of {seconds} s")
        print(f"tick mode ticked every {tick_ms:g} ms by {who}")
        print("| table | commits/s (median) | / unpublished (median of rounds) |")
        print("| --- | --- | --- |")
        for variant, tps in results.items():
            ratio = median([t / b for t, b in zip(tps, base, strict=True)])
            print(f"| {variant} | {median(tps):.0f} | {ratio:.2f}x |")


# ==== plain-cost: what a plain topic's notify and row trigger cost, before and after ====

PLAIN_SETUP = """
CREATE TABLE rows (id bigint PRIMARY KEY, body text);
SELECT pghub.publish_table('rows', 'rows', 'row');
CREATE TABLE data_rows (id bigint PRIMARY KEY, body text);
SELECT pghub.publish_table('data_rows', 'data_rows', 'row', NULL, true);
CREATE FUNCTION notify_loop(n integer) RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
BEGIN
    FOR i IN 1..n LOOP
        PERFORM pghub.notify('orders', ARRAY[i]::bigint[], '{"op": "ins", "seq": 1}');
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - started) * 1e6 / n;
END $$;
"""
PLAIN_WORKLOADS = {
    "notify from PL/pgSQL, a call": "SELECT notify_loop(%(n)s)",
    "row trigger, INSERT, a row": (
        "INSERT INTO rows SELECT g, 'x' FROM generate_series(1, %(n)s) AS g"
    ),
    "row trigger with data, INSERT, a row": (
        "INSERT INTO data_rows SELECT g, 'x' FROM generate_series(1, %(n)s) AS g"
    ),
}


def time_workload(dsn: str, statement: str, n: int) -> float:
    """Microseconds a call or row, inside a transaction that is rolled back (no commit)."""
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        cursor = conn.execute(statement, {"n": n})
        elapsed = (time.perf_counter() - started) * 1e6 / n
        row = cursor.fetchone() if cursor.description else None
        conn.rollback()
    if row is not None and isinstance(row[0], float):
        return row[0]  # timed inside the server
    return elapsed


def plain_cost(admin_dsn: str, rounds: int, n: int, baseline: str) -> None:
    pid = os.getpid()
    with (
        baseline_sql(baseline) as old_sql,
        database(admin_dsn, f"pghub_bench_before_{pid}", old_sql) as before,
        database(admin_dsn, f"pghub_bench_after_{pid}") as after,
    ):
        for dsn in (before, after):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(PLAIN_SETUP)
        print(f"plain topics: {baseline} (before) against this tree (after), {rounds} rounds")
        print("| workload | before µs | after µs | after / before (median of rounds) |")
        print("| --- | --- | --- | --- |")
        for name, statement in PLAIN_WORKLOADS.items():
            old: list[float] = []
            new: list[float] = []
            for round_number in range(rounds):
                pair = [(before, old), (after, new)]
                for dsn, times in pair if round_number % 2 == 0 else reversed(pair):
                    times.append(time_workload(dsn, statement, n))
            ratio = median([a / b for a, b in zip(new, old, strict=True)])
            print(f"| {name} | {min(old):.2f} | {min(new):.2f} | {ratio:.3f} |", flush=True)


# ==== hub-send: the Python hub's send path, with pghub (notify_encoded) and without ====


def _burst(hub: Any, topic: str, n: int) -> float:
    """Events a second: ``n`` notify() calls as fast as they go, until the last is confirmed."""
    started = time.perf_counter()
    futures = [hub.notify(topic, [i], {"op": "ins", "seq": i}) for i in range(n)]
    assert all(f.result(60) for f in futures[-1:]), "not confirmed"
    return n / (time.perf_counter() - started)


def _one_by_one(hub: Any, topic: str, n: int) -> float:
    """Notifies a second, each awaited before the next (a batch of one, a round trip each)."""
    started = time.perf_counter()
    for i in range(n):
        assert hub.notify(topic, [i], {"op": "ins", "seq": i}).result(60)
    return n / (time.perf_counter() - started)


def hub_send(admin_dsn: str, rounds: int, burst: int, single: int) -> None:
    """The hub's send rate on a plain topic: a database without pghub (the hub sends with
    pg_notify, as before pghub.notify_encoded) against one with it (every batch through
    notify_encoded, which looks up each event's topic); a durable topic for reference."""
    from pghub import Hub

    pid = os.getpid()
    plain_name = f"pghub_bench_nopghub_{pid}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(plain_name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(plain_name)))
    without = psycopg.conninfo.make_conninfo(admin_dsn, dbname=plain_name)
    try:
        with database(admin_dsn, f"pghub_bench_withpghub_{pid}") as with_pghub:
            with psycopg.connect(with_pghub, autocommit=True) as conn:
                conn.execute("SELECT pghub.make_durable('kept')")
            options: dict[str, Any] = {"tick_interval": None, "prune_interval": None}
            with Hub(without, **options) as old, Hub(with_pghub, **options) as new:
                variants = {
                    "plain topic, no pghub (pg_notify)": (old, "orders"),
                    "plain topic, pghub (notify_encoded)": (new, "orders"),
                    "durable topic, commit mode": (new, "kept"),
                }
                for name, work, n in (
                    ("burst", _burst, burst),
                    ("one by one", _one_by_one, single),
                ):
                    rates: dict[str, list[float]] = {v: [] for v in variants}
                    for round_number in range(rounds):
                        order = list(variants)
                        if round_number % 2:
                            order.reverse()
                        for variant in order:
                            hub, topic = variants[variant]
                            rates[variant].append(work(hub, topic, n))
                    base = rates["plain topic, no pghub (pg_notify)"]
                    print(f"\n{name}: {n} events a round, {rounds} rounds")
                    print("| variant | events/s (median) | / no pghub (median of rounds) |")
                    print("| --- | --- | --- |")
                    for variant, got in rates.items():
                        ratio = median([r / b for r, b in zip(got, base, strict=True)])
                        print(f"| {variant} | {median(got):.0f} | {ratio:.2f}x |", flush=True)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(plain_name)
                )
            )


# ==== storage, prune and replay ====


def fill(conn: psycopg.Connection[Any], topic: str, events: int, chunk: int = 200_000) -> None:
    """``events`` row-trigger-sized events on ``topic``, committed in chunks of ``chunk``."""
    conn.execute(
        "CREATE OR REPLACE FUNCTION bench_fill(topic text, first bigint, n integer) RETURNS void"
        " LANGUAGE plpgsql AS $$ BEGIN FOR i IN first..first + n - 1 LOOP"
        " PERFORM pghub.notify(topic, ARRAY[i], jsonb_build_object('op', 'ins',"
        " 'table', 'public.orders', 'seq', 1)); END LOOP; END $$"
    )
    done = 0
    while done < events:
        step = min(chunk, events - done)
        conn.execute("SELECT bench_fill(%s, %s, %s)", [topic, done, step])
        done += step


def storage(admin_dsn: str, events: int) -> None:
    with database(admin_dsn, f"pghub_bench_storage_{os.getpid()}") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pghub.make_durable('orders', wake => 'tick')")
            fill(conn, "orders", events)
            conn.execute("VACUUM ANALYZE pghub.journal$0")
            row = conn.execute(
                "SELECT pg_relation_size('pghub.journal$0'),"
                " pg_indexes_size('pghub.journal$0'),"
                " pg_total_relation_size('pghub.journal$0'),"
                " avg(octet_length(payload)) FROM pghub.journal$0"
            ).fetchone()
        assert row is not None
        heap, indexes, total, payload = row
        print(f"{events} events, payload {float(payload):.0f} bytes on average")
        print(f"table {heap / events:.1f} bytes/event, indexes {indexes / events:.1f}, "
              f"total {total / events:.1f}")  # fmt: skip


def prune(admin_dsn: str, sizes: list[int]) -> None:
    print("| events in the table | fill s | durable_topics() s | prune() s | emptied |")
    print("| --- | --- | --- | --- | --- |")
    for events in sizes:
        with database(admin_dsn, f"pghub_bench_prune_{os.getpid()}") as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pghub.make_durable('orders', '1 hour', 'tick')")
                started = time.perf_counter()
                fill(conn, "orders", events)
                filled = time.perf_counter() - started
                started = time.perf_counter()
                conn.execute("SELECT * FROM pghub.durable_topics()").fetchall()
                listed = time.perf_counter() - started
                # rotate, then let the table age past the retention
                conn.execute(
                    "UPDATE pghub.journal$slot SET opened_at = now() - interval '2 hours'"
                    " WHERE slot = 0"
                )
                conn.execute("SELECT * FROM pghub.prune()")
                conn.execute(
                    "UPDATE pghub.journal$slot SET closed_at = now() - interval '2 hours'"
                    " WHERE slot = 0"
                )
                started = time.perf_counter()
                row = conn.execute("SELECT emptied, events FROM pghub.prune()").fetchone()
                pruned = time.perf_counter() - started
            print(f"| {events} | {filled:.0f} | {listed:.2f} | {pruned:.2f} | {row} |", flush=True)


def replay(admin_dsn: str, events: int, page: int) -> None:
    """A consumer that was away while ``events`` were committed reads them all, page by page."""
    with (
        database(admin_dsn, f"pghub_bench_replay_{os.getpid()}") as dsn,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        conn.execute("SELECT pghub.make_durable('orders', wake => 'tick')")
        start = conn.execute("SELECT pghub.current_position()").fetchone()
        assert start is not None
        fill(conn, "orders", events)
        for attempt in ("first read (sets hint bits)", "second read"):
            position, got = str(start[0]), 0
            started = time.perf_counter()
            while True:
                rows = conn.execute(
                    "SELECT pos, payload FROM pghub.read('orders', %s, %s)", [position, page]
                ).fetchall()
                position = rows[-1][0]
                fetched = sum(1 for _, payload in rows if payload is not None)
                got += fetched
                if fetched == 0:
                    break
            elapsed = time.perf_counter() - started
            print(
                f"{attempt}: {got} events in pages of {page}, {elapsed:.1f} s, "
                f"{got / elapsed:.0f} events/s (read and fetched by psycopg, not decoded)"
            )


# ==== latency: commit to a consumer's read, raw psycopg ====


def _latency_reader(dsn: str, ready: Any, stop: Any, out: Any) -> None:
    """In its own process: LISTEN, and on each wake-up read the journal; report each event's
    delay from its send time (CLOCK_MONOTONIC, the same in every process), in ms."""
    delays: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as reader:
        reader.execute('LISTEN lat; LISTEN "pghub:wake"')
        row = reader.execute("SELECT pghub.current_position()").fetchone()
        assert row is not None
        position = str(row[0])
        ready.set()
        while not stop.is_set():
            for _ in reader.notifies(timeout=0.05, stop_after=1):
                pass
            for _ in reader.notifies(timeout=0):  # the wake-ups already here: one read for all
                pass
            rows = reader.execute(
                "SELECT pos, payload FROM pghub.read('lat', %s, 1000)", [position]
            ).fetchall()
            now = time.monotonic()
            for _, payload in rows:
                if payload is not None:
                    delays.append((now - float(payload.partition(":")[2])) * 1000)
            position = rows[-1][0]
    out.put(delays)


def _ticker(dsn: str, stop: Any, period: float) -> None:
    """A hub whose elected ticker ticks every ``period`` (pghub._ticker), as in production."""
    from pghub import Hub

    with Hub(dsn, tick_interval=period):
        stop.wait()


def latency(admin_dsn: str, wake: str, rate: int, seconds: int, tick_ms: float) -> None:
    """A writer commits ``rate`` events a second, each carrying its send time; a reader in
    another process LISTENs (the topic's channel and pghub:wake), reads the journal on each
    wake-up and times each event from just before its writer's commit to the read that
    returned it. In tick mode a third process runs a hub, whose ticker ticks every ``tick_ms``."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with database(admin_dsn, f"pghub_bench_latency_{os.getpid()}") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pghub.make_durable('lat', wake => %s)", [wake])
        ready, stop, out = context.Event(), context.Event(), context.Queue()
        helpers = [context.Process(target=_latency_reader, args=(dsn, ready, stop, out))]
        if wake == "tick":
            helpers.append(context.Process(target=_ticker, args=(dsn, stop, tick_ms / 1000)))
        for helper in helpers:
            helper.start()
        ready.wait(30)
        commits: list[float] = []
        with psycopg.connect(dsn, autocommit=True) as writer:
            started = time.monotonic()
            for number in range(rate * seconds):
                pause = started + number / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                sent = time.monotonic()
                writer.execute(
                    "SELECT pghub.notify('lat', ARRAY[%s]::bigint[], to_jsonb(%s::float8))",
                    [number, sent],
                )
                commits.append((time.monotonic() - sent) * 1000)
        commits.sort()
        time.sleep(0.5)
        stop.set()
        delays: list[float] = sorted(out.get(timeout=60))
        for helper in helpers:
            helper.join(timeout=30)
        if not delays:
            raise RuntimeError("no event arrived")
        p50 = delays[len(delays) // 2]
        p99 = delays[int(len(delays) * 0.99)]
        print(
            f"wake {wake}: {len(delays)} of {rate * seconds} events at {rate}/s, commit to read:"
            f" p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {delays[-1]:.1f} ms"
            + (f" (tick every {tick_ms:g} ms)" if wake == "tick" else "")
            + f"; the writer's own statement and commit: p50 {commits[len(commits) // 2]:.2f} ms,"
            f" p99 {commits[int(len(commits) * 0.99)]:.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="host=127.0.0.1 dbname=postgres user=postgres")
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("writers")
    w.add_argument("--rounds", type=int, default=3)
    w.add_argument("--seconds", type=int, default=15)
    w.add_argument("--clients", type=int, default=8)
    w.add_argument("--tick-ms", type=float, default=10.0)
    w.add_argument("--bench-ticker", action="store_true", help="tick with a loop, not a hub")
    p = sub.add_parser("plain-cost")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--baseline", default=BASELINE)
    s = sub.add_parser("storage")
    s.add_argument("--events", type=int, default=1_000_000)
    r = sub.add_parser("prune")
    r.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    lt = sub.add_parser("latency")
    lt.add_argument("--wake", choices=["commit", "tick"], default="commit")
    lt.add_argument("--rate", type=int, default=1000)
    lt.add_argument("--seconds", type=int, default=10)
    lt.add_argument("--tick-ms", type=float, default=10.0)
    h = sub.add_parser("hub-send")
    h.add_argument("--rounds", type=int, default=5)
    h.add_argument("--burst", type=int, default=50_000)
    h.add_argument("--single", type=int, default=2_000)
    y = sub.add_parser("replay")
    y.add_argument("--events", type=int, default=1_000_000)
    y.add_argument("--page", type=int, default=10_000)
    args = parser.parse_args()
    if args.what == "writers":
        writers(
            args.dsn, args.rounds, args.seconds, args.clients, args.tick_ms, not args.bench_ticker
        )
    elif args.what == "plain-cost":
        plain_cost(args.dsn, args.rounds, args.n, args.baseline)
    elif args.what == "storage":
        storage(args.dsn, args.events)
    elif args.what == "prune":
        prune(args.dsn, args.events)
    elif args.what == "hub-send":
        hub_send(args.dsn, args.rounds, args.burst, args.single)
    elif args.what == "latency":
        latency(args.dsn, args.wake, args.rate, args.seconds, args.tick_ms)
    else:
        replay(args.dsn, args.events, args.page)


if __name__ == "__main__":
    main()
