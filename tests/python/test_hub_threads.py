"""Calls from any thread, the hub's own threads included.

Proves that each consumer runs in a thread of its own, that notifies from many threads keep
each thread's order, and that calls made from inside callbacks (consumers made, subscribed and
closed, notifies sent, the hub stopped), from consumer threads and from confirm callbacks on
the engine thread, never deadlock; and that consumers closed from other threads while events
stream or while the hub stops each end with exactly one final advisory.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import psycopg
import pytest
from hubkit import HubPool, Recorder, send_raw, subscribed, wait_until, within

import pghub
from pghub import Action, Event

# --- threads of their own ---------------------------------------------------------------------


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


# --- calls from consumer callbacks ------------------------------------------------------------


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


def test_a_chain_of_256_consumers_made_and_closed_from_callbacks_while_connecting(
    dsn: str, hubs: HubPool
) -> None:
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


def test_two_callbacks_that_both_stop_the_hub_do_not_deadlock(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    # No HubPool here: on failure the two consumer threads stay blocked (daemon threads),
    # and a teardown that joins them would hang too.
    hub = pghub.Hub(dsn)
    within(15, hub.start)
    returned: list[str] = []
    both_called = threading.Barrier(2, timeout=5)

    def stopper(name: str) -> Any:
        def on_event(event: Event) -> None:
            if event.topic == "shutdown":
                both_called.wait()  # both are inside their callback: the ordinary case
                hub.stop(wait=True)
                returned.append(name)

        return on_event

    hub.consumer(stopper("a"), "shutdown")
    hub.consumer(stopper("b"), "shutdown")
    probe = Recorder()
    hub.consumer(probe, "shutdown")
    probe.wait_advisory(Action.SUBSCRIBE, "shutdown")
    time.sleep(0.2)  # the two stoppers' SUBSCRIBE is announced in the same step as the probe's
    send_raw(conn, "shutdown", "e")
    wait_until(lambda: len(returned) == 2, timeout=5, what="both stop() calls returned")


def test_one_callback_stopping_the_hub_and_another_closing_itself(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    hub = pghub.Hub(dsn)
    within(15, hub.start)
    stopped = threading.Event()
    closer_events: list[Event] = []

    def stopper(event: Event) -> None:
        if event.topic == "bye":
            hub.stop(wait=True)
            stopped.set()

    def closer(event: Event) -> None:
        closer_events.append(event)
        if event.topic == "bye":
            closing.close()

    hub.consumer(stopper, "bye")
    closing = hub.consumer(closer, "bye")
    wait_until(
        lambda: any(e.advisory and e.advisory.action is Action.SUBSCRIBE for e in closer_events)
    )
    time.sleep(0.1)
    send_raw(conn, "bye", "e")
    assert stopped.wait(5), "stop() from a callback did not return"
    wait_until(lambda: any(e.advisory and e.advisory.final for e in closer_events))
    finals = [e for e in closer_events if e.advisory is not None and e.advisory.final]
    assert len(finals) == 1
    assert closer_events[-1] is finals[0]


# --- calls from confirm callbacks, on the engine thread ---------------------------------------


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


def test_stop_from_a_confirm_callback_does_not_wait_and_the_hub_stops(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    hub = pghub.Hub(dsn)
    within(15, hub.start)
    rec = Recorder()
    hub.consumer(rec)
    rec.wait_advisory(Action.CONNECT)
    answered = threading.Event()

    def confirm(ok: bool) -> None:
        hub.stop(wait=True)  # on the engine thread: must not wait for itself
        answered.set()

    hub.notify("x", [1], confirm=confirm)
    assert answered.wait(5)
    assert hub.join(5)
    rec.wait_final()
    rec.assert_final_last(Action.STOP)


def test_stop_from_a_confirm_callback_does_not_deadlock(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    within(10, hub.start)
    rec = Recorder()
    hub.consumer(rec)
    stopped = threading.Event()

    def confirm(ok: bool) -> None:
        hub.stop(wait=True)  # on the engine thread: must return, not wait for itself
        stopped.set()

    hub.notify("t", confirm=confirm)
    assert stopped.wait(10)
    rec.wait_final(timeout=10)
    wait_until(lambda: hub.state == "stopped", what="the hub to stop")


# --- closing from other threads ---------------------------------------------------------------


def test_close_from_another_thread_while_events_stream_ends_with_one_close(
    dsn: str, hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    recs = [Recorder(f"r{i}") for i in range(20)]
    consumers = [hub.consumer(rec, "stream") for rec in recs]
    for rec in recs:
        rec.wait_advisory(Action.SUBSCRIBE, "stream")
    stop_sending = threading.Event()

    def send() -> None:
        i = 0
        while not stop_sending.is_set() and i < 20000:
            hub.notify("stream", [i], {"i": i})
            i += 1
            if i % 200 == 0:
                time.sleep(0.001)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    recs[-1].wait_events(500, timeout=10)
    closers = [threading.Thread(target=c.close, daemon=True) for c in consumers]
    for t in closers:
        t.start()
    for t in closers:
        t.join(5)
    stop_sending.set()
    sender.join(10)
    for rec in recs:
        rec.wait_final()
        rec.assert_final_last(Action.CLOSE)
        keys = [e.key[0] for e in rec.events()]
        assert keys == sorted(keys), f"{rec.name}: events out of order"


def test_closing_consumers_while_the_hub_stops_does_not_kill_its_end(dsn: str) -> None:
    # The first consumer's STOP is put first; its callback closes the others while the engine
    # is still handing out STOPs. A short switch interval lets the threads interleave.
    hub = pghub.Hub(dsn)
    within(15, hub.start)
    others: list[pghub.Consumer] = []

    def close_the_others(event: Event) -> None:
        if event.advisory is not None and event.advisory.action is Action.STOP:
            for c in others:
                c.close()

    hub.consumer(close_the_others)
    others.extend(hub.consumer(lambda e: None) for _ in range(1500))
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        hub.stop(wait=False)
        finished = hub.join(5)
    finally:
        sys.setswitchinterval(previous)
    assert finished, "the engine never finished: its end was cut short"
    assert hub.state == "stopped"
