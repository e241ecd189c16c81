"""Figures about hubs, as values: per hub (:class:`HubStats`) and for the whole process
(:class:`Stats`, made by :func:`pghub.stats` from the process's registry of hubs)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class HubStats:
    """A snapshot of one hub. Counts are totals since the hub was made.

    - ``state``: "new", "connecting", "connected", "disconnected", "stopping" or "stopped".
    - ``events_received``: valid notifications received on subscribed channels.
    - ``events_delivered``: events handed to consumer callbacks or read from a
      :class:`pghub.SyncSubscription` or :class:`pghub.Subscription` (one per consumer).
    - ``invalid_payloads``: notifications on subscribed channels that failed to decode, or
      that a parse_float/parse_int hook raised on (dropped).
    - ``overflow_drops``: events dropped from full consumer queues.
    - ``callback_errors``: consumer callbacks that raised.
    - ``subscribes``: SUBSCRIBE advisories sent (a consumer's topic took effect).
    - ``listens`` / ``listen_failures``: LISTEN statements that succeeded / were refused.
    - ``unlistens`` / ``unlisten_failures``: the same for UNLISTEN.
    - ``notifies`` / ``notify_failures``: notifies committed / confirmed as not sent.
    - ``connects`` / ``connect_failures``: sessions opened / attempts that failed.
    - ``disconnects``: sessions lost; ``reconnects``: sessions opened after the first.
    - ``consumers``: consumers open now.
    - ``mailboxes``: consumers the engine still delivers to. A closed consumer leaves once the
      engine has handled its close, so this equals ``consumers`` whenever the hub is settled;
      staying above it would be a leak.
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
    mailboxes: int
    queue_high_water: int
    send_queue_high_water: int
    backend_pid: int | None


@dataclass(frozen=True)
class Stats:
    """Process-wide: ``hubs`` running now, ``hubs_started`` in all, and ``totals``: the sum of
    every counter of :class:`HubStats` over every hub this process has made."""

    hubs: int
    hubs_started: int
    totals: dict[str, int]


# The counts of HubStats that add up over hubs (Stats.totals).
SUMMED = tuple(
    f.name
    for f in fields(HubStats)
    if f.name not in ("name", "state", "consumers", "mailboxes", "backend_pid")
    and not f.name.endswith("high_water")
)
