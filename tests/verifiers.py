"""A token verifier the test answers by hand: the one fake ITokenVerifier of the auth tests."""
from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from zope.interface import implementer

from monit.auth.interface import Identity, ITokenVerifier


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
