"""The receive path: each notification decoded once and handed to the mailboxes of its channel.

This is the one per-event loop of the hub, so it stays apart from the core's decisions and
reads the core's routing table (:attr:`pghub._core.Core.routes`, channel -> mailboxes told
SUBSCRIBE) as it is, with no call into the core per event.

A mailbox with a key filter (its ``keys``, a frozenset of keys) gets only the events whose key
is in it, filtered here before any copy is made for it; mailboxes without one cost nothing
more. Mailboxes whose consumers share values (``shared``) get the decoded values themselves,
one object for all of them; every other mailbox a copy of its own. The hub's number hooks
(``parse_float``, ``parse_int``) are given to the decoder; a notification that a hook cannot
read is counted invalid, like one that fails to decode.

The durable topics' wake channel (``pghub:wake``, which no topic can name) carries a channel
or a comma list of channels, not an event: it is passed on undecoded, its value the payload
text, to the durable consumers that listen to it (:class:`pghub._durable.WakeMailbox`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

from ._core import Counters, Gauged, MailboxLike
from ._log import HubLog, Log
from .errors import InvalidPayload
from .events import WAKE_CHANNEL, Event
from .wire import decode_payload

_Copy = Callable[[Any], Any]
_Keys = frozenset[tuple[int, ...]]


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
        logger: Log,
        parse_float: Callable[[str], Any] | None = None,
        parse_int: Callable[[str], Any] | None = None,
    ) -> None:
        self._routes = routes
        self._counters = counters
        self._name = name
        self._log = HubLog(logger, name)
        self._decode: Callable[[str], tuple[tuple[int, ...], Any]] = decode_payload
        if parse_float is not None or parse_int is not None:
            self._decode = functools.partial(
                decode_payload, parse_float=parse_float, parse_int=parse_int
            )

    def route(self, notifies: Sequence[Notification]) -> list[Gauged]:
        """Decode each notification once and hand it to the mailboxes of its channel; the
        mailboxes now at least half full (the core may pause reading for them).

        Consecutive notifications on one channel form a run, which each of its mailboxes
        gets in one step; so do consecutive notifications on channels whose only mailbox is
        the same (one consumer of ten topics round-robin: one run, not one per event). A
        mailbox's events keep the server's order, across channels too.
        """
        routes = self._routes
        counters = self._counters
        decode = self._decode
        new = tuple.__new__  # Event(...) without the named tuple's Python-level __new__
        runs: list[tuple[tuple[MailboxLike, ...], list[Event], list[_Copy | None]]] = []
        run_target: object = None  # the run's mailbox when it has one, else its mailboxes
        events: list[Event] = []
        copiers: list[_Copy | None] = []
        for n in notifies:
            channel = n.relname.decode()
            mailboxes = routes.get(channel)
            if not mailboxes:
                continue  # left over from an UNLISTEN, or a channel nobody wants any more
            key: tuple[int, ...]
            if channel == WAKE_CHANNEL:
                # A wake-up, for durable consumers only: passed on as it is, not counted.
                key, value = (), n.extra.decode(errors="replace")
            else:
                try:
                    key, value = decode(n.extra.decode())
                except (InvalidPayload, UnicodeDecodeError) as exc:
                    counters.invalid_payloads += 1
                    self._log.warning("invalid payload on %r: %s", channel, exc)
                    continue
                except Exception as exc:  # a parse_float/parse_int of the caller's raised
                    counters.invalid_payloads += 1
                    self._log.warning(
                        "invalid payload on %r: a decode hook raised %s: %s",
                        channel,
                        type(exc).__name__,
                        exc,
                    )
                    continue
                counters.events_received += 1
            several = len(mailboxes) > 1
            target = mailboxes if several else mailboxes[0]
            if target is not run_target:
                run_target, events, copiers = target, [], []
                runs.append((mailboxes, events, copiers))
            events.append(new(Event, (channel, key, value)))
            copiers.append(copier(value) if several else None)
        pending: dict[MailboxLike, list[Event]] = {}
        for mailboxes, events, copiers in runs:
            mutable = any(copiers)
            # The decoded values themselves go to the mailboxes that share them (their
            # consumers promised not to change them) if there are any, else to the first
            # mailbox; every other mailbox gets a copy of its own.
            sharing = mutable and any(getattr(m, "shared", False) for m in mailboxes)
            for i, mailbox in enumerate(mailboxes):
                keys: _Keys | None = getattr(mailbox, "keys", None)  # test doubles have none
                if keys is None:
                    theirs, their_copiers = events, copiers
                else:
                    picked = [k for k, e in enumerate(events) if e[1] in keys]
                    if not picked:
                        continue
                    theirs = [events[k] for k in picked]
                    their_copiers = [copiers[k] for k in picked]
                if mutable and (not getattr(mailbox, "shared", False) if sharing else i):
                    # Each mailbox gets its own copy of a mutable value: none can change
                    # what another receives.
                    mine = [
                        e if c is None else new(Event, (e[0], e[1], c(e[2])))
                        for e, c in zip(theirs, their_copiers, strict=True)
                    ]
                else:
                    mine = theirs
                box = pending.get(mailbox)
                if box is None:
                    pending[mailbox] = mine if len(runs) == 1 else list(mine)
                else:
                    box.extend(mine)
        full: list[Gauged] = []
        for mailbox, mine in pending.items():
            if mailbox.put_events(mine):
                full.append(cast(Gauged, mailbox))
        return full
