"""treq's StubTreq, declared as the HTTP client it stands in for."""

from __future__ import annotations

from collections.abc import Callable

from treq.response import _Response
from treq.testing import StubTreq
from twisted.internet.defer import Deferred


class StubHTTP(StubTreq):
    """StubTreq with the request methods it makes at run time declared, so it passes where treq's client does."""

    get: Callable[..., Deferred[_Response]]
    head: Callable[..., Deferred[_Response]]
    post: Callable[..., Deferred[_Response]]
    request: Callable[..., Deferred[_Response]]
