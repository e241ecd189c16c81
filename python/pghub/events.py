"""What consumers receive: events, and the advisories a hub sends about itself."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple


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


class Advisory(NamedTuple):
    """What a hub tells a consumer about itself.

    ``final`` is True for STOP and CLOSE, the last thing a consumer ever receives.
    ``topic`` names the channel for SUBSCRIBE and UNSUBSCRIBE. ``lost`` counts the events
    dropped from this consumer's queue, for OVERFLOW.
    """

    action: Action
    final: bool = False
    topic: str | None = None
    lost: int = 0
