"""Helpers for the hub's tests, in one place: recording callbacks with bounded waits, bounded
calls (threads and coroutines), server-side tools, hubs that never outlive their test, and
the faults' helpers (the hub's session found by name, a link cut, events that must flow).

A :class:`Recorder` is a consumer callback that keeps everything it receives. Its waits
are bounded: when the awaited thing does not come, they fail with an AssertionError that
lists what did come, so a lost event fails fast and explains itself.

The fixtures built on these (``hubs``, ``proxy``) are in ``conftest.py`` beside this module.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import psycopg

import pghub
from pghub import Action, Advisory, Event
from pghub.testing import FaultProxy

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
_SHOWN = 12  # events shown at each end of a failure message


def describe_event(event: Event) -> str:
    """A short, readable form of one event or advisory."""
    advisory = event.advisory
    if advisory is None:
        value = repr(event.value)
        if len(value) > 60:
            value = value[:57] + "..."
        return f"{event.topic}{list(event.key)}={value}"
    text = advisory.action.name
    if advisory.topic is not None:
        text += f"({advisory.topic})"
    if advisory.action is Action.OVERFLOW:
        text += f"(lost={advisory.lost})"
    return text + ("!" if advisory.final else "")


def describe_events(events: list[Event]) -> str:
    """Counts by kind, then the first and last few events (the middle elided)."""
    counts = collections.Counter(
        e.advisory.action.name if e.advisory is not None else "event" for e in events
    )
    summary = ", ".join(f"{name}={n}" for name, n in sorted(counts.items())) or "nothing"
    if len(events) <= 2 * _SHOWN:
        shown = [describe_event(e) for e in events]
    else:
        shown = [describe_event(e) for e in events[:_SHOWN]]
        shown.append(f"... {len(events) - 2 * _SHOWN} more ...")
        shown += [describe_event(e) for e in events[-_SHOWN:]]
    return f"{len(events)} received ({summary}): " + " ".join(shown)


def advisories_of(events: Iterable[Event]) -> list[Advisory]:
    return [a for a in (e.advisory for e in events) if a is not None]


def ordinary(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if e.topic is not None]


def _is(advisory: Advisory, action: Action, topic: str | None) -> bool:
    return advisory.action is action and (topic is None or advisory.topic == topic)


def _matches(event: Event, action: Action, topic: str | None) -> bool:
    advisory = event.advisory
    return advisory is not None and _is(advisory, action, topic)


class _Log:
    """What recorders share: the list of events and the ways to look at it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._events: list[Event] = []
        # Running counts, so that waits on long streams stay cheap.
        self._n_ordinary = 0
        self._n_advisory: collections.Counter[tuple[Action, str | None]] = collections.Counter()
        self._n_final = 0

    def _record(self, event: Event) -> None:
        self._events.append(event)
        advisory = event.advisory
        if advisory is None:
            self._n_ordinary += 1
            return
        self._n_advisory[advisory.action, None] += 1
        if advisory.topic is not None:
            self._n_advisory[advisory.action, advisory.topic] += 1
        self._n_final += advisory.final

    def _seen(self, action: Action, topic: str | None) -> int:
        return self._n_advisory[action, topic]

    def all(self) -> list[Event]:
        """Everything received so far, advisories included, in arrival order."""
        return list(self._events)

    def events(self) -> list[Event]:
        """The ordinary events received so far (no advisories)."""
        return ordinary(self.all())

    def advisories(self) -> list[Advisory]:
        """The advisories received so far."""
        return advisories_of(self.all())

    def actions(self) -> list[Action]:
        return [a.action for a in self.advisories()]

    def count(self, action: Action, topic: str | None = None) -> int:
        """How many advisories of ``action`` (on ``topic``, when given) arrived."""
        return sum(1 for e in self.all() if _matches(e, action, topic))

    def describe(self) -> str:
        return f"{self.name}: {describe_events(self.all())}"

    def assert_final_last(self, action: Action) -> None:
        """Exactly one final advisory, of ``action``, and nothing after it."""
        got = self.all()
        finals = [i for i, e in enumerate(got) if e.advisory is not None and e.advisory.final]
        assert len(finals) == 1, f"expected one final advisory; {self.describe()}"
        last = got[finals[0]].advisory
        assert last is not None
        assert last.action is action, f"final advisory {last.action}, not {action}"
        assert finals[0] == len(got) - 1, f"events after the final advisory; {self.describe()}"

    def _fail(self, what: str, timeout: float) -> AssertionError:
        return AssertionError(f"{what}: not within {timeout} s; {self.describe()}")


class Recorder(_Log):
    """A consumer callback for the sync Hub that records every event, thread-safely.

    ``then`` runs after an event is recorded (in the consumer's thread), for tests that
    act from inside a callback.
    """

    def __init__(
        self,
        name: str = "recorder",
        *,
        then: Callable[[Event], None] | None = None,
    ) -> None:
        super().__init__(name)
        self._cond = threading.Condition()
        self._then = then
        self.threads: set[int] = set()  # idents of the threads that ran this callback

    def __call__(self, event: Event) -> None:
        with self._cond:
            self._record(event)
            self.threads.add(threading.get_ident())
            self._cond.notify_all()
        if self._then is not None:
            self._then(event)

    def all(self) -> list[Event]:
        with self._cond:
            return list(self._events)

    def wait_for(
        self,
        predicate: Callable[[list[Event]], bool],
        timeout: float = DEFAULT_TIMEOUT,
        what: str = "condition",
    ) -> list[Event]:
        """Wait until ``predicate(everything received)`` holds; returns that list.

        The predicate sees the live list under the lock: it must be quick and not keep it.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._events):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._fail(what, timeout)
                self._cond.wait(left)
            return list(self._events)

    def wait_advisory(
        self,
        action: Action,
        topic: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        count: int = 1,
    ) -> Advisory:
        """Wait for the ``count``-th advisory of ``action`` (on ``topic``); returns it."""
        got = self.wait_for(
            lambda _: self._seen(action, topic) >= count,
            timeout,
            f"{action.name}{'(' + topic + ')' if topic else ''} x{count}",
        )
        return [a for a in advisories_of(got) if _is(a, action, topic)][count - 1]

    def wait_events(self, n: int, timeout: float = DEFAULT_TIMEOUT) -> list[Event]:
        """Wait until at least ``n`` ordinary events arrived; returns all of them."""
        got = self.wait_for(lambda _: self._n_ordinary >= n, timeout, f"{n} events")
        return ordinary(got)

    def wait_final(self, timeout: float = DEFAULT_TIMEOUT) -> Advisory:
        """Wait for the final advisory (STOP or CLOSE); returns it."""
        got = self.wait_for(lambda _: self._n_final > 0, timeout, "final advisory")
        return next(a for a in advisories_of(got) if a.final)


class AsyncRecorder(_Log):
    """A coroutine callback for AsyncHub that records every event, with awaitable waits.

    Make it inside the running event loop (its wake-up event belongs to that loop).
    """

    def __init__(
        self,
        name: str = "recorder",
        *,
        then: Callable[[Event], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(name)
        self._changed = asyncio.Event()
        self._then = then

    async def __call__(self, event: Event) -> None:
        self._record(event)
        self._changed.set()
        if self._then is not None:
            await self._then(event)

    async def wait_for(
        self,
        predicate: Callable[[list[Event]], bool],
        timeout: float = DEFAULT_TIMEOUT,
        what: str = "condition",
    ) -> list[Event]:
        deadline = time.monotonic() + timeout
        while not predicate(self._events):
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail(what, timeout)
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return list(self._events)

    async def wait_advisory(
        self,
        action: Action,
        topic: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        count: int = 1,
    ) -> Advisory:
        got = await self.wait_for(
            lambda _: self._seen(action, topic) >= count,
            timeout,
            f"{action.name}{'(' + topic + ')' if topic else ''} x{count}",
        )
        return [a for a in advisories_of(got) if _is(a, action, topic)][count - 1]

    async def wait_events(self, n: int, timeout: float = DEFAULT_TIMEOUT) -> list[Event]:
        got = await self.wait_for(lambda _: self._n_ordinary >= n, timeout, f"{n} events")
        return ordinary(got)

    async def wait_final(self, timeout: float = DEFAULT_TIMEOUT) -> Advisory:
        got = await self.wait_for(lambda _: self._n_final > 0, timeout, "final advisory")
        return next(a for a in advisories_of(got) if a.final)


# --- bounded calls ---


def within(timeout: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in a helper thread and fail if it does not return within ``timeout``.

    For calls that must not hang (stop, close, calls made from callbacks): a hang then
    fails the test instead of freezing the run.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn(*args, **kwargs))
        except BaseException as exc:
            error.append(exc)

    worker = threading.Thread(target=run, daemon=True, name=f"within:{fn!r}")
    started = time.monotonic()
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise AssertionError(f"{fn!r} did not return within {timeout} s")
    if error:
        raise error[0]
    assert time.monotonic() - started <= timeout + 0.5
    return result[0]


def wait_until(
    condition: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT, what: str = "condition"
) -> None:
    """Poll ``condition`` every 10 ms until it holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a test coroutine to the end on a loop of its own, or fail after ``timeout`` s."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def bounded(awaitable: Awaitable[T], timeout: float = DEFAULT_TIMEOUT) -> T:
    """Await ``awaitable``, or fail (asyncio.TimeoutError) after ``timeout`` seconds."""
    return await asyncio.wait_for(awaitable, timeout)


async def settle(
    what: str, check: Callable[[], bool], show: Callable[[], Any], timeout: float = 5.0
) -> None:
    """Wait until ``check()`` holds, or fail saying what was seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; seen {show()}")
        await asyncio.sleep(0.01)


class LoopWatch:
    """Collects whatever reaches the running loop's exception handler."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(self._report)

    def _report(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.reports.append(context)

    async def assert_silent(self) -> None:
        # "Future exception was never retrieved" and "Task was destroyed but it is pending"
        # are reported when the object is collected: collect, and let callbacks run.
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0.01)
        shown = [f"{c.get('message')}: {c.get('exception')!r}" for c in self.reports]
        assert not self.reports, f"{len(self.reports)} reports to the loop: {shown[:5]}"


# --- consumers ---


def subscribed(rec: Recorder, *topics: str, timeout: float = 5.0) -> None:
    """Wait for the SUBSCRIBE advisory of every topic (channel forms)."""
    for topic in topics:
        rec.wait_advisory(Action.SUBSCRIBE, topic, timeout=timeout)


# --- the server side ---


def send_raw(conn: psycopg.Connection[Any], channel: str, payload: str) -> None:
    """NOTIFY ``channel`` with a payload exactly as given, bypassing every encoder."""
    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


def other_backends(conn: psycopg.Connection[Any], exclude: Iterable[int] = ()) -> list[int]:
    """Pids of the client backends on ``conn``'s database but ``conn``'s own and ``exclude``."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND backend_type = 'client backend'"
        " AND pid <> pg_backend_pid() AND NOT pid = ANY(%s)",
        (list(exclude),),
    ).fetchall()
    return [int(r[0]) for r in rows]


def listening_backends(conn: psycopg.Connection[Any], exclude: Iterable[int] = ()) -> list[int]:
    """Pids of backends of this database whose last statement was a LISTEN."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND query ILIKE 'LISTEN%%' AND NOT pid = ANY(%s)",
        (list(exclude),),
    ).fetchall()
    return [int(r[0]) for r in rows]


def terminate(conn: psycopg.Connection[Any], pids: Iterable[int]) -> int:
    """pg_terminate_backend on each pid; returns how many were terminated."""
    done = 0
    for pid in pids:
        row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        done += bool(row and row[0])
    return done


# --- hubs that never outlive their test ---


class HubPool:
    """Makes hubs for one test and stops them all, bounded, when the test ends."""

    def __init__(self) -> None:
        self.hubs: list[pghub.Hub] = []

    def make(self, conninfo: str, **options: Any) -> pghub.Hub:
        hub = pghub.Hub(conninfo, **options)
        self.hubs.append(hub)
        return hub

    def started(self, conninfo: str, **options: Any) -> pghub.Hub:
        hub = self.make(conninfo, **options)
        within(15, hub.start)
        return hub

    def stop_all(self, timeout: float = 20.0) -> None:
        for hub in self.hubs:
            within(timeout, hub.stop)


# --- faults: the hub's session found and cut, and events that must flow again ---

HUB_APP = "pghub_fault_hub"  # application_name of the hub's session, to find it on the server
FAST: dict[str, Any] = {"reconnect_delay": 0.05, "reconnect_max_delay": 0.5}


def free_port() -> int:
    """A TCP port on which nothing listens (bound, then closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def named(dsn: str) -> str:
    """``dsn`` with the application_name :func:`hub_pids` looks for."""
    return psycopg.conninfo.make_conninfo(dsn, application_name=HUB_APP)


def hub_pids(conn: psycopg.Connection[Any]) -> list[int]:
    """Pids of the sessions on ``conn``'s database opened with :func:`named`."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = %s",
        (HUB_APP,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def echo_on_reconnect(conn: psycopg.Connection[Any], topic: str) -> Recorder:
    """A recorder that, on RECONNECT, has another session notify ``topic`` at once.

    If RECONNECT came before the topic was listened to again, that event would be lost.
    """
    lock = threading.Lock()
    count = 0

    def then(event: Event) -> None:
        nonlocal count
        advisory = event.advisory
        if advisory is not None and advisory.action is Action.RECONNECT:
            with lock:
                count += 1
                send_raw(conn, topic, f"e{1000 + count}")

    return Recorder("echo", then=then)


def assert_flows(hub: pghub.Hub, rec: Recorder, conn: psycopg.Connection[Any], topic: str) -> None:
    """Events flow both ways: from another session and from the hub itself."""
    already = len(rec.events())
    send_raw(conn, topic, "e7001")
    hub.notify(topic, [7002])
    got = rec.wait_events(already + 2, timeout=10)[already:]
    assert [e.key for e in got] == [(7001,), (7002,)]


def refuse_and_kill(proxy: FaultProxy, rec: Recorder) -> None:
    """Cut the hub off: new connections refused, the live one reset; wait for DISCONNECT."""
    proxy.refuse()
    proxy.reset()
    rec.wait_advisory(Action.DISCONNECT, timeout=5)
