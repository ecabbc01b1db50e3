"""Token checks against an auth service (StubTreq and a fake clock, then a real one on
loopback), the FirstValid combinator, and who may watch which stream."""

from __future__ import annotations

import json
from typing import Any

import attrs
import jwt
import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.server import Request as WebRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from monit.auth.bound import BoundedVerifier
from monit.auth.cache import CachingVerifier
from monit.auth.interface import (
    AuthUnavailable,
    Identity,
    InvalidToken,
    ITokenVerifier,
    may_watch,
)
from monit.auth.jwt_verifier import JWTVerifier, quiet_key_length
from monit.auth.modes import FirstValid, cache_ttl, verification_for
from monit.auth.remote import (
    MAX_BODY_BYTES,
    MalformedReply,
    RemoteVerifier,
    remote_http_client,
    remote_pool,
)
from monit.redact import redacted_url
from monit.service import auth_options
from monit.settings import Settings

from auth_service import OneAnswerAuthService
from deferreds import result_of
from loopback import base_url, listen, stop_listening
from stubhttp import StubHTTP
from waiting import wait_for, within

URL = "http://auth.example/check"
TOKEN = "opaque-token-0123456789-abcdef"
SECRET = "a-test-secret-that-is-long-enough-for-hs256"


@pytest.fixture
def service() -> OneAnswerAuthService:
    return OneAnswerAuthService()


@pytest.fixture
def stub(service: OneAnswerAuthService) -> StubHTTP:
    return StubHTTP(service)


@pytest.fixture
def verifier(stub: StubHTTP, clock: Clock) -> RemoteVerifier:
    return RemoteVerifier(stub, URL, clock, timeout=2.0)


def answer(service: OneAnswerAuthService, verifier: RemoteVerifier, code: int, body: bytes = b"") -> Any:
    service.code, service.body = code, body
    return result_of(verifier.verify(TOKEN))


# valid answers


def test_provides_the_interface(verifier: RemoteVerifier) -> None:
    assert verifyObject(ITokenVerifier, verifier)


def test_valid_with_username_and_streams(service: OneAnswerAuthService, verifier: RemoteVerifier, clock: Clock) -> None:
    identity = answer(
        service, verifier, 200, json.dumps({"username": "alice", "streams": ["s1", "s2"], "x": 1}).encode()
    )
    assert identity == Identity(
        user="alice", claims={"username": "alice", "streams": ["s1", "s2"]}, expires=None, revocable=True
    )
    assert identity.streams == frozenset({"s1", "s2"})
    assert clock.getDelayedCalls() == []


def test_valid_with_every_stream(service: OneAnswerAuthService, verifier: RemoteVerifier) -> None:
    identity = answer(service, verifier, 200, b'{"username": "bob", "streams": "*"}')
    assert identity.claims == {"username": "bob", "streams": "*"}
    assert identity.streams is None


def test_an_empty_object_is_a_yes_that_names_no_one(service: OneAnswerAuthService, verifier: RemoteVerifier) -> None:
    identity = answer(service, verifier, 200, b"{}")
    assert identity == Identity(user="unknown", claims={"username": "unknown"}, expires=None, revocable=True)
    assert identity.streams is None


LOGIN_PAGE = b"""<!doctype html><html><head><title>Sign in</title></head>
<body><form method="post" action="/login"><input name="user"><input name="password" type="password">
</form></body></html>"""


@pytest.mark.parametrize("code", [200, 201, 204, 299])
@pytest.mark.parametrize(
    "body, why",
    [
        (b"", "empty body"),
        (b"  \r\n", "empty body"),
        (LOGIN_PAGE, "not JSON"),
        (b"OK", "not JSON"),
        (b"{", "not JSON"),
        (b'{"username": "alice"} trailing', "not JSON"),
        (b'{"username": "alice", "score": NaN}', "not JSON"),
        (b'{"username": "alice", "score": 1e999}', "not JSON"),
        (b"[" * 60_000, "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'[{"username": "alice"}]', "not a JSON object"),
        (b"[]", "not a JSON object"),
        (b'"alice"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b"true", "not a JSON object"),
        (b"42", "not a JSON object"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_yes_that_is_not_a_well_formed_verdict_is_unavailable_and_logged(
    service: OneAnswerAuthService,
    verifier: RemoteVerifier,
    events: EventLoggingObserver,
    code: int,
    body: bytes,
    why: str,
) -> None:
    """Fail closed: a proxy's login page, an array, an empty 204 once opened every stream."""
    if code == 204 and body:
        return  # a 204 has no body to send
    with pytest.raises(MalformedReply) as info:
        answer(service, verifier, code, body)
    assert isinstance(info.value, AuthUnavailable)
    [warning] = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert warning == f"could not check a token with {URL}: malformed reply: {why}"


def test_empty_username_is_unknown(service: OneAnswerAuthService, verifier: RemoteVerifier) -> None:
    assert answer(service, verifier, 200, b'{"username": "", "streams": []}').user == "unknown"


def test_claims_are_read_only(service: OneAnswerAuthService, verifier: RemoteVerifier) -> None:
    identity = answer(service, verifier, 200, b'{"username": "alice"}')
    with pytest.raises(TypeError):
        identity.claims["username"] = "mallory"


# refusals and failures


@pytest.mark.parametrize("code", [401, 403])
def test_refused(service: OneAnswerAuthService, verifier: RemoteVerifier, code: int) -> None:
    with pytest.raises(InvalidToken):
        answer(service, verifier, code, b'{"error": "no"}')


@pytest.mark.parametrize("code", [500, 502, 503, 404, 400, 302, 418])
def test_other_codes_are_unavailable(service: OneAnswerAuthService, verifier: RemoteVerifier, code: int) -> None:
    with pytest.raises(AuthUnavailable):
        answer(service, verifier, code, b'{"username": "alice"}')


def test_redirect_is_not_followed() -> None:
    paths: list[bytes] = []

    class Redirect(Resource):
        isLeaf = True

        def render_GET(self, request: WebRequest) -> bytes:
            paths.append(request.path)
            if request.path == b"/check":
                request.redirect(b"http://elsewhere.example/welcome")
            return b'{"username": "alice"}'

    with pytest.raises(AuthUnavailable):
        result_of(RemoteVerifier(StubHTTP(Redirect()), URL, Clock(), timeout=2.0).verify(TOKEN))
    assert paths == [b"/check"]


@pytest.mark.parametrize(
    "reply",
    [
        {"streams": "s1"},
        {"streams": "all"},
        {"streams": None},
        {"streams": 3},
        {"streams": {"s1": True}},
        {"streams": ["s1", 2]},
        {"streams": [["s1"]]},
        {"streams": ["s1"], "username": None},
        {"username": 42},
        {"username": ["alice"]},
        {"username": None},
        {"username": True},
        {"username": {"name": "alice"}},
    ],
)
def test_wrong_types_are_malformed(service: OneAnswerAuthService, verifier: RemoteVerifier, reply: dict) -> None:
    with pytest.raises(MalformedReply):
        answer(service, verifier, 200, json.dumps(reply).encode())


def test_oversized_body_is_refused_at_the_cap(clock: Clock) -> None:
    """The body is read as it comes: past the cap, stop at once, not at the timeout."""

    class Endless(Resource):
        isLeaf = True

        def render_GET(self, request: WebRequest) -> int:
            request.write(b"x" * (MAX_BODY_BYTES + 1))
            return NOT_DONE_YET

    stub = StubHTTP(Endless())
    d = RemoteVerifier(stub, URL, clock, timeout=2.0).verify(TOKEN)
    stub.flush()
    with pytest.raises(AuthUnavailable, match="too long"):
        result_of(d)
    assert clock.getDelayedCalls() == []


def test_oversized_body_is_unavailable(service: OneAnswerAuthService, verifier: RemoteVerifier) -> None:
    body = json.dumps({"username": "alice", "padding": "x" * MAX_BODY_BYTES}).encode()
    with pytest.raises(AuthUnavailable):
        answer(service, verifier, 200, body)


@given(
    st.binary(max_size=300)
    | st.builds(
        lambda v: json.dumps(v).encode(),
        st.dictionaries(
            st.sampled_from(["username", "streams", "other"]),
            st.none()
            | st.booleans()
            | st.integers()
            | st.text(max_size=5)
            | st.lists(st.text(max_size=3) | st.integers(), max_size=3),
        ),
    )
)
@settings(max_examples=200, deadline=None)
def test_any_2xx_body_is_an_identity_or_unavailable(body: bytes) -> None:
    """Whatever the service sends, the verifier never raises anything else, and says
    yes only to a JSON object with a string username (if any) and readable streams."""
    service = OneAnswerAuthService(body=body)
    try:
        identity = result_of(RemoteVerifier(StubHTTP(service), URL, Clock(), timeout=2.0).verify(TOKEN))
    except AuthUnavailable:
        return
    reply = json.loads(body)
    assert isinstance(reply, dict)
    assert isinstance(reply.get("username", ""), str)
    assert reply.get("streams", "*") == "*" or isinstance(reply["streams"], list)
    assert isinstance(identity.user, str) and identity.user
    assert identity.streams is None or all(isinstance(s, str) for s in identity.streams)


def test_timeout(service: OneAnswerAuthService, stub: StubHTTP, verifier: RemoteVerifier, clock: Clock) -> None:
    service.hang = True
    d = verifier.verify(TOKEN)
    assert not d.called
    clock.advance(1.9)
    assert not d.called
    clock.advance(0.1)
    with pytest.raises(AuthUnavailable) as info:
        result_of(d)
    assert isinstance(info.value.__cause__, defer.TimeoutError)
    assert clock.getDelayedCalls() == []
    # the request was abandoned, not left open
    assert service.lost == []
    stub.flush()
    assert len(service.lost) == 1


def test_timeout_covers_a_slow_body(clock: Clock) -> None:
    lost: list[Failure] = []

    class SlowBody(Resource):
        isLeaf = True

        def render_GET(self, request: WebRequest) -> int:
            request.notifyFinish().addErrback(lost.append)
            request.setHeader(b"content-length", b"100")
            request.write(b'{"username"')
            return NOT_DONE_YET

    stub = StubHTTP(SlowBody())
    d = RemoteVerifier(stub, URL, clock, timeout=5.0).verify(TOKEN)
    stub.flush()
    assert not d.called
    clock.advance(5.0)
    with pytest.raises(AuthUnavailable) as info:
        result_of(d)
    assert isinstance(info.value.__cause__, defer.TimeoutError)
    assert clock.getDelayedCalls() == []
    stub.flush()
    assert len(lost) == 1


def test_caller_cancelling_is_not_unavailable(
    service: OneAnswerAuthService, stub: StubHTTP, verifier: RemoteVerifier, clock: Clock, events: EventLoggingObserver
) -> None:
    service.hang = True
    d = verifier.verify(TOKEN)
    d.cancel()
    with pytest.raises(CancelledError):
        result_of(d)
    assert clock.getDelayedCalls() == []
    stub.flush()
    assert len(service.lost) == 1
    assert not [e for e in events if e["log_level"] >= LogLevel.warn]


def test_connection_failure_is_unavailable(clock: Clock) -> None:
    @attrs.define
    class Refusing:
        def get(self, url: str, **kwargs: Any) -> Deferred:
            return fail(ConnectionRefusedError())

    with pytest.raises(AuthUnavailable) as info:
        result_of(RemoteVerifier(Refusing(), URL, clock, timeout=2.0).verify(TOKEN))
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert clock.getDelayedCalls() == []


def test_client_raising_is_unavailable(clock: Clock) -> None:
    class Broken:
        def get(self, url: str, **kwargs: Any) -> Deferred:
            raise ValueError("bad url")

    with pytest.raises(AuthUnavailable):
        result_of(RemoteVerifier(Broken(), URL, clock, timeout=2.0).verify(TOKEN))


@pytest.mark.parametrize("token", ["", "x" * 9000, "two\nlines", "tab\there", "caf\u00e9", None])
def test_tokens_that_cannot_travel_are_refused_locally(
    service: OneAnswerAuthService, verifier: RemoteVerifier, token: Any
) -> None:
    with pytest.raises(InvalidToken):
        result_of(verifier.verify(token))
    assert service.calls == []


# what is sent, and what is logged


def test_token_is_sent_in_both_headers(service: OneAnswerAuthService, verifier: RemoteVerifier) -> None:
    result_of(verifier.verify(TOKEN))
    [call] = service.calls
    assert call["x-auth-token"] == TOKEN.encode()
    assert call["authorization"] == [f"Bearer {TOKEN}".encode()]


def test_token_never_logged(
    service: OneAnswerAuthService, stub: StubHTTP, verifier: RemoteVerifier, clock: Clock, events: EventLoggingObserver
) -> None:
    for code, body in [
        (200, b'{"streams": 1}'),
        (500, b"oops"),
        (401, b""),
        (200, b"{}"),
        (404, b"x" * (MAX_BODY_BYTES + 1)),
    ]:
        service.code, service.body = code, body
        verifier.verify(TOKEN).addErrback(lambda f: f.trap(InvalidToken, AuthUnavailable))
    service.hang = True
    verifier.verify(TOKEN).addErrback(lambda f: f.trap(AuthUnavailable))
    clock.advance(2)
    RemoteVerifier(StubHTTP(service), "http://auth.example:1/", clock, timeout=2.0).verify("").addErrback(
        lambda f: f.trap(InvalidToken)
    )

    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    reasons = [formatEvent(e) for e in warnings]
    assert len(reasons) == 4
    assert "the auth service answered HTTP 500" in reasons[1]
    assert "no answer in time" in reasons[3]
    assert all(e["url"] == URL for e in warnings)
    text = "\n".join([formatEvent(e) + repr(e) for e in events])
    assert TOKEN not in text
    assert TOKEN[:10] not in text


# checks in flight, bounded


def bounded(stub: StubHTTP, clock: Clock, concurrency: int, timeout: float = 2.0, url: str = URL) -> BoundedVerifier:
    """The auth service's checks behind their bound, as monit.auth.modes puts them."""
    remote = RemoteVerifier(stub, url, clock, timeout=timeout)
    return BoundedVerifier(remote, clock, concurrency, log=remote.log, kind=redacted_url(url))


def test_checks_in_flight_are_bounded_and_refusals_counted(
    service: OneAnswerAuthService, stub: StubHTTP, clock: Clock, events: EventLoggingObserver
) -> None:
    """A slow service and distinct tokens: at most ``concurrency`` checks reach it;
    the rest are AuthUnavailable at once, not queued behind it."""
    service.hang = True
    verifier = bounded(stub, clock, concurrency=3)
    waiting = [verifier.verify(f"token-{n}-0123456789") for n in range(999)]
    assert len(service.calls) == 3 and verifier.in_flight == 3
    assert not any(d.called for d in waiting[:3])
    for d in waiting[3:]:
        with pytest.raises(AuthUnavailable, match="too many token checks in flight"):
            result_of(d)
    assert verifier.refused == 996
    # logged once (a flood is not a flood of log lines), and what it was about
    [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
    assert formatEvent(warning) == (
        "refused token checks at the concurrency bound on http://auth.example/check: 3 checks are in flight"
    )
    assert warning["log_namespace"] == "monit.auth.remote.RemoteVerifier", "said as the auth service's"
    # the timeout frees the slots
    clock.advance(2.0)
    for d in waiting[:3]:
        with pytest.raises(AuthUnavailable):
            result_of(d)
    assert verifier.in_flight == 0
    service.hang = False
    assert result_of(verifier.verify(TOKEN)).user == "unknown"
    assert verifier.in_flight == 0 and verifier.refused == 996


def test_refusals_at_the_bound_are_logged_once_then_counted_every_ten_seconds(
    service: OneAnswerAuthService, stub: StubHTTP, clock: Clock, events: EventLoggingObserver
) -> None:
    service.hang = True
    verifier = bounded(stub, clock, concurrency=1, timeout=100.0)
    verifier.verify("the-one-in-flight").addErrback(lambda f: f.trap(AuthUnavailable))
    for _second in range(3):
        for _ in range(10):
            verifier.verify("another-token").addErrback(lambda f: f.trap(AuthUnavailable))
        clock.advance(5.0)
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert warnings[0].endswith("1 checks are in flight")
    assert warnings[1:] == [
        "refused token checks at the concurrency bound: 19 more in the last 10 s (http://auth.example/check: 19)"
    ]
    assert verifier.refused == 30
    verifier.refusals.stop()


@pytest.mark.parametrize("how", ["answered", "refused", "failed", "cancelled"])
def test_every_ending_frees_its_slot(service: OneAnswerAuthService, stub: StubHTTP, clock: Clock, how: str) -> None:
    verifier = bounded(stub, clock, concurrency=1)
    service.code, service.hang = (
        {"answered": 200, "refused": 401, "failed": 500, "cancelled": 200}[how],
        how == "cancelled",
    )
    d = verifier.verify(TOKEN)
    if how == "cancelled":
        d.cancel()
    d.addErrback(lambda f: f.trap(InvalidToken, AuthUnavailable, CancelledError))
    assert verifier.in_flight == 0
    service.code, service.hang = 200, False
    assert result_of(verifier.verify(TOKEN)).user == "unknown"


def test_cached_answers_and_joined_checks_are_not_new_checks(
    service: OneAnswerAuthService, stub: StubHTTP, clock: Clock
) -> None:
    service.hang = True
    remote = bounded(stub, clock, concurrency=1)
    cache = CachingVerifier(remote, clock, ttl=30)
    joined = [cache.verify(TOKEN) for _ in range(100)]
    assert remote.in_flight == 1 and remote.refused == 0 and len(service.calls) == 1
    with pytest.raises(AuthUnavailable):
        result_of(cache.verify("a-different-token"))
    assert remote.refused == 1
    service.hang = False
    stub.flush()  # nothing answers a hung request: time it out, then ask again
    clock.advance(2.0)
    for d in joined:
        d.addErrback(lambda f: f.trap(AuthUnavailable))
    assert result_of(cache.verify(TOKEN)).user == "unknown"
    assert all(result_of(cache.verify(TOKEN)).user == "unknown" for _ in range(100))
    assert remote.refused == 1 and len(service.calls) == 2


# the URL's secrets


SECRET_URL = "http://auth.example/check?apikey=sekrit-key-42&tenant=acme-secret"
SHOWN_URL = "http://auth.example/check?apikey=***&tenant=***"


def test_query_values_of_the_url_never_reach_the_log(
    service: OneAnswerAuthService, stub: StubHTTP, clock: Clock, events: EventLoggingObserver
) -> None:
    verifier = bounded(stub, clock, concurrency=1, url=SECRET_URL)
    service.code = 500
    verifier.verify(TOKEN).addErrback(lambda f: f.trap(AuthUnavailable))
    service.code, service.body = 200, b"<html></html>"
    verifier.verify(TOKEN).addErrback(lambda f: f.trap(AuthUnavailable))
    service.hang = True
    verifier.verify(TOKEN).addErrback(lambda f: f.trap(AuthUnavailable))
    verifier.verify("over-the-bound").addErrback(lambda f: f.trap(AuthUnavailable))
    clock.advance(2.0)
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 4 and all(e.get("url", e.get("kind")) == SHOWN_URL for e in warnings)
    verifier.refusals.stop()
    text = "\n".join(formatEvent(e) + repr(e) for e in events)
    assert "sekrit-key-42" not in text and "acme-secret" not in text
    assert [call["x-auth-token"] for call in service.calls] == [TOKEN.encode()] * 3  # the query still goes


# a real auth service on loopback


@pytest_twisted.ensureDeferred
async def test_against_a_real_auth_service() -> None:
    from twisted.internet import reactor

    service = OneAnswerAuthService(body=b'{"username": "alice", "streams": ["s1"]}')
    service.set_cookie = True
    port = listen(Site(service))
    pool = remote_pool(reactor)
    url = f"{base_url(port)}/check"
    verifier = RemoteVerifier(remote_http_client(reactor, pool), url, reactor, timeout=10.0)
    try:
        identity = await verifier.verify(TOKEN)
        assert identity.user == "alice" and identity.streams == frozenset({"s1"})

        service.code, service.body = 401, b'{"error": "bad token"}'
        with pytest.raises(InvalidToken):
            await verifier.verify("another-token")
        service.code = 503
        with pytest.raises(AuthUnavailable):
            await verifier.verify(TOKEN)
        service.code, service.body = 200, b"<html>please sign in</html>"
        with pytest.raises(MalformedReply):
            await verifier.verify(TOKEN)

        assert len(service.calls) == 4
        assert [c["x-auth-token"] for c in service.calls] == [
            TOKEN.encode(),
            b"another-token",
            TOKEN.encode(),
            TOKEN.encode(),
        ]
        # every body was read, so all four checks went over one pooled connection
        assert len({c["port"] for c in service.calls}) == 1
        # the service's cookie for the first caller never went back with another token
        assert [c["cookie"] for c in service.calls] == [None] * 4

        await stop_listening(port)
        await pool.closeCachedConnections()
        with pytest.raises(AuthUnavailable) as info:
            await verifier.verify(TOKEN)
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert len(service.calls) == 4
    finally:
        await defer.maybeDeferred(port.stopListening)
        await pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_a_dripped_body_is_cut_off_by_the_deadline_and_its_connection_closed(drip) -> None:
    """The body is read with the one capped reader (monit.auth.body): cancelled at the deadline, it closes."""
    from twisted.internet import reactor

    factory, url = drip
    pool = remote_pool(reactor)
    verifier = RemoteVerifier(remote_http_client(reactor, pool), url, reactor, timeout=0.3)
    try:
        with pytest.raises(AuthUnavailable) as info:
            await within(verifier.verify(TOKEN))
        assert isinstance(info.value.__cause__, defer.TimeoutError)
        assert verifier.problem == f"auth service at {url}: no answer in time"
        await wait_for(lambda: factory.open == 0, timeout=2, what="the check's connection closed")
        assert factory.made == 1
    finally:
        await pool.closeCachedConnections()


def test_remote_pool_is_persistent_and_bounded(clock: Clock) -> None:
    pool = remote_pool(clock)
    assert pool.persistent
    assert pool.maxPersistentPerHost == 10


# FirstValid and may_watch


@implementer(ITokenVerifier)
@attrs.define
class Scripted:
    """A verifier giving one fixed answer and counting who asked."""

    answer: Identity | Exception
    asked: list[str] = attrs.Factory(list)

    def verify(self, token: str) -> Deferred[Identity]:
        self.asked.append(token)
        if isinstance(self.answer, Exception):
            return fail(self.answer)
        return succeed(self.answer)


REMOTE_ALICE = Identity(user="alice", claims={"username": "alice"}, expires=None)
NOW = 1_700_000_000


def make_jwt(**claims: Any) -> str:
    with quiet_key_length():
        return jwt.encode({"sub": "jay", "exp": NOW + 60, **claims}, SECRET, algorithm="HS256")


@pytest.fixture
def jwt_verifier() -> JWTVerifier:
    clock = Clock()
    clock.advance(NOW)
    return JWTVerifier.with_secret(SECRET, clock)


def test_first_valid_accepts_a_valid_jwt_locally(jwt_verifier: JWTVerifier) -> None:
    remote = Scripted(REMOTE_ALICE)
    combined = FirstValid(jwt_verifier, remote)
    assert verifyObject(ITokenVerifier, combined)
    assert result_of(combined.verify(make_jwt())).user == "jay"
    assert remote.asked == []


@pytest.mark.parametrize("token", [TOKEN, make_jwt(exp=NOW - 1), "a.b.c"])
def test_first_valid_asks_remote_about_the_rest(jwt_verifier: JWTVerifier, token: str) -> None:
    remote = Scripted(REMOTE_ALICE)
    assert result_of(FirstValid(jwt_verifier, remote).verify(token)) is REMOTE_ALICE
    assert remote.asked == [token]


@pytest.mark.parametrize("error", [InvalidToken("no"), AuthUnavailable("down")])
def test_first_valid_uses_the_remote_failure(jwt_verifier: JWTVerifier, error: Exception) -> None:
    with pytest.raises(type(error)):
        result_of(FirstValid(jwt_verifier, Scripted(error)).verify(TOKEN))


def test_first_valid_asks_remote_when_local_is_unavailable() -> None:
    remote = Scripted(REMOTE_ALICE)
    local = Scripted(AuthUnavailable("no JWT secret"))
    assert result_of(FirstValid(local, remote).verify(TOKEN)) is REMOTE_ALICE
    assert remote.asked == [TOKEN]


def test_first_valid_does_not_trust_a_refusal_when_local_was_unavailable() -> None:
    with pytest.raises(AuthUnavailable):
        result_of(FirstValid(Scripted(AuthUnavailable("no JWT secret")), Scripted(InvalidToken("no"))).verify(TOKEN))


def test_first_valid_passes_unexpected_local_errors_through() -> None:
    remote = Scripted(REMOTE_ALICE)
    with pytest.raises(ZeroDivisionError):
        result_of(FirstValid(Scripted(ZeroDivisionError()), remote).verify(TOKEN))
    assert remote.asked == []


@pytest.mark.parametrize(
    "claims, allowed, watch",
    [
        ({}, None, {"s1": True, "anything": True}),
        ({"streams": "*"}, None, {"s1": True, "anything": True}),
        ({"streams": ["s1", "s2"]}, frozenset({"s1", "s2"}), {"s1": True, "s2": True, "s3": False, "": False}),
        ({"streams": []}, frozenset(), {"s1": False}),
        ({"streams": None}, frozenset(), {"s1": False}),
        ({"streams": "s1"}, frozenset(), {"s1": False}),
        ({"streams": ["s1", 2]}, frozenset(), {"s1": False}),
    ],
)
def test_may_watch(claims: dict, allowed: frozenset | None, watch: dict[str, bool]) -> None:
    identity = Identity(user="u", claims=claims, expires=None)
    assert identity.streams == allowed
    assert {stream: may_watch(identity, stream) for stream in watch} == watch


@pytest.mark.parametrize(
    "claims, watch",
    [
        ({"streams": ["s1"]}, {"s1": True, "s2": False}),
        ({"streams": "*"}, {"s1": True, "s2": True}),
        ({}, {"s1": True, "s2": True}),
    ],
)
def test_may_watch_with_jwt_identities(jwt_verifier: JWTVerifier, claims: dict, watch: dict[str, bool]) -> None:
    identity = result_of(jwt_verifier.verify(make_jwt(**claims)))
    assert {stream: may_watch(identity, stream) for stream in watch} == watch


# what the settings make


def test_the_settings_bound_checks_and_cap_the_cache_at_the_recheck_period(clock: Clock) -> None:
    settings = Settings(auth_url=URL, auth_concurrency=3, auth_recheck=10, auth_cache_ttl=30)
    made = verification_for(auth_options(settings), clock, nats=None)  # type: ignore[arg-type]
    assert made.remote is not None and made.remote._concurrency == 3
    assert made.verifier._inner is made.remote and made.remote._inner is made.backend
    assert isinstance(made.backend, RemoteVerifier) and made.backend._timeout == settings.auth_timeout
    assert made.verifier._ttl == 10
    assert cache_ttl(auth_options(attrs.evolve(settings, auth_recheck=0))) == 30
    assert cache_ttl(auth_options(attrs.evolve(settings, auth_recheck=60))) == 30
    assert cache_ttl(auth_options(Settings(jwt_secret=SECRET, auth_recheck=10))) == 30, (
        "no auth service: nothing to recheck"
    )


def test_the_settings_bound_says_its_refusals_in_the_services_log_without_the_urls_secrets(
    events: EventLoggingObserver,
) -> None:
    reactor = MemoryReactorClock()  # the first check waits for a connection that never comes
    settings = Settings(auth_url=SECRET_URL, auth_concurrency=1)
    made = verification_for(auth_options(settings), reactor, nats=None)  # type: ignore[arg-type]
    first = made.verifier.verify(TOKEN)
    with pytest.raises(AuthUnavailable, match="too many token checks in flight"):
        result_of(made.verifier.verify("another-token"))
    assert made.remote is not None and (made.remote.in_flight, made.remote.refused) == (1, 1)
    [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
    assert formatEvent(warning) == (
        f"refused token checks at the concurrency bound on {SHOWN_URL}: 1 checks are in flight"
    )
    assert warning["log_namespace"] == "monit.auth.remote.RemoteVerifier"
    reactor.advance(settings.auth_timeout)
    with pytest.raises(AuthUnavailable):
        result_of(first)
    assert made.remote.in_flight == 0, "the timeout frees the slot"
    made.remote.stopService()


def test_the_settings_require_exp(clock: Clock) -> None:
    made = verification_for(auth_options(Settings(jwt_secret=SECRET, require_exp=True)), clock, nats=None)  # type: ignore[arg-type]
    with quiet_key_length():
        token = jwt.encode({"username": "alice"}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="token has no exp"):
        result_of(made.verifier.verify(token))
    assert made.remote is None
