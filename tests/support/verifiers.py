"""Fake token verifiers for the auth tests: one the test answers by hand, one that raises."""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from zope.interface import implementer

from monit.auth.interface import AuthUnavailable, Identity, ITokenVerifier


@implementer(ITokenVerifier)
@attrs.define
class HandVerifier:
    """Records each call; the test fires its Deferred."""

    calls: list[tuple[str, Deferred]] = attrs.Factory(list)

    def verify(self, token: str) -> Deferred[Identity]:
        d: Deferred[Identity] = Deferred()
        self.calls.append((token, d))
        return d

    def answer(self, result: Identity | Exception, index: int = -1) -> None:
        d = self.calls[index][1]
        if isinstance(result, Exception):
            d.errback(result)
        else:
            d.callback(result)


@implementer(ITokenVerifier)
class RaisingVerifier:
    """Raises instead of returning a Deferred, as a verifier that is not connected might."""

    def verify(self, token: str) -> Deferred[Identity]:
        raise AuthUnavailable("not connected")
