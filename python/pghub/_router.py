"""The receive path: each notification decoded once and handed to the mailboxes of its channel.

This is the one per-event loop of the hub, so it stays apart from the core's decisions and
reads the core's routing table (:attr:`pghub._core.Core.routes`, channel -> mailboxes told
SUBSCRIBE) as it is, with no call into the core per event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ._core import Counters, MailboxLike
from .errors import InvalidPayload
from .events import Event
from .wire import decode_payload

_Copy = Callable[[Any], Any]


class Notification(Protocol):
    """One notification as libpq gives it (``psycopg.pq.PGnotify``)."""

    @property
    def relname(self) -> bytes: ...

    @property
    def extra(self) -> bytes: ...


def copier(value: Any) -> _Copy | None:
    """How to copy a decoded value for another consumer; None when it is immutable.

    A flat dict or list (the usual event) is copied by C code; nested ones by json_copy.
    """
    kind = type(value)
    if kind is dict:
        for item in value.values():
            if type(item) is dict or type(item) is list:
                return json_copy
        return dict.copy
    if kind is list:
        for item in value:
            if type(item) is dict or type(item) is list:
                return json_copy
        return list.copy
    return None


def json_copy(value: Any) -> Any:
    """A deep copy of a decoded JSON value: dicts and lists are copied, the rest is immutable.

    Without recursion: a value may nest as deep as the decoder allows, deeper than Python's
    recursion limit.
    """
    root = [value]
    todo: list[tuple[Any, Any]] = [(root, 0)]  # (container, index) whose item to replace
    while todo:
        parent, index = todo.pop()
        item = parent[index]
        if type(item) is dict:
            parent[index] = item = dict(item)
            todo.extend((item, k) for k, v in item.items() if type(v) is dict or type(v) is list)
        elif type(item) is list:
            parent[index] = item = list(item)
            todo.extend((item, i) for i, v in enumerate(item) if type(v) is dict or type(v) is list)
    return root[0]


class Router:
    def __init__(
        self,
        routes: Mapping[str, tuple[MailboxLike, ...]],
        counters: Counters,
        *,
        name: str,
        logger: logging.Logger,
    ) -> None:
        self._routes = routes
        self._counters = counters
        self._name = name
        self._log = logger

    def route(self, notifies: Sequence[Notification]) -> None:
        """Decode each notification once and hand it to the mailboxes of its channel.

        Consecutive notifications on one channel form a run, which each of its mailboxes
        gets in one step; a mailbox's events keep the server's order, across channels too.
        """
        routes = self._routes
        counters = self._counters
        new = tuple.__new__  # Event(...) without the named tuple's Python-level __new__
        runs: list[tuple[str, list[Event], list[_Copy | None]]] = []
        run_channel = None
        events: list[Event] = []
        copiers: list[_Copy | None] = []
        for n in notifies:
            channel = n.relname.decode()
            mailboxes = routes.get(channel)
            if mailboxes is None:
                continue  # left over from an UNLISTEN, or a channel nobody wants any more
            try:
                payload = n.extra.decode()
                key, value = decode_payload(payload)
            except (InvalidPayload, UnicodeDecodeError) as exc:
                counters.invalid_payloads += 1
                self._log.warning(
                    "pghub hub %r: invalid payload on %r: %s", self._name, channel, exc
                )
                continue
            counters.events_received += 1
            if channel != run_channel:
                run_channel, events, copiers = channel, [], []
                runs.append((channel, events, copiers))
            events.append(new(Event, (channel, key, value)))
            copiers.append(copier(value) if len(mailboxes) > 1 else None)
        pending: dict[MailboxLike, list[Event]] = {}
        for channel, events, copiers in runs:
            mutable = any(copiers)
            for i, mailbox in enumerate(routes[channel]):
                if i and mutable:
                    # Each mailbox gets its own copy of a mutable value: none can change
                    # what another receives.
                    mine = [
                        e if c is None else new(Event, (e[0], e[1], c(e[2])))
                        for e, c in zip(events, copiers, strict=True)
                    ]
                else:
                    mine = events
                box = pending.get(mailbox)
                if box is None:
                    pending[mailbox] = mine if len(runs) == 1 else list(mine)
                else:
                    box.extend(mine)
        for mailbox, mine in pending.items():
            mailbox.put_events(mine)
