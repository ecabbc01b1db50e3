"""Who may watch: a real auth service, per-stream access, browsers' tokens, CORS, expiry."""
from __future__ import annotations

import json
import socket
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Site

from monit.token import mint

from streams import SECRET, Reader, auth, job_message, open_stream, start_monit
from waiting import wait_for, within

GOOD, ONLY_A1, BANNED = "good-token", "a1-token", "banned-token"


class AuthService(Resource):
    """The platform's token check, counting its calls."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.calls = 0

    def render_GET(self, request):
        self.calls += 1
        token = request.getHeader(b"x-auth-token")
        assert request.getHeader(b"authorization") == b"Bearer " + token
        request.setHeader(b"content-type", b"application/json")
        if token == GOOD.encode():
            return json.dumps({"username": "grace", "streams": "*"}).encode()
        if token == ONLY_A1.encode():
            return json.dumps({"username": "heidi", "streams": ["a1"]}).encode()
        request.setResponseCode(403 if token == BANNED.encode() else 401)
        return b"{}"


    async def stop(self) -> None:
        """Stop listening and close the connections monit's pool keeps open."""
        await self.port.stopListening()
        for protocol in list(self.factory.protocols):
            protocol.transport.loseConnection()
        await wait_for(lambda: not self.factory.protocols, what="auth service connections closed")


@pytest.fixture
def auth_service():
    service = AuthService()
    service.factory = WrappingFactory(Site(service))
    port = pytest_twisted.blockon(
        TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(service.factory))
    service.url = f"http://127.0.0.1:{port.getHost().port}/check"
    service.port = port
    yield service
    if port.connected:
        pytest_twisted.blockon(ensureDeferred(service.stop()))


@pytest.fixture
def remote_monit(nats_server, auth_service):
    service = pytest_twisted.blockon(ensureDeferred(start_monit(
        nats_server.url, jwt_secret=None, auth_url=auth_service.url, auth_timeout=1.0)))
    yield service
    pytest_twisted.blockon(service.stopService())


@pytest.fixture
def browser_monit(nats_server):
    service = pytest_twisted.blockon(ensureDeferred(start_monit(
        nats_server.url, allow_query_token=True,
        cors_origins=frozenset({"https://app.example.com"}))))
    yield service
    pytest_twisted.blockon(service.stopService())


async def get(monit, query: str, headers=None, method="GET"):
    return await within(treq.request(method, f"{monit.base_url}/events{query}", headers=headers or {},
                                     unbuffered=True))


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("token, stream, code", [
    (GOOD, "any1", 200), (ONLY_A1, "a1", 200), (ONLY_A1, "b2", 403), (BANNED, "a1", 401),
    ("unknown", "a1", 401)])
async def test_remote_verdicts(remote_monit, token, stream, code):
    response = await get(remote_monit, f"?stream={stream}", {"X-Auth-Token": token})
    assert response.code == code
    if code == 200:
        response.original._transport.loseConnection()
    else:
        assert set(await within(response.json())) == {"error"}


@pytest_twisted.ensureDeferred
async def test_a_reconnect_storm_with_one_token_makes_one_auth_call(remote_monit, auth_service):
    responses = await within(DeferredList(
        [ensureDeferred(get(remote_monit, f"?stream=s{n % 10}", {"X-Auth-Token": GOOD}))
         for n in range(300)],
        consumeErrors=True), timeout=30)
    assert [ok and response.code for ok, response in responses] == [200] * 300
    assert auth_service.calls == 1
    for _, response in responses:
        response.original._transport.loseConnection()
    await wait_for(lambda: len(remote_monit.web.streams) == 0)


@pytest_twisted.ensureDeferred
async def test_auth_service_down_new_clients_503_existing_streams_flow(
        remote_monit, auth_service, publisher):
    existing = await open_stream(remote_monit, "d1", {"X-Auth-Token": GOOD})
    await auth_service.stop()
    response = await get(remote_monit, "?stream=d1", {"X-Auth-Token": "never-seen", "Accept": "*/*"})
    assert response.code == 503
    assert response.headers.getRawHeaders("retry-after") == ["5"]
    browser = await get(remote_monit, "?stream=d1",
                        {"X-Auth-Token": "never-seen-either", "Accept": "text/event-stream"})
    assert browser.code == 200
    body = await within(treq.content(browser))
    assert body.startswith(b"retry: ") and b'event: error\ndata: {"error":' in body
    publisher.publish("monitor.user", job_message("d1", "still flowing"))
    await wait_for(lambda: existing.data(), what="an event on the existing stream")
    assert existing.data() == [{"body": "still flowing", "level": "INFO"}]


@pytest_twisted.ensureDeferred
async def test_a_jwt_streams_claim_limits_what_its_user_may_watch(browser_monit):
    token = mint(SECRET, "ivan", 600, streams=["mine"])
    assert (await get(browser_monit, "?stream=yours", {"X-Auth-Token": token})).code == 403
    reader = await open_stream(browser_monit, "mine", {"X-Auth-Token": token})
    reader.close()


@pytest_twisted.ensureDeferred
async def test_query_token_and_cookie_are_accepted_only_when_enabled(browser_monit, nats_server):
    token = auth()["X-Auth-Token"]
    query = await open_stream(browser_monit, "q1", {}, query=f"&token={token}")
    cookie = await open_stream(browser_monit, "q1", {"Cookie": f"monit_token={token}"})
    query.close()
    cookie.close()
    strict = await start_monit(nats_server.url)
    try:
        assert (await get(strict, f"?stream=q1&token={token}")).code == 401
        assert (await get(strict, "?stream=q1", {"Cookie": f"monit_token={token}"})).code == 401
    finally:
        await strict.stopService()


@pytest_twisted.ensureDeferred
async def test_cors_preflight_and_actual_request(browser_monit):
    allowed = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET",
               "Access-Control-Request-Headers": "x-auth-token"}
    preflight = await get(browser_monit, "?stream=c1", allowed, method="OPTIONS")
    assert preflight.code == 204
    headers = preflight.headers
    assert headers.getRawHeaders("access-control-allow-origin") == ["https://app.example.com"]
    assert headers.getRawHeaders("access-control-allow-credentials") == ["true"]
    assert "X-Auth-Token" in headers.getRawHeaders("access-control-allow-headers")[0]
    other = await get(browser_monit, "?stream=c1", {"Origin": "https://evil.example"}, method="OPTIONS")
    assert not other.headers.hasHeader("access-control-allow-origin")
    actual = await get(browser_monit, "?stream=c1", {**auth(), "Origin": "https://app.example.com"})
    assert actual.code == 200
    assert actual.headers.getRawHeaders("access-control-allow-origin") == ["https://app.example.com"]
    actual.original._transport.loseConnection()
    refused = await get(browser_monit, "?stream=c1", {"Origin": "https://evil.example"})
    assert refused.code == 401 and not refused.headers.hasHeader("access-control-allow-origin")


@pytest_twisted.ensureDeferred
async def test_a_stream_ends_when_its_token_expires(browser_monit):
    token = mint(SECRET, "judy", 1)
    response = await get(browser_monit, "?stream=e1", {"X-Auth-Token": token})
    assert response.code == 200
    reader = Reader(response)
    await within(reader.done, timeout=5)
    assert reader.events[-1].event == "error"
    assert json.loads(reader.events[-1].data) == {"error": "token expired"}


@pytest_twisted.ensureDeferred
async def test_tokens_never_reach_the_log(browser_monit, remote_monit):
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        secret_token = mint(SECRET, "kim", 600)
        reader = await open_stream(browser_monit, "l1", {}, query=f"&token={secret_token}")
        reader.close()
        await get(browser_monit, "?stream=l1&token=not-a-valid-token-at-all")
        await get(remote_monit, "?stream=l1", {"X-Auth-Token": "remote-secret-token"})
        await wait_for(lambda: any("closed for kim" in str(event.get("log_format", "")) or
                                   event.get("user") == "kim" for event in seen))
    finally:
        globalLogPublisher.removeObserver(seen.append)
    text = repr(seen)
    for token in (secret_token, "not-a-valid-token-at-all", "remote-secret-token"):
        assert token not in text


@pytest_twisted.ensureDeferred
async def test_a_connection_that_never_finishes_its_headers_is_closed(remote_monit):
    """Nobody holds a socket open by trickling a request: the auth timeout bounds it."""
    sock = socket.create_connection(("127.0.0.1", int(remote_monit.base_url.rsplit(":", 1)[1])))
    sock.setblocking(False)
    sock.sendall(b"GET /events?stream=x HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()

    def closed() -> bool:
        try:
            return sock.recv(4096) == b""
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True

    try:
        await wait_for(closed, timeout=10, what="the server closing the connection")
    finally:
        sock.close()
    assert time.monotonic() - started < 5


@pytest_twisted.ensureDeferred
async def test_the_request_timeout_does_not_cut_an_idle_stream(nats_server):
    """The auth timeout bounds getting a request in, not how long a stream may be quiet."""
    monit = await start_monit(nats_server.url, auth_timeout=0.2, heartbeat=60)
    try:
        reader = await open_stream(monit, "quiet")
        with pytest.raises(TimeoutError):
            await wait_for(lambda: reader.ended, timeout=1.0, what="the idle stream ending")
        assert len(monit.web.streams) == 1
        reader.close()
    finally:
        await monit.stopService()
