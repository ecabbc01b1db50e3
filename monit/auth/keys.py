"""Public keys for signed JWTs: the algorithms each key suits, and reading one from PEM.

A token's header names its algorithm; an attacker writes that header.  So a
key is only ever used with the algorithms of its own kind (an RSA key with
RS… and PS…, a P-256 key with ES256, an Ed25519 key with EdDSA), never as an
HMAC secret: that is how "HS256 signed with the public key" is refused.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
# Each ES algorithm is defined for one curve (RFC 7518 3.4).
EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
EDDSA = "EdDSA"
ASYMMETRIC_ALGORITHMS = (*RSA_ALGORITHMS, *EC_CURVES, EDDSA)
ALGORITHMS = (*HMAC_ALGORITHMS, *ASYMMETRIC_ALGORITHMS)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
PUBLIC_KEY_TYPES = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)
# Shorter RSA keys can be factored by those with the means (NIST SP 800-131A): refused, not warned about.
MIN_RSA_BITS = 2048


def suits(algorithm: str, key: object) -> bool:
    """Whether a token signed with ``algorithm`` may be checked with ``key``."""
    if algorithm in RSA_ALGORITHMS:
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm in EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == EC_CURVES[algorithm]
    if algorithm == EDDSA:
        return isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))
    return False  # HMAC, none, and anything unknown: never with a public key


def weakness(key: PublicKey) -> str | None:
    """Why a key is too weak to trust a signature of, or None."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"an RSA key of {key.key_size} bits: {MIN_RSA_BITS} or more are needed"
    return None


def algorithms_for(key: PublicKey) -> tuple[str, ...]:
    """The algorithms a key suits, in the order of ``ASYMMETRIC_ALGORITHMS``."""
    return tuple(algorithm for algorithm in ASYMMETRIC_ALGORITHMS if suits(algorithm, key))


def describe(key: PublicKey) -> str:
    """A key's kind in words, for error messages."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"an RSA key ({key.key_size} bits)"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC key on {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "an Ed25519 key"
    return "an Ed448 key"


@attrs.frozen
class SigningKey:
    """A key tokens are checked with, and the one algorithm its JWK may pin it to."""

    key: PublicKey
    algorithm: str | None = None  # a JWK's "alg": then only that one (RFC 7517 4.4)

    def suits(self, algorithm: str) -> bool:
        return (self.algorithm is None or self.algorithm == algorithm) and suits(algorithm, self.key)


def parse_algorithms(text: str) -> tuple[str, ...]:
    """``RS256,ES256`` as a tuple; ``none``, an unknown name or nothing at all is a ValueError."""
    return check_algorithms(tuple(name.strip() for name in text.split(",") if name.strip()))


def check_algorithms(names: tuple[str, ...]) -> tuple[str, ...]:
    """The names, if there are any and each is one monit knows; ``none`` never is."""
    if not names:
        raise ValueError("needs at least one algorithm")
    for name in names:
        if name.lower() == "none":
            raise ValueError("must not allow 'none': an unsigned token proves nothing")
        if name not in ALGORITHMS:
            raise ValueError(f"{name!r} is not an algorithm monit knows ({', '.join(ALGORITHMS)})")
    return names


def load_public_key(path: str) -> PublicKey:
    """The RSA, EC or EdDSA public key in a PEM file (a public key, or a certificate's).

    Every problem is a ValueError of one line that names the file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    try:
        key = _public_key_in(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{path} is not a PEM public key or certificate") from None
    if not isinstance(key, PUBLIC_KEY_TYPES):
        raise ValueError(f"{path} holds a {type(key).__name__}: not an RSA, EC or EdDSA key")
    weak = weakness(key)
    if weak is not None:
        raise ValueError(f"{path} holds {weak}")
    return key


def _public_key_in(data: bytes) -> object:
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return serialization.load_pem_public_key(data)
