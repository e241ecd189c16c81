"""Consumers: a callback, a set of topics, and a mailbox the hub's engine fills.

:class:`BaseConsumer` holds what sync and async consumers share: subscribing, closing and the
delivery contract. A :class:`Consumer` runs its callback in a thread of its own, so a slow or
blocking callback holds up nobody else; :class:`pghub.aio.AsyncConsumer` runs it as a task.

The engine knows a consumer only by its mailbox: a consumer asks the engine's thread-safe
methods (``subscribe``, ``unsubscribe``, ``close_mailbox``) for itself.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Container
from typing import Any

from ._engine import Engine
from ._mailbox import Mailbox
from ._options import Overflow
from .errors import ConsumerClosed
from .events import Action, Advisory, Event
from .wire import channel


def channels_of(topics: tuple[str, ...]) -> list[str]:
    """Validate every topic first, so that one bad topic subscribes none."""
    out: list[str] = []
    for topic in topics:
        c = channel(topic)
        if c not in out:
            out.append(c)
    return out


def overflow_event(lost: int) -> Event:
    return Event(None, (), Advisory(Action.OVERFLOW, lost=lost))


class BaseConsumer:
    def __init__(
        self,
        engine: Engine,
        callback: Callable[[Event], Any] | None,
        *,
        queue_size: int,
        overflow: Overflow,
        logger: logging.Logger,
    ) -> None:
        self._engine = engine
        self._callback = callback
        self._log = logger
        self._channels: set[str] = set()
        self._closed = False
        self.mailbox = Mailbox(queue_size, overflow, self._wake)
        self.finished = False  # its final advisory has been delivered: nothing more happens
        self.delivered = 0
        self.callback_errors = 0

    @property
    def topics(self) -> frozenset[str]:
        """The channels this consumer asked for (subscribed, or on their way)."""
        return frozenset(self._channels)

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(self, *topics: str) -> None:
        """Subscribe to topics; a SUBSCRIBE advisory follows each once it is listened to."""
        channels = channels_of(topics)
        if self._closed:
            raise ConsumerClosed("the consumer is closed")
        self._channels.update(channels)
        self._engine.subscribe(self.mailbox, channels)

    def unsubscribe(self, *topics: str) -> None:
        """Unsubscribe; an UNSUBSCRIBE advisory follows, after which no event of it arrives."""
        channels = channels_of(topics)
        if self._closed:
            raise ConsumerClosed("the consumer is closed")
        self._channels.difference_update(channels)
        self._engine.unsubscribe(self.mailbox, channels)

    def close(self) -> None:
        """Close: the CLOSE advisory is the last thing the callback receives. Idempotent."""
        if not self._closed:
            self._closed = True
            self._engine.close_mailbox(self.mailbox)

    def _wake(self) -> None:
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

    def _failed(self, event: Event) -> None:
        self.callback_errors += 1
        self._log.exception("pghub: consumer callback raised on %r", event)


class Consumer(BaseConsumer):
    """A consumer of a :class:`pghub.Hub`: its callback runs in a thread of its own."""

    def __init__(
        self,
        engine: Engine,
        callback: Callable[[Event], Any],
        *,
        queue_size: int,
        overflow: Overflow,
        logger: logging.Logger,
        name: str,
    ) -> None:
        super().__init__(engine, callback, queue_size=queue_size, overflow=overflow, logger=logger)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        self._ready.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the final advisory has been delivered (not from the callback itself)."""
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _wait_done(self, stoppers: Container[object]) -> None:
        """Wait for the final advisory, unless this thread is the waiter, or is itself waiting
        in ``stop()`` (two callbacks that stop the hub must not wait for each other)."""
        thread = self._thread
        while thread.is_alive() and thread is not threading.current_thread():
            if thread in stoppers:
                return
            thread.join(0.05)

    def _run(self) -> None:
        callback = self._callback
        assert callback is not None
        while True:
            self._ready.wait()
            self._ready.clear()
            for event in self._take():
                if self._discards(event):
                    continue
                try:
                    callback(event)
                except Exception:
                    self._failed(event)
                if self._done_with(event):
                    return
