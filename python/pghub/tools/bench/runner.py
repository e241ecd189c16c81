"""Running the benchmark: one measurement (listener in a child process, sender here), the
runs of every chosen scenario, the memory check, and what the figures depend on.

In ``drain`` the listener's process is stopped (SIGSTOP) while the sender sends, so the events
wait on the server; the clock starts when it is continued: the listener's own rate, whatever
the sender's.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

import psycopg

from . import durable
from .listeners import listener_main
from .peers import NodeListener, Peer, find
from .progress import Progress
from .report import durable_targets, summarize
from .scenarios import (
    DURABLE,
    MEMORY_EVENTS,
    MEMORY_WARMUP,
    PEER_SCENARIOS,
    PEERS,
    SCENARIOS,
    SIDES,
    Measurement,
    Workload,
    channels_of,
    durable_sizes,
    memory_workload,
    workloads,
)
from .senders import sender

_channel_numbers = iter(range(1, 1 << 62))


class _PythonListener:
    """A listener written in Python (psycopg, pghub, asyncpg) in a spawned child process."""

    def __init__(self, side: str, dsn: str, channels: list[str], work: Workload, shared: Any):
        ctx = multiprocessing.get_context("spawn")
        self._pipe, theirs = ctx.Pipe()
        self._child = ctx.Process(
            target=listener_main,
            args=(side, dsn, channels, work, theirs, shared),
            name=f"pghub-bench-{side}",
            daemon=True,
        )
        self._child.start()
        assert self._child.pid is not None  # started
        self.pid: int = self._child.pid

    def expect(self, what: str, timeout: float | None, progress: Progress | None) -> dict[str, Any]:
        return _expect(self._pipe, what, self._child, timeout, progress)

    def close(self) -> None:
        self._child.join(10)
        if self._child.is_alive():
            self._child.terminate()
            self._child.join()


def measure(
    side: str, work: Workload, dsn: str, progress: Progress, peer: Peer | None = None
) -> Measurement:
    """Run one scenario on one side: listener in a child process, sender here. ``peer``: the
    node peer's binary and modules (side ``node``)."""
    channel = f"pghub_bench_{os.getpid()}_{next(_channel_numbers)}"
    channels = channels_of(channel, work)
    shared = multiprocessing.get_context("spawn").RawValue("q", 0)
    progress.start(work.scenario, side, work.events * work.consumers, shared)
    child: _PythonListener | NodeListener
    if side == "node":
        assert peer is not None
        assert peer.available
        child = NodeListener(peer, dsn, channels, work, shared)
    else:
        child = _PythonListener(side, dsn, channels, work, shared)
    try:
        progress.phase("starting listener")
        child.expect("ready", 60.0, None)
        sending = sender(side, dsn)
        try:
            if work.paused:  # the server holds what the stopped listener cannot take
                os.kill(child.pid, signal.SIGSTOP)
            progress.phase("sending")
            started = time.monotonic()
            sending.send(channels, work, progress)
            if work.paused:
                sending.flush()
                started = time.monotonic()
                os.kill(child.pid, signal.SIGCONT)
            progress.phase("receiving")
            result = child.expect("done", None, progress)
        finally:
            sending.close()
    finally:
        progress.end()
        if work.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGCONT)
        child.close()
    received = result["received"]
    seconds = result["finished_at"] - started
    cpu = result["cpu_s"]
    return Measurement(
        side=side,
        scenario=work.scenario,
        events_per_s=received / seconds if received and seconds > 0 else None,
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        cpu_ms_per_10k=cpu * 1000 / received * 10_000 if received else None,
        rss_mb=result["rss_mb"],
        received=received,
        lost=result["lost"],
        seconds=seconds,
        timed_out=result["timed_out"],
        extra={
            k: result[k]
            for k in ("rss_ready_mb", "rss_end_mb", "rss_samples", "queue_high_water")
            if result.get(k) is not None
        },
    )


def _expect(
    pipe: Connection,
    what: str,
    child: Any,
    timeout: float | None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Wait for the child's next message, which must be ``what``; bounded by ``timeout`` (or,
    when None, by the child itself, which gives up once events stop arriving)."""
    waited = 0.0
    while not pipe.poll(0.2):
        waited += 0.2
        if progress is not None:
            progress.tick()
        if not child.is_alive() and not pipe.poll(0):
            raise RuntimeError(f"the bench listener died (exit code {child.exitcode})")
        if timeout is not None and waited > timeout:
            raise RuntimeError(f"the bench listener did not say {what!r} within {timeout} s")
    kind, body = pipe.recv()
    if kind == "error":
        raise RuntimeError(f"the bench listener failed: {body}")
    if kind != what:
        raise RuntimeError(f"the bench listener said {kind!r}, expected {what!r}")
    return body if isinstance(body, dict) else {}


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, load, versions."""
    return {
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "libpq": psycopg.pq.version(),
        "platform": platform.platform(),
    }


def server_version(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def memory_check(dsn: str, progress: Progress, events: int = MEMORY_EVENTS) -> dict[str, Any]:
    """The pghub listener's RSS over ``events`` events: ready, after warm-up, end, growth."""
    m = measure("pghub", memory_workload(events), dsn, progress)
    samples = m.extra.get("rss_samples") or []
    ready = m.extra.get("rss_ready_mb", 0.0)
    end = m.extra.get("rss_end_mb", 0.0)
    warm = next((mb for count, mb in samples if count >= min(MEMORY_WARMUP, events)), ready)
    return {
        "events": m.received,
        "lost": m.lost,
        "events_per_s": m.events_per_s,
        "rss_ready_mb": ready,
        "rss_after_warmup_mb": warm,
        "rss_end_mb": end,
        "rss_peak_mb": m.rss_mb,
        "growth_mb": end - ready,
        "growth_after_warmup_mb": end - warm,
        "growth_mb_per_million": (end - ready) * 1_000_000 / max(1, m.received),
        "samples": samples,
        "targets": {"growth <= 20 MB per million": (end - ready) * 1e6 / max(1, events) <= 20},
    }


def run(
    dsn: str,
    *,
    scenarios: Sequence[str] = SCENARIOS,
    quick: bool = False,
    runs: int | None = None,
    memory_events: int = MEMORY_EVENTS,
    progress: Progress | None = None,
    peers: Sequence[str] = PEERS,
) -> dict[str, Any]:
    """Run the chosen scenarios (``"memory"`` among them for the memory check), the ``peers``
    that this machine has in the scenarios they take part in; returns what
    ``pghub bench --json`` writes. A listener that fails or dies raises RuntimeError."""
    progress = progress or Progress(enabled=False)
    before = machine()  # the load average before this run adds its own
    rounds = runs if runs is not None else (1 if quick else 3)
    sizes = workloads(quick)
    wanted = any(s in PEER_SCENARIOS for s in scenarios)
    found = find(tuple(p for p in PEERS if p in peers)) if wanted else {}
    present = tuple(name for name, peer in found.items() if peer.available)
    measured: dict[str, dict[str, list[Measurement]]] = {}
    for i in range(rounds):
        for scenario in (s for s in SCENARIOS if s in scenarios):
            sides = SIDES + (present if scenario in PEER_SCENARIOS else ())
            for side in sides:
                progress.run = f"[run {i + 1}/{rounds}] "
                m = measure(side, sizes[scenario], dsn, progress, found.get(side))
                measured.setdefault(scenario, {}).setdefault(side, []).append(m)
    result: dict[str, Any] = {
        "machine": {**before, "server_version": server_version(dsn)},
        "quick": quick,
        "runs": rounds,
        "workloads": {s: asdict(w) for s, w in sizes.items() if s in measured},
        "peers": {
            name: {"available": peer.available, "note": peer.note} for name, peer in found.items()
        },
        "scenarios": summarize(measured),
        "measurements": [
            {k: v for k, v in asdict(m).items() if k != "extra"}
            for sides in measured.values()
            for ms in sides.values()
            for m in ms
        ],
    }
    if "memory" in scenarios:
        progress.run = ""
        result["memory"] = memory_check(dsn, progress, memory_events)
    chosen = [s for s in DURABLE if s in scenarios]
    if chosen:  # once, whatever --runs: each takes its own database and minutes in a full run
        progress.run = ""
        sizes_of_durable = durable_sizes(quick)
        result["durable_sizes"] = asdict(sizes_of_durable)
        result["durable"] = {}
        for scenario in chosen:
            entry = durable.run_scenario(scenario, dsn, sizes_of_durable, progress)
            entry["targets"] = durable_targets(scenario, entry["figures"])
            result["durable"][scenario] = entry
    result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result
