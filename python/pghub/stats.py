"""Figures about hubs: per hub (:class:`HubStats`) and for the whole process (:class:`Stats`)."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._hubbase import HubBase


@dataclass(frozen=True)
class HubStats:
    """A snapshot of one hub. Counts are totals since the hub was made.

    - ``state``: "new", "connecting", "connected", "disconnected", "stopping" or "stopped".
    - ``events_received``: valid notifications received on subscribed channels.
    - ``events_delivered``: events handed to consumer callbacks (one per consumer).
    - ``invalid_payloads``: notifications on subscribed channels that failed to decode (dropped).
    - ``overflow_drops``: events dropped from full consumer queues.
    - ``callback_errors``: consumer callbacks that raised.
    - ``subscribes``: SUBSCRIBE advisories sent (a consumer's topic took effect).
    - ``listens`` / ``listen_failures``: LISTEN statements that succeeded / were refused.
    - ``unlistens`` / ``unlisten_failures``: the same for UNLISTEN.
    - ``notifies`` / ``notify_failures``: notifies committed / confirmed as not sent.
    - ``connects`` / ``connect_failures``: sessions opened / attempts that failed.
    - ``disconnects``: sessions lost; ``reconnects``: sessions opened after the first.
    - ``consumers``: consumers open now.
    - ``queue_high_water``: the most events any consumer's queue has held.
    - ``send_queue_high_water``: the most notifies that have waited to be sent.
    - ``backend_pid``: the server process of the listening session, None when disconnected.
    """

    name: str
    state: str
    events_received: int
    events_delivered: int
    invalid_payloads: int
    overflow_drops: int
    callback_errors: int
    subscribes: int
    listens: int
    listen_failures: int
    unlistens: int
    unlisten_failures: int
    notifies: int
    notify_failures: int
    connects: int
    connect_failures: int
    disconnects: int
    reconnects: int
    consumers: int
    queue_high_water: int
    send_queue_high_water: int
    backend_pid: int | None


_SUMMED = [
    f.name
    for f in fields(HubStats)
    if f.name not in ("name", "state", "consumers", "backend_pid")
    and not f.name.endswith("high_water")
]


@dataclass(frozen=True)
class Stats:
    """Process-wide: ``hubs`` running now, ``hubs_started`` in all, and ``totals``: the sum of
    every counter of :class:`HubStats` over every hub this process has made."""

    hubs: int
    hubs_started: int
    totals: dict[str, int]


_lock = threading.Lock()
_hubs: weakref.WeakSet[HubBase] = weakref.WeakSet()
_retired: dict[str, int] = dict.fromkeys(_SUMMED, 0)
_started = 0


def register(hub: HubBase) -> None:
    global _started
    with _lock:
        _hubs.add(hub)
        _started += 1


def retire(hub: HubBase) -> None:
    """A hub stopped: keep its counts in the process totals."""
    snapshot = hub.stats()
    with _lock:
        if hub in _hubs:
            _hubs.discard(hub)
            for name in _SUMMED:
                _retired[name] += getattr(snapshot, name)


def stats() -> Stats:
    """Figures for the whole process."""
    with _lock:
        live = list(_hubs)
        totals = dict(_retired)
        started = _started
    for hub in live:
        snapshot = hub.stats()
        for name in _SUMMED:
            totals[name] += getattr(snapshot, name)
    running = sum(1 for hub in live if hub.stats().state not in ("new", "stopped"))
    return Stats(hubs=running, hubs_started=started, totals=totals)
