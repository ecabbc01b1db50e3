"""Who is asking: take the token from a request and verify it as an HS256 JWT.

Verification is asynchronous because the secret may have to be fetched from
NATS first, and it fails closed: a token that cannot be checked is refused
with L{AuthUnavailable}, never let through.  Tokens are never logged, and no
error message quotes one (or any part of one).
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Protocol

import attrs
import jwt
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from zope.interface import Interface, implementer

ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 8 * 1024
# Below this PyJWT warns on every call; we warn once, when the secret arrives.
MIN_SECRET_BYTES = 32

# exp and nbf are checked against the injected clock, not time.time();
# iat is informative only.
_DECODE_OPTIONS: Any = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}

# Our own words for PyJWT's errors: some of its messages quote the token's header.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.DecodeError, "malformed token"),
    (jwt.InvalidAudienceError, "unexpected audience"),
    (jwt.exceptions.InvalidSubjectError, "invalid subject"),
)


@attrs.frozen
class Identity:
    """A verified user, as far as the token says."""

    user: str
    claims: Mapping[str, Any]
    expires: float | None

    @property
    def streams(self) -> frozenset[str] | None:
        """The stream ids this user may watch, or None when unrestricted.

        The ``streams`` claim restricts when it is a list of strings; absent or
        ``"*"`` means no restriction.  Anything else (null, a number, a list
        holding non-strings) allows nothing: a claim we cannot read fails closed.
        """
        claim = self.claims.get("streams", "*")
        if claim == "*":
            return None
        if isinstance(claim, list) and all(isinstance(s, str) for s in claim):
            return frozenset(claim)
        return frozenset()


def may_watch(identity: Identity, stream: str) -> bool:
    """Whether the identity's streams claim lets it watch this stream."""
    allowed = identity.streams
    return allowed is None or stream in allowed


class InvalidToken(Exception):
    """The token is missing, malformed, forged or out of date (HTTP 401)."""


class AuthUnavailable(Exception):
    """The token cannot be checked right now (HTTP 503)."""


class ITokenVerifier(Interface):
    """Something that turns a token into an L{Identity}, or refuses it."""

    def verify(token: str) -> Deferred[Identity]:
        """
        Fire with the token's identity; fail with L{InvalidToken} or
        L{AuthUnavailable}.
        """


TOKEN_COOKIE = b"monit_token"


def browser_token(request: IRequest) -> str | None:
    """The token a browser's EventSource can carry: ``?token=``, else the ``monit_token`` cookie.

    A query token can leak into proxy and browser logs; it is only read when the
    operator allows it, and monit never logs query strings.
    """
    values = request.args.get(b"token", [])
    raw = values[0] if len(values) == 1 else request.getCookie(TOKEN_COOKIE)
    if not raw:
        return None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return None


@implementer(ITokenVerifier)
class NoAuth:
    """Everyone is ``anonymous``: for local use with --insecure-no-auth only."""

    def verify(self, token: str) -> Deferred[Identity]:
        return succeed(Identity(user="anonymous", claims={}, expires=None))


def token_from_request(request: IRequest) -> str | None:
    """The token from X-Auth-Token (the seed's header), else from a Bearer Authorization."""
    token = _header(request, b"x-auth-token")
    if token:
        return token
    scheme, _, credentials = (_header(request, b"authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def _header(request: IRequest, name: bytes) -> str | None:
    raw = request.getHeader(name)
    if raw is None:
        return None
    # Latin-1 never fails; a token with non-ASCII bytes is refused later anyway.
    return (raw.decode("latin-1") if isinstance(raw, bytes) else raw).strip()


@contextmanager
def quiet_key_length() -> Iterator[None]:
    """Silence PyJWT's per-call warning about short HMAC secrets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        yield


@implementer(ITokenVerifier)
class JWTVerifier:
    """HS256 JWTs checked with PyJWT; the secret is fixed or fetched once (asynchronously)."""

    log = Logger()

    def __init__(
        self,
        secret: Callable[[], Deferred[str]],
        clock: IReactorTime,
        leeway: float = 0,
    ) -> None:
        self._fetcher = secret
        self._clock = clock
        self._leeway = leeway
        self._secret: str | None = None
        self._fetching = False
        self._waiters: list[Deferred[str]] = []

    @classmethod
    def with_secret(cls, secret: str, clock: IReactorTime) -> JWTVerifier:
        """A verifier with a secret known up front (--jwt-secret, JWT_SECRET)."""
        if not secret:
            raise ValueError("the JWT secret is empty")
        return cls(lambda: succeed(secret), clock)

    def verify(self, token: str) -> Deferred[Identity]:
        """Check the token's shape now, then its signature and times once the secret is known."""
        try:
            _check_shape(token)
        except InvalidToken as e:
            return fail(e)
        return self.secret().addCallback(self._decode, token)

    def _decode(self, secret: str, token: str) -> Identity:
        try:
            with quiet_key_length():
                claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options=_DECODE_OPTIONS)
        except jwt.InvalidTokenError as e:
            raise InvalidToken(_reason(e)) from None
        expires = _time_claim(claims, "exp")
        not_before = _time_claim(claims, "nbf")
        now = self._clock.seconds()
        if expires is not None and expires <= now - self._leeway:
            raise InvalidToken("token expired")
        if not_before is not None and not_before > now + self._leeway:
            raise InvalidToken("token not valid yet")
        return Identity(user=_user(claims), claims=MappingProxyType(claims), expires=expires)

    def secret(self) -> Deferred[str]:
        """The cached secret, or a place in the queue for the one fetch in flight.

        A failed fetch is an AuthUnavailable whose ``__cause__`` says why.
        """
        if self._secret is not None:
            return succeed(self._secret)
        waiter: Deferred[str] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        if not self._fetching:
            self._fetch()
        return waiter

    def _fetch(self) -> None:
        self._fetching = True
        d = maybeDeferred(self._fetcher)
        d.addCallback(_require_secret)
        d.addCallbacks(self._fetched, self._fetch_failed)
        d.addErrback(lambda f: self.log.failure("settling the JWT secret fetch", f))

    def _fetched(self, secret: str) -> None:
        self._fetching = False
        self._secret = secret
        if len(secret.encode()) < MIN_SECRET_BYTES:
            self.log.warn(
                "the JWT secret is {length} bytes long; {minimum} or more are recommended",
                length=len(secret.encode()),
                minimum=MIN_SECRET_BYTES,
            )
        for waiter in self._take_waiters():
            waiter.callback(secret)

    def _fetch_failed(self, failure: Failure) -> None:
        self._fetching = False
        self.log.failure("could not fetch the JWT secret", failure, level=LogLevel.error)
        for waiter in self._take_waiters():
            error = AuthUnavailable("the JWT secret is unavailable")
            error.__cause__ = failure.value
            waiter.errback(error)

    def _take_waiters(self) -> list[Deferred[str]]:
        waiters, self._waiters = self._waiters, []
        return waiters


def _require_secret(secret: object) -> str:
    if not isinstance(secret, str) or not secret:
        raise ValueError("the JWT secret is empty")
    return secret


def _check_shape(token: object) -> None:
    """Refuse what cannot be an HS256 JWT before spending a secret fetch on it."""
    if not isinstance(token, str) or not token:
        raise InvalidToken("no token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token too long")
    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.InvalidTokenError as e:
        raise InvalidToken(_reason(e)) from None
    if alg != ALGORITHM:
        raise InvalidToken("algorithm not allowed")


def _reason(error: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    return "invalid token"


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidToken(f"{name} is not a number")
    return float(value)


def _user(claims: Mapping[str, Any]) -> str:
    for name in ("username", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return "unknown"


class _NATSRequester(Protocol):
    def request(self, subject: str, payload: bytes, timeout: float) -> Deferred[Any]: ...


def secret_from_nats(
    client: _NATSRequester,
    subject: str = "config.get.jwt_token",
    timeout: float = 2.0,
) -> Callable[[], Deferred[str]]:
    """A fetcher asking NATS for the secret, as the seed service did."""

    def fetch() -> Deferred[str]:
        d = client.request(subject, b"", timeout=timeout)
        d.addCallback(lambda msg: _secret_from_reply(msg.payload))
        return d

    return fetch


def _secret_from_reply(payload: bytes) -> str:
    """The secret in a reply: plain text, a JSON string, or a JSON object's token/secret."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("the JWT secret reply is not UTF-8") from None
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if isinstance(value, dict):
        value = value.get("token") or value.get("secret")
        if not isinstance(value, str):
            raise ValueError("the JWT secret reply has no token or secret field")
    elif not isinstance(value, str):
        value = text  # a bare number or the like: the text itself is the secret
    return _require_secret(value)


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
        d = self.remote.verify(token)
        if local.check(AuthUnavailable):
            d.addErrback(_unavailable_over_refused, local)
        return d


def _unavailable_over_refused(remote: Failure, local: Failure) -> Failure:
    remote.trap(InvalidToken)
    return local
