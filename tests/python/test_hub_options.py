"""The hub's options and its connection settings.

Proves that every option has one source (its type, default and check in HubOptions, and a row
in docs/hub.md), reaches Hub and AsyncHub alike and is checked when the hub is made, values the
OS cannot take included, while the longest values allowed work; that a psycopg_pool pool gives
its settings, not its connections; that the session is named after the hub unless the caller
named it; and that a given logger is the one used.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import re
import typing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hubkit import HubPool, Recorder, send_raw, subscribed, wait_until
from psycopg_pool import ConnectionPool

import pghub
from pghub import Action, Event
from pghub._options import HubOptionArgs, HubOptions

DOCS = Path(__file__).resolve().parents[2] / "docs" / "hub.md"
NOT_OPTIONS = {"name", "logger"}  # keyword arguments of the hubs that are not HubOptions
DAYS = 86_400.0


# --- one source -------------------------------------------------------------------------------


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
        elif field.name == "ticker":  # None, True or False
            other[field.name] = True
        elif default is None:  # the JSON hooks: any function is not the default
            other[field.name] = str
        else:
            other[field.name] = default * 2
    return other


def test_the_keyword_arguments_are_the_options_with_their_types() -> None:
    assert typing.get_type_hints(HubOptionArgs) == typing.get_type_hints(HubOptions)


@pytest.mark.parametrize("kind", [pghub.Hub, pghub.AsyncHub])
def test_every_option_reaches_the_hub(kind: type[pghub.Hub] | type[pghub.AsyncHub]) -> None:
    """batch_max_chars had drifted out of the constructors: every option is taken now."""
    wanted = _not_defaults()
    hub = kind("host=127.0.0.1", **wanted)
    assert dataclasses.asdict(hub.options) == wanted


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


# --- checked when the hub is made -------------------------------------------------------------


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


def test_bad_options_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="overflow"):
        pghub.Hub("", overflow="block")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="liveness_timeout"):
        pghub.Hub("", liveness_timeout=0)
    with pytest.raises(ValueError, match="reconnect_max_delay"):
        pghub.Hub("", reconnect_delay=5, reconnect_max_delay=1)
    with pytest.raises(TypeError, match="conninfo"):
        pghub.Hub(42)


@pytest.mark.parametrize("make", [pghub.Hub, pghub.AsyncHub], ids=["Hub", "AsyncHub"])
@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        # keepalives_idle = liveness_timeout/3 > 32767 s: the kernel refuses TCP_KEEPIDLE
        ("liveness_timeout", 3 * DAYS, "at most 98301"),
        ("liveness_timeout", 98_301 + 3.0, "at most 98301"),
        ("liveness_timeout", float("inf"), "finite"),
        ("liveness_timeout", float("nan"), "finite"),
        ("connect_timeout", float("nan"), "finite"),
        ("connect_timeout", float("inf"), "finite"),
        ("reconnect_delay", float("nan"), "finite"),
        ("reconnect_max_delay", float("nan"), "finite"),
    ],
)
def test_values_the_os_cannot_take_are_refused_at_construction(
    make: Any, option: str, value: float, says: str
) -> None:
    """Refused with a ValueError that names the option and its range, by Hub and AsyncHub
    alike (not by the kernel at every connect, nor by poll() inside the engine)."""
    with pytest.raises(ValueError, match=f"{option} must .*{says}"):
        make("", **{option: value})


def test_the_longest_liveness_timeout_allowed_is_one_the_os_takes(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn, liveness_timeout=98_301)
    rec = Recorder()
    hub.consumer(rec, "longlived")
    rec.wait_advisory(Action.SUBSCRIBE, "longlived")
    hub.notify("longlived", [1])
    assert rec.wait_events(1)[0].key == (1,)


def test_a_connect_timeout_of_weeks_does_not_end_the_engine(dsn: str, hubs: HubPool) -> None:
    """A deadline further away than poll() can wait (2**31-1 ms, 24.8 days) is waited for in
    steps; it used to raise OverflowError in the engine, which then stopped."""
    hub = hubs.started(dsn, connect_timeout=30 * DAYS, reconnect_max_delay=60 * DAYS)
    assert hub.state == "connected"
    rec = Recorder()
    hub.consumer(rec, "patient")
    rec.wait_advisory(Action.SUBSCRIBE, "patient")


# --- connection settings ----------------------------------------------------------------------


def test_a_psycopg_pool_gives_its_settings_not_its_connections(dsn: str, hubs: HubPool) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        hub = hubs.started(pool, name="pooled")  # type: ignore[arg-type]
        rec = Recorder()
        hub.consumer(rec, "pooled")
        rec.wait_advisory(Action.SUBSCRIBE, "pooled")
        with pool.connection(timeout=5) as conn:  # the pool's only slot is still free
            conn.execute("SELECT pghub.notify('pooled', ARRAY[1])")
        assert rec.wait_events(1)[0].key == (1,)


def test_a_pool_is_accepted_and_its_slots_are_not_used(dsn: str) -> None:
    pool_module = pytest.importorskip("psycopg_pool")
    pool = pool_module.ConnectionPool(dsn, min_size=1, max_size=1, open=True)
    try:
        rec = Recorder()
        with pghub.Hub(pool) as hub:
            hub.consumer(rec, "pooled")
            subscribed(rec, "pooled")
            hub.notify("pooled", [1])
            assert rec.wait_events(1) == [Event("pooled", (1,), None)]
            # The hub has a session of its own: the pool's one slot is still free.
            with pool.connection(timeout=2) as c:
                assert c.execute("SELECT 1").fetchone() == (1,)
        rec.assert_final_last(Action.STOP)
    finally:
        pool.close()


def test_the_session_is_named_after_the_hub(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn, name="orders_hub")
    pid = hub.stats().backend_pid
    row = conn.execute(
        "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    assert row == ("pghub:orders_hub",)


def test_the_session_names_itself_and_keeps_the_callers_settings(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn, name="orders_hub")
    pid = hub.stats().backend_pid
    row = conn.execute(
        "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    assert row == ("pghub:orders_hub",)
    other = hubs.started(dsn + " application_name=mine")
    row = conn.execute(
        "SELECT application_name FROM pg_stat_activity WHERE pid = %s",
        (other.stats().backend_pid,),
    ).fetchone()
    assert row == ("mine",)


def test_a_given_logger_receives_callback_errors(
    dsn: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("pghub_test.custom")
    caplog.set_level(logging.ERROR, logger="pghub_test.custom")

    def explode(event: Event) -> None:
        if event.topic is not None:
            raise ValueError("custom boom")

    with pghub.Hub(dsn, logger=logger) as hub:
        rec = Recorder(then=explode)
        hub.consumer(rec, "custom")
        subscribed(rec, "custom")
        send_raw(conn, "custom", "e1")
        rec.wait_events(1)
        wait_until(
            lambda: any(r.name == "pghub_test.custom" and r.exc_info for r in caplog.records),
            what="the traceback on the given logger",
        )
