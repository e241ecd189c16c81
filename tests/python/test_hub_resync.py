"""``on_resync``: "call this whenever what I hold may be stale" (docs/hub.md, Resync).

The order of calls is decided once for both hubs (``BaseConsumer._calls``) and is tested
here without a server; then on real hubs: which thread, before which event, after RECONNECT
and OVERFLOW, a failing resync retried, an async one awaited; and docs/hub.md's cache example,
as written, through a killed backend with writes made while the hub was away.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hubkit import AsyncRecorder, HubPool, Recorder, send_raw, terminate, wait_until, within

import pghub
from pghub import Action, Advisory, Event
from pghub._resync import DURABLE_RESYNC_AFTER, RESYNC_AFTER, Scope

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def hubs() -> Iterator[HubPool]:
    pool = HubPool()
    yield pool
    pool.stop_all()


def advisory(action: Action, topic: str | None = None, lost: int = 0) -> Event:
    return Event(
        None,
        (),
        Advisory(action, final=action in (Action.STOP, Action.CLOSE), topic=topic, lost=lost),
    )


def event(topic: str, n: int) -> Event:
    return Event(topic, (n,), None)


# --- the order of calls, without a server ---------------------------------------------------------


class Script:
    """A consumer of an unstarted hub, fed batches by hand; records the calls in order."""

    def __init__(self, fail: int = 0) -> None:
        self.hub = pghub.Hub("host=127.0.0.1")
        self.calls: list[str] = []
        self.fail = fail  # how many resyncs raise
        self.consumer = self.hub._make_consumer(
            None, [], queue_size=10, overflow="drop_oldest", keys=None, on_resync=self.resync
        )

    def resync(self, topics: frozenset[str]) -> None:
        self.calls.append(f"resync{sorted(topics)}")
        if self.fail:
            self.fail -= 1
            raise RuntimeError("database away")

    def callback(self, e: Event) -> None:
        a = e.advisory
        if a is None:
            self.calls.append(f"{e.topic}{e.key[0]}")
        else:
            self.calls.append(a.action.name + (f"({a.topic})" if a.topic else ""))

    def feed(self, *events: Event) -> list[str]:
        self.calls = []
        consumer = self.consumer
        for function, argument in consumer._calls(deque(events), self.callback):
            try:
                function(argument)
            except Exception:
                consumer._call_failed(function, argument)
        return self.calls


def test_first_subscribes_make_one_resync_after_the_burst_before_the_first_event() -> None:
    s = Script()
    got = s.feed(
        advisory(Action.CONNECT),
        advisory(Action.SUBSCRIBE, "a"),
        advisory(Action.SUBSCRIBE, "b"),
        event("a", 1),
        event("b", 2),
    )
    assert got == ["CONNECT", "SUBSCRIBE(a)", "SUBSCRIBE(b)", "resync['a', 'b']", "a1", "b2"]


def test_reconnect_and_overflow_resync_every_subscribed_topic_once() -> None:
    s = Script()
    s.feed(
        advisory(Action.CONNECT), advisory(Action.SUBSCRIBE, "a"), advisory(Action.SUBSCRIBE, "b")
    )
    assert s.feed(advisory(Action.DISCONNECT), advisory(Action.RECONNECT), event("a", 1)) == [
        "DISCONNECT",
        "RECONNECT",
        "resync['a', 'b']",
        "a1",
    ]
    assert s.feed(advisory(Action.OVERFLOW, lost=3), event("b", 2), event("b", 3)) == [
        "OVERFLOW",
        "resync['a', 'b']",
        "b2",
        "b3",
    ]
    # A subscribe later: only its topic.
    assert s.feed(advisory(Action.SUBSCRIBE, "c")) == ["SUBSCRIBE(c)", "resync['c']"]


def test_disconnect_takes_back_a_pending_resync_and_unsubscribe_its_topic() -> None:
    s = Script()
    s.feed(
        advisory(Action.CONNECT), advisory(Action.SUBSCRIBE, "a"), advisory(Action.SUBSCRIBE, "b")
    )
    # Connected again, then lost again before any event: nothing to resync while away.
    assert s.feed(advisory(Action.RECONNECT), advisory(Action.DISCONNECT)) == [
        "RECONNECT",
        "DISCONNECT",
    ]
    assert s.feed(advisory(Action.UNSUBSCRIBE, "a"), advisory(Action.RECONNECT)) == [
        "UNSUBSCRIBE(a)",
        "RECONNECT",
        "resync['b']",
    ]


def test_nothing_runs_after_the_final_advisory() -> None:
    s = Script()
    assert s.feed(
        advisory(Action.CONNECT), advisory(Action.SUBSCRIBE, "a"), advisory(Action.STOP)
    ) == [
        "CONNECT",
        "SUBSCRIBE(a)",
        "STOP",
    ]


def test_a_burst_that_goes_on_in_the_next_batch_resyncs_once() -> None:
    s = Script()
    s.consumer.mailbox.put_advisory(Advisory(Action.SUBSCRIBE, topic="b"))  # queued meanwhile
    assert s.feed(advisory(Action.CONNECT), advisory(Action.SUBSCRIBE, "a")) == [
        "CONNECT",
        "SUBSCRIBE(a)",
    ]
    assert s.feed(*s.consumer._take(), event("a", 1)) == ["SUBSCRIBE(b)", "resync['a', 'b']", "a1"]


def test_a_failed_resync_is_owed_again_after_a_backoff_and_events_go_on() -> None:
    s = Script(fail=1)
    assert s.feed(
        advisory(Action.CONNECT), advisory(Action.SUBSCRIBE, "a"), event("a", 1), event("a", 2)
    ) == [
        "CONNECT",
        "SUBSCRIBE(a)",
        "resync['a']",  # raised: not again before its backoff, events delivered meanwhile
        "a1",
        "a2",
    ]
    assert s.consumer.callback_errors == 1
    wait = s.consumer._resync_wait()
    assert wait is not None
    assert 0.4 <= wait <= 1.0
    owed = s.consumer._resync
    assert owed is not None
    owed._retry_at = time.monotonic()  # the backoff has passed
    assert s.feed(event("a", 3)) == ["resync['a']", "a3"]
    assert s.consumer._resync_wait() is None
    # A new reason makes a failed one due at once.
    s.fail = 1
    s.feed(advisory(Action.OVERFLOW, lost=1))
    assert s.feed(advisory(Action.RECONNECT)) == ["RECONNECT", "resync['a']"]


def test_the_table_of_advisories_that_owe_a_resync() -> None:
    """The one place a new advisory kind plugs in; a durable consumer loses nothing to a lost
    connection or a full queue: only its start and a GAP owe it a resync."""
    assert RESYNC_AFTER == {
        Action.SUBSCRIBE: Scope.TOPIC,
        Action.RECONNECT: Scope.ALL,
        Action.OVERFLOW: Scope.ALL,
        Action.GAP: Scope.TOPIC,
    }
    assert DURABLE_RESYNC_AFTER == {Action.SUBSCRIBE: Scope.TOPIC, Action.GAP: Scope.TOPIC}


# --- on a real hub --------------------------------------------------------------------------------


class Tracer:
    """A callback and an on_resync that record what ran, in which thread, in one list."""

    def __init__(self, *, fail: int = 0) -> None:
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.fail = fail
        self.running = 0
        self.overlapped = False

    def _enter(self, what: str) -> None:
        with self.lock:
            self.running += 1
            self.overlapped |= self.running > 1
            self.calls.append((what, threading.get_ident()))

    def _leave(self) -> None:
        with self.lock:
            self.running -= 1

    def callback(self, e: Event) -> None:
        self._enter(describe(e))
        time.sleep(0.001)
        self._leave()

    def on_resync(self, topics: frozenset[str]) -> None:
        self._enter(f"resync{sorted(topics)}")
        time.sleep(0.01)
        self._leave()
        if self.fail:
            self.fail -= 1
            raise RuntimeError("cannot reload now")

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.calls]


def describe(e: Event) -> str:
    a = e.advisory
    if a is None:
        return f"{e.topic}{list(e.key)}"
    return a.action.name + (f"({a.topic})" if a.topic else "")


def test_on_resync_runs_in_the_consumers_thread_before_the_first_event(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    trace = Tracer()
    consumer = hub.consumer(trace.callback, "r1", "r2", on_resync=trace.on_resync)
    assert consumer.wait_subscribed(5)
    send_raw(conn, "r1", "e1")
    wait_until(lambda: "r1[1]" in trace.names(), what="the event")
    names = trace.names()
    assert names[: names.index("r1[1]") + 1] == [
        "CONNECT",
        "SUBSCRIBE(r1)",
        "SUBSCRIBE(r2)",
        "resync['r1', 'r2']",
        "r1[1]",
    ]
    assert len({ident for _, ident in trace.calls}) == 1  # one thread, the consumer's
    assert not trace.overlapped


def test_on_resync_after_a_killed_backend(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn, reconnect_delay=0.05)
    trace = Tracer()
    hub.consumer(trace.callback, "k1", "k2", on_resync=trace.on_resync)
    wait_until(lambda: "resync['k1', 'k2']" in trace.names(), what="the first resync")
    pid = hub.stats().backend_pid
    assert pid is not None
    assert terminate(conn, [pid]) == 1
    wait_until(lambda: trace.names().count("resync['k1', 'k2']") == 2, what="a resync after it")
    names = trace.names()
    assert names[names.index("DISCONNECT") :] == ["DISCONNECT", "RECONNECT", "resync['k1', 'k2']"]
    send_raw(conn, "k2", "e2")
    wait_until(lambda: trace.names()[-1] == "k2[2]", what="events after it")


def test_on_resync_after_an_overflow_once_for_the_burst(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    release = threading.Event()
    resyncs: list[frozenset[str]] = []

    def slow(e: Event) -> None:
        if e.key == (0,):
            release.wait(10)

    hub.consumer(slow, "full", queue_size=3, on_resync=resyncs.append)
    wait_until(lambda: resyncs == [frozenset({"full"})], what="the first resync")
    send_raw(conn, "full", "e0")  # holds the consumer's thread
    wait_until(lambda: hub.stats().events_received == 1, what="the first event")
    with conn.transaction():
        for n in range(1, 50):
            send_raw(conn, "full", f"e{n}")
    wait_until(lambda: hub.stats().overflow_drops > 0, what="drops")
    release.set()
    wait_until(lambda: len(resyncs) == 2, what="a resync after OVERFLOW")
    time.sleep(0.2)
    assert resyncs == [frozenset({"full"})] * 2


def test_a_failing_on_resync_is_logged_counted_and_tried_again(
    dsn: str, hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hubs.started(dsn, name="failing")
    trace = Tracer(fail=1)
    hub.consumer(trace.callback, "again", on_resync=trace.on_resync, name="reloader")
    # No event comes: the retry runs on its own, once its backoff (0.5 to 1 s) has passed.
    wait_until(lambda: trace.names().count("resync['again']") == 2, timeout=5, what="a retry")
    assert hub.stats().callback_errors == 1
    (record,) = [r for r in caplog.records if "on_resync raised" in r.getMessage()]
    assert "consumer 'reloader'" in record.getMessage()
    assert getattr(record, "pghub_consumer", None) == "reloader"
    assert getattr(record, "pghub_hub", None) == "failing"
    assert record.exc_info is not None
    time.sleep(1.5)
    assert trace.names().count("resync['again']") == 2  # succeeded: not again


def test_an_async_on_resync_is_awaited_before_the_next_event(dsn: str) -> None:
    async def scenario() -> list[str]:
        order: list[str] = []

        async def reload(topics: frozenset[str]) -> None:
            order.append("reload started")
            await asyncio.sleep(0.05)
            order.append(f"reloaded {sorted(topics)}")

        async with pghub.AsyncHub(dsn) as hub:
            rec = AsyncRecorder(then=lambda e: _note(order, e))
            consumer = hub.consumer(rec, "ar", on_resync=reload)
            assert await consumer.wait_subscribed(5)
            await hub.notify("ar", [1])
            await rec.wait_events(1)
        return order

    order = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert order == [
        "CONNECT",
        "SUBSCRIBE(ar)",
        "reload started",
        "reloaded ['ar']",
        "ar[1]",
        "STOP",
    ]


async def _note(order: list[str], e: Event) -> None:
    order.append(describe(e))


# --- docs/hub.md's cache, through a killed backend ------------------------------------------------


def cache_class() -> Any:
    """The OrderStatus class of docs/hub.md, as written (the block up to its usage)."""
    text = (REPO / "docs" / "hub.md").read_text(encoding="utf-8")
    (block,) = [
        b
        for b in re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
        if "class OrderStatus" in b
    ]
    definitions = block.split("\ndsn = ")[0]
    namespace: dict[str, Any] = {}
    exec(compile(definitions, "docs/hub.md", "exec"), namespace)
    return namespace["OrderStatus"]


class EventsOnly:
    """The same cache without on_resync: what the docs warn about."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def on_event(self, e: Event) -> None:
        self.cache.on_event(e)


def table(conn: psycopg.Connection[Any]) -> dict[int, str]:
    return dict(conn.execute("SELECT id, status FROM orders").fetchall())


def test_the_docs_cache_converges_after_a_killed_backend_and_writes_made_meanwhile(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL)")
    conn.execute("INSERT INTO orders SELECT n, 'new' FROM generate_series(1, 20) AS n")
    conn.execute("SELECT pghub.publish_table('orders', level => 'row')")
    OrderStatus = cache_class()
    # A reconnect that waits long enough for the writes below to fall in the outage.
    hub = hubs.started(dsn, reconnect_delay=1.0, reconnect_max_delay=2.0)
    cache = OrderStatus(dsn)
    watched = Recorder("advisories")
    hub.consumer(cache.on_event, "orders", on_resync=cache.reload)
    hub.consumer(watched, "orders")
    blind = OrderStatus(dsn)  # events only: loaded once by hand, never resynced
    blind.reload(frozenset())
    hub.consumer(EventsOnly(blind).on_event, "orders")
    assert cache.loaded.wait(5)
    watched.wait_advisory(Action.SUBSCRIBE, "orders")
    conn.execute("UPDATE orders SET status = 'paid' WHERE id <= 3")  # heard by all
    wait_until(lambda: cache.status == blind.status == table(conn), what="events applied")

    pid = hub.stats().backend_pid
    assert pid is not None
    assert terminate(conn, [pid]) == 1
    watched.wait_advisory(Action.DISCONNECT)
    # While the hub is away (its reconnect waits at least 0.5 s): these events are lost.
    conn.execute("UPDATE orders SET status = 'shipped' WHERE id BETWEEN 4 AND 10")
    conn.execute("DELETE FROM orders WHERE id > 15")
    conn.execute("INSERT INTO orders VALUES (100, 'new'), (101, 'new')")
    assert hub.state == "disconnected", "the writes were not made during the outage"
    watched.wait_advisory(Action.RECONNECT, timeout=10)
    conn.execute("UPDATE orders SET status = 'paid' WHERE id = 100")  # heard again
    expected = table(conn)
    wait_until(lambda: cache.status == expected, timeout=10, what="the cache converged")
    wait_until(lambda: blind.status.get(100) == "paid", what="the blind cache's last event")
    assert blind.status != expected  # without on_resync, the outage's writes are missing
    within(10, hub.stop)
