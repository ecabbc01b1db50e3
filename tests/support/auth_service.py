"""A platform's token check (``--auth-url``): over real HTTP, counting its calls, to hold or answer; and one that
gives every check the one answer the test sets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.server import Request as WebRequest

from loopback import QuietSite
from waiting import wait_for

GOOD, ONLY_A1, BANNED = "good-token", "a1-token", "banned-token"
# A 2xx that is not a verdict: a proxy's login page, a JSON array, an empty 204.
LOGIN_PAGE, ARRAY, EMPTY = "login-page-token", "array-token", "empty-token"


class AuthService(Resource):
    """The platform's token check, counting its calls.

    Tokens starting ``slow-`` are valid users who wait, with ``hold`` set,
    until ``release()``; ``revoke()`` takes a token back.
    """

    isLeaf = True
    # Where it listens, once the fixture has it served.
    url: str
    port: IListeningPort
    factory: WrappingFactory

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.queries: list[dict[bytes, list[bytes]] | None] = []
        self.hold = False
        self.held: list[WebRequest] = []
        self.most_held = 0
        self.revoked: set[str] = set()

    def render_GET(self, request: WebRequest) -> bytes | int:
        self.calls += 1
        self.queries.append(request.args)
        token = request.getHeader(b"x-auth-token")
        assert token is not None
        assert request.getHeader(b"authorization") == b"Bearer " + token
        request.setHeader(b"content-type", b"application/json")
        if token.startswith(b"slow-") and self.hold:
            self.held.append(request)
            self.most_held = max(self.most_held, len(self.held))
            request.notifyFinish().addBoth(lambda _: self._let_go(request))
            return NOT_DONE_YET
        if token.decode() in self.revoked:
            request.setResponseCode(401)
            return b"{}"
        if token == GOOD.encode() or token.startswith(b"slow-"):
            return json.dumps({"username": "grace", "streams": "*"}).encode()
        if token == ONLY_A1.encode():
            return json.dumps({"username": "heidi", "streams": ["a1"]}).encode()
        if token == LOGIN_PAGE.encode():
            request.setHeader(b"content-type", b"text/html")
            return b"<html><body><form action=/login>Please sign in</form></body></html>"
        if token == ARRAY.encode():
            return json.dumps([{"username": "grace"}]).encode()
        if token == EMPTY.encode():
            request.setResponseCode(204)
            return b""
        request.setResponseCode(403 if token == BANNED.encode() else 401)
        return b"{}"

    def _let_go(self, request: WebRequest) -> None:
        if request in self.held:
            self.held.remove(request)

    def release(self) -> None:
        """Answer every held check: valid."""
        self.hold = False
        for request in list(self.held):
            request.write(json.dumps({"username": "grace", "streams": "*"}).encode())
            request.finish()

    def revoke(self, token: str) -> None:
        self.revoked.add(token)

    async def stop(self) -> None:
        """Stop listening and close the connections monit's pool keeps open."""
        stopped = self.port.stopListening()
        if stopped is not None:
            await stopped
        for protocol in list(self.factory.protocols):
            protocol.transport.loseConnection()
        await wait_for(lambda: not self.factory.protocols, what="auth service connections closed")


class OneAnswerAuthService(Resource):
    """Answers every check with one status and body, which the test may change, and records
    what it was sent; with ``hang`` set it never answers. For StubTreq, or served on loopback."""

    isLeaf = True

    def __init__(self, code: int = 200, body: bytes = b"{}", hang: bool = False) -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.hang = hang
        self.calls: list[dict[str, Any]] = []
        self.lost: list[Failure] = []
        self.set_cookie = False

    def render_GET(self, request: WebRequest) -> bytes | int:
        self.calls.append(
            {
                "x-auth-token": request.getHeader(b"x-auth-token"),
                "authorization": request.requestHeaders.getRawHeaders(b"authorization"),
                "cookie": request.getHeader(b"cookie"),
                "port": request.getClientAddress().port,
            }
        )
        if self.hang:
            request.notifyFinish().addErrback(self.lost.append)
            return NOT_DONE_YET
        if self.set_cookie:
            request.addCookie(b"session", b"first-caller", path=b"/")
        request.setResponseCode(self.code)
        return self.body


@pytest.fixture
def auth_service() -> Iterator[AuthService]:
    service = AuthService()
    site = QuietSite(service)
    service.factory = WrappingFactory(site)
    port = pytest_twisted.blockon(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(service.factory))
    service.url = f"http://127.0.0.1:{port.getHost().port}/check"
    service.port = port
    yield service
    if port.connected:
        pytest_twisted.blockon(ensureDeferred(service.stop()))
