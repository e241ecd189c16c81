"""``pghub bench``: measure pghub against raw psycopg and its peers (asyncpg, node-postgres)
on the same server, print the tables.

The harness is :mod:`pghub.tools.bench`; this module is its command line. Only the scenario
names are loaded to build the parser: the harness (multiprocessing, the listeners) is imported
when the benchmark runs.
"""

from __future__ import annotations

import argparse
import json
import os

import psycopg

from ..tools.bench.scenarios import DURABLE, MEMORY_EVENTS, PEERS, SCENARIOS
from ._common import CliError, Exit, first_line, remember_secrets

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

SUMMARY = "measure pghub against raw psycopg, asyncpg and node-postgres on one server, in one run"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=argparse.SUPPRESS,  # a --dsn given before "bench" is kept
        metavar="CONNINFO",
        help="libpq conninfo (default: $PGHUB_BENCH_DSN, else $PGHUB_DSN, else "
        f"{DEFAULT_DSN!r}; the PG* variables do not choose the server)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[*SCENARIOS, *DURABLE, "memory"],
        help="run only this scenario (repeatable); 'memory' runs only when named, the durable "
        "ones (a database of their own each, once a run) in a full run or when named",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small workloads, one run (about a minute)"
    )
    parser.add_argument("--runs", type=int, help="runs of each scenario (default 3, quick 1)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument(
        "--memory-events",
        type=int,
        default=MEMORY_EVENTS,
        help="events for --scenario memory (default %(default)s)",
    )
    parser.add_argument(
        "--no-peers",
        action="store_true",
        help="measure raw psycopg and pghub only: not asyncpg's add_listener nor a node-postgres "
        "listener, which otherwise run in the drain scenarios where installed (asyncpg: pip "
        "install 'pghub[bench]'; node-postgres: node on PATH and npm install --prefix "
        "~/.cache/pghub/node pg, or $PGHUB_BENCH_NODE_MODULES naming a node_modules with pg)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")


def target(dsn: str | None) -> str:
    """``--dsn``, else ``PGHUB_BENCH_DSN``, else ``PGHUB_DSN``, else the local server."""
    if dsn is not None:
        return dsn
    return os.environ.get("PGHUB_BENCH_DSN") or os.environ.get("PGHUB_DSN") or DEFAULT_DSN


def scenarios_of(args: argparse.Namespace) -> tuple[str, ...]:
    """Those named, else all; the durable ones not in ``--quick`` unless named."""
    if args.scenario:
        return tuple(args.scenario)
    return SCENARIOS if args.quick else (*SCENARIOS, *DURABLE)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every event arrived (targets are reported, never asserted), 1 when a run
    lost events or a listener failed, 3 when the server cannot be reached."""
    from ..tools.bench import report, runner  # the harness, only when it runs
    from ..tools.bench.progress import Progress

    if args.runs is not None and args.runs < 1:
        raise CliError(f"--runs must be at least 1, got {args.runs}", Exit.USAGE)
    if args.memory_events < 1:
        raise CliError(f"--memory-events must be at least 1, got {args.memory_events}", Exit.USAGE)
    dsn = target(args.dsn)
    remember_secrets(dsn)
    try:
        runner.server_version(dsn)
    except psycopg.Error as error:  # unreachable, or a conninfo libpq cannot read
        raise CliError(f"cannot connect: {first_line(error)}", Exit.UNREACHABLE) from None
    try:
        result = runner.run(
            dsn,
            scenarios=scenarios_of(args),
            quick=args.quick,
            runs=args.runs,
            memory_events=args.memory_events,
            progress=Progress(enabled=not args.no_progress),
            peers=() if args.no_peers else PEERS,
        )
    except RuntimeError as error:
        raise CliError(str(error), Exit.FAILED) from None
    print(report.headline(result))
    if result["scenarios"]:
        print(report.table(result["scenarios"]))
    peers = report.peers_table(result)
    if peers:
        print(peers)
    if "memory" in result:
        print(report.memory_lines(result["memory"]))
    if result.get("durable"):
        print(report.durable_lines(result["durable"]))
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
                f.write("\n")
        except OSError as error:
            raise CliError(
                f"cannot write {args.json}: {error.strerror or error}", Exit.FAILED
            ) from None
    return Exit.FAILED if report.incomplete(result) else Exit.OK
