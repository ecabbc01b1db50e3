"""How fast ``--jetstream`` replays a stream at start, and how long until /readyz says ready.

    python benchmarks/replay.py                       # 1,000,000 messages over 1,000 jobs
    python benchmarks/replay.py --messages 100000     # a shorter run

A nats-server with JetStream (in a temporary folder) gets a stream made by a
first monit, then N ``monitor.user`` messages of about 200 bytes, published
with nats-py while no monit runs. Then a fresh ``twistd monit --jetstream``
starts, and the clock runs from its start until ``/readyz`` answers 200: the
replay has reached the stream's last sequence. Prints a JSON line with the
figures (``replayed_per_s`` is the goal's, at least 50,000).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nats

from run import SCRIPTS, SECRET, Processes, free_port, pinning, wait_for_port

PAD = "x" * 120


def ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_monit(procs: Processes, nats_url: str, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    argv = [str(SCRIPTS / "twistd"), "-n", "--pidfile=", "monit", "--jetstream", "--nats", nats_url,
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--jwt-secret", SECRET]
    proc = procs.start(argv, core="server_core", stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(base_url: str, proc: subprocess.Popen, timeout: float) -> float:
    started = time.monotonic()
    while not ready(base_url):
        if proc.poll() is not None:
            raise RuntimeError("monit exited during the replay")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not ready within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


async def publish(nats_url: str, messages: int, jobs: int) -> float:
    client = await nats.connect(nats_url)
    started = time.monotonic()
    for n in range(messages):
        job = f"job{n % jobs}"
        body = {"id": job, "messages": [{"n": n, "pad": PAD}]}
        await client.publish("monitor.user", json.dumps(body, separators=(",", ":")).encode())
        if n % 10_000 == 0:
            await client.flush()
    await client.flush()
    elapsed = time.monotonic() - started
    await client.close()
    return elapsed


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    procs = Processes(pinning())
    store = tempfile.mkdtemp(prefix="monit-replay-")
    logs = Path(store) / "logs"
    logs.mkdir()
    try:
        nats_port = free_port()
        nats_proc = procs.start([str(SCRIPTS / "nats-server"), "-a", "127.0.0.1", "-p", str(nats_port), "-js",
                                 "-sd", store], core="nats_core", stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for_port(nats_port, nats_proc, "nats-server")
        url = f"nats://127.0.0.1:{nats_port}"
        with open(logs / "first.log", "wb") as log:
            first, base_url = start_monit(procs, url, log)
            wait_ready(base_url, first, 60)  # the stream is made
            procs.stop(first)
        publish_s = asyncio.run(publish(url, args.messages, args.jobs))
        with open(logs / "replay.log", "wb") as log:
            monit, base_url = start_monit(procs, url, log)
            to_ready = wait_ready(base_url, monit, 3600)
            rss = rss_mb(monit.pid)
            procs.stop(monit)
        result = {
            "messages": args.messages,
            "jobs": args.jobs,
            "published_per_s": round(args.messages / publish_s),
            "seconds_to_ready": round(to_ready, 2),
            "replayed_per_s": round(args.messages / to_ready),
            "rss_mb_when_ready": round(rss, 1),
        }
        print(json.dumps(result))
        return 0
    finally:
        procs.stop_all()
        subprocess.run(["rm", "-rf", store], check=False)


if __name__ == "__main__":
    sys.exit(main())
