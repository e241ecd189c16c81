"""The first connection, when it does not simply work.

Proves that with a server refusing, silent, or without the database, ``start()`` raises
ConnectFailed within bounded time (after connect_timeout for a silent one), also when the first
session dies before its LISTENs are in; and that with ``retry_first_connect`` the hub keeps
trying, announces nothing until it hears, then gives CONNECT and SUBSCRIBE. Hot standbys are
proved in test_hub_standby.py.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
import pytest
from hubkit import FAST, HubPool, Recorder, assert_flows, wait_until, within

import pghub
from pghub import Action
from pghub.testing import FaultProxy


def test_server_unreachable_without_retry_raises_connect_failed_fast(
    dsn: str, proxy: FaultProxy
) -> None:
    proxy.refuse()
    hub = pghub.Hub(proxy.dsn(dsn))
    rec = Recorder()
    hub.consumer(rec)
    started = time.monotonic()
    with pytest.raises(pghub.ConnectFailed):
        within(5, hub.start)
    assert time.monotonic() - started < 3
    within(5, hub.stop)
    rec.assert_final_last(Action.STOP)
    assert rec.count(Action.CONNECT) == 0


def test_silent_server_at_start_raises_connect_failed_after_connect_timeout(
    dsn: str, proxy: FaultProxy
) -> None:
    proxy.blackhole(new_connections=True)
    hub = pghub.Hub(proxy.dsn(dsn), connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(pghub.ConnectFailed):
        within(10, hub.start)
    waited = time.monotonic() - started
    assert 0.9 <= waited < 5, waited
    within(5, hub.stop)


def test_a_database_that_does_not_exist_fails_the_first_connect_and_the_retries(dsn: str) -> None:
    wrong = psycopg.conninfo.make_conninfo(dsn, dbname="pghub_no_such_database")
    hub = pghub.Hub(wrong, connect_timeout=2)
    with pytest.raises(pghub.ConnectFailed) as info:
        within(5, hub.start)
    assert "pghub_no_such_database" in str(info.value)
    within(5, hub.stop)
    retrying = pghub.Hub(wrong, retry_first_connect=True, **FAST)
    within(2, retrying.start)
    try:
        wait_until(lambda: retrying.stats().connect_failures >= 3, what="3 failed attempts")
        assert retrying.stats().connects == 0
    finally:
        within(5, retrying.stop)


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


def test_server_unreachable_at_start_then_appearing(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    proxy.refuse()
    hub = hubs.make(proxy.dsn(dsn), retry_first_connect=True, **FAST)
    rec = Recorder()
    hub.consumer(rec, "late")
    started = time.monotonic()
    within(2, hub.start)
    assert time.monotonic() - started < 1
    wait_until(lambda: hub.stats().connect_failures >= 2, timeout=5, what="retries")
    assert hub.stats().state in ("connecting", "disconnected")
    assert rec.actions() == []  # nothing to tell before the first connection
    proxy.accept()
    rec.wait_advisory(Action.CONNECT, timeout=5)
    rec.wait_advisory(Action.SUBSCRIBE, "late")
    assert rec.actions() == [Action.CONNECT, Action.SUBSCRIBE]
    assert_flows(hub, rec, conn, "late")
    assert hub.stats().connects == 1
