"""Child processes for the tests: twistd, curl, examples; read with deadlines."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from weakref import WeakKeyDictionary

from natsserver import free_port

# What read_until read past its marker, kept for the process's next read.
_unread: WeakKeyDictionary[subprocess.Popen[bytes], bytes] = WeakKeyDictionary()


def script(name: str) -> str:
    """A console script installed beside this Python (twistd, monit-token)."""
    return os.path.join(sysconfig.get_path("scripts"), name)


def twistd_monit(
    cwd: str | os.PathLike[str], *args: str, stdout: int | None = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """``twistd -n monit ARGS`` in the foreground, as an operator starts it; its log on ``stdout`` (a pipe
    for ``read_until``, by default)."""
    return subprocess.Popen(
        [script("twistd"), "-n", "--pidfile=", "monit", *args], cwd=cwd, stdout=stdout, stderr=subprocess.STDOUT
    )


def serving_monit(
    cwd: str | os.PathLike[str], nats_url: str, *args: str, stdout: int | None = subprocess.PIPE
) -> tuple[str, subprocess.Popen[bytes]]:
    """``twistd monit`` with this NATS on a free loopback port: its base URL, and the process, not yet ready."""
    port = free_port()
    listen = ("--nats", nats_url, "--listen", f"tcp:{port}:interface=127.0.0.1")
    return f"http://127.0.0.1:{port}", twistd_monit(cwd, *listen, *args, stdout=stdout)


def run_twistd_monit(cwd: str | os.PathLike[str], *args: str) -> subprocess.CompletedProcess[str]:
    """``twistd -n monit ARGS`` run to its end (a start-up that must fail): its status, stdout and stderr."""
    return subprocess.run(
        [script("twistd"), "-n", "--pidfile=", "monit", *args], cwd=cwd, capture_output=True, text=True, timeout=30
    )


def curl_stream(url: str, token: str | None = None, *options: str) -> subprocess.Popen[bytes]:
    """``curl -N`` reading an SSE stream, as a user would, its output on a pipe."""
    auth = ["-H", f"X-Auth-Token: {token}"] if token else []
    return subprocess.Popen(["curl", "-sN", "--max-time", "60", *options, *auth, url], stdout=subprocess.PIPE)


def read_until(process: subprocess.Popen[bytes], marker: bytes, timeout: float = 10.0) -> bytes:
    """Read the process's stdout up to and including the next ``marker``, or fail at the deadline.

    Bytes read past the marker are kept for the next call, so two markers that
    arrive in one read are both found.
    """
    seen = _unread.get(process, b"")
    deadline = time.monotonic() + timeout
    assert process.stdout is not None, "started with stdout=PIPE"
    fd = process.stdout.fileno()
    while marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{marker!r} not seen within {timeout}s; got {seen[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"stdout closed before {marker!r}; got {seen[-2000:]!r}")
            seen += chunk
    end = seen.index(marker) + len(marker)
    _unread[process] = seen[end:]
    return seen[:end]


def unread(process: subprocess.Popen[bytes]) -> bytes:
    """What read_until read past its last marker: the start of what the process wrote next."""
    return _unread.get(process, b"")


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    if process.poll() is None:
        process.terminate()
    return process.wait(timeout=timeout)


def wait_until_ready(base_url: str, timeout: float = 20.0) -> None:
    """Wait until monit's /readyz says 200: NATS connected (and subscribed) and listening."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base_url} not ready within {timeout}s")
        time.sleep(0.02)


def executable(path: Path, script: str) -> str:
    """A shell script written at ``path`` and made executable: a stand-in for a program."""
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)
