"""``twistd monit`` listening with TLS (``ssl:``) on a certificate of a test CA, and clients that trust it."""

from __future__ import annotations

import select
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings

from monit.token import mint

from natsserver import free_port
from pki import CA
from processes import script

SECRET = "tls-monit-secret-of-a-good-length-0123456789"


class TLSMonit:
    """monit as a child process on ``ssl:PORT`` with a certificate for 127.0.0.1 and localhost."""

    def __init__(self, folder: Path, nats_url: str, *options: str) -> None:
        ca = CA(folder)
        cert, key = ca.issue("monit-web", server=True)
        self.ca = ca.path
        self.port = free_port()
        self.base = f"https://127.0.0.1:{self.port}"
        listen = f"ssl:{self.port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        self.log = folder / "monit.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    script("twistd"),
                    "-n",
                    "--pidfile=",
                    "monit",
                    "--nats",
                    nats_url,
                    "--listen",
                    listen,
                    "--jwt-secret",
                    SECRET,
                    *options,
                ],
                cwd=folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_until_ready()

    def context(self, *protocols: str) -> ssl.SSLContext:
        """A client TLS context that trusts the test CA and offers these protocols by ALPN."""
        context = ssl.create_default_context(cafile=self.ca)
        if protocols:
            context.set_alpn_protocols(list(protocols))
        return context

    def token(self, user: str = "tess") -> str:
        return mint(SECRET, user, 600)

    def wait_until_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=1, context=self.context()) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"monit not ready within {timeout}s: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=timeout)


class RawH2:
    """An HTTP/2 client that does only what it is told: it never acknowledges data unless asked.

    ``settings`` are the client's own from its first SETTINGS frame on (``INITIAL_WINDOW_SIZE: 0``
    makes a reader that takes nothing); ``validate=False`` sends headers as given, however
    malformed; ``receive_buffer`` shrinks the socket's receive buffer, so a client that does
    not read fills it soon.
    """

    def __init__(
        self,
        monit: TLSMonit,
        settings: dict[h2.settings.SettingCodes, int] | None = None,
        validate: bool = True,
        receive_buffer: int | None = None,
    ) -> None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", monit.port))
        self.socket = monit.context("h2").wrap_socket(raw, server_hostname="localhost")
        assert self.socket.selected_alpn_protocol() == "h2"
        self.connection = h2.connection.H2Connection(
            h2.config.H2Configuration(
                header_encoding=None,
                validate_outbound_headers=validate,
                normalize_outbound_headers=validate,
            )
        )
        if settings:
            self.connection.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.connection.initiate_connection()
        self.flush()
        self.events: list[h2.events.Event] = []
        self.closed = False

    def flush(self) -> None:
        self.socket.sendall(self.connection.data_to_send())

    def send_raw(self, data: bytes) -> None:
        """Bytes past the client's own state machine: frames it would never send."""
        self.socket.sendall(data)

    def get(self, path: str, token: str) -> int:
        """Open a GET stream; its id."""
        return self.request(b"GET", path, [(b"x-auth-token", token.encode())])

    def request(self, method: bytes, path: str, headers: list[tuple[bytes, bytes]], end_stream: bool = True) -> int:
        """Send a request's headers (and END_STREAM, unless a body is to follow); its stream id."""
        pseudo = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
        ]
        return self.send_head(pseudo + headers, end_stream)

    def send_head(self, headers: list[tuple[bytes, bytes]], end_stream: bool = True) -> int:
        """Send these headers, as they are, on a new stream; its id."""
        stream_id: int = self.connection.get_next_available_stream_id()
        self.connection.send_headers(stream_id, headers, end_stream=end_stream)
        self.flush()
        return stream_id

    def ignore_stream_limit(self) -> None:
        """Open streams past the server's MAX_CONCURRENT_STREAMS, as a hostile client would."""
        limit = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
        self.connection.remote_settings[limit] = 2**31 - 1
        self.connection.remote_settings.acknowledge()

    def ping(self) -> None:
        """A PING, unless the connection is over (h2 refuses to send one after GOAWAY)."""
        if self.closed or self.goaway is not None:
            return
        self.connection.ping(b"\0" * 8)
        try:
            self.flush()
        except OSError:
            self.closed = True

    @property
    def goaway(self) -> h2.events.ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)), None)

    def reset_code(self, stream_id: int) -> int | None:
        """The error code the stream was reset with, or None."""
        resets = (e for e in self.events if isinstance(e, h2.events.StreamReset) and e.stream_id == stream_id)
        return next((e.error_code for e in resets), None)

    def responded(self, stream_id: int) -> bool:
        return any(isinstance(e, h2.events.ResponseReceived) and e.stream_id == stream_id for e in self.events)

    def ended(self, stream_id: int) -> Callable[[list[h2.events.Event]], bool]:
        """A condition for read_until: the stream has ended or was reset."""
        return lambda events: any(
            isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == stream_id for e in events
        )

    def status(self, stream_id: int) -> int:
        response = next(
            e for e in self.events if isinstance(e, h2.events.ResponseReceived) and e.stream_id == stream_id
        )
        return int(dict(response.headers)[b":status"])

    def read_until(self, condition: Callable[[list[h2.events.Event]], bool], timeout: float = 15.0) -> None:
        """Read frames (acknowledging none) until ``condition(self.events)`` or the connection ends."""
        deadline = time.monotonic() + timeout
        while not condition(self.events):
            if self.closed:
                raise EOFError(f"connection closed; events: {self.events[-10:]}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"not seen within {timeout}s; events: {self.events[-10:]}")
            self.socket.settimeout(remaining)
            try:
                data = self.socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # reset, or TLS cut short
                data = b""
            self.receive(data)

    def read_available(self) -> None:
        """Read whatever has come, without waiting."""
        self.socket.settimeout(0)
        try:
            while not self.closed:
                try:
                    data = self.socket.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    return
                except OSError:
                    data = b""
                self.receive(data)
        finally:
            self.socket.settimeout(10)

    def receive(self, data: bytes) -> None:
        """Take in bytes read (none: the connection is over) and send what h2 answers (PING and SETTINGS acks)."""
        if not data:
            self.closed = True
            return
        self.events.extend(self.connection.receive_data(data))
        try:
            self.flush()
        except OSError:
            self.closed = True

    def body(self, stream_id: int) -> bytes:
        return b"".join(
            e.data for e in self.events if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id
        )

    def close(self) -> None:
        self.socket.close()


def read_all_until(
    clients: list[RawH2],
    condition: Callable[[], bool],
    timeout: float = 15.0,
    every: float = 0.0,
    tick: Callable[[], object] | None = None,
) -> None:
    """Read from all these clients at once until ``condition()``; ``tick()`` every ``every`` seconds meanwhile.

    Clients whose connection has ended are read no more, but the condition is still waited for
    (what the kernel says of their sockets may change later).
    """
    deadline = time.monotonic() + timeout
    next_tick = time.monotonic() + every
    while not condition():
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"not seen within {timeout}s")
        if tick is not None and now >= next_tick:
            tick()
            next_tick = now + every
        live = [client for client in clients if not client.closed]
        readable, _, _ = select.select([client.socket for client in live], [], [], 0.05)
        for client in live:
            if client.socket in readable or client.socket.pending():
                client.read_available()
