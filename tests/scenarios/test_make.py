"""The first steps (README.md, docs/tutorial/first-steps.md), as a new user takes them: make run, the curl line it prints, make demo."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from natsserver import free_port
from processes import read_until, stop, wait_until_ready

pytestmark = pytest.mark.integration  # make, twistd, an embedded nats-server, curl
ROOT = Path(__file__).resolve().parents[2]


def make(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **kwargs,
    )


def test_make_run_prints_a_curl_line_for_its_port_and_make_demo_plays_a_job():
    http, nats = free_port(), free_port()
    run = make("run", f"LISTEN=tcp:{http}:interface=127.0.0.1", f"NATS_PORT={nats}")
    try:
        said = read_until(run, b"make demo NATS_PORT=%d\n" % nats, timeout=120).decode()
        curl_line = next(line.strip() for line in said.splitlines() if line.strip().startswith("curl"))
        assert f"http://127.0.0.1:{http}/events?stream=demo1" in curl_line
        assert f"http://127.0.0.1:{http}/watch?stream=demo1#token=ey" in said
        assert said.index("watch a job") < said.index("make demo"), "in the first steps' order"
        wait_until_ready(f"http://127.0.0.1:{http}", timeout=30)
        curl = subprocess.Popen(
            ["sh", "-c", curl_line.replace("curl -N", "curl -sN --max-time 60")], stdout=subprocess.PIPE
        )
        read_until(curl, b"retry: 3000")
        demo = make("demo", f"NATS_PORT={nats}")
        assert demo.wait(timeout=60) == 0
        read_until(curl, b"event: service.create.done")
        stop(curl)
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(timeout=30)


def test_make_demo_without_nats_fails_fast_and_says_why():
    demo = make("demo", f"NATS_PORT={free_port()}")
    output = demo.communicate(timeout=60)[0].decode()
    assert demo.returncode != 0
    assert "no NATS answers at nats://127.0.0.1:" in output and "make run" in output
