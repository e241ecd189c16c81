"""What :class:`pghub.Hub` and :class:`pghub.AsyncHub` share: options, consumers, sending, stats."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import _registry
from ._consumer import BaseConsumer
from ._engine import Engine
from ._options import HubOptionArgs, HubOptions, Overflow
from ._outbox import Outgoing
from .events import Event
from .stats import HubStats
from .wire import channel, encode_payload

if TYPE_CHECKING:
    from typing_extensions import Unpack

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


@dataclass
class _ConsumerFigures:
    """What consumers count, named as in :class:`pghub.HubStats`."""

    events_delivered: int = 0
    callback_errors: int = 0
    overflow_drops: int = 0
    queue_high_water: int = 0

    def add(self, consumer: BaseConsumer) -> None:
        self.events_delivered += consumer.delivered
        self.callback_errors += consumer.callback_errors
        self.overflow_drops += consumer.mailbox.dropped
        self.queue_high_water = max(self.queue_high_water, consumer.mailbox.high_water)


class HubBase:
    def __init__(
        self,
        conninfo_or_pool: Any,
        *,
        name: str | None = None,
        logger: logging.Logger | None = None,
        **options: Unpack[HubOptionArgs],
    ) -> None:
        """``options``: the fields of :class:`pghub._options.HubOptions` (docs/hub.md)."""
        self.options = HubOptions(**options)
        self.name = name if name is not None else f"hub{next(_hub_ids)}"
        self.log = logger if logger is not None else logging.getLogger("pghub")
        self._engine = Engine(
            conninfo_of(conninfo_or_pool),
            name=self.name,
            logger=self.log,
            options=self.options,
            on_confirm=self._confirmed,
            on_started=lambda: _registry.register(self),
            on_finished=lambda: _registry.retire(self),
        )
        self._consumers: list[BaseConsumer] = []
        self._consumers_lock = threading.Lock()
        # Consumer threads or tasks now in stop(wait=True): stop() does not wait for those.
        self._stoppers: set[object] = set()
        self._gone = _ConsumerFigures()  # of the consumers the hub has forgotten
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
                    self._gone.add(c)
                else:
                    live.append(c)
            live.append(consumer)
            self._consumers = live
        self._engine.add_mailbox(consumer.mailbox)
        if channels:
            consumer.subscribe(*channels)

    def _queue_settings(self, queue_size: int | None, overflow: Overflow | None) -> dict[str, Any]:
        """A consumer's queue bound and policy: its own, else the hub's."""
        return {
            "queue_size": self.options.queue_size if queue_size is None else queue_size,
            "overflow": self.options.overflow if overflow is None else overflow,
        }

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
        """A snapshot of this hub's figures (see :class:`pghub.HubStats`): the engine's
        counters and the consumers' figures, under the same names."""
        engine = self._engine
        with self._consumers_lock:
            consumers = list(self._consumers)
            figures = replace(self._gone)
        for consumer in consumers:
            figures.add(consumer)
        return HubStats(
            name=self.name,
            state=engine.state,
            backend_pid=engine.core.backend_pid,
            consumers=sum(1 for c in consumers if not c.closed),
            mailboxes=len(engine.core.mailboxes),
            **vars(figures),
            **vars(engine.core.counters),
        )
