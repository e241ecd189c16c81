"""The elected ticker (pghub._ticker) on the real server: tick-mode durable topics need nobody
but a hub; of several hubs exactly one ticks, and another takes over when its connection dies;
where there is nothing to tick (no pghub, no tick-mode topic) no hub ticks. What the server
says (pg_locks, pg_stat_activity, what a raw LISTENer hears) is the evidence; every wait is
bounded.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from hubkit import HubPool

from pghub import Hub
from pghub._ticker import ELECTION_KEY, LOOK_PERIOD

WAIT_SECONDS = 10.0
# pg_locks shows a bigint advisory key as two halves.
_CLASSID, _OBJID = ELECTION_KEY >> 32, ELECTION_KEY & 0xFFFFFFFF


def holders(conn: psycopg.Connection[Any]) -> list[int]:
    """Backends holding the ticker's lock in this database."""
    rows = conn.execute(
        "SELECT l.pid FROM pg_locks AS l WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 1",
        [_CLASSID, _OBJID],
    )
    return [int(r[0]) for r in rows]


def ticker_pid(conn: psycopg.Connection[Any], hub: Hub) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE application_name = %s AND datname = current_database()",
        [f"pghub-ticker:{hub.name}"],
    ).fetchone()
    return None if row is None else int(row[0])


def wait_for(what: str, check: Callable[[], Any], seconds: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.01)


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('LISTEN ticked; LISTEN "pghub:wake"')
        yield conn


def heard(listener: psycopg.Connection[Any], count: int) -> list[tuple[str, str]]:
    got = [
        (n.channel, n.payload) for n in listener.notifies(timeout=WAIT_SECONDS, stop_after=count)
    ]
    assert len(got) == count, got
    return got


def test_tick_mode_events_reach_a_raw_listener_with_only_a_hub_running(
    dsn: str, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any], hubs: HubPool
) -> None:
    """No cron, no other ticker: a hub ticks, every tick_interval, events one at a time."""
    conn.execute("SELECT pghub.make_durable('ticked', wake => 'tick')")
    hub = hubs.started(dsn, ticker=True)
    wait_for("the hub's ticker is elected", lambda: holders(conn) == [ticker_pid(conn, hub)])
    latencies = []
    for key in range(20):
        sent = time.monotonic()
        conn.execute("SELECT pghub.notify('ticked', ARRAY[%s]::bigint[])", [key])
        assert heard(listener, 2) == [("ticked", f"e{key}"), ("pghub:wake", "ticked")]
        latencies.append(time.monotonic() - sent)
    # A tick every 10 ms: half a period on average, plus the tick. Bounded loosely (a busy
    # machine); the tight figures are bench/durable.py's.
    assert sorted(latencies)[len(latencies) // 2] < 0.5, latencies


def test_of_two_hubs_exactly_one_ticks_and_the_other_takes_over_when_it_dies(
    dsn: str, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any], hubs: HubPool
) -> None:
    conn.execute("SELECT pghub.make_durable('ticked', wake => 'tick')")
    first, second = hubs.started(dsn, ticker=True), hubs.started(dsn, ticker=True)
    pids: dict[str, int] = {}
    for hub in (first, second):
        pids[hub.name] = wait_for("a ticker connection", functools.partial(ticker_pid, conn, hub))
    leader_pid = wait_for("one ticker elected", lambda: holders(conn))[0]
    leader, standby = (first, second) if pids[first.name] == leader_pid else (second, first)
    assert pids[standby.name] != leader_pid
    time.sleep(3 * LOOK_PERIOD)  # the standby has tried the lock meanwhile
    assert holders(conn) == [leader_pid]
    assert standby._ticker.figures.ticks == 0
    assert leader._ticker.figures.ticks > 0
    conn.execute("SELECT pghub.notify('ticked', '{1}')")
    assert heard(listener, 2) == [("ticked", "e1"), ("pghub:wake", "ticked")]

    # The elected hub's ticker connection dies: the other is elected within about a second.
    conn.execute("SELECT pg_terminate_backend(%s)", [leader_pid])
    killed_at = time.monotonic()
    wait_for("the standby takes over", lambda: holders(conn) == [pids[standby.name]], 5.0)
    took = time.monotonic() - killed_at
    assert took < 2.0, took
    conn.execute("SELECT pghub.notify('ticked', '{2}')")
    assert heard(listener, 2) == [("ticked", "e2"), ("pghub:wake", "ticked")]
    assert standby._ticker.figures.ticks > 0

    # The elected hub stops: the other (whose ticker reconnected) takes over again.
    standby.stop()
    wait_for("the first hub ticks again", lambda: holders(conn) == [ticker_pid(conn, leader)])
    conn.execute("SELECT pghub.notify('ticked', '{3}')")
    assert heard(listener, 2) == [("ticked", "e3"), ("pghub:wake", "ticked")]


def sample_ticker(conn: psycopg.Connection[Any], hub: Hub, seconds: float) -> set[str]:
    """What the hub's ticker connection ran, sampled every few milliseconds."""
    pid = wait_for("a ticker connection", lambda: ticker_pid(conn, hub))
    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = conn.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        if row is not None and row[0]:
            seen.add(str(row[0]))
        time.sleep(0.002)
    return seen


def test_no_tick_traffic_without_tick_mode_topics(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    """pghub there, durable topics in commit mode only: the ticker looks (cheaply), may prune,
    and never ticks; once a topic is in tick mode it does."""
    conn.execute("SELECT pghub.make_durable('kept')")
    hub = hubs.started(dsn, ticker=True)
    ran = sample_ticker(conn, hub, 4 * LOOK_PERIOD)
    assert ran, "the ticker ran nothing at all"
    assert not [q for q in ran if "tick()" in q], ran
    assert hub._ticker.figures.ticks == 0
    conn.execute("SELECT pghub.make_durable('kept', wake => 'tick')")
    wait_for("ticking once a topic is in tick mode", lambda: hub._ticker.figures.ticks > 0)


def test_no_ticker_traffic_where_pghub_is_not_installed(
    empty_database: Callable[[], str], hubs: HubPool
) -> None:
    plain = empty_database()
    hub = hubs.started(plain, ticker=True)
    with psycopg.connect(plain, autocommit=True) as conn:
        ran = sample_ticker(conn, hub, 4 * LOOK_PERIOD)
        assert holders(conn) == []
    assert all("to_regprocedure('pghub.tick(integer)')" in q for q in ran), ran
    assert hub._ticker.figures.ticks == hub._ticker.figures.prunes == 0
    assert hub.notify("plain", [1]).result(WAIT_SECONDS) is True  # the hub itself is fine


def test_no_ticker_connection_when_both_periods_are_none(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    conn.execute("SELECT pghub.make_durable('ticked', wake => 'tick')")
    hub = hubs.started(dsn, tick_interval=None, prune_interval=None, ticker=True)
    never = hubs.started(dsn, ticker=False)
    never.consumer(lambda event: None, "ticked", durable="never")
    time.sleep(3 * LOOK_PERIOD)
    assert ticker_pid(conn, hub) is None
    assert ticker_pid(conn, never) is None
    assert holders(conn) == []


def test_a_hub_with_plain_consumers_only_opens_no_ticker_connection(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    """The default (ticker=None): only hubs with a durable consumer stand for election."""
    conn.execute("SELECT pghub.make_durable('ticked', wake => 'tick')")
    hub = hubs.started(dsn)
    hub.consumer(lambda event: None, "ticked")
    time.sleep(3 * LOOK_PERIOD)
    assert ticker_pid(conn, hub) is None
    assert holders(conn) == []


@pytest.mark.parametrize("made", ["before start", "after start"])
def test_a_durable_consumer_makes_its_hub_stand_for_election(
    dsn: str,
    conn: psycopg.Connection[Any],
    listener: psycopg.Connection[Any],
    hubs: HubPool,
    made: str,
) -> None:
    conn.execute("SELECT pghub.make_durable('ticked', wake => 'tick')")
    hub = hubs.make(dsn)
    if made == "before start":
        hub.consumer(lambda event: None, "ticked", durable="stands")
        hub.start()
    else:
        hub.start()
        time.sleep(LOOK_PERIOD)
        assert ticker_pid(conn, hub) is None
        hub.consumer(lambda event: None, "ticked", durable="stands")
    wait_for("the hub's ticker is elected", lambda: holders(conn) == [ticker_pid(conn, hub)])
    conn.execute("SELECT pghub.notify('ticked', '{5}')")
    assert ("ticked", "e5") in heard(listener, 2)


def test_events_written_in_tick_mode_are_announced_after_the_topic_leaves_it(
    dsn: str, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any], hubs: HubPool
) -> None:
    """An event written in tick mode by the transaction that switches its topic to commit
    mode: the running ticker still announces it (no tick-mode topic is left)."""
    conn.execute("SELECT pghub.make_durable('ticked', wake => 'tick')")
    hub = hubs.started(dsn, ticker=True)
    wait_for("the hub ticks", lambda: hub._ticker.figures.ticks > 0)
    with conn.transaction():
        conn.execute("SELECT pghub.notify('ticked', '{1}')")
        conn.execute("SELECT pghub.make_durable('ticked', wake => 'commit')")
    assert heard(listener, 2) == [("ticked", "e1"), ("pghub:wake", "ticked")]
    wait_for("the ticker counted it", lambda: hub._ticker.figures.events == 1)
