"""A consumer's bounded queue, filled by the hub's engine thread and emptied by the consumer.

The engine must never wait for a consumer (the server's notification queue would fill), so a
full mailbox drops events by its policy and counts them; the consumer hears how many it lost
in an OVERFLOW advisory before its next events. Advisories are never dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ._options import Overflow, check_queue
from .events import Action, Advisory, Event

_DISCONNECT = Advisory(Action.DISCONNECT)
_RECONNECT = Advisory(Action.RECONNECT)


class Mailbox:
    def __init__(self, size: int, overflow: Overflow, wake: Callable[[], None]) -> None:
        check_queue(size, overflow)
        self.size = size
        self.overflow = overflow
        self._wake = wake
        self._lock = threading.Lock()
        self._items: deque[Event] = deque()
        self._lost = 0  # dropped since the consumer last looked
        self.dropped = 0  # dropped in all
        self.high_water = 0

    def put_events(self, events: list[Event]) -> None:
        """Queue ordinary events, dropping by policy when full (engine thread)."""
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
            if len(items) > self.high_water:
                self.high_water = len(items)
        if was_empty and items:
            self._wake()

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
        with self._lock:
            items = self._items
            was_empty = not items
            if advisory.action is Action.CLOSE:
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

    def take(self) -> tuple[deque[Event], int]:
        """Everything queued, and how many events were lost before them (consumer side)."""
        with self._lock:
            items, self._items = self._items, deque()
            lost, self._lost = self._lost, 0
        return items, lost

    def __len__(self) -> int:
        return len(self._items)
