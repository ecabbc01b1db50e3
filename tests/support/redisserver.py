"""A real redis-server child process on a free loopback port, and redis-cli to talk to it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Sequence

import attrs

from natsserver import free_port, wait_for_port


def redis_binary(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"{name} not found: `make redis` installs Debian's redis-server")
    return binary


@attrs.frozen
class ServerTLS:
    """The files a redis-server needs for ``--tls-port``: its certificate, its key, and the CA of both."""

    cert: str
    key: str
    ca: str


@attrs.frozen
class User:
    """An ACL user (Redis 6+): a name, a password, and what it may do (``~sess-* +get``…)."""

    name: str
    password: str
    rules: Sequence[str] = ("~*", "+@all")


class RedisServer:
    """Start, stop, pause and restart (on the same port) a redis-server that keeps nothing on disk.

    ``password`` is the default user's (``requirepass``); ``users`` are ACL
    users of their own; with ``tls`` it listens with TLS only and takes no
    client certificate (as managed Redis services do).
    """

    def __init__(
        self,
        folder: str,
        password: str | None = None,
        users: Sequence[User] = (),
        tls: ServerTLS | None = None,
    ) -> None:
        self.port = free_port()
        self.folder = folder
        self.password = password
        self.users = users
        self.tls = tls
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0, user: User | None = None) -> str:
        """The URL monit is given: the default user's password, or ``user``'s name and password."""
        if user is not None:
            secret = f"{user.name}:{user.password}@"
        else:
            secret = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{secret}127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait, with a deadline, until it answers PING."""
        password = ["--requirepass", self.password] if self.password else []
        users = [arg for user in self.users for arg in ("--user", user.name, "on", f">{user.password}", *user.rules)]
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                self.tls.cert,
                "--tls-key-file",
                self.tls.key,
                "--tls-ca-cert-file",
                self.tls.ca,
                "--tls-auth-clients",
                "no",
            ]
        self.process = subprocess.Popen(
            [
                redis_binary("redis-server"),
                *listen,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.folder,
                "--enable-debug-command",
                "local",
                *password,
                *users,
            ],
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

    def debug_sleep(self, seconds: float) -> subprocess.Popen:
        """``DEBUG SLEEP``: Redis answers nobody for that long. The redis-cli that asked, still waiting."""
        return subprocess.Popen(
            [*self._cli(), "DEBUG", "SLEEP", f"{seconds:g}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def cli(self, *args: str | bytes, db: int = 0) -> str:
        """One command with redis-cli (an independent client); its reply as text."""
        result = subprocess.run([*self._cli(db), *args], capture_output=True, check=True, timeout=10)
        reply = result.stdout.decode("utf-8", "replace").strip()
        if "Could not connect" in reply or reply.startswith(("ERR", "NOAUTH", "WRONGPASS")):
            raise subprocess.CalledProcessError(1, "redis-cli", reply)
        return reply

    def _cli(self, db: int = 0) -> list[str]:
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        tls = ["--tls", "--cacert", self.tls.ca] if self.tls is not None else []
        return [redis_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(self.port), "-n", str(db), *tls, *auth]

    def calls(self, command: str) -> int:
        """How many times ``command`` ran since the server started (INFO commandstats)."""
        for line in self.cli("INFO", "commandstats").splitlines():
            if line.startswith(f"cmdstat_{command.lower()}:"):
                return int(line.split("calls=", 1)[1].split(",", 1)[0])
        return 0
