"""A listening session lost and replaced.

Proves that when the backend is terminated, the link is reset or goes half-open (found within
liveness_timeout), or the server cancels LISTENs on a live session, each consumer is told
DISCONNECT, and RECONNECT only once every topic is listened to again (an event sent from the
RECONNECT callback arrives); that subscriptions and consumers made while disconnected are
announced after it; that events held by a dead link are never delivered; and that a quiet,
healthy session is never replaced. The network faults go through pghub.testing.FaultProxy.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
import pytest
from hubkit import (
    FAST,
    HubPool,
    Recorder,
    assert_flows,
    echo_on_reconnect,
    hub_pids,
    named,
    refuse_and_kill,
    send_raw,
    wait_until,
)

from pghub import Action, Event
from pghub.testing import FaultProxy

# --- the session ended on the server ----------------------------------------------------------


def test_terminated_backend_disconnects_then_reconnects_after_relisten(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(named(dsn), **FAST)
    rec = echo_on_reconnect(conn, "kill")
    hub.consumer(rec, "kill", "kill2")
    rec.wait_advisory(Action.SUBSCRIBE, "kill2")
    pids = hub_pids(conn)
    assert len(pids) == 1, pids
    assert hub.stats().backend_pid == pids[0]
    assert conn.execute("SELECT pg_terminate_backend(%s)", (pids[0],)).fetchone() == (True,)
    rec.wait_advisory(Action.DISCONNECT, timeout=5)
    rec.wait_advisory(Action.RECONNECT, timeout=10)
    # The event sent from the RECONNECT callback arrives: every topic was listened again.
    assert rec.wait_events(1, timeout=5) == [Event("kill", (1001,), None)]
    assert_flows(hub, rec, conn, "kill2")
    assert rec.actions() == [
        Action.CONNECT,
        Action.SUBSCRIBE,
        Action.SUBSCRIBE,
        Action.DISCONNECT,
        Action.RECONNECT,
    ]
    new_pids = hub_pids(conn)
    assert len(new_pids) == 1
    assert new_pids != pids
    stats = hub.stats()
    assert (stats.connects, stats.disconnects, stats.reconnects) == (2, 1, 1)
    assert stats.state == "connected"
    assert stats.backend_pid == new_pids[0]


def test_repeated_terminations_never_kill_the_hub(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(named(dsn), **FAST)
    rec = Recorder()
    hub.consumer(rec, "again")
    rec.wait_advisory(Action.SUBSCRIBE, "again")
    for round_ in range(1, 6):
        wait_until(lambda: len(hub_pids(conn)) == 1, what="the hub's session on the server")
        for pid in hub_pids(conn):
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        rec.wait_advisory(Action.RECONNECT, timeout=10, count=round_)
    assert rec.count(Action.DISCONNECT) == 5
    assert_flows(hub, rec, conn, "again")


# --- the link broken under the hub ------------------------------------------------------------


def test_a_reset_link_disconnects_then_reconnects(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    hub = hubs.started(proxy.dsn(dsn), **FAST)
    rec = echo_on_reconnect(conn, "rst")
    hub.consumer(rec, "rst")
    rec.wait_advisory(Action.SUBSCRIBE, "rst")
    proxy.wait_connections(1)
    assert proxy.reset() == 1
    rec.wait_advisory(Action.DISCONNECT, timeout=5)
    rec.wait_advisory(Action.RECONNECT, timeout=10)
    assert rec.wait_events(1) == [Event("rst", (1001,), None)]
    assert_flows(hub, rec, conn, "rst")
    assert hub.stats().disconnects == 1


def test_half_open_link_is_found_within_the_liveness_bound(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    hub = hubs.started(proxy.dsn(dsn), liveness_timeout=2, **FAST)
    rec = echo_on_reconnect(conn, "hole")
    hub.consumer(rec, "hole")
    rec.wait_advisory(Action.SUBSCRIBE, "hole")
    proxy.wait_connections(1)
    proxy.blackhole()  # the old link goes silent; a fresh one works
    started = time.monotonic()
    rec.wait_advisory(Action.DISCONNECT, timeout=8)
    noticed = time.monotonic() - started
    assert noticed < 8, noticed
    rec.wait_advisory(Action.RECONNECT, timeout=10)
    assert rec.wait_events(1) == [Event("hole", (1001,), None)]
    assert_flows(hub, rec, conn, "hole")


@pytest.mark.parametrize("liveness", [1.5, 3.0])
def test_a_half_open_link_is_dropped_within_liveness_timeout(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy, liveness: float
) -> None:
    # Documented bound: a silent peer is dropped within liveness_timeout (plus scheduling
    # slack on a busy 2-core machine), wherever in its quiet/probe cycle the hole opens.
    hub = hubs.started(proxy.dsn(dsn), liveness_timeout=liveness, **FAST)
    rec = Recorder()
    hub.consumer(rec, "bound")
    rec.wait_advisory(Action.SUBSCRIBE, "bound")
    for round_ in range(1, 3):
        time.sleep(liveness * 0.3 * round_)  # a different point of the cycle each round
        proxy.blackhole()
        started = time.monotonic()
        rec.wait_advisory(Action.DISCONNECT, timeout=liveness + 5, count=round_)
        noticed = time.monotonic() - started
        assert noticed <= liveness + 1.0, f"round {round_}: {noticed:.2f} s"
        rec.wait_advisory(Action.RECONNECT, timeout=10, count=round_)
        proxy.resume()  # let the old links go
    assert_flows(hub, rec, conn, "bound")


def test_half_open_everywhere_reconnects_only_once_the_server_answers(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    # Every link black-holed, new ones too: connection attempts time out until resume().
    hub = hubs.started(proxy.dsn(dsn), liveness_timeout=2, connect_timeout=1, **FAST)
    rec = echo_on_reconnect(conn, "dark")
    hub.consumer(rec, "dark")
    rec.wait_advisory(Action.SUBSCRIBE, "dark")
    proxy.blackhole(new_connections=True)
    rec.wait_advisory(Action.DISCONNECT, timeout=8)
    wait_until(lambda: hub.stats().connect_failures >= 1, timeout=10, what="a failed attempt")
    assert rec.count(Action.RECONNECT) == 0
    proxy.resume()
    rec.wait_advisory(Action.RECONNECT, timeout=10)
    assert rec.wait_events(1) == [Event("dark", (1001,), None)]
    assert_flows(hub, rec, conn, "dark")


def test_events_sent_during_a_black_hole_are_not_delivered_twice(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    hub = hubs.started(proxy.dsn(dsn), liveness_timeout=2, **FAST)
    rec = Recorder()
    hub.consumer(rec, "gap")
    rec.wait_advisory(Action.SUBSCRIBE, "gap")
    proxy.blackhole()
    send_raw(conn, "gap", "e1")  # held in the black hole, or lost with the old link
    rec.wait_advisory(Action.RECONNECT, timeout=15)
    proxy.resume()  # the old link may now spill what it held; the hub must have dropped it
    send_raw(conn, "gap", "e2")
    rec.wait_for(lambda evs: Event("gap", (2,), None) in evs, what="e2 after the reconnect")
    send_raw(conn, "gap", "e3")  # a later sentinel: anything spilled would be in by then
    rec.wait_for(lambda evs: Event("gap", (3,), None) in evs, what="e3")
    # e1 went to the dead link only: lost (as DISCONNECT warned), and never half-delivered.
    assert rec.events() == [Event("gap", (2,), None), Event("gap", (3,), None)]


def test_commands_in_flight_in_a_black_hole_are_found_and_settled(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    # A LISTEN and a notify sent into a silent link: the hub gives up on the link within the
    # liveness bound, answers the notify False (its fate is unknown) and listens again.
    hub = hubs.started(proxy.dsn(dsn), liveness_timeout=2, **FAST)
    rec = Recorder()
    consumer = hub.consumer(rec, "first")
    rec.wait_advisory(Action.SUBSCRIBE, "first")
    proxy.blackhole()
    answers: list[bool] = []
    hub.notify("first", [1], confirm=answers.append)
    consumer.subscribe("second")
    rec.wait_advisory(Action.DISCONNECT, timeout=8)
    rec.wait_advisory(Action.RECONNECT, timeout=10)
    rec.wait_advisory(Action.SUBSCRIBE, "second", timeout=5)
    wait_until(lambda: len(answers) == 1, what="an answer for the notify in flight")
    send_raw(conn, "second", "e2")
    hub.notify("first", [3])
    got = rec.wait_for(
        lambda evs: sum(1 for e in evs if e.topic is not None and e.key[0] > 1) == 2,
        what="e2 and e3",
    )
    assert [e.key for e in got if e.topic is not None and e.key[0] > 1] == [(2,), (3,)]
    # The first notify went into the dead link (answered False: never committed, as the
    # proxy never passed it on) or, if a probe was in flight then, waited for the new session
    # (answered True, and delivered before e3 on the same topic). Either way, exactly once.
    delivered = rec.events().count(Event("first", (1,), None))
    assert delivered == (1 if answers == [True] else 0), (answers, rec.describe())


# --- subscribing while disconnected -----------------------------------------------------------


def test_subscribe_and_new_consumers_while_disconnected(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    hub = hubs.started(proxy.dsn(dsn), **FAST)
    old = Recorder("old")
    consumer = hub.consumer(old, "before")
    old.wait_advisory(Action.SUBSCRIBE, "before")
    refuse_and_kill(proxy, old)
    wait_until(lambda: hub.stats().connect_failures >= 1, what="a refused attempt")
    consumer.subscribe("during")
    new = Recorder("new")
    hub.consumer(new, "during")
    proxy.accept()
    old.wait_advisory(Action.RECONNECT, timeout=10)
    old.wait_advisory(Action.SUBSCRIBE, "during")
    new.wait_advisory(Action.SUBSCRIBE, "during", timeout=10)
    # Documented: a consumer made while disconnected gets CONNECT, not RECONNECT.
    assert new.actions() == [Action.CONNECT, Action.SUBSCRIBE], new.describe()
    assert old.actions() == [
        Action.CONNECT,
        Action.SUBSCRIBE,
        Action.DISCONNECT,
        Action.RECONNECT,
        Action.SUBSCRIBE,
    ], old.describe()
    send_raw(conn, "during", "e1")
    send_raw(conn, "before", "e2")
    assert old.wait_events(2) == [Event("during", (1,), None), Event("before", (2,), None)]
    assert new.wait_events(1) == [Event("during", (1,), None)]


def test_subscribe_while_disconnected_is_announced_after_the_reconnect(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    app = f"pghub_review_{os.getpid()}"
    hub = hubs.started(
        psycopg.conninfo.make_conninfo(dsn, application_name=app),
        reconnect_delay=0.5,
        reconnect_max_delay=0.5,
    )
    rec = Recorder()
    consumer = hub.consumer(rec, "before")
    rec.wait_advisory(Action.SUBSCRIBE, "before")
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,)
    )
    rec.wait_advisory(Action.DISCONNECT)
    consumer.subscribe("during")
    rec.wait_advisory(Action.RECONNECT)
    rec.wait_advisory(Action.SUBSCRIBE, "during")
    send_raw(conn, "during", "e1")
    send_raw(conn, "before", "e2")
    assert [e.key for e in rec.wait_events(2)] == [(1,), (2,)]
    actions = rec.actions()
    assert actions == [
        Action.CONNECT,
        Action.SUBSCRIBE,
        Action.DISCONNECT,
        Action.RECONNECT,
        Action.SUBSCRIBE,
    ], actions


# --- a healthy session stays ------------------------------------------------------------------


def test_a_quiet_healthy_session_is_not_replaced(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    # liveness_timeout=1: probes every half second of silence, and they are answered.
    # No ticker: its connection would be a second one through the proxy.
    hub = hubs.started(
        proxy.dsn(dsn), liveness_timeout=1, tick_interval=None, prune_interval=None, **FAST
    )
    rec = Recorder()
    hub.consumer(rec, "quiet")
    rec.wait_advisory(Action.SUBSCRIBE, "quiet")
    time.sleep(3.5)  # the point of the test: a stretch of silence with nothing wrong
    assert rec.actions() == [Action.CONNECT, Action.SUBSCRIBE]
    stats = hub.stats()
    assert (stats.connects, stats.disconnects) == (1, 0)
    assert proxy.accepted == 1
    assert_flows(hub, rec, conn, "quiet")


def test_idle_session_timeout_does_not_cut_the_listening_session(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    dbname = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{dbname}" SET idle_session_timeout = 500')
    hub = hubs.started(dsn, reconnect_delay=0.1, reconnect_max_delay=0.2)
    rec = Recorder()
    hub.consumer(rec, "idle")
    rec.wait_advisory(Action.SUBSCRIBE, "idle")
    time.sleep(2)
    assert hub.stats().disconnects == 0
    assert rec.count(Action.DISCONNECT) == 0


# --- LISTENs refused on a live session --------------------------------------------------------


@pytest.mark.slow
def test_listens_cancelled_on_a_live_session_never_leave_a_topic_unheard(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    """pg_cancel_backend on the hub's session (a DBA's script cancelling queries) makes the
    server refuse whatever statement it lands on (57014), LISTENs included. A refused LISTEN
    must not leave its topic unheard on a session that lives on (today: never retried there,
    never announced, nothing said): the hub drops the session (DISCONNECT) and listens again
    on the next one (RECONNECT, then SUBSCRIBE). Once the cancelling stops, every topic hears.
    """
    hub = hubs.started(named(dsn), **FAST)
    rec = Recorder()
    consumer = hub.consumer(rec)
    rec.wait_advisory(Action.CONNECT)
    stop = threading.Event()

    def cancel_the_hub() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            pids: list[int] = []
            while not stop.is_set():
                if not pids:
                    pids = hub_pids(c)
                    continue
                row = c.execute("SELECT pg_cancel_backend(%s)", (pids[0],)).fetchone()
                if not (row and row[0]):
                    pids = []  # a new session: find it again

    canceller = threading.Thread(target=cancel_the_hub, daemon=True)
    canceller.start()
    topics: list[str] = []
    deadline = time.monotonic() + 30
    try:
        # Subscribe one topic at a time (one LISTEN each) until a few have been refused.
        while hub.stats().listen_failures < 3 and time.monotonic() < deadline:
            topics.append(f"cancelled{len(topics)}")
            consumer.subscribe(topics[-1])
            time.sleep(0.002)
    finally:
        stop.set()
        canceller.join(10)
    assert hub.stats().listen_failures >= 3, "no LISTEN was refused: the test proved nothing"

    # Every topic is announced and heard, on a session that is announced too.
    for topic in topics:
        rec.wait_advisory(Action.SUBSCRIBE, topic, timeout=15)
    wait_until(lambda: hub.state == "connected", timeout=10, what="connected")
    assert rec.count(Action.DISCONNECT) == rec.count(Action.RECONNECT), rec.describe()
    for i, topic in enumerate(topics):
        send_raw(conn, topic, f"e{i}")
    got = rec.wait_events(len(topics), timeout=15)
    assert sorted(e.topic for e in got if e.topic) == sorted(topics)
