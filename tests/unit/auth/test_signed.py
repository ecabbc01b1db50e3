"""JWTs signed with private keys, and the audience and issuer checks every JWT gets (fake clock)."""

from __future__ import annotations

import base64
import json
import warnings
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from monit.auth.interface import AuthUnavailable, InvalidToken, ITokenVerifier
from monit.auth.jwks import JWKS
from monit.auth.jwt_verifier import ClaimChecks, JWTVerifier, quiet_key_length
from monit.auth.keys import ASYMMETRIC_ALGORITHMS, SigningKey
from monit.auth.modes import verification_for
from monit.auth.signed import SignedJWTVerifier, fixed_key
from monit.service import auth_options
from monit.settings import Settings

from deferreds import result_of
from signing import AUDIENCE, ISSUER, Signer, hmac_with_public_key

NOW = 1_700_000_000
pytestmark = pytest.mark.clock_starts_at(NOW)
CHECKS = ClaimChecks(audience=AUDIENCE, issuer=ISSUER)


@pytest.fixture(scope="module")
def signers() -> dict[str, Signer]:
    return {name: Signer.make(name) for name in ("RS256", "PS384", "ES256", "ES384", "EdDSA")}


def verifier_for(
    signer: Signer, clock: Clock, algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS, checks: ClaimChecks = CHECKS
) -> SignedJWTVerifier:
    return SignedJWTVerifier(fixed_key(SigningKey(signer.public)), algorithms, clock, checks)


def with_header(token: str, header: dict[str, Any]) -> str:
    """The token with another header (and so a signature that no longer fits it)."""
    _, body, signature = token.split(".")
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{encoded}.{body}.{signature}"


def refusal(verifier: Any, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        result_of(verifier.verify(token))
    return str(caught.value)


@pytest.mark.parametrize("algorithm", ["RS256", "PS384", "ES256", "ES384", "EdDSA"])
def test_accepted_with_the_claims_read_as_for_hmac_tokens(
    signers: dict[str, Signer], clock: Clock, algorithm: str
) -> None:
    signer = signers[algorithm]
    verifier = verifier_for(signer, clock)
    assert verifyObject(ITokenVerifier, verifier)
    identity = result_of(verifier.verify(signer.token(now=NOW, username="bob", streams=["s1"])))
    assert identity.user == "bob"
    assert identity.streams == frozenset({"s1"})
    assert identity.expires == NOW + 3600
    assert not identity.revocable
    assert result_of(verifier.verify(signer.token(now=NOW, username=None))).user == "alice"  # then sub


def test_the_key_of_another_provider_is_a_bad_signature(signers: dict[str, Signer], clock: Clock) -> None:
    forger = Signer.make("RS256")
    assert refusal(verifier_for(signers["RS256"], clock), forger.token(now=NOW)) == "bad signature"


def test_hs256_signed_with_the_public_key_is_refused(signers: dict[str, Signer], clock: Clock) -> None:
    """Algorithm confusion: the public key is public, so an HMAC over it proves nothing."""
    signer = signers["RS256"]
    forged = hmac_with_public_key(signer)
    assert refusal(verifier_for(signer, clock), forged) == "algorithm not allowed"
    # Even a verifier told to allow HS256 never takes a public key for an HMAC secret.
    lax = verifier_for(signer, clock, algorithms=("RS256", "HS256"))
    assert refusal(lax, forged) == "algorithm not allowed"


def test_alg_none_and_algorithms_not_listed_are_refused(signers: dict[str, Signer], clock: Clock) -> None:
    signer = signers["RS256"]
    # "none" signs with no key, which PyJWT takes at run time and its types refuse
    unsigned = jwt.encode({"sub": "eve", "iss": ISSUER, "aud": AUDIENCE}, None, algorithm="none")  # type: ignore[arg-type]
    assert refusal(verifier_for(signer, clock), unsigned) == "algorithm not allowed"
    only_ps = verifier_for(signer, clock, algorithms=("PS256",))
    assert refusal(only_ps, signer.token(now=NOW)) == "algorithm not allowed"


def test_an_algorithm_the_key_does_not_suit_is_refused(signers: dict[str, Signer], clock: Clock) -> None:
    """A P-384 key's token claims ES256 (the header is the attacker's to write)."""
    es384 = signers["ES384"]
    token = with_header(es384.token(now=NOW), {"alg": "ES256", "kid": es384.kid})
    assert refusal(verifier_for(es384, clock), token) == "algorithm not allowed"


@pytest.mark.parametrize(
    "claims, reason",
    [
        ({"aud": "another-app"}, "unexpected audience"),
        ({"aud": ["a", "b"]}, "unexpected audience"),
        ({"aud": None}, "token has no aud"),
        ({"iss": "https://evil.example"}, "unexpected issuer"),
        ({"iss": None}, "token has no iss"),
        ({"exp": NOW - 1}, "token expired"),
        ({"nbf": NOW + 60}, "token not valid yet"),
    ],
)
def test_claims_that_do_not_fit_say_why(signers: dict[str, Signer], clock: Clock, claims: dict, reason: str) -> None:
    signer = signers["ES256"]
    assert refusal(verifier_for(signer, clock), signer.token(now=NOW, **claims)) == reason


def test_audience_in_a_list_is_accepted(signers: dict[str, Signer], clock: Clock) -> None:
    signer = signers["ES256"]
    assert result_of(verifier_for(signer, clock).verify(signer.token(now=NOW, aud=["account", AUDIENCE])))


def test_without_audience_and_issuer_options_neither_is_asked_for(signers: dict[str, Signer], clock: Clock) -> None:
    signer = signers["ES256"]
    plain = verifier_for(signer, clock, checks=ClaimChecks())
    assert result_of(plain.verify(signer.token(now=NOW, aud=None, iss="anyone")))
    # but a token meant for someone else is not taken (RFC 7519 4.1.3)
    assert refusal(plain, signer.token(now=NOW)) == "unexpected audience"


@pytest.mark.parametrize("kid", [5, ["a"], {"k": 1}])
def test_a_kid_that_is_not_a_string_is_refused(signers: dict[str, Signer], clock: Clock, kid: Any) -> None:
    signer = signers["RS256"]
    token = with_header(signer.token(now=NOW), {"alg": "RS256", "kid": kid})
    assert refusal(verifier_for(signer, clock), token) == "invalid token"  # PyJWT's check, before any lookup


def test_the_key_lookup_gets_the_kid_and_alg_and_its_failures_pass_through(
    signers: dict[str, Signer], clock: Clock
) -> None:
    signer = signers["RS256"]
    asked: list[Any] = []

    def lookup(kid: str | None, algorithm: str) -> Any:
        asked.append((kid, algorithm))
        return succeed(SigningKey(signer.public)) if kid == signer.kid else fail(AuthUnavailable("down"))

    verifier = SignedJWTVerifier(lookup, ("RS256",), clock, CHECKS)
    assert result_of(verifier.verify(signer.token(now=NOW)))
    with pytest.raises(AuthUnavailable):
        result_of(verifier.verify(signer.token(now=NOW, kid="other")))
    assert refusal(verifier, "not.a.token") == "malformed token"  # refused before any lookup
    assert asked == [(signer.kid, "RS256"), ("other", "RS256")]


def test_an_rsa_key_under_2048_bits_fails_the_check_rather_than_warning(clock: Clock) -> None:
    weak = Signer("weak", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    verifier = SignedJWTVerifier(fixed_key(SigningKey(weak.public)), ("RS256",), clock, CHECKS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)  # signing with it, as a careless provider
        token = weak.token(now=NOW)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyJWT's warning would be an error here: it must not come at all
        assert refusal(verifier, token) == "signing key refused"


# HMAC tokens get the same audience and issuer checks


SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def hs256(**claims: Any) -> str:
    body = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 60, **claims}
    with quiet_key_length():
        return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    "claims, reason",
    [
        ({"aud": "other"}, "unexpected audience"),
        ({"aud": None}, "token has no aud"),
        ({"iss": "other"}, "unexpected issuer"),
        ({"iss": None}, "token has no iss"),
    ],
)
def test_hmac_tokens_are_held_to_audience_and_issuer(clock: Clock, claims: dict, reason: str) -> None:
    verifier = JWTVerifier.with_secret(SECRET, clock, audience=AUDIENCE, issuer=ISSUER)
    assert result_of(verifier.verify(hs256())).user == "alice"
    assert refusal(verifier, hs256(**claims)) == reason


def test_hmac_algorithms_can_be_chosen(clock: Clock) -> None:
    with quiet_key_length():
        hs512 = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS512")
    assert refusal(JWTVerifier.with_secret(SECRET, clock), hs512) == "algorithm not allowed"
    assert result_of(JWTVerifier.with_secret(SECRET, clock, algorithms=("HS256", "HS512")).verify(hs512))


# The settings choose the verifier


class NoNATS:
    def request(self, subject: str, payload: bytes, timeout: float) -> Any:
        raise AssertionError("no secret is asked for when keys are given")

    def when_connected(self) -> Any:
        raise AssertionError("no secret is asked for when keys are given")


def test_settings_with_a_public_key_check_tokens_with_it(
    tmp_path: Path, signers: dict[str, Signer], clock: Clock
) -> None:
    signer = signers["EdDSA"]
    settings = Settings(jwt_public_key=signer.write_pem(tmp_path), jwt_audience=AUDIENCE, jwt_issuer=ISSUER)
    verification = verification_for(auth_options(settings), clock, NoNATS())
    assert verification.jwt is None and verification.jwks is None
    assert result_of(verification.verifier.verify(signer.token(now=NOW))).user == "alice"
    assert refusal(verification.verifier, signer.token(now=NOW, aud="other")) == "unexpected audience"
    assert refusal(verification.verifier, hmac_with_public_key(signer)) == "algorithm not allowed"


def test_settings_with_a_jwks_url_make_a_key_service(clock: Clock) -> None:
    settings = Settings(jwt_jwks_url="https://id.example/certs", jwks_min_refetch=1.0)
    verification = verification_for(auth_options(settings), clock, NoNATS())
    assert isinstance(verification.jwks, JWKS) and verification.jwt is None
    assert not verification.jwks.running  # the service starts it


def test_settings_with_a_secret_hold_hmac_tokens_to_audience_and_issuer(clock: Clock) -> None:
    settings = Settings(jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER)
    verifier = verification_for(auth_options(settings), clock, NoNATS()).verifier
    assert result_of(verifier.verify(hs256()))
    assert refusal(verifier, hs256(iss="other")) == "unexpected issuer"


def test_keys_and_an_auth_url_together_accept_a_good_jwt_locally(
    tmp_path: Path, signers: dict[str, Signer], clock: Clock
) -> None:
    signer = signers["RS256"]
    settings = Settings(
        jwt_public_key=signer.write_pem(tmp_path), jwt_audience=AUDIENCE, auth_url="https://auth.example/check"
    )
    verification = verification_for(auth_options(settings), clock, NoNATS())
    assert verification.remote is not None
    assert result_of(verification.verifier.verify(signer.token(now=NOW))).user == "alice"
    assert verification.remote.in_flight == 0, "no round trip for a valid JWT"
