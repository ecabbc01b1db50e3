"""At most so many token checks in flight at once; past that, refused at once, not queued.

A slow auth service or Redis must not be buried under ever more checks, nor
monit's memory under the checks waiting for it: a check past the bound is
L{AuthUnavailable} at once, counted in ``refused``, and said once, then how
many more every ten seconds.

A check holds its slot until the inner verifier's Deferred fires. So the
inner's Deferred is the work itself: a check that runs out of time frees its
slot when its work ends, at once if the work is abandoned then (an HTTP
request, L{monit.auth.remote}), when the answer comes if it must not be
(a Redis ``GET`` keeps its place, L{monit.auth.redis_verifier.Deadline}).
"""

from __future__ import annotations

from typing import TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from monit.auth.interface import AuthUnavailable, Identity, InvalidToken, ITokenVerifier, check_header_token
from monit.tally import Tally

DEFAULT_CONCURRENCY = 100
T = TypeVar("T")


@implementer(ITokenVerifier)
class BoundedVerifier(Service):
    """An L{ITokenVerifier} in front of another, with at most ``concurrency`` of its checks in flight.

    A token that could never be asked about (L{check_header_token}) is
    refused as invalid before it takes a slot or counts as refused. Refusals
    are said in the log of the verifier bounded (``log``), about ``kind``
    (where its checks go), as ``checks`` (what it calls them). A service: at
    stop, the refusals held are said.
    """

    def __init__(
        self,
        inner: ITokenVerifier,
        clock: IReactorTime,
        concurrency: int = DEFAULT_CONCURRENCY,
        *,
        log: Logger,
        kind: str,
        checks: str = "checks",
    ) -> None:
        self._inner = inner
        self._concurrency = concurrency
        self._kind = kind
        self._checks = checks
        self.in_flight = 0
        self.refused = 0  # checks refused at once: ``concurrency`` were in flight
        self.refusals = Tally(clock, log, f"refused token {checks} at the concurrency bound")

    def verify(self, token: str) -> Deferred[Identity]:
        """The inner verifier's answer, if a slot is free."""
        try:
            check_header_token(token)
        except InvalidToken as e:
            return fail(e)
        if self.in_flight >= self._concurrency:
            return fail(self._refuse())
        self.in_flight += 1
        return maybeDeferred(self._inner.verify, token).addBoth(self._landed)

    def stopService(self) -> None:
        super().stopService()
        self.refusals.stop()

    def _landed(self, outcome: T) -> T:
        self.in_flight -= 1
        return outcome

    def _refuse(self) -> AuthUnavailable:
        """Count a check refused at the bound; say so once, then how many more, every ten seconds."""
        self.refused += 1
        self.refusals.add(self._kind, f"{self._concurrency} {self._checks} are in flight")
        return AuthUnavailable("too many token checks in flight")
