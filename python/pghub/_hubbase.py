"""What :class:`pghub.Hub` and :class:`pghub.AsyncHub` share: options, consumers, sending, stats."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable
from typing import Any

from . import stats as _stats
from ._consumer import BaseConsumer
from ._engine import Engine, HubOptions
from ._mailbox import OVERFLOW_POLICIES, Overflow
from ._outbox import Outgoing
from .events import Event
from .stats import HubStats
from .wire import channel, encode_payload

_hub_ids = itertools.count(1)

# psycopg_pool keyword arguments that are not libpq connection parameters.
_NOT_LIBPQ = {"autocommit", "prepare_threshold", "row_factory", "cursor_factory", "context"}


def conninfo_of(target: Any) -> str:
    """A conninfo string, or the settings of a psycopg_pool pool (its connections are not used:
    a listener needs a session of its own, which a pool slot should not be held for)."""
    if isinstance(target, str):
        return target
    conninfo = getattr(target, "conninfo", None)
    kwargs = getattr(target, "kwargs", None)
    if isinstance(conninfo, str):
        from psycopg.conninfo import make_conninfo

        extra = {k: v for k, v in (kwargs or {}).items() if k not in _NOT_LIBPQ}
        return make_conninfo(conninfo, **extra)
    raise TypeError(
        f"expected a conninfo string or a psycopg_pool pool, got {type(target).__name__}"
    )


EventLike = tuple[str, Any, Any] | Event


class HubBase:
    def __init__(
        self,
        conninfo_or_pool: Any,
        *,
        name: str | None = None,
        logger: logging.Logger | None = None,
        retry_first_connect: bool = False,
        connect_timeout: float = 10.0,
        reconnect_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        liveness_timeout: float = 30.0,
        queue_size: int = 10_000,
        overflow: Overflow = "drop_oldest",
        send_queue_size: int = 100_000,
        batch_max_notifies: int = 1000,
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        self.options = HubOptions(
            retry_first_connect=retry_first_connect,
            connect_timeout=connect_timeout,
            reconnect_delay=reconnect_delay,
            reconnect_max_delay=reconnect_max_delay,
            liveness_timeout=liveness_timeout,
            queue_size=queue_size,
            overflow=overflow,
            send_queue_size=send_queue_size,
            batch_max_notifies=batch_max_notifies,
        )
        self.name = name if name is not None else f"hub{next(_hub_ids)}"
        self.log = logger if logger is not None else logging.getLogger("pghub")
        self._engine = Engine(
            conninfo_of(conninfo_or_pool),
            name=self.name,
            logger=self.log,
            options=self.options,
            on_confirm=self._confirmed,
            on_started=lambda: _stats.register(self),
            on_finished=lambda: _stats.retire(self),
        )
        self._consumers: list[BaseConsumer] = []
        self._consumers_lock = threading.Lock()
        # Consumer threads or tasks now in stop(wait=True): stop() does not wait for those.
        self._stoppers: set[object] = set()
        self._gone = {"delivered": 0, "callback_errors": 0, "dropped": 0, "high_water": 0}
        self._groups = itertools.count(1)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._engine.state}>"

    @property
    def state(self) -> str:
        return self._engine.state

    def _confirmed(self, items: list[Outgoing], ok: bool) -> None:
        raise NotImplementedError

    def _adopt(self, consumer: BaseConsumer, channels: list[str]) -> None:
        """Register a new consumer with the engine, folding away the figures of closed ones."""
        self._engine.refuse_if_forked()
        with self._consumers_lock:  # consumers are made from any thread, callbacks included
            live = []
            for c in self._consumers:
                if c.finished:
                    self._retire_consumer(c)
                else:
                    live.append(c)
            live.append(consumer)
            self._consumers = live
        self._engine.call(self._engine.add_consumer, consumer)
        if channels:
            consumer._channels.update(channels)
            self._engine.call(self._engine.subscribe, consumer, channels)

    def _queue_settings(self, queue_size: int | None, overflow: Overflow | None) -> dict[str, Any]:
        """A consumer's queue bound and policy: its own, else the hub's."""
        return {
            "queue_size": self.options.queue_size if queue_size is None else queue_size,
            "overflow": self.options.overflow if overflow is None else overflow,
        }

    def _retire_consumer(self, c: BaseConsumer) -> None:
        gone = self._gone
        gone["delivered"] += c.delivered
        gone["callback_errors"] += c.callback_errors
        gone["dropped"] += c.mailbox.dropped
        gone["high_water"] = max(gone["high_water"], c.mailbox.high_water)

    def _outgoing(self, topic: str, key: Any, value: Any, group: int, confirm: Any) -> Outgoing:
        return Outgoing(channel(topic), encode_payload(key, value), group, confirm)

    def _outgoing_many(self, events: Iterable[EventLike]) -> list[Outgoing]:
        """Validate and encode a whole batch before any of it is queued (no confirm yet:
        each hub attaches its own)."""
        group = next(self._groups)
        items = []
        for event in events:
            topic, key, value = event
            if topic is None:
                raise ValueError("an advisory cannot be sent")
            items.append(self._outgoing(topic, key, value, group, None))
        return items

    def stats(self) -> HubStats:
        """A snapshot of this hub's figures (see :class:`pghub.HubStats`)."""
        engine = self._engine
        counters = engine.counters
        with self._consumers_lock:
            consumers = list(self._consumers)
            gone = dict(self._gone)
        return HubStats(
            name=self.name,
            state=engine.state,
            events_received=counters.events_received,
            events_delivered=gone["delivered"] + sum(c.delivered for c in consumers),
            invalid_payloads=counters.invalid_payloads,
            overflow_drops=gone["dropped"] + sum(c.mailbox.dropped for c in consumers),
            callback_errors=gone["callback_errors"] + sum(c.callback_errors for c in consumers),
            subscribes=counters.subscribes,
            listens=counters.listens,
            listen_failures=counters.listen_failures,
            unlistens=counters.unlistens,
            unlisten_failures=counters.unlisten_failures,
            notifies=counters.notifies,
            notify_failures=counters.notify_failures,
            connects=counters.connects,
            connect_failures=counters.connect_failures,
            disconnects=counters.disconnects,
            reconnects=counters.reconnects,
            consumers=sum(1 for c in consumers if not c.closed),
            queue_high_water=max([gone["high_water"], *(c.mailbox.high_water for c in consumers)]),
            send_queue_high_water=counters.send_queue_high_water,
            backend_pid=engine.backend_pid,
        )
