"""pghub's figures for Prometheus: a ``prometheus_client`` collector (``pip install
'pghub[prometheus]'``).

::

    from prometheus_client import REGISTRY
    from pghub.metrics.prometheus import PghubCollector

    REGISTRY.register(PghubCollector())      # process totals, every hub included
    REGISTRY.register(PghubCollector(hub))   # or: per hub, labelled hub="<name>"

Without hubs it exports the totals of :func:`pghub.stats` (hubs stopped long ago included, so
the counters never go back) and ``pghub_hubs``, ``pghub_hubs_started_total``. Given hubs, it
exports each hub's :meth:`~pghub.Hub.stats` with a ``hub`` label, and its levels
(``pghub_connected``, ``pghub_consumers``, the queue high-water marks). Register one or the
other in a registry, not both: they share metric names. See docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.metrics_core import Metric as PrometheusMetric
    from prometheus_client.registry import Collector
except ImportError as missing:
    raise ImportError(
        f"pghub.metrics.prometheus needs prometheus_client ({missing}):"
        " pip install 'pghub[prometheus]'"
    ) from missing

from .. import stats as process_stats  # the public pghub.stats(), whatever module holds it
from . import COUNTERS, HUB_GAUGES, HUB_LABEL, StatsSource

PREFIX = "pghub_"


class PghubCollector(Collector):
    """Collects pghub's figures each time the registry is scraped (see the module's doc)."""

    def __init__(self, *hubs: StatsSource) -> None:
        names = [hub.name for hub in hubs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"hubs share the name {repeated[0]!r}: their series would clash")
        self._hubs = hubs

    def collect(self) -> Iterator[PrometheusMetric]:
        if self._hubs:
            yield from self._per_hub()
        else:
            yield from self._process()

    def _process(self) -> Iterator[PrometheusMetric]:
        figures = process_stats()
        for metric in COUNTERS:
            family = CounterMetricFamily(PREFIX + metric.name, metric.description)
            family.add_metric([], figures.totals[metric.name])
            yield family
        yield GaugeMetricFamily(PREFIX + "hubs", "Hubs running now", value=figures.hubs)
        yield CounterMetricFamily(
            PREFIX + "hubs_started", "Hubs started by this process", value=figures.hubs_started
        )

    def _per_hub(self) -> Iterator[PrometheusMetric]:
        snapshots = [(hub.name, hub.stats()) for hub in self._hubs]  # one snapshot per scrape
        for metric in COUNTERS + HUB_GAUGES:
            family: CounterMetricFamily | GaugeMetricFamily
            if metric.kind == "counter":
                family = CounterMetricFamily(
                    PREFIX + metric.name, metric.description, labels=[HUB_LABEL]
                )
            else:
                family = GaugeMetricFamily(
                    PREFIX + metric.name, metric.description, labels=[HUB_LABEL]
                )
            for name, snapshot in snapshots:
                family.add_metric([name], metric.read(snapshot))
            yield family


__all__ = ["PghubCollector"]
