"""One connection to Redis that is made again after any failure, with backoff, until monit stops.

Every new connection is proven before lookups use it: ``AUTH`` (with the ACL
user, if the URL names one), then ``SELECT`` the database, or a ``PING`` when
there is neither; each must be answered within the timeout. A lookup that
gets no answer in time drops the connection (L{monit.auth.resp}). Whatever
goes wrong (refused, reset, no answer to a lookup or to ``AUTH``, a
certificate that does not verify) ends in the same place: a new attempt
after a backoff that grows to L{MAX_BACKOFF} seconds. Only Redis refusing
monit's credentials or database waits longer, L{RETRY_REFUSED} seconds: a
wrong password is fixed by a person, not by asking again and again.

Why there is no connection is said once per reason, and that Redis answers
again once; ``problem`` says it meanwhile (for /readyz).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import cast
from urllib.parse import unquote, urlsplit

import attrs
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from monit.auth.resp import ConnectionLost, RedisError, RedisProtocol, Reply
from monit.oneshot import OneShotObserver
from monit.redact import redacted_url

DEFAULT_PORT = 6379
MAX_BACKOFF = 10.0  # seconds between attempts, at most, while Redis cannot be reached
BACKOFF = backoffPolicy(0.2, MAX_BACKOFF, factor=2, jitter=random.random)
RETRY_REFUSED = 30.0  # seconds before trying again credentials or a database Redis refused
MAX_VALUE_BYTES = 64 * 1024  # a longer value is skipped, never held (see resp)


@attrs.frozen
class RedisTarget:
    """Where the sessions are: ``redis[s]://[[user]:password@]host[:port][/db]``."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    password: str | None = attrs.field(default=None, repr=False)
    user: str | None = None  # an ACL user (Redis 6+); None: the default user
    tls: bool = False  # rediss://

    @classmethod
    def from_url(cls, url: str) -> RedisTarget:
        """The target a URL names; ValueError (showing no password) if it names none."""
        shown = redacted_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{shown!r} is not a URL") from None
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"{shown!r} must be a redis:// or rediss:// URL (redis://host:port/db)")
        if not parts.hostname:
            raise ValueError(f"{shown!r} names no host")
        if parts.username and not parts.password:
            raise ValueError(
                f"{shown!r} names a user but no password: an ACL user goes as redis://user:password@host, "
                "a password alone as redis://:password@host"
            )
        if port == 0:
            raise ValueError(f"{shown!r} has port 0")
        if parts.query or parts.fragment:
            raise ValueError(f"{shown!r} must not have a query or a fragment")
        db = parts.path.removeprefix("/") or "0"
        if not (db.isascii() and db.isdigit()):
            raise ValueError(f"{shown!r}: the path must be a database number (/0, /1, …)")
        return cls(
            parts.hostname,
            DEFAULT_PORT if port is None else port,
            int(db),
            unquote(parts.password) if parts.password else None,
            unquote(parts.username) if parts.username else None,
            parts.scheme == "rediss",
        )

    def __str__(self) -> str:
        """The URL as logs show it: the user, never the password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"{'rediss' if self.tls else 'redis'}://{user}{host}:{self.port}/{self.db}"

    def handshake(self) -> list[tuple[bytes, ...]]:
        """The commands that make a new connection ready for lookups, each of which Redis must answer."""
        steps: list[tuple[bytes, ...]] = []
        if self.password is not None:
            user = (self.user.encode(),) if self.user else ()
            steps.append((b"AUTH", *user, self.password.encode()))
        if self.db:
            steps.append((b"SELECT", b"%d" % self.db))
        return steps or [(b"PING",)]


def redis_endpoint(
    reactor: IReactorTime, target: RedisTarget, timeout: float, tls: IOpenSSLClientConnectionCreator | None = None
) -> IStreamClientEndpoint:
    """TCP to the target (``reactor`` also makes connections and resolves names), with TLS for rediss://.

    ``tls``: the options that check the server's certificate (see
    L{monit.nats.tls.ClientTLS.for_server}); by default, that the system's CAs
    vouch for it and it names the host.
    """
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, target.host, target.port, timeout=timeout)
    if target.tls:
        endpoint = wrapClientTLS(tls if tls is not None else optionsForClientTLS(target.host), endpoint)
    return endpoint


class NotConnected(Exception):
    """No connection was ready in time (or monit is stopping)."""


class _Refused(Exception):
    """Redis refused a step of the handshake: monit's credentials or database."""


class RedisConnection(Service):
    """A connection to one Redis, kept up; ``get`` waits for it (up to the timeout) when it is down."""

    log = Logger()

    def __init__(
        self,
        target: RedisTarget,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        timeout: float,
        backoff: Callable[[int], float] = BACKOFF,
    ) -> None:
        self._target = target
        self._shown = str(target)
        self._endpoint = endpoint
        self._clock = clock
        self._timeout = timeout
        self._backoff = backoff
        self._open: RedisProtocol | None = None  # the newest connection, until it is lost
        self._ready: RedisProtocol | None = None  # proven, and still up
        self._next_ready: OneShotObserver[RedisProtocol] = OneShotObserver()
        self._attempt: Deferred[None] | None = None  # connecting and proving a connection
        self._retry: IDelayedCall | None = None
        self._failures = 0  # attempts failed since the last ready connection
        self._why: str | None = None  # why there is no ready connection
        self._said: set[str] = set()  # reasons said since the last ready connection

    @property
    def problem(self) -> str | None:
        """Why no connection is ready for lookups; None when one is."""
        if self._ready is not None:
            return None
        return self._why or "not connected yet"

    def get(self, key: bytes) -> Deferred[Reply]:
        """``GET key`` on the ready connection, or on the next one if it comes within the timeout."""
        if self._ready is not None:
            return self._ready.command(b"GET", key)
        if not self.running:
            return fail(NotConnected("not connected to Redis"))
        ready = self._next_ready.when_fired()
        ready.addTimeout(self._timeout, self._clock, onTimeoutCancel=self._not_ready_in_time)
        return ready.addCallback(lambda protocol: protocol.command(b"GET", key))

    def _not_ready_in_time(self, result: object, timeout: float) -> Reply:
        raise NotConnected(self.problem or "not connected")

    # Service

    def startService(self) -> None:
        super().startService()
        self._connect()

    def stopService(self) -> Deferred[None]:
        """Try no more, fail whatever waits for a connection, and close it; fires once it is closed."""
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry, self._ready = None, None
        self._next_ready.fire(Failure(NotConnected("monit is stopping")))
        if self._attempt is not None:
            self._attempt.cancel()
        protocol, self._open = self._open, None
        if protocol is None:
            return succeed(None)
        protocol.close()
        return protocol.when_lost().addCallback(lambda _: None)

    # Connecting

    def _connect(self) -> None:
        self._retry = None
        factory = Factory.forProtocol(lambda: RedisProtocol(self._clock, self._timeout, MAX_VALUE_BYTES))
        attempt: Deferred[None] = self._endpoint.connect(factory).addCallback(self._prove)
        self._attempt = attempt
        attempt.addCallbacks(lambda _: None, self._failed)
        attempt.addErrback(lambda failure: self.log.failure("settling a Redis connection attempt", failure))

    def _prove(self, connected: IProtocol) -> Deferred[None]:
        return ensureDeferred(self._handshake(cast(RedisProtocol, connected)))

    async def _handshake(self, protocol: RedisProtocol) -> None:
        """Ready the connection, or close it and raise why not."""
        self._open = protocol
        protocol.when_lost().addCallback(self._lost, protocol)
        try:
            for step in self._target.handshake():
                await self._step(protocol, step)
        except BaseException:
            protocol.close()
            raise
        self._became_ready(protocol)

    async def _step(self, protocol: RedisProtocol, step: tuple[bytes, ...]) -> None:
        try:
            await protocol.command(*step)
        except RedisError as error:
            name = b" ".join(step[:1] if step[0] == b"AUTH" else step).decode()  # never the password
            raise _Refused(f"{name} refused: {error}") from None

    def _became_ready(self, protocol: RedisProtocol) -> None:
        self._attempt = None
        self._failures = 0
        if self._said:
            self.log.info("Redis at {url} answers again", url=self._shown)
        self._said.clear()
        self._why = None
        self._ready = protocol
        ready, self._next_ready = self._next_ready, OneShotObserver()
        ready.fire(protocol)

    def _lost(self, reason: str, protocol: RedisProtocol) -> None:
        """A connection went. If it was the ready one, say why and make another.

        (One lost during its handshake is the attempt's failure, seen by ``_failed``.)
        """
        if self._open is protocol:
            self._open = None
        if self._ready is not protocol:
            return
        self._ready = None
        if self.running:
            self._trouble(reason)
            self._schedule(refused=False)

    def _failed(self, failure: Failure) -> None:
        self._attempt = None
        if failure.check(defer.CancelledError) or not self.running:
            return
        refused = failure.check(_Refused) is not None
        if refused:
            self._refused(str(failure.value))
        else:
            self._trouble(_describe(failure))
        self._schedule(refused)

    def _schedule(self, refused: bool) -> None:
        self._failures += 1
        delay = RETRY_REFUSED if refused else self._backoff(self._failures)
        self._retry = self._clock.callLater(delay, self._connect)

    def _trouble(self, reason: str) -> None:
        self._why = reason
        if reason not in self._said:
            self._said.add(reason)
            self.log.warn(
                "cannot look tokens up in Redis at {url}: {reason}; token checks answer 503 until it answers",
                url=self._shown,
                reason=reason,
            )

    def _refused(self, reason: str) -> None:
        self._why = reason
        if reason not in self._said:
            self._said.add(reason)
            self.log.error(
                "Redis at {url}: {reason}; token checks answer 503, and monit tries again every {every:g} s",
                url=self._shown,
                reason=reason,
                every=RETRY_REFUSED,
            )


def _describe(failure: Failure) -> str:
    """Why an attempt failed, in words that quote no password (Redis's own messages name none)."""
    if failure.check(ConnectionLost, NotConnected):
        return str(failure.value)
    return failure.getErrorMessage() or type(failure.value).__name__
