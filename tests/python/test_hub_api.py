"""The hub's options have one source, its figures come from the counters, and what tests
used to reach through private attributes has a public way: ``Hub.join``,
``AsyncHub.wait_stopped``, a Subscription read like any consumer."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubkit import HubPool, within

import pghub
from pghub._core import Counters
from pghub._hubbase import _ConsumerFigures
from pghub._options import HubOptionArgs, HubOptions

DOCS = Path(__file__).resolve().parents[2] / "docs" / "hub.md"
NOT_OPTIONS = {"name", "logger"}  # keyword arguments of the hubs that are not HubOptions


@pytest.fixture
def hubs() -> Iterator[HubPool]:
    pool = HubPool()
    yield pool
    pool.stop_all()


def _not_defaults() -> dict[str, Any]:
    """A value for every option that differs from its default."""
    other: dict[str, Any] = {}
    for field in dataclasses.fields(HubOptions):
        default = field.default
        if isinstance(default, bool):
            other[field.name] = not default
        elif field.name == "overflow":
            other[field.name] = "drop_newest"
        elif field.name == "reconnect_max_delay":
            other[field.name] = 60.0
        else:
            other[field.name] = default * 2
    return other


# --- options: one source -----------------------------------------------------------------------


def test_the_keyword_arguments_are_the_options_with_their_types() -> None:
    assert typing.get_type_hints(HubOptionArgs) == typing.get_type_hints(HubOptions)


@pytest.mark.parametrize("kind", [pghub.Hub, pghub.AsyncHub])
def test_every_option_reaches_the_hub(kind: type[pghub.Hub] | type[pghub.AsyncHub]) -> None:
    """batch_max_chars had drifted out of the constructors: every option is taken now."""
    wanted = _not_defaults()
    hub = kind("host=127.0.0.1", **wanted)
    assert dataclasses.asdict(hub.options) == wanted


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("batch_max_chars", 0, ValueError),
        ("batch_max_notifies", 0, ValueError),
        ("send_queue_size", 0, ValueError),
        ("queue_size", 0, ValueError),
        ("overflow", "block", ValueError),
        ("connect_timeout", float("nan"), ValueError),
        ("liveness_timeout", 10**6, ValueError),
        ("reconnect_delay", "1", TypeError),
    ],
)
def test_every_option_is_checked_when_the_hub_is_made(
    option: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=option):
        pghub.Hub("host=127.0.0.1", **{option: value})


def test_a_consumers_own_queue_settings_are_checked_the_same_way() -> None:
    hub = pghub.Hub("host=127.0.0.1")
    with pytest.raises(ValueError, match="queue_size must be at least 1"):
        hub.consumer(lambda e: None, queue_size=0)
    with pytest.raises(ValueError, match="overflow must be one of"):
        hub.consumer(lambda e: None, overflow="block")  # type: ignore[arg-type]


def _documented_options() -> dict[str, str]:
    """docs/hub.md's options table: option -> the first `...` of its default column."""
    text = DOCS.read_text()
    table = text.split("## Options", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\| `(\w+)` \| `([^`]*)`", line)
        if match:
            rows[match[1]] = match[2]
    return rows


def test_the_docs_list_every_option_with_its_default() -> None:
    documented = _documented_options()
    assert set(documented) - NOT_OPTIONS == {f.name for f in dataclasses.fields(HubOptions)}
    for field in dataclasses.fields(HubOptions):
        assert ast.literal_eval(documented[field.name]) == field.default, field.name


def test_hub_stats_are_the_counters_and_the_consumers_figures() -> None:
    """HubStats is built from the counters and the consumers' figures by name: every count
    has exactly one source."""
    counters = {f.name for f in dataclasses.fields(Counters)}
    figures = {f.name for f in dataclasses.fields(_ConsumerFigures)}
    assert not counters & figures
    stats = {f.name for f in dataclasses.fields(pghub.HubStats)}
    assert stats == counters | figures | {"name", "state", "consumers", "mailboxes", "backend_pid"}


# --- waiting for the end -----------------------------------------------------------------------


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


@pytest.fixture
def unreachable() -> str:
    """A conninfo whose port nobody listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"host=127.0.0.1 port={port} dbname=postgres user=postgres"
