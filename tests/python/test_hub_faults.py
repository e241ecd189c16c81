"""Faults: a killed backend, a reset or half-open TCP link, a server that is not there yet,
oversized payloads, a NOTIFY the server refuses, and a consumer too slow for its events.

The network faults go through :class:`faultproxy.FaultProxy`, a TCP proxy between the hub
and the server. Every wait is bounded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hubkit import HubPool, Recorder, send_raw, wait_until, within
from psycopg import sql

import pghub
from pghub import Action, Advisory, Event
from pghub.testing import FaultProxy

HUB_APP = "pghub_fault_hub"  # application_name of the hub's session, to find it on the server
FAST: dict[str, Any] = {"reconnect_delay": 0.05, "reconnect_max_delay": 0.5}


@pytest.fixture
def hubs() -> Iterator[HubPool]:
    pool = HubPool()
    yield pool
    pool.stop_all()


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(lifetime=120) as p:
        yield p


def named(dsn: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, application_name=HUB_APP)


def hub_pids(conn: psycopg.Connection[Any]) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = %s",
        (HUB_APP,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def echo_on_reconnect(conn: psycopg.Connection[Any], topic: str) -> Recorder:
    """A recorder that, on RECONNECT, has another session notify ``topic`` at once.

    If RECONNECT came before the topic was listened to again, that event would be lost.
    """
    lock = threading.Lock()
    count = 0

    def then(event: Event) -> None:
        nonlocal count
        advisory = event.advisory
        if advisory is not None and advisory.action is Action.RECONNECT:
            with lock:
                count += 1
                send_raw(conn, topic, f"e{1000 + count}")

    return Recorder("echo", then=then)


def assert_flows(hub: pghub.Hub, rec: Recorder, conn: psycopg.Connection[Any], topic: str) -> None:
    """Events flow both ways: from another session and from the hub itself."""
    already = len(rec.events())
    send_raw(conn, topic, "e7001")
    hub.notify(topic, [7002])
    got = rec.wait_events(already + 2, timeout=10)[already:]
    assert [e.key for e in got] == [(7001,), (7002,)]


# --- the listening session killed on the server ---


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


# --- the TCP link broken under the hub ---


def test_proxy_reset_disconnects_then_reconnects(
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


def test_half_open_everywhere_until_resume(
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


# --- a server that is not there yet ---


def test_server_unreachable_at_start_then_appearing(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    proxy.refuse()
    hub = hubs.make(proxy.dsn(dsn), retry_first_connect=True, **FAST)
    rec = Recorder()
    hub.consumer(rec, "late")
    started = time.monotonic()
    within(2, hub.start)
    assert time.monotonic() - started < 1
    wait_until(lambda: hub.stats().connect_failures >= 2, timeout=5, what="retries")
    assert hub.stats().state in ("connecting", "disconnected")
    assert rec.actions() == []  # nothing to tell before the first connection
    proxy.accept()
    rec.wait_advisory(Action.CONNECT, timeout=5)
    rec.wait_advisory(Action.SUBSCRIBE, "late")
    assert rec.actions() == [Action.CONNECT, Action.SUBSCRIBE]
    assert_flows(hub, rec, conn, "late")
    assert hub.stats().connects == 1


def test_server_unreachable_without_retry_raises_connect_failed_fast(
    dsn: str, proxy: FaultProxy
) -> None:
    proxy.refuse()
    hub = pghub.Hub(proxy.dsn(dsn))
    rec = Recorder()
    hub.consumer(rec)
    started = time.monotonic()
    with pytest.raises(pghub.ConnectFailed):
        within(5, hub.start)
    assert time.monotonic() - started < 3
    within(5, hub.stop)
    rec.assert_final_last(Action.STOP)
    assert rec.count(Action.CONNECT) == 0


def test_silent_server_at_start_raises_connect_failed_after_connect_timeout(
    dsn: str, proxy: FaultProxy
) -> None:
    proxy.blackhole(new_connections=True)
    hub = pghub.Hub(proxy.dsn(dsn), connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(pghub.ConnectFailed):
        within(10, hub.start)
    waited = time.monotonic() - started
    assert 0.9 <= waited < 5, waited
    within(5, hub.stop)


# --- what a notify can do wrong ---


def test_oversized_payload_raises_at_the_call_and_sends_nothing(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    conn.execute("LISTEN big")
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "big")
    rec.wait_advisory(Action.SUBSCRIBE, "big")
    answers: list[bool] = []
    with pytest.raises(pghub.PayloadTooLarge) as info:
        hub.notify("big", [1], "x" * 7995, confirm=answers.append)  # e1:"..." is 8000 bytes
    assert (info.value.size, info.value.limit) == (8000, 7999)
    # The largest payload that fits goes through: 7999 bytes.
    at_limit = "y" * 7994
    hub.notify("big", [2], at_limit)
    assert rec.wait_events(1) == [Event("big", (2,), at_limit)]
    got = list(conn.notifies(timeout=5, stop_after=1))
    assert [len(n.payload.encode()) for n in got] == [7999]
    assert answers == []
    assert hub.stats().notifies == 1
    assert hub.stats().notify_failures == 0


@pytest.fixture
def notifier_role(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A non-superuser role for this test; dropped after it (roles are cluster-wide)."""
    role = f"pghub_notifier_{os.getpid()}"
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_refused_notify_fails_alone_without_a_reconnect(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, notifier_role: str
) -> None:
    # Privileges on functions are per database: this revoke touches the test's database only.
    conn.execute("REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC")
    hub = hubs.started(psycopg.conninfo.make_conninfo(dsn, user=notifier_role))
    rec = Recorder()
    hub.consumer(rec, "refused")
    rec.wait_advisory(Action.SUBSCRIBE, "refused")
    answers: list[tuple[int, bool]] = []
    answered = threading.Condition()

    def confirm(key: int) -> Any:
        def tell(ok: bool) -> None:
            with answered:
                answers.append((key, ok))
                answered.notify_all()

        return tell

    hub.notify("refused", [1], confirm=confirm(1))
    with answered:
        assert answered.wait_for(lambda: len(answers) == 1, timeout=5), answers
    assert answers == [(1, False)]
    conn.execute("GRANT EXECUTE ON FUNCTION pg_notify(text, text) TO PUBLIC")
    hub.notify("refused", [2], confirm=confirm(2))
    with answered:
        assert answered.wait_for(lambda: len(answers) == 2, timeout=5), answers
    assert answers == [(1, False), (2, True)]
    assert rec.wait_events(1) == [Event("refused", (2,), None)]
    # Send from elsewhere too: still the same session, never dropped.
    send_raw(conn, "refused", "e3")
    assert rec.wait_events(2)[-1] == Event("refused", (3,), None)
    assert rec.actions() == [Action.CONNECT, Action.SUBSCRIBE]
    stats = hub.stats()
    assert (stats.notifies, stats.notify_failures) == (1, 1)
    assert (stats.disconnects, stats.connects) == (0, 1)


def test_a_refused_notify_does_not_hold_up_the_others_queued_with_it(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, notifier_role: str
) -> None:
    # A trigger-free way to make some notifies fail and not others: the role may not notify
    # for a while, then may. Notifies queued after the grant all arrive, in order.
    conn.execute("REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC")
    hub = hubs.started(psycopg.conninfo.make_conninfo(dsn, user=notifier_role))
    rec = Recorder()
    hub.consumer(rec, "queue")
    rec.wait_advisory(Action.SUBSCRIBE, "queue")
    refused: list[bool] = []
    for i in range(20):
        hub.notify("queue", [i], confirm=refused.append)
    wait_until(lambda: len(refused) == 20, what="20 answers")
    assert refused == [False] * 20
    conn.execute("GRANT EXECUTE ON FUNCTION pg_notify(text, text) TO PUBLIC")
    accepted: list[bool] = []
    for i in range(20, 40):
        hub.notify("queue", [i], confirm=accepted.append)
    assert [e.key for e in rec.wait_events(20)] == [(i,) for i in range(20, 40)]
    wait_until(lambda: len(accepted) == 20, what="20 answers")
    assert accepted == [True] * 20
    assert hub.stats().disconnects == 0


# --- a consumer too slow for its events ---


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_a_sleeping_consumer_overflows_alone_and_is_told_how_many_it_lost(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, policy: str
) -> None:
    flood = 3000
    hub = hubs.started(dsn, overflow=policy)
    wake = threading.Event()

    def sleep_on_first(event: Event) -> None:
        if event.topic is not None and event.key == (0,):
            wake.wait(30)

    sleeper = Recorder("sleeper", then=sleep_on_first)
    fast = [Recorder(f"fast{i}") for i in range(3)]
    hub.consumer(sleeper, "flood", queue_size=10)
    for rec in fast:
        hub.consumer(rec, "flood")
    for rec in (sleeper, *fast):
        rec.wait_advisory(Action.SUBSCRIBE, "flood")
    send_raw(conn, "flood", "e0")
    sleeper.wait_events(1)  # and now it sleeps in its callback
    for start in range(1, flood + 1, 500):
        conn.execute(
            "SELECT pg_notify('flood', 'e' || i) FROM generate_series(%s::int, %s::int) AS i",
            (start, start + 499),
        )
    # The others get everything while the sleeper sleeps: the hub keeps draining.
    for rec in fast:
        got = rec.wait_events(flood + 1, timeout=30)
        assert [e.key[0] for e in got] == list(range(flood + 1))
    assert not wake.is_set()
    wake.set()
    sleeper.wait_advisory(Action.OVERFLOW, timeout=10)
    # Its queue held 10 of the 3000 that came while it slept; it is told of the other 2990.
    sleeper.wait_events(11, timeout=10)
    keys = [e.key[0] for e in sleeper.events()]
    if policy == "drop_oldest":
        assert keys == [0, *range(flood - 9, flood + 1)], sleeper.describe()
    else:
        assert keys == list(range(11)), sleeper.describe()
    assert overflows(sleeper) == [Advisory(Action.OVERFLOW, lost=flood - 10)]
    stats = hub.stats()
    assert stats.overflow_drops == flood - 10
    assert stats.queue_high_water >= 10
    assert stats.events_received == flood + 1
    assert stats.events_delivered == 3 * (flood + 1) + 11
    assert stats.disconnects == 0


def overflows(rec: Recorder) -> list[Advisory]:
    return [a for a in rec.advisories() if a.action is Action.OVERFLOW]


# --- while disconnected ---


def refuse_and_kill(proxy: FaultProxy, rec: Recorder) -> None:
    """Cut the hub off: new connections refused, the live one reset; wait for DISCONNECT."""
    proxy.refuse()
    proxy.reset()
    rec.wait_advisory(Action.DISCONNECT, timeout=5)


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


def test_notifies_queued_while_disconnected_go_out_after_reconnect(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    conn.execute("LISTEN queued")
    hub = hubs.started(proxy.dsn(dsn), **FAST)
    rec = Recorder()
    hub.consumer(rec, "queued")
    rec.wait_advisory(Action.SUBSCRIBE, "queued")
    refuse_and_kill(proxy, rec)
    answers: list[bool] = []
    for i in range(10):
        hub.notify("queued", [i], confirm=answers.append)
    assert answers == []  # waiting for a session, not failed
    proxy.accept()
    wait_until(lambda: len(answers) == 10, timeout=10, what="10 answers")
    assert answers == [True] * 10
    got = list(conn.notifies(timeout=5, stop_after=10))
    assert [n.payload for n in got] == [f"e{i}" for i in range(10)]


def test_stop_while_the_server_is_unreachable_answers_every_notify_false(
    dsn: str, proxy: FaultProxy
) -> None:
    proxy.refuse()
    hub = pghub.Hub(proxy.dsn(dsn), retry_first_connect=True, **FAST)
    rec = Recorder()
    hub.consumer(rec, "nowhere")
    within(2, hub.start)
    answers: list[bool] = []
    for i in range(10):
        hub.notify("nowhere", [i], confirm=answers.append)
    within(5, hub.stop)
    assert answers == [False] * 10
    rec.assert_final_last(Action.STOP)
    assert rec.actions() == [Action.STOP]
    assert hub.stats().notify_failures == 10


def test_send_queue_is_bounded_while_disconnected(dsn: str, proxy: FaultProxy) -> None:
    proxy.refuse()
    hub = pghub.Hub(proxy.dsn(dsn), retry_first_connect=True, send_queue_size=5, **FAST)
    within(2, hub.start)
    try:
        for i in range(5):
            hub.notify("full", [i])
        with pytest.raises(pghub.SendQueueFull):
            hub.notify("full", [5])
    finally:
        within(5, hub.stop)


def test_a_quiet_healthy_session_is_not_replaced(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    # liveness_timeout=1: probes every half second of silence, and they are answered.
    hub = hubs.started(proxy.dsn(dsn), liveness_timeout=1, **FAST)
    rec = Recorder()
    hub.consumer(rec, "quiet")
    rec.wait_advisory(Action.SUBSCRIBE, "quiet")
    time.sleep(3.5)  # the point of the test: a stretch of silence with nothing wrong
    assert rec.actions() == [Action.CONNECT, Action.SUBSCRIBE]
    stats = hub.stats()
    assert (stats.connects, stats.disconnects) == (1, 0)
    assert proxy.accepted == 1
    assert_flows(hub, rec, conn, "quiet")


def test_confirmed_notifies_were_delivered_despite_resets(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    # confirm(True) means committed: every such event reaches a listener on a direct session,
    # however often the hub's own link is reset. Every notify is answered exactly once.
    conn.execute("LISTEN survive")
    hub = hubs.started(proxy.dsn(dsn), **FAST)
    rec = Recorder()
    hub.consumer(rec, "survive")
    rec.wait_advisory(Action.SUBSCRIBE, "survive")
    answers: dict[int, list[bool]] = {i: [] for i in range(600)}

    def confirm(i: int) -> Any:
        return lambda ok: answers[i].append(ok)

    def answered(first: int, last: int) -> bool:
        return all(answers[i] for i in range(first, last))

    # Four rounds: 100 notifies in calm water (queued while the hub reconnects, if it is),
    # then 50 more with a reset right behind them, whose fate is open: those the hub had
    # handed to the kernel may or may not have committed, so they are answered False.
    for round_, start in enumerate(range(0, 600, 150)):
        for i in range(start, start + 100):
            hub.notify("survive", [i], confirm=confirm(i))
        wait_until(lambda s=start: answered(s, s + 100), timeout=20, what="the calm notifies")
        if round_:  # told of the last reset's RECONNECT (else the next DISCONNECT folds into it)
            rec.wait_advisory(Action.RECONNECT, count=round_)
        for i in range(start + 100, start + 150):
            hub.notify("survive", [i], confirm=confirm(i))
        proxy.reset()
        wait_until(lambda r=round_: rec.count(Action.DISCONNECT) == r + 1, what="DISCONNECT")
    wait_until(lambda: answered(0, 600), timeout=20, what="an answer for every notify")
    assert all(len(a) == 1 for a in answers.values())
    confirmed = {i for i, a in answers.items() if a == [True]}
    calm = {i for i in range(600) if i % 150 < 100}
    assert calm <= confirmed, sorted(calm - confirmed)[:10]
    received: list[int] = []
    for n in conn.notifies(timeout=3):
        received.append(int(n.payload[1:]))
    assert confirmed <= set(received), sorted(confirmed - set(received))[:10]
    assert len(received) == len(set(received)), "an event was committed twice"
    assert received == sorted(received)  # the hub sends in order, retries included
    assert rec.count(Action.DISCONNECT) >= 1


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


def test_a_database_that_does_not_exist(dsn: str) -> None:
    wrong = psycopg.conninfo.make_conninfo(dsn, dbname="pghub_no_such_database")
    hub = pghub.Hub(wrong, connect_timeout=2)
    with pytest.raises(pghub.ConnectFailed) as info:
        within(5, hub.start)
    assert "pghub_no_such_database" in str(info.value)
    within(5, hub.stop)
    retrying = pghub.Hub(wrong, retry_first_connect=True, **FAST)
    within(2, retrying.start)
    try:
        wait_until(lambda: retrying.stats().connect_failures >= 3, what="3 failed attempts")
        assert retrying.stats().connects == 0
    finally:
        within(5, retrying.stop)


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


# --- LISTENs the server refuses on a live session ---


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
