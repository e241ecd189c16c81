"""The benchmark works: ``pghub bench --quick`` measures every scenario on both sides, and the
peers (asyncpg, node-postgres) drain when they are installed.

Speed is never asserted here (the machine is shared and noisy); what is checked is that every
event sent was received, that every figure the JSON promises is there, and that the ratios
are pghub's figures over the baseline's and over each peer's. A peer's test skips when its
dependency is missing (.ci/run installs both).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pghub import encode_payload
from pghub.cli import bench as bench_cli
from pghub.cli import main as cli_main
from pghub.tools.bench import durable, peers, report, runner, scenarios
from pghub.tools.bench.progress import Progress
from pghub.tools.bench.scenarios import Measurement, Workload


def test_baseline_payloads_are_pghub_payloads() -> None:
    """Both sides send the same bytes, so the comparison is of the same workload."""
    for n, pad in [(0, 0), (7, 0), (123456, scenarios.LARGE_PAD)]:
        value = scenarios.event_value(n, pad)
        assert scenarios.baseline_payload(n, value) == encode_payload((n,), value)
    large = scenarios.baseline_payload(1, scenarios.event_value(1, scenarios.LARGE_PAD))
    assert 4000 <= len(large.encode()) <= 4200


@pytest.mark.slow
def test_quick_run_measures_every_scenario(dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--dsn", dsn, "--json", str(out), "--no-progress", "--no-peers"]
    code = cli_main(argv)
    assert code == 0  # nothing lost, no listener timed out
    result = json.loads(out.read_text())
    assert result["peers"] == {}

    assert result["quick"] is True
    assert result["runs"] == 1
    assert result["machine"]["cores"] >= 1
    assert result["machine"]["server_version"]
    assert set(result["scenarios"]) == set(scenarios.SCENARIOS)
    sizes = scenarios.workloads(quick=True)
    for scenario, entry in result["scenarios"].items():
        for side in scenarios.SIDES:
            figures = entry[side]
            assert figures["runs"] == 1
            assert figures["lost"] == 0
            assert figures["timed_out"] == 0
            assert figures["events_per_s"] > 0
            assert figures["cpu_ms_per_10k"] > 0
            assert figures["rss_mb"] > 0
        for figure in ("events_per_s", "cpu_ms_per_10k", "rss_mb"):
            expected = entry["pghub"][figure] / entry["baseline"][figure]
            assert entry["ratio"][figure] == pytest.approx(expected)
        latency_measured = scenario in scenarios.PACED
        for side in scenarios.SIDES:
            assert (entry[side]["p50_ms"] is not None) is latency_measured
            assert (entry[side]["p99_ms"] is not None) is latency_measured
        assert set(entry["targets"]) == set(report.targets_of(scenario, entry))
        assert entry["sides"] == list(scenarios.SIDES)
        assert entry["peer_ratio"] == {}

    received = {(m["scenario"], m["side"]): m["received"] for m in result["measurements"]}
    for scenario, work in sizes.items():
        for side in scenarios.SIDES:
            assert received[(scenario, side)] == work.events * work.consumers
    paced = result["scenarios"]["paced"]
    for side in scenarios.SIDES:
        assert 0 < paced[side]["p50_ms"] <= paced[side]["p99_ms"]
        # Paced at 1000 a second: the listener keeps up, whatever the machine.
        assert paced[side]["events_per_s"] < 1500
    paced10k = result["scenarios"]["paced10k"]
    for side in scenarios.SIDES:
        assert 0 < paced10k[side]["p50_ms"] <= paced10k[side]["p99_ms"]
        assert paced10k[side]["events_per_s"] < 15_000


def test_memory_check_reports_growth(dsn: str) -> None:
    progress = Progress(enabled=False)
    mem = runner.memory_check(dsn, progress, events=20_000)
    assert mem["events"] == 20_000
    assert mem["lost"] == 0
    assert mem["rss_end_mb"] > 0
    assert mem["growth_mb"] == pytest.approx(mem["rss_end_mb"] - mem["rss_ready_mb"])
    assert mem["samples"]
    assert all(count <= 20_000 for count, _ in mem["samples"])


def test_progress_names_scenario_phase_and_counts() -> None:
    stream = io.StringIO()  # not a terminal: one line a phase
    progress = Progress(enabled=True, stream=stream)
    progress.run = "[run 2/3] "
    progress.start("burst", "pghub", 20_000, None)
    progress.phase("sending")
    progress.sent(5_000)
    progress.phase("receiving")
    lines = stream.getvalue().splitlines()
    assert lines == [
        "[run 2/3] burst pghub: sending, sent 0, received 0 of 20,000",
        "[run 2/3] burst pghub: receiving, sent 5,000, received 0 of 20,000",
    ]


def test_unreachable_server_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "--quick", "--dsn", "host=127.0.0.1 port=1 connect_timeout=2"]) == 3
    assert "cannot connect" in capsys.readouterr().err


def test_pghub_bench_dispatches_here(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--dsn", "host=127.0.0.1 port=1 connect_timeout=2", "bench", "--quick"],
        ["--dsn=host=127.0.0.1 port=1 connect_timeout=2", "bench", "--quick"],
        ["bench", "--quick", "--dsn", "host=127.0.0.1 port=1 connect_timeout=2"],
        ["bench", "--dsn", "nonsense"],  # a conninfo libpq cannot read: one line, no traceback
    ],
)
def test_pghub_bench_takes_the_dsn_before_or_after_it(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("pghub bench: cannot connect:")
    assert "Traceback" not in err


# --- peers ------------------------------------------------------------------------------------

# A drain small enough for a test: ten topics round-robin, the listener stopped while they are
# sent (so every topic's events interleave on the server), then drained.
_TINY_DRAIN = Workload("drain10", 2_000, batch=scenarios.BURST, paused=True, topics=10)


def _check_drained(m: Measurement, side: str) -> None:
    assert (m.side, m.scenario) == (side, "drain10")
    assert (m.received, m.lost, m.timed_out) == (2_000, 0, False)
    assert m.events_per_s is not None
    assert m.events_per_s > 0
    assert m.cpu_ms_per_10k is not None
    assert m.cpu_ms_per_10k > 0
    assert m.rss_mb > 0


@pytest.mark.parametrize("side", ["baseline", "pghub"])
def test_ten_topics_drain(dsn: str, side: str) -> None:
    _check_drained(runner.measure(side, _TINY_DRAIN, dsn, Progress(enabled=False)), side)


def test_asyncpg_peer_drains(dsn: str) -> None:
    pytest.importorskip("asyncpg", reason="the bench extra is not installed")
    found = peers.asyncpg_peer()
    assert found.available
    assert found.note.startswith("asyncpg ")
    m = runner.measure("asyncpg", _TINY_DRAIN, dsn, Progress(enabled=False))
    _check_drained(m, "asyncpg")


@pytest.fixture
def node_peer() -> peers.Peer:
    found = peers.node_peer()
    if not found.available:
        pytest.skip(f"node peer: {found.note}")
    return found


def test_node_peer_drains(dsn: str, node_peer: peers.Peer) -> None:
    assert node_peer.note.startswith("node v")
    m = runner.measure("node", _TINY_DRAIN, dsn, Progress(enabled=False), node_peer)
    _check_drained(m, "node")


def test_conninfo_becomes_node_postgres_config() -> None:
    """A config object, not a URI: nothing to quote, a socket directory as host works."""
    config = peers.connection_config(
        "host=/var/run/postgresql port=5433 user=a password='p w' dbname=x connect_timeout=3"
    )
    assert config == {
        "host": "/var/run/postgresql",
        "port": 5433,
        "user": "a",
        "password": "p w",
        "database": "x",
    }


def test_node_peer_drains_one_topic(dsn: str, node_peer: peers.Peer) -> None:
    work = Workload("drain", 500, batch=scenarios.BURST, paused=True)
    m = runner.measure("node", work, dsn, Progress(enabled=False), node_peer)
    assert (m.received, m.lost, m.timed_out) == (500, 0, False)


def test_missing_peers_are_skipped_with_a_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # import asyncpg raises ImportError
    missing = peers.asyncpg_peer()
    assert not missing.available
    assert missing.note == "asyncpg is not installed (pip install 'pghub[bench]')"

    monkeypatch.setenv("PATH", str(tmp_path))  # no node there
    assert peers.node_peer() == peers.Peer("node", False, "node is not on PATH")


def test_node_modules_named_by_the_environment_are_the_only_place_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if peers.shutil.which("node") is None:
        pytest.skip("node is not on PATH")
    empty = tmp_path / "node_modules"
    empty.mkdir()
    monkeypatch.setenv(peers.NODE_MODULES_ENV, str(empty))
    found = peers.node_peer()
    assert not found.available
    assert found.note == (
        f"no pg in ${peers.NODE_MODULES_ENV} ({empty}): npm install --prefix DIR pg"
    )


def test_the_node_cache_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert peers.node_cache() == tmp_path / "pghub" / "node"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert peers.node_cache() == Path.home() / ".cache" / "pghub" / "node"


def _measured(side: str, scenario: str, rate: float, cpu: float) -> Measurement:
    return Measurement(side, scenario, rate, None, None, cpu, 40.0, 100, 0, 1.0, False, {})


def test_peer_ratios_targets_and_table() -> None:
    """Ratios are pghub's figure over each listener's; the issue 11 targets read them."""
    runs = {
        "drain": {
            "baseline": [_measured("baseline", "drain", 300_000, 30.0)],
            "pghub": [_measured("pghub", "drain", 360_000, 27.0)],
            "asyncpg": [_measured("asyncpg", "drain", 200_000, 45.0)],
            "node": [_measured("node", "drain", 450_000, 36.0)],
        },
        "drain10": {
            "baseline": [_measured("baseline", "drain10", 250_000, 40.0)],
            "pghub": [_measured("pghub", "drain10", 250_000, 40.0)],
        },
    }
    summary = report.summarize(runs)
    drain = summary["drain"]
    assert drain["sides"] == ["baseline", "pghub", "asyncpg", "node"]
    assert drain["peer_ratio"]["asyncpg"]["events_per_s"] == pytest.approx(1.8)
    assert drain["peer_ratio"]["node"]["events_per_s"] == pytest.approx(0.8)
    assert drain["peer_ratio"]["node"]["cpu_ms_per_10k"] == pytest.approx(0.75)
    assert drain["targets"] == {
        "events_per_s >= 0.8x baseline": True,
        "events_per_s >= 1.2x asyncpg": True,
        "events_per_s >= 1.0x node": False,
    }
    assert summary["drain10"]["targets"] == {"events_per_s >= 1.0x baseline": True}
    assert summary["drain10"]["peer_ratio"] == {}
    result = {
        "scenarios": summary,
        "peers": {
            "asyncpg": {"available": True, "note": "asyncpg 0.32.0"},
            "node": {"available": False, "note": "node is not on PATH"},
        },
    }
    lines = report.peers_table(result).splitlines()
    assert [line.split() for line in lines[2:]] == [
        ["drain", "psycopg", "300,000", "3.00", "1.20x", "0.90x"],
        ["asyncpg", "200,000", "4.50", "1.80x", "0.60x"],
        ["node-pg", "450,000", "3.60", "0.80x", "0.75x"],
        ["pghub", "360,000", "2.70"],
        ["drain10", "psycopg", "250,000", "4.00", "1.00x", "1.00x"],
        ["pghub", "250,000", "4.00"],
        ["peer", "node", "skipped:", "node", "is", "not", "on", "PATH"],
    ]
    # Without the drain scenarios there is nothing to compare.
    assert report.peers_table({"scenarios": {}, "peers": {}}) == ""


# --- durable scenarios (issue 13) -----------------------------------------------------------

TINY = scenarios.DurableSizes(
    2_000, latency_seconds=0.5, writer_rounds=2, writer_seconds=0.5, writers=2
)


def _bench_databases(server_dsn: str) -> list[str]:
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            [f"pghub\\_bench\\_durable\\_%\\_{os.getpid()}"],
        ).fetchall()
    return [row[0] for row in rows]


def _run_durable(scenario: str, server_dsn: str) -> dict[str, Any]:
    entry = durable.run_scenario(scenario, server_dsn, TINY, Progress(enabled=False))
    if entry["skipped"]:
        pytest.skip(f"{scenario}: {entry['skipped']}")
    assert _bench_databases(server_dsn) == []  # its database is dropped
    entry["targets"] = report.durable_targets(scenario, entry["figures"])
    assert set(entry["targets"]) == set(report.durable_targets(scenario, {}))
    assert all(met is not None for met in entry["targets"].values())
    text = report.durable_lines({scenario: entry})
    assert text.startswith(f"{scenario} (")
    assert "not measured" not in text
    return entry


def test_durable_replay_counts_every_event(server_dsn: str) -> None:
    f = _run_durable("durable-replay", server_dsn)["figures"]
    assert f["events"] == TINY.replay_events
    assert f["hub_events_per_s"] == pytest.approx(TINY.replay_events / f["hub_s"])
    assert f["hub_over_raw"] == pytest.approx(f["hub_events_per_s"] / f["raw_events_per_s"])


@pytest.mark.slow
def test_durable_latency_both_modes(server_dsn: str) -> None:
    entry = _run_durable("durable-latency", server_dsn)
    for wake in ("commit", "tick"):
        w = entry["figures"][wake]
        assert w["sent"] == w["received"] == 500
        assert 0 < w["p50_ms"] <= w["p99_ms"] <= w["max_ms"]
        assert 0 < w["writer_p50_ms"] <= w["writer_p99_ms"]
    assert not report.durable_incomplete({"durable-latency": entry})


@pytest.mark.slow
def test_durable_writers_every_variant(server_dsn: str) -> None:
    f = _run_durable("durable-writers", server_dsn)["figures"]
    assert set(f["commits_per_s"]) == set(durable.WRITER_VARIANTS)
    for variant, rounds in f["rounds_commits_per_s"].items():
        assert len(rounds) == TINY.writer_rounds
        assert all(rate > 0 for rate in rounds)
        assert f["commits_per_s"][variant] == pytest.approx(statistics.median(rounds))
    assert f["ratio"]["unpublished"] == 1.0


def test_durable_large_event_arrives_whole_in_order(server_dsn: str) -> None:
    entry = _run_durable("durable-large", server_dsn)
    f = entry["figures"]
    assert f["confirmed"] is True
    assert f["received"] == 5
    assert f["whole_and_in_order"] is True
    assert entry["targets"] == {"arrives whole, in order": True}
    assert 0 < f["large_ms"] <= f["all_ms"]


def test_durable_scenario_skipped_without_the_extension(
    server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server without pghub: the scenario says so, creates nothing, and the run succeeds."""
    monkeypatch.setattr(durable, "EXTENSION", "pghub_not_on_this_server")
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--no-progress", "--dsn", server_dsn, "--json", str(out)]
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buffer)
    assert cli_main([*argv, "--scenario", "durable-large"]) == 0
    result = json.loads(out.read_text())
    entry = result["durable"]["durable-large"]
    assert "no 'pghub_not_on_this_server' extension" in entry["skipped"]
    assert entry["targets"] == {"arrives whole, in order": None}
    assert result["scenarios"] == {}
    assert "), durable scenarios once each\n" in buffer.getvalue()  # the headline
    assert "durable-large (" in buffer.getvalue()
    assert "s): skipped: the server has no 'pghub_not_on_this_server'" in buffer.getvalue()
    assert _bench_databases(server_dsn) == []


def test_durable_scenarios_only_in_a_full_run_or_named() -> None:
    parser = argparse.ArgumentParser()
    bench_cli.configure(parser)
    assert parser.parse_args(["--scenario", "durable-replay"]).scenario == ["durable-replay"]
    assert bench_cli.scenarios_of(parser.parse_args([])) == (
        *scenarios.SCENARIOS,
        *scenarios.DURABLE,
    )
    assert bench_cli.scenarios_of(parser.parse_args(["--quick"])) == scenarios.SCENARIOS


def test_durable_targets() -> None:
    met = {
        "hub_events_per_s": 100_000.0,
        "commit": {"p50_ms": 1.0, "p99_ms": 3.0},
        "tick": {"p50_ms": 5.0, "p99_ms": 20.0},
        "ratio": {"durable, tick": 0.6},
        "commit_over_pg_notify": 1.0,
        "whole_and_in_order": True,
    }
    for scenario in scenarios.DURABLE:
        assert all(report.durable_targets(scenario, met).values()), scenario
    missed = {
        "hub_events_per_s": 99_999.0,
        "commit": {"p50_ms": 1.01, "p99_ms": 3.01},
        "tick": {"p50_ms": 5.01, "p99_ms": 20.01},
        "ratio": {"durable, tick": 0.59},
        "commit_over_pg_notify": 0.99,
        "whole_and_in_order": False,
    }
    for scenario in scenarios.DURABLE:
        targets = report.durable_targets(scenario, missed)
        assert targets, scenario
        assert not any(targets.values()), scenario
