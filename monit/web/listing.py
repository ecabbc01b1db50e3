"""``GET /jobs``: the jobs a token may see, newest activity first, a page at a time.

Who may list: a token whose ``streams`` claim names jobs lists those (it
needs no more: it may watch them); an unrestricted one needs the
``monit:jobs`` right in its ``scope``, since the list would show it other
users' job ids.
"""

from __future__ import annotations

import base64
import heapq
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.web.iweb import IRequest

from monit.auth.interface import LIST_SCOPE, Identity
from monit.jobs import JOB_STATES
from monit.registry import InboxRegistry
from monit.web.errors import BadRequest, one_parameter

DEFAULT_LIMIT = 100
MOST_LIMIT = 1000


class NotAllowed(Exception):
    """The token may not list jobs: a 403 that says why."""


@attrs.frozen
class JobQuery:
    """What a listing asks for: a state, activity since a time, a page size, and where the page starts."""

    state: str | None = None
    since: float | None = None
    limit: int = DEFAULT_LIMIT
    after: tuple[float, str] | None = None  # the last job of the page before: (its activity, its id)


def listable(identity: Identity) -> frozenset[str] | None:
    """The jobs this identity may list (None: every job); NotAllowed without the right."""
    named = identity.streams
    if named is not None:
        return named
    if LIST_SCOPE in identity.scopes:
        return None
    raise NotAllowed(f"listing jobs takes the {LIST_SCOPE!r} scope, or a token whose 'streams' names them")


def query_of(request: IRequest) -> JobQuery:
    """The query parameters, read and checked (BadRequest says what is wrong)."""
    state = one_parameter(request, b"state")
    if state is not None and state not in JOB_STATES:
        raise BadRequest(f"'state' is one of {', '.join(JOB_STATES)}")
    since = one_parameter(request, b"since")
    limit = one_parameter(request, b"limit")
    cursor = one_parameter(request, b"cursor")
    return JobQuery(
        state=state,
        since=None if since is None else _time(since),
        limit=DEFAULT_LIMIT if limit is None else _limit(limit),
        after=None if cursor is None else _read_cursor(cursor),
    )


def _time(text: str) -> float:
    """An ISO 8601 time; one without a zone is UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest("'since' is not an ISO 8601 time (2024-05-01T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MOST_LIMIT:
        raise BadRequest(f"'limit' is a number from 1 to {MOST_LIMIT}")
    return int(text)


def cursor_of(activity: float, job_id: str) -> str:
    """Where the next page starts: after this job, in the listing's order."""
    return base64.urlsafe_b64encode(json.dumps([activity, job_id]).encode()).decode("ascii").rstrip("=")


def _read_cursor(text: str) -> tuple[float, str]:
    try:
        activity, job_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, TypeError):
        raise BadRequest("'cursor' is not one that monit gave") from None
    if not isinstance(activity, (int, float)) or isinstance(activity, bool) or not isinstance(job_id, str):
        raise BadRequest("'cursor' is not one that monit gave")
    return float(activity), job_id


def list_jobs(registry: InboxRegistry, query: JobQuery, allowed: frozenset[str] | None) -> dict[str, Any]:
    """A page of the listing: ``{"jobs": [...], "next": cursor or null}``.

    Only the page's jobs are summarized; the rest are judged by their
    activity and state alone.
    """
    candidates: Iterable[str] = registry.job_ids() if allowed is None else sorted(allowed)
    keyed = []
    for job_id in candidates:
        found = registry.job_activity(job_id)
        if found is None:
            continue
        activity, state = found
        if query.state is not None and state != query.state:
            continue
        if query.since is not None and activity < query.since:
            continue
        key = (-activity, job_id)
        if query.after is not None and key <= (-query.after[0], query.after[1]):
            continue
        keyed.append(key)
    page = heapq.nsmallest(query.limit + 1, keyed)
    more = len(page) > query.limit
    page = page[: query.limit]
    jobs = [summary.as_json() for summary in map(registry.summary, (job_id for _, job_id in page)) if summary]
    last = page[-1] if more else None
    return {"jobs": jobs, "next": None if last is None else cursor_of(-last[0], last[1])}
