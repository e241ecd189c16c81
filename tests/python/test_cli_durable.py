"""``pghub topics`` and ``pghub listen --durable``, run as subprocesses against the real server.

Every wait is bounded (a subprocess timeout, a deadline on a listener's stderr).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pghub.cli import topics as topics_cli

RUN_TIMEOUT = 60  # seconds any one command may take
OK, USAGE, UNREACHABLE, NOT_INSTALLED = 0, 2, 3, 4


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PGHUB_"))}


def pghub(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pghub", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    assert "Traceback" not in text
    return lines[0]


def _drop_function(conn: psycopg.Connection[Any], signature: str) -> None:
    """Drop one of pghub's functions, as an install from before durable topics lacks it."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pghub'").fetchone():
        conn.execute(f"ALTER EXTENSION pghub DROP FUNCTION {signature}")
    conn.execute(f"DROP FUNCTION {signature}")


# --- pghub topics ---------------------------------------------------------------------------


def test_topics_without_pghub_says_so(empty_database: Callable[[], str]) -> None:
    result = pghub("topics", "--dsn", empty_database())
    assert result.returncode == NOT_INSTALLED
    assert result.stdout == ""
    assert one_line(result.stderr) == (
        "pghub topics: pghub is not installed in this database (pghub install)"
    )


@pytest.mark.parametrize("missing", ["pghub.durable_topics()", "pghub.durable_consumers()"])
def test_topics_on_a_pghub_without_durable_topics_says_so(
    dsn: str, conn: psycopg.Connection[Any], missing: str
) -> None:
    _drop_function(conn, missing)
    result = pghub("topics", "--dsn", dsn)
    assert result.returncode == NOT_INSTALLED
    assert result.stdout == ""
    assert one_line(result.stderr) == (
        "pghub topics: the pghub installed in this database has no durable topics "
        f"({missing} not found): update it (pghub install)"
    )


def test_topics_with_none(dsn: str) -> None:
    table = pghub("topics", "--dsn", dsn)
    assert (table.returncode, table.stderr) == (OK, "")
    assert table.stdout == "no durable topics (pghub.make_durable makes one)\n"
    listed = pghub("topics", "--dsn", dsn, "--json")
    assert (listed.returncode, listed.stderr) == (OK, "")
    assert json.loads(listed.stdout) == {"topics": []}


def _ack_after(conn: psycopg.Connection[Any], consumer: str, topic: str, handled: int) -> str:
    """Acknowledge the first ``handled`` events of ``topic`` for ``consumer``; its position."""
    rows = conn.execute(
        "SELECT pos FROM pghub.read(%s, 'earliest', %s) WHERE payload IS NOT NULL",
        [topic, handled],
    ).fetchall()
    assert len(rows) == handled
    position = str(rows[-1][0])
    conn.execute("SELECT pghub.ack(%s, %s, %s)", [consumer, topic, position])
    return position


def test_topics_lists_retention_wake_size_and_lag(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    conn.execute("SELECT pghub.make_durable('stock', interval '1 day 12 hours', 'tick')")
    conn.execute("SELECT pghub.make_durable('quiet', interval '5 minutes')")
    for i in range(100):  # a transaction each: commit order is id order
        conn.execute("SELECT pghub.notify('orders', ARRAY[%s]::bigint[], '{\"n\": 1}')", [i])
    for i in range(7):
        conn.execute("SELECT pghub.notify('stock', ARRAY[%s]::bigint[], 'null')", [i])
    conn.execute("SELECT pghub.consumer_position('mailer', 'orders', 'earliest')")
    conn.execute("SELECT pghub.consumer_position('audit', 'orders', 'earliest')")
    conn.execute("SELECT pghub.consumer_position('late', 'stock', 'now')")
    mailer = _ack_after(conn, "mailer", "orders", 40)
    audit = conn.execute(
        "SELECT pos FROM pghub.durable_consumers() WHERE consumer = 'audit'"
    ).fetchone()
    late = conn.execute(
        "SELECT pos FROM pghub.durable_consumers() WHERE consumer = 'late'"
    ).fetchone()
    assert audit is not None
    assert late is not None

    listed = pghub("topics", "--dsn", dsn, "--json")
    assert (listed.returncode, listed.stderr) == (OK, "")
    found = json.loads(listed.stdout)["topics"]
    assert [t["topic"] for t in found] == ["orders", "quiet", "stock"]
    orders, quiet, stock = found
    assert {k: v for k, v in orders.items() if k not in ("bytes", "consumers")} == {
        "topic": "orders",
        "wake": "commit",
        "retain": "7 days",
        "retain_seconds": 604800.0,
        "owner": "postgres",
        "events": 100,
    }
    assert orders["bytes"] > 100 * 10  # at least the payloads: its share of the tables
    assert (quiet["events"], quiet["bytes"], quiet["consumers"]) == (0, 0, [])
    assert (quiet["retain"], quiet["retain_seconds"]) == ("00:05:00", 300.0)
    assert (stock["wake"], stock["retain"], stock["retain_seconds"]) == (
        "tick",
        "1 day 12:00:00",
        129600.0,
    )
    assert stock["events"] == 7
    assert 0 < stock["bytes"] < orders["bytes"]
    # Consumers by name; lag: committed events not acknowledged.
    now = datetime.datetime.now(datetime.timezone.utc)
    consumers = orders["consumers"] + stock["consumers"]
    assert [(c["name"], c["owner"], c["lag"], c["position"]) for c in consumers] == [
        ("audit", "postgres", 100, audit[0]),
        ("mailer", "postgres", 60, mailer),
        ("late", "postgres", 0, late[0]),
    ]
    for consumer in consumers:
        acked = datetime.datetime.fromisoformat(consumer["acked_at"])
        assert acked.utcoffset() == datetime.timedelta(0)
        assert abs((now - acked).total_seconds()) < RUN_TIMEOUT

    table = pghub("topics", "--dsn", dsn)
    assert (table.returncode, table.stderr) == (OK, "")
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "TOPIC",
        "WAKE",
        "RETAIN",
        "EVENTS",
        "SIZE",
        "CONSUMER",
        "LAG",
        "ACKED",
    ]
    assert lines[1].split()[:4] == ["orders", "commit", "7", "days"]
    assert lines[1].split()[4:7] == ["100", *topics_cli.size(orders["bytes"]).split()]
    assert lines[1].split()[7:9] == ["audit", "100"]
    assert lines[2].split()[:2] == ["mailer", "60"]  # its topic's figures only on the first line
    assert lines[3].split() == ["quiet", "commit", "00:05:00", "0", "0", "B", "-"]
    assert lines[4].split()[:5] == ["stock", "tick", "1", "day", "12:00:00"]
    assert lines[4].split()[5:10] == ["7", *topics_cli.size(stock["bytes"]).split(), "late", "0"]
    assert len(lines) == 5
    # Columns line up: every consumer name starts where the header's CONSUMER does.
    column = lines[0].index("CONSUMER")
    assert [line[column:].split()[0] for line in lines[1:]] == ["audit", "mailer", "-", "late"]


def test_topics_timeout_bounds_the_counts(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    lock, release = threading.Event(), threading.Event()

    def hold() -> None:  # the journal locked by another session: reading it waits
        with psycopg.connect(dsn) as holder:
            holder.execute("LOCK TABLE pghub.journal$0 IN ACCESS EXCLUSIVE MODE")
            lock.set()
            release.wait(RUN_TIMEOUT)
            holder.rollback()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert lock.wait(RUN_TIMEOUT)
    started = time.monotonic()
    result = pghub("topics", "--dsn", dsn, "--timeout", "1")
    took = time.monotonic() - started
    release.set()
    assert result.returncode == UNREACHABLE, result.stderr
    assert one_line(result.stderr) == (
        "pghub topics: cannot read the durable topics: canceling statement due to statement timeout"
    )
    assert took < 10  # the bound, plus starting Python under load
    holder.join(RUN_TIMEOUT)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_topics_refuses_a_bad_timeout(dsn: str, value: str) -> None:
    result = pghub("topics", "--dsn", dsn, f"--timeout={value}")
    assert result.returncode == USAGE
    assert one_line(result.stderr).startswith("pghub topics: --timeout must be")


# --- the table's helpers (pure) -------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**62))
def test_size_is_short_and_close(count: int) -> None:
    text = topics_cli.size(count)
    number, unit = text.split(" ")
    scale = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]
    assert unit == "GB" or float(number) < 1024
    if unit == "B":
        assert int(number) == count
    else:
        assert count >= scale
        # one decimal below 10, none above: within half a unit of the last digit shown
        step = 0.1 if "." in number else 1.0
        assert abs(float(number) - count / scale) <= step / 2 + 1e-9


@given(st.floats(min_value=0, max_value=10**8, allow_nan=False))
def test_age_names_the_largest_unit(seconds: float) -> None:
    now = datetime.datetime(2026, 12, 2, tzinfo=datetime.timezone.utc)
    then = (now - datetime.timedelta(seconds=seconds)).isoformat()
    number, unit, ago = topics_cli.age(then, now).split(" ")
    assert ago == "ago"
    length = {"s": 1, "min": 60, "h": 3600, "d": 86400}[unit]
    whole = int(number)
    assert whole * length <= seconds + 1e-3 < (whole + 1) * length + 1e-3
    assert unit == "d" or whole < {"s": 60, "min": 60, "h": 24}[unit]


_names = st.text("abcdefghij_", min_size=1, max_size=12)
_consumers = st.builds(
    topics_cli.Consumer, _names, st.just("me"), st.integers(0, 10**9), st.none(), st.just("p")
)
_topics = st.builds(
    topics_cli.Topic,
    _names,
    st.sampled_from(["commit", "tick"]),
    st.sampled_from(["7 days", "00:05:00", "1 year 2 mons"]),
    st.just(1.0),
    st.just("me"),
    st.integers(0, 10**12),
    st.integers(0, 2**50),
    st.lists(_consumers, max_size=4),
)


@given(st.lists(_topics, min_size=1, max_size=6))
def test_table_lines_up(found: list[topics_cli.Topic]) -> None:
    lines = topics_cli.table(found)
    assert len(lines) == 1 + sum(max(1, len(t.consumers)) for t in found)
    consumer_at = lines[0].index("CONSUMER")
    names = [c.name for t in found for c in t.consumers] if found else []
    shown = [line[consumer_at:].split()[0] for line in lines[1:]]
    assert [n for n in shown if n != "-"] == names
    topic_lines = [line.split()[0] for line in lines[1:] if not line.startswith(" ")]
    assert topic_lines == [t.topic for t in found]
