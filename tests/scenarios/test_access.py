"""Who may watch: a real auth service, per-stream access, browsers' tokens, CORS, expiry."""

from __future__ import annotations

import json
import socket
import time

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.logger import globalLogPublisher

from monit.token import mint

from auth_service import ARRAY, BANNED, EMPTY, GOOD, LOGIN_PAGE, ONLY_A1
from streams import SECRET, Reader, auth, job_message, open_stream, start_monit
from waiting import wait_for, within


@pytest.fixture
def remote_monit(nats_server, auth_service):
    service = pytest_twisted.blockon(
        ensureDeferred(start_monit(nats_server.url, jwt_secret=None, auth_url=auth_service.url, auth_timeout=1.0))
    )
    yield service
    pytest_twisted.blockon(service.stopService())


@pytest.fixture
def rechecking_monit(nats_server, auth_service):
    """Asks again about open streams' tokens every half second (heartbeat 0.2 s)."""
    service = pytest_twisted.blockon(
        ensureDeferred(
            start_monit(nats_server.url, jwt_secret=None, auth_url=auth_service.url, auth_timeout=1.0, auth_recheck=0.5)
        )
    )
    yield service
    pytest_twisted.blockon(service.stopService())


@pytest.fixture
def browser_monit(nats_server):
    service = pytest_twisted.blockon(
        ensureDeferred(
            start_monit(nats_server.url, allow_query_token=True, cors_origins=frozenset({"https://app.example.com"}))
        )
    )
    yield service
    pytest_twisted.blockon(service.stopService())


async def get(monit, query: str, headers=None, method="GET"):
    return await within(treq.request(method, f"{monit.base_url}/events{query}", headers=headers or {}, unbuffered=True))


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "token, stream, code",
    [
        (GOOD, "any1", 200),
        (ONLY_A1, "a1", 200),
        (ONLY_A1, "b2", 403),
        (BANNED, "a1", 401),
        ("unknown", "a1", 401),
        (LOGIN_PAGE, "a1", 503),
        (ARRAY, "a1", 503),
        (EMPTY, "a1", 503),
    ],
)
async def test_remote_verdicts(remote_monit, token, stream, code):
    response = await get(remote_monit, f"?stream={stream}", {"X-Auth-Token": token})
    assert response.code == code
    if code == 200:
        response.original._transport.loseConnection()
    else:
        assert set(await within(response.json())) == {"error"}


@pytest_twisted.ensureDeferred
async def test_a_yes_that_is_not_a_verdict_fails_closed_and_is_logged(remote_monit):
    """A proxy's login page with a 200 once opened every stream as user "unknown"."""
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        response = await get(remote_monit, "?stream=secret-job", {"X-Auth-Token": LOGIN_PAGE, "Accept": "*/*"})
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert response.code == 503
    assert response.headers.getRawHeaders("retry-after") == ["5"]
    assert await within(response.json()) == {"error": "token cannot be checked now"}
    assert len(remote_monit.web.streams) == 0
    reasons = [event.get("reason") for event in seen if event.get("url")]
    assert reasons == ["malformed reply: not JSON"]


@pytest_twisted.ensureDeferred
async def test_checks_in_flight_to_a_slow_auth_service_are_bounded(nats_server, auth_service):
    """Distinct tokens against a slow service: at most --auth-concurrency reach it, the
    rest get 503 at once (not after the auth timeout), and are counted."""
    monit = await start_monit(
        nats_server.url, jwt_secret=None, auth_url=auth_service.url, auth_timeout=20.0, auth_concurrency=5
    )
    auth_service.hold = True
    try:
        started = time.monotonic()
        pending = [
            ensureDeferred(get(monit, "?stream=slow", {"X-Auth-Token": f"slow-{n}", "Accept": "*/*"}))
            for n in range(40)
        ]
        await wait_for(lambda: sum(d.called for d in pending) == 35, what="35 answered at once")
        assert time.monotonic() - started < 10, "refused at once, not after the 20 s auth timeout"
        refused = [d for d in pending if d.called]
        for d in refused:
            response = await d
            assert response.code == 503
            assert response.headers.getRawHeaders("retry-after") == ["5"]
        assert len(auth_service.held) == 5 and auth_service.most_held == 5
        assert monit.auth.remote.refused == 35 and monit.auth.remote.in_flight == 5
        # a cached answer and a join onto a check in flight are not new checks
        joined = ensureDeferred(get(monit, "?stream=slow", {"X-Auth-Token": "slow-0"}))
        auth_service.release()
        held = [d for d in pending if d not in refused]
        for response in [await within(d) for d in held] + [await within(joined)]:
            assert response.code == 200
            response.original._transport.loseConnection()
        assert monit.auth.remote.refused == 35 and auth_service.most_held == 5
        await wait_for(lambda: monit.auth.remote.in_flight == 0, what="every slot free")
        again = await get(monit, "?stream=slow", {"X-Auth-Token": "slow-1"})
        assert again.code == 200 and auth_service.calls == 5, "a cached answer"
        again.original._transport.loseConnection()
    finally:
        auth_service.release()
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_revoked_tokens_open_stream_ends(rechecking_monit, auth_service, publisher):
    revoked = await open_stream(rechecking_monit, "r1", {"X-Auth-Token": "slow-revoked-soon"})
    kept = await open_stream(rechecking_monit, "r1", {"X-Auth-Token": GOOD})
    publisher.publish("monitor.user", job_message("r1", "before"))
    await wait_for(lambda: revoked.data() and kept.data(), what="the event on both streams")
    auth_service.revoke("slow-revoked-soon")
    await within(revoked.done, timeout=10)
    assert revoked.events[-1].event == "monit.error"
    assert json.loads(revoked.events[-1].data) == {"error": "token revoked"}
    assert rechecking_monit.web.rechecker.revoked == 1
    publisher.publish("monitor.user", job_message("r1", "after"))
    await wait_for(lambda: len(kept.data()) == 2, what="the next event on the stream kept")
    assert not kept.ended and len(rechecking_monit.web.streams) == 1
    kept.close()


@pytest_twisted.ensureDeferred
async def test_rechecks_while_the_auth_service_is_down_keep_streams_open(rechecking_monit, auth_service, publisher):
    """Fail closed is for new requests; ending every stream on an auth outage would be worse."""
    reader = await open_stream(rechecking_monit, "k1", {"X-Auth-Token": GOOD})
    await auth_service.stop()
    rechecker = rechecking_monit.web.rechecker
    unavailable = rechecker.unavailable
    await wait_for(lambda: rechecker.unavailable >= unavailable + 3, what="three rechecks without an answer")
    publisher.publish("monitor.user", job_message("k1", "still flowing"))
    await wait_for(lambda: reader.data(), what="an event on the stream")
    assert not reader.ended and rechecker.revoked == 0
    reader.close()


@pytest_twisted.ensureDeferred
async def test_the_auth_urls_query_is_sent_but_never_logged(nats_server, auth_service):
    seen = []
    globalLogPublisher.addObserver(seen.append)
    monit = await start_monit(
        nats_server.url, jwt_secret=None, auth_timeout=1.0, auth_url=auth_service.url + "?apikey=sekrit-key-42"
    )
    try:
        assert (await get(monit, "?stream=q", {"X-Auth-Token": "bad-token"})).code == 401
        assert auth_service.queries[-1] == {b"apikey": [b"sekrit-key-42"]}
        await auth_service.stop()
        assert (await get(monit, "?stream=q", {"X-Auth-Token": "another-token", "Accept": "*/*"})).code == 503
    finally:
        await monit.stopService()
        globalLogPublisher.removeObserver(seen.append)
    urls = [event["url"] for event in seen if str(event.get("url", "")).startswith("http")]
    assert urls == [auth_service.url + "?apikey=***"]
    leaks = [event for event in seen if "sekrit-key-42" in repr(event)]
    assert not leaks, leaks[:3]


@pytest_twisted.ensureDeferred
async def test_a_reconnect_storm_with_one_token_makes_one_auth_call(remote_monit, auth_service):
    responses = await within(
        DeferredList(
            [ensureDeferred(get(remote_monit, f"?stream=s{n % 10}", {"X-Auth-Token": GOOD})) for n in range(300)],
            consumeErrors=True,
        ),
        timeout=30,
    )
    assert [ok and response.code for ok, response in responses] == [200] * 300
    assert auth_service.calls == 1
    for _, response in responses:
        response.original._transport.loseConnection()
    await wait_for(lambda: len(remote_monit.web.streams) == 0)


@pytest_twisted.ensureDeferred
async def test_auth_service_down_new_clients_503_existing_streams_flow(remote_monit, auth_service, publisher):
    existing = await open_stream(remote_monit, "d1", {"X-Auth-Token": GOOD})
    await auth_service.stop()
    response = await get(remote_monit, "?stream=d1", {"X-Auth-Token": "never-seen", "Accept": "*/*"})
    assert response.code == 503
    assert response.headers.getRawHeaders("retry-after") == ["5"]
    browser = await get(
        remote_monit, "?stream=d1", {"X-Auth-Token": "never-seen-either", "Accept": "text/event-stream"}
    )
    assert browser.code == 200
    body = await within(treq.content(browser))
    assert body.startswith(b"retry: ") and b'event: monit.error\ndata: {"error":' in body
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
    allowed = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-auth-token",
    }
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
    assert reader.events[-1].event == "monit.error"
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
        await wait_for(
            lambda: any(
                "closed for kim" in str(event.get("log_format", "")) or event.get("user") == "kim" for event in seen
            )
        )
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
            data: bytes = sock.recv(4096)
            return data == b""
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
