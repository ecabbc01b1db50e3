"""HMAC-signed JWTs (HS256), checked with PyJWT against a secret given or fetched from NATS.

The secret may have to be fetched first, so verification is asynchronous;
while it cannot be fetched, tokens are refused with L{AuthUnavailable}.
What a token's claims must say (times, audience, issuer) is L{ClaimChecks},
shared with the verifier of tokens signed with public keys (``signed``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from types import MappingProxyType
from typing import Any, Protocol

import attrs
import jwt
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from monit.auth.interface import (
    MAX_TOKEN_LENGTH,
    AuthUnavailable,
    Identity,
    InvalidToken,
    ITokenVerifier,
)
from monit.oneshot import OneShotObserver

ALGORITHM = "HS256"
SECRET_SUBJECT = "config.get.jwt_token"
# Below this PyJWT warns on every call; we warn once, when the secret arrives.
MIN_SECRET_BYTES = 32
# exp and nbf are seconds from 1970 to the end of 9999 (as far as datetime goes).
# PyJWT, left to itself, takes exp 1e308 or a 400-digit integer as "never
# expires"; such a token is broken or forged, and refused.
MAX_NUMERIC_DATE = 253_402_300_799

# exp and nbf are checked against the injected clock, not time.time();
# iat is informative only.
_DECODE_OPTIONS: Any = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}
# A public key under PyJWT's minimum (an RSA key under 2048 bits) fails the check rather than
# warning: the filter meant for short HMAC secrets must not hide it.
_PUBLIC_KEY_OPTIONS: Any = {**_DECODE_OPTIONS, "enforce_minimum_key_length": True}

# Our own words for PyJWT's errors: some of its messages quote the token's header.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.DecodeError, "malformed token"),
    (jwt.InvalidAudienceError, "unexpected audience"),
    (jwt.InvalidIssuerError, "unexpected issuer"),
    (jwt.exceptions.InvalidSubjectError, "invalid subject"),
    (jwt.InvalidKeyError, "signing key refused"),
)


@contextmanager
def quiet_key_length() -> Iterator[None]:
    """Silence PyJWT's per-call warning about short HMAC secrets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        yield


@attrs.frozen
class ClaimChecks:
    """What a JWT's claims must say, whoever signed it."""

    leeway: float = 0
    require_exp: bool = False
    audience: str | None = None  # when given, ``aud`` must name it
    issuer: str | None = None  # when given, ``iss`` must be it

    def identity(self, claims: dict[str, Any], now: float) -> Identity:
        """The identity the claims name, once their times are checked against ``now``."""
        expires = _time_claim(claims, "exp")
        not_before = _time_claim(claims, "nbf")
        if expires is None and self.require_exp:
            raise InvalidToken("token has no exp")
        if expires is not None and expires <= now - self.leeway:
            raise InvalidToken("token expired")
        if not_before is not None and not_before > now + self.leeway:
            raise InvalidToken("token not valid yet")
        return Identity(user=_user(claims), claims=MappingProxyType(claims), expires=expires)


def decode(token: str, key: Any, algorithms: Sequence[str], checks: ClaimChecks, now: float) -> Identity:
    """The token's identity if ``key`` signed it with one of ``algorithms``; else InvalidToken."""
    secret = isinstance(key, (str, bytes))
    try:
        with quiet_key_length() if secret else nullcontext():
            claims = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=checks.audience,
                issuer=checks.issuer,
                options=_DECODE_OPTIONS if secret else _PUBLIC_KEY_OPTIONS,
            )
    except jwt.PyJWTError as e:  # InvalidKeyError is not an InvalidTokenError
        raise InvalidToken(_reason(e)) from None
    return checks.identity(claims, now)


@implementer(ITokenVerifier)
class JWTVerifier:
    """HS256 JWTs checked with PyJWT; the secret is fixed or fetched once (asynchronously)."""

    log = Logger()

    def __init__(
        self,
        secret: Callable[[], Deferred[str]],
        clock: IReactorTime,
        leeway: float = 0,
        require_exp: bool = False,
        audience: str | None = None,
        issuer: str | None = None,
        algorithms: Sequence[str] = (ALGORITHM,),
    ) -> None:
        self._fetcher = secret
        self._clock = clock
        self._checks = ClaimChecks(leeway, require_exp, audience, issuer)
        self._algorithms = tuple(algorithms)
        self._secret: str | None = None
        self._fetching: OneShotObserver[str] | None = None

    @classmethod
    def with_secret(
        cls,
        secret: str,
        clock: IReactorTime,
        require_exp: bool = False,
        audience: str | None = None,
        issuer: str | None = None,
        algorithms: Sequence[str] = (ALGORITHM,),
    ) -> JWTVerifier:
        """A verifier with a secret known up front (--jwt-secret, JWT_SECRET)."""
        if not secret:
            raise ValueError("the JWT secret is empty")
        verifier = cls(
            lambda: succeed(secret),
            clock,
            require_exp=require_exp,
            audience=audience,
            issuer=issuer,
            algorithms=algorithms,
        )
        verifier._fetched(secret)  # known now: a short one is warned about at start-up
        return verifier

    def verify(self, token: str) -> Deferred[Identity]:
        """Check the token's shape now, then its signature and times once the secret is known."""
        try:
            check_shape(token, self._algorithms)
        except InvalidToken as e:
            return fail(e)
        return self.secret().addCallback(self._decode, token)

    def _decode(self, secret: str, token: str) -> Identity:
        return decode(token, secret, self._algorithms, self._checks, self._clock.seconds())

    def secret(self) -> Deferred[str]:
        """The cached secret, or a place in the queue for the one fetch in flight.

        A failed fetch is an AuthUnavailable whose ``__cause__`` says why.
        """
        if self._secret is not None:
            return succeed(self._secret)
        if self._fetching is not None:
            return self._fetching.when_fired()
        self._fetching = OneShotObserver()
        waiter = self._fetching.when_fired()  # before fetching: the answer may come at once
        self._fetch()
        return waiter

    def _fetch(self) -> None:
        d = maybeDeferred(self._fetcher)
        d.addCallback(_require_secret)
        d.addCallbacks(self._fetched, self._fetch_failed)
        d.addErrback(lambda f: self.log.failure("settling the JWT secret fetch", f))

    def _fetched(self, secret: str) -> None:
        self._secret = secret
        if len(secret.encode()) < MIN_SECRET_BYTES:
            self.log.warn(
                "the JWT secret is {length} bytes long; {minimum} or more are recommended",
                length=len(secret.encode()),
                minimum=MIN_SECRET_BYTES,
            )
        self._settle(secret)

    def _fetch_failed(self, failure: Failure) -> None:
        self.log.error(
            "could not fetch the JWT secret from NATS {subject}: {why}",
            subject=SECRET_SUBJECT,
            why=failure.getErrorMessage() or type(failure.value).__name__,
        )
        error = AuthUnavailable("the JWT secret is unavailable")
        error.__cause__ = failure.value
        self._settle(Failure(error))

    def _settle(self, outcome: str | Failure) -> None:
        """Answer everyone waiting for this fetch; after a failure, the next call fetches again."""
        fetching, self._fetching = self._fetching, None
        if fetching is not None:
            fetching.fire(outcome)


def _require_secret(secret: object) -> str:
    if not isinstance(secret, str) or not secret:
        raise ValueError("the JWT secret is empty")
    return secret


def check_shape(token: object, algorithms: Sequence[str]) -> dict[str, Any]:
    """The header of what may be a JWT of one of ``algorithms``: refuse the rest before
    spending a secret or key fetch on it."""
    if not isinstance(token, str) or not token:
        raise InvalidToken("no token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as e:
        raise InvalidToken(_reason(e)) from None
    if header.get("alg") not in algorithms:
        raise InvalidToken("algorithm not allowed")
    return header


def _reason(error: Exception) -> str:
    if isinstance(error, jwt.MissingRequiredClaimError) and error.claim in ("aud", "iss"):
        return f"token has no {error.claim}"
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    return "invalid token"


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim as a float, or None when absent.

    Compared before any float() (a 400-digit integer would overflow), and NaN
    fails the comparison: neither can become "never expires" or an error
    other than InvalidToken.
    """
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidToken(f"{name} is not a number")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise InvalidToken(f"{name} is out of range")
    return float(value)


def _user(claims: Mapping[str, Any]) -> str:
    for name in ("username", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return "unknown"


class NATSRequester(Protocol):
    """What fetching the secret uses of a NATS client: one request, once connected."""

    def request(self, subject: str, payload: bytes, timeout: float) -> Deferred[Any]: ...

    def when_connected(self) -> Deferred[None]: ...


def secret_from_nats(client: NATSRequester, timeout: float) -> Callable[[], Deferred[str]]:
    """A fetcher asking NATS ``config.get.jwt_token`` for the secret, as the seed service did."""

    def fetch() -> Deferred[str]:
        d = client.request(SECRET_SUBJECT, b"", timeout=timeout)
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
