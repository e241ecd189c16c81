"""``pghub doctor``: are this server, database and connection path fit for pghub? Verdicts."""

from __future__ import annotations

import argparse
import os
import queue
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from ..errors import PghubError
from ..events import Action, Event
from ..hub import Hub
from ..install import default_version, installed_version
from ..wire import encode_payload
from ._common import (
    CliError,
    Exit,
    check_seconds,
    connect,
    conninfo_from,
    database_error,
    first_line,
    redact,
    shorten,
    use_colour,
    with_timeout,
)
from ._format import verdict_line

TESTED_MAJORS = range(14, 19)  # the server versions pghub's CI runs


class Verdict(NamedTuple):
    verdict: str  # "ok", "warn" or "FAIL"
    name: str
    detail: str


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long the round-trip test waits for its notification (default 5)",
    )


def run(args: argparse.Namespace) -> int:
    check_seconds("--timeout", args.timeout)
    colour = use_colour(sys.stdout)

    def show(verdict: Verdict) -> None:
        print(redact(verdict_line(*verdict, colour=colour)), flush=True)

    conninfo = conninfo_from(args.dsn)
    try:
        conn = connect(conninfo, args.connect_timeout)
    except CliError as error:
        show(Verdict("FAIL", "connect", shorten(str(error))))
        return error.code
    verdicts: list[Verdict] = []
    with conn:
        info = conn.info
        show(Verdict("ok", "connect", f"{info.host}:{info.port}/{info.dbname} as {info.user}"))
        checks: list[tuple[str, Callable[[], Verdict]]] = [
            ("server", lambda: _server(conn)),
            ("pghub", lambda: _pghub(conn)),
            ("round trip", lambda: _round_trip(conn, conninfo, args.connect_timeout, args.timeout)),
            ("queue", lambda: _queue(conn)),
            ("connections", lambda: _connections(conn)),
        ]
        for name, check in checks:
            try:
                verdict = check()
            except psycopg.Error as error:
                failure = database_error(error)
                if failure.code == Exit.UNREACHABLE:
                    # The server stopped answering or the connection is gone: no other check
                    # can run, and each would wait for the timeout again.
                    show(Verdict("FAIL", name, str(failure)))
                    return Exit.UNREACHABLE
                verdict = Verdict("FAIL", name, f"query failed: {first_line(error)}")
            verdicts.append(verdict)
            show(verdict)
    return Exit.FAILED if any(v.verdict == "FAIL" for v in verdicts) else Exit.OK


def _one(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def _server(conn: psycopg.Connection[Any]) -> Verdict:
    version = _one(conn, "SELECT current_setting('server_version')")
    major = conn.info.server_version // 10000
    if major in TESTED_MAJORS:
        return Verdict("ok", "server", f"PostgreSQL {version}")
    return Verdict(
        "warn",
        "server",
        f"PostgreSQL {version}: pghub is tested on {TESTED_MAJORS[0]} to {TESTED_MAJORS[-1]}",
    )


def _pghub(conn: psycopg.Connection[Any]) -> Verdict:
    found = installed_version(conn)
    wanted = default_version()
    if found is None:
        may_create = _one(conn, "SELECT has_database_privilege(current_database(), 'CREATE')")
        hint = (
            "run: pghub install"
            if may_create
            else f"and {conn.info.user} lacks CREATE on this database: ask its owner"
        )
        return Verdict("FAIL", "pghub", f"not installed in this database ({hint})")
    route, version = found
    how = "CREATE EXTENSION" if route == "extension" else "script install"
    if version != wanted:
        return Verdict("warn", "pghub", f"{version} ({how}); this package is {wanted}")
    return Verdict("ok", "pghub", f"{version} ({how})")


def _round_trip(
    conn: psycopg.Connection[Any], conninfo: str, connect_timeout: float, timeout: float
) -> Verdict:
    """A hub listens on a private channel; this connection sends to it; the event must arrive.

    Behind a transaction-mode pooler (PgBouncer's pool_mode=transaction) LISTEN succeeds on
    some server connection that is handed to someone else at once: nothing ever arrives.
    """
    topic = f"pghub_doctor_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    key, value = [os.getpid()], {"doctor": "round trip"}
    sql_side = installed_version(conn) is not None
    inbox: queue.SimpleQueue[Event] = queue.SimpleQueue()
    hub = Hub(
        with_timeout(conninfo, connect_timeout),
        name="pghub-doctor",
        connect_timeout=connect_timeout,
        # A LISTEN the server never answers is given up on within the connect timeout, and
        # stopping the hub (which waits for a command in flight) is bounded by it too.
        liveness_timeout=max(1.0, connect_timeout),
    )
    stop_waits = False
    try:
        hub.start()
        hub.consumer(inbox.put, topic)
        deadline = time.monotonic() + timeout
        if not _wait_for(inbox, deadline, lambda e: _is_advisory(e, Action.SUBSCRIBE)):
            return Verdict("FAIL", "round trip", f"LISTEN did not complete within {timeout:g} s")
        started = time.perf_counter()
        if sql_side:
            conn.execute(
                "SELECT pghub.notify(%s, %s::bigint[], %s::jsonb)",
                [topic, key, Jsonb(value)],
            )
        else:
            conn.execute("SELECT pg_notify(%s, %s)", [topic, encode_payload(key, value)])
        arrived = _wait_for(inbox, deadline, lambda e: e.topic is not None)
        elapsed_ms = (time.perf_counter() - started) * 1000
        stop_waits = True
    except PghubError as error:
        stop_waits = True
        return Verdict("FAIL", "round trip", f"the hub could not listen: {first_line(error)}")
    finally:
        # Interrupted, or this connection failed: the hub is not waited for on the way out.
        hub.stop(wait=stop_waits)
    sender = "pghub.notify() in SQL" if sql_side else "pg_notify()"
    if arrived is None:
        return Verdict(
            "FAIL",
            "round trip",
            f"no notification within {timeout:g} s: LISTEN has no effect on this connection; "
            "is a transaction-mode pooler (PgBouncer pool_mode=transaction) in between?",
        )
    if arrived.key != tuple(key) or arrived.value != value:
        return Verdict("FAIL", "round trip", f"sent {key} {value}, received {arrived}")
    return Verdict("ok", "round trip", f"{elapsed_ms:.1f} ms from {sender} to a Python hub")


def _is_advisory(event: Event, action: Action) -> bool:
    return event.topic is None and event.value.action is action


def _wait_for(
    inbox: queue.SimpleQueue[Event], deadline: float, wanted: Callable[[Event], bool]
) -> Event | None:
    while True:
        try:
            event = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if wanted(event):
            return event


def _queue(conn: psycopg.Connection[Any]) -> Verdict:
    usage = float(_one(conn, "SELECT pg_notification_queue_usage()"))
    detail = f"{usage:.1%} of the notification queue in use"
    if usage >= 0.9:
        return Verdict("FAIL", "queue", f"{detail}: NOTIFY fails when it is full")
    if usage >= 0.5:
        return Verdict(
            "warn", "queue", f"{detail}: a listener is not reading, or a transaction is held open"
        )
    return Verdict("ok", "queue", detail)


def _connections(conn: psycopg.Connection[Any]) -> Verdict:
    row = conn.execute(
        """
        SELECT current_setting('max_connections')::int,
            current_setting('superuser_reserved_connections')::int
            + coalesce(current_setting('reserved_connections', true)::int, 0),
            (SELECT count(*) FROM pg_catalog.pg_stat_activity
             WHERE backend_type = 'client backend')::int
        """
    ).fetchone()
    assert row is not None
    most, reserved, used = row
    free = most - reserved - used
    detail = f"{used} of max_connections {most} in use, {free} free ({reserved} reserved)"
    if free <= 0:
        return Verdict("FAIL", "connections", f"{detail}: new connections are refused")
    if free < max(5, most // 10):
        return Verdict("warn", "connections", f"{detail}: little headroom")
    return Verdict("ok", "connections", detail)
