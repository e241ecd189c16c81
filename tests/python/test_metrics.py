"""The metrics exporters (pghub.metrics) with the real prometheus_client and OpenTelemetry SDK,
over a real hub on the test database: events sent and received, the numbers checked."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import pghub
from pghub.metrics import COUNTERS, HUB_GAUGES, NOT_EXPORTED
from pghub.metrics.otel import instrument
from pghub.metrics.prometheus import PghubCollector
from pghub.testing import listen

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
HUB = "metrics-hub"


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.01)


@pytest.fixture
def busy_hub(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[pghub.Hub]:
    """A hub that has sent 3 events, received 5 (3 its own, 2 from another session) and
    dropped one notification it could not decode."""
    with pghub.Hub(dsn, name=HUB) as hub:
        recorder = listen(hub, "orders")
        confirmed = threading.Semaphore(0)
        for key in (1, 2, 3):
            hub.notify("orders", [key], {"n": key}, confirm=lambda ok: confirmed.release())
        for key in (4, 5):
            pghub.sql_notify(conn, "orders", [key], None)
        conn.execute("SELECT pg_notify('orders', 'not a pghub payload')")
        for _ in range(3):
            assert confirmed.acquire(timeout=5)
        assert sorted(recorder.wait_for(timeout=5).key for _ in range(5)) == [
            (k,) for k in range(1, 6)
        ]
        wait_until(lambda: hub.stats().invalid_payloads == 1)
        yield hub


EXPECTED_PER_HUB = {
    "pghub_events_received_total": 5,
    "pghub_events_delivered_total": 5,
    "pghub_invalid_payloads_total": 1,
    "pghub_overflow_drops_total": 0,
    "pghub_callback_errors_total": 0,
    "pghub_subscribes_total": 1,
    "pghub_listens_total": 1,
    "pghub_listen_failures_total": 0,
    "pghub_unlistens_total": 0,
    "pghub_unlisten_failures_total": 0,
    "pghub_notifies_total": 3,
    "pghub_notify_failures_total": 0,
    "pghub_connects_total": 1,
    "pghub_connect_failures_total": 0,
    "pghub_disconnects_total": 0,
    "pghub_reconnects_total": 0,
    "pghub_connected": 1,
    "pghub_consumers": 1,
}


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of the exposition text, by sample name and labels."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_prometheus_per_hub(busy_hub: pghub.Hub) -> None:
    registry = CollectorRegistry()
    registry.register(PghubCollector(busy_hub))
    text = generate_latest(registry).decode()
    assert re.search(r"^# TYPE pghub_events_received(_total)? counter$", text, re.MULTILINE)
    samples = scrape(registry)
    label = (("hub", HUB),)
    for name, value in EXPECTED_PER_HUB.items():
        assert samples[name] == {label: value}, name
    queue_high_water = samples["pghub_queue_high_water"][label]
    assert 1 <= queue_high_water <= 6
    assert samples["pghub_send_queue_high_water"][label] >= 1
    busy_hub.stop()
    assert scrape(registry)["pghub_connected"] == {label: 0}
    assert scrape(registry)["pghub_consumers"] == {label: 0}
    assert scrape(registry)["pghub_events_received_total"] == {label: 5}


def test_prometheus_process_totals(dsn: str, conn: psycopg.Connection[Any]) -> None:
    registry = CollectorRegistry()
    registry.register(PghubCollector())
    before = scrape(registry)
    assert set(before) == {f"pghub_{m.name}_total" for m in COUNTERS} | {
        "pghub_hubs",
        "pghub_hubs_started_total",
    }
    with pghub.Hub(dsn) as hub:
        recorder = listen(hub, "orders")
        for key in (1, 2):
            pghub.sql_notify(conn, "orders", [key], None)
        recorder.wait_for(lambda e: e.key == (2,), timeout=5)
        recorder.wait_for(lambda e: e.key == (1,), timeout=5)
        during = scrape(registry)
        assert during["pghub_hubs"][()] >= 1
    after = scrape(registry)

    def delta(name: str) -> float:
        return after[name][()] - before[name][()]

    # Counted while running and kept once the hub stopped: these counters never go back.
    assert delta("pghub_events_received_total") == 2
    assert delta("pghub_events_delivered_total") == 2
    assert delta("pghub_subscribes_total") == 1
    assert delta("pghub_hubs_started_total") == 1
    assert during["pghub_hubs"][()] - after["pghub_hubs"][()] == 1


def test_prometheus_refuses_two_hubs_of_one_name(dsn: str) -> None:
    one, two = pghub.Hub(dsn, name="same"), pghub.Hub(dsn, name="same")
    with pytest.raises(ValueError, match="'same'"):
        PghubCollector(one, two)


def otel_points(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "pghub"
            assert scope.scope.version == pghub.__version__
            for metric in scope.metrics:
                out[metric.name] = metric
    return out


def test_opentelemetry_per_hub(busy_hub: pghub.Hub) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        made = instrument(busy_hub, meter_provider=provider)
        assert len(made) == len(COUNTERS) + len(HUB_GAUGES)
        metrics = otel_points(reader)
        for prometheus_name, value in EXPECTED_PER_HUB.items():
            name = "pghub." + prometheus_name.removeprefix("pghub_").removesuffix("_total")
            metric = metrics[name]
            (point,) = metric.data.data_points
            assert dict(point.attributes) == {"hub": HUB}
            assert point.value == value, name
        received = metrics["pghub.events_received"]
        assert received.unit == "{event}"
        assert isinstance(received.data, Sum)
        assert received.data.is_monotonic
        consumers = metrics["pghub.consumers"]
        assert isinstance(consumers.data, Sum)
        assert not consumers.data.is_monotonic
        assert isinstance(metrics["pghub.connected"].data, Gauge)
        assert isinstance(metrics["pghub.queue_high_water"].data, Gauge)
        busy_hub.stop()
        (point,) = otel_points(reader)["pghub.connected"].data.data_points
        assert point.value == 0
    finally:
        provider.shutdown()


def test_opentelemetry_process_totals(dsn: str, conn: psycopg.Connection[Any]) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    def value(metrics: dict[str, Any], name: str) -> float:
        (point,) = metrics[name].data.data_points
        assert dict(point.attributes or {}) == {}
        return float(point.value)

    try:
        instrument(meter_provider=provider)
        before = otel_points(reader)
        assert set(before) == {f"pghub.{m.name}" for m in COUNTERS} | {
            "pghub.hubs",
            "pghub.hubs_started",
        }
        with pghub.Hub(dsn) as hub:
            recorder = listen(hub, "orders")
            for key in (1, 2, 3):
                pghub.sql_notify(conn, "orders", [key], None)
            assert sorted(recorder.wait_for(timeout=5).key for _ in range(3)) == [(1,), (2,), (3,)]
        after = otel_points(reader)
        for name, delta in (
            ("pghub.events_received", 3),
            ("pghub.events_delivered", 3),
            ("pghub.hubs_started", 1),
        ):
            assert value(after, name) - value(before, name) == delta, name
    finally:
        provider.shutdown()


def test_every_hub_figure_is_exported_or_named_as_not() -> None:
    """A new HubStats field fails here until it gets a metric (and a line in docs/metrics.md)."""
    exported = {m.name for m in COUNTERS + HUB_GAUGES} - {"connected"}
    assert {f.name for f in fields(pghub.HubStats)} == exported | NOT_EXPORTED
    assert not exported & NOT_EXPORTED
    assert set(pghub.stats().totals) == {m.name for m in COUNTERS}


def test_docs_name_every_metric() -> None:
    text = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"`(pghub_[a-z_]+)`", text))
    wanted = {f"pghub_{m.name}_total" for m in COUNTERS}
    wanted |= {f"pghub_{m.name}" for m in HUB_GAUGES}
    wanted |= {"pghub_hubs", "pghub_hubs_started_total"}
    assert documented == wanted
    for metric in COUNTERS + HUB_GAUGES:
        assert f"`pghub.{metric.name}`" in text, metric.name
        assert f"`{metric.unit}`" in text, metric.unit
