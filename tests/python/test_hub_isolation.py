"""Consumers are apart: a blocked callback holds up only itself; routing is a per-event model.

Against the real server, a callback that blocks for seconds (sync: in its thread; async: an
await) delays no other consumer of the same events by more than a few milliseconds. Without a
server, the router's batching (runs of one channel, or of channels with one and the same
mailbox) gives every mailbox exactly what routing each notification on its own would, in the
server's order, each mutable value a copy of its own unless its consumer shares values
(``shared=True``: one object for all the sharing consumers).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from typing import Any

import psycopg
from hubkit import HubPool, run, send_raw
from hypothesis import given, settings
from hypothesis import strategies as st

import pghub
from pghub import Action, Event
from pghub._core import Counters
from pghub._mailbox import Mailbox
from pghub._router import Router
from pghub.wire import encode_payload

EVENTS = 20
BLOCK = 3.0  # seconds the blocking callback holds its first event
MEDIAN_BOUND = 0.05  # seconds: "a few milliseconds", with room for a loaded two-core machine


class _Timed:
    """A callback that notes when each ordinary event arrived (monotonic seconds)."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.subscribed = threading.Event()
        self.done = threading.Event()

    def __call__(self, event: Event) -> None:
        if event.topic is None:
            if event.value.action is Action.SUBSCRIBE:
                self.subscribed.set()
            return
        self.arrived[event.key[0]] = time.monotonic()
        if len(self.arrived) == EVENTS:
            self.done.set()


def _delays(timed: _Timed, sent: dict[int, float]) -> list[float]:
    return [max(0.0, timed.arrived[n] - sent[n]) for n in sorted(sent)]


def test_a_blocked_sync_callback_delays_no_other_consumer(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    release = threading.Event()
    blocked_on: list[int] = []
    blocker_got: list[int] = []

    def blocker(event: Event) -> None:
        if event.topic is None:
            return
        blocker_got.append(event.key[0])
        if not blocked_on:
            blocked_on.append(event.key[0])
            release.wait(BLOCK)  # holds its thread for seconds

    others = [_Timed() for _ in range(3)]
    assert hub.consumer(blocker, "iso", name="blocker").wait_subscribed(10)
    for timed in others:
        hub.consumer(timed, "iso")
        assert timed.subscribed.wait(10)
    sent: dict[int, float] = {}
    started = time.monotonic()
    for n in range(EVENTS):
        send_raw(conn, "iso", encode_payload([n], {"n": n}))
        sent[n] = time.monotonic()
        time.sleep(0.01)
    for timed in others:
        assert timed.done.wait(BLOCK), "an event held up behind the blocked callback"
    assert time.monotonic() - started < BLOCK  # all of it while the blocker still blocked
    assert blocked_on == [0]
    assert blocker_got == [0]
    for timed in others:
        delays = _delays(timed, sent)
        assert statistics.median(delays) < MEDIAN_BOUND, delays
        assert max(delays) < BLOCK / 10, delays
    release.set()
    hub.stop(wait=True)
    assert blocker_got == list(range(EVENTS))  # and the blocked one keeps its order


def test_an_awaiting_async_callback_delays_no_other_consumer(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async def main() -> tuple[list[_Timed], dict[int, float], list[int]]:
        blocker_got: list[int] = []
        others = [_Timed() for _ in range(3)]

        async def blocker(event: Event) -> None:
            if event.topic is None:
                return
            blocker_got.append(event.key[0])
            if len(blocker_got) == 1:
                await asyncio.sleep(BLOCK)

        async with pghub.AsyncHub(dsn) as hub:
            hub.consumer(blocker, "iso")
            consumers = [hub.consumer(timed, "iso") for timed in others]
            for consumer in consumers:
                assert await consumer.wait_subscribed(10)
            sent: dict[int, float] = {}
            loop = asyncio.get_running_loop()
            for n in range(EVENTS):
                # The sender runs beside the loop, so that the loop is free to deliver.
                await loop.run_in_executor(
                    None, send_raw, conn, "iso", encode_payload([n], {"n": n})
                )
                sent[n] = time.monotonic()
                await asyncio.sleep(0.01)
            for timed in others:
                deadline = time.monotonic() + BLOCK
                while not timed.done.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
                assert timed.done.is_set(), "an event held up behind the awaiting callback"
            assert blocker_got == [0]
        return others, sent, blocker_got

    others, sent, blocker_got = run(main(), timeout=30)
    for timed in others:
        delays = _delays(timed, sent)
        assert statistics.median(delays) < MEDIAN_BOUND, delays
    assert blocker_got == list(range(EVENTS))


# --- routing: batches as if each notification were routed alone ---------------------------------


class _Note:
    def __init__(self, channel: str, payload: str) -> None:
        self.relname = channel.encode()
        self.extra = payload.encode()


_CHANNELS = ("a", "b", "c")
_notes = st.lists(
    st.tuples(st.sampled_from(_CHANNELS), st.integers(0, 3), st.sampled_from(["dict", "int"])),
    max_size=40,
)
# channel -> which of four mailboxes follow it (in the order the core tells them)
_routes = st.fixed_dictionaries(
    {c: st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True) for c in _CHANNELS}
)
_filters = st.lists(
    st.none() | st.frozensets(st.tuples(st.integers(0, 3)), max_size=3), min_size=4, max_size=4
)
_chunks = st.integers(1, 40)
_shares = st.lists(st.booleans(), min_size=4, max_size=4)


@given(_notes, _routes, _filters, _chunks, _shares)
@settings(max_examples=300, deadline=None)
def test_router_gives_each_mailbox_what_routing_each_notification_alone_would(
    notes: list[tuple[str, int, str]],
    routing: dict[str, list[int]],
    filters: list[frozenset[tuple[int, ...]] | None],
    chunk: int,
    shares: list[bool],
) -> None:
    boxes = [
        Mailbox(1000, "drop_oldest", lambda: None, keys=keys, shared=share)
        for keys, share in zip(filters, shares, strict=True)
    ]
    routes = {c: tuple(boxes[i] for i in routing[c]) for c in _CHANNELS}
    router = Router(routes, Counters(), name="t", logger=logging.getLogger("pghub.test"))
    payloads = [
        (c, encode_payload([k], {"k": k, "n": n} if kind == "dict" else n))
        for n, (c, k, kind) in enumerate(notes)
    ]
    for i in range(0, len(payloads), chunk):  # a socket read's worth at a time
        router.route([_Note(c, p) for c, p in payloads[i : i + chunk]])
    expected: list[list[tuple[str, tuple[int, ...], Any]]] = [[] for _ in boxes]
    for n, (c, k, kind) in enumerate(notes):
        for i in routing[c]:
            keys = filters[i]
            if keys is None or (k,) in keys:
                expected[i].append((c, (k,), {"k": k, "n": n} if kind == "dict" else n))
    got = [list(box.take()[0]) for box in boxes]
    assert [[tuple(e) for e in events] for events in got] == expected
    # A dict is held by one mailbox, or by the sharing ones only: a consumer that may change
    # its values never changes what another receives.
    holders: dict[int, set[int]] = {}
    for i, events in enumerate(got):
        for e in events:
            if isinstance(e.value, dict):
                holders.setdefault(id(e.value), set()).add(i)
    for held_by in holders.values():
        assert len(held_by) == 1 or all(shares[i] for i in held_by), held_by
    # The sharing mailboxes that got an event hold one object of it between them.
    for n, (c, k, kind) in enumerate(notes):
        if kind != "dict":
            continue
        sharing = [
            i for i in routing[c] if shares[i] and (filters[i] is None or (k,) in filters[i])
        ]
        objects = {id(e.value) for i in sharing for e in got[i] if e[2] == {"k": k, "n": n}}
        assert len(objects) == (1 if sharing else 0)


def test_shared_consumers_get_one_value_and_the_others_a_copy_each(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    got: dict[str, list[Any]] = {"s1": [], "s2": [], "p1": [], "p2": []}
    consumers = []
    for name, values in got.items():

        def keep(event: Event, values: list[Any] = values) -> None:
            if event.topic is not None:
                values.append(event.value)

        consumers.append(hub.consumer(keep, "shared", name=name, shared=name.startswith("s")))
    for consumer in consumers:
        assert consumer.wait_subscribed(10)
    for n in range(3):
        send_raw(conn, "shared", encode_payload([n], {"n": n, "nested": {"m": [n]}}))
    deadline = time.monotonic() + 10
    while any(len(v) < 3 for v in got.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(v == [{"n": n, "nested": {"m": [n]}} for n in range(3)] for v in got.values())
    for n in range(3):
        s1, s2, p1, p2 = (got[name][n] for name in ("s1", "s2", "p1", "p2"))
        assert s1 is s2
        assert len({id(s1), id(p1), id(p2)}) == 3
        assert p1["nested"] is not p2["nested"]
        assert p1["nested"] is not s1["nested"]
