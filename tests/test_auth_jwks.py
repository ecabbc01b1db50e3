"""The JWKS key cache on a fake clock with StubTreq: parsing, refetching, rate limits, outages."""
from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.server import Request as WebRequest

from monit.auth.interface import AuthUnavailable, InvalidToken
from monit.auth.jwks import JWKS, MAX_JWKS_BYTES, parse_jwks

from deferreds import result_of
from signing import Signer, jwks

URL = "https://id.example/realms/ops/protocol/openid-connect/certs"
MIN_REFETCH = 10.0
REFRESH = 600.0


class Provider(Resource):
    """An identity provider's JWKS endpoint: answers with ``code`` and ``body``, or never (``hang``)."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body
        self.code = 200
        self.hang = False
        self.requests = 0

    def render_GET(self, request: WebRequest) -> bytes | int:
        self.requests += 1
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        return self.body


@pytest.fixture
def provider(rsa: Signer, ec: Signer) -> Provider:
    return Provider(jwks(rsa, ec))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_keys(http: Any, clock: Clock, url: str = URL) -> JWKS:
    return JWKS(http, url, clock, timeout=2.0, min_refetch=MIN_REFETCH, refresh=REFRESH)


@pytest.fixture
def keys(provider: Provider, clock: Clock) -> Any:
    stub = StubTreq(provider)
    keys = make_keys(stub, clock)
    keys.stub = stub
    keys.startService()
    yield keys
    keys.stopService()


def warnings(events: EventLoggingObserver) -> list[str]:
    return [formatEvent(event) for event in events if event["log_level"] >= LogLevel.warn]


# parse_jwks


def test_parse_keeps_signing_keys_of_every_kind(rsa: Signer, ec: Signer) -> None:
    ed = Signer.make("EdDSA")
    keys = parse_jwks(jwks(rsa, ec, ed))
    assert keys.kids == {rsa.kid, ec.kid, ed.kid}
    assert keys.find(ec.kid).key.public_numbers() == ec.public.public_numbers()
    assert keys.find(rsa.kid).algorithm == "RS256"


def test_parse_leaves_out_what_cannot_sign_tokens(rsa: Signer, ec: Signer) -> None:
    entries = [
        rsa.jwk(),
        {**ec.jwk(), "use": "enc"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},  # a secret key: never from a JWKS
        {"kty": "RSA", "kid": "broken", "n": 5, "e": "AQAB"},
        {"kty": "EC", "crv": "P-999", "kid": "odd", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "enc-alg", "alg": "RSA-OAEP", "n": rsa.jwk()["n"], "e": "AQAB"},
        {"kid": "no-kty"},
        "not an object",
        None,
    ]
    keys = parse_jwks(json.dumps({"keys": entries}).encode())
    assert keys.kids == {rsa.kid}


def test_parse_refuses_private_keys() -> None:
    from jwt.algorithms import RSAAlgorithm

    signer = Signer.make("RS256")
    private = {**RSAAlgorithm.to_jwk(signer.private, as_dict=True), "kid": "oops"}
    with pytest.raises(ValueError, match="no usable signing key"):
        parse_jwks(json.dumps({"keys": [private]}).encode())


@pytest.mark.parametrize(
    "body, said",
    [
        (b"<html>login</html>", "not JSON"),
        (b"[]", "no keys list"),
        (b'{"keys": {}}', "no keys list"),
        (b'{"keys": []}', "no usable signing key"),
        (b"[" * 100_000, "not JSON"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_parse_refuses_what_is_not_a_jwks(body: bytes, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse_jwks(body)


def test_a_token_without_kid_may_use_a_lone_key_only(rsa: Signer, ec: Signer) -> None:
    assert parse_jwks(jwks(rsa)).find(None) is not None
    assert parse_jwks(jwks(rsa, ec)).find(None) is None


# JWKS: fetching and keeping


def test_fetched_at_start_then_answered_from_memory(keys: Any, provider: Provider, rsa: Signer) -> None:
    assert provider.requests == 1
    assert result_of(keys.key_for(rsa.kid)).key.public_numbers() == rsa.public.public_numbers()
    assert result_of(keys.key_for(rsa.kid)) is not None
    assert provider.requests == 1


def test_refreshed_on_the_interval(keys: Any, provider: Provider, clock: Clock) -> None:
    clock.advance(REFRESH - 1)
    assert provider.requests == 1
    clock.advance(1)
    assert provider.requests == 2


def test_a_rotated_key_is_fetched_when_a_token_names_it(
    keys: Any, provider: Provider, clock: Clock, rsa: Signer
) -> None:
    new = Signer.make("RS256")
    provider.body = jwks(new)
    clock.advance(MIN_REFETCH)
    assert result_of(keys.key_for(new.kid)).key.public_numbers() == new.public.public_numbers()
    assert provider.requests == 2
    with pytest.raises(InvalidToken, match="unknown signing key"):
        result_of(keys.key_for(rsa.kid))  # rotated out; fetching again within the limit would not help


def test_unknown_kids_refetch_at_most_once_per_interval(keys: Any, provider: Provider, clock: Clock) -> None:
    for n in range(100):
        with pytest.raises(InvalidToken, match="unknown signing key"):
            result_of(keys.key_for(f"bogus-{n}"))
    assert provider.requests == 1, "the start-up fetch is less than the interval ago"
    clock.advance(MIN_REFETCH)
    for n in range(100):
        with pytest.raises(InvalidToken, match="unknown signing key"):
            result_of(keys.key_for(f"bogus-{n}"))
    assert provider.requests == 2


def test_tokens_waiting_for_a_fetch_share_it(keys: Any, provider: Provider, clock: Clock) -> None:
    new = Signer.make("ES256")
    provider.body, provider.hang = jwks(new), True
    clock.advance(MIN_REFETCH)
    waiting = [keys.key_for(new.kid) for _ in range(5)] + [keys.key_for("bogus")]
    assert provider.requests == 2 and not any(d.called for d in waiting)
    provider.hang = False
    clock.advance(2.0)  # the hanging fetch times out ...
    assert all(d.called for d in waiting)
    for d in waiting:
        with pytest.raises(AuthUnavailable):
            result_of(d)
    clock.advance(MIN_REFETCH)  # ... and the next one, allowed now, gets the key
    assert result_of(keys.key_for(new.kid)) is not None
    assert provider.requests == 3


def test_a_token_without_kid_among_several_keys_is_refused_without_a_fetch(keys: Any, provider: Provider) -> None:
    with pytest.raises(InvalidToken, match="token has no kid"):
        result_of(keys.key_for(None))
    assert provider.requests == 1


@pytest.mark.parametrize(
    "trouble, why",
    [
        ({"code": 503}, "HTTP 503"),
        ({"body": b"<html>maintenance</html>"}, "not JSON"),
        ({"body": b'{"keys": []}'}, "no usable signing key"),
        ({"body": b" " * (MAX_JWKS_BYTES + 1)}, f"more than {MAX_JWKS_BYTES} bytes"),
        ({"hang": True}, "no answer in time"),
    ],
)
def test_while_the_jwks_cannot_be_fetched_known_keys_work_and_unknown_ones_are_unavailable(
    keys: Any, provider: Provider, clock: Clock, rsa: Signer, events: EventLoggingObserver,
    trouble: dict, why: str,
) -> None:
    for name, value in trouble.items():
        setattr(provider, name, value)
    for _ in range(3):  # three failed fetches, one warning
        clock.advance(MIN_REFETCH)
        unknown = keys.key_for("new-key")
        clock.advance(2.0)
        with pytest.raises(AuthUnavailable, match="the signing keys cannot be fetched"):
            result_of(unknown)
        assert result_of(keys.key_for(rsa.kid)) is not None
    assert provider.requests == 4
    said = warnings(events)
    assert len(said) == 1, said
    assert said[0] == (
        f"could not fetch the signing keys from {URL}: {why}; keeping the 2 we have "
        "(tokens naming other keys get 503 until a fetch succeeds)"
    )
    # and within the rate limit, an unknown kid is unavailable at once, without a fetch
    with pytest.raises(AuthUnavailable):
        result_of(keys.key_for("other-key"))
    assert provider.requests == 4
    # back to normal: said once, and unknown kids are refused again
    provider.code, provider.body, provider.hang = 200, jwks(rsa), False
    clock.advance(MIN_REFETCH)
    with pytest.raises(InvalidToken):
        result_of(keys.key_for("new-key"))
    assert [formatEvent(e) for e in events if e["log_level"] == LogLevel.info][-1] == f"1 signing keys from {URL}"


def test_no_keys_yet_means_unavailable_not_refused(provider: Provider, clock: Clock, rsa: Signer) -> None:
    provider.code = 500
    keys = make_keys(StubTreq(provider), clock)
    keys.startService()
    with pytest.raises(AuthUnavailable):
        result_of(keys.key_for(rsa.kid))
    with pytest.raises(AuthUnavailable):
        result_of(keys.key_for(None))
    keys.stopService()


def test_a_connection_error_is_unavailable(clock: Clock, events: EventLoggingObserver) -> None:
    class Refusing:
        def get(self, url: str, **kwargs: Any) -> defer.Deferred:
            return defer.fail(ConnectionRefusedError("Connection refused"))

    keys = make_keys(Refusing(), clock)
    keys.startService()
    with pytest.raises(AuthUnavailable):
        result_of(keys.key_for("any"))
    assert warnings(events) == [
        f"could not fetch the signing keys from {URL}: Connection refused; keeping the 0 we have "
        "(tokens naming other keys get 503 until a fetch succeeds)"
    ]
    keys.stopService()


def test_stopping_abandons_the_fetch_and_its_timers(provider: Provider, clock: Clock) -> None:
    provider.hang = True
    keys = make_keys(StubTreq(provider), clock)
    keys.startService()
    waiting = keys.key_for("any")
    keys.stopService()
    assert clock.getDelayedCalls() == []
    with pytest.raises(AuthUnavailable):  # no keys at all: it may be good
        result_of(waiting)


def test_a_plain_http_url_is_warned_about(provider: Provider, clock: Clock, events: EventLoggingObserver) -> None:
    keys = make_keys(StubTreq(provider), clock, "http://id.example/certs?key=secret")
    keys.startService()
    keys.stopService()
    assert warnings(events) == [
        "the JWKS URL http://id.example/certs?key=*** is plain HTTP: anyone on the path can swap the keys"
    ]
