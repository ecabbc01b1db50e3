"""``twistd monit --jetstream`` instances as child processes, for the cluster and chaos tests."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from natsserver import steady_port
from processes import curl_stream, script, wait_until_ready
from publisher import Publisher

SECRET = "jetstream-cluster-secret-of-a-good-length-0123"


def jetstream_ready(url: str, timeout: float = 30.0) -> None:
    """Wait until the cluster's JetStream has a meta leader and answers."""
    publisher = Publisher(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if "error" not in json.loads(publisher.request("$JS.API.INFO", b"", timeout=2.0)):
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("JetStream did not come up")
            time.sleep(0.1)
    finally:
        publisher.close()


class MonitInstance:
    """``twistd monit --jetstream`` on a port of its own, which it keeps when started again.

    Its output goes to one log file, every start of it after the last, each
    marked, so a failure can be read in order.
    """

    def __init__(self, tmp_path: Path, nats_urls: list[str], *options: str) -> None:
        self.port = steady_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"monit-{self.port}.log"
        self.cwd = tmp_path
        self.command = [
            script("twistd"),
            "-n",
            "--pidfile=",
            "monit",
            "--jetstream",
            "--jetstream-replicas",
            "3",
            "--nats",
            ",".join(nats_urls),
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--jwt-secret",
            SECRET,
            "--grace",
            "0.5",
            "--nats-ping-interval",
            "0.5",
            *options,
        ]
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, wait: bool = True) -> MonitInstance:
        """Start it; with ``wait``, return once its /readyz says 200."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} of monit on port {self.port}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            wait_until_ready(self.base_url, timeout=60)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the instance is lost, as a crashed machine is."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL if that has not ended it within ten seconds); the exit status of a stop."""
        process = self.process
        if process is None or process.poll() is not None:
            return None
        process.terminate()
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            return None

    def log_tail(self, size: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-size:]

    def read(self, stream: str, token: str, last_event_id: str | None = None) -> subprocess.Popen:
        """``curl -N`` on one job's events, resuming after ``last_event_id`` if given."""
        headers = ["-H", f"Last-Event-ID: {last_event_id}"] if last_event_id else []
        return curl_stream(f"{self.base_url}/events?stream={stream}", token, *headers)
