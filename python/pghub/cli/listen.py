"""``pghub listen TOPIC...``: follow topics and print every event as it arrives."""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ..errors import ConnectFailed, InvalidTopic
from ..events import Event
from ..hub import Hub
from ..wire import channel
from ._common import CliError, Exit, connect, conninfo_from, say, use_colour, with_timeout
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
        "-q", "--quiet", action="store_true", help="no advisories (connect, subscribe...) on stderr"
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
    connect(conninfo, args.connect_timeout).close()  # a clear error now rather than retries

    pretty = args.format == "pretty" or (args.format == "auto" and sys.stdout.isatty())
    colour = pretty and use_colour(sys.stdout)
    inbox: queue.SimpleQueue[Event] = queue.SimpleQueue()
    hub = Hub(
        with_timeout(conninfo, args.connect_timeout),
        name="pghub-listen",
        connect_timeout=args.connect_timeout,
    )
    with _signals_to(inbox):
        try:
            hub.start()
        except ConnectFailed as error:
            raise CliError(str(error), Exit.UNREACHABLE) from None
        try:
            hub.consumer(inbox.put, *topics)
            return _print_events(inbox, args.count, pretty=pretty, colour=colour, quiet=args.quiet)
        finally:
            hub.stop(wait=True)


def _print_events(
    inbox: queue.SimpleQueue[Event], count: int | None, *, pretty: bool, colour: bool, quiet: bool
) -> int:
    printed = 0
    while count is None or printed < count:
        event = inbox.get()
        if event is _SIGNALLED:
            return Exit.OK
        if event.topic is None:
            if not quiet:
                say(f"pghub listen: {advisory_text(event.value)}")
            if event.value.final:
                return Exit.OK
            continue
        line = pretty_line(event, colour=colour) if pretty else json_line(event)
        try:
            print(line, flush=True)
        except BrokenPipeError:
            # The reader went away (`| head -1`): nothing more to print to, and nothing wrong.
            # Point stdout at /dev/null so that the flush at exit raises nothing more.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return Exit.OK
        printed += 1
    return Exit.OK


@contextmanager
def _signals_to(inbox: queue.SimpleQueue[Event]) -> Iterator[None]:
    """SIGINT and SIGTERM end the loop through the queue, so that the hub stops cleanly."""

    def handle(signum: int, frame: FrameType | None) -> None:
        inbox.put(_SIGNALLED)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
