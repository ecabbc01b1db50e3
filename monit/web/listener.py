"""Where monit listens: the endpoint given, else the one NATS names, else tcp:8080."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from monit.oneshot import OneShotObserver
from monit.web.site import HTTP2_OFF, MonitSite

DEFAULT_LISTEN = "tcp:8080"
LISTEN_SUBJECT = "config.get.monitor"
SHUTDOWN_DRAIN_SECONDS = 3.0
BACKLOG = 4096


class _Requester(Protocol):
    def request(self, subject: str, payload: bytes, timeout: float | None = None) -> Deferred[Any]: ...


def endpoint_from_nats(nats: _Requester, timeout: float) -> Callable[[], Deferred[str]]:
    """The seed's way: NATS ``config.get.monitor`` replies ``{"host": …, "port": …}``."""

    def ask() -> Deferred[str]:
        asked = nats.request(LISTEN_SUBJECT, b"", timeout=timeout)
        return asked.addCallback(lambda msg: _endpoint_from_reply(msg.payload))

    return ask


def _endpoint_from_reply(payload: bytes) -> str:
    config = json.loads(payload)
    host, port = str(config.get("host") or ""), int(config["port"])
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    if host:
        return f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"
    return f"tcp:{port}"


def with_backlog(description: str) -> str:
    """A TCP or TLS endpoint with a listen backlog for thousands of clients connecting at once.

    Twisted's default of 50 overflows when a few thousand readers reconnect
    together; an operator's own ``backlog=`` is kept.
    """
    if description.split(":", 1)[0] in ("tcp", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={BACKLOG}"
    return description


class WebListener(Service):
    """Listens with the site on the endpoint given, or asks for one (falling back to tcp:8080)."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        site: MonitSite,
        listen: str | None,
        ask: Callable[[], Deferred[str]],
        on_fatal: Callable[[str], None],
    ) -> None:
        self._reactor = reactor
        self._listen_at = listen
        self._ask = ask
        self._on_fatal = on_fatal
        self._port: IListeningPort | None = None
        self._listening: OneShotObserver[IListeningPort] = OneShotObserver()
        self.site = site

    @property
    def listening(self) -> bool:
        return self._port is not None

    def when_listening(self) -> Deferred[IListeningPort]:
        """A fresh Deferred that fires with the listening port."""
        return self._listening.when_fired()

    def startService(self) -> None:
        super().startService()
        described: Deferred[str] = maybeDeferred(self._endpoint_description)
        described.addCallback(self._listen).addErrback(self._failed)

    def stop_listening(self) -> Deferred[None]:
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        stopped = port.stopListening()
        return stopped if isinstance(stopped, Deferred) else succeed(None)

    def close_connections(self) -> Deferred[None]:
        return self.site.close_connections(self._reactor, SHUTDOWN_DRAIN_SECONDS)

    def _endpoint_description(self) -> Deferred[str]:
        if self._listen_at is not None:
            return succeed(self._listen_at)
        return self._ask().addErrback(self._fallback)

    def _fallback(self, failure: Failure) -> str:
        self.log.info(
            "no listen address from NATS {subject} ({why}); using {listen}",
            subject=LISTEN_SUBJECT,
            why=failure.getErrorMessage() or failure.type.__name__,  # type: ignore[union-attr]
            listen=DEFAULT_LISTEN,
        )
        return DEFAULT_LISTEN

    def _listen(self, description: str) -> Deferred[IListeningPort]:
        endpoint = serverFromString(self._reactor, with_backlog(description))
        if HTTP2_OFF is not None and description.startswith("ssl:"):
            self.log.warn("HTTP/2 is off, TLS serves HTTP/1.1 only: {why}", why=HTTP2_OFF)
        listening: Deferred[IListeningPort] = endpoint.listen(self.site)
        return listening.addCallback(self._listened, description)

    def _listened(self, port: IListeningPort, description: str) -> IListeningPort:
        if not self.running:
            port.stopListening()
            return port
        self._port = port
        self.log.info("monit listening on {listen}", listen=description)
        self._listening.fire(port)
        return port

    def _failed(self, failure: Failure) -> None:
        self._on_fatal(f"monit: cannot listen: {failure.getErrorMessage()}")
