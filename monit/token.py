"""monit-token: mint an HS256 JWT that monit accepts, for development and demos."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence

import jwt

from monit.auth.jwt_verifier import ALGORITHM, quiet_key_length

DEFAULT_LIFETIME = 3600


def mint(
    secret: str,
    user: str,
    lifetime: float,
    streams: Iterable[str] = (),
    now: float | None = None,
) -> str:
    """A token for user, valid from now for lifetime seconds, optionally limited to streams."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "sub": user,
        "username": user,
        "iat": issued,
        "exp": issued + int(lifetime),
    }
    streams = list(streams)
    if streams:
        claims["streams"] = streams
    with quiet_key_length():
        return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number of seconds, not {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monit-token", description=__doc__)
    parser.add_argument("--user", required=True, help="the user name (claims sub and username)")
    parser.add_argument("--secret", help="the HS256 secret (default: $JWT_SECRET)")
    parser.add_argument(
        "--lifetime",
        type=_positive,
        default=DEFAULT_LIFETIME,
        metavar="SECONDS",
        help=f"how long the token is valid (default: {DEFAULT_LIFETIME})",
    )
    parser.add_argument(
        "--stream",
        action="append",
        default=[],
        metavar="ID",
        help="a stream the token is meant for (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Print a token to stdout; exit 2 with one line on stderr if there is no secret."""
    args = _parser().parse_args(argv)
    secret = args.secret or os.environ.get("JWT_SECRET")
    if not secret:
        print("monit-token: no secret: pass --secret or set JWT_SECRET", file=sys.stderr)
        return 2
    print(mint(secret, args.user, args.lifetime, args.stream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
