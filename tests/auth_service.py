"""A platform's token check over real HTTP (``--auth-url``), counting its calls, to hold or answer."""
from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

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

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.queries = []
        self.hold = False
        self.held = []
        self.most_held = 0
        self.revoked = set()

    def render_GET(self, request):
        self.calls += 1
        self.queries.append(request.args)
        token = request.getHeader(b"x-auth-token")
        assert request.getHeader(b"authorization") == b"Bearer " + token
        request.setHeader(b"content-type", b"application/json")
        if token.startswith(b"slow-") and self.hold:
            self.held.append(request)
            self.most_held = max(self.most_held, len(self.held))
            request.notifyFinish().addBoth(lambda _: request in self.held and self.held.remove(request))
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
        await self.port.stopListening()
        for protocol in list(self.factory.protocols):
            protocol.transport.loseConnection()
        await wait_for(lambda: not self.factory.protocols, what="auth service connections closed")


@pytest.fixture
def auth_service():
    service = AuthService()
    site = Site(service)
    site.log = lambda request: None  # its access log is the auth service's, not monit's
    service.factory = WrappingFactory(site)
    port = pytest_twisted.blockon(
        TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(service.factory))
    service.url = f"http://127.0.0.1:{port.getHost().port}/check"
    service.port = port
    yield service
    if port.connected:
        pytest_twisted.blockon(ensureDeferred(service.stop()))
