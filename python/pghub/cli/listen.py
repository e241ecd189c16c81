"""``pghub listen TOPIC...``: follow topics and print every event as it arrives; with
``--durable NAME`` (or ``--since``), as a durable consumer that prints each event's position."""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from types import FrameType

import psycopg
from psycopg import errors as pg_errors

from ..errors import ConnectFailed, InvalidTopic
from ..events import Event
from ..hub import Hub
from ..wire import channel
from ._common import (
    BoundedConnection,
    CliError,
    Exit,
    Interrupted,
    connect,
    conninfo_from,
    database_error,
    first_line,
    say,
    use_colour,
    with_timeout,
)
from ._format import advisory_text, json_line, pretty_line
from .topics import require_durable

# Put in the event queue by the signal handler: SimpleQueue.put may be called from one.
_SIGNALLED = Event(None, (), None)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topics", nargs="+", metavar="TOPIC", help="topics to follow")
    parser.add_argument(
        "--count", type=int, metavar="N", help="stop after N events (default: run until stopped)"
    )
    parser.add_argument(
        "--format",
        choices=("auto", "json", "pretty"),
        default="auto",
        help="json: one JSON object per line; pretty: readable and coloured; "
        "auto (default): pretty on a terminal, json otherwise",
    )
    parser.add_argument(
        "--durable",
        metavar="NAME",
        help="follow durable topics as the named durable consumer NAME: its position is kept "
        "on the server under that name and acknowledged once an event is printed, so that a "
        "listener started again under the same name goes on where it stopped (what was "
        "printed but not yet acknowledged when it was killed may come again); each event's "
        "position is printed",
    )
    parser.add_argument(
        "--since",
        metavar="now|earliest|POSITION",
        help="where a durable consumer starts the first time its NAME is used: now (the "
        "default), earliest (every event still kept) or a printed position (the events after "
        "it); without --durable, an anonymous durable reader from there, its position kept "
        "in memory only",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no advisories (connect, subscribe...) on stderr, nor the line naming the server "
        "it reached (warnings and errors still go there)",
    )


def run(args: argparse.Namespace) -> int:
    topics: list[str] = args.topics
    for topic in topics:
        try:
            channel(topic)
        except InvalidTopic as error:
            raise CliError(str(error), Exit.USAGE) from None
    if args.count is not None and args.count < 1:
        raise CliError(f"--count must be at least 1, got {args.count}", Exit.USAGE)
    durable = args.durable is not None or args.since is not None
    if args.durable is not None and not 1 <= len(args.durable) <= MAX_NAME:
        raise CliError(
            f"--durable must be a name of 1 to {MAX_NAME} characters, got {len(args.durable)}",
            Exit.USAGE,
        )
    if args.since is not None and (not args.since or not args.since.isprintable()):
        raise CliError("--since must be now, earliest or a printed position", Exit.USAGE)
    conninfo = conninfo_from(args.dsn)
    pretty = args.format == "pretty" or (args.format == "auto" and sys.stdout.isatty())
    colour = pretty and use_colour(sys.stdout)
    inbox: queue.SimpleQueue[Event] = queue.SimpleQueue()
    printer = _Printer(pretty=pretty, colour=colour)
    with _signals_to(inbox) as signals:
        # A clear error now rather than the hub's retries; and which server, database and
        # role libpq chose, so that an empty conninfo (libpq's defaults) is not a guess.
        with connect(conninfo, args.connect_timeout) as probe:
            if durable:
                _check_durable(probe, topics, args.since or "now")
            info = probe.info
            reached = (
                f"connected to server {info.host} port {info.port}, database {info.dbname}, "
                f"user {info.user}"
            )
        if not args.quiet:
            say(f"pghub listen: {reached}")
        hub = Hub(
            with_timeout(conninfo, args.connect_timeout),
            name="pghub-listen",
            connect_timeout=args.connect_timeout,
            parse_float=Decimal,  # printed as sent: 1.50 stays 1.50, 0.1 + 17 digits exact
        )
        try:
            try:
                hub.start()
            except ConnectFailed as error:
                raise CliError(str(error), Exit.UNREACHABLE) from None
            if durable:
                _print_durable(hub, topics, args, inbox, signals, printer)
            else:
                hub.consumer(inbox.put, *topics)
                signals.queued = True  # from now on a signal ends the loop below, between events
                _print_events(inbox, args.count, printer, quiet=args.quiet)
        finally:
            # Not waiting: a command in flight to a silent server would hold the exit for up
            # to the hub's liveness timeout, and nothing is left to send or print.
            hub.stop(wait=False)
    return printer.summary(undecodable=hub.stats().invalid_payloads)


MAX_NAME = 200  # characters of a durable consumer's name (pghub.consumer_position's bound)
# What a durable listener needs of the SQL side (docs/durable.md).
_DURABLE_SQL = ("pghub.read(text,text,integer)", "pghub.ack(text,text,text)")


def _check_durable(conn: BoundedConnection, topics: list[str], since: str) -> None:
    """Before the hub starts: pghub has durable topics, each topic is durable, ``since`` is a
    position the server reads; a clear error otherwise, instead of the hub's retries."""
    require_durable(conn, _DURABLE_SQL)
    for topic in topics:
        try:  # reads at most one event: the server's own checks, nothing written
            # ('now' is the hub's word, turned into a position when it starts: read has none)
            start = "earliest" if since == "now" else since
            conn.execute("SELECT count(*) FROM pghub.read(%s, %s, 1)", [topic, start])
        except (pg_errors.ObjectNotInPrerequisiteState, pg_errors.InvalidTextRepresentation) as e:
            hint = e.diag.message_hint
            raise CliError(
                first_line(e) + (f" ({hint.rstrip('.')})" if hint else ""), Exit.USAGE
            ) from None
        except psycopg.Error as error:
            raise database_error(error, f"cannot read durable topic {topic}") from None


class _Stop(Exception):
    """stdout has gone away: leave the subscription without acknowledging the event that
    could not be printed."""


def _print_durable(
    hub: Hub,
    topics: list[str],
    args: argparse.Namespace,
    inbox: queue.SimpleQueue[Event],
    signals: _Signals,
    printer: _Printer,
) -> None:
    """Print a durable consumer's events in this thread, through a subscription: an event is
    acknowledged once the next one is asked for, that is once it has been printed. A signal
    or ``--count`` ends the loop between events; leaving the subscription acknowledges what
    was printed."""
    received = 0
    subscription = hub.subscription(
        *topics, advisories=True, durable=args.durable, since=args.since
    )
    try:
        with subscription as events:
            signals.queued = True  # from now on a signal ends the loop, between events
            while (args.count is None or received < args.count) and inbox.empty():
                try:
                    event = events.get(_SIGNAL_POLL)
                except TimeoutError:
                    continue
                if event is None:
                    return  # the hub stopped
                if event.topic is None:
                    if not args.quiet:
                        say(f"pghub listen: {advisory_text(event.value)}")
                    continue
                received += 1
                if not printer.print(event):
                    raise _Stop
    except _Stop:
        return


_SIGNAL_POLL = 0.25  # seconds a durable listener waits for an event before it looks for a signal


class _Printer:
    """Prints events; one that cannot be printed is reported on stderr and counted."""

    def __init__(self, *, pretty: bool, colour: bool) -> None:
        self.pretty = pretty
        self.colour = colour
        self.unprintable = 0

    def print(self, event: Event) -> bool:
        """Print the event; False when stdout has gone away (a reader like ``head -1``)."""
        try:
            line = pretty_line(event, colour=self.colour) if self.pretty else json_line(event)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader went away: nothing more to print to, and nothing wrong. Point
            # stdout at /dev/null so that the flush at exit raises nothing more.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return False
        except Exception as error:  # a value no writer takes, or stdout refusing a character
            self.unprintable += 1
            say(
                f"pghub listen: cannot print an event on {event.topic} key {list(event.key)}: "
                f"{type(error).__name__}: {first_line(error)} ({self.unprintable} so far)"
            )
        return True

    def summary(self, *, undecodable: int) -> int:
        """Exit 0, or 1 after a line that counts the events lost to the output.

        Payloads the hub could not decode were each reported by its warning as they came.
        """
        lost = []
        if self.unprintable:
            lost.append(f"{self.unprintable} events could not be printed")
        if undecodable:
            lost.append(f"{undecodable} payloads could not be decoded")
        if not lost:
            return Exit.OK
        say(f"pghub listen: {' and '.join(lost)}")
        return Exit.FAILED


def _print_events(
    inbox: queue.SimpleQueue[Event], count: int | None, printer: _Printer, *, quiet: bool
) -> None:
    """Print until a signal, the hub's final advisory, ``count`` events, or a closed stdout."""
    received = 0
    while count is None or received < count:
        event = inbox.get()
        if event is _SIGNALLED:
            return
        if event.topic is None:
            if not quiet:
                say(f"pghub listen: {advisory_text(event.value)}")
            if event.value.final:
                return
            continue
        received += 1
        if not printer.print(event):
            return


class _Signals:
    queued = False  # False: a signal raises Interrupted; True: it is put in the event queue


@contextmanager
def _signals_to(inbox: queue.SimpleQueue[Event]) -> Iterator[_Signals]:
    """SIGINT and SIGTERM interrupt at once while connecting, and end the event loop through
    the queue once it runs, so that a line being printed is printed whole."""
    state = _Signals()

    def handle(signum: int, frame: FrameType | None) -> None:
        if not state.queued:
            raise Interrupted
        inbox.put(_SIGNALLED)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
