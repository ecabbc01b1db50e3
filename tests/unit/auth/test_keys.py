"""Public keys and algorithms: which key suits which algorithm, reading PEM, and the JWT options."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys
from cryptography.x509.oid import NameOID

from monit.auth.keys import (
    ASYMMETRIC_ALGORITHMS,
    SigningKey,
    algorithms_for,
    load_public_key,
    parse_algorithms,
    suits,
)
from monit.settings import SettingError, Settings, from_sources

from signing import Signer, public_numbers


def test_each_kind_of_key_suits_its_own_algorithms_only(rsa: Signer, ec: Signer, ed: Signer) -> None:
    assert algorithms_for(rsa.public) == ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    assert algorithms_for(ec.public) == ("ES256",)
    assert algorithms_for(ed.public) == ("EdDSA",)
    assert algorithms_for(Signer.make("ES384").public) == ("ES384",)


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512", "none", "NONE", "ES256K", "RS1", ""])
def test_no_public_key_ever_suits_hmac_none_or_unknown_algorithms(
    algorithm: str, rsa: Signer, ec: Signer, ed: Signer
) -> None:
    assert not any(suits(algorithm, signer.public) for signer in (rsa, ec, ed))


def test_a_jwk_alg_pins_its_key(rsa: Signer) -> None:
    assert SigningKey(rsa.public).suits("PS256")
    pinned = SigningKey(rsa.public, "RS256")
    assert pinned.suits("RS256") and not pinned.suits("PS256") and not pinned.suits("HS256")


@pytest.mark.parametrize(
    "text, expected",
    [("RS256", ("RS256",)), ("RS256,ES256", ("RS256", "ES256")), (" RS256 , EdDSA ,", ("RS256", "EdDSA"))],
)
def test_parse_algorithms(text: str, expected: tuple[str, ...]) -> None:
    assert parse_algorithms(text) == expected


@pytest.mark.parametrize(
    "text, said",
    [
        ("none", "must not allow 'none'"),
        ("RS256,None", "must not allow 'none'"),
        ("rs256", "'rs256' is not an algorithm monit knows"),
        ("RS256,XYZ", "'XYZ' is not an algorithm monit knows"),
        (" , ", "needs at least one algorithm"),
    ],
)
def test_parse_algorithms_refuses(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse_algorithms(text)


def test_load_a_public_key_and_a_certificates_key(tmp_path: Path, rsa: Signer, ec: Signer) -> None:
    assert public_numbers(load_public_key(rsa.write_pem(tmp_path))) == rsa.public.public_numbers()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "id.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ec.public)
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ec.private, hashes.SHA256())
    )
    path = tmp_path / "cert.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    assert public_numbers(load_public_key(str(path))) == ec.public.public_numbers()


def test_unusable_key_files_are_one_line_naming_the_file(tmp_path: Path, rsa: Signer) -> None:
    private = tmp_path / "private.pem"
    private.write_bytes(
        rsa.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    for path, said in [
        (tmp_path / "missing.pem", "cannot read .*missing.pem: No such file"),
        (private, "private.pem is not a PEM public key or certificate"),
        (garbage, "garbage.pem is not a PEM public key or certificate"),
        (tmp_path, "cannot read"),
    ]:
        with pytest.raises(ValueError, match=said) as caught:
            load_public_key(str(path))
        assert "\n" not in str(caught.value)


def test_an_rsa_key_under_2048_bits_is_refused(tmp_path: Path) -> None:
    weak = Signer("weak", "RS256", rsa_keys.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ValueError, match=r"weak.pem holds an RSA key of 1024 bits: 2048 or more are needed$"):
        load_public_key(weak.write_pem(tmp_path))
    with pytest.raises(SettingError, match="--jwt-public-key .*weak.pem holds an RSA key of 1024 bits"):
        from_sources({"jwt-public-key": weak.write_pem(tmp_path)}, {})


# The JWT options, as Settings checks them


def test_jwt_options_from_the_command_line(tmp_path: Path, rsa: Signer) -> None:
    settings = from_sources(
        {
            "jwt-public-key": rsa.write_pem(tmp_path),
            "jwt-algorithms": "RS256,PS256",
            "jwt-audience": "monit",
            "jwt-issuer": "https://id.example",
        },
        {},
    )
    assert settings.jwt_algorithms == ("RS256", "PS256")
    assert (settings.jwt_audience, settings.jwt_issuer) == ("monit", "https://id.example")
    from_env = from_sources({}, {"MONIT_JWT_JWKS_URL": "https://id.example/certs", "MONIT_JWT_ALGORITHMS": "ES256"})
    assert from_env.jwt_jwks_url == "https://id.example/certs" and from_env.jwt_algorithms == ("ES256",)


@pytest.mark.parametrize(
    "given, said",
    [
        ({"jwt-algorithms": "none"}, "--jwt-algorithms must not allow 'none'"),
        ({"jwt-algorithms": "HS256,FOO"}, "--jwt-algorithms 'FOO' is not an algorithm monit knows"),
        ({"jwt-jwks-url": "ftp://id.example/certs"}, "--jwt-jwks-url 'ftp://id.example/certs' must be an http"),
        ({"jwt-jwks-url": "https:///certs"}, "--jwt-jwks-url 'https:///certs' has no host"),
        ({"jwt-jwks-url": "https://id.example:port/certs"}, "is not a URL"),
        ({"jwt-jwks-url": "https://u:pw@id.example/certs"}, "'https://u:***@id.example/certs' must not carry"),
        ({"jwt-public-key": "/nonexistent/key.pem"}, "--jwt-public-key cannot read /nonexistent/key.pem"),
    ],
)
def test_bad_jwt_options_name_the_option(given: dict, said: str) -> None:
    with pytest.raises(SettingError, match=re.escape(said)):
        from_sources(given, {})


@pytest.mark.parametrize(
    "settings, said",
    [
        ({"jwt_jwks_url": "https://id.example/certs", "jwt_secret": "s"}, "--jwt-secret .* cannot go with"),
        ({"jwt_public_key": "KEY", "jwt_secret": "s"}, "--jwt-secret .* cannot go with"),
        ({"jwt_public_key": "KEY", "jwt_jwks_url": "https://id.example/certs"}, "two ways to give the keys"),
        (
            {"jwt_jwks_url": "https://id.example/certs", "jwt_algorithms": ("RS256", "HS256")},
            "--jwt-algorithms HS256 needs --jwt-secret",
        ),
        ({"jwt_secret": "s", "jwt_algorithms": ("RS256",)}, "--jwt-algorithms RS256 needs --jwt-public-key"),
        ({"jwt_algorithms": ("ES256",)}, "--jwt-algorithms ES256 needs"),  # the secret from NATS is HMAC too
        (
            {"jwt_public_key": "KEY", "jwt_algorithms": ("RS256", "ES256")},
            r"--jwt-algorithms ES256 does not suit --jwt-public-key .* \(an RSA key \(2048 bits\)\)",
        ),
        ({"jwt_jwks_url": "https://id.example/certs", "jwt_algorithms": ("none",)}, "must not allow 'none'"),
        ({"jwt_jwks_url": "https://id.example/certs", "jwt_algorithms": ()}, "needs at least one"),
        ({"auth_url": "https://auth.example/check", "jwt_audience": "monit"}, "--jwt-audience is for JWTs"),
        ({"jwt_jwks_url": "not a url"}, "must be an http"),
    ],
)
def test_jwt_options_that_clash_are_refused(tmp_path: Path, rsa: Signer, settings: dict, said: str) -> None:
    if settings.get("jwt_public_key") == "KEY":
        settings = {**settings, "jwt_public_key": rsa.write_pem(tmp_path)}
    with pytest.raises(ValueError, match=said) as caught:
        Settings(**settings)
    assert "\n" not in str(caught.value)


def test_what_goes_together(tmp_path: Path, rsa: Signer) -> None:
    Settings(jwt_secret="s", jwt_algorithms=("HS256", "HS512"), jwt_audience="monit", jwt_issuer="me")
    Settings(
        jwt_jwks_url="https://id.example/certs",
        auth_url="https://auth.example/check",
        jwt_algorithms=ASYMMETRIC_ALGORITHMS,
    )
    Settings(jwt_public_key=rsa.write_pem(tmp_path), jwt_algorithms=("PS512",), jwt_audience="monit")
