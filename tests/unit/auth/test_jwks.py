"""The JWKS key cache on a fake clock with StubTreq: parsing, weak and shared-kid keys, fetching for
unknown kids (one fetch a second, shared, never a refusal from memory), redirects, outages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent

from monit.auth.cache import CachingVerifier
from monit.auth.interface import AuthUnavailable, InvalidToken
from monit.auth.jwks import JWKS, MAX_JWKS_BYTES, KeySet, UnknownSigningKey, parse_jwks
from monit.auth.jwt_verifier import ClaimChecks
from monit.auth.keys import SigningKey
from monit.auth.signed import SignedJWTVerifier

from deferreds import result_of
from jwks_provider import Provider
from signing import AUDIENCE, ISSUER, Signer, jwks, public_numbers

URL = "https://id.example/realms/ops/protocol/openid-connect/certs"
MIN_REFETCH = 1.0
REFRESH = 600.0
TIMEOUT = 2.0


@pytest.fixture(scope="module")
def weak() -> Signer:
    """An RSA key of 1024 bits, as an old provider might still publish."""
    return Signer("weak-rsa", "RS256", generate_private_key(public_exponent=65537, key_size=1024))


@pytest.fixture
def provider(rsa: Signer, ec: Signer) -> Provider:
    return Provider(jwks(rsa, ec))


def make_keys(http: Any, clock: Clock, url: str = URL) -> JWKS:
    return JWKS(http, url, clock, timeout=TIMEOUT, min_refetch=MIN_REFETCH, refresh=REFRESH)


@pytest.fixture
def stub(provider: Provider) -> StubTreq:
    return StubTreq(provider)


@pytest.fixture
def keys(stub: StubTreq, clock: Clock) -> Any:
    keys = make_keys(stub, clock)
    keys.startService()
    yield keys
    keys.stopService()


def found(keys: KeySet, kid: str, algorithm: str) -> SigningKey:
    """The key the set has for kid and algorithm, which the test knows is there."""
    key = keys.find(kid, algorithm)
    assert key is not None, (kid, algorithm)
    return key


def fired(d: defer.Deferred) -> bool:
    """Whether the Deferred has its outcome (not merely waiting on another Deferred)."""
    return d.called and not isinstance(d.result, defer.Deferred)


def warnings(events: EventLoggingObserver) -> list[str]:
    return [formatEvent(event) for event in events if event["log_level"] >= LogLevel.warn]


# parse_jwks


def test_parse_keeps_signing_keys_of_every_kind(rsa: Signer, ec: Signer) -> None:
    ed = Signer.make("EdDSA")
    keys = parse_jwks(jwks(rsa, ec, ed))
    assert keys.kids == {rsa.kid, ec.kid, ed.kid}
    assert public_numbers(found(keys, ec.kid, "ES256").key) == ec.public.public_numbers()
    assert found(keys, rsa.kid, "RS256").algorithm == "RS256"
    assert keys.refused == {}


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


def test_parse_refuses_rsa_keys_under_2048_bits(weak: Signer, rsa: Signer) -> None:
    keys = parse_jwks(jwks(weak, rsa))
    assert keys.kids == {rsa.kid}
    assert keys.refused == {weak.kid: "an RSA key of 1024 bits: 2048 or more are needed"}
    with pytest.raises(ValueError, match=f"no usable signing key \\({weak.kid}: an RSA key of 1024 bits"):
        parse_jwks(jwks(weak))


def test_an_rsa_and_an_ec_key_may_share_a_kid_each_used_for_its_own_algorithms(rsa: Signer, ec: Signer) -> None:
    keys = parse_jwks(json.dumps({"keys": [rsa.jwk(kid="shared"), ec.jwk(kid="shared")]}).encode())
    assert keys.kids == {"shared"}
    assert public_numbers(found(keys, "shared", "RS256").key) == rsa.public.public_numbers()
    assert public_numbers(found(keys, "shared", "ES256").key) == ec.public.public_numbers()
    assert keys.find("shared", "EdDSA") is not None, "a kid known; the verifier says the algorithm does not suit"


def test_a_token_without_kid_may_use_a_lone_key_only(rsa: Signer, ec: Signer) -> None:
    assert parse_jwks(jwks(rsa)).find(None, "RS256") is not None
    assert parse_jwks(jwks(rsa, ec)).find(None, "RS256") is None


# JWKS: fetching and keeping


def test_fetched_at_start_then_answered_from_memory(keys: Any, provider: Provider, rsa: Signer) -> None:
    assert provider.requests == 1
    assert result_of(keys.key_for(rsa.kid, "RS256")).key.public_numbers() == rsa.public.public_numbers()
    assert result_of(keys.key_for(rsa.kid, "RS256")) is not None
    assert provider.requests == 1 and keys.problem is None


def test_refreshed_on_the_interval(keys: Any, provider: Provider, clock: Clock) -> None:
    clock.advance(REFRESH - 1)
    assert provider.requests == 1
    clock.advance(1)
    assert provider.requests == 2


# Rotated keys: a token of a kid just published waits for the next fetch, it is not refused from memory


def test_a_key_rotated_in_just_after_a_fetch_is_found_by_the_next_fetch_the_rate_limit_allows(
    keys: Any, provider: Provider, clock: Clock, rsa: Signer
) -> None:
    new = Signer.make("RS256")
    provider.body = jwks(rsa, new)
    clock.advance(0.1)  # the start-up fetch was a moment ago
    found = keys.key_for(new.kid, "RS256")
    assert not found.called and provider.requests == 1, "no 401 from memory; no fetch before the limit"
    clock.advance(MIN_REFETCH - 0.1 - 0.01)
    assert provider.requests == 1
    clock.advance(0.01)
    assert provider.requests == 2
    assert result_of(found).key.public_numbers() == new.public.public_numbers()
    assert result_of(keys.key_for(rsa.kid, "RS256")) is not None


def test_a_kid_the_newest_fetch_lacks_is_refused_once_a_fetch_since_the_token_came_has_settled(
    keys: Any, provider: Provider, clock: Clock
) -> None:
    clock.advance(5)
    refused = keys.key_for("bogus", "RS256")
    assert provider.requests == 2, "the limit allows a fetch at once"
    with pytest.raises(UnknownSigningKey, match="unknown signing key"):
        result_of(refused)
    assert not UnknownSigningKey.lasting, "no cache may keep it: the next fetch may find the key"


def test_a_fetch_begun_before_the_token_came_does_not_refuse_it(
    keys: Any, stub: StubTreq, provider: Provider, clock: Clock, rsa: Signer
) -> None:
    new = Signer.make("ES256")
    clock.advance(5)
    provider.hang = True
    first = keys.key_for("bogus", "RS256")  # starts a fetch; the provider is slow to answer
    clock.advance(0.5)
    provider.body = jwks(rsa, new)  # published after that fetch began
    found = keys.key_for(new.kid, "ES256")
    provider.body = jwks(rsa)  # the slow answer: as it was when the fetch began
    provider.answer_held(stub)
    with pytest.raises(UnknownSigningKey):
        result_of(first)
    assert not fired(found), "the new token waits for a fetch that began after it came"
    provider.hang, provider.body = False, jwks(rsa, new)
    clock.advance(0.5)  # a second after the last fetch began
    assert provider.requests == 3
    assert result_of(found).key.public_numbers() == new.public.public_numbers()


def test_made_up_kids_cost_one_fetch_a_second_shared_by_everyone_waiting(
    keys: Any, provider: Provider, clock: Clock
) -> None:
    waiting = []
    for tick in range(50):  # five seconds of made-up kids, ten a second, each request waiting
        waiting += [keys.key_for(f"bogus-{tick}-{n}", "RS256") for n in range(10)]
        clock.advance(0.1)
    clock.advance(MIN_REFETCH)
    assert provider.requests - 1 <= 50 * 0.1 / MIN_REFETCH + 1, provider.requests
    for d in waiting:
        with pytest.raises(UnknownSigningKey):
            result_of(d)


def test_a_token_waits_no_longer_than_the_timeout(
    keys: Any, provider: Provider, clock: Clock, events: EventLoggingObserver
) -> None:
    provider.hang = True
    clock.advance(5)
    waiting = keys.key_for("new-key", "RS256")
    clock.advance(TIMEOUT - 0.01)
    assert not waiting.called
    clock.advance(0.01)
    with pytest.raises(AuthUnavailable):
        result_of(waiting)


def test_a_token_without_kid_among_several_keys_is_refused_without_a_fetch(keys: Any, provider: Provider) -> None:
    with pytest.raises(InvalidToken, match="token has no kid"):
        result_of(keys.key_for(None, "RS256"))
    assert provider.requests == 1


def test_a_key_refused_as_weak_is_said_once_and_its_tokens_refused_without_a_fetch(
    provider: Provider, clock: Clock, weak: Signer, rsa: Signer, events: EventLoggingObserver
) -> None:
    provider.body = jwks(weak, rsa)
    keys = make_keys(StubTreq(provider), clock)
    keys.startService()
    for _ in range(3):
        clock.advance(REFRESH)
    with pytest.raises(InvalidToken, match="signing key refused"):
        result_of(keys.key_for(weak.kid, "RS256"))
    assert provider.requests == 4
    assert warnings(events) == [
        f"the JWKS at {URL} has a key monit refuses, {weak.kid}: an RSA key of 1024 bits: 2048 or more are "
        "needed; tokens it signed get 401"
    ]
    keys.stopService()


# When the JWKS cannot be fetched


@pytest.mark.parametrize(
    "trouble, why",
    [
        ({"code": 503}, "HTTP 503"),
        (
            {"code": 302, "headers": {b"location": b"http://elsewhere.example/certs"}},
            "HTTP 302: a redirect, which monit does not follow (give the URL it points to)",
        ),
        ({"body": b"<html>maintenance</html>"}, "not JSON"),
        ({"body": b'{"keys": []}'}, "no usable signing key"),
        ({"body": b" " * (MAX_JWKS_BYTES + 1)}, f"more than {MAX_JWKS_BYTES} bytes"),
        ({"hang": True}, "no answer in time"),
    ],
)
def test_while_the_jwks_cannot_be_fetched_known_keys_work_and_unknown_ones_are_unavailable(
    keys: Any,
    provider: Provider,
    clock: Clock,
    rsa: Signer,
    events: EventLoggingObserver,
    trouble: dict,
    why: str,
) -> None:
    for name, value in trouble.items():
        setattr(provider, name, value)
    for _ in range(3):  # three failed fetches, one warning
        clock.advance(MIN_REFETCH)
        unknown = keys.key_for("new-key", "RS256")
        clock.advance(TIMEOUT)
        with pytest.raises(AuthUnavailable):
            result_of(unknown)
        assert result_of(keys.key_for(rsa.kid, "RS256")) is not None
    assert provider.requests == 4, "the redirect was not followed"
    assert keys.problem == f"JWKS at {URL}: {why} (keeping the 2 keys we have)"
    said = warnings(events)
    assert len(said) == 1, said
    assert said[0] == (
        f"could not fetch the signing keys from {URL}: {why}; keeping the 2 we have "
        "(tokens naming other keys get 503 until a fetch succeeds)"
    )
    # back to normal: said once, and unknown kids are refused again
    provider.code, provider.body, provider.hang = 200, jwks(rsa), False
    clock.advance(MIN_REFETCH)
    with pytest.raises(InvalidToken):
        result_of(keys.key_for("new-key", "RS256"))
    assert keys.problem is None
    assert [formatEvent(e) for e in events if e["log_level"] == LogLevel.info][-1] == f"1 signing keys from {URL}"


def test_no_keys_yet_means_unavailable_not_refused(provider: Provider, clock: Clock, rsa: Signer) -> None:
    provider.code = 500
    keys = make_keys(StubTreq(provider), clock)
    assert keys.problem == f"JWKS at {URL}: no signing keys fetched yet"
    keys.startService()
    unknown, lone = keys.key_for(rsa.kid, "RS256"), keys.key_for(None, "RS256")
    clock.advance(MIN_REFETCH)
    for waiting in (unknown, lone):
        with pytest.raises(AuthUnavailable):
            result_of(waiting)
    assert keys.problem == f"JWKS at {URL}: HTTP 500 (keeping the 0 keys we have)"
    keys.stopService()


def test_a_connection_error_is_unavailable(clock: Clock, events: EventLoggingObserver) -> None:
    class Refusing:
        def get(self, url: str, **kwargs: Any) -> defer.Deferred:
            return defer.fail(ConnectionRefusedError("Connection refused"))

    keys = make_keys(Refusing(), clock)
    keys.startService()
    waiting = keys.key_for("any", "RS256")
    clock.advance(MIN_REFETCH)
    with pytest.raises(AuthUnavailable):
        result_of(waiting)
    assert warnings(events) == [
        f"could not fetch the signing keys from {URL}: Connection refused; keeping the 0 we have "
        "(tokens naming other keys get 503 until a fetch succeeds)"
    ]
    keys.stopService()


@pytest.mark.parametrize("moment", ["fetching", "waiting for the limit"])
def test_stopping_abandons_the_fetch_and_its_timers(provider: Provider, clock: Clock, rsa: Signer, moment: str) -> None:
    keys = make_keys(StubTreq(provider), clock)
    keys.startService()
    provider.hang = moment == "fetching"
    clock.advance(MIN_REFETCH if provider.hang else MIN_REFETCH / 2)
    waiting = keys.key_for("any", "RS256")
    assert not fired(waiting)
    keys.stopService()
    assert clock.getDelayedCalls() == []
    with pytest.raises(AuthUnavailable):  # it may be good
        result_of(waiting)


def test_a_plain_http_url_is_warned_about(provider: Provider, clock: Clock, events: EventLoggingObserver) -> None:
    keys = make_keys(StubTreq(provider), clock, "http://id.example/certs?key=secret")
    keys.startService()
    keys.stopService()
    assert warnings(events) == [
        "the JWKS URL http://id.example/certs?key=*** is plain HTTP: anyone on the path can swap the keys"
    ]


# Behind the cache: a refusal for an unknown kid is not kept past the fetch that finds the key


def test_a_token_refused_for_its_kid_is_taken_once_the_key_is_published(
    keys: Any, stub: StubTreq, provider: Provider, clock: Clock, rsa: Signer
) -> None:
    new = Signer.make("ES256")
    checks = ClaimChecks(audience=AUDIENCE, issuer=ISSUER)
    cache = CachingVerifier(SignedJWTVerifier(keys.key_for, ("RS256", "ES256"), clock, checks), clock, ttl=30)
    token = new.token(now=clock.seconds())
    clock.advance(5)
    with pytest.raises(InvalidToken, match="unknown signing key"):
        result_of(cache.verify(token))
    provider.body = jwks(rsa, new)  # published a moment later
    clock.advance(0.1)
    again = cache.verify(token)
    clock.advance(MIN_REFETCH)
    assert result_of(again).user == "alice"
