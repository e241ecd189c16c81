"""pghub's figures for OpenTelemetry: observable instruments read at each collection
(``pip install 'pghub[otel]'``; only ``opentelemetry-api`` is needed, the SDK is yours).

::

    from pghub.metrics.otel import instrument

    instrument()        # process totals, from the global MeterProvider
    instrument(hub)     # or: per hub, with the attribute hub="<name>"

Without hubs the instruments observe :func:`pghub.stats` (every hub of the process, stopped
ones included) plus ``pghub.hubs`` and ``pghub.hubs_started``; given hubs, each observes each
hub's :meth:`~pghub.Hub.stats` with a ``hub`` attribute, plus the per-hub levels. Call it once
per meter provider: a second call would register the same instrument names again.
See docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

try:
    from opentelemetry.metrics import (
        CallbackOptions,
        Meter,
        MeterProvider,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        Observation,
        get_meter,
    )
except ImportError as missing:
    raise ImportError(
        f"pghub.metrics.otel needs opentelemetry-api ({missing}): pip install 'pghub[otel]'"
    ) from missing

from .. import stats as process_stats  # the public pghub.stats(), whatever module holds it
from . import COUNTERS, HUB_GAUGES, HUB_LABEL, Metric, StatsSource

PREFIX = "pghub."
Callback = Callable[[CallbackOptions], Iterable[Observation]]
Instrument = ObservableCounter | ObservableUpDownCounter | ObservableGauge


def instrument(*hubs: StatsSource, meter_provider: MeterProvider | None = None) -> list[Instrument]:
    """Make pghub's observable instruments on a meter named ``pghub`` of ``meter_provider``
    (the global one by default); returns them."""
    from .. import __version__

    names = [hub.name for hub in hubs]
    if len(set(names)) != len(names):
        raise ValueError("hubs share a name: their observations would clash")
    meter = get_meter("pghub", __version__, meter_provider=meter_provider)
    made: list[Instrument] = []
    if hubs:
        for metric in COUNTERS + HUB_GAUGES:
            made.append(_make(meter, metric, _per_hub(hubs, metric)))
        return made
    for metric in COUNTERS:
        made.append(_make(meter, metric, _process_total(metric.name)))
    made.append(
        meter.create_observable_up_down_counter(
            PREFIX + "hubs",
            callbacks=[lambda _: [Observation(process_stats().hubs)]],
            unit="{hub}",
            description="Hubs running now",
        )
    )
    made.append(
        meter.create_observable_counter(
            PREFIX + "hubs_started",
            callbacks=[lambda _: [Observation(process_stats().hubs_started)]],
            unit="{hub}",
            description="Hubs started by this process",
        )
    )
    return made


def _make(meter: Meter, metric: Metric, callback: Callback) -> Instrument:
    name, unit, description = PREFIX + metric.name, metric.unit, metric.description
    if metric.kind == "counter":
        return meter.create_observable_counter(name, [callback], unit, description)
    if metric.kind == "updown":
        return meter.create_observable_up_down_counter(name, [callback], unit, description)
    return meter.create_observable_gauge(name, [callback], unit, description)


def _per_hub(hubs: Sequence[StatsSource], metric: Metric) -> Callback:
    def observe(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(metric.read(hub.stats()), {HUB_LABEL: hub.name}) for hub in hubs]

    return observe


def _process_total(name: str) -> Callback:
    def observe(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(process_stats().totals[name])]

    return observe


__all__ = ["instrument"]
