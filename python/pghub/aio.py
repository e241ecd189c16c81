"""The asyncio hub: the same engine and semantics as :class:`pghub.Hub`, awaitable.

Callbacks (plain or ``async def``) run on the event loop the hub was started on, each
consumer in a task of its own; ``notify`` returns a future of the confirmation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Callable, Container, Iterable
from types import TracebackType
from typing import Any, TypeVar

from ._consumer import BaseConsumer, channels_of
from ._hubbase import EventLike, HubBase
from ._options import Overflow
from ._outbox import Outgoing
from .events import Action, Event

T = TypeVar("T")
Confirm = Callable[[bool], Any]


class AsyncConsumer(BaseConsumer):
    """A consumer of an :class:`AsyncHub`: its callback runs in a task of its own.

    Without a callback it is iterated instead (see :meth:`AsyncHub.subscription`).
    """

    def __init__(
        self,
        hub: AsyncHub,
        callback: Callable[[Event], Any] | None,
        *,
        queue_size: int,
        overflow: Overflow,
    ) -> None:
        super().__init__(
            hub._engine, callback, queue_size=queue_size, overflow=overflow, logger=hub.log
        )
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending: deque[Event] = deque()  # taken, not yet read (no callback)
        self._over = False  # its final advisory has been read (no callback)
        if callback is not None:
            self._task = self._loop.create_task(self._run(callback), name="pghub-consumer")

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody left to deliver to
            self._loop.call_soon_threadsafe(self._ready.set)

    def close(self) -> None:
        super().close()
        if self._task is None:
            self.finished = True  # read by nobody from now on: its hub may forget it

    async def next_event(self) -> Event | None:
        """For a consumer without a callback (what a :class:`Subscription` reads): the next
        event or advisory, counted and discarded as for a callback; None once the final
        advisory has been read."""
        pending = self._pending
        while not self._over:
            while not pending:
                pending.extend(await self._next_batch())
            event = pending.popleft()
            if self._discards(event):
                continue
            self._over = self._done_with(event)
            return event
        return None

    async def _next_batch(self) -> deque[Event]:
        """Wait until the engine has queued something; take all of it."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            events = self._take()
            if events:
                return events

    async def wait_closed(self) -> None:
        """Wait until the final advisory has been delivered."""
        await self._wait_done(())

    async def _wait_done(self, stoppers: Container[object]) -> None:
        """Wait for the final advisory, unless this task is the waiter, is itself waiting in
        ``stop()``, or runs on another loop (where it cannot be awaited)."""
        task = self._task
        if task is None or task is asyncio.current_task():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            return
        while not task.done() and task not in stoppers:
            await asyncio.wait({task}, timeout=0.05)

    async def _run(self, callback: Callable[[Event], Any]) -> None:
        try:
            await self._deliver(callback)
        finally:
            if not self.finished:
                # Its task was cancelled (shutdown code cancelling every task, asyncio.run at
                # its end): nobody reads its queue any more, so it must not stay subscribed.
                self.close()
                self.finished = True

    async def _deliver(self, callback: Callable[[Event], Any]) -> None:
        while True:
            for event in await self._next_batch():
                if self._discards(event):
                    continue
                try:
                    result = callback(event)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    if _being_cancelled():
                        raise
                    self._failed(event)  # the callback's own (it awaited something cancelled)
                except Exception:
                    self._failed(event)
                if self._done_with(event):
                    return


class Subscription:
    """``async with hub.subscription("a") as sub: async for event in sub``.

    Entering waits until every topic is listened to; iteration yields ordinary events (and
    advisories too with ``advisories=True``) and ends when the hub stops or on close.
    """

    def __init__(self, hub: AsyncHub, topics: tuple[str, ...], advisories: bool, **kw: Any):
        self._hub = hub
        self._channels = channels_of(topics)
        self._advisories = advisories
        self._kw = kw
        self._consumer: AsyncConsumer | None = None
        self._buffer: deque[Event] = deque()
        self._ended = False

    async def __aenter__(self) -> Subscription:
        consumer = self._hub._make_consumer(None, [], **self._kw)
        self._consumer = consumer
        try:
            await self._enter(consumer)
        except BaseException:
            # Cancelled (or failed) before the block was entered: __aexit__ will not run, and
            # a consumer nobody reads would stay subscribed, fill up and outlive stop().
            self.close()
            raise
        return self

    async def _enter(self, consumer: AsyncConsumer) -> None:
        """Wait until every topic is listened to (or the final advisory), keeping what came."""
        consumer.subscribe(*self._channels)
        waiting = set(self._channels)
        held: list[Event] = []
        while waiting:
            event = await self._next_raw()
            advisory = event.value if event.topic is None else None
            if advisory is not None and advisory.action is Action.SUBSCRIBE:
                waiting.discard(advisory.topic)
            if advisory is not None and advisory.final:
                self._buffer.appendleft(event)
                break
            held.append(event)
        self._buffer.extendleft(reversed(held))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._ended:
                raise StopAsyncIteration
            event = await self._next_raw()
            if event.topic is not None:
                return event
            advisory = event.value
            if advisory.final:
                self._ended = True
            elif advisory.action is Action.OVERFLOW and not self._advisories:
                self._hub.log.warning("pghub: subscription lost %d events", advisory.lost)
            if self._advisories:
                return event

    async def _next_raw(self) -> Event:
        consumer = self._consumer
        assert consumer is not None, "use 'async with hub.subscription(...)'"
        if self._buffer:
            return self._buffer.popleft()
        event = await consumer.next_event()
        assert event is not None, "read after the final advisory"  # _ended stops that
        return event


class AsyncHub(HubBase):
    """A hub for asyncio programs, with the semantics of :class:`pghub.Hub`."""

    async def start(self) -> None:
        """Start the hub (see :meth:`pghub.Hub.start`). Cancelled before the first connection
        (``retry_first_connect=False``), it stops the hub, as a failed first connect does:
        ``async with hub`` runs no ``__aexit__`` then, and nobody else would stop it."""
        self._engine.start()
        first_connect = self._engine.first_connect
        if self.options.retry_first_connect:
            return
        if first_connect.done():  # started before: nothing to wait for, nothing to cancel
            first_connect.result()
            return
        try:
            await _wait_for_thread(first_connect)
        except asyncio.CancelledError:
            self._engine.request_stop()
            raise

    async def stop(self, wait: bool = True) -> None:
        """Stop (see :meth:`pghub.Hub.stop`); with ``wait``, until every consumer had its STOP."""
        self._engine.request_stop()
        if not wait:
            return
        me = asyncio.current_task()
        self._stoppers.add(me)
        try:
            await self.wait_stopped()
            for consumer in list(self._consumers):
                if isinstance(consumer, AsyncConsumer):
                    await consumer._wait_done(self._stoppers)
            await asyncio.sleep(0)  # let confirmations scheduled by the engine run
        finally:
            self._stoppers.discard(me)

    async def wait_stopped(self) -> None:
        """Wait until the hub has stopped (after ``stop()``, or after a failed first connect):
        every notify answered, every consumer given its STOP. Cancelling the wait leaves the
        hub alone. Its consumers' callbacks may still be running."""
        await _wait_for_thread(self._engine.finished)

    async def __aenter__(self) -> AsyncHub:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(wait=True)

    def consumer(
        self,
        callback: Callable[[Event], Any],
        *topics: str,
        queue_size: int | None = None,
        overflow: Overflow | None = None,
    ) -> AsyncConsumer:
        """A new consumer; ``callback`` may be a coroutine function. Call from the event loop."""
        return self._make_consumer(
            callback, channels_of(topics), queue_size=queue_size, overflow=overflow
        )

    def subscription(
        self,
        *topics: str,
        advisories: bool = False,
        queue_size: int | None = None,
        overflow: Overflow | None = None,
    ) -> Subscription:
        """An async iterator over the events of ``topics`` (use with ``async with``)."""
        return Subscription(self, topics, advisories, queue_size=queue_size, overflow=overflow)

    def _make_consumer(
        self,
        callback: Callable[[Event], Any] | None,
        channels: list[str],
        *,
        queue_size: int | None,
        overflow: Overflow | None,
    ) -> AsyncConsumer:
        consumer = AsyncConsumer(self, callback, **self._queue_settings(queue_size, overflow))
        self._adopt(consumer, channels)
        return consumer

    def notify(
        self,
        topic: str,
        key: Iterable[int] | None = None,
        value: Any = None,
        *,
        confirm: Confirm | None = None,
    ) -> asyncio.Future[bool]:
        """Send an event; bad input raises here. The future's result is True once committed,
        False if it was not sent. Awaiting it is optional; ``confirm(ok)`` runs once on this
        loop with the same answer, whether or not the future is awaited or cancelled."""
        answer = _Answer(self, confirm, 1)
        self._engine.notify(self._outgoing(topic, key, value, next(self._groups), answer))
        return answer.future

    def notify_many(
        self, events: Iterable[EventLike], *, confirm: Confirm | None = None
    ) -> asyncio.Future[bool]:
        """Send a batch together; the future is True once every event is committed, and
        ``confirm`` runs once with the same answer."""
        items = self._outgoing_many(events)
        answer = _Answer(self, confirm, len(items))
        self._engine.notify_many([item._replace(confirm=answer) for item in items])
        if not items:
            answer.settle()  # nothing to send, nothing that failed
        return answer.future

    def _confirmed(self, items: list[Outgoing], ok: bool) -> None:
        # Each answer on its own loop: notifies may come from more than one loop over a hub's
        # life (a test suite with a loop per test, a second thread with a loop of its own).
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for item in items:
            answer: _Answer = item.confirm
            by_loop.setdefault(answer.loop, []).append(answer)
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_answer_all, answers, ok)
            except RuntimeError:
                # That loop is closed: nobody can await the futures any more, but each
                # confirm callback still runs once, here on the engine's thread.
                _answer_all(answers, ok)


class _Answer:
    """What one ``notify`` or ``notify_many`` call is told once each of its events has been
    answered: its future and its ``confirm`` callback, settled apart from each other, so
    that a cancelled future (``wait_for`` timing out on it) neither skips nor breaks the
    callback, and nothing is set on a future that is already done."""

    def __init__(self, hub: AsyncHub, confirm: Confirm | None, events: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[bool] = self.loop.create_future()
        self._confirm = confirm
        self._log: logging.Logger = hub.log
        self._hub_name = hub.name
        self._left = events
        self._ok = True

    def one(self, ok: bool) -> None:
        """One event's answer (on the loop; on the engine's thread once the loop is closed)."""
        self._ok = self._ok and ok
        self._left -= 1
        if self._left == 0:
            self.settle()

    def settle(self) -> None:
        ok = self._ok
        if not self.future.done() and not self.loop.is_closed():
            self.future.set_result(ok)
        confirm, self._confirm = self._confirm, None
        if confirm is not None:
            try:
                confirm(ok)
            except Exception:
                self._log.exception("pghub hub %r: confirm callback raised", self._hub_name)


def _answer_all(answers: list[_Answer], ok: bool) -> None:
    for answer in answers:
        answer.one(ok)


async def _wait_for_thread(future: concurrent.futures.Future[T]) -> T:
    """Await a future that another thread resolves. Cancelling the wait leaves that future
    alone (``asyncio.wrap_future`` would cancel it, and with it every other waiter's wait)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def copy() -> None:
        if waiter.done():
            return  # this wait was cancelled: the outcome is nobody's here
        if future.cancelled():
            waiter.cancel()
        elif (error := future.exception()) is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(future.result())

    def resolved(_: concurrent.futures.Future[T]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(copy)

    future.add_done_callback(resolved)
    return await waiter


def _being_cancelled() -> bool:
    """Whether this task has been asked to cancel (Python 3.11+; on 3.10, assume it has)."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return cancelling is None or cancelling() > 0
