"""``pghub topics``: the durable topics, their retention, wake mode, size and consumers' lag."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import errors as pg_errors

from ..install import installed_version
from ._common import (
    BoundedConnection,
    CliError,
    Exit,
    check_seconds,
    connect,
    conninfo_from,
    database_error,
)

SUMMARY = "list durable topics: retention, wake mode, size, and each named consumer's lag"

# What the command reads. Column names are spelled out so that a database whose functions lack
# one (an older pghub) fails here, and is reported as too old, not as a bug.
_TOPICS = """
SELECT topic, wake, retain::text, extract(epoch FROM retain)::float8, owner::text,
    events, coalesce(bytes, 0)
FROM pghub.durable_topics()
"""
_CONSUMERS = """
SELECT topic, consumer, owner::text, lag, acked_at, pos FROM pghub.durable_consumers()
"""
_NEEDED = ("pghub.durable_topics()", "pghub.durable_consumers()")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON object on stdout, {"topics": [...]}, instead of a table',
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long the server may take to count (it counts every journaled event: "
        "seconds at millions; default 60)",
    )


@dataclass
class Consumer:
    name: str
    owner: str
    lag: int  # committed events of the topic it has not acknowledged
    acked_at: str | None  # ISO 8601, UTC
    position: str  # where it continues (opaque; usable as --since)


@dataclass
class Topic:
    topic: str
    wake: str
    retain: str  # as PostgreSQL prints the interval
    retain_seconds: float
    owner: str
    events: int
    bytes: int  # its share of the journal's size on disk, in proportion to its events
    consumers: list[Consumer] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    timeout = check_seconds("--timeout", args.timeout)
    with connect(conninfo_from(args.dsn), args.connect_timeout) as conn:
        topics = read_topics(conn, timeout)
    if args.json:
        sys.stdout.write(json.dumps({"topics": [asdict(t) for t in topics]}) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in table(topics)))
    sys.stdout.flush()
    return Exit.OK


def read_topics(conn: BoundedConnection, timeout: float) -> list[Topic]:
    """Every durable topic with its named consumers, read in one snapshot."""
    try:
        require_durable(conn)
        # The counts take a while at millions of events: a bound of their own.
        conn.answer_within = timeout + 1.0
        conn.execute(
            "SELECT pg_catalog.set_config('statement_timeout', %s, false)",
            [f"{max(1, round(timeout * 1000))}ms"],
        )
        # One snapshot: a consumer's lag and its topic's counts agree.
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            rows = conn.execute(_TOPICS).fetchall()
            consumer_rows = conn.execute(_CONSUMERS).fetchall()
    except (pg_errors.UndefinedColumn, pg_errors.UndefinedFunction) as error:
        raise _too_old(str(error).splitlines()[0]) from None
    except psycopg.Error as error:
        raise database_error(error, "cannot read the durable topics") from None
    topics = {
        name: Topic(name, wake, retain, seconds, owner, events, size)
        for name, wake, retain, seconds, owner, events, size in rows
    }
    for topic, name, owner, lag, acked_at, pos in consumer_rows:
        if topic in topics:  # always, in one snapshot; a guard all the same
            topics[topic].consumers.append(Consumer(name, owner, lag, _iso(acked_at), pos))
    return list(topics.values())


def require_durable(conn: BoundedConnection, needed: tuple[str, ...] = _NEEDED) -> None:
    """An error (exit 4) that names the fix when pghub is missing or predates durable topics:
    one of the ``needed`` functions (signatures) is not there."""
    if installed_version(conn) is None:
        raise CliError(
            "pghub is not installed in this database (pghub install)", Exit.NOT_INSTALLED
        )
    row = conn.execute(
        "SELECT " + ", ".join("to_regprocedure(%s) IS NOT NULL" for _ in needed), needed
    ).fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    missing = [name for name, found in zip(needed, row, strict=True) if not found]
    if missing:
        raise _too_old(f"{' and '.join(missing)} not found")


def _too_old(detail: str) -> CliError:
    return CliError(
        f"the pghub installed in this database has no durable topics ({detail}): "
        "update it (pghub install)",
        Exit.NOT_INSTALLED,
    )


def _iso(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="seconds")


# --- the table ------------------------------------------------------------------------------

_HEADER = ("TOPIC", "WAKE", "RETAIN", "EVENTS", "SIZE", "CONSUMER", "LAG", "ACKED")
_RIGHT = frozenset({"EVENTS", "SIZE", "LAG"})  # numbers, right-aligned


def table(topics: list[Topic], now: datetime.datetime | None = None) -> list[str]:
    """One line per named consumer (its topic's figures on the first), aligned; a topic
    without consumers gets one line with ``-``."""
    if not topics:
        return ["no durable topics (pghub.make_durable makes one)"]
    moment = now or datetime.datetime.now(datetime.timezone.utc)
    rows: list[tuple[str, ...]] = [_HEADER]
    for topic in topics:
        figures = (topic.topic, topic.wake, topic.retain, str(topic.events), size(topic.bytes))
        if not topic.consumers:
            rows.append((*figures, "-", "", ""))
        for index, consumer in enumerate(topic.consumers):
            left = figures if index == 0 else ("",) * len(figures)
            rows.append((*left, consumer.name, str(consumer.lag), age(consumer.acked_at, moment)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if name in _RIGHT else cell.ljust(width)
            for name, cell, width in zip(_HEADER, row, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def size(count: int) -> str:
    """Bytes as ``pg_size_pretty`` would say them, roughly: 812 B, 96 kB, 3.4 MB."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            break
        value /= 1024
    if unit == "B":
        return f"{count} B"
    return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def age(iso: str | None, now: datetime.datetime) -> str:
    """How long ago a consumer acknowledged: ``12 s ago``, ``3 min ago``, ``never``."""
    if iso is None:
        return "never"
    seconds = max(0.0, (now - datetime.datetime.fromisoformat(iso)).total_seconds())
    for unit, length in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= length:
            return f"{int(seconds // length)} {unit} ago"
    return f"{int(seconds)} s ago"
