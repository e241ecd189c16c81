"""A hub's life from start to stop.

Proves that start and stop are idempotent and bounded whenever they are called (before start,
at once, while still connecting, without waiting, on an exception in a ``with`` block), that
each consumer then gets exactly one STOP, that a stopped hub refuses to start again and gives a
late consumer STOP at once, that ``Hub.join`` and ``AsyncHub.wait_stopped`` wait for the end and
nothing else, and that a hub runs when its descriptors are numbered above 1024.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hubkit import HubPool, Recorder, free_port, send_raw, subscribed, wait_until, within

import pghub
from pghub import Action, Advisory

# --- start and stop ---------------------------------------------------------------------------


def test_stop_before_start_ends_the_hub_and_gives_consumers_stop_alone(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    rec = Recorder()
    hub.consumer(rec, "never")
    within(5, hub.stop)
    # The consumer still gets its one final advisory, and nothing else: it never connected.
    assert rec.wait_final() == Advisory(Action.STOP, final=True)
    assert rec.actions() == [Action.STOP]
    assert hub.stats().state == "stopped"
    within(5, hub.stop)  # idempotent
    with pytest.raises(pghub.HubStopped):
        hub.start()
    with pytest.raises(pghub.HubStopped):
        hub.notify("never", [1])


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


def test_start_then_stop_gives_one_connect_then_one_stop(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    rec = Recorder()
    hub.consumer(rec, "t")
    within(10, hub.start)
    within(10, hub.stop)
    # stop(wait=True) returns after every consumer had its STOP: no wait needed here.
    rec.assert_final_last(Action.STOP)
    assert rec.actions()[0] is Action.CONNECT
    assert rec.count(Action.CONNECT) == 1
    assert hub.stats().state == "stopped"


def test_start_and_stop_at_once_while_still_connecting(dsn: str) -> None:
    for _ in range(10):
        hub = pghub.Hub(dsn, retry_first_connect=True)
        rec = Recorder()
        hub.consumer(rec, "t")
        within(5, hub.start)
        within(10, hub.stop)
        rec.assert_final_last(Action.STOP)
        assert rec.count(Action.CONNECT) <= 1
        assert rec.count(Action.DISCONNECT) == 0


def test_start_is_idempotent_and_context_manager_stops(dsn: str) -> None:
    rec = Recorder()
    with pghub.Hub(dsn, name="cm") as hub:
        assert hub.name == "cm"
        hub.start()
        hub.consumer(rec, "t")
        rec.wait_advisory(Action.CONNECT)
        assert hub.stats().connects == 1
    rec.assert_final_last(Action.STOP)
    assert hub.stats().state == "stopped"


def test_the_context_manager_stops_on_an_exception(dsn: str) -> None:
    rec = Recorder()
    hub = pghub.Hub(dsn)

    def use_and_fail() -> None:
        with hub:
            hub.consumer(rec, "oops")
            subscribed(rec, "oops")
            raise KeyError("inside")

    with pytest.raises(KeyError):
        use_and_fail()
    rec.assert_final_last(Action.STOP)
    assert hub.stats().state == "stopped"


def test_stop_without_waiting_still_ends_every_consumer(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    within(10, hub.start)
    recorders = [Recorder(f"c{i}") for i in range(10)]
    for rec in recorders:
        hub.consumer(rec, "nowait")
    for rec in recorders:
        subscribed(rec, "nowait")
    within(1, hub.stop, wait=False)
    for rec in recorders:
        rec.wait_final(timeout=10)
        rec.assert_final_last(Action.STOP)
    wait_until(lambda: hub.stats().state == "stopped", what="state stopped")
    within(10, hub.stop)  # and waiting afterwards is fine


def test_a_consumer_after_stop_gets_stop_at_once_and_start_refuses(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    within(10, hub.start)
    within(10, hub.stop)
    rec = Recorder()
    hub.consumer(rec, "late")
    assert rec.wait_final() == pghub.Advisory(Action.STOP, final=True)
    with pytest.raises(pghub.HubStopped):
        hub.start()
    with pytest.raises(pghub.HubStopped):
        hub.notify("late")


# --- waiting for the end ----------------------------------------------------------------------


@pytest.fixture
def unreachable() -> str:
    """A conninfo whose port nobody listens on."""
    return f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres"


def test_join_waits_until_the_hub_has_stopped(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    assert not hub.join(0.05)
    hub.stop(wait=False)
    assert within(10, hub.join, 5)
    assert hub.state == "stopped"


def test_join_after_a_failed_first_connect_is_at_once(unreachable: str) -> None:
    hub = pghub.Hub(unreachable, connect_timeout=2)
    with pytest.raises(pghub.ConnectFailed):
        within(10, hub.start)
    assert hub.join(0)


def test_wait_stopped_waits_and_cancelling_it_leaves_the_hub_alone(dsn: str) -> None:
    async def main() -> tuple[bool, str, str]:
        hub = pghub.AsyncHub(dsn)
        await hub.start()
        try:
            await asyncio.wait_for(hub.wait_stopped(), 0.1)
            stopped_early = True
        except asyncio.TimeoutError:
            stopped_early = False
        state_after_cancel = hub.state
        await hub.stop(wait=False)
        await asyncio.wait_for(hub.wait_stopped(), 10)
        return stopped_early, state_after_cancel, hub.state

    stopped_early, state_after_cancel, state = asyncio.run(asyncio.wait_for(main(), 30))
    assert not stopped_early
    assert state_after_cancel == "connected"
    assert state == "stopped"


# --- where it runs ----------------------------------------------------------------------------


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
