"""The body of every error monit answers over HTTP, whichever HTTP and whoever answers."""

from __future__ import annotations

import json


def error_body(message: str) -> bytes:
    """A short JSON error: ``{"error": message}``."""
    return json.dumps({"error": message}).encode()
