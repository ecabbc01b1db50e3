"""Inboxes: each job's events, encoded once, and the streams that watch them."""
from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, NamedTuple, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from monit.oneshot import OneShotObserver
from monit.settings import Settings
from monit.sse import encode_event, encode_gap

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
    reused by the rest, so each reader costs one write.
    """

    __slots__ = ("data", "events", "last_id", "framed")

    def __init__(self, data: bytes, events: int, last_id: int) -> None:
        self.data = data
        self.events = events
        self.last_id = last_id
        self.framed: bytes | None = None


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


class InboxClosed(Exception):
    """The inbox has ended and the reader has seen all of it."""


class Subscriber(Protocol):
    """What an inbox needs of a reader: take batches of frames, and be told the end."""

    def deliver(self, batch: Batch) -> None: ...

    def end(self) -> None: ...


class Inbox:
    """A bounded ring of encoded frames with increasing ids, and its readers.

    Frames published in one reactor turn wait in ``pending`` until the
    registry flushes them, so a reader gets one write per turn, not one per
    event. A reader that raises is that reader's problem: it is logged and
    detached, and the others still get every event (as
    ``twisted.logger.LogPublisher`` treats its observers).
    """

    log = Logger()
    close_event: Event | None = None  # set when the job's close event arrives

    def __init__(
        self,
        inbox_id: str,
        history: int,
        now: float,
        base64: bool = False,
        detached: Callable[[Inbox], None] = lambda inbox: None,
    ) -> None:
        self.id = inbox_id
        self._detached = detached
        self.opened = False
        self.closing = False
        self.closed = False
        self.touched = now
        self.timer: IDelayedCall | None = None
        self.subscribers: dict[Subscriber, None] = {}
        self._history = history
        self._ring: deque[bytes] = _EMPTY_RING  # made on the first event: many inboxes never get one
        self._pending: list[bytes] = []
        self._last_id = 0
        self._base64 = base64

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def state(self) -> str:
        if self.closed:
            return "closed"
        if self.closing:
            return "closing"
        return "open" if self.opened else "unopened"

    def publish(self, data: str, event: str | None = None) -> bool:
        """Encode the event once; true if readers wait for it (the inbox needs a flush)."""
        self._last_id += 1
        frame = encode_event(self._last_id, data, event, self._base64)
        if not self._ring.maxlen:
            self._ring = deque(maxlen=self._history)
        self._ring.append(frame)
        if not self.subscribers:
            return False
        self._pending.append(frame)
        return len(self._pending) == 1

    def flush(self) -> None:
        """Hand what was published since the last flush to every reader, as one batch."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        data = b"".join(pending)
        if len(data) <= BATCH_BYTES:
            self._hand_out(Batch(data, len(pending), self._last_id))
            return
        first = self._last_id - len(pending) + 1
        for start, stop in _slices(pending, BATCH_BYTES):
            self._hand_out(Batch(b"".join(pending[start:stop]), stop - start, first + stop - 1))

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
        flush, which hands them to every reader. An ``after`` beyond the last
        id comes from an earlier life of this id (before a restart): such a
        reader gets everything.
        """
        handed_out = self._last_id - len(self._pending)
        if after > self._last_id:
            after = 0
        if after >= handed_out:
            return None
        first_held = self._last_id - len(self._ring) + 1
        frames = [encode_gap(after + 1, first_held - 1)] if after + 1 < first_held else []
        gap = len(frames)
        size = 0
        for frame in islice(self._ring, max(0, after - first_held + 1), handed_out - first_held + 1):
            frames.append(frame)
            size += len(frame)
            if size >= limit:
                break
        events = len(frames) - gap
        return Batch(b"".join(frames), events, max(after, first_held - 1) + events)

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
        self.subscribers[subscriber] = None
        return count

    def discard(self, subscriber: Subscriber) -> None:
        self.subscribers.pop(subscriber, None)

    def end(self) -> None:
        """Give every reader what is pending, then tell it the inbox is closed."""
        self.flush()
        subscribers, self.subscribers = self.subscribers, {}
        for subscriber in subscribers:
            try:
                subscriber.end()
            except Exception:
                self.log.failure("ending a reader of inbox {inbox} failed", inbox=self.id)


class InboxRegistry:
    """The inboxes by id, and the timers that close, keep and expire them.

    A lifecycle event opens an inbox; a close event is delivered, then the
    inbox ends after ``grace`` seconds so late readers still get it, and is
    kept as a closed record for ``retention`` seconds so a reconnecting reader
    gets the rest and the end (or learns there is nothing more). An inbox
    nothing opened (made by a reader, or by a message whose open was missed)
    expires after ``expiry`` idle seconds with nobody watching; an opened one
    whose close never comes is abandoned after ``abandon`` seconds.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, settings: Settings) -> None:
        self.clock = clock
        self._history = settings.history
        self._grace = settings.grace
        self._expiry = settings.expiry
        self._abandon = settings.abandon
        self._retention = settings.retention
        self._max_inboxes = settings.max_inboxes
        self._base64 = settings.base64
        self._inboxes: dict[str, Inbox] = {}
        self._detached = self._schedule_expiry  # one bound method shared by every inbox
        self._followers: list[Callable[[str, Event], None]] = []
        self._closers: dict[str, OneShotObserver[Event]] = {}
        self._dirty: list[Inbox] = []
        self._flush_call: IDelayedCall | None = None
        self.refused = 0
        self.events = 0
        self.deliveries = 0

    def __len__(self) -> int:
        return len(self._inboxes)

    def __contains__(self, inbox_id: str) -> bool:
        return inbox_id in self._inboxes

    def __iter__(self) -> Iterator[Inbox]:
        return iter(self._inboxes.values())

    def get(self, inbox_id: str) -> Inbox | None:
        return self._inboxes.get(inbox_id)

    def open(self, inbox_id: str, data: str, event: str) -> None:
        """A job starts (or starts again within the grace period of its close)."""
        inbox = self._obtain(inbox_id)
        inbox.opened = True
        if inbox.closing:
            inbox.closing = False
            self._cancel_timer(inbox)
            self._schedule_expiry(inbox)
        self._publish(inbox, data, event)

    def deliver(self, inbox_id: str, data: str, event: str | None = None) -> None:
        self._publish(self._obtain(inbox_id), data, event)

    def close(self, inbox_id: str, data: str, event: str) -> None:
        """Deliver the job's last event, then end its streams after the grace period."""
        inbox = self._obtain(inbox_id)
        self._publish(inbox, data, event)
        inbox.close_event = Event(inbox.last_id, event, parse_data(data))
        closer = self._closers.pop(inbox_id, None)
        if closer is not None:
            closer.fire(inbox.close_event)
        if not inbox.closing:
            inbox.closing = True
            self._cancel_timer(inbox)
            inbox.timer = self.clock.callLater(self._grace, self._retire, inbox)

    def admit(self, inbox_id: str, after: int = 0) -> None:
        """Raise what subscribing would, before the caller commits to a response.

        InboxClosed: the inbox ended and the reader has seen all of it.
        InboxLimit: the inbox does not exist and there is no room for it.
        """
        inbox = self._inboxes.get(inbox_id)
        if inbox is None:
            self._check_room()
        elif inbox.closed and 0 < after >= inbox.last_id:
            raise InboxClosed(inbox_id)

    def subscribe(self, inbox_id: str, subscriber: Subscriber, after: int = 0) -> Inbox:
        """Attach a reader, creating the inbox if nobody has opened it yet.

        A closed inbox sends what the reader has not seen, without adding it
        (the caller ends the stream).
        """
        inbox = self._inboxes.get(inbox_id)
        if inbox is not None and inbox.closed:
            self.deliveries += inbox.replay(subscriber, after)
            return inbox
        inbox = self._obtain(inbox_id, watched=True)
        self.deliveries += inbox.add(subscriber, after)
        return inbox

    def unsubscribe(self, inbox: Inbox, subscriber: Subscriber) -> None:
        inbox.discard(subscriber)
        self._schedule_expiry(inbox)

    def close_all(self) -> None:
        """End every inbox and stream, for shutdown."""
        self.flush()
        for inbox in list(self._inboxes.values()):
            self._drop(inbox)

    def _obtain(self, inbox_id: str, watched: bool = False) -> Inbox:
        """The live inbox for this id: made if there is room, revived if closed.

        One made for a reader gets its expiry timer when the last reader leaves.
        """
        inbox = self._inboxes.get(inbox_id)
        if inbox is None:
            self._check_room()
            inbox = Inbox(inbox_id, self._history, self.clock.seconds(), self._base64, self._detached)
            self._inboxes[inbox_id] = inbox
            if not watched:
                self._schedule_expiry(inbox)
        elif inbox.closed:
            inbox.closed = inbox.opened = False
            self._cancel_timer(inbox)
            self._schedule_expiry(inbox)
        return inbox

    def _check_room(self) -> None:
        if len(self._inboxes) >= self._max_inboxes:
            self.refused += 1
            raise InboxLimit(f"{len(self._inboxes)} inboxes already")

    def _publish(self, inbox: Inbox, data: str, event: str | None) -> None:
        inbox.touched = self.clock.seconds()
        self.events += 1
        self.deliveries += len(inbox.subscribers)
        if inbox.publish(data, event):
            self._dirty.append(inbox)
            if self._flush_call is None:
                self._flush_call = self.clock.callLater(0, self.flush)
        if self._followers:
            self._tell_followers(inbox, data, event)

    def follow(self, follower: Callable[[str, Event], None]) -> Callable[[], None]:
        """Call ``follower(job_id, event)`` with every event of every job; returns how to stop.

        A follower that raises is logged and kept: one bad event must not
        silence it.
        """
        self._followers.append(follower)

        def stop() -> None:
            if follower in self._followers:
                self._followers.remove(follower)

        return stop

    def _tell_followers(self, inbox: Inbox, data: str, event: str | None) -> None:
        told = Event(inbox.last_id, event or "message", parse_data(data))
        for follower in tuple(self._followers):
            try:
                follower(inbox.id, told)
            except Exception:
                self.log.failure("a follower of every job failed on {inbox}", inbox=inbox.id)

    def when_closed(self, inbox_id: str) -> Deferred[Event]:
        """Fire with the job's close event: at once if it has come, else when it does."""
        inbox = self._inboxes.get(inbox_id)
        if inbox is not None and inbox.close_event is not None and (inbox.closing or inbox.closed):
            return succeed(inbox.close_event)
        closer = self._closers.get(inbox_id)
        if closer is None:
            closer = self._closers[inbox_id] = OneShotObserver()
        return closer.when_fired()

    def flush(self) -> None:
        """Send every inbox's pending frames: once per reactor turn, one write per reader."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        dirty, self._dirty = self._dirty, []
        for inbox in dirty:
            inbox.flush()

    def _idle_limit(self, inbox: Inbox) -> float:
        return self._abandon if inbox.opened else self._expiry

    def _schedule_expiry(self, inbox: Inbox) -> None:
        if inbox.timer is None and not inbox.closing and not inbox.closed and not inbox.subscribers:
            inbox.timer = self.clock.callLater(self._idle_limit(inbox), self._check_expiry, inbox)

    def _check_expiry(self, inbox: Inbox) -> None:
        """Expire an unwatched, idle inbox; otherwise look again when it could be."""
        inbox.timer = None
        if inbox.subscribers:
            return
        remaining = inbox.touched + self._idle_limit(inbox) - self.clock.seconds()
        if remaining > 0:
            inbox.timer = self.clock.callLater(remaining, self._check_expiry, inbox)
            return
        self.log.info("inbox {inbox} expired", inbox=inbox.id)
        self._drop(inbox)

    def _retire(self, inbox: Inbox) -> None:
        """The grace period is over: end the streams, keep the record a while."""
        inbox.closing, inbox.closed = False, True
        inbox.timer = self.clock.callLater(self._retention, self._drop, inbox)
        inbox.end()

    def _drop(self, inbox: Inbox) -> None:
        self._cancel_timer(inbox)
        if self._inboxes.get(inbox.id) is inbox:
            del self._inboxes[inbox.id]
        inbox.end()

    @staticmethod
    def _cancel_timer(inbox: Inbox) -> None:
        if inbox.timer is not None and inbox.timer.active():
            inbox.timer.cancel()
        inbox.timer = None
