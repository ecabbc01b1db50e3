"""The ways an operator can have tokens checked, and how they combine."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool
from zope.interface import implementer

from monit.auth.bound import BoundedVerifier
from monit.auth.cache import CachingVerifier
from monit.auth.interface import LIST_SCOPE, AuthUnavailable, Identity, InvalidToken, ITokenVerifier
from monit.auth.jwks import JWKS, jwks_http_client
from monit.auth.jwt_verifier import (
    ALGORITHM,
    SECRET_SUBJECT,
    ClaimChecks,
    JWTVerifier,
    NATSRequester,
    secret_from_nats,
)
from monit.auth.keys import ASYMMETRIC_ALGORITHMS, SigningKey, algorithms_for, load_public_key
from monit.auth.options import AuthOptions
from monit.auth.redis_connection import RedisConnection, RedisTarget, redis_endpoint
from monit.auth.redis_verifier import Deadline, RedisVerifier
from monit.auth.remote import RemoteVerifier, remote_http_client, remote_pool
from monit.auth.signed import SignedJWTVerifier, fixed_key
from monit.nats.protocol import NoResponders
from monit.nats.tls import ClientTLS
from monit.redact import redacted_url

log = Logger()


class Verification(MultiService):
    """Token checking as one service: the verifier the settings call for, and the parts it runs.

    Its children are what keeps time or connections: the JWKS refresh, Redis's
    connection, the bound's tally of refusals. At start, a JWT secret to be
    fetched from NATS is asked for once NATS is up, so that nobody answering
    is a start-up problem (``on_fatal``); at stop, the auth service's pooled
    connections are closed.
    """

    log = Logger()

    def __init__(
        self,
        verifier: CachingVerifier,
        *,
        jwt: JWTVerifier | None = None,
        pool: HTTPConnectionPool | None = None,
        jwks: JWKS | None = None,
        remote: BoundedVerifier | None = None,
        backend: RemoteVerifier | RedisVerifier | None = None,
        parts: Iterable[Service] = (),
        when_connected: Callable[[], Deferred[None]] | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.verifier = verifier
        self.jwt = jwt  # its secret is fetched (and checked) at start when not given
        self.jwks = jwks  # its problem is shown in /readyz
        self.remote = remote  # the bound on the auth service's or Redis's checks, for the metrics
        self.backend = backend  # the auth service or Redis, whose trouble /readyz says
        self._pool = pool
        self._when_connected = when_connected  # NATS's, when the secret is to be fetched from it
        self._on_fatal = on_fatal or self._log_fatal
        for part in parts:
            part.setServiceParent(self)

    def problems(self) -> list[str]:
        """What keeps tokens from being checked now, in words, backend by backend (for /readyz)."""
        backends: list[JWKS | RemoteVerifier | RedisVerifier | None] = [self.jwks, self.backend]
        return [problem for backend in backends if backend is not None and (problem := backend.problem)]

    def startService(self) -> None:
        super().startService()
        jwt = self.jwt
        if jwt is not None and self._when_connected is not None:
            checked = self._when_connected().addCallback(lambda _: jwt.secret())
            checked.addErrback(self._no_secret)

    def stopService(self) -> Deferred[object]:
        stopped: Deferred[object] = maybeDeferred(super().stopService)
        pool = self._pool
        if pool is not None:
            stopped.addCallback(lambda _: pool.closeCachedConnections())
        return stopped

    def _no_secret(self, failure: Failure) -> None:
        """Nobody answers for the secret: a start-up problem. A slow answer is not."""
        if failure.check(CancelledError):
            return
        error = failure.value
        cause = error.__cause__ if isinstance(error, AuthUnavailable) else error
        if isinstance(cause, (NoResponders, ValueError)):
            self._on_fatal(
                f"monit: no JWT secret: pass --jwt-secret, set JWT_SECRET or answer {SECRET_SUBJECT} on NATS"
            )
        else:
            self.log.warn("JWT secret not fetched yet; asking again on the first request")

    def _log_fatal(self, line: str) -> None:
        self.log.critical("{line}", line=line)


def verification_for(
    settings: AuthOptions,
    reactor: IReactorTime,
    nats: NATSRequester,
    on_fatal: Callable[[str], None] | None = None,
) -> Verification:
    """JWTs (with a secret or with public keys) and/or the auth URL or Redis; with none, NATS's secret.

    Every mode sits behind one cache of answers. ``on_fatal`` is told when
    NATS is up and nobody answers for the secret.
    """
    jwt: JWTVerifier | None = None
    jwks: JWKS | None = None
    pool: HTTPConnectionPool | None = None
    local: ITokenVerifier | None = None
    asked: _Asked | None = None
    inner: ITokenVerifier
    if settings.insecure_no_auth:
        log.critical("monit runs with --insecure-no-auth: anyone may watch any stream")
        inner = NoAuth()
    else:
        if settings.jwt_jwks_url is not None or settings.jwt_public_key is not None:
            local, jwks = _signed(settings, reactor)
        elif settings.jwt_secret or not asks_a_service(settings):
            local = jwt = _hmac(settings, reactor, nats)
        if settings.auth_url is not None:
            pool = remote_pool(reactor)
            asked = _remote(settings, reactor, pool)
        elif settings.auth_redis is not None:
            asked = _redis(settings, reactor)
        if asked is None:
            assert local is not None
            inner = local
        else:
            inner = asked.verifier if local is None else FirstValid(local, asked.verifier)
    cache = CachingVerifier(inner, reactor, ttl=cache_ttl(settings))
    when_connected = nats.when_connected if jwt is not None and not settings.jwt_secret else None
    parts: list[Service] = [] if jwks is None else [jwks]
    if asked is None:
        return Verification(cache, jwt=jwt, jwks=jwks, parts=parts, when_connected=when_connected, on_fatal=on_fatal)
    return Verification(
        cache,
        jwt=jwt,
        pool=pool,
        jwks=jwks,
        remote=asked.bound,
        backend=asked.backend,
        parts=[*parts, asked.service],
        when_connected=when_connected,
        on_fatal=on_fatal,
    )


@attrs.frozen
class _Asked:
    """An auth service or Redis: the verifier that asks it, and its parts the service shows or runs."""

    verifier: ITokenVerifier  # the backend behind its bound
    bound: BoundedVerifier
    backend: RemoteVerifier | RedisVerifier
    service: Service  # what keeps time or a connection for it: started and stopped with the rest


def asks_a_service(settings: AuthOptions) -> bool:
    """Whether tokens are checked by something that may take its yes back: --auth-url, --auth-redis."""
    return settings.auth_url is not None or settings.auth_redis is not None


def _checks(settings: AuthOptions) -> ClaimChecks:
    return ClaimChecks(require_exp=settings.require_exp, audience=settings.jwt_audience, issuer=settings.jwt_issuer)


def _hmac(settings: AuthOptions, reactor: IReactorTime, nats: NATSRequester) -> JWTVerifier:
    """HMAC JWTs, with the secret given, else the one NATS has."""
    checks = _checks(settings)
    algorithms = settings.jwt_algorithms or (ALGORITHM,)
    if settings.jwt_secret:
        return JWTVerifier.with_secret(
            settings.jwt_secret, reactor, checks.require_exp, checks.audience, checks.issuer, algorithms
        )
    fetch = secret_from_nats(nats, settings.request_timeout)
    return JWTVerifier(
        fetch,
        reactor,
        require_exp=checks.require_exp,
        audience=checks.audience,
        issuer=checks.issuer,
        algorithms=algorithms,
    )


def _signed(settings: AuthOptions, reactor: IReactorTime) -> tuple[SignedJWTVerifier, JWKS | None]:
    """JWTs signed with a private key: checked with the PEM public key, or the JWKS's."""
    if settings.jwt_public_key is not None:
        key = load_public_key(settings.jwt_public_key)
        algorithms = settings.jwt_algorithms or algorithms_for(key)
        return SignedJWTVerifier(fixed_key(SigningKey(key)), algorithms, reactor, _checks(settings)), None
    assert settings.jwt_jwks_url is not None
    jwks = JWKS(
        jwks_http_client(reactor),
        settings.jwt_jwks_url,
        reactor,
        settings.auth_timeout,
        min_refetch=settings.jwks_min_refetch,
        refresh=settings.jwks_refresh,
    )
    algorithms = settings.jwt_algorithms or ASYMMETRIC_ALGORITHMS
    return SignedJWTVerifier(jwks.key_for, algorithms, reactor, _checks(settings)), jwks


def _remote(settings: AuthOptions, reactor: IReactorTime, pool: HTTPConnectionPool) -> _Asked:
    """An auth service asked over HTTP; a check that runs out of time is abandoned, freeing its slot."""
    assert settings.auth_url is not None
    remote = RemoteVerifier(remote_http_client(reactor, pool), settings.auth_url, reactor, settings.auth_timeout)
    bound = BoundedVerifier(
        remote, reactor, settings.auth_concurrency, log=remote.log, kind=redacted_url(settings.auth_url)
    )
    return _Asked(bound, bound, remote, bound)


def _redis(settings: AuthOptions, reactor: IReactorTime) -> _Asked:
    """Sessions in Redis, over TLS for rediss:// (with --auth-redis-tls-ca's CA, else the system's).

    The deadline answers callers in time; the bound behind it keeps each
    lookup's slot until Redis answers.
    """
    assert settings.auth_redis is not None
    target = RedisTarget.from_url(settings.auth_redis)
    tls = ClientTLS.from_files(settings.auth_redis_tls_ca).for_server(target.host) if target.tls else None
    endpoint = redis_endpoint(reactor, target, settings.auth_timeout, tls)
    connection = RedisConnection(target, endpoint, reactor, settings.auth_timeout)
    redis = RedisVerifier(target, connection, reactor)
    bound = BoundedVerifier(
        redis, reactor, settings.auth_concurrency, log=redis.log, kind=str(target), checks="lookups"
    )
    service = MultiService()
    redis.setServiceParent(service)
    bound.setServiceParent(service)  # stopped first: its refusals are said before the connection closes
    return _Asked(Deadline(bound, reactor, settings.auth_timeout), bound, redis, service)


def cache_ttl(settings: AuthOptions) -> float:
    """--auth-cache-ttl, but never longer than --auth-recheck when an auth service or Redis answers.

    Rechecks go through the cache (streams of one token then share one call);
    an answer kept longer than the recheck period would only be read back, and
    a revoked token's streams would run on for the whole ttl.
    """
    if not asks_a_service(settings) or not settings.auth_recheck:
        return settings.auth_cache_ttl
    return min(settings.auth_cache_ttl, settings.auth_recheck)


@implementer(ITokenVerifier)
class NoAuth:
    """Everyone is ``anonymous``: for local use with --insecure-no-auth only."""

    def verify(self, token: str) -> Deferred[Identity]:
        return succeed(Identity(user="anonymous", claims={"scope": LIST_SCOPE}, expires=None))


@implementer(ITokenVerifier)
@attrs.frozen
class FirstValid:
    """Accept what the local verifier accepts; ask the remote one about the rest.

    A valid JWT never costs a round trip.  When the local check was unavailable
    (the JWT secret could not be fetched) a remote refusal is not trusted to be
    final and the answer stays L{AuthUnavailable}: the token may be a good JWT.
    """

    local: ITokenVerifier
    remote: ITokenVerifier

    def verify(self, token: str) -> Deferred[Identity]:
        """The local answer if it is an identity, else the remote one."""
        return self.local.verify(token).addErrback(self._ask_remote, token)

    def _ask_remote(self, local: Failure, token: str) -> Deferred[Identity]:
        local.trap(InvalidToken, AuthUnavailable)
        d: Deferred[Identity] = self.remote.verify(token)
        if local.check(AuthUnavailable):
            d.addErrback(_unavailable_over_refused, local)
        return d


def _unavailable_over_refused(remote: Failure, local: Failure) -> Failure:
    remote.trap(InvalidToken)
    return local
