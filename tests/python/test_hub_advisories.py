"""The advisory contract (docs/hub.md), consumer by consumer.

Proves that CONNECT comes at once to a consumer made while connected, that SUBSCRIBE comes only
once the LISTEN has taken effect on the server, and that every consumer gets exactly one final
advisory, last: STOP after the events queued before it, CLOSE with its queued events
discarded, for hundreds of consumers at once and while events stream in. DISCONNECT and
RECONNECT are proved in test_hub_reconnects.py, OVERFLOW in test_hub_consumers.py.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from hubkit import HubPool, Recorder, send_raw, subscribed, wait_until, within

import pghub
from pghub import Action, Advisory, Event

# --- CONNECT and SUBSCRIBE --------------------------------------------------------------------


def test_connect_at_once_for_a_consumer_created_while_connected(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec)
    assert rec.wait_advisory(Action.CONNECT, timeout=2) == Advisory(Action.CONNECT)
    assert rec.actions() == [Action.CONNECT]


def test_subscribe_advisory_comes_after_listen_took_effect(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    # On each SUBSCRIBE, another connection sends at once on that topic: if the advisory
    # came before the LISTEN took effect on the server, the event would be lost.
    hub = hubs.started(dsn)
    topics = [f"fresh{i}" for i in range(20)]
    lock = threading.Lock()

    def on_event(event: Event) -> None:
        advisory = event.advisory
        if advisory is not None and advisory.action is Action.SUBSCRIBE:
            assert advisory.topic is not None
            with lock:
                send_raw(conn, advisory.topic, "e1")

    rec = Recorder(then=on_event)
    consumer = hub.consumer(rec)
    consumer.subscribe(*topics)
    events = rec.wait_events(len(topics), timeout=10)
    assert sorted(e.topic for e in events if e.topic) == sorted(topics)
    assert consumer.topics == frozenset(topics)


# --- exactly one final advisory, last ---------------------------------------------------------


def test_256_consumers_each_get_one_connect_and_one_stop(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    recorders = [Recorder(f"c{i}") for i in range(256)]
    for rec in recorders:
        hub.consumer(rec)
    within(10, hub.start)
    for rec in recorders:
        rec.wait_advisory(Action.CONNECT, timeout=10)
    assert hub.stats().consumers == 256
    within(20, hub.stop)
    for rec in recorders:
        assert rec.actions() == [Action.CONNECT, Action.STOP], rec.describe()
        rec.assert_final_last(Action.STOP)


def test_256_consumers_closed_get_one_close_each_and_no_stop(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    recorders = [Recorder(f"c{i}") for i in range(256)]
    consumers = [hub.consumer(rec, "t") for rec in recorders]
    within(10, hub.start)
    for rec in recorders:
        rec.wait_advisory(Action.SUBSCRIBE, "t", timeout=10)
    for consumer in consumers:
        consumer.close()
        consumer.close()  # idempotent: still one CLOSE
    for rec in recorders:
        assert rec.wait_final(timeout=10) == Advisory(Action.CLOSE, final=True)
    within(20, hub.stop)
    for rec in recorders:
        assert rec.actions() == [Action.CONNECT, Action.SUBSCRIBE, Action.CLOSE], rec.describe()
        rec.assert_final_last(Action.CLOSE)
    assert hub.stats().consumers == 0


def test_exactly_one_final_advisory_and_it_is_last(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    # Events keep arriving while consumers close and the hub stops at the same time.
    hub = hubs.started(dsn)
    recorders = [Recorder(f"c{i}") for i in range(20)]
    consumers = [hub.consumer(rec, "busy") for rec in recorders]
    for rec in recorders:
        subscribed(rec, "busy")
    stop_sending = threading.Event()

    def send() -> None:
        with psycopg.connect(dsn, autocommit=True) as sender:
            i = 0
            while not stop_sending.is_set():
                send_raw(sender, "busy", f"e{i}")
                i += 1

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        recorders[0].wait_events(50, timeout=10)
        closers = [threading.Thread(target=c.close) for c in consumers[::2]]
        for closer in closers:
            closer.start()
        within(20, hub.stop)
        for closer in closers:
            closer.join(timeout=5)
            assert not closer.is_alive()
    finally:
        stop_sending.set()
        sender.join(timeout=5)
    for index, rec in enumerate(recorders):
        finals = [a for a in rec.advisories() if a.final]
        assert len(finals) == 1, rec.describe()
        rec.assert_final_last(finals[0].action)
        if index % 2:
            assert finals[0].action is Action.STOP, rec.describe()


def test_stop_delivers_queued_events_before_stop(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    release = threading.Event()

    def slow(event: Event) -> None:
        if event.topic is not None and event.key == (0,):
            release.wait(10)

    rec = Recorder("slow", then=slow)
    hub.consumer(rec, "queued")
    subscribed(rec, "queued")
    conn.execute("SELECT pg_notify('queued', 'e' || i) FROM generate_series(0, 99) AS i")
    rec.wait_events(1)  # and now it is stuck in its callback, 99 events queued behind it
    wait_until(lambda: hub.stats().events_received == 100, what="all 100 received")
    stopper = threading.Thread(target=hub.stop)
    stopper.start()
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert [e.key[0] for e in rec.events()] == list(range(100))
    rec.assert_final_last(Action.STOP)


def test_close_discards_queued_events_and_close_is_last(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    release = threading.Event()

    def stuck(event: Event) -> None:
        if event.topic is not None and event.key == (0,):
            release.wait(10)

    rec = Recorder("stuck", then=stuck)
    consumer = hub.consumer(rec, "discard")
    subscribed(rec, "discard")
    conn.execute("SELECT pg_notify('discard', 'e' || i) FROM generate_series(0, 49) AS i")
    rec.wait_events(1)
    wait_until(lambda: hub.stats().events_received == 50, what="all 50 received")
    consumer.close()
    with pytest.raises(pghub.ConsumerClosed):
        consumer.subscribe("more")
    release.set()
    rec.wait_final()
    rec.assert_final_last(Action.CLOSE)
    # close() came while the callback held event 0: the 49 behind it were still queued, so
    # none of them is delivered (docs/hub.md: "events still queued are discarded").
    assert [e.key[0] for e in rec.events()] == [0], rec.describe()
