"""Consumers without a thread of their own: ``run="pool"`` and ``run="inline"``.

The pool's own logic first, with plain members and no server: a member's turns never overlap
and none is lost, a worker stuck in a turn is replaced while others wait, extra workers end
when idle, the cap holds, and an idle pool's monitor sleeps. Then against the real server:
order and one call at a time per pooled consumer, a blocked pooled callback delays the others
by only milliseconds, stop/join/close/OVERFLOW with pooled and inline consumers, a callback
that stops the hub, and the rules of the engine thread (inline callbacks: calls that would
wait for that thread answer at once or raise).
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hubkit import HubPool, Recorder, run, send_raw, subscribed, wait_until, within

import pghub
from pghub import Action, Event
from pghub import _pool as pool_module
from pghub._log import HubLog
from pghub._pool import CallbackPool, State, Turn
from pghub.wire import encode_payload

LOG = HubLog(logging.getLogger("pghub.test"), "test")
BLOCK = 3.0  # seconds a blocking callback holds its turn
MEDIAN_BOUND = 0.05  # seconds: "a few milliseconds", with room for a loaded two-core machine


# --- the pool alone ----------------------------------------------------------------------------


class _Member:
    """A pool member that counts what it was given and notes overlapping turns."""

    def __init__(self, pool: CallbackPool, block: threading.Event | None = None) -> None:
        self.pool = pool
        self.pool_state = State.IDLE
        self.pool_runner: threading.Thread | None = None
        self.lock = threading.Lock()
        self.pending = 0  # submitted, not yet taken
        self.taken = 0
        self.overlaps = 0
        self.in_turn = False
        self.block = block
        self.blocked = threading.Event()
        self.threads: set[str] = set()
        pool.add(self)

    def put(self, n: int = 1) -> None:
        with self.lock:
            self.pending += n
        self.pool.submit(self)

    def pool_turn(self, limit: int | None) -> Turn:
        if self.in_turn:
            self.overlaps += 1
        self.in_turn = True
        self.threads.add(threading.current_thread().name)
        try:
            if self.block is not None and not self.blocked.is_set():
                self.blocked.set()
                self.block.wait(BLOCK)
            with self.lock:
                self.taken += self.pending
                self.pending = 0
            return Turn.IDLE
        finally:
            self.in_turn = False


@pytest.fixture
def pool() -> Iterator[CallbackPool]:
    p = CallbackPool("t", 8, LOG)
    yield p
    _retire(p)


def _retire(p: CallbackPool) -> None:
    """Its members are gone: its threads end."""
    with p._lock:
        p._members = 0
        p._work.notify_all()
        p._watch.notify_all()


def test_turns_of_a_member_never_overlap_and_none_is_lost(pool: CallbackPool) -> None:
    members = [_Member(pool) for _ in range(20)]

    def feed(offset: int) -> None:
        for i in range(2000):
            members[(i + offset) % len(members)].put()

    feeders = [threading.Thread(target=feed, args=(k,)) for k in range(4)]
    for t in feeders:
        t.start()
    for t in feeders:
        t.join(10)
    wait_until(lambda: sum(m.taken for m in members) == 8000, 10, "every submit delivered")
    assert all(m.overlaps == 0 for m in members)
    wait_until(lambda: all(m.pool_state is State.IDLE for m in members), 5, "all idle")


def test_a_stuck_worker_is_replaced_while_others_wait(pool: CallbackPool) -> None:
    release = threading.Event()
    blocker = _Member(pool, block=release)
    others = [_Member(pool) for _ in range(3)]
    try:
        blocker.put()
        assert blocker.blocked.wait(5)
        started = time.monotonic()
        for m in others:
            m.put()
        wait_until(lambda: all(m.taken == 1 for m in others), 2, "others served")
        assert time.monotonic() - started < 0.5
        assert pool.threads == 2  # one more, not one per waiting member
        assert not any(m.threads & blocker.threads for m in others)
    finally:
        release.set()


class _Computer(_Member):
    """A member whose first turn computes (holds the GIL, a pure Python loop) for BLOCK/2 s."""

    def pool_turn(self, limit: int | None) -> Turn:
        if not self.blocked.is_set():
            self.blocked.set()
            self.threads.add(threading.current_thread().name)
            until = time.monotonic() + BLOCK / 2
            while time.monotonic() < until:
                sum(range(100))
        return super().pool_turn(limit)


def test_a_worker_computing_in_one_long_turn_gets_a_worker_beside_it(pool: CallbackPool) -> None:
    computer = _Computer(pool)
    others = [_Member(pool) for _ in range(3)]
    computer.put()
    assert computer.blocked.wait(5)
    started = time.monotonic()
    for m in others:
        m.put()
    wait_until(lambda: all(m.taken == 1 for m in others), BLOCK, "others served")
    # COMPUTE_STALL (0.1 s) and a GIL shared with the computer, not its whole 1.5 s turn.
    assert time.monotonic() - started < 0.6
    assert not any(m.threads & computer.threads for m in others)
    wait_until(lambda: computer.taken == 1, BLOCK, "the computer's turn ends")


def test_extra_workers_end_when_idle_and_the_monitor_sleeps(
    pool: CallbackPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "IDLE_EXIT", 0.2)
    release = threading.Event()
    blocker = _Member(pool, block=release)
    other = _Member(pool)
    blocker.put()
    assert blocker.blocked.wait(5)
    other.put()
    wait_until(lambda: other.taken == 1, 2, "other served")
    assert pool.threads == 2
    release.set()
    wait_until(lambda: pool.threads == 1, 5, "the extra worker ended")
    wait_until(lambda: not pool._watching, 5, "the monitor sleeps")


def test_the_monitor_sleeps_while_a_worker_blocks_with_nobody_waiting(pool: CallbackPool) -> None:
    release = threading.Event()
    blocker = _Member(pool, block=release)
    try:
        blocker.put()
        assert blocker.blocked.wait(5)
        wait_until(lambda: not pool._watching, 5, "the monitor sleeps")
        other = _Member(pool)
        other.put()  # finds the one worker busy: wakes the monitor, which adds a worker
        wait_until(lambda: other.taken == 1, 2, "other served")
        assert pool.threads == 2
    finally:
        release.set()


def test_the_cap_holds_and_the_waiting_member_is_served_once_a_worker_is_free() -> None:
    capped = CallbackPool("capped", 1, LOG)
    release = threading.Event()
    blocker = _Member(capped, block=release)
    other = _Member(capped)
    blocker.put()
    assert blocker.blocked.wait(5)
    other.put()
    time.sleep(0.2)
    assert capped.threads == 1
    assert other.taken == 0  # at the cap it waits for the one worker
    release.set()
    wait_until(lambda: other.taken == 1, 5, "served after the blocked turn")
    _retire(capped)


# --- pooled consumers against the server --------------------------------------------------------


class _Checked:
    """A callback that notes its events' keys and fails on a call while another runs."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.busy = False
        self.overlaps = 0
        self.threads: set[str] = set()
        self.done = threading.Event()
        self.expected = 0

    def __call__(self, event: Event) -> None:
        if self.busy:
            self.overlaps += 1
        self.busy = True
        if event.topic is not None:
            self.threads.add(threading.current_thread().name)
            self.keys.append(event.key[0])
            if len(self.keys) >= self.expected:
                self.done.set()
            if event.key[0] % 100 == 0:
                time.sleep(0)  # let another thread run now and then, if one would
        self.busy = False


@pytest.mark.parametrize("mode", ["pool", "inline"])
def test_pooled_consumers_get_every_event_in_order_one_call_at_a_time(
    dsn: str, hubs: HubPool, mode: str
) -> None:
    hub = hubs.started(dsn, name="pool-order")
    callbacks = [_Checked() for _ in range(20)]
    consumers = [hub.consumer(c, "pool_order", run=mode) for c in callbacks]  # type: ignore[arg-type]
    for consumer in consumers:
        assert consumer.wait_subscribed(10)
    n = 3000
    for c in callbacks:
        c.expected = n
    for first in range(0, n, 100):
        hub.notify_many([("pool_order", [k], {"k": k}) for k in range(first, first + 100)])
    for c in callbacks:
        assert c.done.wait(20), f"{len(c.keys)} of {n}"
    for c in callbacks:
        assert c.keys == list(range(n))
        assert c.overlaps == 0
    names = {name for c in callbacks for name in c.threads}
    if mode == "pool":  # a few workers, no thread per consumer
        assert all(name.startswith("pghub-pool-order-pool-") for name in names), names
        assert len(names) <= 4, names
    else:  # the engine thread (events that came behind an advisory: the pool)
        assert "pghub-pool-order" in names, names
    stats = hub.stats()
    assert stats.events_delivered >= 20 * n
    hub.stop(wait=True)
    assert hub._pool is not None
    wait_until(lambda: hub._pool is not None and hub._pool.threads == 0, 5, "pool threads end")


def test_a_blocked_pooled_callback_delays_no_other_pooled_consumer(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    release = threading.Event()
    blocker_got: list[int] = []
    arrived: list[dict[int, float]] = [{} for _ in range(3)]
    done = [threading.Event() for _ in range(3)]
    events = 20

    def blocker(event: Event) -> None:
        if event.topic is None:
            return
        blocker_got.append(event.key[0])
        if len(blocker_got) == 1:
            release.wait(BLOCK)

    def timed(i: int) -> Any:
        def on_event(event: Event) -> None:
            if event.topic is not None:
                arrived[i][event.key[0]] = time.monotonic()
                if len(arrived[i]) == events:
                    done[i].set()

        return on_event

    consumers = [hub.consumer(blocker, "pool_iso", run="pool")]
    consumers += [hub.consumer(timed(i), "pool_iso", run="pool") for i in range(3)]
    for consumer in consumers:
        assert consumer.wait_subscribed(10)
    sent: dict[int, float] = {}
    started = time.monotonic()
    for n in range(events):
        send_raw(conn, "pool_iso", encode_payload([n], {"n": n}))
        sent[n] = time.monotonic()
        time.sleep(0.01)
    for d in done:
        assert d.wait(BLOCK), "an event held up behind the blocked callback"
    assert time.monotonic() - started < BLOCK
    assert blocker_got == [0]
    for got in arrived:
        delays = [max(0.0, got[n] - sent[n]) for n in range(events)]
        assert statistics.median(delays) < MEDIAN_BOUND, delays
        assert max(delays) < BLOCK / 10, delays
    release.set()
    within(10, hub.stop, wait=True)
    assert blocker_got == list(range(events))  # the blocked one keeps its order


@pytest.mark.parametrize("mode", ["pool", "inline"])
def test_stop_gives_every_pooled_consumer_its_stop_and_join_waits_for_it(
    dsn: str, hubs: HubPool, mode: str
) -> None:
    hub = hubs.started(dsn)
    recorders = [Recorder(f"r{i}") for i in range(5)]
    consumers = [hub.consumer(r, "pool_stop", run=mode) for r in recorders]  # type: ignore[arg-type]
    for r in recorders:
        subscribed(r, "pool_stop")
    hub.notify("pool_stop", [1], {"a": 1}).result(10)
    for r in recorders:
        r.wait_events(1)
    within(10, hub.stop, wait=True)
    for consumer, r in zip(consumers, recorders, strict=True):
        within(5, consumer.join, 5)
        r.assert_final_last(Action.STOP)
        assert consumer.finished


@pytest.mark.parametrize("mode", ["pool", "inline"])
def test_close_is_the_last_thing_a_pooled_consumer_receives(
    dsn: str, hubs: HubPool, mode: str
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec, "pool_close", run=mode)  # type: ignore[arg-type]
    subscribed(rec, "pool_close")
    for k in range(50):
        hub.notify("pool_close", [k])
    consumer.close()
    rec.wait_final()
    within(5, consumer.join, 5)
    rec.assert_final_last(Action.CLOSE)
    hub.notify("pool_close", [99]).result(10)
    time.sleep(0.1)
    rec.assert_final_last(Action.CLOSE)


@pytest.mark.parametrize("cap", [1, 32])
def test_a_pooled_callback_that_stops_the_hub_does_not_wait_for_itself(
    dsn: str, hubs: HubPool, cap: int
) -> None:
    hub = hubs.started(dsn, pool_max_threads=cap)
    stopped = threading.Event()
    others = [Recorder(f"o{i}") for i in range(3)]

    def stopper(event: Event) -> None:
        if event.topic is not None:
            hub.stop(wait=True)
            stopped.set()

    for r in others:
        hub.consumer(r, "pool_stopper", run="pool")
        subscribed(r, "pool_stopper")
    assert hub.consumer(stopper, "pool_stopper", run="pool").wait_subscribed(10)
    hub.notify("pool_stopper", [1])
    assert stopped.wait(10), "stop(wait=True) from a pooled callback hung"
    for r in others:
        r.wait_final(10)
        r.assert_final_last(Action.STOP)
    assert hub.join(5)


def test_a_huge_backlog_takes_turns_with_the_other_consumers(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn, pool_max_threads=1)  # one worker: only turns share it
    heavy_got: list[int] = []
    light_at: list[int] = []
    release = threading.Event()

    def heavy(event: Event) -> None:
        if event.topic is not None:
            release.wait(BLOCK)  # the first holds the worker while the backlog builds up
            heavy_got.append(event.key[0])
            time.sleep(0.0002)

    def light(event: Event) -> None:
        if event.topic is not None:
            light_at.append(len(heavy_got))

    consumers = [hub.consumer(heavy, "pool_fair", run="pool", queue_size=20_000)]
    consumers.append(hub.consumer(light, "pool_fair_light", run="pool"))
    for consumer in consumers:
        assert consumer.wait_subscribed(10)
    hub.notify("pool_fair", [0]).result(10)
    wait_until(lambda: consumers[0].pool_state is State.RUNNING, 5, "heavy in its turn")  # type: ignore[attr-defined]
    hub.notify_many([("pool_fair", [k], None) for k in range(1, 3000)]).result(10)
    wait_until(lambda: len(consumers[0].mailbox) == 2999, 10, "heavy's backlog queued")
    release.set()
    wait_until(lambda: len(heavy_got) >= 10, 10, "heavy under way")
    sent_at = len(heavy_got)
    hub.notify("pool_fair_light", [1])
    wait_until(lambda: bool(light_at), 10, "light served")
    # Behind the rest of heavy's turn, and at most one more (256 events each), not behind
    # all of the 3000 it had queued.
    assert light_at[0] - sent_at <= 2 * 256, (sent_at, light_at)
    wait_until(lambda: len(heavy_got) == 3000, 20, "heavy done")
    assert heavy_got == list(range(3000))


def test_a_stuck_pooled_consumer_overflows_and_hears_how_many_it_lost(
    dsn: str, hubs: HubPool
) -> None:
    hub = hubs.started(dsn, overflow_pause=0)
    release = threading.Event()
    got: list[Event] = []

    def stuck(event: Event) -> None:
        got.append(event)
        if event.topic is not None and len([e for e in got if e.topic]) == 1:
            release.wait(BLOCK)

    consumer = hub.consumer(stuck, "pool_over", run="pool", queue_size=10)
    assert consumer.wait_subscribed(10)
    hub.notify("pool_over", [0]).result(10)
    wait_until(lambda: any(e.topic for e in got), 5, "the first event")
    hub.notify_many([("pool_over", [k], None) for k in range(1, 101)]).result(10)
    wait_until(lambda: hub.stats().overflow_drops > 0, 5, "drops")
    release.set()
    wait_until(lambda: any(e.topic is None and e.value.action is Action.OVERFLOW for e in got), 5)
    lost = next(e.value.lost for e in got if e.topic is None and e.value.action is Action.OVERFLOW)
    keys = [e.key[0] for e in got if e.topic]
    assert lost == hub.stats().overflow_drops == 100 - (len(keys) - 1)
    assert keys == sorted(keys)


# --- inline: the engine thread ---------------------------------------------------------------


def test_inline_callbacks_run_on_the_engine_thread_and_must_not_wait_on_it(
    dsn: str, hubs: HubPool
) -> None:
    hub = hubs.started(dsn, name="inl")
    seen: dict[str, Any] = {}
    ready = threading.Event()

    told = threading.Event()

    def inline(event: Event) -> None:
        if event.topic is None:
            if event.value.action is Action.SUBSCRIBE:
                told.set()  # delivered on the pool: advisories are
            return
        seen["thread"] = threading.current_thread().name
        start = time.monotonic()
        seen["subscribed"] = consumer.wait_subscribed(5)  # answers at once here
        consumer.join(5)  # at once: its own turn
        other.join(5)  # at once: the engine thread waits for nobody
        seen["joined"] = hub.join(5)  # at once: False, the hub runs
        try:
            with hub.subscription("pool_inline_sub", timeout=5):
                pass
        except RuntimeError as exc:
            seen["subscription"] = str(exc)
        seen["notified"] = hub.notify("pool_inline_echo", [1])  # queued, not waited for
        try:
            hub.notify("pool_inline_echo", [2]).result(5)
        except RuntimeError as exc:
            seen["result"] = str(exc)
        seen["waited"] = time.monotonic() - start
        ready.set()

    echo = Recorder("echo")
    hub.consumer(echo, "pool_inline_echo")
    subscribed(echo, "pool_inline_echo")
    other = hub.consumer(Recorder("other"), "pool_inline")
    consumer = hub.consumer(inline, "pool_inline", run="inline")
    assert told.wait(10)
    wait_until(lambda: consumer.pool_state is State.IDLE, 5, "its advisory's turn over")  # type: ignore[attr-defined]
    hub.notify("pool_inline", [1])
    assert ready.wait(10)
    assert seen["thread"] == "pghub-inl"
    assert seen["subscribed"] is True
    assert seen["joined"] is False
    assert "engine thread" in seen["subscription"]
    assert seen["waited"] < 1.0
    assert "engine thread" in seen["result"]
    echo.wait_events(2)
    assert seen["notified"].result(5) is True


def test_an_inline_callback_that_stops_the_hub_does_not_deadlock(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    stopped = threading.Event()

    def stopper(event: Event) -> None:
        if event.topic is not None:
            hub.stop(wait=True)  # on the engine thread: does not wait
            stopped.set()

    hub.consumer(rec, "pool_inline_stop", run="inline")
    assert hub.consumer(stopper, "pool_inline_stop", run="inline").wait_subscribed(10)
    subscribed(rec, "pool_inline_stop")
    hub.notify("pool_inline_stop", [1])
    assert stopped.wait(10)
    assert hub.join(10)
    rec.wait_final(5)
    rec.assert_final_last(Action.STOP)


# --- what is refused ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pool", "inline"])
def test_durable_consumers_refuse_pool_and_inline(dsn: str, hubs: HubPool, mode: str) -> None:
    hub = hubs.make(dsn)
    with pytest.raises(ValueError, match="durable"):
        hub.consumer(lambda e: None, "x", durable="d", run=mode)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="durable"):
        hub.consumer(lambda e: None, "x", since="earliest", run=mode)  # type: ignore[arg-type]


def test_an_unknown_run_is_refused(dsn: str, hubs: HubPool) -> None:
    hub = hubs.make(dsn)
    with pytest.raises(ValueError, match="run must be one of"):
        hub.consumer(lambda e: None, "x", run="fiber")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run must be one of"):
        hub.consumer(lambda e: None, "x", run="task")


def test_the_async_hub_runs_callbacks_as_tasks_only(dsn: str) -> None:
    async def main() -> None:
        hub = pghub.AsyncHub(dsn)
        for mode in ("pool", "inline", "thread"):
            with pytest.raises(ValueError, match="run must be one of"):
                hub.consumer(lambda e: None, "x", run=mode)  # type: ignore[arg-type]
        hub.consumer(lambda e: None, "x", run="task").close()
        await hub.stop()

    run(main(), timeout=30)


def test_pool_max_threads_is_checked() -> None:
    with pytest.raises(ValueError, match="pool_max_threads"):
        pghub.Hub("host=127.0.0.1", pool_max_threads=0)


@pytest.mark.parametrize("mode", ["pool", "inline"])
def test_a_failed_resync_of_a_pooled_consumer_is_tried_again_without_events(
    dsn: str, hubs: HubPool, mode: str
) -> None:
    hub = hubs.started(dsn)
    calls: list[frozenset[str]] = []

    def on_resync(topics: frozenset[str]) -> None:
        calls.append(topics)
        if len(calls) == 1:
            raise RuntimeError("the first resync fails")

    hub.consumer(lambda e: None, "pool_resync", run=mode, on_resync=on_resync)  # type: ignore[arg-type]
    wait_until(lambda: len(calls) >= 2, 10, "the resync tried again")
    assert calls[:2] == [frozenset({"pool_resync"})] * 2
    assert hub.stats().callback_errors == 1


# --- fork ----------------------------------------------------------------------------------------


def test_a_forked_child_of_a_hub_with_pooled_consumers_is_refused_and_the_parent_goes_on(
    dsn: str, hubs: HubPool
) -> None:
    from test_hub_fork import in_child, outcome

    hub = hubs.started(dsn, name="poolfork")
    rec = Recorder()
    consumer = hub.consumer(rec, "pool_fork", run="pool")
    inline = Recorder("inline")
    hub.consumer(inline, "pool_fork", run="inline")
    subscribed(rec, "pool_fork")
    subscribed(inline, "pool_fork")

    def child() -> dict[str, Any]:
        return {
            "pool": outcome(lambda: hub.consumer(lambda e: None, "pool_fork", run="pool")),
            "inline": outcome(lambda: hub.consumer(lambda e: None, "pool_fork", run="inline")),
            "close": outcome(consumer.close),
            "stop": outcome(hub.stop),
        }

    report = in_child(child)
    for call, said in report.items():
        assert said.startswith("HubForked: "), f"{call} in the child: {said}"
    hub.notify("pool_fork", [3])
    assert [e.key for e in rec.wait_events(1)] == [(3,)]
    assert [e.key for e in inline.wait_events(1)] == [(3,)]


def test_a_hub_started_in_a_forked_child_runs_pooled_consumers_there(
    dsn: str, hubs: HubPool
) -> None:
    from test_hub_fork import in_child, outcome

    hub = hubs.make(dsn, name="poolprefork")

    def child() -> dict[str, Any]:
        got = threading.Event()
        ready = threading.Event()

        def on_event(event: Event) -> None:
            advisory = event.advisory
            if advisory is not None and advisory.action is Action.SUBSCRIBE:
                ready.set()
            elif event.key == (7,):
                got.set()

        report: dict[str, Any] = {"start": outcome(hub.start)}
        hub.consumer(on_event, "pool_prefork", run="pool")
        report["subscribed"] = ready.wait(10)
        hub.notify("pool_prefork", [7])
        report["heard"] = got.wait(10)
        report["stop"] = outcome(hub.stop)
        return report

    assert in_child(child) == {
        "start": "returned",
        "subscribed": True,
        "heard": True,
        "stop": "returned",
    }
