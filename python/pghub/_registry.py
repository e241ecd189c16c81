"""The process's hubs: those running now, and the counts of those that have stopped.

Hubs register when they start and retire when they stop (their figures kept in the totals);
:func:`stats` reads them all. Hubs are held by weak reference and known only as things
that report :class:`~pghub.stats.HubStats`.
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol

from .stats import SUMMED, HubStats, Stats


class Reporting(Protocol):
    def stats(self) -> HubStats: ...


_lock = threading.Lock()
_hubs: weakref.WeakSet[Reporting] = weakref.WeakSet()
_retired: dict[str, int] = dict.fromkeys(SUMMED, 0)
_started = 0


def register(hub: Reporting) -> None:
    global _started
    with _lock:
        _hubs.add(hub)
        _started += 1


def retire(hub: Reporting) -> None:
    """A hub stopped: keep its counts in the process totals."""
    snapshot = hub.stats()
    with _lock:
        if hub in _hubs:
            _hubs.discard(hub)
            for name in SUMMED:
                _retired[name] += getattr(snapshot, name)


def stats() -> Stats:
    """Figures for the whole process."""
    with _lock:
        live = list(_hubs)
        totals = dict(_retired)
        started = _started
    running = 0
    for hub in live:
        snapshot = hub.stats()
        for name in SUMMED:
            totals[name] += getattr(snapshot, name)
        running += snapshot.state not in ("new", "stopped")
    return Stats(hubs=running, hubs_started=started, totals=totals)
