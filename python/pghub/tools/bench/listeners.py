"""The listening side of a measurement, in a child process of its own.

The baseline is what a careful user writes by hand: a loop on psycopg's ``conn.notifies()``
that parses each payload's JSON and calls a callback. The pghub side receives through
consumers of a :class:`pghub.Hub` (their ``run=`` and ``shared=`` as the workload says). The
asyncpg peer is the same hand-written loop on asyncpg's ``add_listener`` (node-postgres, the
other peer, runs in node: peers.py). Each process
reports, over a pipe, how many events each callback got, when the last one came, its CPU time
and RSS from the moment it was listening (process start-up excluded), and the latencies when
asked for.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import psycopg

from ...events import Action
from ...hub import Hub
from .scenarios import Workload


class Tally:
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


def listener_main(
    side: str, dsn: str, channels: list[str], work: Workload, pipe: Connection, shared: Any
) -> None:
    """Entry point of the listener's child process."""
    try:
        if side == "baseline":
            _listen_baseline(dsn, channels, work, pipe, shared)
        elif side == "asyncpg":
            asyncio.run(_listen_asyncpg(dsn, channels, work, pipe, shared))
        else:
            _listen_pghub(dsn, channels, work, pipe, shared)
    except BaseException as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


def _tallies(work: Workload, shared: Any) -> list[Tally]:
    tallies = [
        Tally(work.events, work.latencies, shared if i == 0 else None)
        for i in range(work.consumers)
    ]
    if work.rss_every:
        tallies[0].rss = []
        tallies[0].rss_every = work.rss_every
    return tallies


def _listen_baseline(
    dsn: str, channels: list[str], work: Workload, pipe: Connection, shared: Any
) -> None:
    tallies = _tallies(work, shared)
    takers = [t.take for t in tallies]
    last = tallies[-1]
    loads = json.loads
    with psycopg.connect(dsn, autocommit=True) as conn:
        for channel in channels:
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


async def _listen_asyncpg(
    dsn: str, channels: list[str], work: Workload, pipe: Connection, shared: Any
) -> None:
    """asyncpg's ``add_listener``: a callback per notification, on the event loop."""
    import asyncpg  # the bench extra; the runner checked that it is there

    tallies = _tallies(work, shared)
    takers = [t.take for t in tallies]
    last = tallies[-1]
    loads = json.loads

    def on_notification(conn: Any, pid: int, channel: str, payload: str) -> None:
        value = loads(payload.partition(":")[2])
        for take in takers:
            take(value)

    conn = await asyncpg.connect(**_asyncpg_args(dsn))
    try:
        for channel in channels:
            await conn.add_listener(channel, on_notification)
        started = _ready(pipe)
        deadline = _Deadline()
        while not last.done.is_set() and not deadline.passed(last.count):
            await asyncio.sleep(0.2)  # the callbacks run meanwhile; done is checked each time
        _report(pipe, tallies, started, timed_out=not last.done.is_set())
    finally:
        await conn.close(timeout=5)


def _asyncpg_args(dsn: str) -> dict[str, Any]:
    """asyncpg's connect() arguments for a libpq conninfo (it reads URIs, not conninfos).

    Only what the benchmark's server needs: host, port, user, password, dbname; libpq's
    environment fills in the rest, as asyncpg reads PGHOST and friends too.
    """
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    names = {"host": "host", "port": "port", "user": "user", "password": "password"}
    args: dict[str, Any] = {names[k]: str(v) for k, v in params.items() if k in names}
    if "port" in args:
        args["port"] = int(args["port"])
    if "dbname" in params:
        args["database"] = str(params["dbname"])
    return args


def _listen_pghub(
    dsn: str, channels: list[str], work: Workload, pipe: Connection, shared: Any
) -> None:
    tallies = _tallies(work, shared)
    subscribed = threading.Semaphore(0)

    def callback_of(tally: Tally) -> Callable[[Any], None]:
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
            hub.consumer(
                callback_of(tally),
                *channels,
                run=work.run,
                shared=work.shared,
            )
        for _ in range(len(tallies) * len(channels)):  # a SUBSCRIBE per consumer and topic
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
    tallies: list[Tally],
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
