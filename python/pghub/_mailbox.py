"""A consumer's bounded queue, filled by the hub's engine thread and emptied by the consumer.

The engine waits for a consumer only a bounded time (the server's notification queue fills
meanwhile): a mailbox says when it is half full, the core pauses reading for up to
``overflow_pause``, and a take() from a half-full mailbox wakes the engine. Past that a full
mailbox drops events by its policy and counts them; the consumer hears how many it lost in an
OVERFLOW advisory before its next events. Advisories are never dropped.

Its wake-up is called when it goes from empty to not empty (a consumer's own thread wakes, or a
pooled consumer goes on its pool's ready queue); for a consumer run inline, events that find it
empty call ``on_events`` instead, which runs the consumer's turn on the engine thread then.

A mailbox also keeps what its consumer has been told about its topics (SUBSCRIBE, UNSUBSCRIBE,
the final advisory) as the engine tells it, for waits on a subscription, and the consumer's
key filter, which the router applies before it queues anything here.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ._options import Overflow, check_queue
from .events import Action, Advisory, Event

_DISCONNECT = Advisory(Action.DISCONNECT)
_RECONNECT = Advisory(Action.RECONNECT)
_NOTICED = frozenset({Action.SUBSCRIBE, Action.UNSUBSCRIBE, Action.CLOSE, Action.STOP})

Keys = frozenset[tuple[int, ...]]


class Mailbox:
    def __init__(
        self,
        size: int,
        overflow: Overflow,
        wake: Callable[[], None],
        *,
        keys: Keys | None = None,
        notice: Callable[[], None] | None = None,
        name: str = "",
        shared: bool = False,
    ) -> None:
        check_queue(size, overflow)
        self.name = name  # its consumer's, for the log
        self.size = size
        self.overflow = overflow
        #: Only events whose key is one of these are queued (None: every event); the router
        #: reads it. Advisories always pass.
        self.keys = keys
        #: Its consumer takes decoded values shared with the other such consumers instead of
        #: a copy of its own (it promises not to change them); the router reads it.
        self.shared = shared
        self._wake = wake
        self._notice = notice  # told after SUBSCRIBE, UNSUBSCRIBE and the final advisory
        self._subscribed: set[str] = set()  # channels told SUBSCRIBE and not UNSUBSCRIBE
        self._ended = False  # the final advisory has been put
        self._lock = threading.Lock()
        self._items: deque[Event] = deque()
        self._lost = 0  # dropped since the consumer last looked
        self.dropped = 0  # dropped in all
        self.high_water = 0
        # Set by the engine: called when the consumer takes from a mailbox that was at least
        # half full, so that a read paused for it resumes at once.
        self.on_room: Callable[[], None] | None = None
        self._pressed = False
        # Set for a consumer run inline: called instead of the wake-up when events (never
        # advisories) find it empty, on the thread that routes them (the engine's).
        self.on_events: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<Mailbox {self.name!r}>"

    def put_events(self, events: list[Event]) -> bool:
        """Queue ordinary events, dropping by policy when full (engine thread); whether it is
        now at least half full (the engine may pause reading until the consumer takes)."""
        with self._lock:
            items = self._items
            was_empty = not items
            excess = len(items) + len(events) - self.size
            if excess > 0:
                if self.overflow == "drop_oldest":
                    excess -= self._drop_oldest(excess)
                    lost, events = excess, events[excess:]
                else:
                    keep = max(0, len(events) - excess)
                    lost, events = len(events) - keep, events[:keep]
                self._lost += lost
                self.dropped += lost
            items.extend(events)
            held = len(items)
            if held > self.high_water:
                self.high_water = held
            full = held * 2 >= self.size
            if full:
                self._pressed = True
        if was_empty and items:
            (self.on_events or self._wake)()
        return full

    def _drop_oldest(self, n: int) -> int:
        """Drop up to n of the oldest queued ordinary events (never advisories); how many."""
        kept: list[Event] = []
        items = self._items
        dropped = 0
        while dropped < n and items:
            event = items.popleft()
            if event.topic is None:
                kept.append(event)
            else:
                dropped += 1
        items.extendleft(reversed(kept))
        self._lost += dropped
        self.dropped += dropped
        return dropped

    def put_advisory(self, advisory: Advisory) -> None:
        """Queue an advisory; never dropped. CLOSE first discards the events still queued
        (STOP, the other final one, comes after them). A DISCONNECT that finds an undelivered
        DISCONNECT, RECONNECT at the end of the queue takes back that RECONNECT instead: a
        consumer that does not keep up with a flapping connection hears of it once, and its
        queue does not grow with every reconnect."""
        event = Event(None, (), advisory)
        action = advisory.action
        with self._lock:
            items = self._items
            was_empty = not items
            topic = advisory.topic
            if action is Action.SUBSCRIBE and topic is not None:
                self._subscribed.add(topic)
            elif action is Action.UNSUBSCRIBE and topic is not None:
                self._subscribed.discard(topic)
            elif advisory.final:
                self._subscribed.clear()
                self._ended = True
            if action is Action.CLOSE:
                items.clear()  # a closed consumer receives nothing more than its CLOSE
                self._lost = 0
            elif (
                advisory.action is Action.DISCONNECT
                and len(items) >= 2
                and items[-1].value == _RECONNECT
                and items[-2].value == _DISCONNECT
            ):
                items.pop()
                return
            items.append(event)
        if was_empty:
            self._wake()
        if self._notice is not None and action in _NOTICED:
            self._notice()

    def subscribed(self) -> tuple[frozenset[str], bool]:
        """The channels its consumer has been told SUBSCRIBE for (and not UNSUBSCRIBE), and
        whether it has been given its final advisory (any thread)."""
        with self._lock:
            return frozenset(self._subscribed), self._ended

    def take(self) -> tuple[deque[Event], int]:
        """Everything queued, and how many events were lost before them (consumer side)."""
        with self._lock:
            items, self._items = self._items, deque()
            lost, self._lost = self._lost, 0
            pressed, self._pressed = self._pressed, False
        if pressed and self.on_room is not None:
            self.on_room()
        return items, lost

    def __len__(self) -> int:
        return len(self._items)
