"""``GET /jobs/events``: the live feed of jobs, each job's lifecycle changes as Server-Sent Events.

The registry tells the feed when a job opens, closes, stalls or resumes,
never per event. The feed keeps each job's latest change, encoded once for
every reader, for as long as the registry knows the job: a reader that
comes (or comes back with ``Last-Event-ID``) gets the latest change of each
job after its id, then the live ones. A reader that is behind gets, of each
job, only its latest change: that is also what a reconnect would give it.

A change's id is the id of the event it happened at (the open, close or
first event after the silence), from the same global sequence as the jobs'
events. A stall has no event of its own: it takes the latest id there is
when the job is found silent, so ids never go down, but another frame may
have the same id. A reader that resumes with an id gets the stalls with that
very id again, since it cannot tell whether it had them; the data is the
job's whole summary, so a frame seen twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from monit.inbox import BATCH_BYTES, Batch
from monit.registry import JOB_STALLED, InboxRegistry
from monit.sse import compact_json, encode_event
from monit.web.stream import EventStream


class _Change:
    """A job's latest change: its place in the feed's order (``seq``), its job, id, kind and frame."""

    __slots__ = ("seq", "job", "id", "kind", "frame")

    def __init__(self, seq: int, job_id: str, change_id: int, kind: str, frame: bytes) -> None:
        self.seq = seq
        self.job = job_id
        self.id = change_id
        self.kind = kind
        self.frame = frame


class JobFeed:
    """Each job's latest lifecycle change, in the order they came, and the feed's readers to wake."""

    def __init__(self, registry: InboxRegistry) -> None:
        self._registry = registry
        self._latest: dict[str, _Change] = {}  # in the order of their changes: a job that changes moves to the end
        self._seq = 0
        self._readers: dict[FeedReader, None] = {}
        self.stop = registry.watch_lifecycle(self)

    def changed(self, kind: str, job_id: str, change_id: int) -> None:
        """The registry says a job changed: keep its summary as of now, and wake the readers."""
        summary = self._registry.summary(job_id)
        if summary is None:
            return
        self._seq += 1
        self._latest.pop(job_id, None)
        frame = encode_event(change_id, compact_json(summary.as_json()), kind)
        self._latest[job_id] = _Change(self._seq, job_id, change_id, kind, frame)
        for reader in self._readers:
            reader.wake()

    def forgotten(self, job_id: str) -> None:
        self._latest.pop(job_id, None)

    def since(self, seq: int) -> list[_Change]:
        """The changes after ``seq`` in the feed's order, oldest first: read from the newest end."""
        newer = []
        for change in reversed(self._latest.values()):
            if change.seq <= seq:
                break
            newer.append(change)
        newer.reverse()
        return newer

    def add(self, reader: FeedReader) -> None:
        self._readers[reader] = None

    def discard(self, reader: FeedReader) -> None:
        self._readers.pop(reader, None)

    def __len__(self) -> int:
        """How many jobs the feed holds a change of."""
        return len(self._latest)


class FeedReader:
    """The feed as one stream's source (``monit.web.stream.Source``): the changes its token may list.

    It reads the feed from its own place in the feed's order, not from the
    id the stream last wrote (which stalls may share), and skips what is at
    or before the id the reader came back with, stalls at that id excepted.
    """

    __slots__ = ("_feed", "_registry", "_allowed", "name", "_cursor", "_floor", "_catch_up")
    ended = "feed closed"

    def __init__(self, feed: JobFeed, registry: InboxRegistry, allowed: frozenset[str] | None) -> None:
        """``allowed``: the jobs the token may list (None: every job)."""
        self._feed = feed
        self._registry = registry
        self._allowed = allowed
        self.name = "jobs feed"
        self._cursor = 0
        self._floor = 0
        self._catch_up: Callable[[], None] | None = None  # the stream's, while it is attached

    def admit(self, after: int, maker: str) -> None:
        """A feed is never over and makes no inbox: nothing to refuse."""

    def attach(self, stream: EventStream, after: int, maker: str) -> None:
        """Read from the feed's start, skipping what the reader had; an id from no history of ours skips nothing."""
        self._floor = 0 if after > self._registry.last_id else after
        self._catch_up = stream.catch_up
        self._feed.add(self)

    def started(self, stream: EventStream) -> None:
        stream.catch_up()

    def wake(self) -> None:
        """A job changed: the stream reads it once the turn's events are out."""
        if self._catch_up is not None:
            self._registry.after_flush(self._catch_up)

    def next_batch(self, after: int) -> Batch | None:
        """About a batch's worth of the changes this reader has not had and may see."""
        out: list[bytes] = []
        size = 0
        last = after
        for change in self._feed.since(self._cursor):
            self._cursor = change.seq
            if self._skipped(change):
                continue
            out.append(change.frame)
            size += len(change.frame)
            last = change.id
            if size >= BATCH_BYTES:
                break
        if not out:
            return None
        return Batch(b"".join(out), len(out), last)

    def _skipped(self, change: _Change) -> bool:
        """Had by a reader that came back with ``_floor``, or not for this token."""
        if change.id < self._floor or (change.id == self._floor and change.kind != JOB_STALLED):
            return True
        allowed = self._allowed
        return allowed is not None and change.job not in allowed

    def over(self) -> bool:
        """Never: the feed goes on until the reader or the server ends it."""
        return False

    def watching(self) -> tuple[str, ...]:
        """What a recheck asks access to: the jobs the token named, if it named them."""
        return () if self._allowed is None else tuple(sorted(self._allowed))

    def detach(self, stream: EventStream) -> None:
        self._catch_up = None
        self._feed.discard(self)
