"""The synchronous hub: one listening session per process, any number of consumers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from ._consumer import Consumer, channels_of
from ._hubbase import EventLike, HubBase
from ._options import Overflow
from ._outbox import Outgoing
from .errors import ConnectFailed, HubStopped
from .events import Event

Confirm = Callable[[bool], None]


class Hub(HubBase):
    """A hub for threaded programs. Safe to use from any thread, callbacks included.

    Each consumer's callback runs in a thread of its own; ``confirm`` callbacks run on the hub's
    engine thread and must be quick. See docs/hub.md for every option and the advisory contract.
    """

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

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the hub has stopped (after ``stop()``, or after a failed first connect):
        every notify answered, every consumer given its STOP. True once stopped, False if
        ``timeout`` seconds passed first. Its consumers' callbacks may still be running."""
        return self._engine.join(timeout)

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
    ) -> Consumer:
        """A new consumer calling ``callback(event)`` for its events and advisories."""
        channels = channels_of(topics)
        self._engine.refuse_if_forked()  # before its thread starts
        consumer = Consumer(
            self._engine,
            callback,
            logger=self.log,
            **self._queue_settings(queue_size, overflow),
            name=f"pghub-{self.name}-consumer",
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
    ) -> None:
        """Send an event. Bad input raises here; ``confirm(True)`` follows the commit,
        ``confirm(False)`` means it was not sent (stopped, or refused by the server)."""
        self._engine.notify(self._outgoing(topic, key, value, next(self._groups), confirm))

    def notify_many(self, events: Iterable[EventLike], *, confirm: Confirm | None = None) -> None:
        """Send a batch of ``(topic, key, value)`` events together. Nothing is queued unless
        every event is valid; ``confirm`` is called once: True when every event committed."""
        items = self._outgoing_many(events)
        if confirm is not None and items:
            whole = _WholeBatch(len(items), confirm)
            items = [item._replace(confirm=whole.one) for item in items]
        self._engine.notify_many(items)  # raises HubStopped after stop(), even for no events
        if confirm is not None and not items:
            confirm(True)  # nothing to send, nothing that failed

    def _confirmed(self, items: list[Outgoing], ok: bool) -> None:
        for item in items:
            if item.confirm is not None:
                try:
                    item.confirm(ok)
                except Exception:
                    self.log.exception("pghub hub %r: confirm callback raised", self.name)


class _WholeBatch:
    """Turns one answer per event into one answer for the batch."""

    def __init__(self, size: int, confirm: Confirm) -> None:
        self._left = size
        self._ok = True
        self._confirm = confirm
        self._lock = threading.Lock()

    def one(self, ok: bool) -> None:
        with self._lock:
            self._ok = self._ok and ok
            self._left -= 1
            done = self._left == 0
        if done:
            self._confirm(self._ok)
