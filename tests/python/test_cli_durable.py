"""``pghub topics`` and ``pghub listen --durable``, run as subprocesses against the real server.

Every wait is bounded (a subprocess timeout, a deadline on a listener's stderr).
"""

from __future__ import annotations

import datetime
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pghub.cli import topics as topics_cli

RUN_TIMEOUT = 60  # seconds any one command may take
READY_TIMEOUT = 15  # seconds for a listener to say it subscribed
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


# --- pghub listen --durable -----------------------------------------------------------------


def notify(conn: psycopg.Connection[Any], *keys: int, topic: str = "orders") -> None:
    """One transaction each: commit order is the order of the keys."""
    for key in keys:
        conn.execute(
            "SELECT pghub.notify(%s, ARRAY[%s]::bigint[], %s::jsonb)",
            [topic, key, json.dumps({"n": key})],
        )


def keys_after(conn: psycopg.Connection[Any], position: str, topic: str = "orders") -> list[int]:
    """The keys of the events after ``position``: what a printed position means."""
    rows = conn.execute(
        "SELECT payload FROM pghub.read(%s, %s, 10000) WHERE payload IS NOT NULL",
        [topic, position],
    ).fetchall()
    return [json.loads(payload.partition(":")[2])["n"] for (payload,) in rows]


def lag(conn: psycopg.Connection[Any], consumer: str) -> int:
    row = conn.execute(
        "SELECT lag FROM pghub.durable_consumers() WHERE consumer = %s", [consumer]
    ).fetchone()
    assert row is not None, f"no consumer {consumer}"
    return int(row[0])


class Listener:
    """``pghub listen`` in the background; ``ready()`` once it has subscribed every topic."""

    def __init__(self, dsn: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pghub", "listen", "--dsn", dsn, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        self.stderr: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.stdout: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.seen: list[str] = []
        assert self.proc.stderr is not None
        assert self.proc.stdout is not None
        for stream, into in ((self.proc.stderr, self.stderr), (self.proc.stdout, self.stdout)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

    @staticmethod
    def _read(stream: IO[str], into: queue.SimpleQueue[str]) -> None:
        for line in stream:
            into.put(line.rstrip("\n"))

    def wait_stderr(self, wanted: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            try:
                line = self.stderr.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                pytest.fail(f"listener never said {wanted!r}; stderr so far: {self.seen}")
            self.seen.append(line)

    def lines(self, n: int, timeout: float = READY_TIMEOUT) -> list[dict[str, Any]]:
        """The next ``n`` lines of stdout, as JSON."""
        deadline = time.monotonic() + timeout
        got = []
        for _ in range(n):
            try:
                got.append(self.stdout.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                self.kill()
                pytest.fail(f"listener printed {got} only; stderr: {self.seen}")
        return [json.loads(line) for line in got]

    def finish(self, timeout: float = RUN_TIMEOUT) -> tuple[int, list[str]]:
        """Wait for the exit; the exit code and the stdout lines not read yet."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"pghub listen did not end within {timeout} s")
        time.sleep(0.1)  # the readers reach the end of the pipes
        rest = []
        while not self.stdout.empty():
            rest.append(self.stdout.get())
        while not self.stderr.empty():
            self.seen.append(self.stderr.get())
        return self.proc.returncode, rest

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def listener(dsn: str) -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def start(*args: str) -> Listener:
        one = Listener(dsn, *args)
        started.append(one)
        return one

    yield start
    for one in started:
        one.kill()


def test_a_named_durable_listener_goes_on_where_it_stopped(
    conn: psycopg.Connection[Any], listener: Callable[..., Listener]
) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    notify(conn, 0, 1, 2, 3, 4)  # before any listener: replayed from earliest
    first = listener("orders", "--durable", "mailer", "--since", "earliest", "--count", "3")
    code, lines = first.finish()
    assert code == OK, first.seen
    printed = [json.loads(line) for line in lines]
    assert [{k: v for k, v in e.items() if k != "position"} for e in printed] == [
        {"topic": "orders", "key": [n], "value": {"n": n}} for n in range(3)
    ]
    for n, event in enumerate(printed):  # reading from a printed position: the events after
        assert keys_after(conn, event["position"]) == list(range(n + 1, 5))
    assert lag(conn, "mailer") == 2, "the three printed are acknowledged, no more"
    # Started again under the same name: --since no longer matters, it goes on after 2.
    again = listener("orders", "--durable", "mailer", "--since", "earliest", "--count", "3")
    again.wait_stderr("pghub listen: subscribe orders")
    assert [e["key"] for e in again.lines(2)] == [[3], [4]]
    notify(conn, 5)  # live, while it listens
    (live,) = again.lines(1)
    assert {k: v for k, v in live.items() if k != "position"} == {
        "topic": "orders",
        "key": [5],
        "value": {"n": 5},
    }
    assert keys_after(conn, live["position"]) == []
    code, rest = again.finish()
    assert (code, rest) == (OK, [])
    assert lag(conn, "mailer") == 0


def test_since_a_printed_position_reads_the_events_after_it(
    conn: psycopg.Connection[Any], listener: Callable[..., Listener]
) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    notify(conn, 0, 1, 2, 3, 4)
    (third,) = conn.execute(  # the position of key 2, as a reader from the start sees it
        "SELECT pos FROM pghub.read('orders', 'earliest', 3) WHERE payload IS NOT NULL"
    ).fetchall()[2:]
    # Without --durable: an anonymous reader, nothing kept on the server.
    reader = listener("orders", "--since", third[0], "--count", "2", "--format", "json", "-q")
    code, lines = reader.finish()
    assert code == OK, reader.seen
    assert [json.loads(line)["key"] for line in lines] == [[3], [4]]
    assert conn.execute("SELECT count(*) FROM pghub.durable_consumers()").fetchone() == (0,)


def test_a_durable_listener_starts_now_by_default_and_prints_positions_pretty(
    conn: psycopg.Connection[Any], listener: Callable[..., Listener]
) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    notify(conn, 0)  # before it: not for a consumer that starts now
    one = listener("orders", "--durable", "fresh", "--count", "1", "--format", "pretty")
    one.wait_stderr("pghub listen: subscribe orders")
    notify(conn, 1)
    code, lines = one.finish()
    assert code == OK, one.seen
    assert len(lines) == 1
    shown, _, position = lines[0].partition("  @ ")
    assert shown.endswith('  orders  [1]  {"n":1}')
    assert keys_after(conn, position) == []
    assert keys_after(conn, "earliest") == [0, 1]


def test_a_signal_ends_a_durable_listener_with_what_it_printed_acknowledged(
    conn: psycopg.Connection[Any], listener: Callable[..., Listener]
) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    one = listener("orders", "--durable", "mailer", "--format", "json")
    one.wait_stderr("pghub listen: subscribe orders")
    notify(conn, 0, 1, 2)
    assert [e["key"] for e in one.lines(3)] == [[0], [1], [2]]
    one.proc.send_signal(signal.SIGTERM)
    code, rest = one.finish()
    assert (code, rest) == (OK, [])
    assert lag(conn, "mailer") == 0


def test_a_durable_listener_says_gap(
    conn: psycopg.Connection[Any], listener: Callable[..., Listener]
) -> None:
    """Events pruned before the consumer read them: a GAP line, then the events kept."""
    conn.execute("SELECT pghub.make_durable('orders', '1 hour')")
    conn.execute("SELECT pghub.consumer_position('mailer', 'orders', 'now')")
    notify(conn, 0, 1, 2, 3, 4)
    conn.execute(  # writers move to the next journal table (as test_hub_durable.py does)
        "UPDATE pghub.journal$slot SET opened_at = opened_at - interval '30 days'"
        " WHERE closed_at IS NULL AND NOT ready"
    )
    assert conn.execute("SELECT rotated FROM pghub.prune()").fetchone() == (True,)
    notify(conn, 100)  # in the new current table: kept
    conn.execute(
        "UPDATE pghub.journal$slot SET opened_at = opened_at - make_interval(secs => 7200),"
        " closed_at = closed_at - make_interval(secs => 7200)"
    )
    assert conn.execute("SELECT emptied, events FROM pghub.prune()").fetchone() == (1, 5)
    one = listener("orders", "--durable", "mailer", "--count", "1", "--format", "json")
    code, lines = one.finish()
    assert code == OK, one.seen
    assert [json.loads(line)["key"] for line in lines] == [[100]]
    gaps = [line for line in one.seen if line.startswith("pghub listen: gap orders: ")]
    assert len(gaps) == 1, one.seen
    assert gaps[0].startswith(
        "pghub listen: gap orders: up to 5 events removed by retention before they were read (ids "
    )
    assert one.seen.index(gaps[0]) > one.seen.index("pghub listen: subscribe orders")


def test_durable_listen_on_a_plain_topic_says_so(dsn: str) -> None:
    result = pghub("listen", "--dsn", dsn, "orders", "--durable", "mailer")
    assert result.returncode == USAGE
    assert result.stdout == ""
    assert one_line(result.stderr) == (
        "pghub listen: pghub: topic orders is not durable "
        "(pghub.make_durable(topic) makes it durable)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "bogus"), 'pghub listen: pghub: invalid position "bogus" '),
        (("--durable", "x" * 201), "pghub listen: --durable must be a name of 1 to 200 "),
        (("--durable", ""), "pghub listen: --durable must be a name of 1 to 200 "),
        (("--since", ""), "pghub listen: --since must be now, earliest or a printed position"),
    ],
)
def test_durable_listen_refuses_bad_arguments(
    dsn: str, conn: psycopg.Connection[Any], args: tuple[str, ...], message: str
) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    result = pghub("listen", "--dsn", dsn, "orders", *args)
    assert result.returncode == USAGE
    assert one_line(result.stderr).startswith(message)


def test_durable_listen_on_a_pghub_without_durable_topics_says_so(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    _drop_function(conn, "pghub.read(text, text, integer)")
    result = pghub("listen", "--dsn", dsn, "orders", "--durable", "mailer")
    assert result.returncode == NOT_INSTALLED
    assert one_line(result.stderr) == (
        "pghub listen: the pghub installed in this database has no durable topics "
        "(pghub.read(text,text,integer) not found): update it (pghub install)"
    )


def test_plain_listen_prints_no_position(
    conn: psycopg.Connection[Any], listener: Callable[..., Listener]
) -> None:
    """A plain listener on a durable topic: today's lines, no position."""
    conn.execute("SELECT pghub.make_durable('orders')")
    one = listener("orders", "--count", "1", "--format", "json")
    one.wait_stderr("pghub listen: subscribe orders")
    notify(conn, 7)
    code, lines = one.finish()
    assert (code, lines) == (OK, ['{"topic":"orders","key":[7],"value":{"n":7}}'])


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
