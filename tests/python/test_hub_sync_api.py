"""The sync hub as a Python user expects it: ``with hub.subscription(...)`` as a blocking
iterator, ``consumer.wait_subscribed(timeout)``, ``notify`` returning a
``concurrent.futures.Future``, and a constructor that type-checks what it is given.

Every wait is bounded (a subscription's own ``timeout``, ``within``), against the real server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hubkit import AsyncRecorder, HubPool, Recorder, send_raw, wait_until, within

import pghub
from pghub import Action, Event

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def hubs() -> Iterator[HubPool]:
    pool = HubPool()
    yield pool
    pool.stop_all()


def unreachable() -> str:
    """A DSN whose port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"host=127.0.0.1 port={port} dbname=none connect_timeout=1"


def never_connected(hubs: HubPool) -> pghub.Hub:
    """A started hub that keeps trying a server that is not there."""
    return hubs.started(unreachable(), retry_first_connect=True, reconnect_delay=5.0)


def shown(events: list[Event]) -> list[str]:
    out = []
    for event in events:
        advisory = event.advisory
        if advisory is None:
            out.append(f"{event.topic}{list(event.key)}={event.value}")
        else:
            out.append(advisory.action.name + (f"({advisory.topic})" if advisory.topic else ""))
    return out


# --- Hub.subscription ---------------------------------------------------------------------------


def test_a_subscription_is_entered_once_listen_took_effect(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    with hub.subscription("orders", "Invoices", timeout=5) as sub:
        consumer = sub.consumer
        assert consumer is not None
        # Both SUBSCRIBEs have been given already: nothing left to wait for.
        assert consumer.wait_subscribed(0)
        # So an event another session commits now reaches it.
        send_raw(conn, "invoices", 'e7:"due"')
        send_raw(conn, "orders", "e42")
        assert [next(sub), next(sub)] == [
            Event("invoices", (7,), "due"),
            Event("orders", (42,), None),
        ]
    assert consumer.closed
    wait_until(lambda: hub.stats().consumers == 0, what="the subscription's consumer gone")


def test_iteration_blocks_and_ends_when_the_hub_stops(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    got: list[Event] = []
    entered = threading.Event()

    def read() -> None:
        with hub.subscription("stops", timeout=10) as sub:
            entered.set()
            got.extend(sub)  # ends at STOP, without a timeout

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert entered.wait(5)
    assert hub.notify("stops", [1], "last").result(5)
    wait_until(lambda: len(got) == 1, what="the event read")
    within(10, hub.stop)
    reader.join(5)
    assert not reader.is_alive(), "the iteration did not end at STOP"
    assert got == [Event("stops", (1,), "last")]


def test_the_timeout_bounds_each_step_and_the_iteration_goes_on(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    with hub.subscription("slow", timeout=0.3) as sub:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"no event within 0\.3 s"):
            next(sub)
        assert 0.25 <= time.monotonic() - started < 3
        hub.notify("slow", [1])
        assert next(sub) == Event("slow", (1,), None)  # the same iterator, still usable
        with pytest.raises(TimeoutError):
            sub.get(timeout=0.05)  # get() has a bound of its own


def test_entering_times_out_when_listen_cannot_take_effect(hubs: HubPool) -> None:
    hub = never_connected(hubs)
    subscription = hub.subscription("nowhere", timeout=0.3)
    with pytest.raises(TimeoutError, match=r"not listened to within 0\.3 s"):
        within(5, subscription.__enter__)
    assert subscription.consumer is not None
    assert subscription.consumer.closed  # not left subscribed, filling up, unread
    assert hub.stats().consumers == 0


def test_get_says_none_once_the_subscription_has_ended(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    with hub.subscription("ends", timeout=5) as sub:
        sub.close()
        assert sub.get(timeout=5) is None
        assert list(sub) == []


def test_the_sync_and_async_subscriptions_read_the_same(dsn: str, hubs: HubPool) -> None:
    """One reader (SubscriptionReader) behind both: the same scenario reads the same."""

    def scenario(notify: Any) -> None:
        notify("a", [1], {"n": 1})
        notify("b", [2], None)

    hub = hubs.started(dsn)
    sync_read: list[Event] = []
    with hub.subscription("a", "B", advisories=True, timeout=5) as sub:
        scenario(hub.notify)
        sync_read.extend(sub.get(5) for _ in range(5))  # type: ignore[misc]
        sub.close()
        sync_read.extend(sub)

    async def read_async() -> list[Event]:
        read: list[Event] = []
        async with (
            pghub.AsyncHub(dsn) as ahub,
            ahub.subscription("a", "B", advisories=True) as asub,
        ):
            scenario(ahub.notify)
            async for event in asub:
                read.append(event)
                if len(read) == 5:
                    asub.close()
        return read

    async_read = asyncio.run(asyncio.wait_for(read_async(), 20))
    assert shown(sync_read) == shown(async_read)
    assert shown(sync_read) == [
        "CONNECT",
        "SUBSCRIBE(a)",
        "SUBSCRIBE(b)",
        "a[1]={'n': 1}",
        "b[2]=None",
        "CLOSE",
    ]


# --- consumer.wait_subscribed -------------------------------------------------------------------


def test_wait_subscribed_returns_once_every_topic_is_listened_to(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec, "w1", "w2")
    assert within(10, consumer.wait_subscribed, 5)
    assert hub.stats().subscribes == 2
    send_raw(conn, "w2", "e2")  # committed after the wait: it must arrive
    assert rec.wait_events(1) == [Event("w2", (2,), None)]


def test_wait_subscribed_is_false_on_timeout_and_at_once_when_the_consumer_ended(
    dsn: str, hubs: HubPool
) -> None:
    waiting = never_connected(hubs).consumer(Recorder(), "never")
    started = time.monotonic()
    assert within(5, waiting.wait_subscribed, 0.3) is False
    assert 0.25 <= time.monotonic() - started < 3
    hub = hubs.started(dsn)
    closed = hub.consumer(Recorder(), "closed")
    closed.close()
    started = time.monotonic()
    assert within(5, closed.wait_subscribed, 30) is False
    assert time.monotonic() - started < 3
    stopped = hub.consumer(Recorder(), "stopped")
    within(10, hub.stop)
    assert within(5, stopped.wait_subscribed, 30) is False


def test_wait_subscribed_sees_a_topic_subscribed_again_only_once_it_is_listened_to_again(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    """The mailbox still says "subscribed" from before when unsubscribe and subscribe again
    are called: the wait passes only after the commands queued before it have run."""
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec, "again")
    assert consumer.wait_subscribed(5)
    for round_ in range(2, 12):
        consumer.unsubscribe("again")
        consumer.subscribe("again")
        assert within(10, consumer.wait_subscribed, 5)
        assert hub.stats().subscribes == round_, "returned before the new SUBSCRIBE"
    send_raw(conn, "again", "e1")
    assert rec.wait_events(1) == [Event("again", (1,), None)]


def test_wait_subscribed_from_the_consumers_own_callback(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    answers: list[bool] = []
    holder: list[pghub.Consumer] = []

    held = threading.Event()

    def on_event(event: Event) -> None:
        if event.advisory is not None and event.advisory.action is Action.CONNECT:
            # CONNECT may come before hub.consumer() has returned to the test's thread.
            assert held.wait(10), "the consumer was never held"
            holder[0].subscribe("later")
            answers.append(holder[0].wait_subscribed(10))

    holder.append(hub.consumer(on_event))
    held.set()
    # The outer bound outlasts the inner one, so a slow machine shows which of them ran out.
    wait_until(lambda: answers == [True], timeout=20, what="wait_subscribed inside the callback")


def test_async_wait_subscribed(dsn: str) -> None:
    async def scenario() -> tuple[bool, bool, list[Event]]:
        async with pghub.AsyncHub(dsn) as hub:
            rec = AsyncRecorder()
            consumer = hub.consumer(rec, "aw")
            subscribed = await consumer.wait_subscribed(5)
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other:
                await other.execute("SELECT pg_notify('aw', 'e5')")
            events = await rec.wait_events(1)
            consumer.close()
            return subscribed, await consumer.wait_subscribed(5), events

    subscribed, after_close, events = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert subscribed
    assert not after_close
    assert events == [Event("aw", (5,), None)]


# --- notify returns a future --------------------------------------------------------------------


def test_notify_returns_a_future_and_runs_confirm_once_on_the_engine_thread(
    dsn: str, hubs: HubPool
) -> None:
    hub = hubs.started(dsn, name="futures")
    confirmed: list[tuple[bool, str]] = []
    future = hub.notify(
        "f",
        [1],
        {"a": 1},
        confirm=lambda ok: confirmed.append((ok, threading.current_thread().name)),
    )
    assert isinstance(future, concurrent.futures.Future)
    assert future.cancel() is False  # a queued notify cannot be called back
    assert future.result(5) is True
    wait_until(lambda: len(confirmed) == 1, what="confirm")
    assert confirmed == [(True, "pghub-futures")]
    many = hub.notify_many([("f", [2], None), ("f", [3], None)])
    assert many.result(5) is True
    nothing: list[bool] = []
    empty = hub.notify_many([], confirm=nothing.append)
    assert empty.done()
    assert empty.result() is True
    assert nothing == [True]


def test_a_notify_that_is_not_sent_resolves_false(hubs: HubPool) -> None:
    hub = never_connected(hubs)
    confirmed: list[bool] = []
    one = hub.notify("lost", [1], confirm=confirmed.append)
    many = hub.notify_many([("lost", [2], None), ("lost", [3], None)], confirm=confirmed.append)
    assert not one.done()
    within(10, hub.stop)
    assert one.result(5) is False
    assert many.result(5) is False
    assert confirmed == [False, False]  # once each
    with pytest.raises(pghub.HubStopped):
        hub.notify("lost")


def test_a_confirm_that_raises_leaves_the_future_alone(
    dsn: str, hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hubs.started(dsn)

    def explode(ok: bool) -> None:
        raise RuntimeError("confirm boom")

    assert hub.notify("boom", confirm=explode).result(5) is True
    wait_until(
        lambda: any("confirm callback raised" in r.getMessage() for r in caplog.records),
        what="the confirm error logged",
    )


def test_futures_compose_with_concurrent_futures_wait(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    futures = [hub.notify("many", [n]) for n in range(50)]
    done, not_done = concurrent.futures.wait(futures, timeout=10)
    assert not not_done
    assert all(f.result() for f in done)


# --- the constructor's type -----------------------------------------------------------------------


def test_the_constructor_type_checks_what_it_takes(tmp_path: Path) -> None:
    """``Hub(12345)`` passed mypy --strict while the constructor took Any."""
    mypy_api = pytest.importorskip("mypy.api")
    sample = tmp_path / "sample.py"
    sample.write_text(
        textwrap.dedent(
            """
            import pghub
            from psycopg_pool import AsyncConnectionPool, ConnectionPool

            def made(pool: ConnectionPool, apool: AsyncConnectionPool) -> None:
                pghub.Hub("dbname=app")
                pghub.Hub(pool)
                pghub.AsyncHub(apool)
                pghub.Hub(12345)
                pghub.AsyncHub(None)
            """
        )
    )
    out, err, status = mypy_api.run(
        ["--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(sample)]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1, out + err
    assert [line.split(":")[1] for line in errors] == ["9", "10"], out
    assert all('incompatible type "int"' in e or 'incompatible type "None"' in e for e in errors)
