"""An inbox: one job's events, encoded once, and the readers that watch it."""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterator
from enum import StrEnum
from itertools import islice
from typing import Any, NamedTuple, Protocol

from twisted.logger import Logger

from monit.sse import encode_event, encode_gap, frame_id, tag_frame

_INBOX_ID = re.compile(r"[A-Za-z0-9_.:~-]{1,128}")


def valid_inbox_id(inbox_id: str) -> bool:
    """Ids end up in logs and URLs: keep them short and plain."""
    return _INBOX_ID.fullmatch(inbox_id) is not None


_EMPTY_RING: deque[bytes] = deque(maxlen=0)
# A batch larger than this is cut, so that a reader's socket can push back
# between pieces and a huge message cannot land in every reader's buffer at once.
BATCH_BYTES = 64 * 1024


class Batch:
    """Frames for the wire, joined once per reactor turn and shared by every reader.

    ``last_id`` is the id of its last event: where a reader that takes it has
    got to. ``framed`` holds the same bytes as a transport's framing wants
    them (an HTTP/1.1 chunk), made by the first reader that needs them and
    reused by the rest, so each reader costs one write. ``tagged``: its frames
    as many-job streams send them (``Inbox.tagged_batch``), made once for all of them.
    """

    __slots__ = ("data", "events", "last_id", "framed", "tagged")

    def __init__(self, data: bytes, events: int, last_id: int) -> None:
        self.data = data
        self.events = events
        self.last_id = last_id
        self.framed: bytes | None = None
        self.tagged: Tagged | None = None


class Tagged:
    """A flushed batch's frames with their data naming the job, as many-job streams send them.

    ``merged``: the batches many-job streams made of it and the batches of
    other jobs that came after it in the same flush, by those batches, so
    that streams of the same jobs share one batch (and its framing) as
    one-job streams do.
    """

    __slots__ = ("ids", "frames", "data", "merged")

    def __init__(self, ids: list[int], frames: list[bytes]) -> None:
        self.ids = ids
        self.frames = frames
        self.data = b"".join(frames)
        self.merged: dict[tuple[Batch, ...], Batch | None] = {}


class Event(NamedTuple):
    """One event as a consumer in the same process sees it."""

    id: int | None
    type: str  # "message", the lifecycle subject that carried it, or "gap"
    data: Any  # the JSON payload, parsed


def parse_data(data: str) -> Any:
    """An event's payload as Python values (monit's payloads are JSON; anything else stays text)."""
    try:
        return json.loads(data)
    except ValueError:
        return data


def _first_after(ring: deque[bytes], count: int, after: int) -> int:
    """The index of the first of the ring's first ``count`` frames whose id is above ``after``.

    A live reader is at most a frame or two behind: look there before searching.
    """
    if not count or frame_id(ring[count - 1]) <= after:
        return count
    if count == 1 or frame_id(ring[count - 2]) <= after:
        return count - 1
    low, high = 0, count - 2
    while low < high:
        middle = (low + high) // 2
        if frame_id(ring[middle]) <= after:
            low = middle + 1
        else:
            high = middle
    return low


def _slices(frames: list[bytes], limit: int) -> Iterator[tuple[int, int]]:
    """Runs of frames of about ``limit`` bytes each, as (start, stop) indexes."""
    start = size = 0
    for index, frame in enumerate(frames):
        size += len(frame)
        if size >= limit:
            yield start, index + 1
            start, size = index + 1, 0
    if start < len(frames):
        yield start, len(frames)


class InboxLimit(Exception):
    """No room for another inbox: a transient refusal."""


class UserInboxLimit(InboxLimit):
    """One user asked for too many inboxes that no job has opened."""


class InboxClosed(Exception):
    """The inbox has ended and the reader has seen all of it."""


class Subscriber(Protocol):
    """What an inbox needs of a reader: take batches of frames, and be told the end.

    A *follower* (a many-job response) follows the job rather than one run of
    it: the end of a run only wakes it, and it moves on with the job to its
    next run.
    """

    def deliver(self, batch: Batch) -> None: ...

    def end(self) -> None: ...

    def notice(self, frame: bytes) -> None:
        """A frame about the job that is no event (``monit.stalled``): it has no id, and no history keeps it."""


class InboxState(StrEnum):
    """Where an inbox is in its life. The values are the ``monit_inboxes`` metric's labels."""

    UNOPENED = "unopened"  # made by a reader, or by an event whose job's open was missed
    OPEN = "open"  # a job opened it
    CLOSING = "closing"  # the job's close event came: readers get the rest until the grace period is over
    CLOSED = "closed"  # over: kept a while as a record for readers that come back, then let go


# The members as module names: reading one is a global lookup, where ``InboxState.CLOSED``
# is an enum class lookup, several times slower on CPython 3.11; some checks are per event.
UNOPENED, OPEN, CLOSING, CLOSED = InboxState.UNOPENED, InboxState.OPEN, InboxState.CLOSING, InboxState.CLOSED


class Inbox:
    """A bounded ring of encoded frames with increasing ids, and its readers.

    Frames published in one reactor turn wait in ``pending`` until the
    registry flushes them, so a reader gets one write per turn, not one per
    event. A reader that raises is that reader's problem: it is logged and
    detached, and the others still get every event (as
    ``twisted.logger.LogPublisher`` treats its observers).

    Its ``state``, and what the registry judges it by (its times, maker and
    successor), change only in its own methods: the transitions ``open``,
    ``close``, ``retire``, ``let_go``, ``revive`` and ``hand_over``, and
    ``publish``, ``discard`` and ``release``, which the registry calls.
    """

    log = Logger()
    # Slots: a flood of new jobs makes inboxes by the thousand, and each is smaller without a dict.
    __slots__ = (
        "id",
        "_detached",
        "state",
        "touched",
        "subscribers",
        "_history",
        "_ring",
        "_pending",
        "_last_id",
        "run_after",
        "_start",
        "_dropped",
        "_base64",
        "close_event",
        "maker",
        "bytes",
        "ends_at",
        "left",
        "_tagged",
        "successor",
        "events",
        "opened_at",
        "closed_at",
        "stall_mark",
    )

    def __init__(
        self,
        inbox_id: str,
        history: int,
        now: float,
        base64: bool = False,
        detached: Callable[[Inbox], None] = lambda inbox: None,
        last_id: int = 0,
        run_after: int = 0,
        maker: str | None = None,
    ) -> None:
        """``last_id``: where ids go on from (core mode's epoch, or the previous run's last);
        ``run_after``: the last id of the job's previous run, if this is a new run of it;
        ``maker``: the user whose request made it, if a reader's did."""
        self.id = inbox_id
        self._detached = detached
        self.state = UNOPENED
        self.touched = now  # when its latest event came
        self.subscribers: dict[Subscriber, bool] = {}  # each reader: whether it follows the job (a follower)
        self._history = history
        self._ring: deque[bytes] = _EMPTY_RING  # made on the first event: many inboxes never get one
        self._pending: list[bytes] | None = None  # made when a reader waits for an event
        self._last_id = last_id
        self.run_after = run_after
        self._start: int | None = None  # the id before this run's first event
        self._dropped: bytes | int = 0  # the last event that fell out of the history (or _start)
        self._base64 = base64
        self.close_event: Event | None = None  # set when the job's close event arrives
        self.maker = maker  # the user whose request made it, until a job opens it
        self.bytes = 0  # what its history holds
        self.ends_at = 0.0  # once the job's close event came: when its grace period is over
        self.left = 0.0  # when its last reader left
        self._tagged: dict[int, bytes] | None = None  # frames as many-job streams send them, by id
        self.successor: Inbox | None = None  # the job's next run, once it opens again after this one's close
        self.events = 0  # events of this run so far
        self.opened_at: float | None = None  # when the job's open event came (its time, as ``touched``)
        self.closed_at: float | None = None  # when its close event came
        self.stall_mark: float | None = None  # ``touched`` when the job was found silent too long (see ``stalled``)

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def closed(self) -> bool:
        """Whether it is over (``state is CLOSED``), for readers of it outside the registry."""
        return self.state is CLOSED

    # The lifecycle: UNOPENED -> OPEN -> CLOSING -> CLOSED; a closed one revives as UNOPENED,
    # and one let go is CLOSED from any state.

    def open(self) -> None:
        """A job opened it (again, or after a reader made it: see ``release``)."""
        self.state = OPEN

    def release(self) -> str | None:
        """It no longer belongs to the user who made it (a job took it over, or it goes); who that was."""
        maker, self.maker = self.maker, None
        return maker

    def close(self, event: Event, grace: float) -> bool:
        """The job's close event came: keep it; true if this starts the grace period.

        The grace period ends ``grace`` seconds after that event (``ends_at``);
        a second close event changes only the event kept.
        """
        self.close_event = event
        if self.state is CLOSING:
            return False
        self.state = CLOSING
        self.closed_at = self.touched
        self.ends_at = self.touched + grace
        return True

    def retire(self) -> None:
        """The grace period is over: it is a record now, and its readers are told the end."""
        self.state = CLOSED
        self.end()

    def let_go(self) -> None:
        """It is dropped: over for every reader still holding it, followers too."""
        self.state = CLOSED
        self.end()
        self.subscribers.clear()

    def revive(self) -> None:
        """An event or a reader came for it after its end: it lives again, unopened."""
        self.state = UNOPENED

    def hand_over(self, successor: Inbox) -> None:
        """The job runs again as ``successor``: its followers move there, and this run points to it."""
        self.successor = successor
        for follower in [subscriber for subscriber, follows in self.subscribers.items() if follows]:
            del self.subscribers[follower]
            successor.subscribers[follower] = True

    def publish(self, data: str, now: float, event: str | None = None, event_id: int | None = None) -> bool:
        """Encode the event once, which came at ``now``; true if readers wait for it (the inbox needs a flush).

        Its id is the next one, or ``event_id`` (the registry's process-wide
        id, or a JetStream sequence), which the caller keeps above ``last_id``.
        """
        self.touched = now
        self.events += 1
        if event_id is None:
            event_id = self._last_id + 1
        if self._start is None:
            self._start = self._dropped = event_id - 1
        self._last_id = event_id
        frame = encode_event(event_id, data, event, self._base64)
        ring = self._ring
        if not ring.maxlen:
            ring = self._ring = deque(maxlen=self._history)
        elif len(ring) == ring.maxlen:
            self._dropped = ring[0]  # the oldest falls out
            self.bytes -= len(ring[0])
        ring.append(frame)
        self.bytes += len(frame)
        if not self.subscribers:
            return False
        if self._pending is None:
            self._pending = [frame]
            return True
        self._pending.append(frame)
        return False

    @property
    def stalled(self) -> bool:
        """Found silent too long, and silent since (an event moves ``touched`` past the mark), and not over."""
        state = self.state
        return self.stall_mark is not None and self.touched == self.stall_mark and (state is OPEN or state is UNOPENED)

    @property
    def last_frame(self) -> bytes | None:
        """The frame of its latest event, even when the history no longer holds it; None before any."""
        if self._ring:
            return self._ring[-1]
        return self._dropped if isinstance(self._dropped, bytes) else None

    def notify(self, frame: bytes, reader: Subscriber | None = None) -> None:
        """Hand every reader (or one) a notice: a frame with no id, kept nowhere. One that fails is logged
        and kept: a notice is no event, and missing one loses nothing of the job."""
        for subscriber in tuple(self.subscribers) if reader is None else (reader,):
            try:
                subscriber.notice(frame)
            except Exception:
                self.log.failure("a notice to a reader of inbox {inbox} failed", inbox=self.id)

    def trim(self, keep: int) -> int:
        """Drop the oldest events until the history holds at most ``keep`` bytes; the bytes freed.

        Events not handed out yet stay. A reader that later asks for a dropped
        event gets the gap notice, as for one that fell out of the history.
        """
        ring, freed = self._ring, 0
        while self.bytes > keep and len(ring) > len(self._pending or ()):
            self._dropped = ring.popleft()
            self.bytes -= len(self._dropped)
            freed += len(self._dropped)
        return freed

    def flush(self) -> None:
        """Hand what was published since the last flush to every reader, as one batch."""
        if not self._pending:
            return
        pending, self._pending = self._pending, None
        data = b"".join(pending)
        if len(data) <= BATCH_BYTES:
            self._hand_out(Batch(data, len(pending), self._last_id))
            return
        for start, stop in _slices(pending, BATCH_BYTES):
            self._hand_out(Batch(b"".join(pending[start:stop]), stop - start, frame_id(pending[stop - 1])))

    def _hand_out(self, batch: Batch) -> None:
        for subscriber in tuple(self.subscribers):
            try:
                subscriber.deliver(batch)
            except Exception:
                self._failed(subscriber)

    def _failed(self, subscriber: Subscriber) -> None:
        """Log a reader's failure once and detach it, ending its response if it can be ended."""
        self.log.failure("delivering to a reader of inbox {inbox} failed; detached it", inbox=self.id)
        if subscriber not in self.subscribers:
            return  # it detached itself before it raised
        del self.subscribers[subscriber]
        try:
            subscriber.end()
        except Exception:
            self.log.failure("ending a failed reader of inbox {inbox}", inbox=self.id)
        self._detached(self)

    def frames_after(self, after: int, limit: int = BATCH_BYTES) -> Batch | None:
        """The handed-out events after ``after``, about ``limit`` bytes of them, gap notice first.

        None when there are none. Events not flushed yet are left to the next
        flush, which hands them to every reader. A new reader (``after`` 0),
        or one with the previous run's last id, gets this run from its start;
        one that missed events the history no longer holds gets the gap notice
        first, naming them (so does one whose id is before this run, but not
        the previous run's last: it missed some of the job); one whose id
        is from no history of ours (beyond the last id: the JetStream stream
        was made anew) gets a gap notice that cannot name them, then everything.
        """
        notices, frames, reached = self.frames_since(after, limit)
        if not notices and not frames:
            return None
        return Batch(b"".join(notices + frames), len(frames), frame_id(frames[-1]) if frames else reached)

    def frames_since(self, after: int, limit: int = BATCH_BYTES) -> tuple[list[bytes], list[bytes], int]:
        """What ``frames_after`` joins: the gap notices, the event frames, and where a
        reader that took only the notices stands."""
        if self._start is None:
            return [], [], after
        notices: list[bytes] = []
        if after > self._last_id:
            notices.append(encode_gap(None, None))
            after = self._start
        elif after == 0 or after == self.run_after:  # a new reader, or one that has all of the previous run
            after = self._start
        ring, handed = self._ring, len(self._ring) - len(self._pending or ())
        dropped = self._dropped if isinstance(self._dropped, int) else frame_id(self._dropped)
        if after < dropped and not notices:
            notices.append(encode_gap(after + 1, dropped))
        frames: list[bytes] = []
        size = 0
        for frame in islice(ring, _first_after(ring, handed, after), handed):
            frames.append(frame)
            size += len(frame)
            if size >= limit:
                break
        return notices, frames, max(after, dropped)

    def over_for(self, after: int) -> bool:
        """The inbox has closed and a reader whose last id is ``after`` has all of it."""
        return self.state is CLOSED and 0 < after >= self._last_id

    def tagged(self, frame: bytes, event_id: int) -> bytes:
        """The frame as many-job streams send it (its data naming this job), made once for all of them.

        Tags of frames that have left the history are let go now and then.
        """
        tags = self._tagged
        if tags is None:
            tags = self._tagged = {}
        elif len(tags) > 2 * len(self._ring) + 64:
            oldest = frame_id(self._ring[0]) if self._ring else self._last_id + 1
            tags = self._tagged = {kept: tag for kept, tag in tags.items() if kept >= oldest}
        tag = tags.get(event_id)
        if tag is None:
            tag = tags[event_id] = tag_frame(frame, self.id.encode("ascii"), self._base64)
        return tag

    def tagged_batch(self, batch: Batch) -> Tagged:
        """A batch this inbox flushed, tagged (see ``tagged``): made by the first many-job stream that takes it."""
        tagged = batch.tagged
        if tagged is None:
            frames = [frame + b"\n\n" for frame in batch.data.split(b"\n\n")[:-1]]  # a frame ends at its blank line
            ids = [frame_id(frame) for frame in frames]
            tagged = batch.tagged = Tagged(
                ids, [self.tagged(frame, event_id) for frame, event_id in zip(frames, ids, strict=True)]
            )
        return tagged

    @property
    def start(self) -> int | None:
        """The id before this run's first event; None until it has one."""
        return self._start

    @property
    def pending_from(self) -> int | None:
        """The id of the first event not handed out yet, if any waits for the flush."""
        return frame_id(self._pending[0]) if self._pending else None

    def replay(self, subscriber: Subscriber, after: int) -> int:
        """Hand the reader what it has not seen, in pieces; how many events that was."""
        count = 0
        batch = self.frames_after(after)
        while batch is not None:
            subscriber.deliver(batch)
            count += batch.events
            after = batch.last_id
            batch = self.frames_after(after)
        return count

    def add(self, subscriber: Subscriber, after: int = 0) -> int:
        """Replay, then go live; how many events the replay held.

        The others get what is pending first, so the replay (which includes
        it) and the next flush never give the newcomer an event twice.
        """
        self.flush()
        count = self.replay(subscriber, after)
        self.subscribers[subscriber] = False
        return count

    def add_follower(self, follower: Subscriber) -> None:
        """Attach a reader that follows the job from run to run, reading the histories itself when it does not keep up."""
        self.subscribers[follower] = True

    def discard(self, subscriber: Subscriber, now: float) -> None:
        """A reader leaves, at ``now``: an unwatched inbox's idle time counts from then."""
        self.subscribers.pop(subscriber, None)
        self.left = now

    def end(self) -> None:
        """Give every reader what is pending, then tell it the inbox is closed.

        Followers stay: a job that ended may run again, and they follow it.
        """
        self.flush()
        subscribers = self.subscribers
        self.subscribers = {subscriber: True for subscriber, follows in subscribers.items() if follows}
        for subscriber in subscribers:
            try:
                subscriber.end()
            except Exception:
                self.log.failure("ending a reader of inbox {inbox} failed", inbox=self.id)
