"""Consumers: a callback, a set of topics, and a mailbox the hub's engine fills.

:class:`BaseConsumer` holds what sync and async consumers share: subscribing, closing, key
filters, the delivery contract, resyncs and reading without a callback. A :class:`Consumer`
runs its callback in a thread of its own, so a slow or blocking callback holds up nobody
else; a :class:`PooledConsumer` (opt-in) on the hub's callback pool, or on its engine thread;
:class:`pghub.aio.AsyncConsumer` runs it as a task. Only the waiting differs: the
order of calls for a batch of events (:meth:`BaseConsumer._calls`), what a subscription makes
of what it reads (:class:`SubscriptionReader`) and when a wait for SUBSCRIBE is over are
decided here once.

The engine knows a consumer only by its mailbox: a consumer asks the engine's thread-safe
methods (``subscribe``, ``unsubscribe``, ``close_mailbox``) for itself.

Over 450 lines, on purpose: the delivery contract both hubs share and the sync consumer that
runs it read best side by side (aio.py holds the async one for the same reason).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from typing import Any

from ._durable import DurableCursor, Taken
from ._engine import Engine
from ._log import Log
from ._mailbox import Keys, Mailbox
from ._options import Overflow
from ._pool import CallbackPool, State, Turn
from ._reader import SyncReader, SyncSteps, WakeMailbox
from ._resync import DURABLE_RESYNC_AFTER, RESYNC_AFTER, ResyncOwed, Scope
from .errors import ConsumerClosed, InvalidKey
from .events import WAKE_CHANNEL, Action, Advisory, Event
from .wire import channel, encode_payload

Callback = Callable[[Event], Any]
Resync = Callable[[frozenset[str]], Any]
__all__ = ["RESYNC_AFTER", "Scope"]  # re-exported: where tests and readers look for them


def channels_of(topics: tuple[str, ...]) -> list[str]:
    """Validate every topic first, so that one bad topic subscribes none."""
    out: list[str] = []
    for topic in topics:
        c = channel(topic)
        if c not in out:
            out.append(c)
    return out


def keys_of(keys: Iterable[Iterable[int]] | None) -> Keys | None:
    """A key filter: each key checked as ``notify`` checks one; None for no filter."""
    if keys is None:
        return None
    if isinstance(keys, (str, bytes)):
        raise InvalidKey(f"keys must be an iterable of keys, like [[42], [7, 1]]; got {keys!r}")
    out = set()
    for key in keys:
        if isinstance(key, (str, bytes)) or not isinstance(key, Iterable):
            raise InvalidKey(
                f"each of keys is a key, an iterable of int like [42]; got {key!r}"
                " (keys=[[42]] for the one key (42,))"
            )
        as_tuple = tuple(key)
        encode_payload(as_tuple)  # the same checks as a key sent: int, not bool, int64
        out.add(as_tuple)
    return frozenset(out)


def overflow_event(lost: int) -> Event:
    return Event(None, (), Advisory(Action.OVERFLOW, lost=lost))


# --- consumers ---------------------------------------------------------------------------------


class BaseConsumer:
    def __init__(
        self,
        engine: Engine,
        callback: Callback | None,
        *,
        queue_size: int,
        overflow: Overflow,
        logger: Log,
        keys: Keys | None = None,
        on_resync: Resync | None = None,
        name: str | None = None,
        durable: DurableCursor | None = None,
        shared: bool = False,
    ) -> None:
        self._engine = engine
        self._callback = callback
        self._log = logger
        self.name = name if name is not None else _name_of(callback)
        self._channels: set[str] = set()
        self._closed = False
        # subscribe() and unsubscribe() calls, numbered; the last number the engine has run.
        self._asks = itertools.count(1)
        self._asked = 0
        self._handled = 0
        #: A durable consumer's positions and reads (docs/durable.md); None for a plain one.
        self.durable = durable
        if durable is not None:
            durable.consumer = self.name
            durable.on_started = self._notice
        self.mailbox: Mailbox
        if durable is None:
            self.mailbox = Mailbox(
                queue_size,
                overflow,
                self._wake,
                keys=keys,
                notice=self._notice,
                name=self.name,
                shared=shared,
            )
        else:  # its events come from the journal; its mailbox only says when to read
            self.mailbox = WakeMailbox(self._wake, notice=self._notice, name=self.name)
        self._on_resync = on_resync
        after = RESYNC_AFTER if durable is None else DURABLE_RESYNC_AFTER
        self._resync = ResyncOwed(after) if on_resync is not None else None
        self.finished = False  # its final advisory has been delivered: nothing more happens
        self.delivered = 0
        self.callback_errors = 0
        # Without a callback, the consumer is read (next_event): taken, not yet read.
        self._pending: deque[Event] = deque()
        self._over = False  # its final advisory has been read (no callback)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} topics={sorted(self._channels)}>"

    @property
    def topics(self) -> frozenset[str]:
        """The channels this consumer asked for (subscribed, or on their way)."""
        return frozenset(self._channels)

    @property
    def keys(self) -> Keys | None:
        """The keys whose events it receives (advisories always); None: every key."""
        return self.mailbox.keys if self.durable is None else self.durable.keys

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(self, *topics: str) -> None:
        """Subscribe to topics; a SUBSCRIBE advisory follows each once it is listened to."""
        channels = channels_of(topics)
        if self._closed:
            raise ConsumerClosed("the consumer is closed")
        self._channels.update(channels)
        self._log.debug("consumer %r subscribes to %s", self.name, channels)
        # A durable consumer also hears its topics' wake-ups (the hub listens once for all).
        wake = [WAKE_CHANNEL] if self.durable is not None else []
        self._engine.subscribe(self.mailbox, wake + channels)
        self._handled_after(next(self._asks))

    def unsubscribe(self, *topics: str) -> None:
        """Unsubscribe; an UNSUBSCRIBE advisory follows, after which no event of it arrives."""
        channels = channels_of(topics)
        if self._closed:
            raise ConsumerClosed("the consumer is closed")
        self._channels.difference_update(channels)
        self._log.debug("consumer %r unsubscribes from %s", self.name, channels)
        self._engine.unsubscribe(self.mailbox, channels)
        self._handled_after(next(self._asks))

    def _handled_after(self, ask: int) -> None:
        """Note when the engine has run the ``ask``-th call: until then the mailbox shows
        what was before it (a topic unsubscribed and subscribed again still "subscribed")."""
        self._asked = max(self._asked, ask)

        def handled() -> None:
            self._handled = max(self._handled, ask)
            self._notice()

        self._engine.after_queued(handled)

    def close(self) -> None:
        """Close: the CLOSE advisory is the last thing the callback receives. Idempotent."""
        if not self._closed:
            self._closed = True
            self._log.debug("consumer %r closes", self.name)
            self._engine.close_mailbox(self.mailbox)
            if self._callback is None:
                self.finished = True  # read by nobody from now on: its hub may forget it

    def _wake(self) -> None:
        raise NotImplementedError

    def _notice(self) -> None:
        """The mailbox was told SUBSCRIBE, UNSUBSCRIBE or its final advisory (engine thread)."""
        raise NotImplementedError

    def _take(self) -> deque[Event]:
        """Everything queued, after an OVERFLOW advisory if events were lost before it."""
        events, lost = self.mailbox.take()
        if lost:
            events.appendleft(overflow_event(lost))
        return events

    def _done_with(self, event: Event) -> bool:
        """Count a delivered event; True once the final advisory has been delivered."""
        if event.topic is not None:
            self.delivered += 1
            return False
        if event.value.final:
            self._closed = True
            self.finished = True
            return True
        return False

    def _discards(self, event: Event) -> bool:
        """Closed while a batch was being delivered: the rest of its events are not."""
        return self._closed and event.topic is not None

    # --- delivering to a callback: what to call, in order; the waiting side calls it ---

    def _calls(
        self, batch: Iterable[Event], callback: Callback
    ) -> Iterator[tuple[Callable[..., Any], Any]]:
        """``(function, argument)`` to call for a batch, in order: the callback for each
        event, and ``on_resync(topics)`` once a burst of advisories that make state stale has
        been delivered, before the next event (or at the end of what is queued). The caller
        calls each (awaiting it if need be) and reports a failure to :meth:`_call_failed`."""
        owed = self._resync
        for event in batch:
            if self._discards(event):
                continue
            ordinary = event.topic is not None
            if ordinary and owed is not None and owed.due():
                yield from self._resync_calls(owed)
            yield callback, event
            if self._done_with(event):
                return
            if not ordinary and owed is not None:
                owed.seen(event.value)
        if owed is not None and owed.due() and not self._queued():
            # Nothing more queued now: the burst is over. (More queued: it may go on, and the
            # next batch, which the engine's wake-up brings, resyncs once for all of it.)
            yield from self._resync_calls(owed)

    def _queued(self) -> int:
        """Events queued and not yet given to :meth:`_calls` (the mailbox's)."""
        return len(self.mailbox)

    def _resync_calls(self, owed: ResyncOwed) -> Iterator[tuple[Callable[..., Any], Any]]:
        assert self._on_resync is not None  # owed only with an on_resync
        failures = owed.failures
        yield self._on_resync, owed.take()
        if owed.failures == failures:  # _call_failed did not run
            owed.succeeded()

    def _resync_wait(self) -> float | None:
        """How long the delivery loop may wait for events: until a failed resync is due."""
        return None if self._resync is None else self._resync.wait_limit()

    def _call_failed(self, function: Callable[..., Any], argument: Any) -> None:
        """A call of :meth:`_calls` raised (call from the ``except`` block: it logs the
        traceback)."""
        self.callback_errors += 1
        extra = {"pghub_consumer": self.name}
        if function is self._on_resync and self._resync is not None:
            delay = self._resync.failed(argument)
            self._log.exception(
                "consumer %r: on_resync raised (topics %s); tried again in %.1f s",
                self.name,
                sorted(argument),
                delay,
                extra=extra,
            )
            return
        event: Event = argument
        advisory = event.advisory
        if advisory is not None:
            self._log.exception(
                "consumer %r: callback raised on advisory %s",
                self.name,
                advisory.action.name,
                extra=extra,
            )
            return
        self._log.exception(
            "consumer %r: callback raised on an event of %r, key %s",
            self.name,
            event.topic,
            list(event.key),
            extra={**extra, "pghub_topic": event.topic, "pghub_key": event.key},
        )

    # --- read without a callback (subscriptions) ---

    def _pop_pending(self) -> Event | None:
        """The next event taken and not yet read, counted as delivered; None if none."""
        pending = self._pending
        while pending:
            event = pending.popleft()
            if self._discards(event):
                continue
            self._over = self._done_with(event)
            return event
        return None

    # --- waits for SUBSCRIBE ---

    def _wanted(self) -> tuple[frozenset[str], int]:
        """What a wait for SUBSCRIBE waits for: the topics asked for now, and the number of
        the last call that asked (the engine must have run it)."""
        return frozenset(self._channels), self._asked

    def _settled(self, wanted: frozenset[str], ask: int) -> bool | None:
        """Whether a wait for ``wanted`` is over: True subscribed, False never will be (the
        consumer ended); None to wait on."""
        subscribed, ended = self.mailbox.subscribed()
        if ended or self._closed:
            return False
        if self.durable is not None:
            subscribed = self.durable.started  # listened to, and its position taken
        if self._handled < ask:
            return None  # the mailbox does not show that call's outcome yet
        return True if wanted <= subscribed else None


def _name_of(callback: Callback | None) -> str:
    if callback is None:
        return "subscription"
    name = getattr(callback, "__qualname__", None)
    return name if isinstance(name, str) else type(callback).__qualname__


class Consumer(BaseConsumer):
    """A consumer of a :class:`pghub.Hub`: its callback runs in a thread of its own.

    Without a callback it is read instead (what :meth:`pghub.Hub.subscription` does).
    """

    def __init__(
        self,
        engine: Engine,
        callback: Callback | None,
        *,
        queue_size: int,
        overflow: Overflow,
        logger: Log,
        hub_name: str,
        keys: Keys | None = None,
        on_resync: Resync | None = None,
        name: str | None = None,
        durable: DurableCursor | None = None,
        reader: SyncReader | None = None,
        shared: bool = False,
    ) -> None:
        super().__init__(
            engine,
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
        self._steps: SyncSteps | None = None
        if durable is not None:
            assert reader is not None, "a durable consumer reads with its hub's reader"
            self._steps = SyncSteps(durable.run(), reader)
        self._given = 0  # of the last delivery, read (without a callback)
        self._ready = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        if callback is not None:
            self._start(callback, hub_name)

    def _start(self, callback: Callback, hub_name: str) -> None:
        """Begin delivering to ``callback``: in a thread of its own."""
        self._thread = threading.Thread(
            target=self._run,
            args=(callback,),
            name=f"pghub-{hub_name}-{self.name}",
            daemon=True,
        )
        self._thread.start()

    def _wake(self) -> None:
        self._ready.set()

    def _notice(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the final advisory has been delivered (not from the callback itself, nor
        on the hub's engine thread, whose progress it would wait for: then at once; at once
        for a consumer without a callback)."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        if not self._engine.on_engine_thread():
            thread.join(timeout)

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """Wait until every topic this consumer asked for is listened to (its SUBSCRIBE has
        been given): an event committed from then on reaches it. True then; False after
        ``timeout`` seconds, or at once if the consumer has ended (closed, or the hub
        stopped). Safe from any thread, its own callback included; on the hub's engine thread
        (an inline or ``confirm`` callback), which gives SUBSCRIBE, it answers at once."""
        if self._engine.on_engine_thread():
            timeout = 0.0
        wanted, ask = self._wanted()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                settled = self._settled(wanted, ask)
                if settled is not None:
                    return settled
                if deadline is None:
                    self._changed.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)

    def next_event(self, timeout: float | None = None) -> Event | None:
        """For a consumer without a callback: the next event or advisory, counted as for a
        callback; None once the final advisory has been read. Raises TimeoutError when
        nothing came within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        steps = self._steps
        while not self._over:
            event = self._pop_pending()
            if event is not None:
                self._given += 1
                return event
            if steps is not None:  # a durable consumer: what was read so far is handled
                steps.delivered(self._given)
                self._given = 0
                try:
                    events = steps.next_delivery(lambda limit: self._taken(limit, deadline))
                except TimeoutError:
                    raise TimeoutError(f"no event within {timeout} s") from None
                if events is None:
                    return None
                self._pending.extend(events)
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._ready.wait(left):
                raise TimeoutError(f"no event within {timeout} s")
            self._ready.clear()
            self._pending.extend(self._take())
        return None

    def _wait_done(self, stoppers: Container[object]) -> None:
        """Wait for the final advisory, unless this thread is the waiter, or is itself waiting
        in ``stop()`` (two callbacks that stop the hub must not wait for each other)."""
        thread = self._thread
        while thread is not None and thread.is_alive() and thread is not threading.current_thread():
            if thread in stoppers:
                return
            thread.join(0.05)

    def settle(self) -> None:
        """A durable subscription is left: what it has read counts as handled (acknowledged)."""
        if self._steps is not None:
            self._steps.settle(self._given)
            self._given = 0

    def _taken(self, limit: float | None, deadline: float | None = None) -> Taken:
        """What the mailbox holds, after waiting up to ``limit`` seconds for something (a
        durable consumer's wait); TimeoutError if ``deadline`` passes first."""
        bounded = False
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            if limit is None or left < limit:
                limit, bounded = left, True
        if (limit is None or limit > 0) and not self._ready.wait(limit) and bounded:
            raise TimeoutError
        self._ready.clear()
        return Taken(self._take(), self.mailbox.take_woken())  # type: ignore[attr-defined]

    def _run(self, callback: Callback) -> None:
        if self._steps is not None:
            while (events := self._steps.next_delivery(self._taken)) is not None:
                self._steps.delivered(self._give(events, callback))
            return
        while not self.finished:
            self._ready.wait(self._resync_wait())  # a failed resync's retry may end the wait
            self._ready.clear()
            self._give(self._take(), callback)

    def _give(self, events: Iterable[Event], callback: Callback) -> int:
        """Deliver a batch; how many of its events were given to the callback."""
        given = 0
        remaining = iter(events)
        if self._resync is None:
            # The common case without a generator step per event (about 0.45 us a delivery
            # of the 0.76 us _calls costs): ordinary events of an open consumer owing no
            # resync go straight to the callback. The first event that is anything else (an
            # advisory; any event once the consumer is closed) and the rest go through _calls.
            stopped: Event | None = None
            try:
                for event in remaining:
                    if event[0] is None or self._closed:
                        stopped = event
                        break
                    given += 1
                    try:
                        callback(event)
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
                function(argument)
            except Exception:
                self._call_failed(function, argument)
        return given


class PooledConsumer(Consumer):
    """A consumer of a :class:`pghub.Hub` without a thread of its own (``run="pool"``): its
    callback runs on the hub's callback pool (pghub._pool), one turn at a time, in order.

    With ``inline`` (``run="inline"``) the engine thread runs its turn as soon as a read of
    the socket brings it events; its advisories (which the hub's state machine gives in the
    middle of its own steps, where no callback may run) and anything queued behind them go
    through the pool.
    """

    def __init__(
        self,
        engine: Engine,
        callback: Callback,
        *,
        pool: CallbackPool,
        inline: bool = False,
        **settings: Any,
    ) -> None:
        self._pool = pool
        self._backlog: deque[Event] = deque()  # taken, not yet delivered (a turn's limit)
        self._done = threading.Event()  # its final advisory has been delivered
        self._retry: threading.Timer | None = None  # a failed resync's retry
        self.pool_state = State.IDLE
        self.pool_runner: threading.Thread | None = None
        super().__init__(engine, callback, **settings)
        if inline:
            self.mailbox.on_events = self._arrived

    def _start(self, callback: Callback, hub_name: str) -> None:
        self._deliver_to = callback
        self._pool.add(self)

    def _wake(self) -> None:
        self._pool.submit(self)

    def _arrived(self) -> None:
        self._pool.run_here(self)

    def _queued(self) -> int:
        return len(self.mailbox) + len(self._backlog)

    def pool_turn(self, limit: int | None) -> Turn:
        """One turn (the pool calls it, never twice at once): deliver up to ``limit`` of
        what it holds (None: all), taking from the mailbox once what it took is delivered."""
        backlog = self._backlog
        if not backlog:
            backlog = self._take()
        batch: Iterable[Event]
        if limit is None or len(backlog) <= limit:
            batch, self._backlog = backlog, deque()
        else:
            batch = [backlog.popleft() for _ in range(limit)]
            self._backlog = backlog
        self._give(batch, self._deliver_to)
        if self.finished:
            self._done.set()
            return Turn.FINISHED
        if self._backlog or len(self.mailbox):
            # More now (a wake-up while it was queued, behind its backlog, woke nothing).
            return Turn.MORE
        wait = None if self._resync is None else self._resync.wait_limit()
        if wait is not None and (self._retry is None or not self._retry.is_alive()):
            # A failed resync is tried again after its delay, events or not.
            self._retry = threading.Timer(max(wait, 0.001), self._wake)
            self._retry.daemon = True
            self._retry.start()
        return Turn.IDLE

    def join(self, timeout: float | None = None) -> None:
        """Wait until the final advisory has been delivered (not from its own callback, nor
        on the engine thread: then at once)."""
        if self.pool_runner is threading.current_thread() or self._engine.on_engine_thread():
            return
        self._done.wait(timeout)

    def _wait_done(self, stoppers: Container[object]) -> None:
        """As :meth:`Consumer._wait_done`: not when its turn runs on this thread or on a
        thread in ``stop()``, nor when the pool can run no turn until such a thread returns."""
        me = threading.current_thread()
        while not self._done.is_set():
            runner = self.pool_runner
            if runner is me or runner in stoppers or self._pool.stalled_by(stoppers):
                return
            self._done.wait(0.05)


# --- subscriptions -----------------------------------------------------------------------------


class SubscriptionReader:
    """What a subscription makes of the events its consumer reads, sync or async alike.

    Entering waits for every topic's SUBSCRIBE (or the final advisory), keeping what came
    meanwhile; iterating yields ordinary events (advisories too with ``advisories``), logs a
    lost OVERFLOW otherwise, and ends at the final advisory.
    """

    def __init__(self, channels: list[str], advisories: bool, log: Log) -> None:
        self.advisories = advisories
        self._log = log
        self._waiting = set(channels)
        self._held: deque[Event] = deque()
        self.ended = False  # the final advisory has been read

    def entering(self, event: Event) -> bool:
        """An event read while entering (kept for the iteration); True once entered."""
        self._held.append(event)
        advisory = event.advisory
        if advisory is None:
            return False
        if advisory.action is Action.SUBSCRIBE and advisory.topic is not None:
            self._waiting.discard(advisory.topic)
        return advisory.final or not self._waiting

    def held(self) -> Event | None:
        """An event kept while entering, not yet read."""
        return self._held.popleft() if self._held else None

    def pick(self, event: Event) -> Event | None:
        """An event read while iterating: the one to yield, or None to read on."""
        advisory = event.advisory
        if advisory is None:
            return event
        if advisory.final:
            self.ended = True
        elif advisory.action is Action.OVERFLOW and not self.advisories:
            self._log.warning("subscription lost %d events", advisory.lost)
        return event if self.advisories else None
