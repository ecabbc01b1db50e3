"""Inboxes: each job's events, encoded once, and the streams that watch them."""
from __future__ import annotations

import re
from collections import deque
from itertools import islice
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from monit.sse import encode_event

_INBOX_ID = re.compile(r"[A-Za-z0-9_.:~-]{1,128}")


def valid_inbox_id(inbox_id: str) -> bool:
    """Ids end up in logs and URLs: keep them short and plain."""
    return _INBOX_ID.fullmatch(inbox_id) is not None


class Subscriber(Protocol):
    """What an inbox needs of a reader: take frames, and be told the end."""

    def send(self, frame: bytes) -> None: ...

    def end(self) -> None: ...


class Inbox:
    """A bounded ring of encoded frames with increasing ids, and its readers."""

    def __init__(self, inbox_id: str, history: int, now: float) -> None:
        self.id = inbox_id
        self.opened = False
        self.closing = False
        self.touched = now
        self.timer: IDelayedCall | None = None
        self.subscribers: dict[Subscriber, None] = {}
        self._ring: deque[bytes] = deque(maxlen=history)
        self._last_id = 0

    @property
    def last_id(self) -> int:
        return self._last_id

    def publish(self, data: str, event: str | None = None) -> None:
        """Encode the event once and hand the same bytes to every reader."""
        self._last_id += 1
        frame = encode_event(self._last_id, data, event)
        self._ring.append(frame)
        for subscriber in tuple(self.subscribers):
            subscriber.send(frame)

    def frames_after(self, event_id: int) -> list[bytes]:
        """The frames still held whose id is greater than ``event_id``."""
        first_held = self._last_id - len(self._ring) + 1
        skip = max(0, event_id - first_held + 1)
        return list(islice(self._ring, skip, None))

    def add(self, subscriber: Subscriber, after: int = 0) -> None:
        """Replay what the reader has not seen, in one write, then go live."""
        backlog = self.frames_after(after)
        if backlog:
            subscriber.send(b"".join(backlog))
        self.subscribers[subscriber] = None

    def discard(self, subscriber: Subscriber) -> None:
        self.subscribers.pop(subscriber, None)

    def end(self) -> None:
        """Tell every reader the inbox is closed."""
        subscribers, self.subscribers = self.subscribers, {}
        for subscriber in subscribers:
            subscriber.end()


class InboxRegistry:
    """The inboxes by id, and the timers that close and expire them.

    A lifecycle event opens an inbox; a close event is delivered, then the
    inbox ends after ``grace`` seconds so late readers still get it. An inbox
    that nothing opened (created by a reader, or by a message whose open we
    missed) expires after ``expiry`` idle seconds with nobody watching; an
    opened one whose close never comes is abandoned after ``abandon`` seconds.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        history: int = 1000,
        grace: float = 10.0,
        expiry: float = 300.0,
        abandon: float = 3600.0,
    ) -> None:
        self._clock = clock
        self._history = history
        self._grace = grace
        self._expiry = expiry
        self._abandon = abandon
        self._inboxes: dict[str, Inbox] = {}

    def __len__(self) -> int:
        return len(self._inboxes)

    def __contains__(self, inbox_id: str) -> bool:
        return inbox_id in self._inboxes

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
        if not inbox.closing:
            inbox.closing = True
            self._cancel_timer(inbox)
            inbox.timer = self._clock.callLater(self._grace, self._remove, inbox)

    def subscribe(self, inbox_id: str, subscriber: Subscriber, after: int = 0) -> Inbox:
        """Attach a reader, creating the inbox if nobody has opened it yet."""
        inbox = self._obtain(inbox_id)
        inbox.add(subscriber, after)
        return inbox

    def unsubscribe(self, inbox: Inbox, subscriber: Subscriber) -> None:
        inbox.discard(subscriber)
        self._schedule_expiry(inbox)

    def close_all(self) -> None:
        """End every inbox and stream, for shutdown."""
        for inbox in list(self._inboxes.values()):
            self._remove(inbox)

    def _obtain(self, inbox_id: str) -> Inbox:
        inbox = self._inboxes.get(inbox_id)
        if inbox is None:
            inbox = self._inboxes[inbox_id] = Inbox(inbox_id, self._history, self._clock.seconds())
            self._schedule_expiry(inbox)
        return inbox

    def _publish(self, inbox: Inbox, data: str, event: str | None) -> None:
        inbox.touched = self._clock.seconds()
        inbox.publish(data, event)

    def _idle_limit(self, inbox: Inbox) -> float:
        return self._abandon if inbox.opened else self._expiry

    def _schedule_expiry(self, inbox: Inbox) -> None:
        if inbox.timer is None and not inbox.closing and not inbox.subscribers:
            inbox.timer = self._clock.callLater(self._idle_limit(inbox), self._check_expiry, inbox)

    def _check_expiry(self, inbox: Inbox) -> None:
        """Expire an unwatched, idle inbox; otherwise look again when it could be."""
        inbox.timer = None
        if inbox.subscribers:
            return
        remaining = inbox.touched + self._idle_limit(inbox) - self._clock.seconds()
        if remaining > 0:
            inbox.timer = self._clock.callLater(remaining, self._check_expiry, inbox)
            return
        self.log.info("inbox {inbox} expired", inbox=inbox.id)
        self._remove(inbox)

    def _remove(self, inbox: Inbox) -> None:
        self._cancel_timer(inbox)
        if self._inboxes.get(inbox.id) is inbox:
            del self._inboxes[inbox.id]
        inbox.end()

    @staticmethod
    def _cancel_timer(inbox: Inbox) -> None:
        if inbox.timer is not None and inbox.timer.active():
            inbox.timer.cancel()
        inbox.timer = None
