"""``pghub listen TOPIC...``: follow topics and print every event as it arrives."""

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

from ..errors import ConnectFailed, InvalidTopic
from ..events import Event
from ..hub import Hub
from ..wire import channel
from ._common import (
    CliError,
    Exit,
    Interrupted,
    connect,
    conninfo_from,
    first_line,
    say,
    use_colour,
    with_timeout,
)
from ._format import advisory_text, json_line, pretty_line

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
    conninfo = conninfo_from(args.dsn)
    pretty = args.format == "pretty" or (args.format == "auto" and sys.stdout.isatty())
    colour = pretty and use_colour(sys.stdout)
    inbox: queue.SimpleQueue[Event] = queue.SimpleQueue()
    printer = _Printer(pretty=pretty, colour=colour)
    with _signals_to(inbox) as signals:
        # A clear error now rather than the hub's retries; and which server, database and
        # role libpq chose, so that an empty conninfo (libpq's defaults) is not a guess.
        with connect(conninfo, args.connect_timeout) as probe:
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
            hub.consumer(inbox.put, *topics)
            signals.queued = True  # from now on a signal ends the loop below, between events
            _print_events(inbox, args.count, printer, quiet=args.quiet)
        finally:
            # Not waiting: a command in flight to a silent server would hold the exit for up
            # to the hub's liveness timeout, and nothing is left to send or print.
            hub.stop(wait=False)
    return printer.summary(undecodable=hub.stats().invalid_payloads)


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
