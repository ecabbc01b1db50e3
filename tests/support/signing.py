"""An identity provider of the tests' own: key pairs that sign tokens, and the JWKS that publishes them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from pathlib import Path
from typing import Any

import attrs
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://id.example/realms/ops"
AUDIENCE = "monit"
_serial = itertools.count(1)


@attrs.define
class Signer:
    """A private key, its kid and algorithm; signs tokens and describes its public half."""

    kid: str
    algorithm: str
    private: Any

    @classmethod
    def make(cls, algorithm: str, kid: str | None = None) -> Signer:
        if algorithm.startswith(("RS", "PS")):
            private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif algorithm == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        elif algorithm == "ES384":
            private = ec.generate_private_key(ec.SECP384R1())
        elif algorithm == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(algorithm)
        return cls(kid or f"{algorithm.lower()}-{next(_serial)}", algorithm, private)

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def jwk(self, **extra: Any) -> dict[str, Any]:
        """The public key as a JWK, as an identity provider publishes it."""
        kind: Any = RSAAlgorithm
        if self.algorithm == "EdDSA":
            kind = OKPAlgorithm
        elif self.algorithm.startswith("ES"):
            kind = ECAlgorithm
        entry = kind.to_jwk(self.public, as_dict=True)
        return {**entry, "kid": self.kid, "use": "sig", "alg": self.algorithm, **extra}

    def pem(self) -> bytes:
        pem: bytes = self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def write_pem(self, folder: Path) -> str:
        path = folder / f"{self.kid}.pem"
        path.write_bytes(self.pem())
        return str(path)

    def token(self, kid: str | None = "", now: float | None = None, **claims: Any) -> str:
        """A token signed with this key; ``kid`` None leaves it out, "" names ours.

        Each token is new (a ``jti`` of its own), so no cache has seen it.
        """
        issued = int(now if now is not None else time.time())
        body = {
            "sub": "alice",
            "username": "alice",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": issued,
            "exp": issued + 3600,
            "jti": str(next(_serial)),
            **claims,
        }
        body = {name: value for name, value in body.items() if value is not None}
        headers = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode(body, self.private, algorithm=self.algorithm, headers=headers)


def jwks(*signers: Signer) -> bytes:
    return json.dumps({"keys": [signer.jwk() for signer in signers]}).encode()


def hmac_with_public_key(signer: Signer, **claims: Any) -> str:
    """The classic forgery: an HS256 token whose HMAC secret is the public key's PEM."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": signer.kid}
    body = {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 3600, **claims}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    signature = hmac.new(signer.pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def public_numbers(key: object) -> object:
    """An RSA or EC public key's numbers, to compare keys by (EdDSA keys have none)."""
    assert isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)), key
    return key.public_numbers()
