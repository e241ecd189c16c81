"""Waiting for events in tests: a recording consumer callback, and bounded waits.

Every wait has a timeout and fails with :class:`EventTimeout` (an AssertionError, so pytest
reports it as a failed assertion) whose message lists what did arrive. A wait also fails at
once, without waiting out its timeout, when the consumer has had its final advisory (STOP or
CLOSE): nothing can arrive after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from ..events import Action, Advisory, Event
from ..wire import channel

if TYPE_CHECKING:
    from .._consumer import BaseConsumer
    from ..aio import AsyncHub
    from ..hub import Hub

Predicate = Callable[[Event], object]

DEFAULT_TIMEOUT = 5.0
_SHOWN = 10  # events named in a failure message


class EventTimeout(AssertionError):
    """What was waited for did not come in time (or cannot come any more)."""


def _describe(event: Event) -> str:
    advisory = event.advisory
    if advisory is None:
        value = repr(event.value)
        if len(value) > 40:
            value = value[:37] + "..."
        return f"{event.topic}{list(event.key)}={value}"
    text = advisory.action.name
    if advisory.topic is not None:
        text += f"({advisory.topic})"
    return text


def _what(predicate: Predicate | None) -> str:
    if predicate is None:
        return "any event"
    name = getattr(predicate, "__qualname__", None) or repr(predicate)
    return f"an event matching {name}"


class EventRecorder:
    """A consumer callback that keeps every event and advisory it receives, and waits for them.

    Pass it to ``hub.consumer(recorder, "topic")`` of a :class:`pghub.Hub` or a
    :class:`pghub.AsyncHub` (it is thread-safe), or let :func:`listen` / :func:`alisten` make
    the consumer. Each ``wait_*`` call returns something that no earlier wait returned, so
    waiting twice for the same kind of event returns two events, in arrival order.
    """

    def __init__(self) -> None:
        self._received: list[Event] = []
        self._taken: list[bool] = []
        self._first_untaken = 0
        self._ended = False  # the final advisory (STOP or CLOSE) was received
        self._cond = threading.Condition()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.consumer: BaseConsumer | None = None
        """The consumer that :func:`listen` or :func:`alisten` made, else None."""

    def __call__(self, event: Event) -> None:
        with self._cond:
            self._received.append(event)
            self._taken.append(False)
            advisory = event.advisory
            if advisory is not None and advisory.final:
                self._ended = True
            self._cond.notify_all()
            waiters = list(self._async_waiters)
        for loop, changed in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there
                loop.call_soon_threadsafe(changed.set)

    # --- what arrived ---
    @property
    def events(self) -> list[Event]:
        """The ordinary events received so far, in arrival order (returned by a wait or not)."""
        with self._cond:
            return [e for e in self._received if e.topic is not None]

    @property
    def advisories(self) -> list[Advisory]:
        """The advisories received so far, in arrival order."""
        with self._cond:
            return [a for a in (e.advisory for e in self._received) if a is not None]

    # --- waits ---
    def wait_for(
        self, predicate: Predicate | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Event:
        """The first ordinary event, not returned before, for which ``predicate(event)`` is
        true (any event without a predicate); waits up to ``timeout`` seconds for it."""
        return self._wait(_ordinary(predicate), _what(predicate), timeout)

    async def wait_for_async(
        self, predicate: Predicate | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Event:
        """:meth:`wait_for` for a coroutine: the event loop keeps running while it waits."""
        return await self._wait_async(_ordinary(predicate), _what(predicate), timeout)

    def wait_advisory(
        self, action: Action, topic: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Advisory:
        """The first advisory of ``action`` (about ``topic``, when given), not returned before."""
        match, what = _advisory(action, topic)
        found = self._wait(match, what, timeout).advisory
        assert found is not None
        return found

    async def wait_advisory_async(
        self, action: Action, topic: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Advisory:
        """:meth:`wait_advisory` for a coroutine."""
        match, what = _advisory(action, topic)
        found = (await self._wait_async(match, what, timeout)).advisory
        assert found is not None
        return found

    # --- the consumer ---
    def close(self) -> None:
        """Close the consumer :func:`listen` made (nothing otherwise). Idempotent."""
        if self.consumer is not None:
            self.consumer.close()

    def __enter__(self) -> EventRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals ---
    def _take(self, match: Callable[[Event], object]) -> Event | None:
        """The first untaken event that matches, marked taken; under the lock."""
        taken = self._taken
        while self._first_untaken < len(taken) and taken[self._first_untaken]:
            self._first_untaken += 1
        for i in range(self._first_untaken, len(self._received)):
            if not taken[i] and match(self._received[i]):
                taken[i] = True
                return self._received[i]
        return None

    def _wait(self, match: Callable[[Event], object], what: str, timeout: float) -> Event:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self._take(match)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    raise self._failure(what, timeout)
                self._cond.wait(left)

    async def _wait_async(
        self, match: Callable[[Event], object], what: str, timeout: float
    ) -> Event:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        waiter = (loop, changed)
        deadline = loop.time() + timeout
        with self._cond:
            self._async_waiters.append(waiter)
        try:
            while True:
                changed.clear()  # before looking: a later arrival sets it again
                with self._cond:
                    found = self._take(match)
                    ended = self._ended
                if found is not None:
                    return found
                left = deadline - loop.time()
                if ended or left <= 0:
                    raise self._failure(what, timeout)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
        finally:
            with self._cond:
                self._async_waiters.remove(waiter)

    def _failure(self, what: str, timeout: float) -> EventTimeout:
        with self._cond:
            received = list(self._received)
            ended = self._ended
        shown = " ".join(_describe(e) for e in received[-_SHOWN:])
        if len(received) > _SHOWN:
            shown = f"... {shown}"
        why = "the consumer has ended" if ended else f"not within {timeout} s"
        return EventTimeout(f"{what}: {why}; received {len(received)}: {shown or 'nothing'}")


def _ordinary(predicate: Predicate | None) -> Callable[[Event], object]:
    if predicate is None:
        return lambda event: event.topic is not None
    return lambda event: event.topic is not None and predicate(event)


def _advisory(action: Action, topic: str | None) -> tuple[Callable[[Event], object], str]:
    wanted = None if topic is None else channel(topic)

    def match(event: Event) -> bool:
        advisory = event.advisory
        return (
            advisory is not None
            and advisory.action is action
            and (wanted is None or advisory.topic == wanted)
        )

    return match, f"{action.name} advisory" + ("" if wanted is None else f" for {wanted!r}")


def listen(hub: Hub, *topics: str, timeout: float = DEFAULT_TIMEOUT) -> EventRecorder:
    """A new consumer of ``topics`` on a started :class:`pghub.Hub`, recording into an
    :class:`EventRecorder` that is returned once every topic is listened to, so that an event
    committed from then on is received. Use it as a context manager to close the consumer,
    or let the hub's stop end it."""
    recorder = EventRecorder()
    recorder.consumer = hub.consumer(recorder, *topics)
    try:
        deadline = time.monotonic() + timeout
        for topic in topics:
            left = max(0.0, deadline - time.monotonic())
            recorder.wait_advisory(Action.SUBSCRIBE, topic, timeout=left)
    except EventTimeout as error:
        recorder.close()
        raise EventTimeout(f"listen{topics}: not subscribed within {timeout} s: {error}") from None
    except BaseException:
        recorder.close()
        raise
    return recorder


async def alisten(hub: AsyncHub, *topics: str, timeout: float = DEFAULT_TIMEOUT) -> EventRecorder:
    """:func:`listen` for a :class:`pghub.AsyncHub` (call it on the hub's event loop)."""
    recorder = EventRecorder()
    recorder.consumer = hub.consumer(recorder, *topics)
    try:
        deadline = time.monotonic() + timeout
        for topic in topics:
            left = max(0.0, deadline - time.monotonic())
            await recorder.wait_advisory_async(Action.SUBSCRIBE, topic, timeout=left)
    except EventTimeout as error:
        recorder.close()
        raise EventTimeout(f"alisten{topics}: not subscribed within {timeout} s: {error}") from None
    except BaseException:
        recorder.close()
        raise
    return recorder


async def next_event(
    events: AsyncIterator[Event],
    predicate: Predicate | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Event:
    """The next event from ``events`` (an :meth:`pghub.AsyncHub.subscription`) for which
    ``predicate(event)`` is true, within ``timeout`` seconds. The events before it are read
    and dropped. Fails at once if the subscription ends (its hub stopped)."""

    async def first() -> Event:
        async for event in events:
            if predicate is None or predicate(event):
                return event
        raise EventTimeout(f"{_what(predicate)}: the subscription ended")

    try:
        return await asyncio.wait_for(first(), timeout)
    except asyncio.TimeoutError:
        raise EventTimeout(f"{_what(predicate)}: not within {timeout} s") from None
