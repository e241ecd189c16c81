"""What consumers receive: events, and the advisories a hub sends about itself."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, NamedTuple

#: The channel on which durable topics' wake-ups come (docs/durable.md): its payload is a
#: channel or a comma list of them, not an encoded event.
WAKE_CHANNEL = "pghub:wake"


class Event(NamedTuple):
    """One pghub event: a topic (its channel form, lower case), a key and a JSON value.

    Advisories are events too: their ``topic`` is None, their ``key`` empty and their
    ``value`` an :class:`Advisory`. A named tuple keeps events immutable and cheap to make
    on the receive path.
    """

    topic: str | None
    key: tuple[int, ...]
    value: Any

    @property
    def advisory(self) -> Advisory | None:
        """The advisory this event carries, or None for an ordinary event."""
        return self.value if self.topic is None else None

    @property
    def position(self) -> str | None:
        """Where a durable consumer's event stands in its topic's journal (usable as
        ``since=``); None for a plain event and for advisories."""
        return None


class DurableEvent(Event):
    """An event read from a durable topic's journal: an :class:`Event` (unpacked as the same
    triple, equal to it) that also knows its :attr:`position`. Plain events stay plain tuples,
    so the plain receive path pays nothing for this."""

    @property
    def position(self) -> str | None:
        position: str | None = self.__dict__.get("_position")
        return position


def durable_event(topic: str, key: tuple[int, ...], value: Any, position: str) -> DurableEvent:
    event: DurableEvent = tuple.__new__(DurableEvent, (topic, key, value))
    event.__dict__["_position"] = position
    return event


class Action(enum.Enum):
    """Why a hub sent an advisory."""

    CONNECT = "connect"
    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"
    STOP = "stop"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    CLOSE = "close"
    OVERFLOW = "overflow"
    GAP = "gap"


class Advisory(NamedTuple):
    """What a hub tells a consumer about itself.

    ``final`` is True for STOP and CLOSE, the last thing a consumer ever receives.
    ``topic`` names the channel for SUBSCRIBE, UNSUBSCRIBE and GAP. ``lost`` counts the events
    dropped from this consumer's queue, for OVERFLOW. ``gap``, for GAP (durable consumers
    only), is what is known of the events that retention removed before this consumer read
    them, as ``pghub.read`` says it (docs/durable.md): ``events`` (at most that many),
    ``first_id``/``last_id``, ``oldest_at``/``newest_at``, ``removed_at``.
    """

    action: Action
    final: bool = False
    topic: str | None = None
    lost: int = 0
    gap: Mapping[str, Any] | None = None
