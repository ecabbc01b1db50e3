"""Many jobs on one SSE response: what a dashboard watches over one connection.

A browser on HTTP/1.1 holds at most six connections to one origin, so a
page that watches a seventh job with its own EventSource stalls. One
response for many jobs avoids that. Its frames go out in the order of their
ids, which are global (the JetStream sequence, or the process-wide counter
in core mode), so the last id a reader saw places it in every job at once:
a reconnect with ``Last-Event-ID`` gets, of each job, what it has not seen.

Unlike a one-job stream, it cannot write each batch an inbox hands out as
it comes: the batches come in the order of inboxes, not of ids. While its
reader is *live* (it has every event handed out so far), the stream queues
its jobs' batches, and once the registry's flush is over (``after_flush``),
when no inbox holds an event still to come, writes them as one batch, merged
by id; streams of the same jobs share that batch, as one-job streams share
theirs. A reader that is not live (a replay, one fallen behind on a slow
socket, a job that ran again, events still pending) reads each job's history
from where it stands instead (``next_batch``), merges the frames by id and
gets about a batch's worth at a time, at the pace the socket takes it; once
it has all, it is live again. So slow readers cost nothing more, and a frame
is never written before one with a lower id that is still to come.

It follows each job, not one run of it: a job that opens again after its
close is followed into its new run, once the reader has all of the run
before (whose record the registry keeps for ``--retention``).
"""

from __future__ import annotations

from collections.abc import Callable

from monit.inbox import BATCH_BYTES, CLOSED, Batch, Inbox, InboxClosed, Tagged
from monit.registry import InboxRegistry
from monit.sse import encode_gap, frame_id, tag_frame
from monit.web.stream import EventStream

_UNMADE = Batch(b"", 0, 0)  # what a merge not made yet is looked up as
_SMALLEST_SHARE = 4096  # bytes read from one job at a time, however many jobs share a batch


class _Job:
    """One job of a many-job response: the run the reader is in, and how far it has got in it."""

    __slots__ = ("id", "tag", "run", "cursor", "_source")

    def __init__(self, job_id: str, source: ManyJobs) -> None:
        self.id = job_id
        self.tag = job_id.encode("ascii")
        self.run: Inbox | None = None
        self.cursor = 0  # the id of the last of its events the reader has
        self._source = source

    def deliver(self, batch: Batch) -> None:
        """The inbox flushed: into the stream's queue while its reader is live in the job's latest
        run (the cursor moves past it now, and back if the queue is not written); else the stream
        reads the history itself. (Per batch and reader: kept to the least work.)"""
        source = self._source
        run = self.run
        if (
            not source._live
            or run is None
            or run.successor is not None
            or run.tagged_batch(batch).ids[0] <= self.cursor
        ):
            source.leave_queue()  # a batch the reader has some of (a restarted peer's replay) is read from the history
            return
        batches = source._batches
        if not batches:
            source._registry.after_flush(source._kept_write_queue)
        batches.append(batch)
        source._moved.append((self, self.cursor))
        self.cursor = batch.last_id

    def end(self) -> None:
        """A run is over; the reader still gets what is left of it, and the job may run again."""
        self._source.wake()

    def notice(self, frame: bytes) -> None:
        """A notice about the job (``monit.stalled``): the stream writes it at once, naming the job."""
        self._source.notice(tag_frame(frame, self.tag))

    def current_run(self) -> Inbox:
        """The run to read: past those the reader has all of, into the job's later runs."""
        run = self.run
        assert run is not None, "jobs are followed until the stream detaches"
        while self.cursor >= run.last_id and run.successor is not None:
            run = self.run = run.successor
        return run

    @property
    def over(self) -> bool:
        """The job's latest run has ended and the reader has all of it."""
        run = self.current_run()
        return run.state is CLOSED and run.successor is None and self.cursor >= run.last_id


class ManyJobs:
    """Several jobs, the source of one stream: each frame's data names its job.

    A job that ends does not end the response; the last one to end does.
    """

    __slots__ = (
        "_registry",
        "_job_ids",
        "name",
        "_jobs",
        "_catch_up",
        "_notice",
        "_live",
        "_batches",
        "_moved",
        "_kept_write_queue",
    )
    ended = "every job ended"

    def __init__(self, registry: InboxRegistry, job_ids: list[str]) -> None:
        self._registry = registry
        self._job_ids = job_ids
        self.name = ",".join(job_ids)
        self._jobs: list[_Job] = []
        self._catch_up: Callable[[], None] | None = None  # the stream's, while it is attached
        self._notice: Callable[[bytes], None] | None = None  # the stream's, while it is attached
        self._live = False  # the reader has every event handed out: batches go into the queue
        self._batches: list[Batch] = []  # the queue: this flush's batches, for the live reader
        self._moved: list[tuple[_Job, int]] = []  # each queued batch's job, and its cursor before
        self._kept_write_queue = self._write_queue  # made once: after_flush takes it each flush

    def admit(self, after: int, maker: str) -> None:
        """Raise InboxClosed if no job has more for the reader, InboxLimit if the jobs' new inboxes would be too many."""
        if all(self._seen_all(job_id, after) for job_id in self._job_ids):
            raise InboxClosed(self.name)
        self._registry.admit_many(self._job_ids, maker)

    def _seen_all(self, job_id: str, after: int) -> bool:
        """The job has ended and the reader has all of it."""
        inbox = self._registry.get(job_id)
        return inbox is not None and inbox.over_for(after)

    def attach(self, stream: EventStream, after: int, maker: str) -> None:
        """Follow every job, those that are over too: they may run again."""
        self._catch_up = stream.catch_up
        self._notice = stream.notice
        unknown = after > self._registry.last_id  # an id from no history of ours: the stream was made anew
        self._jobs = [self._follow(job_id, 0 if unknown else after, maker) for job_id in self._job_ids]
        if unknown:
            stream.write_notice(b"".join(tag_frame(encode_gap(None, None), job.tag) for job in self._jobs))

    def _follow(self, job_id: str, after: int, maker: str) -> _Job:
        job = _Job(job_id, self)
        run = job.run = self._registry.follow_job(job_id, job, maker, after)
        # A reader past the job's last event has all of it so far; the job's next events
        # come after every id the reader has.
        job.cursor = run.last_id if run.start is not None and after >= run.last_id else after
        return job

    def started(self, stream: EventStream) -> None:
        """Write what the reader has not seen."""
        stream.catch_up()

    def watching(self) -> tuple[str, ...]:
        return tuple(job.id for job in self._jobs)

    def wake(self) -> None:
        """Events came (or a job ended): the stream reads them once the flush is over."""
        if self._catch_up is not None:
            self._registry.after_flush(self._catch_up)

    def leave_queue(self) -> None:
        """The reader is not live (or a job ran again): the stream reads the histories once the flush is over."""
        self._drop_queue()
        self.wake()

    def _drop_queue(self) -> None:
        """Not live: what the queue holds is left to the histories, each job's cursor back where it was."""
        self._live = False
        for job, cursor in reversed(self._moved):
            job.cursor = cursor
        self._batches = []
        self._moved = []

    def _write_queue(self) -> None:
        """Once the flush is over, the stream writes the queue (``next_batch``); one it cannot
        take now (its socket is full) is left to the histories, read when the socket drains."""
        if not self._batches or self._catch_up is None:
            return
        self._catch_up()
        if self._batches:
            self._drop_queue()

    def over(self) -> bool:
        return all(job.over for job in self._jobs)

    def notice(self, frame: bytes) -> None:
        """Write a job's notice, tagged with the job, while the stream is attached: after the
        frames handed out before it, which may wait in the queue."""
        if self._notice is not None:
            if self._batches:
                self._write_queue()
            self._notice(frame)

    def next_batch(self, after: int) -> Batch | None:
        """What the reader has not had, in id order: the queue as one batch while it is live,
        else about a batch's worth from the histories; once it has every event, it is live.

        Each job has its own cursor: ``after``, one id for all, is not needed.
        """
        if self._live:
            if not self._batches:
                return None
            batch = self._queued()
            if batch is not None:
                return batch
        self._drop_queue()
        batch = self._read_histories()
        if batch is None:
            self._live = self._caught_up()
        return batch

    def _queued(self) -> Batch | None:
        """The queue as one batch, in id order (the jobs' cursors are past it already).

        None (and the histories are read instead) while an inbox holds events
        not handed out, lest a frame come before one with a lower id, and for
        more than a batch's worth, which the histories give a piece at a time.
        """
        if not self._registry.flushed:
            return None
        batch = _merged(tuple(self._batches), self._moved)
        if batch is not None:
            self._batches = []
            self._moved = []
        return batch

    def _caught_up(self) -> bool:
        """The reader has every event of each job handed out so far, none is pending, and no
        gap notice is due: what the queue needs."""
        for job in self._jobs:
            run = job.current_run()
            if job.cursor < run.last_id and not (run.start is None and self._from_start(job.cursor, run)):
                return False
        return True

    def _from_start(self, cursor: int, run: Inbox) -> bool:
        """A reader at ``cursor`` before the run's first event has missed none of it (see ``_after``)."""
        return cursor == 0 or self._registry.id_base <= cursor >= run.run_after

    def _read_histories(self) -> Batch | None:
        """About a batch's worth of the jobs' unseen frames from their histories, in id order, notices first.

        Each job has its own cursor: one id for all is not needed.
        Frames go out only up to the *horizon*: below any event not handed out
        yet, below the last frame read of a job whose read was cut short, and
        to the end of a run whose job has run again, so no frame with a lower
        id can come after them.
        """
        share = max(_SMALLEST_SHARE, BATCH_BYTES // len(self._jobs))
        horizon: float = float("inf")
        notices: list[bytes] = []
        frames: list[tuple[int, _Job, bytes]] = []
        for job in self._jobs:
            run = job.run
            assert run is not None, "jobs are followed until the stream detaches"
            if run.successor is not None:  # the job ran again: past the runs the reader has all of
                run = job.current_run()
            if run.pending_from is not None:
                horizon = min(horizon, run.pending_from - 1)
            cursor, last = job.cursor, run.last_id
            if cursor >= last:
                continue
            if run.successor is not None:  # the next run's frames wait for the rest of this one
                horizon = min(horizon, last)
            start = run.start
            after = self._after(job, run, start) if start is not None and cursor < start else cursor
            job_notices, job_frames, reached = run.frames_since(after, share)
            if job_notices:
                notices.extend(tag_frame(notice, job.tag) for notice in job_notices)
                job.cursor = reached
            if sum(map(len, job_frames)) >= share:
                horizon = min(horizon, frame_id(job_frames[-1]))
            frames.extend((frame_id(frame), job, frame) for frame in job_frames)
        return self._merge(notices, frames, horizon)

    def _after(self, job: _Job, run: Inbox, start: int) -> int:
        """Where a reader whose id is before the run's first event (``start``) stands in it,
        as ``Inbox.frames_since`` takes it.

        An id is global, so such a reader has usually missed nothing of the
        run: it is read from its start (0). Not when the id is older than this
        process's history (core mode, after a restart) or than the job's
        previous run, whose record is gone: then the reader may have missed
        events, and the run says so with a gap notice.
        """
        cursor = job.cursor
        return 0 if cursor < start and self._from_start(cursor, run) else cursor

    def _merge(self, notices: list[bytes], frames: list[tuple[int, _Job, bytes]], horizon: float) -> Batch | None:
        """The notices, then the frames up to the horizon in id order, about a batch's worth."""
        frames.sort(key=lambda entry: entry[0])
        out = notices
        size = sum(map(len, notices))
        events = last = 0
        for event_id, job, frame in frames:
            if event_id > horizon or size >= BATCH_BYTES:
                break
            assert job.run is not None, "jobs are followed until the stream detaches"
            tagged = job.run.tagged(frame, event_id)
            out.append(tagged)
            size += len(tagged)
            job.cursor = last = event_id
            events += 1
        if not out:
            return None
        return Batch(b"".join(out), events, last)

    def detach(self, stream: EventStream) -> None:
        self._catch_up = self._notice = None
        self._drop_queue()
        for job in self._jobs:
            self._registry.unfollow_job(job.id, job)


def _merged(parts: tuple[Batch, ...], jobs: list[tuple[_Job, int]]) -> Batch | None:
    """The queued batches (``parts``, of ``jobs``) as one, in id order; None if that would be
    more than a batch's worth.

    Made by the first stream of these jobs in the flush, kept on the first
    batch's tags by the others and shared by the rest: the same batches make
    the same one. (Every stream gets a flush's batches in the same order.)
    """
    first = parts[0].tagged
    others = parts[1:]  # not the first too: the batch would hold itself, and outlive its flush
    merged = _UNMADE if first is None else first.merged.get(others, _UNMADE)
    if merged is _UNMADE:
        tagged = [_tags(job, part) for (job, _), part in zip(jobs, parts, strict=True)]
        merged = tagged[0].merged[others] = _merge(tagged, parts)
    return merged


def _tags(job: _Job, batch: Batch) -> Tagged:
    assert job.run is not None, "queued: followed"
    return job.run.tagged_batch(batch)


def _merge(tagged: list[Tagged], parts: tuple[Batch, ...]) -> Batch | None:
    """The tagged frames of the batches in id order, if they are at most a batch's worth.

    Usually each job's frames of a flush are ids of their own, the batches
    only to be put in order; else the frames are sorted.
    """
    if sum(len(tags.data) for tags in tagged) > BATCH_BYTES:
        return None
    events = sum(part.events for part in parts)
    last = max(part.last_id for part in parts)
    order = sorted(range(len(parts)), key=lambda index: tagged[index].ids[0])
    if all(parts[one].last_id < tagged[other].ids[0] for one, other in zip(order, order[1:], strict=False)):
        return Batch(b"".join([tagged[index].data for index in order]), events, last)
    frames = sorted((event_id, frame) for tags in tagged for event_id, frame in zip(tags.ids, tags.frames, strict=True))
    return Batch(b"".join([frame for _, frame in frames]), events, last)
