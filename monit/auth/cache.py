"""Remember token checks for a while, so a reconnecting client costs no round trip.

Answers are keyed by the token's SHA-256: the cache never holds a token.  A
valid answer is kept for ``ttl`` seconds but never past the identity's own
expiry; a refusal (L{InvalidToken}) for ``negative_ttl``, unless it may change
any moment (not ``lasting``: a signing key not published yet); an
L{AuthUnavailable} not at all, so the next request asks again.  Concurrent
checks of one token share one call to the inner verifier.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import attrs
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from monit.auth.interface import Identity, InvalidToken, ITokenVerifier
from monit.oneshot import OneShotObserver


@attrs.frozen
class _Entry:
    """A remembered answer: an identity, or the reason a token was refused."""

    identity: Identity | None
    refusal: str
    until: float

    def answer(self) -> Deferred[Identity]:
        # A fresh exception each time: a stored one would keep its traceback,
        # and with it frames whose locals hold the token.
        return succeed(self.identity) if self.identity is not None else fail(InvalidToken(self.refusal))


@implementer(ITokenVerifier)
class CachingVerifier:
    """An L{ITokenVerifier} in front of another, remembering its answers.

    ``hits`` counts answers served from the cache; ``misses`` counts the rest,
    including callers that joined a check already in flight.
    """

    log = Logger()

    def __init__(
        self,
        inner: ITokenVerifier,
        clock: IReactorTime,
        ttl: float,
        negative_ttl: float = 5.0,
        max_entries: int = 10_000,
    ) -> None:
        self._inner = inner
        self._clock = clock
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._flights: dict[bytes, OneShotObserver[Identity]] = {}
        self.hits = 0
        self.misses = 0

    def verify(self, token: str) -> Deferred[Identity]:
        """The remembered answer, else a place among the callers of the one inner check."""
        key = _key(token)
        entry = self._lookup(key)
        if entry is not None:
            self.hits += 1
            return entry.answer()
        self.misses += 1
        flight = self._flights.get(key)
        if flight is not None:
            return flight.when_fired()
        flight = self._flights[key] = OneShotObserver()
        waiter = flight.when_fired()  # before asking: the inner answer may come at once
        maybeDeferred(self._inner.verify, token).addBoth(self._settle, key)
        return waiter

    def _lookup(self, key: bytes) -> _Entry | None:
        """A live entry, freshly used; an expired one is dropped here, not by a timer."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.until <= self._clock.seconds():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _settle(self, result: Identity | Failure, key: bytes) -> None:
        """Remember the answer if it may be remembered, then hand it to every waiter.

        The waiters get their answer even if remembering it failed: a stuck
        flight would hang every later check of that token.
        """
        flight = self._flights.pop(key)
        try:
            self._remember(key, result)
        except Exception:
            self.log.failure("could not remember a token check")
        flight.fire(result)

    def _remember(self, key: bytes, result: Identity | Failure) -> None:
        now = self._clock.seconds()
        if isinstance(result, Identity):
            entry = _Entry(result, "", _keep_until(now, self._ttl, result.expires))
        elif isinstance(result.value, InvalidToken) and result.value.lasting:
            entry = _Entry(None, str(result.value), now + self._negative_ttl)
        else:
            return  # AuthUnavailable, refusals that may change soon, the unexpected: ask again next time
        if entry.until <= now:
            return
        self._entries[key] = entry
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def _keep_until(now: float, ttl: float, expires: object) -> float:
    """``ttl`` from now, never past the identity's expiry.

    An expiry that is NaN or not a number at all keeps the answer not at all:
    min() with a NaN would depend on argument order, and a string would raise.
    """
    if expires is None:
        return now + ttl
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or expires != expires:
        return now
    return min(now + ttl, expires)


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
