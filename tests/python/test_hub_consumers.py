"""A consumer's topics, its callback and its queue.

Proves that topics are taken in their channel form (quoting, case, duplicates, a thousand of
them, the longest), that one bad topic refuses the whole call, that unsubscribe stops a topic
for that consumer only and resubscribing brings it back, that a closed consumer refuses to
subscribe, that a raising callback is counted and logged while delivery goes on, and that a
consumer too slow for its events overflows alone and is told how many it lost.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
import pytest
from hubkit import HubPool, Recorder, send_raw, subscribed, wait_until

import pghub
from pghub import Action, Advisory, Event

# --- topics -----------------------------------------------------------------------------------


def test_topics_that_need_quoting_are_heard_and_sent(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec)
    consumer.subscribe("Orders", "select", "1abc")
    subscribed(rec, "orders", "select", "1abc")
    assert consumer.topics == frozenset({"orders", "select", "1abc"})
    conn.execute("NOTIFY Orders, 'e1'")  # unquoted: folded to orders, as the Go hub sends
    conn.execute("NOTIFY \"select\", 'e2'")
    send_raw(conn, "1abc", "e3")
    hub.notify("ORDERS", [4])
    hub.notify("select", [5])
    hub.notify("1abc", [6])
    events = rec.wait_events(6)
    assert sorted((e.key[0], e.topic) for e in events) == [
        (1, "orders"),
        (2, "select"),
        (3, "1abc"),
        (4, "orders"),
        (5, "select"),
        (6, "1abc"),
    ]


def test_the_same_topic_twice_in_one_call_is_one_subscription(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec)
    consumer.subscribe("dup", "DUP", "Dup")
    subscribed(rec, "dup")
    consumer.subscribe("sentinel")
    subscribed(rec, "sentinel")
    assert rec.count(Action.SUBSCRIBE, "dup") == 1
    assert consumer.topics == frozenset({"dup", "sentinel"})
    hub.notify("dup", [1])
    assert rec.wait_events(1) == [Event("dup", (1,), None)]


def test_a_thousand_topics_and_the_longest_topic_are_heard(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec)
    longest = "L" * 63
    topics = [f"many_{i}" for i in range(999)] + [longest]
    consumer.subscribe(*topics)
    rec.wait_for(lambda _: rec.count(Action.SUBSCRIBE) == 1000, timeout=30, what="1000 SUBSCRIBE")
    assert consumer.topics == frozenset(t.lower() for t in topics)
    with conn.transaction():
        for i, topic in enumerate(topics):
            send_raw(conn, topic.lower(), f"e{i}")
    events = rec.wait_events(1000, timeout=30)
    assert [e.key[0] for e in events] == list(range(1000))
    assert events[-1].topic == "l" * 63


@pytest.mark.parametrize("bad", ["", "has-dash", "x" * 64, "sp ace", "é"])
def test_subscribing_with_one_bad_topic_subscribes_none(dsn: str, hubs: HubPool, bad: str) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec)
    with pytest.raises(pghub.InvalidTopic):
        consumer.subscribe("good1", bad, "good2")
    assert consumer.topics == frozenset()
    with pytest.raises(pghub.InvalidTopic):
        hub.consumer(Recorder(), "good3", bad)
    # A later subscribe shows, once its advisory is in, that no other one came before it.
    consumer.subscribe("sentinel")
    rec.wait_advisory(Action.SUBSCRIBE, "sentinel")
    assert [a.topic for a in rec.advisories() if a.action is Action.SUBSCRIBE] == ["sentinel"]
    with pytest.raises(pghub.InvalidTopic):
        hub.notify(bad, [1])


# --- unsubscribe and close --------------------------------------------------------------------


def test_unsubscribe_stops_the_topic_for_that_consumer_only(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    leaving, staying = Recorder("leaving"), Recorder("staying")
    leaver = hub.consumer(leaving, "shared", "other")
    hub.consumer(staying, "shared")
    subscribed(leaving, "shared", "other")
    subscribed(staying, "shared")
    send_raw(conn, "shared", "e1")
    leaving.wait_events(1)
    leaver.unsubscribe("shared")
    leaving.wait_advisory(Action.UNSUBSCRIBE, "shared")
    assert leaver.topics == frozenset({"other"})
    send_raw(conn, "shared", "e2")
    send_raw(conn, "other", "e3")
    assert leaving.wait_events(2) == [Event("shared", (1,), None), Event("other", (3,), None)]
    assert staying.wait_events(2) == [Event("shared", (1,), None), Event("shared", (2,), None)]
    # Nothing of "shared" after the UNSUBSCRIBE advisory.
    got = leaving.all()
    cut = next(
        i for i, e in enumerate(got) if e.advisory and e.advisory.action is Action.UNSUBSCRIBE
    )
    assert all(e.topic != "shared" for e in got[cut:])
    # The other consumer keeps the topic after this one closes, too.
    leaver.close()
    leaving.wait_final()
    send_raw(conn, "shared", "e4")
    assert staying.wait_events(3)[-1] == Event("shared", (4,), None)


def test_unsubscribe_and_resubscribe_under_a_stream_of_events(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec, "flip", "steady")
    subscribed(rec, "flip", "steady")
    stop_sending = threading.Event()

    def send() -> None:
        with psycopg.connect(dsn, autocommit=True) as sender:
            i = 0
            while not stop_sending.is_set():
                send_raw(sender, "flip", f"e{i}")
                i += 1

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        for round_ in range(1, 6):
            consumer.unsubscribe("flip")
            rec.wait_advisory(Action.UNSUBSCRIBE, "flip", count=round_)
            consumer.subscribe("flip")
            rec.wait_advisory(Action.SUBSCRIBE, "flip", count=round_ + 1)
            seen = len(rec.events())
            rec.wait_events(seen + 1)  # events flow again after each SUBSCRIBE
        # Quick flips: unsubscribe and subscribe again without waiting in between.
        consumer.unsubscribe("flip")
        consumer.subscribe("flip")
        rec.wait_advisory(Action.SUBSCRIBE, "flip", count=7)
        seen = len(rec.events())
        rec.wait_events(seen + 1)
    finally:
        stop_sending.set()
        sender.join(5)
    # Between an UNSUBSCRIBE and the next SUBSCRIBE, no event of the topic.
    listening = True
    for event in rec.all():
        advisory = event.advisory
        if advisory is not None and advisory.topic == "flip":
            listening = advisory.action is Action.SUBSCRIBE
        elif event.topic == "flip":
            assert listening, f"an event of flip while unsubscribed: {rec.describe()}"
    # The events of flip arrive in order, whatever was missed in the gaps.
    keys = [e.key[0] for e in rec.events() if e.topic == "flip"]
    assert keys == sorted(keys)
    assert consumer.topics == frozenset({"flip", "steady"})


def test_a_closed_consumer_refuses_to_subscribe(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec, "a")
    consumer.close()
    rec.wait_final()
    with pytest.raises(pghub.ConsumerClosed):
        consumer.subscribe("b")
    with pytest.raises(pghub.InvalidTopic):  # bad input is still reported as such
        consumer.subscribe("no-dash")


# --- callbacks and queues ---------------------------------------------------------------------


def test_a_throwing_callback_is_counted_and_delivery_goes_on(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="pghub")
    hub = hubs.started(dsn)

    def explode(event: Event) -> None:
        if event.topic is not None:
            raise RuntimeError(f"boom {event.key}")

    thrower = Recorder("thrower", then=explode)
    bystander = Recorder("bystander")
    hub.consumer(thrower, "boom")
    hub.consumer(bystander, "boom")
    subscribed(thrower, "boom")
    subscribed(bystander, "boom")
    before = hub.stats().callback_errors
    for i in range(3):
        send_raw(conn, "boom", f"e{i}")
    assert [e.key for e in thrower.wait_events(3)] == [(0,), (1,), (2,)]
    assert [e.key for e in bystander.wait_events(3)] == [(0,), (1,), (2,)]
    wait_until(lambda: hub.stats().callback_errors - before == 3, what="3 callback errors")

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.exc_info and "boom" in str(r.exc_info[1])]

    # The count goes up before the log line is written: wait for the third one.
    wait_until(lambda: len(logged()) >= 3, what="3 tracebacks logged")
    assert len(logged()) == 3
    assert all(r.exc_info and r.exc_info[2] is not None for r in logged())
    assert all(r.name.startswith("pghub") for r in logged())


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
