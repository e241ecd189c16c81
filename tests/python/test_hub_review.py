"""A review of the hub's implementation: interleavings and inputs that the other suites miss.

Each test pins behaviour that a review of the hub checked: some found sound as written, the
others once demonstrated a bug (a race, a deadlock, a crash of the engine thread) and now guard
its fix. Every wait is bounded, and a test that would leave threads blocked for ever (a
deadlock) uses daemon threads and no teardown that waits on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from hubkit import AsyncRecorder, HubPool, Recorder, send_raw, wait_until, within

import pghub
from pghub import Action, Event
from pghub.testing import FaultProxy

T = TypeVar("T")


@pytest.fixture
def hubs() -> Iterator[HubPool]:
    pool = HubPool()
    yield pool
    pool.stop_all()


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a test coroutine to the end, or fail after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- poison input must never kill the engine ------------------------------------------------


def test_a_deeply_nested_payload_on_a_shared_channel_does_not_stop_the_hub(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    first, second = Recorder("first"), Recorder("second")
    hub.consumer(first, "deep")
    hub.consumer(second, "deep")
    first.wait_advisory(Action.SUBSCRIBE, "deep")
    second.wait_advisory(Action.SUBSCRIBE, "deep")
    send_raw(conn, "deep", "e:" + nested_list(600))  # 1202 bytes: well within a payload
    send_raw(conn, "deep", "e7")
    # Delivered or counted as invalid, either is fine; the hub must live on.
    for rec in (first, second):
        rec.wait_for(
            lambda got: any(e.topic == "deep" and e.key == (7,) for e in got),
            what="the event after the nested one",
        )
    assert hub.state == "connected"
    assert first.count(Action.STOP) == 0


def test_a_deeply_nested_payload_for_a_single_consumer_is_delivered(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    # One consumer: no copy is made, so the value arrives as decoded.
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "deep")
    rec.wait_advisory(Action.SUBSCRIBE, "deep")
    send_raw(conn, "deep", "e1:" + nested_list(600))
    send_raw(conn, "deep", "e2")
    events = rec.wait_events(2)
    assert [e.key for e in events] == [(1,), (2,)]
    assert hub.state == "connected"


def test_a_payload_too_deep_to_decode_is_counted_not_delivered(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "deeper")
    rec.wait_advisory(Action.SUBSCRIBE, "deeper")
    send_raw(conn, "deeper", "e1:" + nested_list(3000))
    send_raw(conn, "deeper", "e2")
    assert [e.key for e in rec.wait_events(1)] == [(2,)]
    wait_until(lambda: hub.stats().invalid_payloads == 1, what="one invalid payload")
    assert hub.state == "connected"


def test_payload_bytes_that_are_not_utf8_are_counted_not_delivered(
    dsn: str, server_dsn: str, hubs: HubPool
) -> None:
    # A SQL_ASCII database stores bytes unchecked. With the hub's default client_encoding
    # UTF8 the server itself ends the listening session on such a payload (FATAL: invalid
    # byte sequence), so the caller's own client_encoding SQL_ASCII (which the hub keeps) is
    # the one way raw bytes reach the decoder.
    name = f"pghub_review_ascii_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(
            f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'"
            " TEMPLATE template0"
        )
    try:
        ascii_dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
        hub = hubs.started(psycopg.conninfo.make_conninfo(ascii_dsn, client_encoding="SQL_ASCII"))
        rec = Recorder()
        hub.consumer(rec, "raw")
        rec.wait_advisory(Action.SUBSCRIBE, "raw")
        with psycopg.connect(ascii_dsn, autocommit=True) as sender:
            sender.execute("SET client_encoding = 'SQL_ASCII'")
            sender.execute(b"SELECT pg_notify('raw', E'e1:\"\\xff\\xfe\"')")
            send_raw(sender, "raw", "e2")
        assert [e.key for e in rec.wait_events(1)] == [(2,)]
        wait_until(lambda: hub.stats().invalid_payloads == 1, what="one invalid payload")
        assert hub.state == "connected"
        hubs.stop_all()
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- the select loop ------------------------------------------------------------------------


@pytest.fixture
def high_descriptors() -> Iterator[None]:
    """Hold open enough descriptors that the next ones are numbered above 1024, as in a
    server process with many clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} too low")
    if soft != resource.RLIM_INFINITY and soft < 1300:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1300, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        yield
    finally:
        for fd in held:
            os.close(fd)
        if soft != resource.RLIM_INFINITY and soft < 1300:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_hub_works_when_its_sockets_are_numbered_above_1024(
    dsn: str, conn: psycopg.Connection[Any], high_descriptors: None
) -> None:
    hub = pghub.Hub(dsn)
    try:
        within(15, hub.start)
        rec = Recorder()
        hub.consumer(rec, "many")
        rec.wait_advisory(Action.SUBSCRIBE, "many")
        send_raw(conn, "many", "e1")
        assert [e.key for e in rec.wait_events(1)] == [(1,)]
    finally:
        within(15, hub.stop)


# --- stopping from callbacks ----------------------------------------------------------------


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


# --- the end of a hub against consumers closed from other threads -----------------------------


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


# --- asyncio ----------------------------------------------------------------------------------


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


# --- sound behaviour, pinned ------------------------------------------------------------------


def test_stop_before_start_answers_queued_notifies_and_stops_consumers(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    rec = Recorder()
    hub.consumer(rec, "early")
    answers: list[bool] = []
    hub.notify("early", [1], confirm=answers.append)
    within(5, hub.stop)
    within(5, hub.stop)  # idempotent
    assert answers == [False]
    rec.wait_final()
    rec.assert_final_last(Action.STOP)
    assert hub.state == "stopped"
    with pytest.raises(pghub.HubStopped):
        hub.start()
    with pytest.raises(pghub.HubStopped):
        hub.notify("early", [2])


def test_notifies_racing_stop_are_each_answered_exactly_once(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    answers: dict[int, list[bool]] = {}
    lock = threading.Lock()
    refused = 0

    def answer(i: int) -> Any:
        def tell(ok: bool) -> None:
            with lock:
                answers.setdefault(i, []).append(ok)

        return tell

    def sender(base: int) -> None:
        nonlocal refused
        for i in range(base, base + 2000):
            try:
                hub.notify("race", [i], confirm=answer(i))
            except pghub.HubStopped:
                with lock:
                    refused += 1

    threads = [threading.Thread(target=sender, args=(n * 2000,), daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.01)
    within(10, hub.stop)
    for t in threads:
        t.join(10)
    with lock:
        assert all(len(a) == 1 for a in answers.values()), "a notify answered twice"
        assert len(answers) + refused == 6000, "a notify never answered"


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


def test_a_confirm_callback_that_raises_is_logged_and_sending_goes_on(
    dsn: str, hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "conf")
    rec.wait_advisory(Action.SUBSCRIBE, "conf")

    def bad(ok: bool) -> None:
        raise RuntimeError("confirm boom")

    answers: list[bool] = []
    hub.notify("conf", [1], confirm=bad)
    hub.notify("conf", [2], confirm=answers.append)
    assert [e.key for e in rec.wait_events(2)] == [(1,), (2,)]
    wait_until(lambda: answers == [True])
    assert hub.state == "connected"
    assert any("confirm callback raised" in r.getMessage() for r in caplog.records)


def test_subscribe_while_disconnected_is_announced_after_the_reconnect(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    app = f"pghub_review_{os.getpid()}"
    hub = hubs.started(
        psycopg.conninfo.make_conninfo(dsn, application_name=app),
        reconnect_delay=0.5,
        reconnect_max_delay=0.5,
    )
    rec = Recorder()
    consumer = hub.consumer(rec, "before")
    rec.wait_advisory(Action.SUBSCRIBE, "before")
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,)
    )
    rec.wait_advisory(Action.DISCONNECT)
    consumer.subscribe("during")
    rec.wait_advisory(Action.RECONNECT)
    rec.wait_advisory(Action.SUBSCRIBE, "during")
    send_raw(conn, "during", "e1")
    send_raw(conn, "before", "e2")
    assert [e.key for e in rec.wait_events(2)] == [(1,), (2,)]
    actions = rec.actions()
    assert actions == [
        Action.CONNECT,
        Action.SUBSCRIBE,
        Action.DISCONNECT,
        Action.RECONNECT,
        Action.SUBSCRIBE,
    ], actions


# --- the first connection ---------------------------------------------------------------------


def test_start_does_not_hang_when_the_first_session_dies_before_its_listens(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    app = f"pghub_review_first_{os.getpid()}"
    with FaultProxy(lifetime=60) as proxy:
        hub = pghub.Hub(
            proxy.dsn(psycopg.conninfo.make_conninfo(dsn, application_name=app)),
            connect_timeout=2,
            reconnect_delay=0.1,
            reconnect_max_delay=0.2,
        )
        # 10,000 LISTENs in one command keep the server busy for a while (about 0.4 s).
        for n in range(5):
            hub.consumer(lambda e: None, *(f"t{n}_{i}" for i in range(2000)))
        cut = threading.Event()

        def cut_while_listening() -> None:
            with psycopg.connect(dsn, autocommit=True) as watcher:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    row = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE application_name = %s AND state = 'active'",
                        (app,),
                    ).fetchone()
                    if row is not None and row[0]:
                        proxy.refuse()  # the server is away from now on
                        proxy.reset()
                        cut.set()
                        return
                    time.sleep(0.002)

        watcher = threading.Thread(target=cut_while_listening, daemon=True)
        watcher.start()
        try:
            with pytest.raises(pghub.ConnectFailed):
                within(8, hub.start)
        finally:
            watcher.join(20)
            within(10, hub.stop)
        assert cut.is_set(), "the session was never seen running its LISTENs"


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


def test_notify_many_of_nothing_after_stop(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    within(15, hub.start)
    within(10, hub.stop)
    answers: list[bool] = []
    with pytest.raises(pghub.HubStopped):
        hub.notify_many([("x", [1], None)], confirm=answers.append)
    assert answers == []
    with pytest.raises(pghub.HubStopped):
        hub.notify_many([], confirm=answers.append)
    assert answers == [], "confirm(True) was called although notify_many raised HubStopped"


def test_idle_session_timeout_does_not_cut_the_listening_session(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    dbname = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{dbname}" SET idle_session_timeout = 500')
    hub = hubs.started(dsn, reconnect_delay=0.1, reconnect_max_delay=0.2)
    rec = Recorder()
    hub.consumer(rec, "idle")
    rec.wait_advisory(Action.SUBSCRIBE, "idle")
    time.sleep(2)
    assert hub.stats().disconnects == 0
    assert rec.count(Action.DISCONNECT) == 0


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


def test_notifies_across_terminated_sessions_are_answered_once_and_never_sent_twice(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    app = f"pghub_review_kill_{os.getpid()}"
    hub = hubs.started(
        psycopg.conninfo.make_conninfo(dsn, application_name=app),
        reconnect_delay=0.05,
        reconnect_max_delay=0.1,
        batch_max_notifies=50,  # many batches still queued when the session ends
    )
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute('LISTEN "kill"')
    answers: dict[int, list[bool]] = {}
    lock = threading.Lock()

    def answer(i: int) -> Any:
        def tell(ok: bool) -> None:
            with lock:
                answers.setdefault(i, []).append(ok)

        return tell

    total, rounds = 4000, 5
    per_round = total // rounds
    for r in range(rounds):
        # Queue a round, then end the session while its batches are on their way.
        for i in range(r * per_round, (r + 1) * per_round):
            hub.notify("kill", [i], {"pad": "x" * 200}, confirm=answer(i))
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        )
        reconnected = r + 1

        def back(n: int = reconnected) -> bool:
            return hub.stats().disconnects == n and hub.state == "connected"

        wait_until(back, what=f"reconnect {reconnected}")
    wait_until(lambda: len(answers) == total, timeout=20, what="every notify answered")
    received: list[int] = []
    deadline = time.monotonic() + 3
    for n in listener.notifies(timeout=3, stop_after=total):
        received.append(int(n.payload.split(":")[0][1:]))
        if time.monotonic() > deadline:
            break
    listener.close()
    with lock:
        assert all(len(a) == 1 for a in answers.values()), "a notify answered twice"
        confirmed = {i for i, a in answers.items() if a == [True]}
    assert len(received) == len(set(received)), "a notify was sent twice"
    assert confirmed <= set(received), "a notify confirmed True never arrived"
    assert received == sorted(received), "notifies went out of order"
    assert hub.stats().disconnects == rounds, hub.stats()
    assert len(confirmed) >= total // 2, f"only {len(confirmed)} of {total} sent"


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
