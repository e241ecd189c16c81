"""What the benchmark measures: the scenarios, their sizes, the payloads, and what one
measurement of one side gives.

Kept free of multiprocessing and psycopg, so that ``pghub bench --help`` can name the
scenarios without loading the harness.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ..._options import Run

SCENARIOS = (
    "single",
    "burst",
    "drain",
    "drain10",
    "paced",
    "paced10k",
    "paced-inline",
    "paced10k-inline",
    "fanout",
    "fanout-shared",
    "fanout-pool",
    "fanout-inline",
    "large",
)
# Variants of a scenario whose pghub listener runs its callbacks elsewhere than in a thread of
# their own (docs/hub.md, Where callbacks run); each runs on both sides, like any scenario, so
# that its ratio is to a baseline of the same run: paced-inline and paced10k-inline
# (run="inline", on the hub's engine thread), fanout-shared (shared=True: values shared rather
# than copied for each of the 100 consumers, each still in a thread of its own), fanout-pool
# (run="pool", shared=True: the hub's callback pool as well; against fanout-shared, the pool's
# own part) and fanout-inline (run="inline", shared=True: every callback on the engine thread).
# Durable topics (issue 13): through pghub only, once a run, each in a database of its own
# (durable.py). The full run includes them; --quick only when named with --scenario.
DURABLE = ("durable-replay", "durable-latency", "durable-writers", "durable-large")
# The latency scenarios: 1,000 and 10,000 events a second.
PACED = ("paced", "paced10k", "paced-inline", "paced10k-inline")
SIDES = ("baseline", "pghub")  # every scenario runs on both
# Listeners a user would pick instead of pghub (issue 11), measured where the listener alone
# sets the pace: asyncpg's add_listener, node-postgres. Each is optional (peers.py).
PEERS = ("asyncpg", "node")
PEER_SCENARIOS = ("drain", "drain10")
TOPICS = 10  # drain10: events round-robin over this many topics
BURST = 100  # events per statement (baseline) and per notify_many call (pghub)
LARGE_PAD = 4000  # characters of padding: payloads of about 4 KB
MEMORY_EVENTS = 1_000_000
MEMORY_WARMUP = 100_000  # RSS growth is also reported from this point on


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
    topics: int = 1  # event n goes to topic n % topics; the listener follows them all
    run: Run = "thread"  # the pghub consumers' run= (thread, pool, inline)
    shared: bool = False  # the pghub consumers share values (shared=True)


def workloads(quick: bool) -> dict[str, Workload]:
    """The scenarios, sized for a full run or for ``--quick`` (about a minute with the peers)."""
    if quick:
        return {
            "single": Workload("single", 5_000),
            "burst": Workload("burst", 20_000, batch=BURST),
            "drain": Workload("drain", 20_000, batch=BURST, paused=True),
            "drain10": Workload("drain10", 20_000, batch=BURST, paused=True, topics=TOPICS),
            "paced": Workload("paced", 1_500, rate=1000.0, latencies=True),
            "paced10k": Workload("paced10k", 5_000, rate=10_000.0, latencies=True),
            "paced-inline": Workload(
                "paced-inline", 1_500, rate=1000.0, latencies=True, run="inline"
            ),
            "paced10k-inline": Workload(
                "paced10k-inline", 5_000, rate=10_000.0, latencies=True, run="inline"
            ),
            "fanout": Workload("fanout", 1_000, consumers=100, batch=BURST),
            "fanout-shared": Workload(
                "fanout-shared", 1_000, consumers=100, batch=BURST, shared=True
            ),
            "fanout-pool": Workload(
                "fanout-pool", 1_000, consumers=100, batch=BURST, run="pool", shared=True
            ),
            "fanout-inline": Workload(
                "fanout-inline", 1_000, consumers=100, batch=BURST, run="inline", shared=True
            ),
            "large": Workload("large", 4_000, batch=BURST, pad=LARGE_PAD),
        }
    return {
        "single": Workload("single", 50_000),
        "burst": Workload("burst", 200_000, batch=BURST),
        "drain": Workload("drain", 100_000, batch=BURST, paused=True),
        "drain10": Workload("drain10", 100_000, batch=BURST, paused=True, topics=TOPICS),
        "paced": Workload("paced", 10_000, rate=1000.0, latencies=True),
        "paced10k": Workload("paced10k", 50_000, rate=10_000.0, latencies=True),
        "paced-inline": Workload("paced-inline", 10_000, rate=1000.0, latencies=True, run="inline"),
        "paced10k-inline": Workload(
            "paced10k-inline", 50_000, rate=10_000.0, latencies=True, run="inline"
        ),
        "fanout": Workload("fanout", 5_000, consumers=100, batch=BURST),
        "fanout-shared": Workload("fanout-shared", 5_000, consumers=100, batch=BURST, shared=True),
        "fanout-pool": Workload(
            "fanout-pool", 5_000, consumers=100, batch=BURST, run="pool", shared=True
        ),
        "fanout-inline": Workload(
            "fanout-inline", 5_000, consumers=100, batch=BURST, run="inline", shared=True
        ),
        "large": Workload("large", 40_000, batch=BURST, pad=LARGE_PAD),
    }


def channels_of(channel: str, work: Workload) -> list[str]:
    """The channels of a measurement: ``channel``, or ``channel_0`` .. ``channel_9``."""
    if work.topics == 1:
        return [channel]
    return [f"{channel}_{i}" for i in range(work.topics)]


def memory_workload(events: int = MEMORY_EVENTS) -> Workload:
    every = max(1024, events // 20 // 1024 * 1024)  # a multiple of 1024 (see listeners.Tally)
    return Workload("memory", events, batch=1000, rss_every=every)


@dataclass
class Measurement:
    """One scenario on one side, as the listener's process measured it."""

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


@dataclass(frozen=True)
class DurableSizes:
    """The sizes of the durable scenarios."""

    replay_events: int  # committed while the named consumer is stopped
    latency_seconds: float  # of each mode, commit then tick
    writer_rounds: int  # each round runs every variant, in alternating order
    writer_seconds: float  # of each variant in a round
    latency_rate: float = 1000.0  # events a second
    writers: int = 8  # processes, one INSERT a transaction
    large_bytes: int = 1_000_000  # the large event's padding


def durable_sizes(quick: bool) -> DurableSizes:
    """Full: about 4 minutes in all on two busy cores (docs/performance.md); quick: seconds."""
    if quick:
        return DurableSizes(20_000, latency_seconds=2, writer_rounds=1, writer_seconds=2)
    return DurableSizes(1_000_000, latency_seconds=10, writer_rounds=3, writer_seconds=8)
