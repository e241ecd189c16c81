"""The hub's options, connection settings and sending rules, against the real server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hubkit import HubPool, Recorder, wait_until, within
from psycopg_pool import ConnectionPool

import pghub
from pghub import Action


@pytest.fixture
def hubs() -> Iterator[HubPool]:
    pool = HubPool()
    yield pool
    pool.stop_all()


def test_a_psycopg_pool_gives_its_settings_not_its_connections(dsn: str, hubs: HubPool) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        hub = hubs.started(pool, name="pooled")  # type: ignore[arg-type]
        rec = Recorder()
        hub.consumer(rec, "pooled")
        rec.wait_advisory(Action.SUBSCRIBE, "pooled")
        with pool.connection(timeout=5) as conn:  # the pool's only slot is still free
            conn.execute("SELECT pghub.notify('pooled', ARRAY[1])")
        assert rec.wait_events(1)[0].key == (1,)


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


def test_identical_notifies_from_separate_calls_are_all_delivered(dsn: str, hubs: HubPool) -> None:
    """PostgreSQL folds identical notifications of one transaction; batching must not."""
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "same")
    rec.wait_advisory(Action.SUBSCRIBE, "same")
    for _ in range(200):
        hub.notify("same", [1], {"x": 1})
    assert len(rec.wait_events(200)) == 200
    # ... while one notify_many asks for them to share a transaction, and they fold.
    hub.notify_many([("same", [2], None)] * 3 + [("same", [3], None)])
    events = rec.wait_events(202)
    assert [e.key for e in events[200:]] == [(2,), (3,)]


def test_send_queue_full_raises_instead_of_growing_without_bound(hubs: HubPool) -> None:
    hub = hubs.make(
        "host=127.0.0.1 port=1 connect_timeout=1", retry_first_connect=True, send_queue_size=3
    )
    within(5, hub.start)
    answers: list[bool] = []
    for i in range(3):
        hub.notify("t", [i], confirm=answers.append)
    with pytest.raises(pghub.SendQueueFull, match="send_queue_size=3"):
        hub.notify("t", [4])
    within(10, hub.stop)
    assert answers == [False, False, False]  # never connected: never sent, and said so


def test_a_closed_consumer_refuses_to_subscribe(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec, "a")
    consumer.close()
    rec.wait_final()
    with pytest.raises(pghub.ConsumerClosed):
        consumer.subscribe("b")
    with pytest.raises(pghub.InvalidTopic):  # bad input is still reported as such
        consumer.subscribe("no-dash")


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


def test_bad_options_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="overflow"):
        pghub.Hub("", overflow="block")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="liveness_timeout"):
        pghub.Hub("", liveness_timeout=0)
    with pytest.raises(ValueError, match="reconnect_max_delay"):
        pghub.Hub("", reconnect_delay=5, reconnect_max_delay=1)
    with pytest.raises(TypeError, match="conninfo"):
        pghub.Hub(42)


DAYS = 86_400.0


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


def test_stop_from_a_confirm_callback_does_not_deadlock(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    within(10, hub.start)
    rec = Recorder()
    hub.consumer(rec)
    stopped = threading.Event()

    def confirm(ok: bool) -> None:
        hub.stop(wait=True)  # on the engine thread: must return, not wait for itself
        stopped.set()

    hub.notify("t", confirm=confirm)
    assert stopped.wait(10)
    rec.wait_final(timeout=10)
    wait_until(lambda: hub.state == "stopped", what="the hub to stop")


def test_a_consumer_that_changes_its_value_changes_nothing_for_the_others(
    dsn: str, hubs: HubPool
) -> None:
    hub = hubs.started(dsn)

    def vandal(event: pghub.Event) -> None:
        if isinstance(event.value, dict):
            event.value["flat"] = "changed"
            event.value["nested"]["list"].append("changed")
            event.value["nested"]["list"][0]["x"] = "changed"

    recorders = [Recorder("vandal", then=vandal), Recorder("a"), Recorder("b")]
    for rec in recorders:
        hub.consumer(rec, "shared")
        rec.wait_advisory(Action.SUBSCRIBE, "shared")
    value = {"flat": 1, "nested": {"list": [{"x": 1}, 2]}}
    for _ in range(3):
        hub.notify("shared", [1], value)
        hub.notify("shared", [2], [1, [2, {"y": 3}]])
    for rec in recorders[1:]:
        events = rec.wait_events(6)
        assert [e.value for e in events] == [value, [1, [2, {"y": 3}]]] * 3
    vandalised = recorders[0].wait_events(6)[0].value
    assert vandalised["nested"]["list"][0]["x"] == "changed"  # the vandal did change its own
    values = [e.value for rec in recorders for e in rec.events()]
    assert len({id(v) for v in values}) == len(values)  # no two deliveries share a container


def test_a_notify_made_after_subscribe_goes_out_after_its_listen(dsn: str, hubs: HubPool) -> None:
    """Without waiting for SUBSCRIBE: commands queued before a notify are sent before it."""
    hub = hubs.started(dsn)
    recorders = []
    for i in range(50):
        rec = Recorder(f"c{i}")
        recorders.append(rec)
        hub.consumer(rec, f"fresh_{i}")
        hub.notify(f"fresh_{i}", [i])
    for i, rec in enumerate(recorders):
        assert [e.key for e in rec.wait_events(1)] == [(i,)], rec.describe()


def test_stop_sends_what_was_queued_before_it_subscriptions_first(dsn: str) -> None:
    """The README's pattern: subscribe, notify, leave the with block at once."""
    for i in range(10):
        rec = Recorder()
        with pghub.Hub(dsn) as hub:
            hub.consumer(rec, "at_exit")
            hub.notify("at_exit", [i])
        assert [e.key for e in rec.events()] == [(i,)], rec.describe()
        rec.assert_final_last(Action.STOP)


def test_closed_consumers_are_forgotten_but_their_figures_kept(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    for i in range(100):
        rec = Recorder()
        consumer = hub.consumer(rec, "churn")
        rec.wait_advisory(Action.SUBSCRIBE, "churn")
        hub.notify("churn", [i])
        rec.wait_events(1)
        consumer.close()
        rec.wait_final()
    hub.consumer(Recorder())  # a new consumer folds the finished ones away
    assert len(hub._consumers) <= 2  # no list that grows with every consumer ever made
    stats = hub.stats()
    assert stats.events_delivered == 100
    assert stats.consumers == 1
