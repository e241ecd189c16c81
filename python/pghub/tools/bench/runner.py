"""``pghub bench``: the same workload through raw psycopg and through pghub, in one run.

Each measurement runs its listening side in a child process of its own, so that the CPU time
and peak RSS it reports belong to the listener alone (process start-up excluded: figures are
taken from the moment it is listening). The sending side runs in this process.

The baseline is what a careful user writes by hand with psycopg: an autocommit connection
calling ``pg_notify`` once per statement (``single``, ``paced``) or 100 times per statement
through ``unnest`` (``burst``, ``drain``, ``fanout``, ``large``), and a listener looping on
``conn.notifies()`` that parses each payload's JSON and calls a callback. The pghub side
sends with :meth:`pghub.Hub.notify` / :meth:`pghub.Hub.notify_many` without waiting for
confirmations, and receives through consumers of a :class:`pghub.Hub`. Both sides send the
same payloads (the canonical pghub wire form, built by hand on the baseline side).

In ``drain`` the listener's process is stopped (SIGSTOP) while the sender sends, so the events
wait on the server; the clock starts when it is continued: the listener's own rate, whatever
the sender's. See docs/performance.md for what each figure means and the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import signal
import statistics
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any

import psycopg

from .cli._common import first_line, redact

SCENARIOS = ("single", "burst", "drain", "paced", "fanout", "large")
SIDES = ("baseline", "pghub")
FIGURES = ("events_per_s", "p50_ms", "p99_ms", "cpu_ms_per_10k", "rss_mb")
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BURST = 100  # events per statement (baseline) and per notify_many call (pghub)
LARGE_PAD = 4000  # characters of padding: payloads of about 4 KB
MEMORY_EVENTS = 1_000_000
MEMORY_WARMUP = 100_000  # RSS growth is also reported from this point on

# The targets of issue 6: (scenario, figure, what pghub's figure must satisfy, its wording).
Check = Callable[[dict[str, Any]], bool | None]


@dataclass(frozen=True)
class Workload:
    """What one measurement sends and how the listener takes it."""

    scenario: str
    events: int  # notifications sent
    consumers: int = 1  # callbacks per notification (fanout)
    batch: int = 1  # events per send call
    rate: float = 0.0  # events a second; 0 means as fast as the sender goes
    pad: int = 0  # padding characters in each value
    latencies: bool = False  # record send-to-callback latency of every event
    rss_every: int = 0  # sample the listener's RSS every this many events (memory)
    paused: bool = False  # the listener is stopped while the sender sends, then drains


def workloads(quick: bool) -> dict[str, Workload]:
    """The scenarios, sized for a full run or for ``--quick`` (well under 60 seconds)."""
    if quick:
        return {
            "single": Workload("single", 5_000),
            "burst": Workload("burst", 20_000, batch=BURST),
            "drain": Workload("drain", 20_000, batch=BURST, paused=True),
            "paced": Workload("paced", 1_500, rate=1000.0, latencies=True),
            "fanout": Workload("fanout", 1_000, consumers=100, batch=BURST),
            "large": Workload("large", 4_000, batch=BURST, pad=LARGE_PAD),
        }
    return {
        "single": Workload("single", 50_000),
        "burst": Workload("burst", 200_000, batch=BURST),
        "drain": Workload("drain", 100_000, batch=BURST, paused=True),
        "paced": Workload("paced", 10_000, rate=1000.0, latencies=True),
        "fanout": Workload("fanout", 5_000, consumers=100, batch=BURST),
        "large": Workload("large", 40_000, batch=BURST, pad=LARGE_PAD),
    }


def memory_workload(events: int = MEMORY_EVENTS) -> Workload:
    every = max(1024, events // 20 // 1024 * 1024)  # a multiple of 1024 (see _Tally.take)
    return Workload("memory", events, batch=1000, rss_every=every)


# --- payloads -----------------------------------------------------------------------------


def event_value(n: int, pad: int) -> dict[str, Any]:
    """The value of event ``n``: its number, its send time (monotonic ns), any padding.

    Keys in insertion order "n", "t", "pad" are also pghub's canonical (jsonb) order, so
    the hand-built baseline payload is byte for byte what pghub encodes.
    """
    value: dict[str, Any] = {"n": n, "t": time.monotonic_ns()}
    if pad:
        value["pad"] = "x" * pad
    return value


def baseline_payload(n: int, value: dict[str, Any]) -> str:
    """The payload a hand-written sender builds: ``e<key>:<json>``."""
    return f"e{n}:" + json.dumps(value, separators=(",", ":"))


# --- the listening side (child process) ---------------------------------------------------


class _Tally:
    """One callback's count, finish time and (optionally) latencies."""

    __slots__ = (
        "count",
        "done",
        "expected",
        "finished_at",
        "latencies",
        "lost",
        "rss",
        "rss_every",
        "shared",
    )

    def __init__(self, expected: int, latencies: bool, shared: Any) -> None:
        self.expected = expected
        self.count = 0
        self.lost = 0
        self.finished_at = 0.0
        self.done = threading.Event()
        self.latencies: array[int] | None = array("q") if latencies else None
        self.rss: list[tuple[int, float]] | None = None
        self.rss_every = 0
        self.shared = shared  # progress counter shown by the parent, or None

    def take(self, value: Any) -> None:
        self.count += 1
        count = self.count
        if self.latencies is not None:
            self.latencies.append(time.monotonic_ns() - value["t"])
        if not count & 1023:
            if self.shared is not None:
                self.shared.value = count
            if self.rss is not None and not count % self.rss_every:
                self.rss.append((count, current_rss_mb()))
        if count + self.lost >= self.expected:
            self._finish()

    def lose(self, lost: int) -> None:
        self.lost += lost
        if self.count + self.lost >= self.expected:
            self._finish()

    def _finish(self) -> None:
        if not self.done.is_set():
            self.finished_at = time.monotonic()
            if self.shared is not None:
                self.shared.value = self.count
            self.done.set()


def current_rss_mb() -> float:
    """The resident set size of this process now, in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """The peak resident set size of this process, in MB.

    From /proc (VmHWM, reset by exec): ``ru_maxrss`` survives exec on Linux, so a spawned
    child would report its parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6  # "kB" means KiB here
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tallies(work: Workload, shared: Any) -> list[_Tally]:
    tallies = [
        _Tally(work.events, work.latencies, shared if i == 0 else None)
        for i in range(work.consumers)
    ]
    if work.rss_every:
        tallies[0].rss = []
        tallies[0].rss_every = work.rss_every
    return tallies


def _listen_baseline(dsn: str, channel: str, work: Workload, pipe: Connection, shared: Any) -> None:
    tallies = _tallies(work, shared)
    takers = [t.take for t in tallies]
    last = tallies[-1]
    loads = json.loads
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'LISTEN "{channel}"')
        started = _ready(pipe)
        deadline = _Deadline()
        while not last.done.is_set() and not deadline.passed(last.count):
            for n in conn.notifies(timeout=0.2):
                value = loads(n.payload.partition(":")[2])
                for take in takers:
                    take(value)
                if last.done.is_set():
                    break
    _report(pipe, tallies, started, timed_out=not last.done.is_set())


def _listen_pghub(dsn: str, channel: str, work: Workload, pipe: Connection, shared: Any) -> None:
    from .events import Action
    from .hub import Hub

    tallies = _tallies(work, shared)
    subscribed = threading.Semaphore(0)

    def callback_of(tally: _Tally) -> Callable[[Any], None]:
        take = tally.take

        def on_event(event: Any) -> None:
            if event.topic is not None:
                take(event.value)
                return
            advisory = event.value
            if advisory.action is Action.SUBSCRIBE:
                subscribed.release()
            elif advisory.action is Action.OVERFLOW:
                tally.lose(advisory.lost)

        return on_event

    with Hub(dsn, name="bench-listener") as hub:
        for tally in tallies:
            hub.consumer(callback_of(tally), channel)
        for _ in tallies:
            if not subscribed.acquire(timeout=30):
                raise RuntimeError("the bench listener's consumers were never subscribed")
        started = _ready(pipe)
        deadline = _Deadline()
        for tally in tallies:
            while not tally.done.wait(0.2) and not deadline.passed(tallies[0].count):
                pass
        timed_out = not all(t.done.is_set() for t in tallies)
        _report(pipe, tallies, started, timed_out=timed_out, stats=hub.stats())


class _Deadline:
    """Gives up once no event has arrived for a while (a lost event must not hang the run)."""

    IDLE = 15.0

    def __init__(self) -> None:
        self._count = -1
        self._since = self._checked = time.monotonic()

    def passed(self, count: int) -> bool:
        """Called every 0.2 s or so; a longer gap means this process was stopped (drain)."""
        now = time.monotonic()
        if count != self._count or now - self._checked > 1.0:
            self._count, self._since = count, now
        self._checked = now
        return now - self._since > self.IDLE


def _ready(pipe: Connection) -> tuple[float, float]:
    started = (cpu_seconds(), current_rss_mb())
    pipe.send(("ready", None))
    return started


def _report(
    pipe: Connection,
    tallies: list[_Tally],
    started: tuple[float, float],
    *,
    timed_out: bool,
    stats: Any = None,
) -> None:
    cpu = cpu_seconds() - started[0]
    latencies = sorted(tallies[0].latencies or ())
    result: dict[str, Any] = {
        "received": sum(t.count for t in tallies),
        "lost": sum(t.lost for t in tallies),
        "finished_at": max(t.finished_at for t in tallies),
        "cpu_s": cpu,
        "rss_mb": peak_rss_mb(),
        "rss_ready_mb": started[1],
        "rss_end_mb": current_rss_mb(),
        "rss_samples": tallies[0].rss,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "timed_out": timed_out,
    }
    if stats is not None:
        result["queue_high_water"] = stats.queue_high_water
        result["overflow_drops"] = stats.overflow_drops
    pipe.send(("done", result))


def _percentile(sorted_ns: Sequence[int], q: float) -> float | None:
    if not sorted_ns:
        return None
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6


def listener_main(
    side: str, dsn: str, channel: str, work: Workload, pipe: Connection, shared: Any
) -> None:
    """Entry point of the listener's child process."""
    try:
        if side == "baseline":
            _listen_baseline(dsn, channel, work, pipe, shared)
        else:
            _listen_pghub(dsn, channel, work, pipe, shared)
    except BaseException as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


# --- the sending side (this process) --------------------------------------------------------


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
    """Raw psycopg: one autocommit ``pg_notify`` per statement, or ``BURST`` through unnest."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def flush(self) -> None:
        """Every notify sent so far has committed (each statement waits for its own)."""

    def close(self) -> None:
        self.conn.close()

    def send(self, channel: str, work: Workload, progress: Progress) -> None:
        conn = self.conn
        if work.batch > 1:
            query = "SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) AS n (c, p)"
            channels = [channel] * work.batch
            for first in range(0, work.events, work.batch):
                numbers = range(first, min(first + work.batch, work.events))
                payloads = [baseline_payload(n, event_value(n, work.pad)) for n in numbers]
                conn.execute(query, (channels[: len(payloads)], payloads))
                progress.sent(first + len(payloads))
        else:
            for n in _schedule(work):
                payload = baseline_payload(n, event_value(n, work.pad))
                conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
                if not n & 1023:
                    progress.sent(n)


class PghubSender:
    """A started :class:`pghub.Hub`: ``notify`` per event without waiting for confirmation,
    or ``notify_many`` per batch."""

    def __init__(self, dsn: str) -> None:
        from .hub import Hub

        self.hub = Hub(dsn, name="bench-sender")
        self.hub.start()

    def flush(self) -> None:
        """Every notify sent so far has committed: stopping sends what is queued first."""
        self.hub.stop(wait=True)

    def close(self) -> None:
        self.hub.stop(wait=True)  # sends what is still queued

    def send(self, channel: str, work: Workload, progress: Progress) -> None:
        from .errors import SendQueueFull

        hub = self.hub
        if work.batch > 1:
            for first in range(0, work.events, work.batch):
                numbers = range(first, min(first + work.batch, work.events))
                batch = [(channel, (n,), event_value(n, work.pad)) for n in numbers]
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
                notify(channel, (n,), event_value(n, work.pad))
                if not n & 1023:
                    progress.sent(n)


# --- one measurement ------------------------------------------------------------------------

_channel_numbers = iter(range(1, 1 << 62))


@dataclass
class Measurement:
    side: str
    scenario: str
    events_per_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    cpu_ms_per_10k: float | None
    rss_mb: float
    received: int
    lost: int
    seconds: float
    timed_out: bool
    extra: dict[str, Any]


def measure(side: str, work: Workload, dsn: str, progress: Progress) -> Measurement:
    """Run one scenario on one side: listener in a child process, sender here."""
    ctx = multiprocessing.get_context("spawn")
    channel = f"pghub_bench_{os.getpid()}_{next(_channel_numbers)}"
    ours, theirs = ctx.Pipe()
    shared = ctx.RawValue("q", 0)
    child = ctx.Process(
        target=listener_main,
        args=(side, dsn, channel, work, theirs, shared),
        name=f"pghub-bench-{side}",
        daemon=True,
    )
    progress.start(work.scenario, side, work.events * work.consumers, shared)
    child.start()
    try:
        progress.phase("starting listener")
        _expect(ours, "ready", child, 60.0)
        sender = BaselineSender(dsn) if side == "baseline" else PghubSender(dsn)
        pid = child.pid
        assert pid is not None  # started
        try:
            if work.paused:  # the server holds what the stopped listener cannot take
                os.kill(pid, signal.SIGSTOP)
            progress.phase("sending")
            started = time.monotonic()
            sender.send(channel, work, progress)
            if work.paused:
                sender.flush()
                started = time.monotonic()
                os.kill(pid, signal.SIGCONT)
            progress.phase("receiving")
            result = _expect(ours, "done", child, None, progress)
        finally:
            sender.close()
    finally:
        progress.end()
        if work.paused and child.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGCONT)
        child.join(10)
        if child.is_alive():
            child.terminate()
            child.join()
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


# --- progress on stderr ---------------------------------------------------------------------


class Progress:
    """One status line on stderr: run, scenario, side, phase, events sent and received."""

    def __init__(self, enabled: bool, stream: Any = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.live = enabled and self.stream.isatty()
        self.run = ""
        self.label = ""
        self.what = ""
        self.expected = 0
        self.sent_count = 0
        self.shared: Any = None
        self._shown_at = 0.0

    def start(self, scenario: str, side: str, expected: int, shared: Any) -> None:
        self.label = f"{scenario} {side}"
        self.expected, self.sent_count, self.shared = expected, 0, shared

    def phase(self, what: str) -> None:
        self.what = what
        self._show(force=True)

    def sent(self, count: int) -> None:
        self.sent_count = count
        now = time.monotonic()
        if now - self._shown_at > 0.25:
            self._show(force=False)

    def tick(self) -> None:
        self._show(force=False)

    def end(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            self.end()
            self.stream.write(text + "\n")
            self.stream.flush()

    def _show(self, force: bool) -> None:
        if not self.enabled or not (self.live or force):
            return
        self._shown_at = time.monotonic()
        received = self.shared.value if self.shared is not None else 0
        line = (
            f"{self.run}{self.label}: {self.what}, sent {self.sent_count:,}, "
            f"received {received:,} of {self.expected:,}"
        )
        if self.live:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# --- runs, medians, ratios, targets ---------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(pghub: float | None, baseline: float | None) -> float | None:
    if pghub is None or baseline is None or baseline == 0:
        return None
    return pghub / baseline


def summarize(runs: dict[str, dict[str, list[Measurement]]]) -> dict[str, Any]:
    """Per scenario: the median of each figure per side, and pghub's ratio to the baseline."""
    out: dict[str, Any] = {}
    for scenario, sides in runs.items():
        entry: dict[str, Any] = {}
        for side in SIDES:
            ms = sides.get(side, [])
            entry[side] = {f: _median([getattr(m, f) for m in ms]) for f in FIGURES}
            entry[side]["runs"] = len(ms)
            entry[side]["lost"] = sum(m.lost for m in ms)
            entry[side]["timed_out"] = sum(m.timed_out for m in ms)
        entry["ratio"] = {f: _ratio(entry["pghub"][f], entry["baseline"][f]) for f in FIGURES}
        entry["targets"] = targets_of(scenario, entry)
        out[scenario] = entry
    return out


def targets_of(scenario: str, entry: dict[str, Any]) -> dict[str, bool | None]:
    """Issue 6's targets for this scenario: True met, False missed, None not measured."""
    pghub, ratio = entry["pghub"], entry["ratio"]

    def at_least(value: float | None, bound: float) -> bool | None:
        return None if value is None else value >= bound

    def at_most(value: float | None, bound: float) -> bool | None:
        return None if value is None else value <= bound

    if scenario == "single":
        return {"events_per_s >= 3x baseline": at_least(ratio["events_per_s"], 3.0)}
    if scenario in ("burst", "drain"):
        return {"events_per_s >= 0.8x baseline": at_least(ratio["events_per_s"], 0.8)}
    if scenario == "paced":
        return {
            "p50 <= 0.5 ms": at_most(pghub["p50_ms"], 0.5),
            "p99 <= 2 ms": at_most(pghub["p99_ms"], 2.0),
            "p50 <= 1.5x baseline": at_most(ratio["p50_ms"], 1.5),
            "p99 <= 1.5x baseline": at_most(ratio["p99_ms"], 1.5),
        }
    if scenario == "fanout":
        return {"deliveries/s >= 200,000": at_least(pghub["events_per_s"], 200_000)}
    return {}


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


# --- output ---------------------------------------------------------------------------------


def _fmt(value: float | None, figure: str) -> str:
    if value is None:
        return "-"
    if figure == "events_per_s":
        return f"{value:,.0f}"
    if figure in ("p50_ms", "p99_ms"):
        return f"{value:.3f}"
    return f"{value:,.1f}"


_LABELS = {
    "events_per_s": "events/s",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "cpu_ms_per_10k": "cpu ms/10k",
    "rss_mb": "rss MB",
}


def table(summary: dict[str, Any]) -> str:
    """The medians side by side, with pghub's ratio to the baseline and the targets."""
    lines = [f"{'scenario':<9} {'figure':<11} {'baseline':>11} {'pghub':>11} {'ratio':>7}"]
    for scenario, entry in summary.items():
        label = scenario
        for figure in FIGURES:
            b, p, r = entry["baseline"][figure], entry["pghub"][figure], entry["ratio"][figure]
            if b is None and p is None:
                continue
            ratio = "-" if r is None else f"{r:.2f}x"
            lines.append(
                f"{label:<9} {_LABELS[figure]:<11} {_fmt(b, figure):>11} "
                f"{_fmt(p, figure):>11} {ratio:>7}"
            )
            label = ""
        for side in SIDES:
            if entry[side]["lost"] or entry[side]["timed_out"]:
                lines.append(
                    f"{'':<9} warning: {side} lost {entry[side]['lost']} events, "
                    f"{entry[side]['timed_out']} runs timed out"
                )
        for target, met in entry["targets"].items():
            state = "not measured" if met is None else ("met" if met else "MISSED")
            lines.append(f"{'':<9} target {target}: {state}")
    return "\n".join(lines)


def memory_lines(mem: dict[str, Any]) -> str:
    met = mem["targets"]["growth <= 20 MB per million"]
    return (
        f"memory: pghub listener over {mem['events']:,} events ({mem['lost']} lost): "
        f"RSS {mem['rss_ready_mb']:.1f} MB when ready, {mem['rss_after_warmup_mb']:.1f} MB after "
        f"{MEMORY_WARMUP:,}, {mem['rss_end_mb']:.1f} MB at the end (peak "
        f"{mem['rss_peak_mb']:.1f}); growth {mem['growth_mb']:+.1f} MB "
        f"({mem['growth_after_warmup_mb']:+.1f} after warm-up); target <= 20 MB per million: "
        f"{'met' if met else 'MISSED'}"
    )


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pghub bench",
        description="Measure pghub against raw psycopg on the same server, in one run.",
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGHUB_BENCH_DSN") or os.environ.get("PGHUB_DSN") or DEFAULT_DSN,
        help="libpq conninfo (default: $PGHUB_BENCH_DSN, else $PGHUB_DSN, else %(default)r)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[*SCENARIOS, "memory"],
        help="run only this scenario (repeatable); 'memory' runs only when named",
    )
    parser.add_argument("--quick", action="store_true", help="small workloads, one run (< 60 s)")
    parser.add_argument("--runs", type=int, help="runs of each scenario (default 3, quick 1)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument(
        "--memory-events",
        type=int,
        default=MEMORY_EVENTS,
        help="events for --scenario memory (default %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark as the arguments say; returns what ``--json`` writes."""
    progress = Progress(enabled=not args.no_progress)
    before = machine()  # the load average before this run adds its own
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        raise SystemExit("--runs must be at least 1")
    chosen = args.scenario or list(SCENARIOS)
    sizes = workloads(args.quick)
    measured: dict[str, dict[str, list[Measurement]]] = {}
    for i in range(runs):
        for scenario in (s for s in SCENARIOS if s in chosen):
            for side in SIDES:
                progress.run = f"[run {i + 1}/{runs}] "
                m = measure(side, sizes[scenario], args.dsn, progress)
                measured.setdefault(scenario, {}).setdefault(side, []).append(m)
    result: dict[str, Any] = {
        "machine": {**before, "server_version": server_version(args.dsn)},
        "quick": args.quick,
        "runs": runs,
        "workloads": {s: asdict(w) for s, w in sizes.items() if s in measured},
        "scenarios": summarize(measured),
        "measurements": [
            {k: v for k, v in asdict(m).items() if k != "extra"}
            for sides in measured.values()
            for ms in sides.values()
            for m in ms
        ],
    }
    if "memory" in chosen:
        progress.run = ""
        result["memory"] = memory_check(args.dsn, progress, args.memory_events)
    result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``pghub bench [options]``: print the table.

    Exit codes (as docs/cli.md): 0 done (targets are reported, never asserted), 1 a run lost
    events or a listener failed, 3 the server cannot be reached.
    """
    args = parse_args(argv)
    try:
        server_version(args.dsn)
    except psycopg.Error as exc:  # unreachable, or a conninfo libpq cannot read
        print(f"pghub bench: cannot connect: {redact(first_line(exc), args.dsn)}", file=sys.stderr)
        return 3
    try:
        result = run(args)
    except RuntimeError as exc:
        print(f"pghub bench: {exc}", file=sys.stderr)
        return 1
    m = result["machine"]
    print(
        f"pghub bench: {m['cores']} cores, PostgreSQL {m['server_version']}, load "
        f"{' '.join(map(str, m['load_average']))} (after: "
        f"{' '.join(map(str, m['load_average_after']))}), {result['runs']} run(s), medians"
    )
    if result["scenarios"]:
        print(table(result["scenarios"]))
    if "memory" in result:
        print(memory_lines(result["memory"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    incomplete = any(
        entry[side]["lost"] or entry[side]["timed_out"]
        for entry in result["scenarios"].values()
        for side in SIDES
    )
    if "memory" in result and result["memory"]["lost"]:
        incomplete = True
    return 1 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
