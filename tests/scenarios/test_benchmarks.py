"""The benchmark suite and the soak test run end to end in --smoke mode and write their results.

It checks that every scenario produced numbers for monit and the reference
(monit alone where the reference cannot serve it), not what the numbers are:
performance is measured, never asserted in tests.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "run.py"
SOAK = ROOT / "benchmarks" / "soak.py"
pytestmark = pytest.mark.integration  # node, nats-server, twistd
SCENARIOS = ("fanout", "many-streams", "idle-memory", "ingest", "cpu-per-delivery", "flood-fanout", "many-jobs")
MONIT_ONLY = ("many-jobs",)  # many-job responses: the reference streams one job per connection


def numbers(summary: dict) -> list[float]:
    return [v for v in summary.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def smoke_run(script: Path, *args: str, results: Path) -> subprocess.CompletedProcess[str]:
    """A benchmark script run to its end with ``args``, writing to ``results``; it must succeed."""
    done = subprocess.run(
        [sys.executable, str(script), *args, "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_smoke_run_writes_results_for_every_scenario(tmp_path):
    smoke_run(RUN, "--smoke", results=tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["smoke"] is True
    assert results["machine"]["cores"] >= 1
    assert results["machine"]["node"].startswith("v")
    assert set(results["scenarios"]) == set(SCENARIOS)
    for name, scenario in results["scenarios"].items():
        targets = ("monit",) if name in MONIT_ONLY else ("monit", "reference")
        assert set(targets) == {target for target in ("monit", "reference") if target in scenario}, name
        for target in targets:
            assert "error" not in scenario[target], (name, target, scenario[target])
            values = numbers(scenario[target]["summary"])
            assert values, (name, target, scenario[target]["summary"])
            assert all(math.isfinite(v) for v in values), (name, target)
            assert isinstance(scenario[target]["invalid"], list)
        if name not in MONIT_ONLY:
            assert set(scenario["ratios"]) == set(scenario["monit"]["summary"])
    many = results["scenarios"]["many-jobs"]["monit"]["summary"]
    assert "many_vs_one" in many and many["lost"] == 0, many
    assert list(tmp_path.glob("*.png")), "no plots written"


def test_http2_smoke_run_sets_http2_against_http1_in_the_same_run(tmp_path):
    done = smoke_run(RUN, "--http2", "--smoke", "--no-plots", results=tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["http2"] is True
    assert set(results["scenarios"]) == {"idle-memory", "cpu-per-delivery"}
    for name, scenario in results["scenarios"].items():
        for target in ("monit", "monit_http1", "reference"):
            assert "error" not in scenario[target], (name, target, scenario[target])
            assert scenario[target]["target"] == target
            assert all(math.isfinite(v) for v in numbers(scenario[target]["summary"])), (name, target)
    memory = results["scenarios"]["idle-memory"]
    cpu = results["scenarios"]["cpu-per-delivery"]
    assert set(memory["http2_vs_http1"]) == {"rss_per_stream_kb@50", "rss_per_stream_kb@200"}
    assert set(cpu["http2_vs_http1"]) == {"cpu_us_per_delivery"}
    for scenario, key in ((memory, "rss_per_stream_kb@200"), (cpu, "cpu_us_per_delivery")):
        http2, http1 = scenario["monit"]["summary"][key], scenario["monit_http1"]["summary"][key]
        assert http2 > 0 and http1 > 0, (key, http2, http1)
        ratio = scenario["http2_vs_http1"][key]
        assert ratio == round(http2 / http1, 3)
        assert f"| {key} | {http2} | {http1} | {ratio} |" in done.stdout, done.stdout
    assert cpu["monit"]["summary"]["lost"] == 0 and cpu["monit_http1"]["summary"]["lost"] == 0
    logs = tmp_path / "logs"
    assert "monit listening on ssl:" in (logs / "idle-memory-monit.log").read_text()
    assert "monit listening on tcp:" in (logs / "idle-memory-monit_http1.log").read_text()


def test_soak_smoke_run_measures_the_control_stream_through_every_attack(tmp_path):
    done = smoke_run(SOAK, "--smoke", results=tmp_path)
    report = json.loads((tmp_path / "soak.json").read_text())
    summary = report["summary"]
    for key in (
        "control_delivered_baseline",
        "control_delivered_attack",
        "control_p99_baseline_ms",
        "control_p99_attack_ms",
        "rss_start_mb",
        "rss_max_mb",
        "rss_slope_attack_mb_per_min",
    ):
        assert isinstance(summary[key], (int, float)) and math.isfinite(summary[key]), (key, summary[key])
    attack = report["attack"]
    assert all(sent > 0 for sent in attack["poison"].values()), attack["poison"]
    assert attack["oversized"] > 0 and attack["flood"] > 0
    assert attack["slowloris"]["opened"] > 0 and attack["churn"]["started"] > 0
    assert summary["monit"]["malformed_during_attack"] > 0  # the poison reached monit
    assert {sample["phase"] for sample in report["samples"]} >= {"baseline", "attack"}
    assert "| control p99 (ms) |" in done.stdout


def load_run():
    spec = importlib.util.spec_from_file_location("benchmark_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_levels_past_the_open_file_limit_are_measured_at_the_most_it_holds_and_readers_skipped():
    run = load_run()
    most = 20_000 - run.FD_SPARE
    params, notes = run.fit_to_fd_limit({"streams": [1000, 10_000, 100_000], "readers": [100, 50_000]}, 20_000)
    assert params["streams"] == [1000, 10_000, most]
    assert params["readers"] == [100]
    assert notes == [
        "readers=50000 skipped: open-file limit 20000 < 50256",
        f"streams=100000 measured at {most}: the open-file limit is 20000",
    ]
