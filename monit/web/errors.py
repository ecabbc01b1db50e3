"""The body of every error monit answers over HTTP, whichever HTTP and whoever answers; a request that is wrong."""

from __future__ import annotations

import json

from twisted.web.iweb import IRequest


def error_body(message: str) -> bytes:
    """A short JSON error: ``{"error": message}``."""
    return json.dumps({"error": message}).encode()


class BadRequest(ValueError):
    """The request itself is wrong: a 400 that says why."""


def one_parameter(request: IRequest, name: bytes) -> str | None:
    """The query parameter given once, as text; None when absent."""
    values = request.args.get(name, [])
    if len(values) > 1:
        raise BadRequest(f"more than one '{name.decode()}' parameter")
    if not values:
        return None
    try:
        return bytes(values[0]).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"'{name.decode()}' is not UTF-8") from None
