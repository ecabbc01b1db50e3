"""benchmarks/replay.py --checkpoint runs end to end on a small stream and says what it measured.

Only that the figures are there and the histories were compared: speed is
measured, never asserted in tests.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration  # nats-server, twistd


def test_the_checkpoint_benchmark_compares_a_checkpointed_start_and_a_whole_replay_with_the_peer():
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "replay.py"),
            "--checkpoint",
            "--messages",
            "3000",
            "--per-job",
            "100",
        ],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["horizon"] == 3001
    assert result["checkpointed"]["replayed_from"] == 3001 and result["whole"]["replayed_from"] == 1
    for start in ("checkpointed", "whole"):
        assert result[start]["histories_match_peer"] is True
        assert result[start]["seconds_to_ready"] > 0
