"""A hub's figures (``hub.stats()``) and the process's (``pghub.stats()``).

Proves that every figure moves as docs/hub.md says, that HubStats is built from the engine's
counters and the consumers' figures by name (one source for each count), that events read from
a Subscription count as delivered, that a stopped hub's figures stay in the process totals, and
that closed consumers are forgotten while their figures stay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import weakref
from typing import Any

import psycopg
from hubkit import HubPool, Recorder, advisories_of, send_raw, subscribed, wait_until, within

import pghub
from pghub import Action, Advisory
from pghub._core import Counters
from pghub._hubbase import _ConsumerFigures


def test_stats_move_as_documented(dsn: str, conn: psycopg.Connection[Any]) -> None:
    hub = pghub.Hub(dsn)
    stats = hub.stats()
    assert stats.state == "new"
    assert (stats.connects, stats.consumers, stats.events_received) == (0, 0, 0)
    within(10, hub.start)
    stats = hub.stats()
    assert stats.state == "connected"
    assert stats.connects == 1
    assert stats.connect_failures == 0
    first, second = Recorder("first"), Recorder("second")
    a = hub.consumer(first, "s1")
    b = hub.consumer(second, "s1")
    subscribed(first, "s1")
    subscribed(second, "s1")
    stats = hub.stats()
    assert stats.consumers == 2
    assert stats.subscribes == 2
    assert stats.listens == 1  # one LISTEN serves both consumers
    assert stats.listen_failures == 0
    send_raw(conn, "s1", "e1")
    hub.notify("s1", [2])
    first.wait_events(2)
    second.wait_events(2)
    stats = hub.stats()
    assert stats.events_received == 2
    assert stats.events_delivered == 4
    assert stats.notifies == 1
    assert stats.notify_failures == 0
    assert stats.queue_high_water >= 1
    assert stats.send_queue_high_water >= 1
    a.unsubscribe("s1")
    first.wait_advisory(Action.UNSUBSCRIBE, "s1")
    assert hub.stats().unlistens == 0  # the other consumer still needs the channel
    b.close()
    second.wait_final()
    wait_until(lambda: hub.stats().unlistens == 1, what="UNLISTEN once nobody needs s1")
    stats = hub.stats()
    assert stats.consumers == 1
    assert stats.unlisten_failures == 0
    assert (stats.disconnects, stats.reconnects, stats.callback_errors) == (0, 0, 0)
    assert (stats.overflow_drops, stats.invalid_payloads) == (0, 0)
    within(10, hub.stop)
    assert hub.stats().state == "stopped"
    assert advisories_of(first.all())[-1] == Advisory(Action.STOP, final=True)


def test_hub_stats_are_the_counters_and_the_consumers_figures() -> None:
    """HubStats is built from the counters and the consumers' figures by name: every count
    has exactly one source."""
    counters = {f.name for f in dataclasses.fields(Counters)}
    figures = {f.name for f in dataclasses.fields(_ConsumerFigures)}
    assert not counters & figures
    stats = {f.name for f in dataclasses.fields(pghub.HubStats)}
    assert stats == counters | figures | {"name", "state", "consumers", "mailboxes", "backend_pid"}


def test_events_read_from_a_subscription_count_as_delivered(dsn: str) -> None:
    """A Subscription is read through the consumer's own delivery path, counted like a
    callback's (they were not counted before)."""

    async def main() -> tuple[list[Any], pghub.HubStats]:
        async with pghub.AsyncHub(dsn) as hub:
            async with hub.subscription("counted") as sub:
                for n in range(3):
                    hub.notify("counted", [n], n)
                got = []
                async for event in sub:
                    got.append(event.value)
                    if len(got) == 3:
                        break
            return got, hub.stats()

    got, stats = asyncio.run(asyncio.wait_for(main(), 30))
    assert got == [0, 1, 2]
    assert stats.events_delivered == 3


def test_closed_consumers_are_forgotten_but_their_figures_kept(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    closed: list[weakref.ref[pghub.Consumer]] = []
    for i in range(100):
        rec = Recorder()
        consumer = hub.consumer(rec, "churn")
        rec.wait_advisory(Action.SUBSCRIBE, "churn")
        hub.notify("churn", [i])
        rec.wait_events(1)
        consumer.close()
        rec.wait_final()
        closed.append(weakref.ref(consumer))
    del consumer
    hub.consumer(Recorder())  # a new consumer folds the finished ones away

    def kept() -> int:
        gc.collect()
        return sum(ref() is not None for ref in closed)

    # No list that grows with every consumer ever made: at most the last one closed (not yet
    # finished when the new one came) is still held, as the hub's list was allowed before.
    wait_until(lambda: kept() <= 1, what="the closed consumers let go")
    stats = hub.stats()
    assert stats.events_delivered == 100
    assert stats.consumers == 1


def test_process_wide_stats_count_hubs_and_totals(dsn: str) -> None:
    before = pghub.stats()
    hub = pghub.Hub(dsn)
    within(10, hub.start)
    answers: list[bool] = []
    for i in range(3):
        hub.notify("wide", [i], confirm=answers.append)
    wait_until(lambda: len(answers) == 3, what="3 confirms")
    during = pghub.stats()
    assert during.hubs_started == before.hubs_started + 1
    assert during.hubs == before.hubs + 1
    assert during.totals["notifies"] == before.totals["notifies"] + 3
    within(10, hub.stop)
    after = pghub.stats()
    assert after.hubs == before.hubs
    # A stopped hub's figures stay in the process totals.
    assert after.totals["notifies"] == before.totals["notifies"] + 3
    assert after.totals["connects"] == before.totals["connects"] + 1
