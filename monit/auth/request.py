"""Where a request carries its token: headers always, the query or a cookie for browsers."""

from __future__ import annotations

from twisted.web.iweb import IRequest

TOKEN_COOKIE = b"monit_token"


def token_from_request(request: IRequest) -> str | None:
    """The token from X-Auth-Token (the seed's header), else from a Bearer Authorization."""
    token = _header(request, b"x-auth-token")
    if token:
        return token
    scheme, _, credentials = (_header(request, b"authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def browser_token(request: IRequest) -> str | None:
    """The token a browser's EventSource can carry: ``?token=``, else the ``monit_token`` cookie.

    A query token can leak into proxy and browser logs; it is only read when the
    operator allows it, and monit never logs query strings.
    """
    values = request.args.get(b"token", [])
    raw = values[0] if len(values) == 1 else request.getCookie(TOKEN_COOKIE)
    if not raw:
        return None
    try:
        return bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        return None


def _header(request: IRequest, name: bytes) -> str | None:
    raw = request.getHeader(name)
    if raw is None:
        return None
    # Latin-1 never fails; a token with non-ASCII bytes is refused later anyway.
    return (raw.decode("latin-1") if isinstance(raw, bytes) else raw).strip()
