"""Resync: which of a consumer's topics its ``on_resync`` is owed, after which advisories.

What a consumer holds of a topic may be stale after some advisories (:data:`RESYNC_AFTER`);
a durable consumer, which reads what it missed from the journal, only after its start and a
GAP (:data:`DURABLE_RESYNC_AFTER`). :class:`ResyncOwed` follows one consumer's advisories.
"""

from __future__ import annotations

import enum
import time

from ._backoff import Backoff
from .events import Action, Advisory


class Scope(enum.Enum):
    """Which of a consumer's topics an advisory makes stale."""

    TOPIC = "topic"  # the advisory's own topic
    ALL = "all"  # every topic the consumer is subscribed to


#: The advisories after which what a consumer holds may be stale, and for which of its
#: topics.
RESYNC_AFTER: dict[Action, Scope] = {
    Action.SUBSCRIBE: Scope.TOPIC,  # the first events of a topic: load what exists
    Action.RECONNECT: Scope.ALL,  # events sent while disconnected were lost
    Action.OVERFLOW: Scope.ALL,  # events dropped from a full queue
    Action.GAP: Scope.TOPIC,  # a durable topic's events removed before they were read
}
#: A durable consumer loses nothing to a lost connection or a full queue (it reads the
#: journal): only what comes before its start, and retention, make its state stale.
DURABLE_RESYNC_AFTER: dict[Action, Scope] = {
    Action.SUBSCRIBE: Scope.TOPIC,
    Action.GAP: Scope.TOPIC,
}


# An on_resync that raised is tried again after this (doubling, a random half jitter).
RESYNC_RETRY_DELAY = 1.0
RESYNC_RETRY_MAX_DELAY = 30.0


class ResyncOwed:
    """The topics a consumer's ``on_resync`` is owed, followed through the advisories it is
    given. A DISCONNECT takes back what is owed (the RECONNECT that follows owes it again,
    and a resync in between would read a state the events cannot follow); so does the final
    advisory, after which nothing runs. A resync that raised is owed again, due after a
    backoff, or at once on a new advisory that owes it."""

    def __init__(self, after: dict[Action, Scope] = RESYNC_AFTER) -> None:
        self._after = after
        # A DISCONNECT takes back what is owed only if the RECONNECT after it owes it again.
        self._reconnect_owes = Action.RECONNECT in after
        self.subscribed: set[str] = set()
        self.owed: set[str] = set()
        self.failures = 0
        self._retry_at: float | None = None  # after a failure: not due before this
        self._backoff = Backoff(RESYNC_RETRY_DELAY, RESYNC_RETRY_MAX_DELAY)

    def seen(self, advisory: Advisory) -> None:
        action, topic = advisory.action, advisory.topic
        if action is Action.SUBSCRIBE and topic is not None:
            self.subscribed.add(topic)
        elif action is Action.UNSUBSCRIBE and topic is not None:
            self.subscribed.discard(topic)
            self.owed.discard(topic)
        elif (action is Action.DISCONNECT and self._reconnect_owes) or advisory.final:
            self.owed.clear()
            return
        scope = self._after.get(action)
        if scope is Scope.TOPIC and topic is not None:
            self.owed.add(topic)
        elif scope is Scope.ALL:
            self.owed.update(self.subscribed)
        else:
            return
        self._retry_at = None  # a new reason: due at once, whatever failed before

    def due(self) -> bool:
        """Something is owed, and not waiting for a retry."""
        if not self.owed:
            return False
        return self._retry_at is None or time.monotonic() >= self._retry_at

    def wait_limit(self) -> float | None:
        """How long the consumer may wait for events before a retry is due (None: no limit)."""
        if not self.owed or self._retry_at is None:
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def take(self) -> frozenset[str]:
        owed = frozenset(self.owed)
        self.owed.clear()
        return owed

    def succeeded(self) -> None:
        self._retry_at = None
        self._backoff.reset()

    def failed(self, topics: frozenset[str]) -> float:
        """``on_resync(topics)`` raised: owed again (those still subscribed), due after the
        returned delay."""
        self.failures += 1
        self.owed.update(topics & self.subscribed)
        delay = self._backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        return delay
