"""What a token verifier promises: an identity, or one of two refusals.

Verification is asynchronous and fails closed: a token that cannot be checked
is refused with L{AuthUnavailable}, never let through. Tokens are never
logged, and no error message quotes one (or any part of one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Interface

MAX_TOKEN_LENGTH = 8 * 1024
LIST_SCOPE = "monit:jobs"  # the right to list every job (GET /jobs), in a token's ``scope``


@attrs.frozen
class Identity:
    """A verified user, as far as the token says."""

    user: str
    claims: Mapping[str, Any]
    expires: float | None
    # Vouched for by a service that may take it back (--auth-url): worth asking
    # again while a stream is open (--auth-recheck). A JWT stands on its own.
    revocable: bool = False

    @property
    def streams(self) -> frozenset[str] | None:
        """The stream ids this user may watch, or None when unrestricted.

        The ``streams`` claim restricts when it is a list of strings; absent or
        ``"*"`` means no restriction.  Anything else (null, a number, a list
        holding non-strings) allows nothing: a claim we cannot read fails closed.
        """
        claim = self.claims.get("streams", "*")
        if claim == "*":
            return None
        if isinstance(claim, list) and all(isinstance(s, str) for s in claim):
            return frozenset(claim)
        return frozenset()

    @property
    def scopes(self) -> frozenset[str]:
        """The rights the ``scope`` claim grants: space-separated, as in OAuth 2.0 (a list of
        strings is read too); anything else grants none."""
        claim = self.claims.get("scope", "")
        if isinstance(claim, str):
            return frozenset(claim.split())
        if isinstance(claim, list) and all(isinstance(s, str) for s in claim):
            return frozenset(claim)
        return frozenset()


def may_watch(identity: Identity, stream: str) -> bool:
    """Whether the identity's streams claim lets it watch this stream."""
    allowed = identity.streams
    return allowed is None or stream in allowed


class InvalidToken(Exception):
    """The token is missing, malformed, forged or out of date (HTTP 401)."""

    # Whether a cache may keep this refusal for a while. Not when the answer may change
    # any moment without the token changing (a signing key the provider publishes next).
    lasting: ClassVar[bool] = True


class AuthUnavailable(Exception):
    """The token cannot be checked right now (HTTP 503)."""


class ITokenVerifier(Interface):
    """Something that turns a token into an L{Identity}, or refuses it."""

    def verify(token: str) -> Deferred[Identity]:
        """
        Fire with the token's identity; fail with L{InvalidToken} or
        L{AuthUnavailable}.
        """


def check_header_token(token: object) -> str:
    """The token, if it can travel in a header; else InvalidToken, before anyone is asked."""
    if not isinstance(token, str) or not token:
        raise InvalidToken("no token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token too long")
    if not (token.isascii() and token.isprintable()):
        raise InvalidToken("malformed token")
    return token
