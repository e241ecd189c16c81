"""What pghub exports as metrics, and under which names: one table for every exporter.

The exporters read the figures pghub already keeps (:meth:`pghub.Hub.stats` for one hub,
:func:`pghub.stats` for the whole process) when they are collected; nothing is counted twice
and nothing runs in between. Each lives in a module of its own that imports its library, so
``import pghub`` never needs them:

- :mod:`pghub.metrics.prometheus`: a ``prometheus_client`` collector (``pghub[prometheus]``);
- :mod:`pghub.metrics.otel`: OpenTelemetry observable instruments (``pghub[otel]``).

A metric ``events_received`` is ``pghub_events_received_total`` in Prometheus and
``pghub.events_received`` (unit ``{event}``) in OpenTelemetry, which OpenTelemetry's own
Prometheus exporter turns into the same ``pghub_events_received_total``. See docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from ..stats import HubStats

Kind = Literal["counter", "updown", "gauge"]


class StatsSource(Protocol):
    """A hub, as the exporters see it: :class:`pghub.Hub` and :class:`pghub.AsyncHub` are."""

    @property
    def name(self) -> str: ...

    def stats(self) -> HubStats: ...


@dataclass(frozen=True)
class Metric:
    """One exported figure: ``name`` (without prefix or suffix), what it is, how it is read."""

    name: str
    kind: Kind  # counter: only grows; updown: a count that goes both ways; gauge: a level
    unit: str  # OpenTelemetry's (UCUM) unit; Prometheus names carry none for counts
    description: str
    read: Callable[[HubStats], int]


def _field(name: str) -> Callable[[HubStats], int]:
    def read(snapshot: HubStats) -> int:
        value = getattr(snapshot, name)
        assert isinstance(value, int)
        return value

    return read


def _counter(name: str, unit: str, description: str) -> Metric:
    return Metric(name, "counter", unit, description, _field(name))


# Totals since the hub was made; the process-wide figures sum them over every hub.
COUNTERS: tuple[Metric, ...] = (
    _counter("events_received", "{event}", "Valid notifications received on subscribed channels"),
    _counter("events_delivered", "{event}", "Events handed to consumer callbacks (one each)"),
    _counter("invalid_payloads", "{notification}", "Notifications that failed to decode"),
    _counter("overflow_drops", "{event}", "Events dropped from full consumer queues"),
    _counter("callback_errors", "{call}", "Consumer callback calls that raised"),
    _counter("subscribes", "{subscription}", "SUBSCRIBE advisories sent to consumers"),
    _counter("listens", "{statement}", "LISTEN statements that succeeded"),
    _counter("listen_failures", "{statement}", "LISTEN statements the server refused"),
    _counter("unlistens", "{statement}", "UNLISTEN statements that succeeded"),
    _counter("unlisten_failures", "{statement}", "UNLISTEN statements the server refused"),
    _counter("notifies", "{event}", "Notifies committed"),
    _counter("notify_failures", "{event}", "Notifies confirmed as not sent"),
    _counter("connects", "{connection}", "Listening sessions opened"),
    _counter("connect_failures", "{attempt}", "Connection attempts that failed"),
    _counter("disconnects", "{connection}", "Listening sessions lost"),
    _counter("reconnects", "{connection}", "Listening sessions opened after the first"),
)

# Levels of one hub now: exported per hub only.
HUB_GAUGES: tuple[Metric, ...] = (
    Metric(
        "connected",
        "gauge",
        "1",
        "1 while the hub's listening session is up, else 0",
        lambda s: int(s.state == "connected"),
    ),
    Metric("consumers", "updown", "{consumer}", "Consumers open now", _field("consumers")),
    Metric(
        "queue_high_water",
        "gauge",
        "{event}",
        "The most events any consumer's queue has held",
        _field("queue_high_water"),
    ),
    Metric(
        "send_queue_high_water",
        "gauge",
        "{event}",
        "The most notifies that have waited to be sent",
        _field("send_queue_high_water"),
    ),
)

# HubStats fields that are not exported: name is the "hub" label, state gives "connected",
# backend_pid is an identity (a server pid), not something to plot; mailboxes is the engine's
# side of consumers, the same figure whenever the hub is settled (a check for leaks in tests).
NOT_EXPORTED = frozenset({"name", "state", "backend_pid", "mailboxes"})

HUB_LABEL = "hub"

__all__ = ["COUNTERS", "HUB_GAUGES", "HUB_LABEL", "NOT_EXPORTED", "Metric", "StatsSource"]
