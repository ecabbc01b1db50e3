"""Test credentials for NATS: a CA with server and client certificates, NKeys, and operator-mode JWTs."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from monit.nats.nkeys import SEED_PREFIX, encode

OPERATOR, ACCOUNT, USER = 14 << 3, 0, 20 << 3


class CA:
    """A certificate authority writing PEM files into a folder."""

    def __init__(self, folder: Path, name: str = "monit test CA") -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            self._builder(subject, subject, self.key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = self._write(f"{name.replace(' ', '-')}.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(
        self, subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def _write(self, name: str, data: bytes) -> str:
        path = self.folder / name
        path.write_bytes(data)
        return str(path)

    def issue(self, name: str, server: bool) -> tuple[str, str]:
        """A certificate for 127.0.0.1 and localhost (server) or a client; its and its key's paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = self._builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), self.cert.subject, key
        ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return (
            self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
            self._write(f"{name}-key.pem", key_pem),
        )


class KeyPair:
    """An NKey of some kind (operator, account, user): its seed and public key, and signing."""

    def __init__(self, kind: int) -> None:
        self.private = Ed25519PrivateKey.generate()
        raw = self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.seed = encode(bytes([SEED_PREFIX | kind >> 5, (kind & 31) << 3]) + raw)
        self.public = encode(bytes([kind]) + public)

    def jwt(self, subject: str, name: str, nats: dict) -> str:
        """A JWT about ``subject``, signed by this key, as nsc makes them."""
        claims = {"iat": int(time.time()), "iss": self.public, "name": name, "sub": subject, "nats": nats}
        claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
        header = {"typ": "JWT", "alg": "ed25519-nkey"}
        signed = ".".join(_b64(json.dumps(part).encode()) for part in (header, claims))
        return f"{signed}.{_b64(self.private.sign(signed.encode()))}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


def operator_mode(folder: Path) -> tuple[str, str]:
    """A nats-server configuration in operator mode and a .creds file for a user of its account."""
    operator, account, user = KeyPair(OPERATOR), KeyPair(ACCOUNT), KeyPair(USER)
    operator_jwt = operator.jwt(operator.public, "test-operator", {"type": "operator", "version": 2})
    account_limits = {**UNLIMITED, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
    account_jwt = operator.jwt(
        account.public, "test-account", {"limits": account_limits, "type": "account", "version": 2}
    )
    user_jwt = account.jwt(user.public, "monit", {"pub": {}, "sub": {}, **UNLIMITED, "type": "user", "version": 2})
    (folder / "operator.jwt").write_text(operator_jwt)
    config = folder / "operator.conf"
    config.write_text(
        f'operator: "{folder / "operator.jwt"}"\n'
        "resolver: MEMORY\n"
        f'resolver_preload: {{ {account.public}: "{account_jwt}" }}\n'
    )
    creds = folder / "monit.creds"
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n"
    )
    return str(config), str(creds)
