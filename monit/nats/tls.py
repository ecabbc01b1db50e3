"""TLS to NATS: the CA monit trusts and the certificate it shows, read once at start.

A NATS server speaks plain text until its INFO, then the client upgrades
the connection (``startTLS``) before CONNECT; so TLS is a step of the
handshake, not an endpoint of its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from OpenSSL import SSL, crypto
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)

if TYPE_CHECKING:
    from monit._twisted.trust_root import TrustRoot

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@attrs.frozen
class ClientTLS:
    """Whom monit trusts (a CA file, else the system's) and, for mutual TLS, who it is."""

    trust: TrustRoot = attrs.field(repr=False)
    certificate: PrivateCertificate | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_files(cls, ca: str | None = None, cert: str | None = None, key: str | None = None) -> ClientTLS:
        """Read the PEM files; ValueError names the file and what is wrong with it."""
        if (cert is None) != (key is None):
            raise ValueError("--nats-tls-cert and --nats-tls-key go together: give both, or neither")
        trust = _trust(ca) if ca is not None else platformTrust()
        certificate = _certificate(cert, key) if cert is not None and key is not None else None
        return cls(trust, certificate)

    def for_server(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        """Options that check the server's certificate is for ``hostname`` (a name or an IP)."""
        return optionsForClientTLS(hostname, trustRoot=self.trust, clientCertificate=self.certificate)


def _trust(path: str) -> TrustRoot:
    blocks = _PEM_CERTIFICATE.findall(_read(path))
    if not blocks:
        raise ValueError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        trust: TrustRoot = trustRootFromCertificates([Certificate.loadPEM(block) for block in blocks])
    except (crypto.Error, ValueError) as error:
        raise ValueError(f"{path} holds a certificate that cannot be read: {error}") from None
    return trust


def _certificate(cert: str, key: str) -> PrivateCertificate:
    try:
        certificate: PrivateCertificate = PrivateCertificate.loadPEM(_read(key) + b"\n" + _read(cert))
        certificate.options()  # makes an SSL context: a key that is not the certificate's fails here
    except (crypto.Error, SSL.Error, VerifyError, ValueError) as error:
        raise ValueError(f"{cert} and {key} are not a PEM certificate and its private key: {error}") from None
    return certificate


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
