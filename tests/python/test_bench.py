"""The benchmark works: ``pghub bench --quick`` measures every scenario on both sides.

Speed is never asserted here (the machine is shared and noisy); what is checked is that every
event sent was received, that every figure the JSON promises is there, and that the ratios
are pghub's figures over the baseline's.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pghub import encode_payload
from pghub.cli import main as cli_main
from pghub.tools.bench import report, runner, scenarios
from pghub.tools.bench.progress import Progress


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
    code = cli_main(["bench", "--quick", "--dsn", dsn, "--json", str(out), "--no-progress"])
    assert code == 0  # nothing lost, no listener timed out
    result = json.loads(out.read_text())

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
        latency_measured = scenario == "paced"
        for side in scenarios.SIDES:
            assert (entry[side]["p50_ms"] is not None) is latency_measured
            assert (entry[side]["p99_ms"] is not None) is latency_measured
        assert set(entry["targets"]) == set(report.targets_of(scenario, entry))

    received = {(m["scenario"], m["side"]): m["received"] for m in result["measurements"]}
    for scenario, work in sizes.items():
        for side in scenarios.SIDES:
            assert received[(scenario, side)] == work.events * work.consumers
    paced = result["scenarios"]["paced"]
    for side in scenarios.SIDES:
        assert 0 < paced[side]["p50_ms"] <= paced[side]["p99_ms"]
        # Paced at 1000 a second: the listener keeps up, whatever the machine.
        assert paced[side]["events_per_s"] < 1500


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
