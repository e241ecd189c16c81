"""AsyncHub: the hub's semantics through asyncio.

Proves that callbacks, plain or coroutines, run on the hub's event loop with the same
advisories as in the sync hub; that awaited notifies resolve once; that a subscription
iterates events and ends with the hub; that a callback raising (CancelledError included) or
stopping the hub does not end delivery nor deadlock; that a hub can outlive its first loop;
and that a sync and an async hub talk. Each test is a plain function that runs its coroutine
with ``asyncio.run`` under an ``asyncio.wait_for`` bound, so no pytest-asyncio is needed and
nothing can hang the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg
import pytest
from hubkit import AsyncRecorder, Recorder, bounded, run, send_raw, within

import pghub
from pghub import Action, Event
from pghub.testing import FaultProxy

HUB_APP = "pghub_async_hub"


# --- callbacks and advisories -----------------------------------------------------------------


def test_async_callbacks_get_connect_subscribe_events_and_a_final_stop(dsn: str) -> None:
    async def main() -> AsyncRecorder:
        rec = AsyncRecorder()
        async with pghub.AsyncHub(dsn) as hub:
            hub.consumer(rec, "a")
            await rec.wait_advisory(Action.SUBSCRIBE, "a")
            ok = await bounded(hub.notify("a", [1], {"x": 1}))
            assert ok is True
            assert await rec.wait_events(1) == [Event("a", (1,), {"x": 1})]
        return rec

    rec = run(main())
    assert rec.actions() == [Action.CONNECT, Action.SUBSCRIBE, Action.STOP]
    rec.assert_final_last(Action.STOP)


def test_callbacks_run_on_the_event_loop_plain_or_async(dsn: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, bool]] = []

        def plain(event: Event) -> None:
            seen.append(("plain", asyncio.get_running_loop() is loop))

        async def coroutine(event: Event) -> None:
            await asyncio.sleep(0)
            seen.append(("async", asyncio.get_running_loop() is loop))

        rec = AsyncRecorder()
        async with pghub.AsyncHub(dsn) as hub:
            hub.consumer(plain, "loop")
            hub.consumer(coroutine, "loop")
            hub.consumer(rec, "loop")
            await rec.wait_advisory(Action.SUBSCRIBE, "loop")
            await bounded(hub.notify("loop", [1]))
            await rec.wait_events(1)
        # Every callback ran on this loop's thread: CONNECT, SUBSCRIBE, the event, STOP.
        assert sorted(seen) == [("async", True)] * 4 + [("plain", True)] * 4

    run(main())


def test_every_consumer_gets_exactly_one_final_advisory_last(dsn: str) -> None:
    async def main() -> list[AsyncRecorder]:
        recorders = [AsyncRecorder(f"c{i}") for i in range(64)]
        hub = pghub.AsyncHub(dsn)
        consumers = [hub.consumer(rec, "fin") for rec in recorders]
        await bounded(hub.start(), 10)
        for rec in recorders:
            await rec.wait_advisory(Action.SUBSCRIBE, "fin")
        for consumer in consumers[::2]:
            consumer.close()
        await bounded(hub.stop(), 15)
        return recorders

    recorders = run(main())
    for index, rec in enumerate(recorders):
        expected = Action.CLOSE if index % 2 == 0 else Action.STOP
        assert rec.actions() == [Action.CONNECT, Action.SUBSCRIBE, expected], rec.describe()
        rec.assert_final_last(expected)


def test_consumers_made_and_closed_from_async_callbacks(dsn: str) -> None:
    async def main() -> list[AsyncRecorder]:
        links = 32
        recorders: list[AsyncRecorder] = []
        consumers: list[Any] = []
        hub = pghub.AsyncHub(dsn, retry_first_connect=True)

        def add_link() -> None:
            index = len(recorders)

            async def then(event: Event) -> None:
                advisory = event.advisory
                if advisory is not None and advisory.action is Action.SUBSCRIBE and index < links:
                    add_link()
                    consumers[index].close()

            rec = AsyncRecorder(f"link{index}", then=then)
            recorders.append(rec)
            consumer = hub.consumer(rec)
            consumers.append(consumer)
            consumer.subscribe("chain")

        add_link()
        await hub.start()
        while len(recorders) < links + 1:
            await bounded(asyncio.sleep(0.01), 1)
        await recorders[links].wait_advisory(Action.SUBSCRIBE, "chain", timeout=10)
        for rec in recorders[:links]:
            await rec.wait_final(timeout=10)
        await bounded(hub.stop(), 10)
        return recorders

    recorders = run(main(), timeout=60)
    for rec in recorders[:-1]:
        assert rec.actions() == [Action.CONNECT, Action.SUBSCRIBE, Action.CLOSE], rec.describe()
    assert recorders[-1].actions() == [Action.CONNECT, Action.SUBSCRIBE, Action.STOP]


def test_subscription_iterates_ordinary_events_and_ends_on_stop(dsn: str) -> None:
    async def main() -> None:
        hub = pghub.AsyncHub(dsn)
        await hub.start()
        got: list[Event] = []
        entered = asyncio.Event()

        async def iterate() -> None:
            async with hub.subscription("s1", "S2") as sub:
                entered.set()
                async for event in sub:
                    got.append(event)

        reader = asyncio.create_task(iterate())
        await bounded(entered.wait())  # entering waits until both topics are listened to
        for i in range(6):
            await bounded(hub.notify("s1" if i % 2 else "s2", [i]))
        while len(got) < 6:
            await bounded(asyncio.sleep(0.01))
        assert [(e.topic, e.key) for e in got] == [
            ("s2", (0,)),
            ("s1", (1,)),
            ("s2", (2,)),
            ("s1", (3,)),
            ("s2", (4,)),
            ("s1", (5,)),
        ]
        await bounded(hub.stop(), 10)
        await bounded(reader)  # the iteration ends with the hub
        assert len(got) == 6

    run(main())


def test_subscription_with_advisories_and_its_exit_closes_it(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async def main() -> None:
        async with pghub.AsyncHub(dsn) as hub:
            assert hub.stats().consumers == 0
            async with hub.subscription("adv", advisories=True) as sub:
                assert hub.stats().consumers == 1
                send_raw(conn, "adv", "e1")
                got: list[Event] = []
                async for event in sub:
                    got.append(event)
                    if event.topic is not None:
                        break
            # Entering waited for the LISTEN; CONNECT and SUBSCRIBE came through, then e1.
            assert [e.advisory.action if e.advisory else e.key for e in got] == [
                Action.CONNECT,
                Action.SUBSCRIBE,
                (1,),
            ]
            for _ in range(100):
                if hub.stats().consumers == 0:
                    break
                await asyncio.sleep(0.02)
            assert hub.stats().consumers == 0

    run(main())


def test_a_sleeping_async_consumer_overflows_alone(dsn: str, conn: psycopg.Connection[Any]) -> None:
    async def main() -> None:
        wake = asyncio.Event()

        async def sleep_on_first(event: Event) -> None:
            if event.topic is not None and event.key == (0,):
                await asyncio.wait_for(wake.wait(), 30)

        sleeper = AsyncRecorder("sleeper", then=sleep_on_first)
        fast = AsyncRecorder("fast")
        async with pghub.AsyncHub(dsn) as hub:
            hub.consumer(sleeper, "flood", queue_size=10)
            hub.consumer(fast, "flood")
            await sleeper.wait_advisory(Action.SUBSCRIBE, "flood")
            await fast.wait_advisory(Action.SUBSCRIBE, "flood")
            send_raw(conn, "flood", "e0")
            await sleeper.wait_events(1)
            conn.execute("SELECT pg_notify('flood', 'e' || i) FROM generate_series(1, 2000) AS i")
            got = await fast.wait_events(2001, timeout=20)
            assert [e.key[0] for e in got] == list(range(2001))
            wake.set()
            await sleeper.wait_advisory(Action.OVERFLOW)
            await sleeper.wait_events(11)
            lost = [a.lost for a in sleeper.advisories() if a.action is Action.OVERFLOW]
            assert lost == [1990]
            assert [e.key[0] for e in sleeper.events()] == [0, *range(1991, 2001)]
            assert hub.stats().overflow_drops == 1990

    run(main(), timeout=60)


# --- callbacks that raise or stop the hub -----------------------------------------------------


def test_a_raising_async_callback_is_counted_and_delivery_goes_on(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async def main() -> None:
        async def explode(event: Event) -> None:
            if event.topic is not None:
                await asyncio.sleep(0)
                raise RuntimeError(f"async boom {event.key}")

        thrower = AsyncRecorder("thrower", then=explode)
        bystander = AsyncRecorder("bystander")
        async with pghub.AsyncHub(dsn) as hub:
            hub.consumer(thrower, "boom")
            hub.consumer(bystander, "boom")
            await thrower.wait_advisory(Action.SUBSCRIBE, "boom")
            await bystander.wait_advisory(Action.SUBSCRIBE, "boom")
            for i in range(3):
                send_raw(conn, "boom", f"e{i}")
            assert [e.key for e in await thrower.wait_events(3)] == [(0,), (1,), (2,)]
            assert [e.key for e in await bystander.wait_events(3)] == [(0,), (1,), (2,)]
            await asyncio.sleep(0)
            assert hub.stats().callback_errors == 3
        thrower.assert_final_last(Action.STOP)

    run(main())


def test_an_async_callback_raising_an_exception_goes_on(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        rec = AsyncRecorder()

        async def callback(event: Event) -> None:
            await rec(event)
            if event.topic is not None and event.key == (1,):
                raise RuntimeError("boom")

        async with pghub.AsyncHub(dsn) as hub:
            hub.consumer(callback, "c")
            await rec.wait_advisory(Action.SUBSCRIBE, "c")
            await loop.run_in_executor(None, send_raw, conn, "c", "e1")
            await loop.run_in_executor(None, send_raw, conn, "c", "e2")
            assert [e.key for e in await rec.wait_events(2)] == [(1,), (2,)]
            assert hub.stats().callback_errors == 1
        rec.assert_final_last(Action.STOP)

    run(main())


def test_an_async_callback_raising_cancelled_error_does_not_end_delivery(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        rec = AsyncRecorder()

        async def callback(event: Event) -> None:
            await rec(event)
            if event.topic is not None and event.key == (1,):
                cancelled: asyncio.Future[None] = loop.create_future()
                cancelled.cancel()
                await cancelled  # e.g. a request that someone else cancelled

        hub = pghub.AsyncHub(dsn)
        await hub.start()
        try:
            hub.consumer(callback, "c")
            await rec.wait_advisory(Action.SUBSCRIBE, "c")
            await loop.run_in_executor(None, send_raw, conn, "c", "e1")
            await loop.run_in_executor(None, send_raw, conn, "c", "e2")
            events = await rec.wait_events(2, timeout=3)
            assert [e.key for e in events] == [(1,), (2,)]
        finally:
            stopped = False
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(hub.stop(), 10)
                stopped = True
            if not stopped:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(hub.wait_stopped(), 10)
        assert stopped, "stop() raised CancelledError"
        rec.assert_final_last(Action.STOP)

    run(main())


def test_stop_and_close_from_inside_async_callbacks(dsn: str) -> None:
    async def main() -> tuple[AsyncRecorder, AsyncRecorder]:
        hub = pghub.AsyncHub(dsn)
        await bounded(hub.start(), 10)
        stopped = asyncio.Event()
        other = AsyncRecorder("other")
        other_consumer = hub.consumer(other, "inside")

        async def act(event: Event) -> None:
            if event.topic == "inside" and event.key == (1,):
                other_consumer.close()
                await hub.stop()  # from its own callback: must not wait for itself
                stopped.set()

        actor = AsyncRecorder("actor", then=act)
        hub.consumer(actor, "inside")
        await actor.wait_advisory(Action.SUBSCRIBE, "inside")
        await other.wait_advisory(Action.SUBSCRIBE, "inside")
        hub.notify("inside", [1])
        await bounded(stopped.wait(), 10)
        await actor.wait_final()
        await other.wait_final()
        return actor, other

    actor, other = run(main())
    actor.assert_final_last(Action.STOP)
    other.assert_final_last(Action.CLOSE)


def test_two_async_callbacks_that_both_stop_the_hub_do_not_deadlock(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        hub = pghub.AsyncHub(dsn)
        await hub.start()
        returned: list[str] = []
        probe = AsyncRecorder()

        def stopper(name: str) -> Any:
            async def on_event(event: Event) -> None:
                if event.topic == "shutdown":
                    await hub.stop(wait=True)
                    returned.append(name)

            return on_event

        hub.consumer(stopper("a"), "shutdown")
        hub.consumer(stopper("b"), "shutdown")
        hub.consumer(probe, "shutdown")
        await probe.wait_advisory(Action.SUBSCRIBE, "shutdown")
        await asyncio.sleep(0.2)
        await loop.run_in_executor(None, send_raw, conn, "shutdown", "e")
        deadline = time.monotonic() + 5
        while len(returned) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(hub.wait_stopped(), 10)
        return returned

    # On failure the two deadlocked tasks are left pending; asyncio.run cancels them.
    assert sorted(run(main())) == ["a", "b"]


# --- sending ----------------------------------------------------------------------------------


def test_awaited_notify_returns_true_and_fire_and_forget_still_sends(dsn: str) -> None:
    async def main() -> None:
        rec = AsyncRecorder()
        async with pghub.AsyncHub(dsn) as hub:
            hub.consumer(rec, "ff")
            await rec.wait_advisory(Action.SUBSCRIBE, "ff")
            hub.notify("ff", [1])  # not awaited
            futures = [hub.notify("ff", [i]) for i in range(2, 6)]
            assert await bounded(asyncio.gather(*futures)) == [True] * 4
            got = await rec.wait_events(5)
            assert [e.key for e in got] == [(i,) for i in range(1, 6)]

    run(main())


def test_notify_many_resolves_once_and_confirms_once(dsn: str) -> None:
    async def main() -> None:
        rec = AsyncRecorder()
        answers: list[bool] = []
        async with pghub.AsyncHub(dsn) as hub:
            hub.consumer(rec, "many")
            await rec.wait_advisory(Action.SUBSCRIBE, "many")
            batch = [("many", [i], {"i": i}) for i in range(20)]
            ok = await bounded(hub.notify_many(batch, confirm=answers.append))
            assert ok is True
            assert [e.key for e in await rec.wait_events(20)] == [(i,) for i in range(20)]
            await asyncio.sleep(0)
        # As with Hub.notify_many: one confirm for the batch.
        assert answers == [True]

    run(main())


def test_an_async_confirm_callback_that_raises_is_logged_like_a_sync_one(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> list[dict[str, Any]]:
        reports: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, c: reports.append(c))

        def bad(ok: bool) -> None:
            raise RuntimeError("confirm boom")

        answers: list[bool] = []
        async with pghub.AsyncHub(dsn) as hub:
            assert await bounded(hub.notify("conf", [1], confirm=bad)) is True
            await bounded(hub.notify_many([("conf", [2], None)], confirm=bad))
            assert await bounded(hub.notify("conf", [3], confirm=answers.append)) is True
        assert answers == [True]
        return reports

    reports = run(main())
    assert [c.get("message") for c in reports] == []  # not left to the loop's handler
    raised = [r for r in caplog.records if "confirm callback raised" in r.getMessage()]
    assert len(raised) == 2


def test_pending_notifies_are_resolved_by_stop(dsn: str) -> None:
    async def main() -> None:
        hub = pghub.AsyncHub(dsn)
        await bounded(hub.start(), 10)
        futures = [hub.notify("pending", [i]) for i in range(300)]
        await bounded(hub.stop(), 15)
        assert all(f.done() for f in futures)
        assert all(isinstance(f.result(), bool) for f in futures)
        with pytest.raises(pghub.HubStopped):
            hub.notify("pending", [1])
        with pytest.raises(pghub.HubStopped):
            await hub.start()

    run(main())


def test_bad_input_raises_at_the_call(dsn: str) -> None:
    async def main() -> None:
        async with pghub.AsyncHub(dsn) as hub:
            with pytest.raises(pghub.InvalidTopic):
                hub.notify("bad topic", [1])
            # Too large for a plain topic: the server's to say (durable topics take it).
            assert await asyncio.wait_for(hub.notify("t", [1], "x" * 8000), 10) is False
            with pytest.raises(pghub.InvalidTopic):
                hub.consumer(AsyncRecorder(), "ok", "not-ok")
            with pytest.raises(pghub.InvalidTopic):
                hub.subscription("ok", "")

    run(main())


# --- connecting, reconnecting, and loops ------------------------------------------------------


def test_connect_failed_without_retry(dsn: str, proxy: FaultProxy) -> None:
    proxy.refuse()

    async def main() -> None:
        hub = pghub.AsyncHub(proxy.dsn(dsn))
        with pytest.raises(pghub.ConnectFailed):
            await bounded(hub.start(), 5)
        await bounded(hub.stop(), 5)

    run(main())


def test_reconnect_after_the_backend_is_terminated(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conninfo = psycopg.conninfo.make_conninfo(dsn, application_name=HUB_APP)

    def kill() -> None:
        row = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (HUB_APP,),
        ).fetchone()
        assert row == (True,)

    async def main() -> AsyncRecorder:
        rec = AsyncRecorder()
        async with pghub.AsyncHub(conninfo, reconnect_delay=0.05) as hub:
            hub.consumer(rec, "kill")
            await rec.wait_advisory(Action.SUBSCRIBE, "kill")
            await asyncio.get_running_loop().run_in_executor(None, kill)
            await rec.wait_advisory(Action.DISCONNECT)
            await rec.wait_advisory(Action.RECONNECT, timeout=10)
            assert await bounded(hub.notify("kill", [1])) is True
            assert await rec.wait_events(1) == [Event("kill", (1,), None)]
        return rec

    rec = run(main())
    assert rec.actions() == [
        Action.CONNECT,
        Action.SUBSCRIBE,
        Action.DISCONNECT,
        Action.RECONNECT,
        Action.STOP,
    ]


def test_an_async_hub_outliving_its_first_loop_answers_and_stops_on_the_next(dsn: str) -> None:
    # As with a session-wide hub in a test suite that runs each test on a loop of its own.
    hub = pghub.AsyncHub(dsn)

    async def first() -> None:
        await hub.start()
        rec = AsyncRecorder()
        hub.consumer(rec, "loops")
        await rec.wait_advisory(Action.SUBSCRIBE, "loops")

    async def second() -> tuple[Any, Any]:
        answer: Any = "never answered"
        with contextlib.suppress(asyncio.TimeoutError):
            answer = await asyncio.wait_for(hub.notify("loops", [1]), 3)
        stopped: Any = "stopped"
        try:
            await asyncio.wait_for(hub.stop(), 10)
        except BaseException as exc:  # CancelledError is what it raises
            stopped = type(exc).__name__
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(hub.wait_stopped(), 10)
        return answer, stopped

    asyncio.run(asyncio.wait_for(first(), 15))
    assert asyncio.run(second()) == (True, "stopped")


def test_a_sync_hub_and_an_async_hub_talk(dsn: str) -> None:
    # Events are the same on either side: one hub's notify reaches the other's consumer.
    sync_hub = pghub.Hub(dsn)
    sync_hub.start()
    try:
        sync_rec = Recorder("sync")
        sync_hub.consumer(sync_rec, "bridge")
        sync_rec.wait_advisory(Action.SUBSCRIBE, "bridge")

        async def main() -> None:
            rec = AsyncRecorder()
            async with pghub.AsyncHub(dsn) as hub:
                hub.consumer(rec, "bridge")
                await rec.wait_advisory(Action.SUBSCRIBE, "bridge")
                assert await bounded(hub.notify("bridge", [1], {"from": "async"})) is True
                assert await rec.wait_events(1) == [Event("bridge", (1,), {"from": "async"})]
                sync_hub.notify("bridge", [2], {"from": "sync"})
                assert (await rec.wait_events(2))[1] == Event("bridge", (2,), {"from": "sync"})

        run(main())
        assert sync_rec.wait_events(2) == [
            Event("bridge", (1,), {"from": "async"}),
            Event("bridge", (2,), {"from": "sync"}),
        ]
    finally:
        within(10, sync_hub.stop)
