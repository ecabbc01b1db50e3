"""Asking again about the tokens of open streams, so a revoked token's stream ends.

An auth service's yes carries no expiry: without asking again, a stream
opened with a token the service later revokes would run until its job ends.
A stream whose identity is ``revocable`` carries one small L{Recheck} (its
token and when it is next due); the streams' shared heartbeat asks it whether
it is due, so there is no timer per stream.  Rechecks go through the same
verifier (and cache) as new requests.

A refusal ends the stream.  An auth service that cannot answer does not:
fail-closed is for new requests, and ending every open stream whenever the
service blips would turn its outage into everyone's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from monit.auth.interface import (
    AuthUnavailable,
    Identity,
    InvalidToken,
    ITokenVerifier,
    may_watch,
)

REVOKED = "token revoked"
ACCESS_REVOKED = "access revoked"


class Rechecker:
    """What every stream's recheck shares: the verifier, the period, and the tallies."""

    log = Logger()

    def __init__(self, verifier: ITokenVerifier, period: float, jitter: Callable[[], float] = random.random) -> None:
        self.verifier = verifier
        self.period = period
        self._jitter = jitter
        self.checks = 0  # rechecks started
        self.revoked = 0  # streams ended by one
        self.unavailable = 0  # rechecks that got no answer: the stream was kept

    def for_stream(self, token: str, now: float) -> Recheck:
        """A new stream's recheck, first due between half and one and a half periods
        from now: streams opened together (a reconnect storm) spread out."""
        return Recheck(self, token, now + self.period * (0.5 + self._jitter()))

    def _judge(self, identity: Identity, streams: Sequence[str]) -> str | None:
        if all(may_watch(identity, stream) for stream in streams):
            return None
        self.revoked += 1
        return ACCESS_REVOKED

    def _judge_failure(self, failure: Failure) -> str | None:
        if failure.check(InvalidToken):
            self.revoked += 1
            return REVOKED
        self.unavailable += 1
        if not failure.check(AuthUnavailable):
            self.log.failure("rechecking a stream's token failed; the stream is kept", failure)
        return None


class Recheck:
    """One stream's token and when to ask about it next; its repr never shows the token."""

    __slots__ = ("_rechecker", "_token", "due")

    def __init__(self, rechecker: Rechecker, token: str, due: float) -> None:
        self._rechecker = rechecker
        self._token = token
        self.due = due

    def __repr__(self) -> str:
        return f"<Recheck due={self.due:.1f}>"

    def run(self, now: float, streams: Sequence[str]) -> Deferred[str | None]:
        """Ask again; fire with why the stream must end, or None to keep it."""
        rechecker = self._rechecker
        self.due = now + rechecker.period
        rechecker.checks += 1
        checked = maybeDeferred(rechecker.verifier.verify, self._token)
        return checked.addCallbacks(rechecker._judge, rechecker._judge_failure, callbackArgs=(streams,))
