"""The benchmark suite runs end to end in --smoke mode and writes its results.

It checks that every scenario produced numbers for monit and the reference,
not what the numbers are: performance is measured, never asserted in tests.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"
pytestmark = pytest.mark.integration  # node, nats-server, twistd
SCENARIOS = ("fanout", "many-streams", "idle-memory", "ingest", "cpu-per-delivery", "flood-fanout")

def numbers(summary: dict) -> list[float]:
    return [v for v in summary.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def test_smoke_run_writes_results_for_every_scenario(tmp_path):
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--results", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["smoke"] is True
    assert results["machine"]["cores"] >= 1
    assert results["machine"]["node"].startswith("v")
    assert set(results["scenarios"]) == set(SCENARIOS)
    for name, scenario in results["scenarios"].items():
        for target in ("monit", "reference"):
            assert "error" not in scenario[target], (name, target, scenario[target])
            values = numbers(scenario[target]["summary"])
            assert values, (name, target, scenario[target]["summary"])
            assert all(math.isfinite(v) for v in values), (name, target)
            assert isinstance(scenario[target]["invalid"], list)
        assert set(scenario["ratios"]) == set(scenario["monit"]["summary"])
    assert list(tmp_path.glob("*.png")), "no plots written"
