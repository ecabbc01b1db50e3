"""The pages that watch a job, or list jobs, in a browser, and the session cookie that lets them.

``GET /watch?stream=ID`` serves one static, dependency-free page (and
``GET /watch`` alone the jobs page, ``jobs.html``, made the same way; both sign in with ``signin.js``). It asks for
a token once (or takes it from the ``#token=`` fragment, which never reaches a
server), posts it to ``/session``, and monit answers with a short-lived
``HttpOnly``, ``SameSite=Strict`` cookie for ``/events`` and ``/jobs`` only. So the page's
``EventSource`` works with the default settings: no ``?token=`` in a URL, and
no script can read the token back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from importlib.resources import files

from twisted.web.iweb import IRequest

SESSION_COOKIE = b"monit_session"
SESSION_SECONDS = 3600  # at most; never past the token's own exp
_CONFIG = re.compile(r"/\*CONFIG\*/.*?/\*CONFIG\*/")
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")  # RFC 6265 cookie-octets
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def watch_page(open_subjects: Sequence[str]) -> tuple[bytes, bytes]:
    """The page that watches a job, configured, and the Content-Security-Policy that lets only its own script run."""
    return _page("watch.html", {"openSubjects": list(open_subjects), "events": "events", "session": "session"})


def jobs_page() -> tuple[bytes, bytes]:
    """The page that lists jobs live (``GET /jobs``, then the ``/jobs/events`` feed), and its policy."""
    return _page("jobs.html", {"jobs": "jobs", "feed": "jobs/events", "session": "session", "watch": "watch"})


def _page(name: str, settings: dict[str, object]) -> tuple[bytes, bytes]:
    here = files("monit.web")
    template = here.joinpath(name).read_text(encoding="utf-8")
    template = template.replace("/*SIGN_IN*/", here.joinpath("signin.js").read_text(encoding="utf-8"), 1)
    config = json.dumps(settings)
    page = _CONFIG.sub(lambda _: config.replace("<", "\\u003c"), template, count=1)
    script = _SCRIPT.search(page)
    assert script is not None, f"{name} has its script inline"
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode("utf-8")).digest()).decode("ascii")
    policy = (
        "default-src 'none'; connect-src 'self'; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page.encode("utf-8"), policy.encode("ascii")


SESSION_PATHS = (b"events", b"jobs")  # what the pages read: a job's stream; the jobs, their feed


def session_cookie(request: IRequest, token: str, lifetime: float, place: bytes = b"events") -> bytes:
    """The cookie that carries the token to ``place`` (``/events`` or ``/jobs``) beside this ``/session``, and nowhere else."""
    path = request.path.rsplit(b"/", 1)[0] + b"/" + place
    attributes = [
        SESSION_COOKIE + b"=" + token.encode("ascii"),
        b"Path=" + path,
        b"Max-Age=%d" % max(0, int(lifetime)),
        b"HttpOnly",
        b"SameSite=Strict",
    ]
    if request.isSecure():
        attributes.append(b"Secure")
    return b"; ".join(attributes)


def cookie_safe(token: str) -> bool:
    """Whether the token can be a cookie's value as it is (a JWT always can)."""
    return _COOKIE_VALUE.fullmatch(token) is not None


def session_token(request: IRequest) -> str | None:
    raw = request.getCookie(SESSION_COOKIE)
    if not raw:
        return None
    try:
        return bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        return None
