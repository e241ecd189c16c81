"""pghub.testing's helpers on the real server: EventRecorder and its bounded waits, listen and
alisten, next_event over a subscription, FaultProxy.for_dsn and install_pghub. Most tests use
the plugin's own fixtures (pghub_hub, pghub_fault_proxy), with pghub_dsn bound to the
project's per-test database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pghub
from pghub import Action, Event
from pghub.install import installed_version
from pghub.testing import (
    EventRecorder,
    EventTimeout,
    FaultProxy,
    alisten,
    install_pghub,
    listen,
    next_event,
)


@pytest.fixture
def pghub_dsn(dsn: str) -> str:
    """The plugin's fixtures on this test's own database (tests/conftest.py)."""
    return dsn


def send(conn: psycopg.Connection[Any], topic: str, key: list[int], value: Any) -> None:
    """Commit an event from another session, as an application would."""
    pghub.sql_notify(conn, topic, key, value)


def test_listen_returns_once_listening(pghub_hub: pghub.Hub, conn: psycopg.Connection[Any]) -> None:
    """An event committed by another session right after listen() returns is received: LISTEN
    had taken effect (a consumer made with hub.consumer() alone gives no such promise)."""
    with listen(pghub_hub, "orders", "Invoices") as recorder:
        subscribed = {a.topic for a in recorder.advisories if a.action is Action.SUBSCRIBE}
        assert subscribed == {"orders", "invoices"}
        send(conn, "invoices", [1], "first")
        assert recorder.wait_for(timeout=5) == Event("invoices", (1,), "first")


def test_wait_for_matches_by_predicate_and_returns_each_event_once(
    pghub_hub: pghub.Hub, conn: psycopg.Connection[Any]
) -> None:
    recorder = listen(pghub_hub, "orders")
    for key, status in ((1, "new"), (2, "paid"), (3, "paid"), (4, "new")):
        send(conn, "orders", [key], {"status": status})
    paid = lambda e: e.value["status"] == "paid"  # noqa: E731
    assert recorder.wait_for(paid).key == (2,)
    assert recorder.wait_for(paid).key == (3,)
    # Events that an earlier wait passed over are still there for the next one.
    assert recorder.wait_for().key == (1,)
    assert recorder.wait_for().key == (4,)
    assert [e.key for e in recorder.events] == [(1,), (2,), (3,), (4,)]
    started = time.monotonic()
    with pytest.raises(EventTimeout, match=r"not within 0.3 s; received \d+: .*orders\[4\]"):
        recorder.wait_for(paid, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2


def test_a_timeout_is_an_assertion_error_naming_what_came(pghub_hub: pghub.Hub) -> None:
    recorder = listen(pghub_hub, "orders")

    def key_is_42(event: Event) -> bool:
        return event.key == (42,)

    with pytest.raises(AssertionError) as failure:
        recorder.wait_for(key_is_42, timeout=0.2)
    assert isinstance(failure.value, EventTimeout)
    assert "an event matching " in str(failure.value)
    assert "key_is_42" in str(failure.value)
    assert "SUBSCRIBE(orders)" in str(failure.value)


def test_wait_fails_at_once_when_the_consumer_has_ended(pghub_hub: pghub.Hub) -> None:
    recorder = listen(pghub_hub, "orders")
    recorder.close()
    recorder.wait_advisory(Action.CLOSE, timeout=5)
    started = time.monotonic()
    with pytest.raises(EventTimeout, match="the consumer has ended"):
        recorder.wait_for(timeout=30)
    assert time.monotonic() - started < 1


def test_wait_wakes_on_an_event_from_another_thread(pghub_hub: pghub.Hub) -> None:
    recorder = listen(pghub_hub, "orders")
    later = threading.Timer(0.2, lambda: pghub_hub.notify("orders", [9], "late"))
    later.start()
    try:
        started = time.monotonic()
        assert recorder.wait_for(timeout=5).value == "late"
        assert time.monotonic() - started < 4
    finally:
        later.cancel()


def test_listen_fails_within_its_timeout_when_the_server_is_gone(dsn: str) -> None:
    """A hub that lost its server: listen() cannot subscribe and says so within its bound."""
    with FaultProxy.for_dsn(dsn) as proxy:
        fast = {"reconnect_delay": 0.05, "reconnect_max_delay": 0.2}
        with pghub.Hub(proxy.dsn(dsn), **fast) as hub:
            proxy.refuse()
            proxy.reset()
            started = time.monotonic()
            with pytest.raises(EventTimeout, match=r"listen\('orders',\): not subscribed"):
                listen(hub, "orders", timeout=0.5)
            assert time.monotonic() - started < 3


def test_async_helpers(dsn: str, conn: psycopg.Connection[Any]) -> None:
    async def main() -> None:
        async with pghub.AsyncHub(dsn) as hub:
            recorder = await alisten(hub, "orders")
            send(conn, "orders", [1], "a")
            send(conn, "orders", [2], "b")
            event = await recorder.wait_for_async(lambda e: e.key == (2,), timeout=5)
            assert event.value == "b"
            assert (await recorder.wait_for_async(timeout=5)).value == "a"
            with pytest.raises(EventTimeout, match=r"not within 0\.2 s"):
                await recorder.wait_for_async(timeout=0.2)

            async with hub.subscription("invoices") as invoices:
                await hub.notify("invoices", [1], "skipped")
                await hub.notify("invoices", [2], "wanted")
                found = await next_event(invoices, lambda e: e.key == (2,), timeout=5)
                assert found.value == "wanted"
                with pytest.raises(EventTimeout, match=r"not within 0\.2 s"):
                    await next_event(invoices, timeout=0.2)
                # The loop kept running while next_event waited.
                await hub.notify("invoices", [3], "after")
                assert (await next_event(invoices, timeout=5)).key == (3,)
        # The hub stopped: the subscription has ended and says so at once.
        started = time.monotonic()
        with pytest.raises(EventTimeout, match="ended"):
            await next_event(invoices, timeout=30)
        assert time.monotonic() - started < 1

    asyncio.run(asyncio.wait_for(main(), 60))


def test_recorder_wakes_async_waiters_from_a_sync_hub_thread(pghub_hub: pghub.Hub) -> None:
    """A sync hub's consumer thread records; a coroutine on another thread's loop waits."""
    recorder = listen(pghub_hub, "orders")

    async def main() -> Event:
        threading.Timer(0.2, lambda: pghub_hub.notify("orders", [5], "x")).start()
        return await recorder.wait_for_async(timeout=5)

    started = time.monotonic()
    assert asyncio.run(main()).key == (5,)
    assert time.monotonic() - started < 4


def test_recorder_as_a_plain_callback() -> None:
    recorder = EventRecorder()
    recorder(Event("a", (1,), None))
    recorder(Event(None, (), pghub.Advisory(Action.STOP, final=True)))
    assert recorder.events == [Event("a", (1,), None)]
    assert recorder.wait_for(lambda e: e.key == (1,), timeout=0) == Event("a", (1,), None)
    assert recorder.wait_advisory(Action.STOP, timeout=0).final
    recorder.close()  # no consumer: nothing to do


def test_fault_proxy_for_dsn(dsn: str) -> None:
    with FaultProxy.for_dsn(dsn + " port=5432") as proxy:
        assert proxy.target == ("127.0.0.1", 5432)
        with psycopg.connect(proxy.dsn(dsn), connect_timeout=5) as through:
            assert through.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(ValueError, match="Unix socket"):
        FaultProxy.for_dsn("dbname=x")
    with pytest.raises(ValueError, match="Unix socket"):
        FaultProxy.for_dsn("host=/var/run/postgresql dbname=x")
    with pytest.raises(ValueError, match="one server"):
        FaultProxy.for_dsn("host=a,b dbname=x")
    assert FaultProxy.for_dsn("host=db.example port=6543").target == ("db.example", 6543)


def test_fault_proxy_without_a_lifetime_outlives_the_default(dsn: str) -> None:
    with FaultProxy.for_dsn(dsn, lifetime=None) as proxy:
        assert proxy._deadline == float("inf")
    with FaultProxy.for_dsn(dsn, lifetime=0.2) as proxy:
        c = psycopg.connect(proxy.dsn(dsn), connect_timeout=5)
        try:
            deadline = time.monotonic() + 5
            while proxy.connections:
                assert time.monotonic() < deadline, "the proxy outlived its lifetime"
                time.sleep(0.02)
        finally:
            c.close()


def test_fault_proxy_fixture_black_hole(
    pghub_fault_proxy: FaultProxy, pghub_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """A black-holed link: the hub notices only through its liveness probe, then reconnects."""
    options = {"liveness_timeout": 0.5, "reconnect_delay": 0.05, "reconnect_max_delay": 0.2}
    with pghub.Hub(pghub_fault_proxy.dsn(pghub_dsn), **options) as hub:
        recorder = listen(hub, "orders")
        pghub_fault_proxy.blackhole()
        recorder.wait_advisory(Action.DISCONNECT, timeout=10)
        recorder.wait_advisory(Action.RECONNECT, timeout=10)
        send(conn, "orders", [1], "after")
        assert recorder.wait_for(timeout=5).value == "after"


def test_install_pghub_loader(empty_database: Callable[[], str]) -> None:
    target = psycopg.conninfo.conninfo_to_dict(empty_database())
    # As pytest-postgresql calls a loader: these keywords, password None, its own autocommit.
    install_pghub(
        host=target["host"],
        port=target["port"],
        user=target["user"],
        dbname=target["dbname"],
        password=None,
        autocommit=False,
    )
    with psycopg.connect(**target) as check:
        assert installed_version(check) == ("extension", "0.3")  # the server has the files
    install_pghub(**target)  # a second time changes nothing
    with psycopg.connect(**target) as check:
        assert installed_version(check) == ("extension", "0.3")
