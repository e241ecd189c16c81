"""The sending side of a measurement, in the benchmark's own process.

Both sides send the same payloads (the canonical pghub wire form, built by hand on the
baseline side), so the comparison is of the same workload.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Protocol

import psycopg

from ...errors import SendQueueFull
from ...hub import Hub
from .progress import Progress
from .scenarios import Workload, baseline_payload, event_value


class Sender(Protocol):
    def send(self, channels: Sequence[str], work: Workload, progress: Progress) -> None:
        """Send ``work``: event n on ``channels[n % len(channels)]``."""

    def flush(self) -> None:
        """Return once every notify sent so far has committed."""

    def close(self) -> None: ...


def sender(side: str, dsn: str) -> Sender:
    """pghub's sender for pghub's listener; raw psycopg's for every other (the peers too: they
    are measured draining, where the sender does not set the pace)."""
    return PghubSender(dsn) if side == "pghub" else BaselineSender(dsn)


def _schedule(work: Workload) -> Iterator[int]:
    """Event numbers in sending order; paced, each waits for its moment."""
    if not work.rate:
        yield from range(work.events)
        return
    start = time.monotonic()
    interval = 1.0 / work.rate
    for n in range(work.events):
        delay = start + n * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield n


class BaselineSender:
    """Raw psycopg, as a careful user writes it: an autocommit connection calling
    ``pg_notify`` once per statement, or ``BURST`` times per statement through unnest."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def flush(self) -> None:
        """Every notify sent so far has committed (each statement waits for its own)."""

    def close(self) -> None:
        self.conn.close()

    def send(self, channels: Sequence[str], work: Workload, progress: Progress) -> None:
        conn = self.conn
        k = len(channels)
        if work.batch > 1:
            query = "SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) AS n (c, p)"
            for first in range(0, work.events, work.batch):
                numbers = range(first, min(first + work.batch, work.events))
                payloads = [baseline_payload(n, event_value(n, work.pad)) for n in numbers]
                conn.execute(query, ([channels[n % k] for n in numbers], payloads))
                progress.sent(first + len(payloads))
        else:
            for n in _schedule(work):
                payload = baseline_payload(n, event_value(n, work.pad))
                conn.execute("SELECT pg_notify(%s, %s)", (channels[n % k], payload))
                if not n & 1023:
                    progress.sent(n)


class PghubSender:
    """A started :class:`pghub.Hub`: ``notify`` per event without waiting for confirmation,
    or ``notify_many`` per batch."""

    def __init__(self, dsn: str) -> None:
        self.hub = Hub(dsn, name="bench-sender")
        self.hub.start()

    def flush(self) -> None:
        """Every notify sent so far has committed: stopping sends what is queued first."""
        self.hub.stop(wait=True)

    def close(self) -> None:
        self.hub.stop(wait=True)  # sends what is still queued

    def send(self, channels: Sequence[str], work: Workload, progress: Progress) -> None:
        hub = self.hub
        k = len(channels)
        if work.batch > 1:
            for first in range(0, work.events, work.batch):
                numbers = range(first, min(first + work.batch, work.events))
                batch = [(channels[n % k], (n,), event_value(n, work.pad)) for n in numbers]
                while True:
                    try:
                        hub.notify_many(batch)
                        break
                    except SendQueueFull:
                        time.sleep(0.001)  # the server is behind: wait, as a caller must
                progress.sent(first + len(batch))
        else:
            notify = hub.notify
            for n in _schedule(work):
                notify(channels[n % k], (n,), event_value(n, work.pad))
                if not n & 1023:
                    progress.sent(n)
