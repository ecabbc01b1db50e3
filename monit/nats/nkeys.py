"""NKey seeds and ``.creds`` files: how monit signs the nonce a NATS server sends.

An NKey is an Ed25519 key written in base32 with a prefix byte that says
what it belongs to and a CRC-16 at the end (see the nkeys README of
nats-io). The server sends a nonce in its INFO; the client answers with its
public key (or, from a ``.creds`` file, its user JWT) and the nonce's
signature. ``cryptography``, which Twisted's TLS already needs, does the
Ed25519; the encoding is the few lines below, so no ``nkeys`` package.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEED_PREFIX = 18 << 3  # "S"
USER_PREFIX = 20 << 3  # "U"
_CREDS_BLOCK = re.compile(r"-{3,}BEGIN ([A-Z ]+)-{3,}\s*\n(.*?)\n\s*-{3,}END \1-{3,}", re.DOTALL)


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the checksum at the end of every encoded NKey."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def encode(raw: bytes) -> str:
    """Prefixed key bytes as an NKey: base32 with its checksum, without padding."""
    return base64.b32encode(raw + crc16(raw).to_bytes(2, "little")).decode().rstrip("=")


def _decode(text: str) -> bytes:
    """The prefixed key bytes of an NKey, its checksum checked."""
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise ValueError("is not base32") from None
    body, checksum = raw[:-2], raw[-2:]
    if len(raw) < 4 or crc16(body) != int.from_bytes(checksum, "little"):
        raise ValueError("has a wrong checksum (a character changed or missing?)")
    return body


@attrs.frozen
class NKey:
    """A user's key pair, from its seed; its repr never shows the seed."""

    private: Ed25519PrivateKey = attrs.field(repr=False)
    public: str

    @classmethod
    def from_seed(cls, seed: str) -> NKey:
        """A key from ``SU…`` text, or ValueError saying what is wrong with it."""
        body = _decode(seed.strip())
        if len(body) != 34 or body[0] & 0xF8 != SEED_PREFIX:
            raise ValueError("is not an NKey seed (one starts with S)")
        kind = ((body[0] & 0x07) << 5) | ((body[1] & 0xF8) >> 3)
        if kind != USER_PREFIX:
            raise ValueError("is not a user's seed (a user's starts with SU)")
        private = Ed25519PrivateKey.from_private_bytes(body[2:])
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private, encode(bytes([USER_PREFIX]) + public))

    def sign(self, nonce: str) -> str:
        """The nonce's signature as CONNECT's ``sig`` wants it: URL-safe base64, no padding."""
        return base64.urlsafe_b64encode(self.private.sign(nonce.encode())).decode().rstrip("=")


@attrs.frozen
class NATSUser:
    """What monit answers a server's nonce with: an NKey, and a user JWT with it (``.creds``)."""

    key: NKey
    jwt: str | None = attrs.field(default=None, repr=False)

    def connect_fields(self, nonce: str) -> dict[str, str]:
        """The CONNECT fields that prove who monit is."""
        who = {"jwt": self.jwt} if self.jwt is not None else {"nkey": self.key.public}
        return {**who, "sig": self.key.sign(nonce)}


def seed_file(path: str) -> NATSUser:
    """The identity in an NKey seed file, or ValueError naming the file and the problem."""
    text = _read(path)
    try:
        return NATSUser(NKey.from_seed(text))
    except ValueError as error:
        raise ValueError(f"{path} {error}") from None


def creds_file(path: str) -> NATSUser:
    """The user JWT and seed of a ``.creds`` file (as ``nsc`` writes them), or ValueError."""
    blocks = {name: body.strip() for name, body in _CREDS_BLOCK.findall(_read(path))}
    jwt = blocks.get("NATS USER JWT")
    seed = blocks.get("USER NKEY SEED")
    if not jwt or not seed:
        raise ValueError(f"{path} is not a .creds file: it needs a NATS USER JWT and a USER NKEY SEED block")
    try:
        return NATSUser(NKey.from_seed(seed), jwt)
    except ValueError as error:
        raise ValueError(f"{path}: its seed {error}") from None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
