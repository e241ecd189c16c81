"""The benchmark's figures: medians per side, pghub's ratio to the baseline and to each peer,
the targets of issues 6 and 11, and the tables and memory line that ``pghub bench`` prints."""

from __future__ import annotations

import statistics
from typing import Any

from .scenarios import MEMORY_WARMUP, PEERS, SIDES, Measurement

FIGURES = ("events_per_s", "p50_ms", "p99_ms", "cpu_ms_per_10k", "rss_mb")

_LABELS = {
    "events_per_s": "events/s",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "cpu_ms_per_10k": "cpu ms/10k",
    "rss_mb": "rss MB",
}


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(pghub: float | None, baseline: float | None) -> float | None:
    if pghub is None or baseline is None or baseline == 0:
        return None
    return pghub / baseline


def summarize(runs: dict[str, dict[str, list[Measurement]]]) -> dict[str, Any]:
    """Per scenario: the median of each figure per side, pghub's ratio to the baseline
    (``ratio``) and to each peer measured (``peer_ratio``: pghub's figure over the peer's)."""
    out: dict[str, Any] = {}
    for scenario, sides in runs.items():
        entry: dict[str, Any] = {}
        peers = [p for p in PEERS if sides.get(p)]
        entry["sides"] = [*SIDES, *peers]
        for side in entry["sides"]:
            ms = sides.get(side, [])
            entry[side] = {f: _median([getattr(m, f) for m in ms]) for f in FIGURES}
            entry[side]["runs"] = len(ms)
            entry[side]["lost"] = sum(m.lost for m in ms)
            entry[side]["timed_out"] = sum(m.timed_out for m in ms)
        entry["ratio"] = {f: _ratio(entry["pghub"][f], entry["baseline"][f]) for f in FIGURES}
        entry["peer_ratio"] = {
            p: {f: _ratio(entry["pghub"][f], entry[p][f]) for f in FIGURES} for p in peers
        }
        entry["targets"] = targets_of(scenario, entry)
        out[scenario] = entry
    return out


def targets_of(scenario: str, entry: dict[str, Any]) -> dict[str, bool | None]:
    """Issue 6's and 11's targets for this scenario: True met, False missed, None not measured
    (a peer that did not run)."""
    pghub, ratio = entry["pghub"], entry["ratio"]
    peer_rate = {p: r["events_per_s"] for p, r in entry.get("peer_ratio", {}).items()}

    def at_least(value: float | None, bound: float) -> bool | None:
        return None if value is None else value >= bound

    def at_most(value: float | None, bound: float) -> bool | None:
        return None if value is None else value <= bound

    if scenario == "single":
        return {"events_per_s >= 3x baseline": at_least(ratio["events_per_s"], 3.0)}
    if scenario == "burst":
        return {"events_per_s >= 0.8x baseline": at_least(ratio["events_per_s"], 0.8)}
    if scenario == "drain":
        return {
            "events_per_s >= 0.8x baseline": at_least(ratio["events_per_s"], 0.8),
            "events_per_s >= 1.2x asyncpg": at_least(peer_rate.get("asyncpg"), 1.2),
            "events_per_s >= 1.0x node": at_least(peer_rate.get("node"), 1.0),
        }
    if scenario == "drain10":
        return {"events_per_s >= 1.0x baseline": at_least(ratio["events_per_s"], 1.0)}
    if scenario == "paced":
        return {
            "p50 <= 0.5 ms": at_most(pghub["p50_ms"], 0.5),
            "p99 <= 2 ms": at_most(pghub["p99_ms"], 2.0),
            "p50 <= 1.1x baseline": at_most(ratio["p50_ms"], 1.1),
            "p99 <= 1.1x baseline": at_most(ratio["p99_ms"], 1.1),
        }
    if scenario == "paced-inline":
        return {
            "p50 <= 1.1x baseline": at_most(ratio["p50_ms"], 1.1),
            "p99 <= 1.1x baseline": at_most(ratio["p99_ms"], 1.1),
        }
    if scenario in ("fanout-pool", "fanout-inline"):
        return {"deliveries/s >= 3,000,000": at_least(pghub["events_per_s"], 3_000_000)}
    if scenario in ("paced10k", "paced10k-inline"):
        return {"p99 <= 1 ms": at_most(pghub["p99_ms"], 1.0)}
    if scenario == "fanout":
        return {"deliveries/s >= 200,000": at_least(pghub["events_per_s"], 200_000)}
    return {}


def incomplete(result: dict[str, Any]) -> bool:
    """True when a run lost events or timed out, or the memory check lost events."""
    lost = any(
        entry[side]["lost"] or entry[side]["timed_out"]
        for entry in result["scenarios"].values()
        for side in entry["sides"]
    )
    memory_lost = bool("memory" in result and result["memory"]["lost"])
    return lost or memory_lost or durable_incomplete(result.get("durable", {}))


# --- durable scenarios (issue 13) -----------------------------------------------------------


def durable_targets(scenario: str, figures: dict[str, Any]) -> dict[str, bool | None]:
    """Issue 13's targets: True met, False missed, None not measured (skipped)."""

    def at_least(value: float | None, bound: float) -> bool | None:
        return None if value is None else value >= bound

    def at_most(value: float | None, bound: float) -> bool | None:
        return None if value is None else value <= bound

    if scenario == "durable-replay":
        return {"hub >= 100,000 events/s": at_least(figures.get("hub_events_per_s"), 100_000)}
    if scenario == "durable-latency":
        commit, tick = figures.get("commit", {}), figures.get("tick", {})
        return {
            "commit p50 <= 1 ms": at_most(commit.get("p50_ms"), 1.0),
            "commit p99 <= 3 ms": at_most(commit.get("p99_ms"), 3.0),
            "tick p50 <= 5 ms": at_most(tick.get("p50_ms"), 5.0),
            "tick p99 <= 20 ms": at_most(tick.get("p99_ms"), 20.0),
        }
    if scenario == "durable-writers":
        ratio = figures.get("ratio", {})
        return {
            "tick >= 0.6x unpublished": at_least(ratio.get("durable, tick"), 0.6),
            "commit mode >= pg_notify trigger": at_least(figures.get("commit_over_pg_notify"), 1.0),
        }
    if scenario == "durable-large":
        whole = figures.get("whole_and_in_order")
        return {"arrives whole, in order": None if whole is None else bool(whole)}
    return {}


def durable_incomplete(entries: dict[str, Any]) -> bool:
    """True when a durable scenario lost events or the large event came wrong."""
    for scenario, entry in entries.items():
        figures = entry["figures"]
        if entry["skipped"]:
            continue
        if scenario == "durable-latency" and any(
            figures[w]["received"] != figures[w]["sent"] for w in ("commit", "tick")
        ):
            return True
        if scenario == "durable-large" and not figures.get("whole_and_in_order", True):
            return True
    return False


def durable_lines(entries: dict[str, Any]) -> str:
    """One block per durable scenario: its figures, its time, its targets."""
    lines: list[str] = []
    for scenario, entry in entries.items():
        f = entry["figures"]
        head = f"{scenario} ({entry['seconds']:.1f} s)"
        if entry["skipped"]:
            lines.append(f"{head}: skipped: {entry['skipped']}")
            continue
        if scenario == "durable-replay":
            lines.append(
                f"{head}: {f['events']:,} events committed while the named consumer was "
                f"stopped ({f['fill_s']:.0f} s): hub {f['hub_events_per_s']:,.0f} events/s, "
                f"raw psycopg {f['raw_events_per_s']:,.0f} events/s, hub/raw "
                f"{f['hub_over_raw']:.2f}x"
            )
        elif scenario == "durable-latency":
            lines.append(
                f"{head}: {f['rate']:,.0f} events/s to a named durable consumer, from just "
                "before the writer's statement to the callback"
            )
            for wake in ("commit", "tick"):
                w = f[wake]
                lines.append(
                    f"  {wake:<6} mode: {w['received']:,} of {w['sent']:,}, p50 "
                    f"{_fmt(w['p50_ms'], 'p50_ms')} ms, p99 {_fmt(w['p99_ms'], 'p99_ms')} ms, "
                    f"max {_fmt(w['max_ms'], 'p99_ms')} ms (the writer's statement and commit, "
                    f"inside these: p50 {_fmt(w['writer_p50_ms'], 'p50_ms')} ms, p99 "
                    f"{_fmt(w['writer_p99_ms'], 'p99_ms')} ms)"
                )
        elif scenario == "durable-writers":
            lines.append(
                f"{head}: {f['writers']} writers (processes), one INSERT a transaction, "
                f"{f['rounds']} round(s) of {f['seconds']:g} s a variant; commits/s, median "
                f"of the rounds' ratios to unpublished"
            )
            for variant, rate in f["commits_per_s"].items():
                lines.append(f"  {variant:<22} {rate:>9,.0f}/s {f['ratio'][variant]:>6.2f}x")
            lines.append(f"  durable commit / pg_notify trigger: {f['commit_over_pg_notify']:.2f}x")
        elif scenario == "durable-large":
            lines.append(
                f"{head}: {f['bytes']:,}-byte event between four small ones: "
                f"{f['received']} of 5 received, whole and in order: "
                f"{'yes' if f['whole_and_in_order'] else 'NO'}; "
                f"the large one in {_fmt(f['large_ms'], 'p50_ms')} ms, all in "
                f"{_fmt(f['all_ms'], 'p50_ms')} ms"
            )
        for target, met in entry["targets"].items():
            state = "not measured" if met is None else ("met" if met else "MISSED")
            lines.append(f"  target {target}: {state}")
    return "\n".join(lines)


# --- output ---------------------------------------------------------------------------------


def _fmt(value: float | None, figure: str) -> str:
    if value is None:
        return "-"
    if figure == "events_per_s":
        return f"{value:,.0f}"
    if figure in ("p50_ms", "p99_ms"):
        return f"{value:.3f}"
    return f"{value:,.1f}"


def headline(result: dict[str, Any]) -> str:
    """The first line: the machine, the load before and after, the number of runs."""
    m = result["machine"]
    return (
        f"pghub bench: {m['cores']} cores, PostgreSQL {m['server_version']}, load "
        f"{' '.join(map(str, m['load_average']))} (after: "
        f"{' '.join(map(str, m['load_average_after']))}), "
        + (f"{result['runs']} run(s), medians" if result["scenarios"] else "")
        + ("; " if result["scenarios"] and result.get("durable") else "")
        + ("durable scenarios once each" if result.get("durable") else "")
    )


def table(summary: dict[str, Any]) -> str:
    """The medians side by side, with pghub's ratio to the baseline and the targets."""
    lines = [f"{'scenario':<14} {'figure':<11} {'baseline':>11} {'pghub':>11} {'ratio':>7}"]
    for scenario, entry in summary.items():
        label = scenario
        for figure in FIGURES:
            b, p, r = entry["baseline"][figure], entry["pghub"][figure], entry["ratio"][figure]
            if b is None and p is None:
                continue
            ratio = "-" if r is None else f"{r:.2f}x"
            lines.append(
                f"{label:<14} {_LABELS[figure]:<11} {_fmt(b, figure):>11} "
                f"{_fmt(p, figure):>11} {ratio:>7}"
            )
            label = ""
        for side in entry["sides"]:
            if entry[side]["lost"] or entry[side]["timed_out"]:
                lines.append(
                    f"{'':<14} warning: {side} lost {entry[side]['lost']} events, "
                    f"{entry[side]['timed_out']} runs timed out"
                )
        for target, met in entry["targets"].items():
            state = "not measured" if met is None else ("met" if met else "MISSED")
            lines.append(f"{'':<14} target {target}: {state}")
    return "\n".join(lines)


_PEER_LABELS = {"baseline": "psycopg", "pghub": "pghub", "asyncpg": "asyncpg", "node": "node-pg"}


def peers_table(result: dict[str, Any]) -> str:
    """The listeners side by side where the peers ran: rate, CPU per event, and pghub's
    ratio to each (rate: above 1 pghub is faster; cpu: below 1 pghub is cheaper). Then a
    line for each peer that was skipped, saying why."""
    lines: list[str] = []
    for scenario, entry in result["scenarios"].items():
        if not entry.get("peer_ratio") and "drain" not in scenario:
            continue
        if not lines:
            lines.append(
                "listeners draining; pghub's ratio to each: rate above 1x, pghub is faster; "
                "cpu below 1x, pghub is cheaper"
            )
            lines.append(
                f"{'scenario':<9} {'listener':<9} {'events/s':>11} {'cpu us/event':>12} "
                f"{'rate':>7} {'cpu':>7}"
            )
        label = scenario
        others = [s for s in entry["sides"] if s != "pghub"]
        for side in [*others, "pghub"]:
            figures = entry[side]
            cpu = figures["cpu_ms_per_10k"]
            cpu_text = "-" if cpu is None else f"{cpu / 10:.2f}"  # ms per 10k = 0.1 us each
            if side == "pghub":
                rate, cpu_ratio = "", ""
            else:
                ratios = entry["ratio"] if side == "baseline" else entry["peer_ratio"][side]
                rate = _times(ratios["events_per_s"])
                cpu_ratio = _times(ratios["cpu_ms_per_10k"])
            events = _fmt(figures["events_per_s"], "events_per_s")
            line = f"{label:<9} {_PEER_LABELS[side]:<9} {events:>11} {cpu_text:>12} "
            lines.append((line + f"{rate:>7} {cpu_ratio:>7}").rstrip())
            label = ""
    for name, peer in result.get("peers", {}).items():
        if not peer["available"]:
            lines.append(f"peer {name} skipped: {peer['note']}")
    return "\n".join(lines)


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


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
