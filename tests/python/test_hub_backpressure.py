"""Backpressure and bursts, against the real server.

Sending: a tight ``notify`` loop (one thread, eight threads) waits for room in a full send
queue instead of raising SendQueueFull; SendQueueFull comes only after ``send_wait`` (server
black-holed), at once with ``send_wait=0``, on the engine thread, and from ``AsyncHub``
(which must not block its loop).

Receiving: a burst queued in the server is delivered whole to a consumer that keeps up on
average (the engine pauses reading while its queue is half full), and a stuck consumer is
still bounded and told OVERFLOW once the pause is over.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import psycopg
import pytest
from hubkit import HubPool, wait_until, within

import pghub
from pghub import Action, Event
from pghub.testing import FaultProxy

TOPIC = "bp"

# --- sending ----------------------------------------------------------------------------------


def _send(hub: pghub.Hub, start: int, count: int) -> concurrent.futures.Future[bool]:
    last: concurrent.futures.Future[bool] | None = None
    for i in range(start, start + count):
        last = hub.notify(TOPIC, [i])
    assert last is not None
    return last


def _fill(hub: pghub.Hub | pghub.AsyncHub, start: int) -> None:
    """Notify until the send queue refuses (the server is black-holed)."""
    for i in range(start, start + 10):
        hub.notify(TOPIC, [i])


def test_a_tight_notify_loop_from_one_thread_never_raises(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    last = _send(hub, 0, 200_000)  # failed before: SendQueueFull about 65 times in 200k
    assert last.result(60) is True
    wait_until(lambda: hub.stats().notifies == 200_000, 60, "every notify committed")
    assert hub.stats().notify_failures == 0


def test_a_tight_notify_loop_from_eight_threads_never_raises(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    errors: list[BaseException] = []
    lasts: list[concurrent.futures.Future[bool]] = []

    def sender(n: int) -> None:
        try:
            lasts.append(_send(hub, n * 25_000, 25_000))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert [f.result(60) for f in lasts] == [True] * 8
    wait_until(lambda: hub.stats().notifies == 200_000, 60, "every notify committed")


def test_a_small_send_queue_paces_the_caller_instead_of_raising(dsn: str, hubs: HubPool) -> None:
    # The same path, certain to be taken: 20k notifies through a queue of 100.
    hub = hubs.started(dsn, send_queue_size=100)
    assert _send(hub, 0, 20_000).result(30) is True
    assert hub.stats().send_queue_high_water <= 100


def test_send_queue_full_is_raised_after_send_wait_when_the_server_is_away(
    dsn: str, hubs: HubPool, proxy: FaultProxy
) -> None:
    hub = hubs.started(proxy.dsn(dsn), send_queue_size=3, send_wait=0.5, liveness_timeout=60)
    proxy.blackhole()
    answers: list[bool] = []
    for i in range(3):  # the first may be in flight; then the queue fills
        hub.notify(TOPIC, [i], confirm=answers.append)
    began = time.monotonic()
    with pytest.raises(pghub.SendQueueFull, match=r"send_wait=0\.5"):
        _fill(hub, 3)  # one may have gone out before the black hole: room for one more
    waited = time.monotonic() - began
    assert 0.5 <= waited < 3.0, waited
    proxy.resume()


def test_send_wait_0_raises_at_once(dsn: str, hubs: HubPool, proxy: FaultProxy) -> None:
    hub = hubs.started(proxy.dsn(dsn), send_queue_size=2, send_wait=0, liveness_timeout=60)
    proxy.blackhole()
    began = time.monotonic()
    with pytest.raises(pghub.SendQueueFull):
        _fill(hub, 0)
    assert time.monotonic() - began < 0.5
    proxy.resume()


def test_a_notify_from_the_engine_thread_never_waits(
    dsn: str, hubs: HubPool, proxy: FaultProxy
) -> None:
    # A confirm callback runs on the engine thread: waiting there would wait for itself.
    hub = hubs.started(proxy.dsn(dsn), send_queue_size=2, send_wait=30, liveness_timeout=60)
    raised: list[BaseException] = []
    done = threading.Event()

    def confirm(ok: bool) -> None:
        began = time.monotonic()
        try:
            for i in range(10):
                hub.notify(TOPIC, [100 + i])
        except pghub.SendQueueFull as exc:
            raised.append(exc)
        assert time.monotonic() - began < 1.0
        done.set()

    hub.notify(TOPIC, [0], confirm=confirm).result(10)
    assert done.wait(10)
    assert len(raised) == 1
    within(20, hub.stop)


def test_async_notify_raises_at_once_and_never_blocks_the_loop(dsn: str, proxy: FaultProxy) -> None:
    async def main() -> float:
        hub = pghub.AsyncHub(proxy.dsn(dsn), send_queue_size=2, send_wait=30, liveness_timeout=60)
        await asyncio.wait_for(hub.start(), 10)
        try:
            proxy.blackhole()
            began = time.monotonic()
            with pytest.raises(pghub.SendQueueFull):
                _fill(hub, 0)
            return time.monotonic() - began
        finally:
            proxy.resume()
            await asyncio.wait_for(hub.stop(), 20)

    assert asyncio.run(main()) < 1.0


# --- receiving a burst ------------------------------------------------------------------------


def _queue_in_server(conn: psycopg.Connection[Any], count: int, batch: int = 100_000) -> None:
    """``count`` distinct small events on TOPIC, committed in batches (e1, e2, ...)."""
    for start in range(0, count, batch):
        conn.execute(
            "SELECT pg_notify(%s, 'e' || i) FROM generate_series(%s::int, %s::int) AS i",
            (TOPIC, start, min(count, start + batch) - 1),
        )
        conn.commit()


class _Counter:
    def __init__(self) -> None:
        self.events = 0
        self.overflows: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.topic is not None:
            self.events += 1  # one consumer thread: no lock needed
        elif event.value.action is Action.OVERFLOW:
            self.overflows.append(event.value.lost)


def _drain(dsn: str, hubs: HubPool, count: int, **options: Any) -> _Counter:
    counter = _Counter()
    hub = hubs.started(dsn, **options)
    consumer = hub.consumer(counter, TOPIC)
    assert consumer.wait_subscribed(10)
    with psycopg.connect(dsn) as conn:
        _queue_in_server(conn, count)
    wait_until(lambda: counter.events + sum(counter.overflows) >= count, 180, "the drain")
    time.sleep(0.2)  # nothing more may come
    return counter


@pytest.mark.slow
def test_a_consumer_that_keeps_up_loses_nothing_in_a_burst(dsn: str, hubs: HubPool) -> None:
    # Failed before: drop_oldest overflowed a small queue while the engine read at full speed.
    counter = _drain(dsn, hubs, 300_000, queue_size=2000)
    assert counter.overflows == []
    assert counter.events == 300_000


@pytest.mark.slow
def test_a_million_queued_events_reach_a_trivial_consumer_with_default_settings(
    dsn: str, hubs: HubPool
) -> None:
    counter = _drain(dsn, hubs, 1_000_000)
    assert counter.overflows == []
    assert counter.events == 1_000_000


def test_a_stuck_consumer_is_still_bounded_and_told_overflow(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn, overflow_pause=0.5)
    release = threading.Event()
    seen: list[Event] = []

    def stuck(event: Event) -> None:
        seen.append(event)
        if event.topic is not None and not release.is_set():
            release.wait(30)  # stuck on its first event until the test lets go

    consumer = hub.consumer(stuck, TOPIC, queue_size=100)
    assert consumer.wait_subscribed(10)
    began = time.monotonic()
    with psycopg.connect(dsn) as conn:
        _queue_in_server(conn, 5000)
    wait_until(lambda: hub.stats().overflow_drops > 0, 10, "drops once the pause is over")
    assert time.monotonic() - began < 5.0
    assert hub.stats().queue_high_water <= 100
    wait_until(lambda: hub.stats().events_received >= 5000, 10, "read on past the stuck one")
    release.set()
    wait_until(
        lambda: any(e.topic is None and e.value.action is Action.OVERFLOW for e in seen),
        10,
        "OVERFLOW",
    )
