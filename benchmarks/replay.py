"""How fast ``--jetstream`` replays a stream at start, and how long until /readyz says ready.

    python benchmarks/replay.py                       # 1,000,000 messages over 1,000 jobs
    python benchmarks/replay.py --messages 100000     # a shorter run
    python benchmarks/replay.py --checkpoint          # 1,000,000 finished-job messages, then 10 live jobs

A nats-server with JetStream (in a temporary folder) gets a stream made by a
first monit, then N ``monitor.user`` messages of about 200 bytes, published
with nats-py while no monit runs. Then a fresh ``twistd monit --jetstream``
starts, and the clock runs from its start until ``/readyz`` answers 200: the
replay has reached the stream's last sequence. Prints a JSON line with the
figures (``replayed_per_s`` is the goal's, at least 50,000).

``--checkpoint``: a peer monit runs throughout (``--grace 1 --retention 5``)
while N messages of finished jobs (an open, events, a close, 1,000 messages
a job) are published, then 10 live jobs (an open and 50 events each). Once
the peer has dropped the finished jobs and holds the live ones, a new
instance starts from the peer's checkpoint and is timed to ``/readyz`` 200;
then the checkpoint bucket is deleted and one more instance replays the
whole stream, for comparison. Each live job's history (ids and data) is read
from every instance and compared with the peer's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nats
from run import SCRIPTS, SECRET, Processes, free_port, pinning, wait_for_port

from monit.checkpoint import Checkpoint, bucket_for
from monit.service import feed_options
from monit.settings import Settings
from monit.token import mint

PAD = "x" * 120


def ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


PEER_TIMERS = ("--grace", "1", "--retention", "5")  # finished jobs are dropped soon: the checkpoint moves past them
LIVE_JOBS, LIVE_MESSAGES, EVENTS_PER_MESSAGE = 10, 10, 5  # 10 live jobs of an open and 50 events


def start_monit(procs: Processes, nats_url: str, log, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    argv = [
        str(SCRIPTS / "twistd"),
        "-n",
        "--pidfile=",
        "monit",
        "--jetstream",
        "--nats",
        nats_url,
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--jwt-secret",
        SECRET,
        *extra,
    ]
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


async def publish_jobs(nats_url: str, messages: int, per_job: int) -> float:
    """Finished jobs: each an open, ``per_job - 2`` messages of one event, a close."""
    client = await nats.connect(nats_url)
    started = time.monotonic()
    for n in range(messages):
        job, place = f"done{n // per_job}", n % per_job
        if place == 0:
            subject, body = "service.create", {"id": job}
        elif place == per_job - 1 or n == messages - 1:
            subject, body = "service.create.done", {"id": job}
        else:
            subject, body = "monitor.user", {"id": job, "messages": [{"n": n, "pad": PAD}]}
        await client.publish(subject, json.dumps(body, separators=(",", ":")).encode())
        if n % 10_000 == 0:
            await client.flush()
    await client.flush()
    elapsed = time.monotonic() - started
    await client.close()
    return elapsed


async def publish_live(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    for job in range(LIVE_JOBS):
        await client.publish("service.create", json.dumps({"id": f"live{job}"}).encode())
    for n in range(LIVE_MESSAGES):
        for job in range(LIVE_JOBS):
            events = [{"n": n * EVENTS_PER_MESSAGE + k, "pad": PAD} for k in range(EVENTS_PER_MESSAGE)]
            await client.publish("monitor.user", json.dumps({"id": f"live{job}", "messages": events}).encode())
    await client.flush()
    await client.close()


async def stored_horizon(nats_url: str, stream: str, settings: Settings) -> int | None:
    client = await nats.connect(nats_url)
    try:
        bucket = bucket_for(stream)
        body = json.dumps({"last_by_subj": f"$KV.{bucket}.{feed_options(settings)['checkpoint_key']}"}).encode()
        answer = json.loads((await client.request(f"$JS.API.STREAM.MSG.GET.KV_{bucket}", body, timeout=5)).data)
        if "error" in answer:
            return None
        return Checkpoint.decode(base64.b64decode(answer["message"]["data"])).horizon
    finally:
        await client.close()


async def delete_stream(nats_url: str, stream: str) -> None:
    client = await nats.connect(nats_url)
    await client.request(f"$JS.API.STREAM.DELETE.{stream}", b"", timeout=5)
    await client.close()


def history(base_url: str, job: str, count: int, timeout: float = 60.0) -> list[tuple[str, str]]:
    """The first ``count`` events of a job's stream, as (id, data)."""
    host, port = base_url.rsplit("/", 1)[-1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    connection.request("GET", f"/events?stream={job}", headers={"X-Auth-Token": mint(SECRET, "bench", 3600)})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{base_url} answered {response.status} for {job}")
    events: list[tuple[str, str]] = []
    event_id, data = None, None
    while len(events) < count:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data is not None:
            events.append((event_id or "", data))
            event_id, data = None, None
    connection.close()
    return events


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def replayed_from(log_path: Path) -> int:
    """Where the instance's replay began, from its log."""
    found = re.search(r"replaying JetStream stream \S+ from sequence (\d+)", log_path.read_text(errors="replace"))
    return int(found.group(1)) if found else 0


def checkpoint_run(args: argparse.Namespace, procs: Processes, url: str, logs: Path) -> dict:
    stream = "MONIT"
    settings = Settings(grace=1.0, retention=5.0)
    events = 1 + LIVE_MESSAGES * EVENTS_PER_MESSAGE
    with open(logs / "peer.log", "wb") as peer_log:
        peer, peer_url = start_monit(procs, url, peer_log, *PEER_TIMERS)
        wait_ready(peer_url, peer, 60)
        publish_s = asyncio.run(publish_jobs(url, args.messages, args.per_job))
        asyncio.run(publish_live(url))
        first_live = args.messages + 1
        wait_until(
            lambda: asyncio.run(stored_horizon(url, stream, settings)) == first_live,
            600,
            "the peer's checkpoint at the first live job",
        )
        peer_histories = {f"live{job}": history(peer_url, f"live{job}", events) for job in range(LIVE_JOBS)}
        result: dict = {
            "finished_job_messages": args.messages,
            "live_jobs": LIVE_JOBS,
            "events_per_live_job": events,
            "published_per_s": round(args.messages / publish_s),
            "horizon": first_live,
        }
        for name, prepare in (("checkpointed", None), ("whole", "delete the bucket")):
            if prepare:
                asyncio.run(delete_stream(url, f"KV_{bucket_for(stream)}"))
            log_path = logs / f"{name}.log"
            with open(log_path, "wb") as log:
                monit, base_url = start_monit(procs, url, log, *PEER_TIMERS)
                to_ready = wait_ready(base_url, monit, 3600)
                rss = rss_mb(monit.pid)
                same = all(history(base_url, job, events) == peer_histories[job] for job in peer_histories)
                procs.stop(monit)
            result[name] = {
                "seconds_to_ready": round(to_ready, 2),
                "replayed_from": replayed_from(log_path),
                "histories_match_peer": same,
                "rss_mb_when_ready": round(rss, 1),
            }
        procs.stop(peer)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument(
        "--checkpoint",
        action="store_true",
        help="finished jobs, then live ones: a start from the peers' checkpoint against a whole replay",
    )
    parser.add_argument("--per-job", type=int, default=1000, help="with --checkpoint: messages a finished job has")
    args = parser.parse_args()
    procs = Processes(pinning())
    store = tempfile.mkdtemp(prefix="monit-replay-")
    logs = Path(store) / "logs"
    logs.mkdir()
    try:
        nats_port = free_port()
        nats_proc = procs.start(
            [str(SCRIPTS / "nats-server"), "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", store],
            core="nats_core",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(nats_port, nats_proc, "nats-server")
        url = f"nats://127.0.0.1:{nats_port}"
        if args.checkpoint:
            print(json.dumps(checkpoint_run(args, procs, url, logs)))
            return 0
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
