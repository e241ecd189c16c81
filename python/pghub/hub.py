"""The synchronous hub: one listening session per process, any number of consumers."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from ._consumer import Consumer, PooledConsumer, Resync, SubscriptionReader, channels_of
from ._hubbase import Answer, EventLike, HubBase
from ._log import HubLog
from ._options import Overflow, Run, check_run
from ._outbox import Outgoing
from ._pool import CallbackPool
from ._reader import SyncReader
from .errors import ConnectFailed, HubStopped
from .events import Event

Confirm = Callable[[bool], None]
Keys = Iterable[Iterable[int]]


class Hub(HubBase):
    """A hub for threaded programs. Safe to use from any thread, callbacks included.

    Each consumer's callback runs in a thread of its own, unless made with ``run="pool"`` (the
    hub's callback pool) or ``run="inline"`` (its engine thread); ``confirm`` callbacks run on
    the hub's engine thread and must be quick. See docs/hub.md for every option and the
    advisory contract.
    """

    _reader: SyncReader | None  # made by HubBase._reader_session
    _pool: CallbackPool | None = None  # made with the first pooled or inline consumer

    def start(self) -> None:
        """Start the hub. Unless ``retry_first_connect``, wait for the first connection and
        raise :class:`pghub.ConnectFailed` if it fails (the hub is then stopped)."""
        self._engine.start()
        if not self.options.retry_first_connect:
            try:
                self._engine.first_connect.result()
            except (ConnectFailed, HubStopped):
                self._engine.join()  # the engine is winding down: say "stopped"
                raise

    def stop(self, wait: bool = True) -> None:
        """Stop: send what is queued if connected, fail the rest, give every consumer its STOP.

        With ``wait``, return once every pending notify is confirmed one way or the other and
        every consumer has had its STOP (except those of consumers whose callbacks are in
        ``stop()`` themselves, the caller's own included: theirs follow when their callbacks
        return). From a ``confirm`` callback, which runs on the hub's engine thread, it does
        not wait. Idempotent.
        """
        engine = self._engine
        engine.request_stop()
        if not wait or engine.on_engine_thread():
            return  # a confirm callback cannot wait for the thread it runs on
        me = threading.current_thread()
        self._stoppers.add(me)
        try:
            engine.join()
            for consumer in list(self._consumers):
                if isinstance(consumer, Consumer):
                    consumer._wait_done(self._stoppers)
        finally:
            self._stoppers.discard(me)
        if self._reader is not None and not self._stoppers:
            self._reader.close()  # durable consumers have had their STOP: none reads now

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the hub has stopped (after ``stop()``, or after a failed first connect):
        every notify answered, every consumer given its STOP. True once stopped, False if
        ``timeout`` seconds passed first. Its consumers' callbacks may still be running. On
        the engine thread (an inline or ``confirm`` callback) it answers at once."""
        engine = self._engine
        return engine.join(0 if engine.on_engine_thread() else timeout)

    def __enter__(self) -> Hub:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(wait=True)

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
        run: Run = "thread",
    ) -> Consumer:
        """A new consumer calling ``callback(event)`` for its events and advisories, in a
        thread of its own (``run="thread"``). ``keys``: only events with one of these keys
        (advisories always). ``on_resync(topics)``: called where the callback runs when what
        it holds of ``topics`` may be stale (docs/hub.md, Resync). ``name``: for the log
        (default: the callback's).

        ``durable="NAME"``: a named durable consumer of durable topics, its position kept on
        the server under that name and acknowledged after its callback returns; ``since``
        ('now', the default, 'earliest' or an ``event.position``) is where it starts the first
        time. ``since`` alone: an anonymous durable reader, its position in memory only
        (docs/durable.md, From Python).

        ``shared=True``: its events' values are the ones every other shared consumer gets,
        not a copy of its own; the callback must not change them (docs/hub.md, Receiving).

        ``run="pool"``: the callback runs on the hub's callback pool, a few threads shared by
        such consumers (one turn at a time, in order; a worker stuck in a turn is replaced,
        up to ``pool_max_threads``). ``run="inline"``: on the hub's engine thread as events
        arrive (advisories on the pool); it must be quick and never wait on the hub. Not for
        durable consumers (docs/hub.md, Where callbacks run)."""
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
            run=run,
        )

    def subscription(
        self,
        *topics: str,
        advisories: bool = False,
        queue_size: int | None = None,
        overflow: Overflow | None = None,
        keys: Keys | None = None,
        timeout: float | None = None,
        durable: str | None = None,
        since: str | None = None,
    ) -> SyncSubscription:
        """A blocking iterator over the events of ``topics`` (use with ``with``), entered once
        every topic is listened to. ``timeout``: how long entering, and each step of the
        iteration, may wait before TimeoutError (None: no bound). ``durable``, ``since``: as
        for :meth:`consumer`; an event counts as handled once the next one is asked for, or
        when the ``with`` block ends without an exception."""
        return SyncSubscription(
            self,
            topics,
            advisories,
            timeout,
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
        run: Run = "thread",
    ) -> Consumer:
        check_run(run, ("thread", "pool", "inline"), "Hub")
        if run != "thread" and (durable is not None or since is not None):
            raise ValueError(
                f"run={run!r} is for plain consumers: a durable one reads the journal in a"
                " thread of its own (run='thread')"
            )
        settings = self._consumer_settings(queue_size, overflow, keys, shared)
        cursor = self._durable_cursor(durable, since, keys)
        self._engine.refuse_if_forked()  # before its thread starts
        consumer: Consumer
        if run != "thread" and callback is not None:
            consumer = PooledConsumer(
                self._engine,
                callback,
                pool=self._callback_pool(),
                inline=run == "inline",
                **settings,
                hub_name=self.name,
                on_resync=on_resync,
                name=name,
            )
        else:
            consumer = Consumer(
                self._engine,
                callback,
                **settings,
                hub_name=self.name,
                on_resync=on_resync,
                name=name,
                durable=cursor,
                reader=None if cursor is None else self._reader_session(SyncReader),
            )
        self._adopt(consumer, channels)
        return consumer

    def _callback_pool(self) -> CallbackPool:
        """The hub's callback pool, made once (its threads start with the first turn)."""
        with self._consumers_lock:
            if self._pool is None:
                self._pool = CallbackPool(self.name, self.options.pool_max_threads, self.log)
            return self._pool

    def notify(
        self,
        topic: str,
        key: Iterable[int] | None = None,
        value: Any = None,
        *,
        confirm: Confirm | None = None,
    ) -> concurrent.futures.Future[bool]:
        """Send an event. Bad input raises here. The future's result is True once committed,
        False if it was not sent (stopped, or refused by the server); ``confirm(ok)`` runs
        once with the same answer, on the hub's engine thread.

        With the send queue full (``send_queue_size``) it waits up to ``send_wait`` seconds
        for the engine to take a batch, then raises SendQueueFull; at once with
        ``send_wait=0`` or on the engine thread (an inline or ``confirm`` callback, where
        waiting for the future's result raises RuntimeError: that thread answers it)."""
        answer = _SyncAnswer(1, confirm, self.log, self._engine.on_engine_thread)
        self._engine.notify(self._outgoing(topic, key, value, next(self._groups), answer.one))
        return answer.future

    def notify_many(
        self, events: Iterable[EventLike], *, confirm: Confirm | None = None
    ) -> concurrent.futures.Future[bool]:
        """Send a batch of ``(topic, key, value)`` events together. Nothing is queued unless
        every event is valid; the future (and ``confirm``, once) is True when every event
        committed."""
        items = self._outgoing_many(events)
        answer = _SyncAnswer(len(items), confirm, self.log, self._engine.on_engine_thread)
        self._engine.notify_many([item._replace(confirm=answer.one) for item in items])
        if not items:  # raises HubStopped above after stop(), even for no events
            answer.settle()  # nothing to send, nothing that failed
        return answer.future

    def _confirmed(self, items: list[Outgoing], ok: bool) -> None:
        for item in items:
            item.confirm(ok)


class _SyncAnswer(Answer):
    """A call's answer as a ``concurrent.futures.Future``, set where the answer comes (the
    engine thread). It is marked running at once: a queued notify cannot be called back, so
    ``cancel()`` says False."""

    def __init__(
        self,
        events: int,
        confirm: Confirm | None,
        log: HubLog,
        on_engine_thread: Callable[[], bool],
    ) -> None:
        super().__init__(events, confirm, log)
        self.future: concurrent.futures.Future[bool] = _Answered(on_engine_thread)
        self.future.set_running_or_notify_cancel()

    def _resolve(self, ok: bool) -> None:
        self.future.set_result(ok)


class _Answered(concurrent.futures.Future[bool]):
    """A notify's future. Waiting for it on the engine thread (an inline or ``confirm``
    callback), which is the thread that answers it, raises RuntimeError at once instead of
    waiting for ever (or for the whole timeout, the hub stalled meanwhile)."""

    def __init__(self, on_engine_thread: Callable[[], bool]) -> None:
        super().__init__()
        self._on_engine_thread = on_engine_thread

    def result(self, timeout: float | None = None) -> bool:
        self._refuse_wait()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._refuse_wait()
        return super().exception(timeout)

    def _refuse_wait(self) -> None:
        if not self.done() and self._on_engine_thread():
            raise RuntimeError(
                "a notify's answer cannot be waited for on the hub's engine thread (an inline"
                " or confirm callback): that thread gives it; use confirm= instead"
            )


class SyncSubscription:
    """``with hub.subscription("a") as sub: for event in sub``.

    Entering waits until every topic is listened to; iterating blocks for the next ordinary
    event (advisories too with ``advisories=True``) and ends when the hub stops or on close.
    ``get(timeout)`` reads one event with a bound of its own.
    """

    def __init__(
        self,
        hub: Hub,
        topics: tuple[str, ...],
        advisories: bool,
        timeout: float | None,
        **settings: Any,
    ) -> None:
        self._hub = hub
        self._channels = channels_of(topics)
        self._reader = SubscriptionReader(self._channels, advisories, hub.log)
        self._timeout = timeout
        self._settings = settings
        self._consumer: Consumer | None = None

    @property
    def consumer(self) -> Consumer | None:
        """The consumer it reads (made on entering)."""
        return self._consumer

    def __enter__(self) -> SyncSubscription:
        if self._hub._engine.on_engine_thread():
            raise RuntimeError(
                "a subscription cannot be entered on the hub's engine thread (an inline or"
                " confirm callback): it waits for what that thread does"
            )
        consumer = self._hub._make_consumer(None, [], **self._settings)
        self._consumer = consumer
        try:
            consumer.subscribe(*self._channels)
            deadline = _deadline(self._timeout)
            while not self._reader.entering(self._read(consumer, deadline)):
                pass
        except TimeoutError:
            self.close()
            raise TimeoutError(
                f"subscription {self._channels}: not listened to within {self._timeout} s"
            ) from None
        except BaseException:
            self.close()  # a consumer nobody reads would stay subscribed and fill up
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._consumer is not None:
            self._consumer.settle()  # a durable one: what it read is handled
        self.close()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    def __iter__(self) -> SyncSubscription:
        return self

    def __next__(self) -> Event:
        event = self.get(self._timeout)
        if event is None:
            raise StopIteration
        return event

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event (or advisory, with ``advisories=True``); None once the subscription
        has ended (the hub stopped, or it was closed). Raises TimeoutError when none came
        within ``timeout`` seconds; the subscription goes on."""
        consumer = self._consumer
        assert consumer is not None, "use 'with hub.subscription(...)'"
        reader = self._reader
        deadline = _deadline(timeout)
        while not reader.ended:
            event = reader.held()
            if event is None:
                try:
                    event = self._read(consumer, deadline)
                except TimeoutError:
                    raise TimeoutError(f"no event within {timeout} s") from None
            picked = reader.pick(event)
            if picked is not None:
                return picked
        return None

    @staticmethod
    def _read(consumer: Consumer, deadline: float | None) -> Event:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        event = consumer.next_event(left)
        assert event is not None, "read after the final advisory"  # reader.ended stops that
        return event


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout
