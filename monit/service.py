"""monit as one Twisted service, for ``twistd monit`` and for embedding."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import IResource

from monit.auth import (
    AuthUnavailable,
    FirstValid,
    ITokenVerifier,
    JWTVerifier,
    NoAuth,
    secret_from_nats,
)
from monit.auth_cache import CachingVerifier
from monit.inbox import InboxRegistry
from monit.metrics import exposition
from monit.nats.client import NATSClient
from monit.nats.protocol import NoResponders
from monit.remote_auth import RemoteVerifier, remote_http_client, remote_pool
from monit.routing import (
    DEFAULT_MAX_PAYLOAD,
    DELIVER_SUBJECTS,
    LIFECYCLE_SUBJECTS,
    Router,
    subject_table,
)
from monit.site import MonitSite
from monit.web import MonitWeb

DEFAULT_LISTEN = "tcp:8080"
LISTEN_SUBJECT = "config.get.monitor"
SECRET_SUBJECT = "config.get.jwt_token"
SHUTDOWN_DRAIN_SECONDS = 3.0


@attrs.frozen
class Settings:
    """Everything an operator can choose; ``twistd monit --help`` documents each."""

    nats: Sequence[str] = ("nats://127.0.0.1:4222",)
    listen: str | None = None  # a Twisted endpoint string; None: ask NATS, else tcp:8080
    serve: bool = True  # False when embedding only the resource in a Site of one's own
    jwt_secret: str | None = None  # None: ask NATS for it (config.get.jwt_token)
    grace: float = 10.0
    heartbeat: float = 15.0
    history: int = 1000
    expiry: float = 300.0
    retention: float = 600.0
    retry_ms: int = 3000
    base64: bool = False
    max_payload: int = DEFAULT_MAX_PAYLOAD
    max_pending: int = 1024 * 1024
    max_streams: int = 50_000
    max_inboxes: int = 100_000
    open_subjects: Sequence[str] = LIFECYCLE_SUBJECTS  # each also closes with .done/.error
    deliver_subjects: Sequence[str] = DELIVER_SUBJECTS  # each message's "messages" are events
    request_timeout: float = 2.0
    auth_url: str | None = None  # ask this URL about tokens (with treq)
    auth_timeout: float = 2.0
    auth_cache_ttl: float = 30.0
    insecure_no_auth: bool = False  # everyone is anonymous: local use only
    allow_query_token: bool = False  # ?token= and the monit_token cookie, for EventSource
    cors_origins: frozenset[str] = frozenset()  # origins whose pages may read streams; "*": any
    metrics: bool = True  # serve /metrics
    metrics_public: bool = False  # ... without a token


class MonitService(MultiService):
    """The NATS client, the inboxes, the router and the web endpoint, as one service.

    Children start in order (NATS first, the listener last). Stopping goes:
    stop accepting, end every stream with a retry hint, close the HTTP
    connections once written, then let NATS go.
    """

    log = Logger()

    def __init__(
        self, reactor, settings: Settings, on_fatal: Callable[[str], None] | None = None
    ) -> None:
        super().__init__()
        self.settings = settings
        self.on_fatal = on_fatal or self._log_fatal
        self.nats = NATSClient(
            list(settings.nats), reactor, request_timeout=settings.request_timeout
        )
        self.nats.setServiceParent(self)
        self.registry = InboxRegistry(
            reactor,
            history=settings.history,
            grace=settings.grace,
            expiry=settings.expiry,
            retention=settings.retention,
            max_inboxes=settings.max_inboxes,
            base64=settings.base64,
        )
        self.router = Router(
            self.registry,
            subject_table(settings.open_subjects, settings.deliver_subjects),
            max_payload=settings.max_payload,
        )
        for subject in self.router.subjects:
            self.nats.subscribe(subject, self.router)
        self.jwt: JWTVerifier | None = None
        self._pool: HTTPConnectionPool | None = None
        self.verifier = CachingVerifier(
            self._verifier(reactor), reactor, ttl=settings.auth_cache_ttl
        )
        self.web = MonitWeb(
            self.registry,
            self.verifier,
            reactor,
            heartbeat=settings.heartbeat,
            retry_ms=settings.retry_ms,
            max_streams=settings.max_streams,
            max_pending=settings.max_pending,
            readiness=self.readiness,
            require_token=not settings.insecure_no_auth,
            allow_query_token=settings.allow_query_token,
            cors_origins=settings.cors_origins,
            metrics=partial(exposition, self) if settings.metrics else None,
            metrics_public=settings.metrics_public,
        )
        self.resource: IResource = self.web.resource()
        self.listener: WebListener | None = None
        if settings.serve:
            self.listener = WebListener(reactor, self, idle_timeout=settings.auth_timeout)
            self.listener.setServiceParent(self)

    def readiness(self) -> dict[str, bool]:
        checks = {"nats": self.nats.connected}
        if self.listener is not None:
            checks["listening"] = self.listener.listening
        return checks

    def _log_fatal(self, line: str) -> None:
        self.log.critical("{line}", line=line)

    def _verifier(self, reactor) -> ITokenVerifier:
        """JWTs with the given secret, and/or the auth URL; with neither, NATS's secret."""
        settings = self.settings
        if settings.insecure_no_auth:
            self.log.critical("monit runs with --insecure-no-auth: anyone may watch any stream")
            return NoAuth()
        if settings.jwt_secret:
            self.jwt = JWTVerifier.with_secret(settings.jwt_secret, reactor)
        elif settings.auth_url is None:
            fetch = secret_from_nats(self.nats, SECRET_SUBJECT, timeout=settings.request_timeout)
            self.jwt = JWTVerifier(fetch, reactor)
        if settings.auth_url is None:
            return self.jwt
        self._pool = remote_pool(reactor)
        remote = RemoteVerifier(
            remote_http_client(reactor, self._pool), settings.auth_url, reactor, settings.auth_timeout
        )
        return remote if self.jwt is None else FirstValid(self.jwt, remote)

    def startService(self) -> None:
        self.web.start()
        super().startService()
        if self.jwt is not None and not self.settings.jwt_secret:
            checked = self.nats.when_connected().addCallback(lambda _: self.jwt.secret())
            checked.addErrback(self._no_secret)

    def _no_secret(self, failure: Failure) -> None:
        """Nobody answers for the secret: a startup problem. A slow answer is not."""
        if failure.check(CancelledError):
            return
        cause = failure.value.__cause__ if failure.check(AuthUnavailable) else failure.value
        if isinstance(cause, (NoResponders, ValueError)):
            self.on_fatal(
                f"monit: no JWT secret: pass --jwt-secret, set JWT_SECRET or answer {SECRET_SUBJECT} on NATS"
            )
        else:
            self.log.warn("JWT secret not fetched yet; asking again on the first request")

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop_listening()
        self.web.shutdown()
        if self.listener is not None:
            await self.listener.close_connections()
        self.registry.close_all()
        if self._pool is not None:
            await self._pool.closeCachedConnections()
        await super().stopService()


class WebListener(Service):
    """Listens on the configured endpoint, or on the one NATS names, or on tcp:8080."""

    log = Logger()

    def __init__(self, reactor, monit: MonitService, idle_timeout: float) -> None:
        self._reactor = reactor
        self._monit = monit
        self._port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] = Deferred()
        self.site = MonitSite(monit.resource, reactor, idle_timeout)

    @property
    def listening(self) -> bool:
        return self._port is not None

    def when_listening(self) -> Deferred[IListeningPort]:
        """A fresh Deferred that fires with the listening port."""
        waiter: Deferred[IListeningPort] = Deferred()

        def relay(port: IListeningPort) -> IListeningPort:
            waiter.callback(port)
            return port

        self._listening.addCallback(relay)
        return waiter

    def startService(self) -> None:
        super().startService()
        d = maybeDeferred(self._endpoint_description)
        d.addCallback(self._listen)
        d.addErrback(self._failed)

    def stop_listening(self) -> Deferred[None]:
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)

    def close_connections(self) -> Deferred[None]:
        return self.site.close_connections(self._reactor, SHUTDOWN_DRAIN_SECONDS)

    def _endpoint_description(self) -> Deferred[str] | str:
        listen = self._monit.settings.listen
        if listen is not None:
            return listen
        return self._ask_nats()

    def _ask_nats(self) -> Deferred[str]:
        """The seed's way: NATS ``config.get.monitor`` replies ``{"host": …, "port": …}``."""
        timeout = self._monit.settings.request_timeout
        asked = self._monit.nats.request(LISTEN_SUBJECT, b"", timeout=timeout)
        asked.addCallback(lambda msg: _endpoint_from_reply(msg.payload))
        asked.addErrback(self._fallback)
        return asked

    def _fallback(self, failure: Failure) -> str:
        self.log.info(
            "no listen address from NATS {subject} ({why}); using {listen}",
            subject=LISTEN_SUBJECT,
            why=failure.getErrorMessage() or failure.type.__name__,
            listen=DEFAULT_LISTEN,
        )
        return DEFAULT_LISTEN

    def _listen(self, description: str) -> Deferred[IListeningPort]:
        endpoint = serverFromString(self._reactor, description)
        listening = endpoint.listen(self.site)
        listening.addCallback(self._listened, description)
        return listening

    def _listened(self, port: IListeningPort, description: str) -> IListeningPort:
        if not self.running:
            port.stopListening()
            return port
        self._port = port
        self.log.info("monit listening on {listen}", listen=description)
        self._listening.callback(port)
        return port

    def _failed(self, failure: Failure) -> None:
        self._monit.on_fatal(f"monit: cannot listen: {failure.getErrorMessage()}")


def _endpoint_from_reply(payload: bytes) -> str:
    config = json.loads(payload)
    host, port = str(config.get("host") or ""), int(config["port"])
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    if host:
        return f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"
    return f"tcp:{port}"
