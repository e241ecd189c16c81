"""Consumer key filters: ``keys=[[42], [7, 1]]`` on ``consumer()`` and ``subscription()`` of
both hubs. An event reaches a filtered consumer when its key equals one of the keys;
advisories always do. The router filters before it queues (or copies) anything for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from corekit import Box
from hubkit import AsyncRecorder, HubPool, Recorder, send_raw, wait_until

import pghub
from pghub import Action, Event
from pghub._core import Counters
from pghub._mailbox import Mailbox
from pghub._router import Router
from pghub.wire import encode_payload


@pytest.fixture
def hubs() -> Iterator[HubPool]:
    pool = HubPool()
    yield pool
    pool.stop_all()


KEYS = [[42], [7, 1]]
SENT = [(42,), (7,), (7, 1), (1, 7), (), (42, 0), (42,)]


def send_all(conn: psycopg.Connection[Any], channel: str) -> None:
    """An event for each key of SENT, in one transaction (so delivered in one go; each value
    its own, or PostgreSQL would fold identical notifications into one)."""
    with conn.transaction():
        for n, key in enumerate(SENT):
            send_raw(conn, channel, encode_payload(key, {"n": n}))


# --- on a real hub --------------------------------------------------------------------------------


def test_a_filtered_consumer_gets_only_its_keys_and_every_advisory(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    filtered, everything = Recorder("filtered"), Recorder("everything")
    hub.consumer(filtered, "orders", keys=KEYS)
    hub.consumer(everything, "orders")
    filtered.wait_advisory(Action.SUBSCRIBE, "orders")
    everything.wait_advisory(Action.SUBSCRIBE, "orders")
    send_all(conn, "orders")
    assert [e.key for e in everything.wait_events(len(SENT))] == SENT
    got = filtered.wait_events(3)
    assert [e.key for e in got] == [(42,), (7, 1), (42,)]
    # Each has its own copy of a mutable value, the filtered one included.
    first = next(e for e in everything.events() if e.key == (42,))
    assert got[0].value == first.value
    assert got[0].value is not first.value
    assert filtered.actions() == [Action.CONNECT, Action.SUBSCRIBE]
    # What the filter kept out is not delivered, nor dropped, nor counted as lost.
    wait_until(lambda: hub.stats().events_delivered == len(SENT) + 3, what="deliveries counted")
    stats = hub.stats()
    assert stats.events_received == len(SENT)
    assert stats.overflow_drops == 0


def test_a_filter_is_checked_when_the_consumer_is_made(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    consumer = hub.consumer(Recorder(), keys=((n, 1) for n in range(3)))
    assert consumer.keys == frozenset({(0, 1), (1, 1), (2, 1)})
    assert hub.consumer(Recorder()).keys is None
    assert hub.consumer(Recorder(), keys=[]).keys == frozenset()  # advisories only
    for wrong in ([42], "42", [[True]], [[2**63]], [["1"]], [42, 7]):
        with pytest.raises(pghub.InvalidKey):
            hub.consumer(Recorder(), "t", keys=wrong)  # type: ignore[arg-type]
    with pytest.raises(pghub.InvalidKey, match=r"keys=\[\[42\]\]"):
        hub.consumer(Recorder(), keys=[42])  # type: ignore[list-item]
    assert hub.stats().consumers == 3  # none made for the refused filters
    hub.stop()


def test_a_filtered_subscription(dsn: str, conn: psycopg.Connection[Any], hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    with hub.subscription("rows", keys=[[7, 1]], timeout=5) as sub:
        send_all(conn, "rows")
        assert next(sub).key == (7, 1)
        with pytest.raises(TimeoutError):
            sub.get(timeout=0.3)


def test_filters_on_the_async_hub(dsn: str) -> None:
    async def scenario() -> tuple[list[Event], list[Event]]:
        async with pghub.AsyncHub(dsn) as hub:
            rec = AsyncRecorder()
            hub.consumer(rec, "arows", keys=[[42]])
            await rec.wait_advisory(Action.SUBSCRIBE, "arows")
            async with hub.subscription("arows", keys=KEYS) as sub:
                with psycopg.connect(dsn, autocommit=True) as other:
                    send_all(other, "arows")
                read = [await sub.__anext__() for _ in range(3)]
            return await rec.wait_events(2), read

    consumer_got, subscription_read = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert [e.key for e in consumer_got] == [(42,), (42,)]
    assert [e.key for e in subscription_read] == [(42,), (7, 1), (42,)]


def test_overflow_counts_only_what_passed_the_filter(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    release = threading.Event()
    rec = Recorder(then=lambda e: release.wait(10) if e.advisory is None else None)
    hub.consumer(rec, "full", keys=[[1]], queue_size=2)
    rec.wait_advisory(Action.SUBSCRIBE, "full")
    send_raw(conn, "full", "e1")  # the callback holds on this one
    rec.wait_events(1)
    with conn.transaction():
        for n in range(200):
            send_raw(conn, "full", f"e{2 + n % 5}:{n}")  # filtered out: never queued
        for n in range(5):
            send_raw(conn, "full", f"e1:{n}")
    release.set()
    overflow = rec.wait_advisory(Action.OVERFLOW)
    assert overflow.lost == 3  # 5 passed, 2 fit
    assert len(rec.wait_events(3)) == 3


# --- the router ----------------------------------------------------------------------------------


class _Note:
    def __init__(self, channel: str, payload: str) -> None:
        self.relname = channel.encode()
        self.extra = payload.encode()


def _filtered(keys: set[tuple[int, ...]] | None) -> Mailbox:
    return Mailbox(100, "drop_oldest", lambda: None, keys=None if keys is None else frozenset(keys))


def test_router_filters_per_mailbox_and_copies_only_what_it_delivers() -> None:
    first, second, third = _filtered({(2,)}), Box("all"), _filtered({(1,), (3,)})
    counters = Counters()
    router = Router({"a": (first, second, third)}, counters, name="t", logger=_log())
    router.route([_Note("a", encode_payload([n], {"n": n})) for n in (1, 2, 3, 4)])
    assert [e.key for e in first.take()[0]] == [(2,)]
    assert [e.key for e in second.events()] == [(1,), (2,), (3,), (4,)]
    theirs = list(third.take()[0])
    assert [e.key for e in theirs] == [(1,), (3,)]
    # The first mailbox has the decoded values; the others each a copy of their own.
    mine = {e.key: e.value for e in second.events()}
    assert all(e.value == mine[e.key] and e.value is not mine[e.key] for e in theirs)
    assert counters.events_received == 4


def test_router_with_only_filtered_out_mailboxes_queues_nothing() -> None:
    woken: list[int] = []
    box = Mailbox(10, "drop_oldest", lambda: woken.append(1), keys=frozenset({(9,)}))
    router = Router({"a": (box,)}, Counters(), name="t", logger=_log())
    router.route([_Note("a", encode_payload([1])), _Note("b", encode_payload([9]))])
    assert len(box) == 0
    assert woken == []  # not even woken


def _log() -> logging.Logger:
    return logging.getLogger("pghub.test")
