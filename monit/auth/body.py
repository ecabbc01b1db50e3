"""An HTTP response's body, read up to a limit, whose reading can be given up.

The one reader of the bodies auth fetches: the auth service's answers
(L{monit.auth.remote}) and the signing keys (L{monit.auth.jwks}). treq's own
readers have no canceller: a fetch that times out while the body is still
dripping in would leave its connection open until the server ends it. Here,
cancelling (as ``addTimeout`` does) or passing the limit closes the
connection at once.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse


def read_body(response: IResponse, limit: int, too_long: Callable[[], Exception]) -> Deferred[bytes]:
    """The whole body; fails with ``too_long()`` past ``limit`` bytes. Cancelled, it closes the connection."""
    reader = _CappedBody(limit, too_long)
    response.deliverBody(reader)
    return reader.done


class _CappedBody(Protocol):
    """Collect a body up to a limit; past it, or when cancelled, close the connection."""

    def __init__(self, limit: int, too_long: Callable[[], Exception]) -> None:
        self.done: Deferred[bytes] = Deferred(lambda _: self._abort())
        self._limit = limit
        self._too_long = too_long
        self._chunks: list[bytes] = []
        self._size = 0
        self._aborted = False

    def dataReceived(self, data: bytes) -> None:
        if self._aborted:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._abort()
            self.done.errback(self._too_long())
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._aborted:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)

    def _abort(self) -> None:
        self._aborted = True
        self.transport.stopProducing()  # type: ignore[union-attr]
