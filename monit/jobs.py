"""What monit tells about a job as a whole: its summary, and the notices of a job gone quiet.

A summary is made from what every ``--jetstream`` instance sees alike: the
events' own times (the stream's timestamps), their count and the close
event's subject. Only ``readers`` is the instance's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from monit.inbox import CLOSED, CLOSING, OPEN, Inbox
from monit.sse import compact_json, encode_event

JOB_STATES = ("open", "closed", "error", "abandoned", "waiting")
STALLED_EVENT = "monit.stalled"
RESUMED_EVENT = "monit.resumed"


def iso_time(at: float | None) -> str | None:
    """A time as ISO 8601 in UTC, to the millisecond (``2024-05-01T12:00:00.123Z``)."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_state(inbox: Inbox) -> str:
    """``open`` once the job opened it or speaks (its open may have been missed), ``waiting`` until then;
    once its close event came, ``error`` for a ``….error`` subject, else ``closed``."""
    state = inbox.state
    if state is CLOSING or state is CLOSED:
        close = inbox.close_event
        return "error" if close is not None and close.type.endswith(".error") else "closed"
    if state is OPEN or inbox.events:
        return "open"
    return "waiting"


def speaks(inbox: Inbox) -> bool:
    """A job that is open, and so may fall silent: ``job_state`` is ``open``."""
    state = inbox.state
    return state is OPEN or (bool(inbox.events) and state is not CLOSING and state is not CLOSED)


def _event_type(frame: bytes | None) -> str | None:
    """The event name of a frame monit encoded (``id: N`` then maybe ``event: NAME``)."""
    if frame is None:
        return None
    lines = frame.split(b"\n", 2)
    if len(lines) > 1 and lines[1].startswith(b"event: "):
        return lines[1][7:].decode("utf-8", "replace")
    return "message"


@attrs.frozen
class JobSummary:
    """One job as ``GET /jobs`` lists it: its latest run, and how many readers watch it here.

    ``activity`` orders the listing (newest first): its latest event's
    time, or when the inbox was made for one that has none.
    """

    id: str
    state: str
    opened_at: float | None
    closed_at: float | None
    events: int
    last_event_at: float | None
    last_event_type: str | None
    readers: int
    stalled: bool
    activity: float

    @classmethod
    def of(cls, inbox: Inbox, runs: Sequence[Inbox] = ()) -> JobSummary:
        """The summary of the job whose latest run is ``inbox``; ``runs``: every run kept, to count readers."""
        return cls(
            id=inbox.id,
            state=job_state(inbox),
            opened_at=inbox.opened_at,
            closed_at=inbox.closed_at,
            events=inbox.events,
            last_event_at=inbox.touched if inbox.events else None,
            last_event_type=_event_type(inbox.last_frame),
            readers=sum(len(run.subscribers) for run in runs or (inbox,)),
            stalled=inbox.stalled,
            activity=inbox.touched,
        )

    def abandoned(self) -> JobSummary:
        """What is kept of a job whose close never came, once it is let go."""
        return attrs.evolve(self, state="abandoned", readers=0, stalled=False)

    def as_json(self) -> dict[str, Any]:
        """The summary as the API answers it."""
        return {
            "id": self.id,
            "state": self.state,
            "opened_at": iso_time(self.opened_at),
            "closed_at": iso_time(self.closed_at),
            "events": self.events,
            "last_event_at": iso_time(self.last_event_at),
            "last_event_type": self.last_event_type,
            "readers": self.readers,
            "stalled": self.stalled,
        }


def stalled_notice(silent_for: float, last_event_at: float) -> bytes:
    """``event: monit.stalled``: the job has published nothing for ``silent_for`` seconds. No id."""
    data = {"silent_for": round(silent_for, 3), "last_event_at": iso_time(last_event_at)}
    return encode_event(None, compact_json(data), STALLED_EVENT)


def resumed_notice(silent_for: float, last_event_at: float) -> bytes:
    """``event: monit.resumed``: the stalled job spoke again, at ``last_event_at``, after ``silent_for`` seconds. No id."""
    data = {"silent_for": round(silent_for, 3), "last_event_at": iso_time(last_event_at)}
    return encode_event(None, compact_json(data), RESUMED_EVENT)
