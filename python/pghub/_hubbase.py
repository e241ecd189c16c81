"""What :class:`pghub.Hub` and :class:`pghub.AsyncHub` share: options, consumers, sending, stats."""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import _log, _registry
from ._consumer import BaseConsumer, keys_of
from ._durable import DurableCursor, check_name, check_since
from ._engine import Engine
from ._log import HubLog
from ._options import HubOptionArgs, HubOptions, Overflow
from ._outbox import Outgoing
from ._ticker import Ticker
from .events import Event
from .stats import HubStats
from .wire import channel, decode_payload, encode_payload

if TYPE_CHECKING:
    from typing_extensions import Unpack

_hub_ids = itertools.count(1)

# psycopg_pool keyword arguments that are not libpq connection parameters.
_NOT_LIBPQ = {"autocommit", "prepare_threshold", "row_factory", "cursor_factory", "context"}


_R = TypeVar("_R")  # the kind of reader session a hub makes


class PoolSettings(Protocol):
    """What the hub reads of a ``psycopg_pool`` pool (``ConnectionPool``,
    ``AsyncConnectionPool``): its connection settings, a str and a dict (or functions
    returning them), never its connections."""

    @property
    def conninfo(self) -> object: ...

    @property
    def kwargs(self) -> object: ...


def conninfo_of(target: str | PoolSettings) -> str:
    """A conninfo string, or the settings of a psycopg_pool pool (its connections are not used:
    a listener needs a session of its own, which a pool slot should not be held for)."""
    if isinstance(target, str):
        return target
    conninfo = _resolved(getattr(target, "conninfo", None))
    kwargs = _resolved(getattr(target, "kwargs", None)) or {}
    if isinstance(conninfo, str) and isinstance(kwargs, dict):
        from psycopg.conninfo import make_conninfo

        extra = {k: v for k, v in kwargs.items() if k not in _NOT_LIBPQ}
        return make_conninfo(conninfo, **extra)
    raise TypeError(
        "expected a conninfo string or a psycopg_pool pool (conninfo a str, kwargs a dict),"
        f" got {type(target).__name__}"
    )


def _resolved(setting: object) -> object:
    """A pool setting given as a function (psycopg_pool 3.3) is read once, now."""
    return setting() if callable(setting) else setting


EventLike = tuple[str, Any, Any] | Event


@dataclass
class Answer:
    """What one ``notify`` or ``notify_many`` call is told once each of its events has been
    answered: one answer for the call (True when every event committed), given to
    :meth:`_resolve` (each hub's future) and to the ``confirm`` callback, each exactly once,
    apart from each other: a future that cannot be set (cancelled, its loop closed) neither
    skips nor breaks the callback."""

    def __init__(self, events: int, confirm: Callable[[bool], Any] | None, log: HubLog) -> None:
        self._left = events
        self._ok = True
        self._confirm = confirm
        self._log = log
        self._lock = threading.Lock()  # answers may come from the engine and a caller

    def one(self, ok: bool) -> None:
        """One event's answer."""
        with self._lock:
            self._ok = self._ok and ok
            self._left -= 1
            done = self._left == 0
        if done:
            self.settle()

    def settle(self) -> None:
        """The call's answer (every event answered, or none to send)."""
        ok = self._ok
        self._resolve(ok)
        confirm, self._confirm = self._confirm, None
        if confirm is not None:
            try:
                confirm(ok)
            except Exception:
                self._log.exception("confirm callback raised")

    def _resolve(self, ok: bool) -> None:
        raise NotImplementedError


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
        conninfo_or_pool: str | PoolSettings,
        *,
        name: str | None = None,
        logger: logging.Logger | None = None,
        **options: Unpack[HubOptionArgs],
    ) -> None:
        """``options``: the fields of :class:`pghub._options.HubOptions` (docs/hub.md)."""
        self.options = HubOptions(**options)
        self.name = name if name is not None else f"hub{next(_hub_ids)}"
        given = logger if logger is not None else logging.getLogger(_log.HUB)
        #: Where the hub and its consumers log; every record carries ``pghub_hub``.
        self.log = HubLog(given, self.name)
        self._conninfo = conninfo_of(conninfo_or_pool)
        self._engine = Engine(
            self._conninfo,
            name=self.name,
            logger=given,
            options=self.options,
            on_confirm=self._confirmed,
            on_started=self._started,
            on_finished=self._finished,
        )
        # The elected ticker of durable topics (pghub._ticker): it connects once the hub has,
        # and stops with it. With ticker=None it starts with the first durable consumer.
        self._ticker = Ticker(
            conninfo_of(conninfo_or_pool),
            options=self.options,
            name=self.name,
            logger=given,
            ready=lambda: self.state == "connected",
        )
        self._consumers: list[BaseConsumer] = []
        self._consumers_lock = threading.Lock()
        self._running = False  # started, under _consumers_lock (for _stand_for_ticker)
        self._reader: Any = None  # durable consumers' reader session(s): _reader_session
        self._stands_for_ticker = self.options.ticker is True
        # Consumer threads or tasks now in stop(wait=True): stop() does not wait for those.
        self._stoppers: set[object] = set()
        self._gone = _ConsumerFigures()  # of the consumers the hub has forgotten
        self._groups = itertools.count(1)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._engine.state}>"

    @property
    def state(self) -> str:
        return self._engine.state

    def _started(self) -> None:
        _registry.register(self)
        with self._consumers_lock:
            self._running = True
            stands = self._stands_for_ticker
        if stands:
            self._ticker.start()

    def _stand_for_ticker(self) -> None:
        """A durable consumer is adopted: with ``ticker=None`` the hub now stands for
        election (at once if it runs, else when it starts)."""
        if self.options.ticker is not None:
            return
        with self._consumers_lock:
            self._stands_for_ticker = True
            running = self._running
        if running:
            self._ticker.start()

    def _reader_session(self, kind: Callable[..., _R]) -> _R:
        """The hub's reader session(s) for durable consumers, a ``kind`` (``SyncReader`` or
        ``AsyncReader``) made once and opened on first use."""
        with self._consumers_lock:
            if self._reader is None:
                options = self.options
                self._reader = kind(
                    self._conninfo,
                    self.name,
                    liveness=options.liveness_timeout,
                    connect=options.connect_timeout,
                )
            return self._reader  # type: ignore[no-any-return]

    def _finished(self) -> None:
        _registry.retire(self)
        self._ticker.stop()

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
        self.log.debug("consumer %r made", consumer.name)
        if consumer.durable is not None:
            self._stand_for_ticker()
        self._engine.add_mailbox(consumer.mailbox)
        if channels:
            consumer.subscribe(*channels)

    def _consumer_settings(
        self,
        queue_size: int | None,
        overflow: Overflow | None,
        keys: Iterable[Iterable[int]] | None,
        shared: bool = False,
    ) -> dict[str, Any]:
        """A consumer's queue bound and policy (its own, else the hub's), key filter and
        whether it shares decoded values."""
        return {
            "queue_size": self.options.queue_size if queue_size is None else queue_size,
            "overflow": self.options.overflow if overflow is None else overflow,
            "keys": keys_of(keys),
            "logger": self.log,
            "shared": bool(shared),
        }

    def _durable_cursor(
        self, durable: str | None, since: str | None, keys: Iterable[Iterable[int]] | None
    ) -> DurableCursor | None:
        """A durable consumer's cursor (docs/durable.md, From Python): named with ``durable``,
        anonymous (its position in memory only) with only ``since``; None for a plain one."""
        if durable is None and since is None:
            return None
        options = self.options
        decode = decode_payload
        if options.parse_float is not None or options.parse_int is not None:
            decode = functools.partial(
                decode_payload, parse_float=options.parse_float, parse_int=options.parse_int
            )
        return DurableCursor(
            None if durable is None else check_name(durable),
            check_since("now" if since is None else since),
            decode=decode,
            keys=keys_of(keys),
            log=self.log,
            now=time.monotonic,
        )

    def _outgoing(self, topic: str, key: Any, value: Any, group: int, confirm: Any) -> Outgoing:
        # No size limit here: the server decides whether the topic is durable (journaled
        # whole) or not (refused over 7,999 bytes: the notify is answered False).
        payload = encode_payload(key, value, default=self.options.default, limit=None)
        return Outgoing(channel(topic), payload, group, confirm)

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
