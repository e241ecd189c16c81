"""The asyncio hub: the same engine and semantics as :class:`pghub.Hub`, awaitable.

Callbacks (plain or ``async def``) run on the event loop the hub was started on, each
consumer in a task of its own; ``notify`` returns a future of the confirmation.

Over 450 lines, on purpose: the async consumer (plain and durable), its subscription and the
hub share one set of loop concerns (futures set from the engine thread, tasks, cancellation),
which read best in one place; what is not about the loop lives in the modules they share
with the sync hub (``_consumer``, ``_durable``, ``_reader``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import itertools
from collections import deque
from collections.abc import Callable, Container, Iterable
from types import TracebackType
from typing import Any, TypeVar

from ._consumer import BaseConsumer, Resync, SubscriptionReader, channels_of
from ._durable import DurableCursor, Taken
from ._hubbase import Answer, EventLike, HubBase
from ._log import HubLog
from ._mailbox import Keys as KeySet
from ._options import Overflow, Run, check_run
from ._outbox import Outgoing
from ._reader import AsyncReader, AsyncSteps
from .events import Event

T = TypeVar("T")
Confirm = Callable[[bool], Any]
Keys = Iterable[Iterable[int]]


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
        logger: HubLog,
        keys: KeySet | None = None,
        on_resync: Resync | None = None,
        name: str | None = None,
        durable: DurableCursor | None = None,
        shared: bool = False,
    ) -> None:
        super().__init__(
            hub._engine,
            callback,
            queue_size=queue_size,
            overflow=overflow,
            logger=logger,
            keys=keys,
            on_resync=on_resync,
            name=name,
            durable=durable,
            shared=shared,
        )
        self._steps: AsyncSteps | None = None
        if durable is not None:
            self._steps = AsyncSteps(durable.run(), hub._reader_session(AsyncReader))
        self._given = 0  # of the last delivery, read (without a callback)
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        if callback is not None:
            self._task = self._loop.create_task(self._run(callback), name="pghub-consumer")

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody left to deliver to
            self._loop.call_soon_threadsafe(self._ready.set)

    def _notice(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._changed.set)

    async def wait_subscribed(self, timeout: float | None = None) -> bool:
        """:meth:`pghub.Consumer.wait_subscribed`, awaited on the consumer's loop."""
        wanted, ask = self._wanted()
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            self._changed.clear()  # before looking: a later change sets it again
            settled = self._settled(wanted, ask)
            if settled is not None:
                return settled
            left = None if deadline is None else deadline - self._loop.time()
            if left is not None and left <= 0:
                return False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def next_event(self) -> Event | None:
        """For a consumer without a callback (what a :class:`Subscription` reads): the next
        event or advisory, counted and discarded as for a callback; None once the final
        advisory has been read."""
        steps = self._steps
        while not self._over:
            event = self._pop_pending()
            if event is not None:
                self._given += 1
                return event
            if steps is None:
                self._pending.extend(await self._next_batch())
                continue
            steps.delivered(self._given)  # a durable consumer: what was read is handled
            self._given = 0
            events = await steps.next_delivery(self._taken)
            if events is None:
                return None
            self._pending.extend(events)
        return None

    async def settle(self) -> None:
        """A durable subscription is left: what it has read counts as handled (acknowledged)."""
        if self._steps is not None:
            await self._steps.settle(self._given)
            self._given = 0

    async def _taken(self, limit: float | None) -> Taken:
        """What the mailbox holds, after waiting up to ``limit`` seconds for something."""
        if limit is None or limit > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), limit)
        self._ready.clear()
        return Taken(self._take(), self.mailbox.take_woken())  # type: ignore[attr-defined]

    async def _next_batch(self) -> deque[Event]:
        """Wait until the engine has queued something; take all of it."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            events = self._take()
            if events:
                return events

    async def _batch_or_retry(self) -> deque[Event]:
        """What is queued, or nothing once a failed resync is due again."""
        wait = self._resync_wait()
        if wait is None:
            return await self._next_batch()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait)
        self._ready.clear()
        return self._take()

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
        if self._steps is not None:
            while (events := await self._steps.next_delivery(self._taken)) is not None:
                self._steps.delivered(await self._give(events, callback))
            return
        while not self.finished:
            await self._give(await self._batch_or_retry(), callback)

    async def _give(self, events: Iterable[Event], callback: Callable[[Event], Any]) -> int:
        """Deliver a batch; how many of its events were given to the callback."""
        given = 0
        remaining = iter(events)
        if self._resync is None:
            # As pghub.Consumer._give: ordinary events of an open consumer owing no resync
            # go straight to the callback; the first other event and the rest through _calls.
            stopped: Event | None = None
            try:
                for event in remaining:
                    if event[0] is None or self._closed:
                        stopped = event
                        break
                    given += 1
                    try:
                        result = callback(event)
                        if result is not None and inspect.isawaitable(result):
                            await result
                    except asyncio.CancelledError:
                        if _being_cancelled():
                            raise
                        self._call_failed(callback, event)
                    except Exception:
                        self._call_failed(callback, event)
            finally:
                self.delivered += given
            if stopped is None:
                return given
            remaining = itertools.chain((stopped,), remaining)
        for function, argument in self._calls(remaining, callback):
            given += function is callback
            try:
                result = function(argument)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                if _being_cancelled():
                    raise
                self._call_failed(function, argument)  # it awaited something cancelled
            except Exception:
                self._call_failed(function, argument)
        return given


class Subscription:
    """``async with hub.subscription("a") as sub: async for event in sub``.

    Entering waits until every topic is listened to; iteration yields ordinary events (and
    advisories too with ``advisories=True``) and ends when the hub stops or on close.
    """

    def __init__(self, hub: AsyncHub, topics: tuple[str, ...], advisories: bool, **kw: Any):
        self._hub = hub
        self._channels = channels_of(topics)
        self._reader = SubscriptionReader(self._channels, advisories, hub.log)
        self._kw = kw
        self._consumer: AsyncConsumer | None = None

    @property
    def consumer(self) -> AsyncConsumer | None:
        """The consumer it reads (made on entering)."""
        return self._consumer

    async def __aenter__(self) -> Subscription:
        consumer = self._hub._make_consumer(None, [], **self._kw)
        self._consumer = consumer
        try:
            consumer.subscribe(*self._channels)
            while not self._reader.entering(await self._read(consumer)):
                pass
        except BaseException:
            # Cancelled (or failed) before the block was entered: __aexit__ will not run, and
            # a consumer nobody reads would stay subscribed, fill up and outlive stop().
            self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._consumer is not None:
            await self._consumer.settle()  # a durable one: what it read is handled
        self.close()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        consumer = self._consumer
        assert consumer is not None, "use 'async with hub.subscription(...)'"
        reader = self._reader
        while not reader.ended:
            event = reader.held()
            if event is None:
                event = await self._read(consumer)
            picked = reader.pick(event)
            if picked is not None:
                return picked
        raise StopAsyncIteration

    @staticmethod
    async def _read(consumer: AsyncConsumer) -> Event:
        event = await consumer.next_event()
        assert event is not None, "read after the final advisory"  # reader.ended stops that
        return event


class AsyncHub(HubBase):
    """A hub for asyncio programs, with the semantics of :class:`pghub.Hub`."""

    _reader: AsyncReader | None  # made by HubBase._reader_session

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
        if self._reader is not None and not self._stoppers:
            await self._reader.close()  # durable consumers have had their STOP

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
        keys: Keys | None = None,
        on_resync: Resync | None = None,
        name: str | None = None,
        durable: str | None = None,
        since: str | None = None,
        shared: bool = False,
        run: Run = "task",
    ) -> AsyncConsumer:
        """A new consumer; ``callback`` and ``on_resync`` may be coroutine functions (see
        :meth:`pghub.Hub.consumer`, ``durable``, ``since`` and ``shared`` included). Call
        from the event loop. ``run``: only ``"task"``, a task of its own on this loop (tasks
        are already what the sync hub's pool gives threads: many consumers on one thread;
        docs/hub.md, Where callbacks run)."""
        check_run(run, ("task",), "AsyncHub")
        return self._make_consumer(
            callback,
            channels_of(topics),
            queue_size=queue_size,
            overflow=overflow,
            keys=keys,
            on_resync=on_resync,
            name=name,
            durable=durable,
            since=since,
            shared=shared,
        )

    def subscription(
        self,
        *topics: str,
        advisories: bool = False,
        queue_size: int | None = None,
        overflow: Overflow | None = None,
        keys: Keys | None = None,
        durable: str | None = None,
        since: str | None = None,
    ) -> Subscription:
        """An async iterator over the events of ``topics`` (use with ``async with``);
        ``durable`` and ``since`` as for :meth:`pghub.Hub.subscription`."""
        return Subscription(
            self,
            topics,
            advisories,
            queue_size=queue_size,
            overflow=overflow,
            keys=keys,
            durable=durable,
            since=since,
        )

    def _make_consumer(
        self,
        callback: Callable[[Event], Any] | None,
        channels: list[str],
        *,
        queue_size: int | None,
        overflow: Overflow | None,
        keys: Keys | None,
        on_resync: Resync | None = None,
        name: str | None = None,
        durable: str | None = None,
        since: str | None = None,
        shared: bool = False,
    ) -> AsyncConsumer:
        settings = self._consumer_settings(queue_size, overflow, keys, shared)
        cursor = self._durable_cursor(durable, since, keys)
        consumer = AsyncConsumer(
            self, callback, **settings, on_resync=on_resync, name=name, durable=cursor
        )
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
        loop with the same answer, whether or not the future is awaited or cancelled.

        It never blocks the loop: with the send queue full (``send_queue_size``) it raises
        SendQueueFull at once (``send_wait`` is the sync hub's); await earlier futures to pace
        a tight loop."""
        answer = _Answer(1, confirm, self.log)
        self._engine.notify(
            self._outgoing(topic, key, value, next(self._groups), answer), wait=False
        )
        return answer.future

    def notify_many(
        self, events: Iterable[EventLike], *, confirm: Confirm | None = None
    ) -> asyncio.Future[bool]:
        """Send a batch together; the future is True once every event is committed, and
        ``confirm`` runs once with the same answer."""
        items = self._outgoing_many(events)
        answer = _Answer(len(items), confirm, self.log)
        self._engine.notify_many([item._replace(confirm=answer) for item in items], wait=False)
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


class _Answer(Answer):
    """A call's answer as a future of the loop that called ``notify``, set on that loop
    (answers come there; on the engine's thread once the loop is closed). A future that is
    already done (cancelled by ``wait_for`` timing out on it) is left alone."""

    def __init__(self, events: int, confirm: Confirm | None, log: HubLog) -> None:
        super().__init__(events, confirm, log)
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[bool] = self.loop.create_future()

    def _resolve(self, ok: bool) -> None:
        if not self.future.done() and not self.loop.is_closed():
            self.future.set_result(ok)


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
