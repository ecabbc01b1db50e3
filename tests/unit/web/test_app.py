"""The web app through StubTreq: status codes, headers, JSON errors and the stream."""

import base64
import hashlib
import json

import jwt
import pytest
import treq
from treq.testing import StubTreq
from twisted.web.resource import Resource

from monit.auth.cache import CachingVerifier
from monit.auth.jwt_verifier import JWTVerifier, quiet_key_length
from monit.auth.modes import cache_ttl
from monit.auth.remote import RemoteVerifier
from monit.registry import InboxRegistry
from monit.service import auth_options, registry_options, web_options
from monit.settings import Settings
from monit.token import mint
from monit.web.app import MonitWeb, Readiness

from deferreds import result_of

SECRET = "test-secret"
URL = "http://monit.example/events"
NOW = 1_700_000_000
pytestmark = pytest.mark.clock_starts_at(NOW)
BASE = NOW * 1_000_000  # core mode's ids go on from the start time


@pytest.fixture
def registry(clock):
    return InboxRegistry(clock, **registry_options(Settings(grace=10)))


@pytest.fixture
def web(clock, registry):
    return MonitWeb(registry, JWTVerifier.with_secret(SECRET, clock), clock, **web_options(Settings(heartbeat=15)))


@pytest.fixture
def stub(web):
    return StubTreq(web.resource())


@pytest.fixture
def token(clock):
    return mint(SECRET, "alice", 3600, now=clock.seconds())


def get(stub, url, headers=None):
    response = result_of(stub.get(url, headers=headers or {}))
    return response


def json_body(stub, response):
    d = response.json()
    stub.flush()
    return result_of(d)


def test_missing_stream_is_400(stub, token):
    response = get(stub, URL, {"X-Auth-Token": token})
    assert response.code == 400
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    assert "stream" in json_body(stub, response)["error"]


@pytest.mark.parametrize("query", ["?stream=", "?stream=a&stream=", "?stream=a%20b", "?stream=%ff"])
def test_bad_stream_is_400(stub, token, query):
    response = get(stub, URL + query, {"X-Auth-Token": token})
    assert response.code == 400
    assert json_body(stub, response)["error"]


def test_missing_token_is_401_with_a_bearer_challenge(stub):
    response = get(stub, URL + "?stream=job")
    assert response.code == 401
    assert json_body(stub, response) == {"error": "missing token: send X-Auth-Token or Authorization: Bearer"}
    assert response.headers.getRawHeaders("www-authenticate") == ['Bearer realm="monit"']


def test_a_query_token_that_is_not_read_is_named(stub, token):
    response = get(stub, URL + "?stream=job&token=" + token)
    assert response.code == 401
    assert "(?token= is read only with --allow-query-token)" in json_body(stub, response)["error"]


def test_where_tokens_go_names_the_query_when_it_is_allowed(clock, registry):
    web = MonitWeb(
        registry, JWTVerifier.with_secret(SECRET, clock), clock, **web_options(Settings(allow_query_token=True))
    )
    stub = StubTreq(web.resource())
    response = get(stub, URL + "?stream=job")
    assert json_body(stub, response)["error"].endswith(", or ?token= or the monit_token cookie")


@pytest.mark.parametrize(
    "claims, algorithm, secret, why",
    [
        ({"exp": NOW - 1}, "HS256", SECRET, "token expired"),
        ({"nbf": NOW + 60}, "HS256", SECRET, "token not valid yet"),
        ({}, "HS256", "wrong-secret-that-is-long-enough-for-hs256", "bad signature"),
        ({}, "HS512", SECRET, "algorithm not allowed"),
    ],
)
def test_a_refused_token_is_401_saying_why(stub, claims, algorithm, secret, why, events):
    with quiet_key_length():
        refused = jwt.encode({"username": "mallory", **claims}, secret, algorithm=algorithm)
    response = get(stub, URL + "?stream=job", {"X-Auth-Token": refused})
    assert response.code == 401
    assert json_body(stub, response) == {"error": f"invalid token: {why}"}
    assert response.headers.getRawHeaders("www-authenticate") == [
        f'Bearer realm="monit", error="invalid_token", error_description="invalid token: {why}"'
    ]
    assert any(event.get("reason") == f"invalid token: {why}" for event in events)


def test_a_malformed_token_is_401_saying_so(stub):
    response = get(stub, URL + "?stream=job", {"Authorization": "Bearer not-a-jwt"})
    assert json_body(stub, response) == {"error": "invalid token: malformed token"}


@pytest.mark.parametrize("exp", [10**400, float("nan"), float("inf"), 1e308], ids=["400-digits", "nan", "inf", "1e308"])
def test_an_exp_past_any_date_is_401_not_503_nor_never_expiring(stub, clock, exp, events):
    with quiet_key_length():
        odd = jwt.encode({"username": "mallory", "exp": exp}, SECRET, algorithm="HS256")
    response = get(stub, URL + "?stream=job", {"X-Auth-Token": odd})
    assert response.code == 401
    assert json_body(stub, response)["error"].startswith("invalid token: ")
    assert not [event for event in events if "log_failure" in event]


def test_unknown_path_is_404_json(stub):
    response = get(stub, "http://monit.example/nope")
    assert response.code == 404
    assert json_body(stub, response) == {"error": "not found"}


def test_wrong_method_is_405_json(stub):
    response = result_of(stub.post(URL + "?stream=job"))
    assert response.code == 405
    assert response.headers.getRawHeaders("allow") == ["GET, HEAD, OPTIONS"]
    assert json_body(stub, response) == {"error": "method not allowed"}


def read_stream(stub, response):
    chunks = []
    done = treq.collect(response, chunks.append)
    stub.flush()
    return chunks, done


def test_stream_headers_history_live_events_and_end(stub, registry, clock, token):
    registry.open("job", '{"id":"job"}', "service.create")
    response = get(stub, URL + "?stream=job", {"Authorization": "Bearer " + token})
    assert response.code == 200
    headers = response.headers
    assert headers.getRawHeaders("content-type") == ["text/event-stream; charset=utf-8"]
    assert headers.getRawHeaders("cache-control") == ["no-cache"]
    assert headers.getRawHeaders("x-accel-buffering") == ["no"]
    chunks, done = read_stream(stub, response)
    registry.publish("job", '{"body":"live"}')
    registry.close("job", '{"id":"job"}', "service.create.done")
    clock.advance(0)
    stub.flush()
    body = b"".join(chunks)
    assert body.startswith(b"retry: 3000\n\n")
    assert body.index(b"event: service.create\n") < body.index(b'data: {"body":"live"}')
    assert body.endswith(b'id: %d\nevent: service.create.done\ndata: {"id":"job"}\n\n' % (BASE + 3))
    assert not done.called
    clock.advance(10)
    stub.flush()
    result_of(done)
    assert registry.get("job").closed


def test_reconnect_after_the_end_is_204(stub, registry, clock, token):
    registry.open("job", "{}", "service.create")
    registry.close("job", "{}", "service.create.done")
    clock.advance(10)
    response = get(stub, URL + "?stream=job", {"X-Auth-Token": token, "Last-Event-ID": str(BASE + 2)})
    assert response.code == 204
    response = get(stub, URL + f"?stream=job&lastEventId={BASE + 1}", {"X-Auth-Token": token})
    assert response.code == 200
    chunks, done = read_stream(stub, response)
    result_of(done)
    assert b"".join(chunks) == b"retry: 3000\n\nid: %d\nevent: service.create.done\ndata: {}\n\n" % (BASE + 2)


def test_last_event_id_replays_only_what_was_missed(stub, registry, token):
    for n in range(5):
        registry.publish("job", str(n))
    response = get(stub, URL + "?stream=job", {"X-Auth-Token": token, "Last-Event-ID": str(BASE + 3)})
    chunks, _ = read_stream(stub, response)
    assert b"".join(chunks) == b"retry: 3000\n\nid: %d\ndata: 3\n\nid: %d\ndata: 4\n\n" % (BASE + 4, BASE + 5)


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "9" * 30])
def test_bad_last_event_id_is_400(stub, token, value):
    response = get(stub, URL + "?stream=job", {"X-Auth-Token": token, "Last-Event-ID": value})
    assert response.code == 400


def limited_stub(clock, registry, **limits):
    web = MonitWeb(registry, JWTVerifier.with_secret(SECRET, clock), clock, **web_options(Settings(**limits)))
    return StubTreq(web.resource())


def test_stream_limit_is_503_with_retry_after_for_plain_clients(clock, registry, token):
    stub = limited_stub(clock, registry, max_streams=1)
    assert get(stub, URL + "?stream=a", {"X-Auth-Token": token}).code == 200
    response = get(stub, URL + "?stream=b", {"X-Auth-Token": token, "Accept": "*/*"})
    assert response.code == 503
    assert response.headers.getRawHeaders("retry-after") == ["5"]
    assert json_body(stub, response) == {"error": "too many streams"}


def test_limits_are_a_retryable_stream_for_event_source(clock, token):
    registry = InboxRegistry(clock, **registry_options(Settings(max_inboxes=1)))
    stub = limited_stub(clock, registry)
    assert get(stub, URL + "?stream=a", {"X-Auth-Token": token}).code == 200
    response = get(stub, URL + "?stream=b", {"X-Auth-Token": token, "Accept": "text/event-stream"})
    assert response.code == 200
    chunks, done = read_stream(stub, response)
    result_of(done)
    assert b"".join(chunks) == (b'retry: 5000\n\nevent: monit.error\ndata: {"error":"too many inboxes"}\n\n')


def test_healthz_and_readyz(clock, registry):
    state = {"nats": False, "listening": True}

    def readiness() -> Readiness:
        return Readiness(state, [] if state["nats"] else ["NATS: lost the connection"])

    web = MonitWeb(
        registry, JWTVerifier.with_secret(SECRET, clock), clock, **web_options(Settings()), readiness=readiness
    )
    stub = StubTreq(web.resource())
    assert get(stub, "http://monit.example/healthz").code == 200
    response = get(stub, "http://monit.example/readyz")
    assert response.code == 503
    assert json_body(stub, response) == {
        "ready": False,
        "nats": False,
        "listening": True,
        "problems": ["NATS: lost the connection"],
    }
    state["nats"] = True
    assert get(stub, "http://monit.example/readyz").code == 200


def test_unknown_stream_is_created_by_the_reader(stub, registry, token):
    response = get(stub, URL + "?stream=fresh", {"X-Auth-Token": token})
    assert response.code == 200
    assert registry.get("fresh").subscribers


def test_keepalive_comments_on_the_heartbeat(stub, web, clock, token):
    web.startService()
    response = get(stub, URL + "?stream=job", {"X-Auth-Token": token})
    chunks, _ = read_stream(stub, response)
    clock.advance(15)
    stub.flush()
    assert b"".join(chunks).endswith(b": keep-alive\n\n")
    web.stopService()


def test_shutdown_ends_every_stream_with_a_retry_hint(stub, web, token):
    response = get(stub, URL + "?stream=job", {"X-Auth-Token": token})
    chunks, done = read_stream(stub, response)
    web.stopService()
    stub.flush()
    result_of(done)
    assert len(web.streams) == 0
    last = b"".join(chunks).split(b"\n\n")[-2]
    assert last.startswith(b"retry: ") and 1500 <= int(last[7:]) <= 3000


def test_error_bodies_are_short_json(stub):
    response = get(stub, URL)
    body = json_body(stub, response)
    assert list(body) == ["error"] and len(json.dumps(body)) < 200


class RevocableService(Resource):
    """An auth service that knows some tokens; the test takes them back."""

    isLeaf = True

    def __init__(self, *valid):
        super().__init__()
        self.valid = set(valid)
        self.calls = 0

    def render_GET(self, request):
        self.calls += 1
        if request.getHeader(b"x-auth-token").decode() in self.valid:
            return b'{"username": "grace"}'
        request.setResponseCode(401)
        return b"{}"


def test_a_stream_from_the_auth_service_ends_when_its_token_is_revoked(clock, registry):
    """The app keeps the token of a revocable identity's stream and the heartbeat asks
    again, through the cache (capped at the recheck period) and the real RemoteVerifier."""
    service = RevocableService("remote-token")
    settings = Settings(heartbeat=15, auth_recheck=60, auth_url="http://auth.example/check")
    remote = RemoteVerifier(StubTreq(service), settings.auth_url, clock, timeout=2)
    web = MonitWeb(
        registry, CachingVerifier(remote, clock, ttl=cache_ttl(auth_options(settings))), clock, **web_options(settings)
    )
    web.startService()
    stub = StubTreq(web.resource())
    response = get(stub, URL + "?stream=job", {"X-Auth-Token": "remote-token"})
    assert response.code == 200
    chunks, done = read_stream(stub, response)
    service.valid.clear()
    for _ in range(6):  # the first recheck is due 30 to 90 s in; the cache keeps answers 30 s
        clock.advance(15)
        stub.flush()
    result_of(done)
    assert b"".join(chunks).endswith(b'event: monit.error\ndata: {"error":"token revoked"}\n\n')
    assert service.calls == 2 and web.rechecker.revoked == 1
    web.stopService()


def test_only_revocable_identities_are_rechecked(clock, registry, token):
    calls = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def verify(self, token):
            calls.append(token)
            return self.inner.verify(token)

    web = MonitWeb(
        registry,
        Counting(JWTVerifier.with_secret(SECRET, clock)),
        clock,
        **web_options(Settings(heartbeat=15, auth_recheck=30)),
    )
    web.startService()
    stub = StubTreq(web.resource())
    response = get(stub, URL + "?stream=job", {"X-Auth-Token": token})
    read_stream(stub, response)
    clock.advance(15 * 20)
    assert len(calls) == 1 and len(web.streams) == 1
    web.stopService()


def test_a_403_is_logged_with_the_user_and_the_stream(stub, clock, events):
    limited = mint(SECRET, "carol", 3600, streams=["a"], now=clock.seconds())
    response = get(stub, URL + "?stream=b", {"X-Auth-Token": limited})
    assert response.code == 403
    [said] = [event for event in events if event.get("stream") == "b"]
    assert said["user"] == "carol" and said["log_level"].name == "info"


def test_the_watch_page_runs_only_its_own_script(stub):
    response = get(stub, "http://monit.example/watch?stream=job")
    assert response.code == 200 and response.headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
    page = result_of(response.content()).decode()
    stub.flush()
    script = page.split("<script>")[1].split("</script>")[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    [policy] = response.headers.getRawHeaders("content-security-policy")
    assert f"script-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy
    assert '"openSubjects": ["service.create",' in page


def test_a_session_trades_a_checked_token_for_http_only_cookies_for_events_and_jobs(stub, clock, registry):
    token = mint(SECRET, "dana", 600, now=clock.seconds())
    response = result_of(stub.post("http://monit.example/session", headers={"Authorization": f"Bearer {token}"}))
    assert response.code == 204
    assert response.headers.getRawHeaders("set-cookie") == [
        f"monit_session={token}; Path=/events; Max-Age=600; HttpOnly; SameSite=Strict",
        f"monit_session={token}; Path=/jobs; Max-Age=600; HttpOnly; SameSite=Strict",
    ]
    streaming = get(stub, URL + "?stream=job", {"Cookie": f"monit_session={token}"})
    assert streaming.code == 200 and registry.get("job").subscribers
    refused = result_of(stub.post("http://monit.example/session", headers={"X-Auth-Token": "nope"}))
    assert refused.code == 401 and not refused.headers.getRawHeaders("set-cookie")


def test_a_token_that_cannot_be_a_cookie_is_refused_before_it_is_checked(stub):
    response = result_of(stub.post("http://monit.example/session", headers={"X-Auth-Token": "a;Path=/;b"}))
    assert response.code == 400
