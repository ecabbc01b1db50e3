"""Token extraction and JWT verification, on a fake clock and a fake NATS client."""

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from monit.auth.interface import AuthUnavailable, Identity, InvalidToken, ITokenVerifier
from monit.auth.jwt_verifier import (
    MAX_NUMERIC_DATE,
    JWTVerifier,
    quiet_key_length,
    secret_from_nats,
)
from monit.auth.request import token_from_request

from deferreds import result_of
from fakenats import HandAnsweredNATS

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
NOW = 1_700_000_000
pytestmark = pytest.mark.clock_starts_at(NOW)


def make_token(secret: str = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    claims = {"sub": "alice", "username": "Alice", "iat": NOW, "exp": NOW + 60, **claims}
    claims = {k: v for k, v in claims.items() if v is not None}
    with quiet_key_length():
        return jwt.encode(claims, secret, algorithm=algorithm)


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture
def verifier(clock: Clock) -> JWTVerifier:
    return JWTVerifier.with_secret(SECRET, clock)


def logged_text(events: EventLoggingObserver) -> str:
    """Everything the log would show: messages, fields and tracebacks."""
    parts = []
    for event in events:
        parts.append(formatEvent(event))
        parts.append(repr(event))
        if "log_failure" in event:
            parts.append(event["log_failure"].getTraceback())
    return "\n".join(parts)


# token_from_request


def request_with(*headers: tuple[bytes, bytes]) -> DummyRequest:
    request = DummyRequest([b"events"])
    for name, value in headers:
        request.requestHeaders.addRawHeader(name, value)
    return request


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([(b"X-Auth-Token", b"tok1")], "tok1"),
        ([(b"x-auth-token", b"  tok1  ")], "tok1"),
        ([(b"Authorization", b"Bearer tok2")], "tok2"),
        ([(b"Authorization", b"bearer tok2")], "tok2"),
        ([(b"Authorization", b"BEARER   tok2 ")], "tok2"),
        ([(b"X-Auth-Token", b"tok1"), (b"Authorization", b"Bearer tok2")], "tok1"),
        ([(b"X-Auth-Token", b""), (b"Authorization", b"Bearer tok2")], "tok2"),
        ([], None),
        ([(b"X-Auth-Token", b"")], None),
        ([(b"X-Auth-Token", b"   ")], None),
        ([(b"Authorization", b"Bearer")], None),
        ([(b"Authorization", b"Bearer   ")], None),
        ([(b"Authorization", b"Basic dXNlcjpwYXNz")], None),
        ([(b"Authorization", b"Token tok3")], None),
        ([(b"Authorization", b"Bearertok4")], None),
    ],
)
def test_token_from_request(headers: list, expected: str | None) -> None:
    # a DummyRequest stands in for the IRequest token_from_request reads
    assert token_from_request(request_with(*headers)) == expected  # type: ignore[arg-type]


# accepting


def test_verifier_provides_interface(verifier: JWTVerifier) -> None:
    assert verifyObject(ITokenVerifier, verifier)


def test_accepts_valid_token(verifier: JWTVerifier) -> None:
    identity = result_of(verifier.verify(make_token(streams=["s1"])))
    assert identity == Identity(
        user="Alice",
        claims={"sub": "alice", "username": "Alice", "iat": NOW, "exp": NOW + 60, "streams": ["s1"]},
        expires=float(NOW + 60),
    )


def test_user_falls_back_to_sub_then_unknown(verifier: JWTVerifier) -> None:
    assert result_of(verifier.verify(make_token(username=None))).user == "alice"
    assert result_of(verifier.verify(make_token(username=None, sub=None))).user == "unknown"


def test_token_without_exp_never_expires(verifier: JWTVerifier, clock: Clock) -> None:
    token = make_token(exp=None)
    clock.advance(10 * 365 * 86400)
    assert result_of(verifier.verify(token)).expires is None


def test_claims_are_read_only(verifier: JWTVerifier) -> None:
    identity = result_of(verifier.verify(make_token()))
    with pytest.raises(TypeError):
        identity.claims["username"] = "mallory"


def test_nbf_in_the_past_and_iat_in_the_future_are_fine(verifier: JWTVerifier) -> None:
    assert result_of(verifier.verify(make_token(nbf=NOW - 5, iat=NOW + 3600))).user == "Alice"


def test_with_secret_refuses_empty_secret(clock: Clock) -> None:
    with pytest.raises(ValueError):
        JWTVerifier.with_secret("", clock)


# refusing


def refusal(verifier: JWTVerifier, token: Any) -> str:
    """The reason an InvalidToken gives, checked not to quote the token."""
    with pytest.raises(InvalidToken) as info:
        result_of(verifier.verify(token))
    reason = str(info.value)
    assert reason
    if isinstance(token, str) and len(token) > 3:
        assert token not in reason
        for segment in token.split("."):
            assert len(segment) < 4 or segment not in reason
    return reason


def test_expired_by_the_injected_clock(verifier: JWTVerifier, clock: Clock) -> None:
    token = make_token()
    assert result_of(verifier.verify(token))
    clock.advance(60)
    assert refusal(verifier, token) == "token expired"


def test_leeway_tolerates_a_little_clock_skew(clock: Clock) -> None:
    verifier = JWTVerifier(lambda: succeed(SECRET), clock, leeway=30)
    token = make_token()
    clock.advance(80)
    assert result_of(verifier.verify(token)).user == "Alice"
    clock.advance(20)
    assert refusal(verifier, token) == "token expired"


def test_not_valid_before_nbf(verifier: JWTVerifier, clock: Clock) -> None:
    token = make_token(nbf=NOW + 10)
    assert refusal(verifier, token) == "token not valid yet"
    clock.advance(10)
    assert result_of(verifier.verify(token)).user == "Alice"


@pytest.mark.parametrize("claim", ["exp", "nbf"])
def test_non_numeric_time_claims(verifier: JWTVerifier, claim: str) -> None:
    assert refusal(verifier, make_token(**{claim: "tomorrow"})) == f"{claim} is not a number"
    claims: dict[str, Any] = {claim: True}
    assert refusal(verifier, make_token(**claims)) == f"{claim} is not a number"


ODD_DATES = [
    float("nan"),
    float("inf"),
    float("-inf"),
    1e308,
    -1e308,
    10**400,
    -(10**400),
    MAX_NUMERIC_DATE + 1,
    -1,
]


@pytest.mark.parametrize("claim", ["exp", "nbf"])
@pytest.mark.parametrize(
    "value", ODD_DATES, ids=["nan", "inf", "-inf", "1e308", "-1e308", "400-digits", "-400-digits", "year-10000", "-1"]
)
def test_time_claims_out_of_range_are_invalid(verifier: JWTVerifier, claim: str, value: float) -> None:
    """Not "never expires" (NaN compares false, 1e308 is never reached), not an
    OverflowError (a 400-digit integer as a float): a 401."""
    claims: dict[str, Any] = {claim: value}
    token = make_token(**claims)
    assert refusal(verifier, token) == f"{claim} is out of range"


def test_time_claims_at_the_edges_of_the_range(verifier: JWTVerifier, clock: Clock) -> None:
    far = result_of(verifier.verify(make_token(exp=MAX_NUMERIC_DATE, nbf=0)))
    assert far.expires == float(MAX_NUMERIC_DATE)
    assert result_of(verifier.verify(make_token(exp=NOW + 0.5))).expires == NOW + 0.5
    assert refusal(verifier, make_token(exp=0)) == "token expired"


@pytest.mark.parametrize("claim", ["exp", "nbf"])
def test_a_time_claim_past_json_number_limits_is_malformed(verifier: JWTVerifier, claim: str) -> None:
    """An integer of 5,000 digits: PyJWT's json.loads refuses it (Python's digit limit)."""
    header, _, _ = make_token().split(".")
    payload = base64.urlsafe_b64encode(('{"%s":%s}' % (claim, "9" * 5000)).encode()).rstrip(b"=").decode()
    signing_input = f"{header}.{payload}".encode()
    signature = (
        base64.urlsafe_b64encode(hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )
    assert refusal(verifier, f"{header}.{payload}.{signature}") == "malformed token"


def test_require_exp(clock: Clock) -> None:
    strict = JWTVerifier.with_secret(SECRET, clock, require_exp=True)
    assert refusal(strict, make_token(exp=None)) == "token has no exp"
    assert result_of(strict.verify(make_token())).expires == NOW + 60
    lenient = JWTVerifier.with_secret(SECRET, clock)
    assert result_of(lenient.verify(make_token(exp=None))).expires is None


def test_wrong_secret(verifier: JWTVerifier) -> None:
    assert refusal(verifier, make_token(secret="another-secret-that-is-long-enough-too")) == "bad signature"


def test_tampered_payload(verifier: JWTVerifier) -> None:
    header, _, signature = make_token().split(".")
    forged = ".".join([header, b64({"sub": "root", "username": "root", "exp": NOW + 60}), signature])
    assert refusal(verifier, forged) == "bad signature"


def test_alg_none(verifier: JWTVerifier) -> None:
    # "none" signs with no key, which PyJWT takes at run time and its types refuse
    token = jwt.encode({"sub": "root", "exp": NOW + 60}, None, algorithm="none")  # type: ignore[arg-type]
    assert refusal(verifier, token) == "algorithm not allowed"
    # and by hand, with an empty or a copied signature
    unsigned = b64({"alg": "none", "typ": "JWT"}) + "." + b64({"sub": "root"})
    assert refusal(verifier, unsigned + ".") == "algorithm not allowed"
    assert refusal(verifier, unsigned + "." + make_token().split(".")[2]) == "algorithm not allowed"


def test_hs512_with_the_right_secret(verifier: JWTVerifier) -> None:
    assert refusal(verifier, make_token(algorithm="HS512")) == "algorithm not allowed"


def test_rs256_header(verifier: JWTVerifier) -> None:
    header = b64({"alg": "RS256", "typ": "JWT"})
    token = f"{header}.{b64({'sub': 'root', 'exp': NOW + 60})}.{b64({'sig': 'x' * 100})}"
    assert refusal(verifier, token) == "algorithm not allowed"


def test_hs256_header_on_another_algorithms_signature(verifier: JWTVerifier) -> None:
    _, payload, signature = make_token(algorithm="HS512").split(".")
    token = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{payload}.{signature}"
    assert refusal(verifier, token) == "bad signature"


@pytest.mark.parametrize(
    "garbage",
    ["", "x", "not a token", "a.b.c", "...", "e30.e30.", "é.é.é", "Bearer x", "e30" * 20],
)
def test_garbage(verifier: JWTVerifier, garbage: str) -> None:
    refusal(verifier, garbage)


@pytest.mark.parametrize("not_a_string", [None, 42, b"bytes.are.not", ["a", "b"]])
def test_not_a_string(verifier: JWTVerifier, not_a_string: Any) -> None:
    refusal(verifier, not_a_string)


def test_huge_token_refused_without_fetching_the_secret(clock: Clock) -> None:
    nats = HandAnsweredNATS()
    verifier = JWTVerifier(secret_from_nats(nats, timeout=2.0), clock)
    token = make_token(padding="x" * 9000)
    assert refusal(verifier, token) == "token too long"
    assert refusal(verifier, "junk") == "malformed token"
    assert nats.requests == []


# the secret from NATS


@pytest.fixture
def nats() -> HandAnsweredNATS:
    return HandAnsweredNATS()


@pytest.fixture
def nats_verifier(nats: HandAnsweredNATS, clock: Clock) -> JWTVerifier:
    return JWTVerifier(secret_from_nats(nats, timeout=2.0), clock)


def test_secret_fetched_once_for_many_verifies(nats: HandAnsweredNATS, nats_verifier: JWTVerifier) -> None:
    first = nats_verifier.verify(make_token())
    assert [r[:3] for r in nats.requests] == [("config.get.jwt_token", b"", 2.0)]
    nats.reply(SECRET.encode())
    assert result_of(first).user == "Alice"
    for _ in range(5):
        assert result_of(nats_verifier.verify(make_token())).user == "Alice"
    assert len(nats.requests) == 1


def test_subject_and_timeout_are_passed(nats: HandAnsweredNATS, clock: Clock) -> None:
    JWTVerifier(secret_from_nats(nats, timeout=0.5), clock).verify(make_token())
    assert [r[:3] for r in nats.requests] == [("config.get.jwt_token", b"", 0.5)]


def test_concurrent_verifies_share_one_fetch(nats: HandAnsweredNATS, nats_verifier: JWTVerifier) -> None:
    good = [nats_verifier.verify(make_token()) for _ in range(3)]
    bad = nats_verifier.verify(make_token(secret="another-secret-that-is-long-enough-too"))
    assert len(nats.requests) == 1
    nats.reply(SECRET.encode())
    assert [result_of(d).user for d in good] == ["Alice"] * 3
    with pytest.raises(InvalidToken):
        result_of(bad)


def test_failed_fetch_is_unavailable_then_retried(
    nats: HandAnsweredNATS, nats_verifier: JWTVerifier, events: EventLoggingObserver
) -> None:
    waiting = [nats_verifier.verify(make_token()) for _ in range(2)]
    nats.fail(TimeoutError("no reply to config.get.jwt_token"))
    for d in waiting:
        with pytest.raises(AuthUnavailable):
            result_of(d)
    errors = [e for e in events if e["log_level"] == LogLevel.error]
    assert len(errors) == 1 and "log_failure" not in errors[0], "one line, not a formatted Failure"
    assert formatEvent(errors[0]) == (
        "could not fetch the JWT secret from NATS config.get.jwt_token: no reply to config.get.jwt_token"
    )

    retry = nats_verifier.verify(make_token())
    assert len(nats.requests) == 2
    nats.reply(SECRET.encode())
    assert result_of(retry).user == "Alice"


def test_fetcher_raising_synchronously_is_unavailable(clock: Clock, events: EventLoggingObserver) -> None:
    def broken() -> Deferred:
        raise ConnectionError("not connected")

    with pytest.raises(AuthUnavailable):
        result_of(JWTVerifier(broken, clock).verify(make_token()))


def test_cancelled_verify_leaves_the_others_waiting(nats: HandAnsweredNATS, nats_verifier: JWTVerifier) -> None:
    cancelled = nats_verifier.verify(make_token())
    kept = nats_verifier.verify(make_token())
    cancelled.cancel()
    with pytest.raises(CancelledError):
        result_of(cancelled)
    nats.reply(SECRET.encode())
    assert result_of(kept).user == "Alice"


def test_fetch_survives_all_waiters_cancelling(nats: HandAnsweredNATS, nats_verifier: JWTVerifier) -> None:
    nats_verifier.verify(make_token()).addErrback(lambda f: f.trap(CancelledError)).cancel()
    later = nats_verifier.verify(make_token())
    assert len(nats.requests) == 1
    nats.reply(SECRET.encode())
    assert result_of(later).user == "Alice"


@pytest.mark.parametrize(
    "payload",
    [
        SECRET.encode(),
        f"  {SECRET}\r\n".encode(),
        json.dumps(SECRET).encode(),
        json.dumps({"token": SECRET}).encode(),
        json.dumps({"secret": SECRET, "other": 1}).encode(),
    ],
)
def test_secret_reply_forms(nats: HandAnsweredNATS, nats_verifier: JWTVerifier, payload: bytes) -> None:
    d = nats_verifier.verify(make_token())
    nats.reply(payload)
    assert result_of(d).user == "Alice"


def test_numeric_looking_secret_is_taken_as_text(nats: HandAnsweredNATS, clock: Clock) -> None:
    verifier = JWTVerifier(secret_from_nats(nats, timeout=2.0), clock)
    d = verifier.verify(make_token(secret="12345"))
    nats.reply(b"12345")
    assert result_of(d).user == "Alice"


@pytest.mark.parametrize(
    "payload",
    [b"", b"  \n", b'""', b"{}", b'{"token": ""}', b'{"token": 5}', b"\xff\xfe"],
)
def test_bad_secret_replies(
    nats: HandAnsweredNATS, nats_verifier: JWTVerifier, payload: bytes, events: EventLoggingObserver
) -> None:
    d = nats_verifier.verify(make_token())
    nats.reply(payload)
    with pytest.raises(AuthUnavailable):
        result_of(d)
    retry = nats_verifier.verify(make_token())
    assert len(nats.requests) == 2
    nats.reply(SECRET.encode())
    assert result_of(retry).user == "Alice"


def test_short_secret_is_warned_about_once(clock: Clock, nats: HandAnsweredNATS, events: EventLoggingObserver) -> None:
    verifier = JWTVerifier(secret_from_nats(nats, timeout=2.0), clock)
    first = verifier.verify(make_token(secret="short"))
    nats.reply(b"short")
    assert result_of(first).user == "Alice"
    assert result_of(verifier.verify(make_token(secret="short"))).user == "Alice"
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 1
    assert "short" not in logged_text(events)


def test_a_short_secret_given_up_front_is_warned_about_at_once(clock: Clock, events: EventLoggingObserver) -> None:
    JWTVerifier.with_secret("short", clock)  # made at start-up: no request has come yet
    [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
    assert "the JWT secret is 5 bytes long" in formatEvent(warning)


def test_tokens_and_secrets_never_reach_the_log(
    nats: HandAnsweredNATS, nats_verifier: JWTVerifier, events: EventLoggingObserver, clock: Clock
) -> None:
    tokens = [
        make_token(),
        make_token(secret="another-secret-that-is-long-enough-too"),
        make_token(algorithm="HS512"),
        make_token(nbf=NOW + 100),
        "garbage-xyzzy.qwerty-plugh.frobozz-zork",
    ]
    pending = [nats_verifier.verify(t) for t in tokens]
    nats.fail(TimeoutError("no reply"))
    pending += [nats_verifier.verify(t) for t in tokens]
    nats.reply(json.dumps({"token": SECRET}).encode())
    clock.advance(1000)
    pending += [nats_verifier.verify(t) for t in tokens]
    for d in pending:
        d.addErrback(lambda f: f.trap(InvalidToken, AuthUnavailable))
    assert len(events) > 0
    text = logged_text(events)
    for token in tokens:
        for segment in token.split("."):
            assert segment not in text
    assert SECRET not in text
