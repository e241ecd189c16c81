"""The seed's own hub suites, with their defects fixed, and the semantics of issue 3.

Every test runs against the real server, and every wait is bounded: a lost event fails
the test within seconds and the failure lists what did arrive.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hubkit import (
    HubPool,
    Recorder,
    advisories_of,
    send_raw,
    wait_until,
    within,
)

import pghub
from pghub import Action, Advisory, Event

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@pytest.fixture
def hubs() -> Iterator[HubPool]:
    pool = HubPool()
    yield pool
    pool.stop_all()


def subscribed(rec: Recorder, *topics: str, timeout: float = 5.0) -> None:
    """Wait for the SUBSCRIBE advisory of every topic (channel forms)."""
    for topic in topics:
        rec.wait_advisory(Action.SUBSCRIBE, topic, timeout=timeout)


# --- the helpers themselves: a wait that fails says what it got ---


def test_recorder_wait_fails_fast_and_lists_what_it_got() -> None:
    rec = Recorder("r")
    rec(Event(None, (), Advisory(Action.CONNECT)))
    rec(Event("t", (1,), {"a": 1}))
    started = time.monotonic()
    with pytest.raises(AssertionError) as info:
        rec.wait_advisory(Action.STOP, timeout=0.2)
    assert time.monotonic() - started < 1.0
    message = str(info.value)
    assert "STOP" in message
    assert "CONNECT" in message
    assert "t[1]={'a': 1}" in message


def test_recorder_counts_and_final() -> None:
    rec = Recorder("r")
    rec(Event(None, (), Advisory(Action.SUBSCRIBE, topic="a")))
    rec(Event("a", (), None))
    rec(Event(None, (), Advisory(Action.CLOSE, final=True)))
    assert rec.count(Action.SUBSCRIBE, "a") == 1
    assert rec.count(Action.SUBSCRIBE, "b") == 0
    assert rec.events() == [Event("a", (), None)]
    assert rec.wait_final(timeout=0.1) == Advisory(Action.CLOSE, final=True)
    rec.assert_final_last(Action.CLOSE)
    rec(Event("a", (), None))
    with pytest.raises(AssertionError):
        rec.assert_final_last(Action.CLOSE)


# --- start and stop ---


def test_stop_before_start(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    rec = Recorder()
    hub.consumer(rec, "never")
    within(5, hub.stop)
    # The consumer still gets its one final advisory, and nothing else: it never connected.
    assert rec.wait_final() == Advisory(Action.STOP, final=True)
    assert rec.actions() == [Action.STOP]
    assert hub.stats().state == "stopped"
    within(5, hub.stop)  # idempotent
    with pytest.raises(pghub.HubStopped):
        hub.start()
    with pytest.raises(pghub.HubStopped):
        hub.notify("never", [1])


def test_start_then_immediate_stop(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    rec = Recorder()
    hub.consumer(rec, "t")
    within(10, hub.start)
    within(10, hub.stop)
    # stop(wait=True) returns after every consumer had its STOP: no wait needed here.
    rec.assert_final_last(Action.STOP)
    assert rec.actions()[0] is Action.CONNECT
    assert rec.count(Action.CONNECT) == 1
    assert hub.stats().state == "stopped"


def test_start_and_stop_at_once_while_still_connecting(dsn: str) -> None:
    for _ in range(10):
        hub = pghub.Hub(dsn, retry_first_connect=True)
        rec = Recorder()
        hub.consumer(rec, "t")
        within(5, hub.start)
        within(10, hub.stop)
        rec.assert_final_last(Action.STOP)
        assert rec.count(Action.CONNECT) <= 1
        assert rec.count(Action.DISCONNECT) == 0


def test_start_is_idempotent_and_context_manager_stops(dsn: str) -> None:
    rec = Recorder()
    with pghub.Hub(dsn, name="cm") as hub:
        assert hub.name == "cm"
        hub.start()
        hub.consumer(rec, "t")
        rec.wait_advisory(Action.CONNECT)
        assert hub.stats().connects == 1
    rec.assert_final_last(Action.STOP)
    assert hub.stats().state == "stopped"


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


def test_daisy_chain_of_256_consumers_while_connecting(dsn: str, hubs: HubPool) -> None:
    hub = hubs.make(dsn, retry_first_connect=True)
    links = 256
    recorders: list[Recorder] = []
    consumers: list[Any] = []
    errors: list[BaseException] = []

    def add_link() -> None:
        index = len(recorders)
        rec = Recorder(f"link{index}", then=lambda event: on_event(index, event))
        recorders.append(rec)
        consumer = hub.consumer(rec)
        consumers.append(consumer)
        consumer.subscribe("chain")

    def on_event(index: int, event: Event) -> None:
        advisory = event.advisory
        if advisory is None or advisory.action is not Action.SUBSCRIBE or index >= links:
            return
        try:
            add_link()  # the next link, made and subscribed from this callback ...
            consumers[index].close()  # ... then this one closes itself
        except BaseException as exc:
            errors.append(exc)

    add_link()  # before start: the chain runs while the hub is still connecting
    within(5, hub.start)
    wait_until(lambda: len(recorders) == links + 1, timeout=60, what="the chain to grow")
    last = recorders[links]
    last.wait_advisory(Action.SUBSCRIBE, "chain", timeout=10)
    for rec in recorders[:links]:
        rec.wait_final(timeout=10)
    within(20, hub.stop)
    assert errors == []
    assert sum(r.count(Action.SUBSCRIBE) for r in recorders) == links + 1
    assert sum(r.count(Action.CLOSE) for r in recorders) == links
    for rec in recorders[:links]:
        assert rec.actions() == [Action.CONNECT, Action.SUBSCRIBE, Action.CLOSE], rec.describe()
    assert last.actions() == [Action.CONNECT, Action.SUBSCRIBE, Action.STOP], last.describe()


# --- what arrives, and what does not ---


def test_evil_producer_malformed_payloads_are_never_delivered(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pghub")
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "evil")
    subscribed(rec, "evil")
    before = hub.stats().invalid_payloads
    malformed = ["x1", "e1,", "e:{bad", "e007", 'e:{"a":1} x']
    # All six in one transaction, the valid one last: the server delivers them in order.
    with conn.transaction():
        for payload in malformed:
            send_raw(conn, "evil", payload)
        send_raw(conn, "evil", 'e1:{"ok":true}')
    assert rec.wait_events(1) == [Event("evil", (1,), {"ok": True})]
    # A second valid event, sent after, proves nothing else was still on its way.
    send_raw(conn, "evil", "e2")
    assert rec.wait_events(2) == [Event("evil", (1,), {"ok": True}), Event("evil", (2,), None)]
    assert hub.stats().invalid_payloads - before == 5
    # Each one logged with its channel and the reason.
    logged = [r.getMessage() for r in caplog.records if "evil" in r.getMessage()]
    assert len(logged) == 5, logged
    assert all("invalid" in m.lower() for m in logged), logged


def _shapes() -> list[tuple[list[int] | None, Any]]:
    rng = random.Random(20261126)
    nested_dict: Any = "bottom"
    nested_list: Any = 0
    for depth in range(10):
        nested_dict = {f"level{depth}": nested_dict, "n": depth}
        nested_list = [nested_list, depth]
    shapes: list[tuple[list[int] | None, Any]] = [
        (None, None),
        ([], None),
        ([INT64_MIN, INT64_MAX], "John Malkovich?"),
        ([0, -1, 1], {"b": {"e": "$$", "d": 1}, "a": 2}),
        ([7], nested_dict),
        ([8], nested_list),
        ([9], "$$; DROP TABLE x; $$"),
        ([10], {"$": "$$$", "k$y": ["$", "$$"]}),
        ([11], "héllo wörld, 日本語, emoji 🎉, Ω"),
        ([12], {"é": 1, "aa": 2, "b": 3}),
        ([13], [True, False, None, 1.5, -0.25, 10**30, ""]),
        ([14], 'tab\there\nnewline "quoted" back\\slash \x01'),
        ([15], {}),
        ([15], {}),  # the same event twice: both must arrive, not be folded into one
    ]
    for i in range(40):
        key = [rng.randint(INT64_MIN, INT64_MAX) for _ in range(rng.randint(0, 8))]
        value = {"i": i, "r": rng.randint(-(10**9), 10**9), "s": "x" * rng.randint(0, 40)}
        shapes.append((key, value))
    return shapes


def test_round_trip_shapes_arrive_equal_and_in_order(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "shapes")
    subscribed(rec, "shapes")
    shapes = _shapes()
    for key, value in shapes:
        hub.notify("shapes", key, value)
    got = rec.wait_events(len(shapes), timeout=10)
    expected = [Event("shapes", tuple(key or ()), value) for key, value in shapes]
    assert got == expected


def test_100_consumers_on_3_topics_and_100_notifies_give_10000_deliveries(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    # Every consumer listens to all three topics; the 100 notifies go round the topics
    # (34 + 33 + 33), so every consumer gets every notify: 100 x 100 = 10,000 deliveries.
    hub = hubs.started(dsn)
    topics = ("t0", "t1", "t2")
    recorders = [Recorder(f"c{i}") for i in range(100)]
    for rec in recorders:
        hub.consumer(rec, *topics)
    for rec in recorders:
        subscribed(rec, *topics, timeout=10)
    before = hub.stats()
    for i in range(100):
        hub.notify(topics[i % 3], [i], {"i": i})
    for rec in recorders:
        rec.wait_events(100, timeout=30)
    # Settle: a sentinel through one consumer's topic, sent after everything else, so a
    # duplicate delivery would have arrived by the time it does.
    send_raw(conn, "t0", "e100")
    for rec in recorders:
        rec.wait_events(101, timeout=10)
    total = 0
    for rec in recorders:
        events = rec.events()
        assert len(events) == 101, rec.describe()
        total += len(events) - 1
        for topic in topics:
            keys = [e.key[0] for e in events if e.topic == topic and e.key[0] < 100]
            assert keys == [i for i in range(100) if topics[i % 3] == topic]
    assert total == 10_000
    after = hub.stats()
    assert after.events_received - before.events_received == 101
    assert after.events_delivered - before.events_delivered == 101 * 100
    assert after.notifies - before.notifies == 100


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


def test_connect_at_once_for_a_consumer_created_while_connected(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec)
    assert rec.wait_advisory(Action.CONNECT, timeout=2) == Advisory(Action.CONNECT)
    assert rec.actions() == [Action.CONNECT]


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


def test_own_notify_after_subscribe_reaches_the_consumer(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec)
    for i in range(10):
        topic = f"own{i}"
        consumer.subscribe(topic)
        rec.wait_advisory(Action.SUBSCRIBE, topic)
        hub.notify(topic, [i], {"own": True})
        assert rec.wait_events(i + 1)[-1] == Event(topic, (i,), {"own": True})


def test_events_of_a_topic_arrive_in_server_order(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    recorders = [Recorder(f"c{i}") for i in range(3)]
    for rec in recorders:
        hub.consumer(rec, "ordera", "orderb")
        subscribed(rec, "ordera", "orderb")
    sent = 0
    # One at a time in their own transactions, then a burst in one transaction.
    for i in range(200):
        send_raw(conn, "ordera" if i % 2 else "orderb", f"e{i}")
        sent += 1
    with conn.transaction():
        for i in range(200, 600):
            send_raw(conn, "ordera" if i % 3 else "orderb", f"e{i}")
            sent += 1
    for rec in recorders:
        events = rec.wait_events(sent, timeout=15)
        for topic in ("ordera", "orderb"):
            keys = [e.key[0] for e in events if e.topic == topic]
            assert keys == sorted(keys)
        assert sorted(e.key[0] for e in events) == list(range(sent))


def test_topics_that_need_quoting_work(
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


def test_calls_from_inside_callbacks_do_not_deadlock(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    bystander = Recorder("bystander")
    other = hub.consumer(bystander, "step")
    outcome: dict[str, Any] = {}
    confirmed = threading.Event()
    consumer: Any = None

    def step(event: Event) -> None:
        # Each step acts from inside the callback; a deadlock shows as a missing step.
        advisory = event.advisory
        if event.topic == "step" and event.key == (1,):
            consumer.subscribe("step2")
        elif advisory is not None and advisory.topic == "step2":
            hub.notify("step2", [2], confirm=lambda ok: confirmed.set() if ok else None)
        elif event.topic == "step2":
            other.close()
            consumer.unsubscribe("step")
        elif advisory is not None and advisory.action is Action.UNSUBSCRIBE:
            started = time.monotonic()
            try:
                hub.stop()
                outcome["stop"] = "returned"
            except pghub.PghubError as exc:
                outcome["stop"] = exc
            outcome["seconds"] = time.monotonic() - started

    rec = Recorder("actor", then=step)
    consumer = hub.consumer(rec, "step")
    subscribed(rec, "step")
    subscribed(bystander, "step")
    send_raw(conn, "step", "e1")
    rec.wait_events(2, timeout=10)
    assert confirmed.wait(5)
    bystander.wait_final(timeout=10)
    assert bystander.advisories()[-1].action is Action.CLOSE
    wait_until(lambda: "stop" in outcome, timeout=15, what="stop() from a callback to return")
    assert outcome["seconds"] < 10
    # Whether stop() from a callback waits or refuses, the hub does stop.
    if outcome["stop"] != "returned":
        within(15, hub.stop)
    rec.wait_final(timeout=10)
    rec.assert_final_last(Action.STOP)
    assert hub.stats().state == "stopped"


def test_confirm_true_after_the_notify_committed(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    conn.execute("LISTEN confirmed")
    hub = hubs.started(dsn)
    answers: list[bool] = []
    answered = threading.Event()

    def confirm(ok: bool) -> None:
        answers.append(ok)
        answered.set()

    hub.notify("confirmed", [1], {"a": "$"}, confirm=confirm)
    assert answered.wait(5)
    assert answers == [True]
    # Committed, hence delivered, with the canonical payload.
    got = list(conn.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in got] == [("confirmed", 'e1:{"a":"\\u0024"}')]


def test_notify_many_is_confirmed_once_and_delivered_in_order(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "many")
    subscribed(rec, "many")
    answers: list[bool] = []
    batch: list[Any] = [("many", [i], {"i": i}) for i in range(50)]
    batch.append(Event("many", (50,), None))
    hub.notify_many(batch, confirm=answers.append)
    events = rec.wait_events(51)
    assert [e.key for e in events] == [(i,) for i in range(51)]
    # Documented: confirm is called once for the batch, True when every event committed.
    wait_until(lambda: len(answers) == 1, what="one confirm for the batch")
    assert answers == [True]
    hub.notify_many([], confirm=answers.append)  # an empty batch: nothing failed
    wait_until(lambda: len(answers) == 2, what="a confirm for the empty batch")
    assert answers == [True, True]


def test_notify_many_with_one_bad_event_sends_none(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "batch")
    subscribed(rec, "batch")
    with pytest.raises(pghub.InvalidKey):
        hub.notify_many([("batch", [1], None), ("batch", [2**63], None), ("batch", [3], None)])
    with pytest.raises(pghub.InvalidTopic):
        hub.notify_many([("batch", [4], None), ("no way", [5], None)])
    send_raw(conn, "batch", "e6")  # the sentinel: whatever was sent before it is in by then
    assert rec.wait_events(1) == [Event("batch", (6,), None)]
    assert hub.stats().notifies == 0


def test_stop_confirms_every_pending_notify(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    within(10, hub.start)
    answers: list[bool] = []
    lock = threading.Lock()

    def confirm(ok: bool) -> None:
        with lock:
            answers.append(ok)

    for i in range(500):
        hub.notify("pending", [i], confirm=confirm)
    within(20, hub.stop)
    # Every one answered, one way or the other, by the time stop(wait=True) returned.
    assert len(answers) == 500
    assert all(isinstance(a, bool) for a in answers)


def test_notify_after_stop_raises_hub_stopped(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    within(10, hub.start)
    within(10, hub.stop)
    with pytest.raises(pghub.HubStopped):
        hub.notify("late", [1])
    with pytest.raises(pghub.HubStopped):
        hub.notify_many([("late", [1], None)])
    with pytest.raises(pghub.HubStopped):
        hub.start()


def test_bad_notify_input_raises_at_the_call(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    with pytest.raises(pghub.InvalidKey):
        hub.notify("t", [2**63])
    with pytest.raises(pghub.InvalidKey):
        hub.notify("t", ["1"])  # type: ignore[list-item]
    with pytest.raises(pghub.InvalidValue):
        hub.notify("t", [1], {"x": float("nan")})
    with pytest.raises(pghub.InvalidValue):
        hub.notify("t", [1], "nul\x00")
    with pytest.raises(pghub.PayloadTooLarge):
        hub.notify("t", [1], "x" * 8000)
    assert hub.stats().notifies == 0


def test_stats_move_as_documented(dsn: str, conn: psycopg.Connection[Any]) -> None:
    hub = pghub.Hub(dsn)
    stats = hub.stats()
    assert stats.state == "new"
    assert (stats.connects, stats.consumers, stats.events_received) == (0, 0, 0)
    within(10, hub.start)
    stats = hub.stats()
    assert stats.state == "connected"
    assert stats.connects == 1
    assert stats.connect_failures == 0
    first, second = Recorder("first"), Recorder("second")
    a = hub.consumer(first, "s1")
    b = hub.consumer(second, "s1")
    subscribed(first, "s1")
    subscribed(second, "s1")
    stats = hub.stats()
    assert stats.consumers == 2
    assert stats.subscribes == 2
    assert stats.listens == 1  # one LISTEN serves both consumers
    assert stats.listen_failures == 0
    send_raw(conn, "s1", "e1")
    hub.notify("s1", [2])
    first.wait_events(2)
    second.wait_events(2)
    stats = hub.stats()
    assert stats.events_received == 2
    assert stats.events_delivered == 4
    assert stats.notifies == 1
    assert stats.notify_failures == 0
    assert stats.queue_high_water >= 1
    assert stats.send_queue_high_water >= 1
    a.unsubscribe("s1")
    first.wait_advisory(Action.UNSUBSCRIBE, "s1")
    assert hub.stats().unlistens == 0  # the other consumer still needs the channel
    b.close()
    second.wait_final()
    wait_until(lambda: hub.stats().unlistens == 1, what="UNLISTEN once nobody needs s1")
    stats = hub.stats()
    assert stats.consumers == 1
    assert stats.unlisten_failures == 0
    assert (stats.disconnects, stats.reconnects, stats.callback_errors) == (0, 0, 0)
    assert (stats.overflow_drops, stats.invalid_payloads) == (0, 0)
    within(10, hub.stop)
    assert hub.stats().state == "stopped"
    assert advisories_of(first.all())[-1] == Advisory(Action.STOP, final=True)


def test_process_wide_stats_count_hubs_and_totals(dsn: str) -> None:
    before = pghub.stats()
    hub = pghub.Hub(dsn)
    within(10, hub.start)
    answers: list[bool] = []
    for i in range(3):
        hub.notify("wide", [i], confirm=answers.append)
    wait_until(lambda: len(answers) == 3, what="3 confirms")
    during = pghub.stats()
    assert during.hubs_started == before.hubs_started + 1
    assert during.hubs == before.hubs + 1
    assert during.totals["notifies"] == before.totals["notifies"] + 3
    within(10, hub.stop)
    after = pghub.stats()
    assert after.hubs == before.hubs
    # A stopped hub's figures stay in the process totals.
    assert after.totals["notifies"] == before.totals["notifies"] + 3
    assert after.totals["connects"] == before.totals["connects"] + 1


# --- documented details (docs/hub.md) ---


def test_one_consumer_cannot_change_what_another_receives(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)

    def vandal(event: Event) -> None:
        if event.topic is not None:
            event.value["list"].append("vandalised")
            event.value["new"] = True

    first = Recorder("vandal", then=vandal)
    second = Recorder("reader")
    hub.consumer(first, "shared")
    hub.consumer(second, "shared")
    subscribed(first, "shared")
    subscribed(second, "shared")
    send_raw(conn, "shared", 'e1:{"list":[1]}')
    first.wait_events(1)
    assert second.wait_events(1) == [Event("shared", (1,), {"list": [1]})]


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


def test_identical_notifies_are_all_delivered(dsn: str, hubs: HubPool) -> None:
    # Separate notify calls are never folded, even when the hub batches them.
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "same")
    subscribed(rec, "same")
    for _ in range(200):
        hub.notify("same", [1], {"same": True})
    assert len(rec.wait_events(200, timeout=10)) == 200
    hub.notify("same", [2])  # a sentinel: a duplicate would have arrived before it
    assert rec.wait_events(201)[-1] == Event("same", (2,), None)
    assert len(rec.events()) == 201


def test_notify_from_many_threads_keeps_each_threads_order(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "threads")
    subscribed(rec, "threads")
    barrier = threading.Barrier(8)

    def send(thread: int) -> None:
        barrier.wait(5)
        for i in range(200):
            hub.notify("threads", [thread, i])

    senders = [threading.Thread(target=send, args=(t,)) for t in range(8)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(10)
    events = rec.wait_events(1600, timeout=20)
    for thread in range(8):
        assert [e.key[1] for e in events if e.key[0] == thread] == list(range(200))


def test_each_consumer_runs_in_a_thread_of_its_own(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    recorders = [Recorder(f"c{i}") for i in range(3)]
    for rec in recorders:
        hub.consumer(rec, "threads")
        subscribed(rec, "threads")
    for i in range(20):
        send_raw(conn, "threads", f"e{i}")
    for rec in recorders:
        rec.wait_events(20)
    assert [len(rec.threads) for rec in recorders] == [1, 1, 1]
    idents = {next(iter(rec.threads)) for rec in recorders}
    assert len(idents) == 3
    assert threading.get_ident() not in idents


def test_a_pool_is_accepted_and_its_slots_are_not_used(dsn: str) -> None:
    pool_module = pytest.importorskip("psycopg_pool")
    pool = pool_module.ConnectionPool(dsn, min_size=1, max_size=1, open=True)
    try:
        rec = Recorder()
        with pghub.Hub(pool) as hub:
            hub.consumer(rec, "pooled")
            subscribed(rec, "pooled")
            hub.notify("pooled", [1])
            assert rec.wait_events(1) == [Event("pooled", (1,), None)]
            # The hub has a session of its own: the pool's one slot is still free.
            with pool.connection(timeout=2) as c:
                assert c.execute("SELECT 1").fetchone() == (1,)
        rec.assert_final_last(Action.STOP)
    finally:
        pool.close()


def test_a_given_logger_receives_callback_errors(
    dsn: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("pghub_test.custom")
    caplog.set_level(logging.ERROR, logger="pghub_test.custom")

    def explode(event: Event) -> None:
        if event.topic is not None:
            raise ValueError("custom boom")

    with pghub.Hub(dsn, logger=logger) as hub:
        rec = Recorder(then=explode)
        hub.consumer(rec, "custom")
        subscribed(rec, "custom")
        send_raw(conn, "custom", "e1")
        rec.wait_events(1)
        wait_until(
            lambda: any(r.name == "pghub_test.custom" and r.exc_info for r in caplog.records),
            what="the traceback on the given logger",
        )


def test_the_session_is_named_after_the_hub(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn, name="orders_hub")
    pid = hub.stats().backend_pid
    row = conn.execute(
        "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    assert row == ("pghub:orders_hub",)


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


def test_a_thousand_topics_and_the_longest_topic(
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


def test_stop_without_waiting_still_ends_every_consumer(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    within(10, hub.start)
    recorders = [Recorder(f"c{i}") for i in range(10)]
    for rec in recorders:
        hub.consumer(rec, "nowait")
    for rec in recorders:
        subscribed(rec, "nowait")
    within(1, hub.stop, wait=False)
    for rec in recorders:
        rec.wait_final(timeout=10)
        rec.assert_final_last(Action.STOP)
    wait_until(lambda: hub.stats().state == "stopped", what="state stopped")
    within(10, hub.stop)  # and waiting afterwards is fine


def test_the_context_manager_stops_on_an_exception(dsn: str) -> None:
    rec = Recorder()
    hub = pghub.Hub(dsn)

    def use_and_fail() -> None:
        with hub:
            hub.consumer(rec, "oops")
            subscribed(rec, "oops")
            raise KeyError("inside")

    with pytest.raises(KeyError):
        use_and_fail()
    rec.assert_final_last(Action.STOP)
    assert hub.stats().state == "stopped"


def test_confirm_callbacks_may_raise_notify_and_stop(
    dsn: str, hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="pghub")
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "chain")
    subscribed(rec, "chain")

    def raising(ok: bool) -> None:
        raise RuntimeError("confirm boom")

    hub.notify("chain", [0], confirm=raising)

    def next_link(i: int) -> Any:
        def confirm(ok: bool) -> None:
            assert ok
            if i < 5:
                hub.notify("chain", [i + 1], confirm=next_link(i + 1))  # from the engine thread
            else:
                hub.stop()  # documented: from a confirm callback it does not wait

        return confirm

    hub.notify("chain", [1], confirm=next_link(1))
    rec.wait_final(timeout=10)
    rec.assert_final_last(Action.STOP)
    assert [e.key for e in rec.events()] == [(i,) for i in range(6)]
    wait_until(
        lambda: any("confirm" in r.getMessage() for r in caplog.records if r.exc_info),
        what="the raising confirm logged",
    )
