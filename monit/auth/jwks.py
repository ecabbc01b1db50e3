"""An identity provider's signing keys, fetched from its JWKS URL with treq and kept.

Keys are fetched at start, again every ``refresh`` seconds, and again when a
token names a ``kid`` we do not know (a key the provider has just rotated
in). Such a token waits for a fetch that starts after it came, however
recent the last one was, and is answered by it: the key, or ``unknown signing
key`` (L{UnknownSigningKey}, a 401 no cache keeps: the next fetch may find
it). Fetches for unknown kids start at most once every ``min_refetch``
seconds, and every token waiting shares the next one: a flood of tokens with
made-up kids costs one fetch a second, not one each. A token waits at most
``timeout`` seconds; past that it is L{AuthUnavailable}.

A fetch that fails keeps the keys we have, so tokens of known keys still
pass while the provider is unreachable; a token of an unknown key is then
L{AuthUnavailable} (fail closed: it may be good), as is every token before
the first good fetch. The trouble is logged when it starts or changes, not at
every fetch, and ``problem`` says it (for /readyz).

Redirects are not followed (as with --auth-url): the URL given is where the
keys are, and a redirect to plain HTTP would let anyone on the path swap
them. A key a token names is chosen by its ``kid`` and the token's ``alg``
(an RSA and an EC key may share a kid, RFC 7517 4.5). RSA keys under 2048
bits are left out, said once per key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn, Protocol

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent

from monit.auth.body import read_body
from monit.auth.interface import AuthUnavailable, InvalidToken
from monit.auth.keys import PUBLIC_KEY_TYPES, SigningKey, weakness
from monit.oneshot import OneShotObserver
from monit.redact import redacted_url

MAX_JWKS_BYTES = 256 * 1024


class UnknownSigningKey(InvalidToken):
    """The newest fetch of the keys lacks the token's kid: refused now, perhaps not after the next one."""

    lasting = False


class _Getter(Protocol):
    """What fetching uses of treq's HTTPClient (StubTreq in tests)."""

    def get(
        self, url: str, /, *, headers: dict[bytes | str, bytes | str], unbuffered: bool, allow_redirects: bool
    ) -> Deferred[Any]: ...


class KeySet:
    """The usable signing keys of one JWKS document, by ``kid``; and those refused, with why."""

    def __init__(self, keys: list[tuple[str | None, SigningKey]], refused: Mapping[str, str] | None = None) -> None:
        self._keys = keys
        self._by_kid: dict[str, list[SigningKey]] = {}
        for kid, key in keys:
            if kid is not None:
                self._by_kid.setdefault(kid, []).append(key)
        self.refused: Mapping[str, str] = refused or {}  # kid (or "no kid") → why it is not used

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._by_kid)

    def find(self, kid: str | None, algorithm: str) -> SigningKey | None:
        """The key a token names, the one that suits its algorithm if the kid has several.

        A token without ``kid`` may only use a lone key. (Whether the key
        suits the algorithm at all is the verifier's to check and say.)
        """
        if kid is None:
            return self._keys[0][1] if len(self._keys) == 1 else None
        keys = self._by_kid.get(kid, [])
        return next((key for key in keys if key.suits(algorithm)), keys[0] if keys else None)


def parse_jwks(body: bytes) -> KeySet:
    """The signing keys in a JWKS document; ValueError when it holds none we can use.

    Keys for encryption (``"use": "enc"``), secret (``oct``) and private keys,
    and kinds PyJWT does not know are left out; weak keys too, and named in
    ``refused``.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no keys list)")
    keys: list[tuple[str | None, SigningKey]] = []
    refused: dict[str, str] = {}
    for entry in document["keys"]:
        found = _signing_key(entry)
        if found is None:
            continue
        kid, key = found
        weak = weakness(key.key)
        if weak is not None:
            refused[kid or "(no kid)"] = weak
        else:
            keys.append(found)
    if not keys:
        why = "; ".join(f"{kid}: {reason}" for kid, reason in refused.items())
        raise ValueError(f"no usable signing key{f' ({why})' if why else ''}")
    return KeySet(keys, refused)


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
    """The keys at one JWKS URL: ``key_for(kid, alg)`` answers from them, fetching when it must."""

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
        self._started: float | None = None  # when the newest fetch started
        self._settled: float | None = None  # when the newest fetch that has settled started
        self._problem: str | None = None  # why the newest fetch failed; None after a good one
        self._fetching: OneShotObserver[None] | None = None
        self._in_flight: Deferred[Any] | None = None
        self._next: OneShotObserver[None] | None = None  # waiting for the rate limit to allow a fetch
        self._next_call: IDelayedCall | None = None
        self._refresh: LoopingCall | None = None
        self._said_refused: set[tuple[str, str]] = set()

    @property
    def problem(self) -> str | None:
        """Why tokens of keys we do not hold get 503 now (for /readyz); None when they do not."""
        if self._problem is not None:
            return f"JWKS at {self._shown_url}: {self._problem} (keeping the {len(self.keys)} keys we have)"
        if not len(self.keys):
            return f"JWKS at {self._shown_url}: no signing keys fetched yet"
        return None

    def startService(self) -> None:
        """Fetch now, then every ``refresh`` seconds."""
        super().startService()
        if self._url.startswith("http://"):
            self.log.warn("the JWKS URL {url} is plain HTTP: anyone on the path can swap the keys", url=self._shown_url)
        self._refresh = LoopingCall(self.refresh)
        self._refresh.clock = self._clock
        self._refresh.start(self._refresh_interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._refresh is not None and self._refresh.running:
            self._refresh.stop()
        if self._next_call is not None and self._next_call.active():
            self._next_call.cancel()
        if self._next is not None:
            self._next_call, waiting, self._next = None, self._next, None
            waiting.fire(None)  # they find no fresh fetch, and that monit stops fetching
        if self._in_flight is not None:
            self._in_flight.cancel()

    def refresh(self) -> Deferred[None]:
        """Fetch the keys unless a fetch is already under way; fires when it is done."""
        if self._fetching is not None:
            return self._fetching.when_fired()
        return self._fetch()

    def key_for(self, kid: str | None, algorithm: str) -> Deferred[SigningKey]:
        """The key a token names, waiting (up to ``timeout``) for a fetch if it is unknown.

        A token without ``kid`` names the lone key of a set of one; of a larger
        set, none (fetching again would not change that).
        """
        key = self.keys.find(kid, algorithm)
        if key is not None:
            return succeed(key)
        if kid is None and len(self.keys):
            return fail(InvalidToken("token has no kid"))
        answer = self._search(kid, algorithm, asked=self._clock.seconds())
        return answer.addTimeout(self._timeout, self._clock, onTimeoutCancel=_no_keys_in_time)

    def _search(self, kid: str | None, algorithm: str, asked: float) -> Deferred[SigningKey]:
        """The key, once a fetch that started at or after ``asked`` has settled; until then, wait for fetches."""
        key = self.keys.find(kid, algorithm)
        if key is not None:
            return succeed(key)
        if kid is not None and kid in self.keys.refused:
            return fail(InvalidToken("signing key refused"))
        if self._settled is not None and self._settled >= asked:
            return fail(self._missing(kid))
        return self._after_next_fetch().addCallback(lambda _: self._search(kid, algorithm, asked))

    def _after_next_fetch(self) -> Deferred[None]:
        """Fires when the fetch under way settles, else the next one the rate limit allows."""
        if self._fetching is not None:
            return self._fetching.when_fired()
        if not self.running:
            return fail(AuthUnavailable("the signing keys are not being fetched"))
        wait = 0.0 if self._started is None else self._started + self._min_refetch - self._clock.seconds()
        if wait <= 0:
            return self._fetch()
        if self._next is None:
            self._next = OneShotObserver()
            self._next_call = self._clock.callLater(wait, self._fetch_next)
        return self._next.when_fired()

    def _fetch_next(self) -> None:
        """The rate limit allows a fetch: those waiting for it share it."""
        waiting, self._next, self._next_call = self._next, None, None
        assert waiting is not None
        self.refresh().addCallback(waiting.fire)

    def _missing(self, kid: str | None) -> Exception:
        """Unknown key: unavailable while the keys cannot be fetched (or none came yet), else refused."""
        if self._problem is not None or not len(self.keys):
            return AuthUnavailable("the signing keys cannot be fetched")
        return UnknownSigningKey("unknown signing key" if kid is not None else "token has no kid")

    def _fetch(self) -> Deferred[None]:
        """Start a fetch; fires when it is done, however it went (the answer may come at once)."""
        self._fetching = OneShotObserver()
        fetched = self._fetching.when_fired()
        self._started = self._clock.seconds()
        d: Deferred[Any] = maybeDeferred(
            self._http.get,
            self._url,
            headers={"Accept": "application/json"},
            unbuffered=True,
            allow_redirects=False,
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
        self._say_refused(keys.refused)
        self.keys, self._problem = keys, None
        self._settle()

    def _say_refused(self, refused: Mapping[str, str]) -> None:
        """Each weak key once, however often it is fetched."""
        for kid, why in refused.items():
            if (kid, why) not in self._said_refused:
                self._said_refused.add((kid, why))
                self.log.warn(
                    "the JWKS at {url} has a key monit refuses, {kid}: {why}; tokens it signed get 401",
                    url=self._shown_url,
                    kid=kid,
                    why=why,
                )

    def _fetch_failed(self, failure: Failure) -> None:
        """Keep the keys we have; say so when the trouble starts or changes, not at every try."""
        if failure.check(defer.CancelledError):
            self._settle(answered=False)  # stopping: no answer, for those waiting, to go by
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

    def _settle(self, answered: bool = True) -> None:
        """Wake everyone waiting for this fetch; the next one may start."""
        fetching, self._fetching, self._in_flight = self._fetching, None, None
        if answered:
            self._settled = self._started
        if fetching is not None:
            fetching.fire(None)


def jwks_http_client(reactor: IReactorTime) -> HTTPClient:
    """A treq client for fetching keys: a fetch every few minutes needs no pool."""
    return HTTPClient(Agent(reactor))


def _body(response: Any) -> Deferred[bytes]:
    """The body of a 200 answer, up to L{MAX_JWKS_BYTES}; read for any other too, to free the connection."""
    body = read_body(response, MAX_JWKS_BYTES, lambda: ValueError(f"more than {MAX_JWKS_BYTES} bytes"))
    return body.addCallback(lambda content: _ok(response.code, content))


def _ok(code: int, body: bytes) -> bytes:
    if 300 <= code < 400:
        raise ValueError(f"HTTP {code}: a redirect, which monit does not follow (give the URL it points to)")
    if code != 200:
        raise ValueError(f"HTTP {code}")
    return body


def _timed_out(result: object, timeout: float) -> NoReturn:
    raise defer.TimeoutError(timeout, "JWKS fetch")


def _no_keys_in_time(result: object, timeout: float) -> NoReturn:
    raise AuthUnavailable("the signing keys could not be fetched in time")


def _describe(failure: Failure) -> str:
    if failure.check(defer.TimeoutError):
        return "no answer in time"
    if failure.check(ValueError):
        return str(failure.value)
    return failure.getErrorMessage() or type(failure.value).__name__
