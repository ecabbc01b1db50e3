"""A real redis-server child process on a free loopback port, and redis-cli to talk to it."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time

from natsserver import free_port, wait_for_port


def redis_binary(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"{name} not found: `make redis` installs Debian's redis-server")
    return binary


class RedisServer:
    """Start, stop and restart (on the same port) a redis-server that keeps nothing on disk."""

    def __init__(self, folder: str, password: str | None = None) -> None:
        self.port = free_port()
        self.folder = folder
        self.password = password
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        secret = f":{self.password}@" if self.password else ""
        return f"redis://{secret}127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait, with a deadline, until it answers PING."""
        password = ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(
            [redis_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.folder, *password],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.cli("PING") == "PONG":
                    return
            except subprocess.CalledProcessError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise TimeoutError(f"redis-server on port {self.port} did not answer PING within {timeout}s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot end
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
            wait_for_port(self.port, up=False)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and new ones are queued, but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def cli(self, *args: str | bytes, db: int = 0) -> str:
        """One command with redis-cli (an independent client); its reply as text."""
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        result = subprocess.run(
            [redis_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(self.port), "-n", str(db), *auth, *args],
            capture_output=True, check=True, timeout=10,
        )
        reply = result.stdout.decode("utf-8", "replace").strip()
        if "Could not connect" in reply or reply.startswith(("ERR", "NOAUTH", "WRONGPASS")):
            raise subprocess.CalledProcessError(1, "redis-cli", reply)
        return reply

    def calls(self, command: str) -> int:
        """How many times ``command`` ran since the server started (INFO commandstats)."""
        for line in self.cli("INFO", "commandstats").splitlines():
            if line.startswith(f"cmdstat_{command.lower()}:"):
                return int(line.split("calls=", 1)[1].split(",", 1)[0])
        return 0
