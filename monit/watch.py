"""A job's events for a consumer in the same process: Deferreds instead of an HTTP response.

A ``Watch`` is a reader like any SSE stream: it subscribes to the inbox, gets
the events so far and then the live ones, reads the same encoded frames, and
is dropped the same way when it falls too far behind. The Deferreds exist
only for the consumers that ask for them; the push path does not change.
"""

from __future__ import annotations

from base64 import b64decode
from collections import deque

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from monit.inbox import Batch, Event, Inbox, parse_data
from monit.registry import InboxRegistry
from monit.sse import decode_frames


class TooSlow(Exception):
    """The consumer left more than its limit of events untaken, and was dropped."""


class Watch:
    """One job's events, oldest first, then live; ``None`` once the job's inbox has ended.

    ``next()`` fires with the next event; ``async for event in watch`` reads
    them all. Cancelling a ``next()`` only stops that wait; ``cancel()``
    unsubscribes. A consumer that leaves more than ``max_pending`` bytes of
    live events untaken is dropped: its next ``next()`` fails with
    ``TooSlow``. (The replay of the history does not count: the history is
    bounded already, and a consumer must be able to join a long job.)
    """

    log = Logger()

    def __init__(self, registry: InboxRegistry, job_id: str, after: int, max_pending: int, base64: bool) -> None:
        self.job_id = job_id
        self._registry = registry
        self._max_pending = max_pending
        self._base64 = base64
        self._events: deque[tuple[Event, int]] = deque()
        self._untaken = 0
        self._waiters: deque[Deferred[Event | None]] = deque()
        self._outcome: Failure | None = None
        self._ended = False
        self._inbox: Inbox | None = None
        self._live = False
        inbox = registry.subscribe(job_id, self, after)
        self._live = True
        if inbox.closed:
            self._end(None)
        else:
            self._inbox = inbox

    def next(self) -> Deferred[Event | None]:
        """The next event, or None at the end."""
        if self._events:
            event, size = self._events.popleft()
            self._untaken -= size
            return succeed(event)
        if self._ended:
            return fail(self._outcome) if self._outcome is not None else succeed(None)
        waiter: Deferred[Event | None] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        event = await self.next()
        if event is None:
            raise StopAsyncIteration
        return event

    def cancel(self) -> None:
        """Stop watching: unsubscribe; waiting and later ``next()`` calls get None."""
        self._unsubscribe()
        self._end(None)

    def deliver(self, batch: Batch) -> None:
        """Take a batch of frames from the inbox (a Subscriber's part)."""
        for event_id, name, data, size in decode_frames(batch.data):
            if self._base64 and name != "gap":
                data = b64decode(data).decode("utf-8", "replace")
            event = Event(event_id, name or "message", parse_data(data))
            if self._waiters:
                self._waiters.popleft().callback(event)
            else:
                counted = size if self._live else 0
                self._events.append((event, counted))
                self._untaken += counted
        if self._untaken > self._max_pending:
            self.log.warn("dropped a too slow watcher of {job}", job=self.job_id)
            self._unsubscribe()
            self._end(Failure(TooSlow(f"over {self._max_pending} bytes of events untaken")))

    def notice(self, frame: bytes) -> None:
        """A notice about the job (``monit.stalled``) is for SSE readers: a watch yields events only."""

    def end(self) -> None:
        """The inbox ended (a Subscriber's part)."""
        self._inbox = None
        self._end(None)

    def _unsubscribe(self) -> None:
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            self._registry.unsubscribe(inbox, self)

    def _end(self, outcome: Failure | None) -> None:
        if self._ended:
            return
        self._ended, self._outcome = True, outcome
        if outcome is not None:
            self._events.clear()
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if outcome is None:
                waiter.callback(None)
            else:
                waiter.errback(outcome)
