"""A hub and a hot standby: it never says connected on a session that cannot LISTEN.

A read-only hot standby accepts connections but refuses LISTEN and NOTIFY (SQLSTATE 25006).
These tests run a private primary and, for each test, a fresh standby of it (``pg_basebackup
-R``), both on 127.0.0.1 with ports of their own, and check that a hub pointed at the standby
does not announce CONNECT or RECONNECT nor say ``connected``, keeps trying with backoff, and
hears once the standby is promoted. The servers are pgserver.py's: they run as the ``postgres`` OS
user, in a directory under /tmp that the fixtures delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pgserver
import pytest
from hubkit import HubPool, Recorder, free_port, send_raw, wait_until, within
from pgserver import Server

import pghub
from pghub import Action
from pghub.wire import encode_payload

pytestmark = pytest.mark.slow

FAST: dict[str, Any] = {"reconnect_delay": 0.05, "reconnect_max_delay": 0.3, "connect_timeout": 5}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with pgserver.workdir("pghub-standby-") as root:
        yield root


@pytest.fixture(scope="module")
def primary(workdir: Path) -> Iterator[Server]:
    with pgserver.running_server(workdir, "primary") as server:
        yield server


_standbys = iter(range(1, 1000))


def make_standby(primary: Server, workdir: Path) -> Server:
    """A streaming standby of ``primary`` (not started): ``pg_basebackup -R``."""
    standby = Server(f"standby{next(_standbys)}", workdir, free_port())
    pgserver.as_postgres(
        str(pgserver.bindir() / "pg_basebackup"),
        "--pgdata",
        str(standby.data),
        "--host=127.0.0.1",
        f"--port={primary.port}",
        "--username=postgres",
        "--write-recovery-conf",  # standby.signal and primary_conninfo
        "--wal-method=stream",
        "--checkpoint=fast",
        "--no-sync",
    )
    return standby


@pytest.fixture
def standby(primary: Server, workdir: Path) -> Iterator[Server]:
    """A fresh hot standby of the primary, running; stopped and deleted after the test."""
    server = make_standby(primary, workdir)
    try:
        server.start()
        assert server.in_recovery(), "the standby is not in recovery"
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data, ignore_errors=True)


def notify_on(server: Server, topic: str, key: int) -> None:
    with server.connect() as conn:
        send_raw(conn, topic, encode_payload([key], {"on": server.name}))


def assert_hears(rec: Recorder, server: Server, topic: str, key: int) -> None:
    """An event notified on ``server`` reaches the recorder (retried: a notify sent before
    the hub's LISTEN took effect is lost by design, so SUBSCRIBE is awaited first)."""
    notify_on(server, topic, key)
    rec.wait_for(
        lambda got: any(e.topic == topic and e.key == (key,) for e in got),
        timeout=10,
        what=f"{topic}[{key}] from {server.name}",
    )


def stays_deaf(hub: pghub.Hub, rec: Recorder, seconds: float) -> None:
    """For ``seconds``: no CONNECT/RECONNECT/SUBSCRIBE and never the ``connected`` state."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert hub.state != "connected", f"the hub says connected on a standby; {rec.describe()}"
        said = [a for a in rec.actions() if a in (Action.CONNECT, Action.RECONNECT)]
        said += [a for a in rec.actions() if a is Action.SUBSCRIBE]
        assert not said, f"the hub announced {said} on a standby; {rec.describe()}"
        time.sleep(0.02)


# --- a standby-only DSN is a failed first connect -----------------------------------------------


def test_start_on_a_standby_fails_like_a_failed_first_connect(
    standby: Server, hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hubs.make(standby.dsn(), **FAST)
    rec = Recorder()
    hub.consumer(rec, "orders")  # a LISTEN to make at the first connect
    started = time.monotonic()
    with pytest.raises(pghub.ConnectFailed, match="hot standby"):
        within(15, hub.start)
    assert time.monotonic() - started < 10
    assert hub.state == "stopped"
    assert Action.CONNECT not in rec.actions()
    assert rec.wait_final().action is Action.STOP
    assert any("25006" in r.getMessage() or "standby" in r.getMessage() for r in caplog.records)


def test_start_on_a_standby_fails_without_any_subscription(standby: Server, hubs: HubPool) -> None:
    """The usual order (start, then make consumers) must fail at start too, not later."""
    hub = hubs.make(standby.dsn(), **FAST)
    with pytest.raises(pghub.ConnectFailed, match="hot standby"):
        within(15, hub.start)
    assert hub.state == "stopped"


def test_retrying_on_a_standby_never_says_connected_until_it_is_promoted(
    standby: Server, hubs: HubPool
) -> None:
    hub = hubs.make(standby.dsn(), retry_first_connect=True, **FAST)
    rec = Recorder()
    hub.consumer(rec, "orders")
    within(5, hub.start)
    answers: list[bool] = []
    hub.notify("orders", [9], confirm=answers.append)  # a standby would refuse it: it waits
    stays_deaf(hub, rec, 1.5)
    assert hub.state == "connecting"
    assert hub.stats().connect_failures >= 3  # it keeps trying, with backoff
    assert hub.stats().connects == 0
    assert answers == []

    standby.promote()
    rec.wait_advisory(Action.CONNECT, timeout=10)
    rec.wait_advisory(Action.SUBSCRIBE, "orders", timeout=10)
    assert hub.state == "connected"
    wait_until(lambda: answers == [True], 10, "the queued notify confirmed")
    # Sent after the LISTEN, on the new primary: the hub hears its own notify.
    rec.wait_for(lambda got: any(e.key == (9,) for e in got), 10, "the queued notify's event")
    assert_hears(rec, standby, "orders", 1)
    assert Action.DISCONNECT not in rec.actions()  # nothing was announced before


def test_subscribing_after_start_on_a_retrying_hub_waits_for_the_promotion(
    standby: Server, hubs: HubPool
) -> None:
    """A consumer made while the hub keeps landing on the standby: nothing is announced to it
    until the hub hears, and then CONNECT and SUBSCRIBE in that order."""
    hub = hubs.make(standby.dsn(), retry_first_connect=True, **FAST)
    within(5, hub.start)
    wait_until(
        lambda: hub.stats().connect_failures >= 2 or hub.state == "connected", 10, "2 attempts"
    )
    rec = Recorder()
    hub.consumer(rec, "orders")
    stays_deaf(hub, rec, 1.0)
    standby.promote()
    rec.wait_advisory(Action.SUBSCRIBE, "orders", timeout=10)
    assert rec.actions()[:2] == [Action.CONNECT, Action.SUBSCRIBE]
    assert_hears(rec, standby, "orders", 2)


def test_an_async_hub_on_a_standby_fails_to_start_too(standby: Server) -> None:
    async def main() -> None:
        hub = pghub.AsyncHub(standby.dsn(), **FAST)
        with pytest.raises(pghub.ConnectFailed, match="hot standby"):
            await hub.start()
        await hub.stop()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_target_session_attrs_read_write_skips_a_standby_listed_first(
    primary: Server, standby: Server, hubs: HubPool
) -> None:
    """What docs/hub.md advises for multi-host DSNs: libpq passes over the standby."""
    dsn = (
        f"host=127.0.0.1,127.0.0.1 port={standby.port},{primary.port} dbname=postgres"
        " user=postgres target_session_attrs=read-write"
    )
    hub = hubs.started(dsn, **FAST)
    rec = Recorder()
    hub.consumer(rec, "orders")
    rec.wait_advisory(Action.SUBSCRIBE, "orders")
    assert hub.stats().connect_failures == 0
    assert_hears(rec, primary, "orders", 1)


# --- a connected hub that reconnects onto a standby --------------------------------------------


def test_a_reconnect_that_lands_on_a_standby_is_not_announced_until_it_hears(
    primary: Server, workdir: Path, hubs: HubPool
) -> None:
    """DSN ``host=a,b``: a is a standby (down at first), b the primary. The hub connects to b;
    then a comes up and the hub's session on b is ended: libpq's next attempt lands on a.
    The hub must say DISCONNECT and nothing more while it can only reach the standby, and
    RECONNECT once a is promoted and the hub listens there."""
    standby = make_standby(primary, workdir)
    try:
        dsn = (
            f"host=127.0.0.1,127.0.0.1 port={standby.port},{primary.port}"
            " dbname=postgres user=postgres application_name=pghub_standby_hub"
        )
        hub = hubs.make(dsn, **FAST)
        rec = Recorder()
        hub.consumer(rec, "orders")
        within(15, hub.start)
        rec.wait_advisory(Action.SUBSCRIBE, "orders")
        assert_hears(rec, primary, "orders", 1)

        standby.start()
        assert standby.in_recovery()
        with primary.connect() as conn:
            ended = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'pghub_standby_hub'"
            ).fetchall()
        assert ended, "the hub's session was not found on the primary"
        rec.wait_advisory(Action.DISCONNECT, timeout=10)
        failures = hub.stats().connect_failures
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert hub.state != "connected", f"connected on a standby; {rec.describe()}"
            assert Action.RECONNECT not in rec.actions(), f"RECONNECT while deaf; {rec.describe()}"
            time.sleep(0.02)
        assert hub.stats().connect_failures >= failures + 3  # landing on the standby, again
        assert hub.stats().connects == 1

        standby.promote()
        rec.wait_advisory(Action.RECONNECT, timeout=10)
        assert hub.state == "connected"
        assert_hears(rec, standby, "orders", 2)
        assert rec.count(Action.RECONNECT) == 1
        assert rec.count(Action.DISCONNECT) == 1
    finally:
        with contextlib.suppress(Exception):
            standby.stop()
        shutil.rmtree(standby.data, ignore_errors=True)
