"""Publishing tables: what pghub's row and statement triggers cost writers.

Against the PostgreSQL of ``--dsn`` (a maintenance database: it creates and drops a database of
its own, ``pghub_bench_tables_*``, with pghub installed by the script route from this tree).

    python bench/table_triggers.py single     # one writer: added µs a one-row INSERT statement
    python bench/table_triggers.py writers    # 8 writers, one INSERT a transaction (pgbench)
    python bench/table_triggers.py bulk       # µs a row added to 10,000-row INSERT and UPDATE

"statement, old arguments" is a statement trigger written as an older publish_table wrote it
(no '+checked'): it takes the path every statement took before, the catalog lookups included,
so it is the "before" of the same run. ``single`` and ``writers`` take ``--baseline REV``: the
row and statement triggers of that git revision's SQL, installed in a database of their own,
join the variants (the "before" of a change to the trigger bodies). Variants alternate within
each round and every ratio is the median of the per-round ratios (the machine is shared and
noisy).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from durable import (  # this tree's pghub, in a scratch database; the writers' helpers
    baseline_sql,
    database,
    drain_notifications,
    median,
    pgbench,
)

TABLE = "CREATE TABLE {t} (id bigserial PRIMARY KEY, body text)"
OLD_STATEMENT = """
CREATE TRIGGER pghub_ins AFTER INSERT ON {t} REFERENCING NEW TABLE AS pghub_new
    FOR EACH STATEMENT EXECUTE FUNCTION pghub.statement_trigger('{c}', 'id');
CREATE TRIGGER pghub_upd AFTER UPDATE ON {t} REFERENCING OLD TABLE AS pghub_old
    NEW TABLE AS pghub_new FOR EACH STATEMENT EXECUTE FUNCTION pghub.statement_trigger('{c}', 'id');
"""
VARIANTS = {
    "unpublished": "",
    "pg_notify row trigger": (
        "CREATE FUNCTION t_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " PERFORM pg_notify('t_pg', NEW.id::text); RETURN NULL; END $$;"
        " CREATE TRIGGER t AFTER INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION t_notify()"
    ),
    "pghub row trigger": "SELECT pghub.publish_table('{t}', '{c}', 'row')",
    "pghub statement trigger": "SELECT pghub.publish_table('{t}', '{c}')",
    "statement, old arguments": OLD_STATEMENT,
}
CHANNELS = ("t_pg", "t1", "t2", "t3", "t4")


def setup(dsn: str) -> dict[str, str]:
    tables: dict[str, str] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for number, (variant, statements) in enumerate(VARIANTS.items()):
            table = f"t{number}"
            conn.execute(TABLE.format(t=table))
            if statements:
                conn.execute(statements.format(t=table, c=table))
            tables[variant] = table
    return tables


BEFORE_CHANNELS = ("b_row", "b_stm")


def places(dsn: str, before_dsn: str | None, baseline: str | None) -> dict[str, tuple[str, str]]:
    """Each variant's database and table: this tree's, then the baseline revision's triggers."""
    found = {variant: (dsn, table) for variant, table in setup(dsn).items()}
    if before_dsn is not None:
        with psycopg.connect(before_dsn, autocommit=True) as conn:
            for table, level in zip(BEFORE_CHANNELS, ("row", "statement"), strict=True):
                conn.execute(TABLE.format(t=table))
                conn.execute(f"SELECT pghub.publish_table('{table}', '{table}', '{level}')")
                found[f"pghub {level} trigger at {baseline}"] = (before_dsn, table)
    return found


@contextmanager
def databases(admin_dsn: str, baseline: str | None) -> Iterator[tuple[str, str | None]]:
    """This tree's scratch database and, with a baseline, one with that revision's pghub."""
    pid = os.getpid()
    with database(admin_dsn, f"pghub_bench_tables_{pid}") as dsn:
        if baseline is None:
            yield dsn, None
            return
        with (
            baseline_sql(baseline) as old_sql,
            database(admin_dsn, f"pghub_bench_tables_before_{pid}", old_sql) as before_dsn,
        ):
            yield dsn, before_dsn


def rounds_of_pgbench(
    where: dict[str, tuple[str, str]], rounds: int, seconds: int, clients: int
) -> dict[str, list[float]]:
    stop = threading.Event()
    helpers = [
        threading.Thread(target=drain_notifications, args=(dsn, stop, channels))
        for dsn, channels in {
            dsn: CHANNELS if table.startswith("t") else BEFORE_CHANNELS
            for dsn, table in where.values()
        }.items()
    ]
    for helper in helpers:
        helper.start()
    results: dict[str, list[float]] = {variant: [] for variant in where}
    try:
        for round_number in range(rounds):
            order = list(where) if round_number % 2 == 0 else list(reversed(where))
            for variant in order:
                results[variant].append(pgbench(*where[variant], clients, seconds))
            print(f"round {round_number + 1} (load {os.getloadavg()[0]:.1f}): " + ", ".join(
                f"{v} {results[v][-1]:.0f}" for v in where
            ), flush=True)  # fmt: skip
    finally:
        stop.set()
        for helper in helpers:
            helper.join()
    return results


LOOP = """
CREATE FUNCTION insert_loop(tbl regclass, n integer) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
BEGIN
    FOR i IN 1..n LOOP
        EXECUTE format('INSERT INTO %s (body) VALUES (''a small row'')', tbl);
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - started) * 1e6 / n;
END $$;
"""


def single(admin_dsn: str, rounds: int, n: int, baseline: str | None) -> None:
    """One writer, timed inside the server (commits are fsync-bound and too noisy here): n
    one-row INSERT statements in a transaction that is rolled back, µs each."""
    with databases(admin_dsn, baseline) as (dsn, before_dsn):
        where = places(dsn, before_dsn, baseline)
        results: dict[str, list[float]] = {variant: [] for variant in where}
        conns = {
            place_dsn: psycopg.connect(place_dsn) for place_dsn in {d for d, _ in where.values()}
        }
        try:
            for conn in conns.values():
                conn.execute(LOOP)
                conn.commit()
            for round_number in range(rounds):
                order = list(where) if round_number % 2 == 0 else list(reversed(where))
                for variant in order:
                    conn = conns[where[variant][0]]
                    row = conn.execute(
                        "SELECT insert_loop(%s, %s)", (where[variant][1], n)
                    ).fetchone()
                    conn.rollback()
                    assert row is not None
                    results[variant].append(row[0])
        finally:
            for conn in conns.values():
                conn.close()
        load = os.getloadavg()[0]
    base = results["unpublished"]
    print(f"1 writer, {n} one-row INSERT statements a round, {rounds} rounds, load {load:.1f}")
    print("| table | µs a statement (median) | µs added by the trigger (median of rounds) |")
    print("| --- | --- | --- |")
    for variant, times in results.items():
        added = median([t - b for t, b in zip(times, base, strict=True)])
        print(f"| {variant} | {median(times):.1f} | {added:+.1f} |")


def writers(admin_dsn: str, rounds: int, seconds: int, clients: int, baseline: str | None) -> None:
    with databases(admin_dsn, baseline) as (dsn, before_dsn):
        results = rounds_of_pgbench(places(dsn, before_dsn, baseline), rounds, seconds, clients)
    base = results["unpublished"]
    plain = results["pg_notify row trigger"]
    print(f"\n{clients} writers, one INSERT a transaction, {rounds} rounds of {seconds} s")
    print("| table | commits/s (median) | / unpublished | / pg_notify row trigger |")
    print("| --- | --- | --- | --- |")
    for variant, tps in results.items():
        to_base = median([t / b for t, b in zip(tps, base, strict=True)])
        to_plain = median([t / p for t, p in zip(tps, plain, strict=True)])
        print(f"| {variant} | {median(tps):.0f} | {to_base:.2f}x | {to_plain:.2f}x |")


BULK = {
    "INSERT": "INSERT INTO {t} (id, body) SELECT g, 'x' FROM generate_series(1, {n}) AS g",
    "UPDATE": "UPDATE {t} SET body = 'y'",
    "UPDATE of the key": "UPDATE {t} SET id = id + {n}",
}


def bulk_once(dsn: str, table: str, n: int) -> dict[str, float]:
    """Milliseconds of each statement, in one transaction rolled back."""
    times: dict[str, float] = {}
    with psycopg.connect(dsn) as conn:
        for name, statement in BULK.items():
            started = time.perf_counter()
            conn.execute(statement.format(t=table, n=n))
            times[name] = (time.perf_counter() - started) * 1e3
        conn.rollback()
    return times


BASELINE = "e3dab07"  # the last revision before the statement trigger's plain path


def bulk(admin_dsn: str, rounds: int, n: int, baseline: str) -> None:
    pid = os.getpid()
    with (
        baseline_sql(baseline) as old_sql,
        database(admin_dsn, f"pghub_bench_tables_{pid}") as dsn,
        database(admin_dsn, f"pghub_bench_tables_before_{pid}", old_sql) as before_dsn,
    ):
        tables = setup(dsn)
        with psycopg.connect(before_dsn, autocommit=True) as conn:
            conn.execute(TABLE.format(t="b"))
            conn.execute("SELECT pghub.publish_table('b')")
        places = {
            "unpublished": (dsn, tables["unpublished"]),
            "pghub statement trigger": (dsn, tables["pghub statement trigger"]),
            "statement, old arguments": (dsn, tables["statement, old arguments"]),
            f"statement trigger at {baseline}": (before_dsn, "b"),
        }
        results: dict[str, list[dict[str, float]]] = {variant: [] for variant in places}
        for round_number in range(rounds):
            order = list(places) if round_number % 2 == 0 else list(reversed(places))
            for variant in order:
                results[variant].append(bulk_once(*places[variant], n))
        load = os.getloadavg()[0]
    print(f"\n{n:,}-row statements, {rounds} rounds, load {load:.1f}; µs a row added")
    shown = [v for v in places if v != "unpublished"]
    print("| statement | " + " | ".join(shown) + " | this tree / before |")
    print("| --- " * (len(shown) + 2) + "|")
    base = results["unpublished"]
    for name in BULK:
        added = [
            median([(r[name] - b[name]) * 1e3 / n for r, b in zip(results[v], base, strict=True)])
            for v in shown
        ]
        cells = " | ".join(f"{a:.2f}" for a in added)
        print(f"| {name} | {cells} | {added[0] / added[-1]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="host=127.0.0.1 dbname=postgres user=postgres")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("single")
    s.add_argument("--rounds", type=int, default=7)
    s.add_argument("--n", type=int, default=2000)
    s.add_argument("--baseline", default=None, help="a git revision whose triggers to add")
    w = sub.add_parser("writers")
    w.add_argument("--rounds", type=int, default=3)
    w.add_argument("--seconds", type=int, default=10)
    w.add_argument("--clients", type=int, default=8)
    w.add_argument("--baseline", default=None, help="a git revision whose triggers to add")
    b = sub.add_parser("bulk")
    b.add_argument("--rounds", type=int, default=5)
    b.add_argument("--n", type=int, default=10_000)
    b.add_argument("--baseline", default=BASELINE)
    args: Any = parser.parse_args()
    if args.command == "single":
        single(args.dsn, args.rounds, args.n, args.baseline)
    elif args.command == "writers":
        writers(args.dsn, args.rounds, args.seconds, args.clients, args.baseline)
    else:
        bulk(args.dsn, args.rounds, args.n, args.baseline)


if __name__ == "__main__":
    main()
