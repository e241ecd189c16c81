"""AsyncHub under task cancellation: nothing leaks, nothing is lost, nothing runs twice.

Hundreds of tasks are cancelled at random points (entering a subscription, awaiting a notify,
starting the hub, inside consumer callbacks), with the server up, refusing, or absent; then
the test counts what is left: consumers (``stats().consumers``, and ``stats().mailboxes``:
those the engine still serves), LISTENs (``stats().listens - stats().unlistens`` on one
session), confirm callbacks per notify (exactly one each), and reports to the loop's
exception handler (none).

Each test runs its coroutine with ``asyncio.run`` under an ``asyncio.wait_for`` bound, and
every wait inside is bounded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable

import pytest
from hubkit import AsyncRecorder, LoopWatch, bounded, free_port, run, settle

import pghub
from pghub import Action, Event
from pghub.testing import FaultProxy

TASKS = 300
BOUND = 10.0  # seconds any one await here may take: hundreds of tasks on a shared machine


def listened(hub: pghub.AsyncHub) -> int:
    """LISTENs in effect, on a hub that has had one session."""
    s = hub.stats()
    return s.listens - s.unlistens


def open_consumers(hub: pghub.AsyncHub) -> tuple[int, int]:
    """The consumers open on the hub's side, and those its engine still delivers to."""
    s = hub.stats()
    return s.consumers, s.mailboxes


async def leftovers_settle(hub: pghub.AsyncHub, consumers: int, timeout: float = 5.0) -> None:
    """Wait until the hub and its engine hold exactly ``consumers`` consumers."""
    await settle(
        f"{consumers} consumers open",
        lambda: open_consumers(hub) == (consumers, consumers),
        lambda: open_consumers(hub),
        timeout,
    )


async def enter_and_cancel(
    hub: pghub.AsyncHub,
    topics: Callable[[int], tuple[str, ...]],
    rng: random.Random,
    longest: float = 0.03,
) -> tuple[int, int]:
    """TASKS tasks enter ``hub.subscription(...)``, each cancelled after a random delay of
    up to ``longest`` seconds.

    Returns (cancelled while entering, cancelled inside the block).
    """
    started = entered = 0

    async def enter(i: int) -> None:
        nonlocal started, entered
        started += 1
        async with hub.subscription(*topics(i)):
            entered += 1
            await asyncio.sleep(60)

    loop = asyncio.get_running_loop()
    tasks = []
    for i in range(TASKS):
        task = asyncio.create_task(enter(i))
        loop.call_later(rng.uniform(0, longest), task.cancel)
        tasks.append(task)
        if i % 10 == 9:  # tasks start over a while, so cancels meet them at every stage
            await asyncio.sleep(rng.uniform(0, 0.002))
    results = await bounded(asyncio.gather(*tasks, return_exceptions=True), BOUND)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    return started - entered, entered


def topics_of(i: int) -> tuple[str, ...]:
    """Channels shared with others (one of them with a live consumer), and one of its own."""
    return (f"t{i % 40}", f"own{i}") if i % 2 else (f"t{i % 40}",)


# --- entering a subscription ----------------------------------------------------------------


def test_cancelled_while_entering_a_subscription_on_a_connected_hub_leaves_nothing(
    dsn: str,
) -> None:
    async def main() -> None:
        watch = LoopWatch()
        keeper = AsyncRecorder("keeper")
        async with pghub.AsyncHub(dsn) as hub:
            hub.consumer(keeper, "t0")
            await keeper.wait_advisory(Action.SUBSCRIBE, "t0")
            entering, inside = await enter_and_cancel(hub, topics_of, random.Random(9), 0.004)
            assert entering > TASKS // 10, (entering, inside)  # the case under test happened
            await leftovers_settle(hub, 1)
            # Every channel only the cancelled tasks wanted is UNLISTENed again.
            await settle("only t0 listened to", lambda: listened(hub) == 1, hub.stats)
            # Nothing is routed to a cancelled task's consumer any more.
            for i in range(1, 40):
                await bounded(hub.notify(f"t{i}", [i]), BOUND)
            await bounded(hub.notify("t0", [0]), BOUND)
            assert await keeper.wait_events(1) == [Event("t0", (0,), None)]
            assert hub.stats().events_received == 1
            assert hub.stats().connects == 1
        assert hub.stats().consumers == 0
        keeper.assert_final_last(Action.STOP)
        await watch.assert_silent()

    run(main(), timeout=60)


def test_cancelled_while_entering_with_the_server_refusing_leaves_nothing(
    dsn: str, proxy: FaultProxy
) -> None:
    proxy.refuse()

    async def main() -> None:
        watch = LoopWatch()
        keeper = AsyncRecorder("keeper")
        hub = pghub.AsyncHub(
            proxy.dsn(dsn), retry_first_connect=True, reconnect_delay=0.05, reconnect_max_delay=0.1
        )
        await hub.start()
        try:
            hub.consumer(keeper, "t0")
            entering, inside = await enter_and_cancel(hub, topics_of, random.Random(10))
            assert (entering, inside) == (TASKS, 0)  # nobody can enter without the server
            await leftovers_settle(hub, 1)
            proxy.accept()
            await keeper.wait_advisory(Action.SUBSCRIBE, "t0", timeout=10)
            # The first session LISTENs to what the keeper wants and nothing else.
            assert hub.stats().listens == 1, hub.stats()
            assert hub.stats().consumers == 1
        finally:
            await bounded(hub.stop(), BOUND)
        assert hub.stats().consumers == 0
        await watch.assert_silent()

    run(main(), timeout=60)


def test_cancelled_while_entering_with_nothing_listening_leaves_nothing(dsn: str) -> None:
    async def main() -> None:
        watch = LoopWatch()
        hub = pghub.AsyncHub(
            f"host=127.0.0.1 port={free_port()} dbname=none connect_timeout=2",
            retry_first_connect=True,
            reconnect_delay=0.05,
            reconnect_max_delay=0.1,
        )
        await hub.start()
        try:
            entering, inside = await enter_and_cancel(hub, topics_of, random.Random(11))
            assert (entering, inside) == (TASKS, 0)
            await leftovers_settle(hub, 0)
        finally:
            await bounded(hub.stop(), BOUND)
        assert hub.stats().consumers == 0
        assert hub.stats().connect_failures >= 1
        await watch.assert_silent()

    run(main(), timeout=60)


def test_cancelled_while_entering_after_a_disconnect_leaves_nothing(
    dsn: str, proxy: FaultProxy
) -> None:
    async def main() -> None:
        watch = LoopWatch()
        keeper = AsyncRecorder("keeper")
        hub = pghub.AsyncHub(proxy.dsn(dsn), reconnect_delay=0.05, reconnect_max_delay=0.1)
        await bounded(hub.start(), BOUND)
        try:
            hub.consumer(keeper, "t0")
            await keeper.wait_advisory(Action.SUBSCRIBE, "t0")
            proxy.refuse()
            proxy.reset()
            await keeper.wait_advisory(Action.DISCONNECT)
            entering, inside = await enter_and_cancel(hub, topics_of, random.Random(12))
            assert (entering, inside) == (TASKS, 0)
            await leftovers_settle(hub, 1)
            before = hub.stats().listens
            proxy.accept()
            await keeper.wait_advisory(Action.RECONNECT, timeout=10)
            assert hub.stats().listens - before == 1, hub.stats()  # t0 alone
            assert hub.stats().consumers == 1
        finally:
            await bounded(hub.stop(), BOUND)
        await watch.assert_silent()

    run(main(), timeout=60)


# --- consumer tasks ---------------------------------------------------------------------------


def test_a_consumer_whose_task_is_cancelled_is_closed(dsn: str) -> None:
    async def main() -> None:
        watch = LoopWatch()
        rng = random.Random(15)

        async def slow(event: Event) -> None:
            await asyncio.sleep(rng.uniform(0, 0.002))

        async with pghub.AsyncHub(dsn) as hub:
            keeper = AsyncRecorder("keeper")
            hub.consumer(keeper, "k0")
            before = asyncio.all_tasks()
            for i in range(TASKS):
                hub.consumer(slow, f"k{i % 30}", f"mine{i}")
            # Each consumer's task, as shutdown code that cancels every task would find them.
            tasks = [t for t in asyncio.all_tasks() - before if t.get_name() == "pghub-consumer"]
            assert len(tasks) == TASKS
            await keeper.wait_advisory(Action.SUBSCRIBE, "k0")
            await settle("all subscribed", lambda: listened(hub) == 30 + TASKS, hub.stats)
            hub.notify_many([(f"k{i % 30}", [i], None) for i in range(2000)])
            for task in tasks:
                await asyncio.sleep(rng.uniform(0, 0.0005))
                task.cancel()
            await leftovers_settle(hub, 1)
            await settle("only k0 listened to", lambda: listened(hub) == 1, hub.stats)
        assert hub.stats().consumers == 0
        keeper.assert_final_last(Action.STOP)
        await watch.assert_silent()

    run(main(), timeout=60)


# --- starting ----------------------------------------------------------------------------------


def test_async_with_hub_cancelled_while_connecting_stops_the_hub(
    dsn: str, proxy: FaultProxy
) -> None:
    proxy.blackhole(new_connections=True)  # the connection hangs until resumed

    async def main() -> None:
        watch = LoopWatch()
        hubs = [pghub.AsyncHub(proxy.dsn(dsn), connect_timeout=30) for _ in range(20)]

        async def use(hub: pghub.AsyncHub) -> None:
            async with hub:
                await asyncio.sleep(60)

        tasks = [asyncio.create_task(use(hub)) for hub in hubs]
        await settle(
            "every hub connecting", lambda: proxy.connections == 20, lambda: proxy.connections
        )
        for task in tasks:
            task.cancel()
        results = await bounded(asyncio.gather(*tasks, return_exceptions=True), BOUND)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        await settle(
            "every hub stopped",
            lambda: all(hub.state == "stopped" for hub in hubs),
            lambda: Counter(hub.state for hub in hubs),
        )
        proxy.resume()  # a hub still running would now connect, and stay connected
        await settle("no session left", lambda: proxy.connections == 0, lambda: proxy.connections)
        assert sum(hub.stats().connects for hub in hubs) == 0
        await watch.assert_silent()

    run(main(), timeout=60)


def test_a_cancelled_start_does_not_cancel_another_waiter(dsn: str, proxy: FaultProxy) -> None:
    proxy.blackhole(new_connections=True)

    async def main() -> None:
        watch = LoopWatch()
        hub = pghub.AsyncHub(proxy.dsn(dsn), connect_timeout=30)
        first = asyncio.create_task(hub.start())
        second = asyncio.create_task(hub.start())
        await settle("connecting", lambda: proxy.connections == 1, lambda: proxy.connections)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await bounded(first, BOUND)
        # The hub is stopped (as after a failed first connect): the other waiter hears that,
        # not a CancelledError of someone else's.
        with pytest.raises(pghub.HubStopped):
            await bounded(second, BOUND)
        await bounded(hub.stop(), BOUND)
        await watch.assert_silent()

    run(main(), timeout=60)


# --- confirm callbacks ------------------------------------------------------------------------


class Confirms:
    """confirm callbacks that count their calls per notify."""

    def __init__(self) -> None:
        self.calls: Counter[int] = Counter()
        self.answers: dict[int, bool] = {}

    def of(self, ident: int) -> Callable[[bool], None]:
        def confirm(ok: bool) -> None:
            self.calls[ident] += 1
            self.answers[ident] = ok

        return confirm

    async def wait(self, n: int, timeout: float = 10.0) -> None:
        await settle(
            f"{n} confirm callbacks",
            lambda: len(self.calls) >= n,
            lambda: f"{len(self.calls)} notifies confirmed, {sum(self.calls.values())} calls",
            timeout,
        )
        await asyncio.sleep(0.1)  # a second call would come now
        twice = {i: c for i, c in self.calls.items() if c != 1}
        assert not twice, f"confirm called more than once: {list(twice.items())[:5]}"
        assert sorted(self.calls) == list(range(n))


async def give_up_on(future: asyncio.Future[bool], how: int, rng: random.Random) -> None:
    """Abandon the awaited confirmation: cancel it, time out on it, or cancel its awaiter."""
    if how == 0:
        future.cancel()
    elif how == 1:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(future, rng.uniform(0, 0.003))
    else:

        async def await_it() -> bool:
            return await future

        waiter = asyncio.create_task(await_it())
        await asyncio.sleep(rng.uniform(0, 0.003))
        waiter.cancel()  # cancels the future it awaits, unless it has finished already
        with contextlib.suppress(asyncio.CancelledError):
            await waiter


def test_confirm_runs_once_when_awaiting_a_notify_is_cancelled_or_times_out(dsn: str) -> None:
    async def main() -> None:
        watch = LoopWatch()
        rng = random.Random(13)
        single, batches = Confirms(), Confirms()
        async with pghub.AsyncHub(dsn) as hub:

            async def one(i: int) -> None:
                await asyncio.sleep(rng.uniform(0, 0.01))
                await give_up_on(hub.notify("c", [i], confirm=single.of(i)), i % 3, rng)

            async def many(i: int) -> None:
                await asyncio.sleep(rng.uniform(0, 0.01))
                events = [("c", [i, j], None) for j in range(5)]
                await give_up_on(hub.notify_many(events, confirm=batches.of(i)), i % 3, rng)

            await bounded(
                asyncio.gather(*(one(i) for i in range(TASKS)), *(many(i) for i in range(100))),
                BOUND,
            )
            await single.wait(TASKS)
            await batches.wait(100)
            # Connected all along: every one committed, and each confirm says so.
            assert set(single.answers.values()) == {True}
            assert set(batches.answers.values()) == {True}
            assert hub.stats().notifies == TASKS + 500
        await watch.assert_silent()

    run(main(), timeout=60)


def test_confirm_runs_once_for_abandoned_notifies_the_hub_never_sent(
    dsn: str, proxy: FaultProxy
) -> None:
    proxy.refuse()

    async def main() -> None:
        watch = LoopWatch()
        rng = random.Random(14)
        single, batches = Confirms(), Confirms()
        hub = pghub.AsyncHub(proxy.dsn(dsn), retry_first_connect=True, reconnect_delay=0.05)
        await hub.start()
        futures = [hub.notify("down", [i], confirm=single.of(i)) for i in range(TASKS)]
        futures += [
            hub.notify_many([("down", [i, 0], None)], confirm=batches.of(i)) for i in range(100)
        ]
        await bounded(
            asyncio.gather(*(give_up_on(f, i % 3, rng) for i, f in enumerate(futures))), BOUND
        )
        assert not single.calls  # nothing could be sent yet
        assert not batches.calls
        await bounded(hub.stop(), BOUND)
        await single.wait(TASKS)
        await batches.wait(100)
        assert set(single.answers.values()) == {False}
        assert set(batches.answers.values()) == {False}
        await watch.assert_silent()

    run(main(), timeout=60)


def test_confirm_runs_once_after_the_loop_of_the_notify_is_closed(
    dsn: str, proxy: FaultProxy
) -> None:
    # A hub kept across loops (a test suite with a loop per test): a notify left unanswered
    # when its loop ended is still confirmed, once, when the hub stops.
    proxy.refuse()
    hub = pghub.AsyncHub(proxy.dsn(dsn), retry_first_connect=True, reconnect_delay=0.05)
    confirms = Confirms()

    async def first() -> None:
        await hub.start()
        for i in range(TASKS):
            hub.notify("closed", [i], confirm=confirms.of(i))

    async def second() -> None:
        watch = LoopWatch()
        await bounded(hub.stop(), BOUND)
        await confirms.wait(TASKS)
        await watch.assert_silent()

    run(first(), timeout=60)
    run(second(), timeout=60)
    assert set(confirms.answers.values()) == {False}
