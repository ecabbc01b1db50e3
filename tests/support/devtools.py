"""Headless Chromium driven over its DevTools pipe, for reading what a page shows.

``--remote-debugging-pipe`` makes Chromium read DevTools commands on fd 3 and
answer on fd 4, as NUL-terminated JSON: no websocket and no library needed.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
]


def chromium_binary() -> str:
    """Debian's Chromium, which `make test` installs when it is missing."""
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    assert os.access(binary, os.X_OK), "chromium is missing: run `make test`, which installs it"
    return binary


class Browser:
    """One headless Chromium showing one URL; ``evaluate`` runs an expression in that page.

    ``flags`` are Chromium's own, added to ours (``--ignore-certificate-errors``, ``--disable-http2``).
    """

    def __init__(self, url: str, *flags: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="monit-devtools-")
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        argv = " ".join([chromium_binary(), *FLAGS, *flags, f"--user-data-dir={self.profile}", f"'{url}'"])
        self.log_path = os.path.join(self.profile, "chromium.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", f"exec {argv} 3<&{commands_read} 4>&{answers_write}"],
                pass_fds=(commands_read, answers_write),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        os.close(commands_read)
        os.close(answers_write)
        self._next_id = 0
        self._unread = b""
        self._session = self._attach()

    def _attach(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pages = [t for t in self._call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
            if pages:
                attached = self._call("Target.attachToTarget", targetId=pages[0]["targetId"], flatten=True)
                return str(attached["sessionId"])
            time.sleep(0.05)
        raise TimeoutError("Chromium showed no page")

    def _call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return dict(answer["result"])

    def _read(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._unread:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._answers], [], [], remaining)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise EOFError(f"Chromium went away: {self.log_tail()}")
            self._unread += chunk
        message, _, self._unread = self._unread.partition(b"\0")
        return dict(json.loads(message))

    def log_tail(self, size: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as log:
                return log.read()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self._call("Runtime.evaluate", self._session, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot(self, path: str | os.PathLike[str]) -> None:
        """Save what the page shows now as a PNG."""
        shot = self._call("Page.captureScreenshot", self._session, format="png")
        with open(path, "wb") as image:
            image.write(base64.b64decode(shot["data"]))

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Wait until the expression is truthy in the page; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} stayed {value!r} for {timeout}s")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.process.terminate()
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            os.close(self._commands)
            os.close(self._answers)
            shutil.rmtree(self.profile, ignore_errors=True)
