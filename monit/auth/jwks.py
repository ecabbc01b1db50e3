"""An identity provider's signing keys, fetched from its JWKS URL with treq and kept.

Keys are fetched at start, again every ``refresh`` seconds, and again when a
token names a ``kid`` we do not know (a key the provider has just rotated
in), but at most once every ``min_refetch`` seconds (the defaults are in
L{monit.settings.Settings}): a flood of tokens with
made-up kids must not become a flood of fetches.  A fetch that fails keeps
the keys we have, so tokens of known keys still pass while the provider is
unreachable; a token of an unknown key is then L{AuthUnavailable} (fail
closed: it may be good), as is every token before the first good fetch, and
after a good fetch that lacks it, L{InvalidToken}.  The trouble is logged
when it starts or changes, not at every fetch.
"""
from __future__ import annotations

import json
from typing import Any, NoReturn, Protocol

import jwt
import treq
from cryptography.exceptions import UnsupportedAlgorithm
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent

from monit.auth.interface import AuthUnavailable, InvalidToken
from monit.auth.keys import PUBLIC_KEY_TYPES, SigningKey
from monit.oneshot import OneShotObserver
from monit.redact import redacted_url

MAX_JWKS_BYTES = 256 * 1024


class _Getter(Protocol):
    """What fetching uses of treq's HTTPClient (StubTreq in tests)."""

    def get(self, url: str, /, *, headers: dict[bytes | str, bytes | str], unbuffered: bool) -> Deferred[Any]: ...


class KeySet:
    """The usable signing keys of one JWKS document, by ``kid``."""

    def __init__(self, keys: list[tuple[str | None, SigningKey]]) -> None:
        self._keys = keys
        self._by_kid = {kid: key for kid, key in keys if kid is not None}

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._by_kid)

    def find(self, kid: str | None) -> SigningKey | None:
        """The key a token names; a token without ``kid`` may only use a lone key."""
        if kid is None:
            return self._keys[0][1] if len(self._keys) == 1 else None
        return self._by_kid.get(kid)


def parse_jwks(body: bytes) -> KeySet:
    """The signing keys in a JWKS document; ValueError when it holds none we can use.

    Keys for encryption (``"use": "enc"``), secret (``oct``) and private keys,
    and kinds PyJWT does not know are left out.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no keys list)")
    keys = [key for key in map(_signing_key, document["keys"]) if key is not None]
    if not keys:
        raise ValueError("no usable signing key")
    return KeySet(keys)


def _signing_key(entry: object) -> tuple[str | None, SigningKey] | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    try:
        jwk = jwt.PyJWK(entry)
    except (jwt.PyJWTError, ValueError, TypeError, UnsupportedAlgorithm):  # not every flaw is a PyJWTError
        return None
    if not isinstance(jwk.key, PUBLIC_KEY_TYPES):
        return None
    kid, alg = entry.get("kid"), entry.get("alg")
    return (kid if isinstance(kid, str) else None), SigningKey(jwk.key, alg if isinstance(alg, str) else None)


class JWKS(Service):
    """The keys at one JWKS URL: ``key_for(kid)`` answers from them, fetching when it must."""

    log = Logger()

    def __init__(
        self,
        http: _Getter,
        url: str,
        clock: IReactorTime,
        timeout: float,
        min_refetch: float,
        refresh: float,
    ) -> None:
        self._http = http
        self._url = url
        self._shown_url = redacted_url(url)
        self._clock = clock
        self._timeout = timeout
        self._min_refetch = min_refetch
        self._refresh_interval = refresh
        self.keys = KeySet([])
        self._last_fetch: float | None = None  # when the newest fetch started
        self._problem: str | None = None  # why the newest fetch failed; None after a good one
        self._fetching: OneShotObserver[None] | None = None
        self._in_flight: Deferred[Any] | None = None
        self._refresh: LoopingCall | None = None

    def startService(self) -> None:
        """Fetch now, then every ``refresh`` seconds."""
        super().startService()
        if self._url.startswith("http://"):
            self.log.warn(
                "the JWKS URL {url} is plain HTTP: anyone on the path can swap the keys", url=self._shown_url
            )
        self._refresh = LoopingCall(self.refresh)
        self._refresh.clock = self._clock
        self._refresh.start(self._refresh_interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._refresh is not None and self._refresh.running:
            self._refresh.stop()
        if self._in_flight is not None:
            self._in_flight.cancel()

    def refresh(self) -> Deferred[None]:
        """Fetch the keys unless a fetch is already under way; fires when it is done."""
        if self._fetching is not None:
            return self._fetching.when_fired()
        return self._fetch()

    def key_for(self, kid: str | None) -> Deferred[SigningKey]:
        """The key a token names, fetching the keys again (rate-limited) if it is unknown.

        A token without ``kid`` names the lone key of a set of one; of a larger
        set, none (fetching again would not change that).
        """
        key = self.keys.find(kid)
        if key is not None:
            return succeed(key)
        if kid is None and len(self.keys):
            return fail(InvalidToken("token has no kid"))
        if self._fetching is not None:
            fetched = self._fetching.when_fired()
        elif self._may_fetch():
            fetched = self._fetch()
        else:
            return fail(self._missing(kid))
        return fetched.addCallback(lambda _: self._found(kid))

    def _may_fetch(self) -> bool:
        last = self._last_fetch
        return last is None or self._clock.seconds() - last >= self._min_refetch

    def _found(self, kid: str | None) -> SigningKey:
        key = self.keys.find(kid)
        if key is None:
            raise self._missing(kid)
        return key

    def _missing(self, kid: str | None) -> Exception:
        """Unknown key: unavailable while the keys cannot be fetched (or none came yet), else refused."""
        if self._problem is not None or not len(self.keys):
            return AuthUnavailable("the signing keys cannot be fetched")
        return InvalidToken("unknown signing key" if kid is not None else "token has no kid")

    def _fetch(self) -> Deferred[None]:
        """Start a fetch; fires when it is done, however it went (the answer may come at once)."""
        self._fetching = OneShotObserver()
        fetched = self._fetching.when_fired()
        self._last_fetch = self._clock.seconds()
        d: Deferred[Any] = maybeDeferred(
            self._http.get, self._url, headers={"Accept": "application/json"}, unbuffered=True
        )
        self._in_flight = d  # cancelled at stop
        d.addCallback(_body)
        d.addTimeout(self._timeout, self._clock, onTimeoutCancel=_timed_out)
        d.addCallback(parse_jwks)
        d.addCallbacks(self._fetched, self._fetch_failed)
        d.addErrback(lambda f: self.log.failure("settling a JWKS fetch", f))
        return fetched

    def _fetched(self, keys: KeySet) -> None:
        if self._problem is not None or keys.kids != self.keys.kids or not len(self.keys):
            self.log.info("{count} signing keys from {url}", count=len(keys), url=self._shown_url)
        self.keys, self._problem = keys, None
        self._settle()

    def _fetch_failed(self, failure: Failure) -> None:
        """Keep the keys we have; say so when the trouble starts or changes, not at every try."""
        if failure.check(defer.CancelledError):
            self._settle()  # stopping
            return
        problem = _describe(failure)
        if problem != self._problem:
            self.log.warn(
                "could not fetch the signing keys from {url}: {why}; keeping the {count} we have "
                "(tokens naming other keys get 503 until a fetch succeeds)",
                url=self._shown_url,
                why=problem,
                count=len(self.keys),
            )
        self._problem = problem
        self._settle()

    def _settle(self) -> None:
        """Wake everyone waiting for this fetch; the next one may start."""
        fetching, self._fetching, self._in_flight = self._fetching, None, None
        if fetching is not None:
            fetching.fire(None)


def jwks_http_client(reactor: IReactorTime) -> HTTPClient:
    """A treq client for fetching keys: a fetch every few minutes needs no pool."""
    return HTTPClient(Agent(reactor))


def _body(response: Any) -> Deferred[bytes]:
    """The body of a 200 answer, up to L{MAX_JWKS_BYTES}; read for any other too, to free the connection."""
    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > MAX_JWKS_BYTES:
            raise ValueError(f"more than {MAX_JWKS_BYTES} bytes")
        chunks.append(data)

    done: Deferred[None] = treq.collect(response, collect)
    return done.addCallback(lambda _: _ok(response.code, b"".join(chunks)))


def _ok(code: int, body: bytes) -> bytes:
    if code != 200:
        raise ValueError(f"HTTP {code}")
    return body


def _timed_out(result: object, timeout: float) -> NoReturn:
    raise defer.TimeoutError(timeout, "JWKS fetch")


def _describe(failure: Failure) -> str:
    if failure.check(defer.TimeoutError):
        return "no answer in time"
    if failure.check(ValueError):
        return str(failure.value)
    return failure.getErrorMessage() or type(failure.value).__name__
