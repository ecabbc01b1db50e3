"""JWTs signed by an identity provider's private key, checked with its public key.

The key is one PEM file (--jwt-public-key) or the one a JWKS names by the
token's ``kid`` (--jwt-jwks-url).  The token's header picks the algorithm,
so it is held to the operator's list (--jwt-algorithms) and to what the key
suits (L{monit.auth.keys.SigningKey.suits}): an HS256 header "signed" with
the public key as an HMAC secret is refused before any signature is checked.
Claims are read as for HMAC tokens (L{ClaimChecks}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from monit.auth.interface import Identity, InvalidToken, ITokenVerifier
from monit.auth.jwt_verifier import ClaimChecks, check_shape, decode
from monit.auth.keys import SigningKey

# The key a token names by its ``kid`` (None when it names none) for its algorithm (``alg``).
KeyLookup = Callable[[str | None, str], Deferred[SigningKey]]


def fixed_key(key: SigningKey) -> KeyLookup:
    """One key for every token, whatever ``kid`` it names (--jwt-public-key)."""
    return lambda kid, algorithm: succeed(key)


@implementer(ITokenVerifier)
class SignedJWTVerifier:
    """JWTs checked against public keys; fails like L{JWTVerifier}, keys permitting."""

    def __init__(
        self,
        keys: KeyLookup,
        algorithms: Sequence[str],
        clock: IReactorTime,
        checks: ClaimChecks,
    ) -> None:
        self._keys = keys
        self._algorithms = tuple(algorithms)
        self._clock = clock
        self._checks = checks

    def verify(self, token: str) -> Deferred[Identity]:
        """Check the header now, then the signature and claims once the key is known."""
        try:
            header = check_shape(token, self._algorithms)  # PyJWT holds a kid to be a string
        except InvalidToken as e:
            return fail(e)
        return self._keys(header.get("kid"), header["alg"]).addCallback(self._decode, token, header["alg"])

    def _decode(self, key: SigningKey, token: str, algorithm: str) -> Identity:
        if not key.suits(algorithm):
            raise InvalidToken("algorithm not allowed")
        return decode(token, key.key, (algorithm,), self._checks, self._clock.seconds())
