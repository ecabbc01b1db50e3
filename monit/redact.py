"""What a log line may show of a URL: secrets in it (passwords, query values) never leave."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redacted_url(url: str) -> str:
    """The URL as a log line may show it: no password, no query value.

    ``user:pw@`` becomes ``user:***@`` and a lone ``token@`` becomes ``***@``;
    each query value (or a bare query item) becomes ``***``. Never raises.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a URL that does not parse>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    query = "&".join(_redacted_item(item) for item in parts.query.split("&")) if parts.query else ""
    fragment = "***" if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _redacted_item(item: str) -> str:
    name, equals, _ = item.partition("=")
    return f"{name}=***" if equals else ("***" if item else "")
