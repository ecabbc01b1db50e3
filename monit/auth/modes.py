"""The ways an operator can have tokens checked, and how they combine."""
from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool
from zope.interface import implementer

from monit.auth.cache import CachingVerifier
from monit.auth.interface import AuthUnavailable, Identity, InvalidToken, ITokenVerifier
from monit.auth.jwt_verifier import JWTVerifier, NATSRequester, secret_from_nats
from monit.auth.redis_verifier import RedisTarget, RedisVerifier
from monit.auth.remote import RemoteVerifier, remote_http_client, remote_pool
from monit.settings import Settings

log = Logger()


@attrs.frozen
class Verification:
    """The verifier the settings call for, and the parts the service starts and stops."""

    verifier: CachingVerifier
    jwt: JWTVerifier | None  # its secret is fetched (and checked) at start when not given
    pool: HTTPConnectionPool | None  # the auth service's connections, closed at stop
    remote: RemoteVerifier | RedisVerifier | None = None  # its ``refused`` and ``in_flight``, for the metrics
    redis: RedisVerifier | None = None  # a service: connects to Redis at start, closes at stop


def verification_for(settings: Settings, reactor: IReactorTime, nats: NATSRequester) -> Verification:
    """JWTs with the given secret, and/or the auth URL or Redis; with none, NATS's secret.

    Every mode sits behind one cache of answers.
    """
    jwt: JWTVerifier | None = None
    pool: HTTPConnectionPool | None = None
    remote: RemoteVerifier | None = None
    redis: RedisVerifier | None = None
    inner: ITokenVerifier
    if settings.insecure_no_auth:
        log.critical("monit runs with --insecure-no-auth: anyone may watch any stream")
        inner = NoAuth()
    else:
        if settings.jwt_secret:
            jwt = JWTVerifier.with_secret(settings.jwt_secret, reactor, settings.require_exp)
        elif not asks_a_service(settings):
            fetch = secret_from_nats(nats, settings.request_timeout)
            jwt = JWTVerifier(fetch, reactor, require_exp=settings.require_exp)
        service: ITokenVerifier | None = None
        if settings.auth_url is not None:
            pool = remote_pool(reactor)
            service = remote = RemoteVerifier(
                remote_http_client(reactor, pool),
                settings.auth_url,
                reactor,
                settings.auth_timeout,
                settings.auth_concurrency,
            )
        elif settings.auth_redis is not None:
            service = redis = RedisVerifier(
                RedisTarget.from_url(settings.auth_redis),
                reactor,
                settings.auth_timeout,
                settings.auth_concurrency,
            )
        if service is None:
            assert jwt is not None
            inner = jwt
        else:
            inner = service if jwt is None else FirstValid(jwt, service)
    cache = CachingVerifier(inner, reactor, ttl=cache_ttl(settings))
    return Verification(cache, jwt, pool, remote if remote is not None else redis, redis)


def asks_a_service(settings: Settings) -> bool:
    """Whether tokens are checked by something that may take its yes back: --auth-url, --auth-redis."""
    return settings.auth_url is not None or settings.auth_redis is not None


def cache_ttl(settings: Settings) -> float:
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
        return succeed(Identity(user="anonymous", claims={}, expires=None))


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
