"""The inboxes by id: opening, closing, keeping and expiring them, and room for new ones."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from monit.deadlines import EARLY, Deadlines
from monit.inbox import (
    CLOSED,
    CLOSING,
    OPEN,
    UNOPENED,
    Event,
    Inbox,
    InboxClosed,
    InboxLimit,
    Subscriber,
    UserInboxLimit,
    parse_data,
)
from monit.jobs import JobSummary, job_state, resumed_notice, speaks, stalled_notice
from monit.oneshot import OneShotObserver
from monit.tally import Tally


def _eviction_order(inbox: Inbox) -> tuple[int, float]:
    """Reader-made and unopened first (a job that opens one takes it from its maker), closed
    records next, then the rest; oldest activity first."""
    if inbox.maker is not None:
        rank = 0
    elif inbox.state is CLOSED:
        rank = 1
    else:
        rank = 2
    return rank, inbox.touched


def _last_active(inbox: Inbox) -> float:
    return inbox.touched


JOB_OPENED, JOB_CLOSED, JOB_ERROR, JOB_STALLED, JOB_RESUMED = (
    "job.opened",
    "job.closed",
    "job.error",
    "job.stalled",
    "job.resumed",
)


class LifecycleWatcher(Protocol):
    """What hears of jobs as a whole (the live feed of jobs): told on lifecycle changes, never per event."""

    def changed(self, kind: str, job_id: str, change_id: int) -> None:
        """The job opened, closed, stalled or resumed (``kind``, a ``JOB_…`` name), at id ``change_id``."""

    def forgotten(self, job_id: str) -> None:
        """The registry no longer knows the job: nothing of it is kept."""


class InboxRegistry(Service):
    """The inboxes by id, and the timers that close, keep and expire them.

    A lifecycle event opens an inbox; a close event is delivered, then the
    inbox ends after ``grace`` seconds so late readers still get it, and is
    kept as a closed record for ``retention`` seconds so a reconnecting reader
    gets the rest and the end (or learns there is nothing more). A job that
    opens again after its close starts a new run; the previous run lives on
    beside it, its grace and retention unchanged, for the readers still in
    it. An inbox
    nothing opened (made by a reader, or by a message whose open was missed)
    expires after ``expiry`` idle seconds with nobody watching; an opened one
    whose close never comes is abandoned after ``abandon`` seconds (its
    summary is kept for ``retention`` seconds, as ``abandoned``).

    An open job that publishes nothing for ``stall_after`` seconds (0: never)
    is *stalled*: its readers get ``monit.stalled``, and ``monit.resumed``
    when it speaks again. Its silence is judged from its last event's time
    (JetStream's, with ``--jetstream``), on a deadline wheel of its own: no
    work per event but the inbox's timestamp and a look at its stall mark.
    Watchers of jobs as a whole (``watch_lifecycle``: the live feed) are
    told when a job opens, closes, stalls or resumes, never per event.

    Room is kept for the jobs. At ``max_inboxes``, a new job first takes the
    place of unwatched inboxes: those readers made and no job opened, then
    closed records, then the least recently active; only if every inbox is
    watched is it refused. A reader may only take the place of another
    reader-made one, and one user may make at most ``max_inboxes_per_user``.
    The histories of all inboxes together stay within ``memory_budget``
    bytes: past it, the oldest events of the least recently active inboxes go
    first.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        history: int,
        grace: float,
        expiry: float,
        abandon: float,
        retention: float,
        max_inboxes: int,
        max_inboxes_per_user: int,
        memory_budget: int,
        base64: bool,
        stream_ids: bool,
        stall_after: float = 0.0,
    ) -> None:
        """``stream_ids``: event ids are JetStream's stream sequences, given with each event.
        ``stall_after``: seconds of silence after which an open job is stalled (0: never)."""
        self.clock = clock
        self._history = history
        self._grace = grace
        self._expiry = expiry
        self._abandon = abandon
        self._retention = retention
        self._max_inboxes = max_inboxes
        self._per_user = max_inboxes_per_user
        self._memory_budget = memory_budget
        self._base64 = base64
        self._stall_after = stall_after
        self._made_by: Counter[str] = Counter()
        # Core mode: ids go on from the start time, in thousandths of a millisecond, so that
        # a restarted process's ids are above all of its predecessor's (JetStream: from the stream).
        self._id_base = 0 if stream_ids else int(clock.seconds() * 1000) * 1000
        self._last_id = self._id_base
        self.made_room = Tally(clock, self.log, "dropped unwatched inboxes to make room")
        self._inboxes: dict[str, Inbox] = {}  # each job's latest run
        self._records: dict[str, list[Inbox]] = {}  # each job's earlier runs still kept, oldest first
        # The candidates for eviction: (rank, last activity, job id) as ``_eviction_order`` ranks them,
        # a heap (``_evictable``); plain values, so that the collector does not walk them.
        self._eviction: list[tuple[int, float, str]] = []
        self._owed = 0  # inboxes to drop beyond need, since the limit was last reached (``_room_for_jobs``)
        # Bound methods made once and shared by every inbox (see monit.deadlines): ``_kept_`` and the method's name.
        self._kept_schedule_expiry = self._schedule_expiry
        self._kept_check_expiry = self._check_expiry
        self._kept_retire = self._retire
        self._kept_retention_over = self._retention_over
        self._deadlines: Deadlines[Inbox] = Deadlines(clock)
        self._kept_check_stall = self._check_stall
        self._stalls: Deadlines[Inbox] = Deadlines(clock)
        self._kept_forget_abandoned = self._forget_abandoned
        self._abandoned: dict[str, JobSummary] = {}
        self._abandoned_deadlines: Deadlines[str] = Deadlines(clock)
        self._followers: list[Callable[[str, Event], None]] = []
        self._lifecycle: list[LifecycleWatcher] = []
        self._closers: dict[str, OneShotObserver[Event]] = {}
        self._dirty: list[Inbox] = []
        self._flush_call: IDelayedCall | None = None
        self._flushing = False
        self._after_flush: dict[Callable[[], None], None] = {}
        self.refused = 0
        self.evicted = 0
        self.events = 0
        self.deliveries = 0
        self.history_bytes = 0

    @property
    def id_base(self) -> int:
        """The id this process's events go on from (0 when they come from JetStream)."""
        return self._id_base

    @property
    def last_id(self) -> int:
        """The id of the latest event of any job: ids are global, so one id places a reader in every job."""
        return self._last_id

    def __len__(self) -> int:
        return len(self._inboxes)

    def __contains__(self, inbox_id: str) -> bool:
        return inbox_id in self._inboxes

    def __iter__(self) -> Iterator[Inbox]:
        return iter(self._inboxes.values())

    def get(self, inbox_id: str) -> Inbox | None:
        return self._inboxes.get(inbox_id)

    def runs(self, inbox_id: str) -> list[Inbox]:
        """The job's runs still kept, oldest first: the records of earlier runs, then the latest."""
        latest = self._inboxes.get(inbox_id)
        return [] if latest is None else [*self._records.get(inbox_id, ()), latest]

    def open(self, inbox_id: str, data: str, event: str, event_id: int | None = None, at: float | None = None) -> None:
        """A job starts; after its close, that is a new run of it.

        ``event_id`` and ``at``: the event's id and time when they come from
        JetStream (a replay judges an event by its own time, not the replay's).
        """
        inbox = self._inboxes.get(inbox_id)
        if self._seen(inbox, event_id):
            return
        if inbox is not None and (inbox.state is CLOSING or inbox.state is CLOSED):
            inbox = self._new_run(inbox, at)
        else:
            inbox = self._obtain(inbox_id, at=at)
        inbox.open()
        self._release(inbox)
        self._append(inbox, data, event, event_id, at)
        if inbox.opened_at is None:
            inbox.opened_at = inbox.touched
            self._watch_silence(inbox)
            self._tell_lifecycle(JOB_OPENED, inbox.id, inbox.last_id)

    @staticmethod
    def _seen(inbox: Inbox | None, event_id: int | None) -> bool:
        """An event this inbox already has (JetStream delivered it again)."""
        return inbox is not None and event_id is not None and event_id <= inbox.last_id

    def _new_run(self, old: Inbox, at: float | None) -> Inbox:
        """The job opens again after its close: a new run starts, and the old one is kept as a record.

        The old run keeps its grace and retention, so its readers still get
        its end, and a reader that reconnects with one of its ids gets the
        rest of it. New readers see the new run; followers move to it.
        """
        self._release(old)
        when = self.clock.seconds() if at is None else at
        inbox = Inbox(old.id, self._history, when, self._base64, self._kept_schedule_expiry, old.last_id, old.last_id)
        old.hand_over(inbox)
        if old not in self._deadlines:  # a record kept past its retention for its followers
            self._deadlines.set(old, old.ends_at + self._retention, self._kept_retention_over)
        self._records.setdefault(old.id, []).append(old)
        self._inboxes[old.id] = inbox
        self._schedule_expiry(inbox)
        self._watch_silence(inbox)
        return inbox

    def _run_for(self, inbox: Inbox, after: int) -> Inbox:
        """The run a reader whose last id is ``after`` is in: the oldest kept one with events after it.

        A new reader (``after`` 0) gets the latest run.
        """
        if after > 0:
            for record in self._records.get(inbox.id, ()):
                if record.last_id > after:
                    return record
        return inbox

    def publish(
        self,
        inbox_id: str,
        data: str,
        event: str | None = None,
        event_id: int | None = None,
        at: float | None = None,
    ) -> None:
        """Add an event to the job's inbox, made if need be; its readers get it in the turn's flush."""
        inbox = self._inboxes.get(inbox_id)
        if self._seen(inbox, event_id):
            return
        if inbox is None or inbox.state is CLOSED:  # the usual case, a live inbox, needs no more looking up
            inbox = self._obtain(inbox_id, at=at)
            self._append(inbox, data, event, event_id, at)
            self._tell_lifecycle(JOB_OPENED, inbox.id, inbox.last_id)  # it speaks: open, though its open was missed
            return
        self._append(inbox, data, event, event_id, at)

    def close(self, inbox_id: str, data: str, event: str, event_id: int | None = None, at: float | None = None) -> None:
        """Deliver the job's last event, then end its streams after the grace period."""
        if self._seen(self._inboxes.get(inbox_id), event_id):
            return
        inbox = self._obtain(inbox_id, at=at)
        self._append(inbox, data, event, event_id, at)
        close_event = Event(inbox.last_id, event, parse_data(data))
        if inbox.close(close_event, self._grace):
            self._deadlines.set(inbox, inbox.ends_at, self._kept_retire)
        self._tell_lifecycle(JOB_ERROR if job_state(inbox) == "error" else JOB_CLOSED, inbox_id, inbox.last_id)
        closer = self._closers.pop(inbox_id, None)
        if closer is not None:
            closer.fire(close_event)

    def admit(self, inbox_id: str, after: int = 0, maker: str | None = None) -> None:
        """Raise what subscribing would, before the caller commits to a response.

        InboxClosed: the inbox ended and the reader has seen all of it: its
        id is the job's last. (An id beyond it is from no history of ours, a
        JetStream stream made anew: that reader gets the gap notice and the
        job, not the end.)
        InboxLimit: the inbox does not exist and there is no room for it (or
        ``maker`` has made too many).
        """
        inbox = self._inboxes.get(inbox_id)
        if inbox is None:
            self._check_room(maker)
        elif inbox.state is CLOSED and 0 < after == inbox.last_id:
            raise InboxClosed(inbox_id)  # it has seen all of the job's latest run, and that run is over

    def admit_many(self, inbox_ids: list[str], maker: str) -> None:
        """Raise InboxLimit unless there is room for every inbox in the list that does not exist yet."""
        new = sum(1 for inbox_id in inbox_ids if inbox_id not in self._inboxes)
        if new:
            self._check_room(maker, new)

    def follow_job(self, inbox_id: str, follower: Subscriber, maker: str, after: int = 0) -> Inbox:
        """Attach a follower of the job (a many-job stream): it takes the batches while its reader
        keeps up, and reads the histories itself when not.

        It stays with the job from run to run, until it leaves (``unfollow_job``);
        a closed inbox is kept for it past its retention, in case the job runs
        again. Returns the run a reader at ``after`` is in (see ``_run_for``).
        """
        inbox = self._inboxes.get(inbox_id)
        if inbox is None or inbox.state is not CLOSED:
            inbox = self._obtain(inbox_id, maker=maker, watched=True)
        inbox.add_follower(follower)
        if inbox.stall_mark is not None:
            self._greet(inbox, follower)
        return self._run_for(inbox, after)

    def unfollow_job(self, inbox_id: str, follower: Subscriber) -> None:
        """A follower leaves the job (it is always with the job's latest run)."""
        inbox = self._inboxes.get(inbox_id)
        if inbox is not None and follower in inbox.subscribers:
            self.unsubscribe(inbox, follower)

    def subscribe(self, inbox_id: str, subscriber: Subscriber, after: int = 0, maker: str | None = None) -> Inbox:
        """Attach a reader, creating the inbox (as ``maker``'s) if nobody has opened it yet.

        A closed inbox sends what the reader has not seen, without adding it
        (the caller ends the stream).
        """
        inbox = self._inboxes.get(inbox_id)
        if inbox is not None:
            run = self._run_for(inbox, after)
            if run.state is CLOSED:
                self.deliveries += run.replay(subscriber, after)
                return run
            if run is not inbox:  # an earlier run, in its grace period
                self.deliveries += run.add(subscriber, after)
                return run
        inbox = self._obtain(inbox_id, maker=maker, watched=True)
        self.deliveries += inbox.add(subscriber, after)
        if inbox.stall_mark is not None:
            self._greet(inbox, subscriber)
        return inbox

    def unsubscribe(self, inbox: Inbox, subscriber: Subscriber) -> None:
        inbox.discard(subscriber, self.clock.seconds())
        if inbox.state is CLOSED and not inbox.subscribers and inbox not in self._deadlines:
            self._deadlines.set(inbox, inbox.ends_at + self._retention, self._kept_retention_over)
        self._schedule_expiry(inbox)

    def stopService(self) -> None:
        """Shutdown: every inbox and stream ends, and no timer of the registry's is left."""
        super().stopService()
        self.close_all()

    def close_all(self) -> None:
        """End every inbox and stream, for shutdown."""
        self.made_room.stop()
        self.flush()
        for inbox in list(self._inboxes.values()):
            self._drop(inbox)
        self._deadlines.stop()
        self._stalls.stop()
        self._abandoned_deadlines.stop()

    def _obtain(self, inbox_id: str, maker: str | None = None, watched: bool = False, at: float | None = None) -> Inbox:
        """The live inbox for this id: made if there is room, revived if closed.

        One made for a reader gets its expiry timer when the last reader leaves.
        """
        inbox = self._inboxes.get(inbox_id)
        if inbox is None:
            self._check_room(maker)
            when = self.clock.seconds() if at is None else at
            inbox = Inbox(
                inbox_id, self._history, when, self._base64, self._kept_schedule_expiry, self._id_base, maker=maker
            )
            self._inboxes[inbox_id] = inbox
            if maker is not None:
                self._made_by[maker] += 1
            if not watched:  # made by an event: a job that speaks, its open missed
                self._schedule_expiry(inbox)
                self._watch_silence(inbox)
                if self._abandoned:
                    self._forget_abandoned(inbox_id)  # the job speaks again
        elif inbox.state is CLOSED:
            inbox.revive()
            self._deadlines.cancel(inbox)
            self._schedule_expiry(inbox)
            self._watch_silence(inbox)
        return inbox

    def _check_room(self, maker: str | None, count: int = 1) -> None:
        """Room for ``count`` more inboxes, made by a job (``maker`` None) or by a reader."""
        if maker is not None and self._made_by[maker] + count > self._per_user:
            self.refused += 1
            raise UserInboxLimit("too many inboxes that no job opened for this user")
        over = len(self._inboxes) + count - self._max_inboxes
        if maker is None:
            self._room_for_jobs(over, count)
        elif over > 0:
            self._make_room(over, readers_only=True)
        if len(self._inboxes) + count > self._max_inboxes:
            self.refused += 1
            raise InboxLimit("too many inboxes")

    def _room_for_jobs(self, over: int, count: int) -> None:
        """Room for a job's ``count`` new inboxes, ``over`` the limit: once it is reached, a twentieth of it
        is made free, a little at a time (each new inbox after drops one more than it needs, until then).

        No stall for anybody, and readers of jobs that have not started find
        room between a flood's new jobs (a reader only displaces what readers made).
        """
        if self._owed > 0:
            self._owed -= 1
            over = count + 1
        elif over > 0:
            self._owed = (
                max(1, self._max_inboxes // 20) - 1
            )  # this one makes room for itself, each of those after one more
        if over > 0:
            self._make_room(over, readers_only=False)

    def _make_room(self, wanted: int, readers_only: bool) -> None:
        """Drop ``wanted`` unwatched inboxes (fewer if there are not as many), in ``_eviction_order``.

        First those readers made and no job opened, then closed records, then
        the least recently active. The order is kept in a heap of candidates,
        checked as they come out (see ``_evictable``), so each inbox dropped
        costs a few heap steps, not a scan of every inbox.
        """
        heap, dropped = self._eviction, 0
        while heap and dropped < wanted:
            rank, touched, inbox_id = heap[0]
            if readers_only and rank > 0:
                break
            heapq.heappop(heap)
            inbox = self._inboxes.get(inbox_id)
            if inbox is None or inbox.subscribers:
                continue  # let go already, or watched: a candidate again once its last reader leaves
            order = _eviction_order(inbox)
            if order > (rank, touched):
                heapq.heappush(heap, (*order, inbox_id))  # active since it came in: back in its place
                continue
            self._drop(inbox)
            dropped += 1
        if not heap:
            self._owed = 0  # nothing left that could be dropped
        self.evicted += dropped
        if dropped:
            self.made_room.add("inboxes", f"at the limit of {self._max_inboxes}, dropped {dropped}", dropped)

    def _evictable(self, inbox: Inbox) -> None:
        """An unwatched inbox becomes a candidate for ``_make_room``, as it stands now.

        Its entry is not moved when it gets events later (that would cost
        every event): a candidate found more active than its entry says goes
        back in its new place. So every unwatched inbox has an entry at or
        before its place; one whose place moves forward (it closed, or its
        last reader left) gets a new entry. Stale entries are dropped as they
        come out, and all at once when they outnumber the inboxes.
        """
        if len(self._eviction) > 2 * len(self._inboxes) + 1024:
            self._eviction = [
                (*_eviction_order(kept), kept.id) for kept in self._inboxes.values() if not kept.subscribers
            ]
            heapq.heapify(self._eviction)
        if self._inboxes.get(inbox.id) is inbox:
            heapq.heappush(self._eviction, (*_eviction_order(inbox), inbox.id))

    def _release(self, inbox: Inbox) -> None:
        """A job took over an inbox a reader made (or it goes): it no longer counts against the reader."""
        maker = inbox.release()
        if maker is not None:
            self._made_by[maker] -= 1
            if not self._made_by[maker]:
                del self._made_by[maker]

    def _append(
        self, inbox: Inbox, data: str, event: str | None, event_id: int | None = None, at: float | None = None
    ) -> None:
        now = self.clock.seconds() if at is None else at
        if event_id is None:
            event_id = self._last_id + 1
        self._last_id = event_id
        self.events += 1
        self.deliveries += len(inbox.subscribers)
        held = inbox.bytes
        if inbox.publish(data, now, event, event_id):  # the turn's first event for readers of this inbox
            self._dirty.append(inbox)
            if self._flush_call is None:
                self._flush_call = self.clock.callLater(0, self.flush)
        if inbox.stall_mark is not None:  # watched or not: the feed of jobs hears it at once
            self._resumed(inbox)
        self.history_bytes += inbox.bytes - held
        if self.history_bytes > self._memory_budget:
            self._trim_histories()
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
        if inbox is not None and inbox.close_event is not None and (inbox.state is CLOSING or inbox.state is CLOSED):
            return succeed(inbox.close_event)
        closer = self._closers.get(inbox_id)
        if closer is None:
            closer = self._closers[inbox_id] = OneShotObserver()
        return closer.when_fired()

    def flush(self) -> None:
        """Send every inbox's pending frames: once per reactor turn, one write per reader.

        Then call what asked to run once they are all out (``after_flush``).
        """
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._flushing = True
        try:
            dirty, self._dirty = self._dirty, []
            for inbox in dirty:
                inbox.flush()
            while self._after_flush:
                callbacks, self._after_flush = self._after_flush, {}
                for callback in callbacks:
                    self._call_after_flush(callback)
        finally:
            self._flushing = False

    @property
    def flushed(self) -> bool:
        """No inbox holds events still to be handed out: below every id to come, all is out.

        An inbox with events pending is in the flush's list until the flush
        (one that handed them out early, to a new reader, may stay in it).
        """
        return not self._dirty

    def after_flush(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when every inbox has handed out what is pending.

        For readers that read several inboxes' histories themselves (many-job
        streams): all of one turn's events are out before they read.
        """
        self._after_flush[callback] = None
        if not self._flushing and self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    def _call_after_flush(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            self.log.failure("a reader called after the flush failed")

    def _idle_limit(self, inbox: Inbox) -> float:
        return self._abandon if inbox.state is OPEN else self._expiry

    def _schedule_expiry(self, inbox: Inbox) -> None:
        """Look at an unwatched inbox again once it could have been idle long enough; till then it may
        make room for others (``_evictable``).

        Counted from its last event, or from now when its last reader just left.
        """
        if inbox.subscribers:
            return
        self._evictable(inbox)
        state = inbox.state
        if inbox not in self._deadlines and state is not CLOSING and state is not CLOSED:
            self._deadlines.set(inbox, self._idle_until(inbox), self._kept_check_expiry)

    def _idle_until(self, inbox: Inbox) -> float:
        return max(inbox.touched, inbox.left) + self._idle_limit(inbox)

    def _check_expiry(self, inbox: Inbox) -> None:
        """Expire an unwatched, idle inbox; otherwise look again when it could be."""
        if inbox.subscribers:
            return
        until = self._idle_until(inbox)
        if until - self.clock.seconds() > EARLY:
            self._deadlines.set(inbox, until, self._kept_check_expiry)
            return
        self.log.info("inbox {inbox} expired", inbox=inbox.id)
        if speaks(inbox):
            self._keep_abandoned(inbox, until)
        self._drop(inbox)

    def _retire(self, inbox: Inbox) -> None:
        """The grace period is over: end the streams, keep the record a while."""
        self._deadlines.set(inbox, inbox.ends_at + self._retention, self._kept_retention_over)
        inbox.retire()
        self._evictable(inbox)  # a closed record goes before the jobs still running

    def _retention_over(self, inbox: Inbox) -> None:
        """Let the record go, unless followers wait on it for the job's next run."""
        if not inbox.subscribers:
            self._drop(inbox)

    def _every_run(self) -> Iterator[Inbox]:
        """Every inbox held: each job's latest run and its kept records."""
        yield from self._inboxes.values()
        for records in self._records.values():
            yield from records

    def _trim_histories(self) -> None:
        """Back under nine tenths of the budget: oldest events of the least recently active first."""
        target = self._memory_budget * 9 // 10
        for inbox in sorted(self._every_run(), key=_last_active):
            self.history_bytes -= inbox.trim(max(0, inbox.bytes - (self.history_bytes - target)))
            if self.history_bytes <= target:
                break

    def _drop(self, inbox: Inbox) -> None:
        """Let an inbox go, ending its readers; with a job's latest run go its records."""
        if self._inboxes.get(inbox.id) is inbox:
            del self._inboxes[inbox.id]
            self._release(inbox)
            for record in self._records.pop(inbox.id, ()):
                self._let_go(record)
            if inbox.id not in self._abandoned:
                self._tell_forgotten(inbox.id)
        else:
            records = self._records.get(inbox.id, [])
            if inbox not in records:
                return  # already let go
            records.remove(inbox)
            if not records:
                del self._records[inbox.id]
        self._let_go(inbox)

    def _let_go(self, inbox: Inbox) -> None:
        self._deadlines.cancel(inbox)
        self._stalls.cancel(inbox)
        self.history_bytes -= inbox.bytes
        inbox.let_go()

    # JetStream: a stream made anew, and where a replay may start

    def reset(self) -> None:
        """End every inbox and stream and forget the ids, as a restart would find it; keep the counters.

        For a JetStream stream made anew: its sequences start again, so
        nothing held belongs to it. Readers reconnect with ids of the old
        stream, which the replay of the new one treats as from no history of ours.
        """
        self.flush()
        for inbox in list(self._inboxes.values()):
            self._drop(inbox)
        for job_id in list(self._abandoned):
            self._forget_abandoned(job_id)
        self._last_id = self._id_base

    def first_needed_id(self) -> int | None:
        """The lowest event id any kept inbox was built from; None when none holds an event.

        A replay from this id's stream message (``id >> 20``) rebuilds every
        kept inbox as it is: each run, and each record of a job's earlier
        run, from its first event, and a re-opened job also from the last
        event of the run before (its ``run_after``). Not the runs of abandoned
        jobs whose summaries are kept: a job given up is dropped, as before.
        """
        needed: int | None = None
        for inbox in self._every_run():
            start = inbox.start
            if start is None:
                continue
            first = min(start + 1, inbox.run_after) if inbox.run_after else start + 1
            if needed is None or first < needed:
                needed = first
        return needed

    def start_after(self, event_id: int) -> None:
        """A replay starts past the stream's first message: ids up to ``event_id`` are of this stream.

        Their runs are over, so no inbox holds them, but a reader that
        resumes with one is no stranger from a stream made anew.
        """
        self._last_id = max(self._last_id, event_id)

    # Jobs as a whole: summaries, silence, and the record of abandoned ones

    def summary(self, job_id: str) -> JobSummary | None:
        """The job's summary (its latest run), or what is kept of it once abandoned; None if unknown.

        A reader's request for an abandoned job does not hide it: only the job's own events do.
        """
        inbox = self._inboxes.get(job_id)
        kept = self._abandoned.get(job_id)
        if kept is not None and (inbox is None or job_state(inbox) == "waiting"):
            return kept
        if inbox is None:
            return None
        return JobSummary.of(inbox, self.runs(job_id))

    def job_ids(self) -> Iterator[str]:
        """Every job the registry can summarize: those held, then the abandoned ones kept."""
        yield from self._inboxes
        for job_id in self._abandoned:
            if job_id not in self._inboxes:
                yield job_id

    def job_activity(self, job_id: str) -> tuple[float, str] | None:
        """When the job last did something, and its state: cheap, for ordering and filtering a listing."""
        inbox = self._inboxes.get(job_id)
        kept = self._abandoned.get(job_id)
        if kept is not None and (inbox is None or job_state(inbox) == "waiting"):
            return kept.activity, "abandoned"
        if inbox is None:
            return None
        return inbox.touched, job_state(inbox)

    def job_counts(self) -> Counter[str]:
        """How many jobs are in each state (``GET /metrics``)."""
        return Counter(state for _, state in filter(None, map(self.job_activity, self.job_ids())))

    @property
    def stalled_jobs(self) -> int:
        """How many open jobs are stalled now."""
        return sum(1 for inbox in self._inboxes.values() if inbox.stalled)

    def _watch_silence(self, inbox: Inbox) -> None:
        """Look at a new inbox, or a revived one, once it could have been silent too long."""
        if self._stall_after and inbox not in self._stalls:
            self._stalls.set(inbox, inbox.touched + self._stall_after, self._kept_check_stall)

    def _check_stall(self, inbox: Inbox) -> None:
        """Stall an open job silent for ``stall_after``; else look again when it could be.

        A stalled one is looked at again a period later; one that spoke
        meanwhile was resumed by its event, and one found so is judged anew.
        """
        state = inbox.state
        if state is CLOSING or state is CLOSED:
            inbox.stall_mark = None
            return
        now = self.clock.seconds()
        if inbox.stall_mark is not None and not inbox.stalled:
            inbox.stall_mark = None
        when = now + self._stall_after
        if inbox.stall_mark is None and speaks(inbox):
            until = inbox.touched + self._stall_after
            if until - now > EARLY:
                when = until
            else:
                self._stall(inbox, now)
        self._stalls.set(inbox, when, self._kept_check_stall)

    def _stall(self, inbox: Inbox, now: float) -> None:
        inbox.stall_mark = inbox.touched
        self.log.info("job {job} is stalled: nothing for {silent:.0f}s", job=inbox.id, silent=now - inbox.touched)
        inbox.notify(stalled_notice(now - inbox.touched, inbox.touched))
        self._tell_lifecycle(JOB_STALLED, inbox.id, self._last_id)  # no event of its own: the latest id there is

    def _resumed(self, inbox: Inbox) -> None:
        """A stalled job spoke again, with readers: tell them before its event, and judge its silence anew."""
        mark = inbox.stall_mark
        assert mark is not None, "only a stalled job resumes"
        inbox.stall_mark = None
        if inbox.state is OPEN or inbox.state is UNOPENED:
            self._stalls.set(inbox, inbox.touched + self._stall_after, self._kept_check_stall)
        inbox.notify(resumed_notice(inbox.touched - mark, inbox.touched))
        self._tell_lifecycle(JOB_RESUMED, inbox.id, inbox.last_id)

    def _greet(self, inbox: Inbox, reader: Subscriber) -> None:
        """A new reader of a stalled job is told so; a job that has spoken since is no longer stalled."""
        if inbox.stalled:
            now = self.clock.seconds()
            inbox.notify(stalled_notice(now - inbox.touched, inbox.touched), reader)
            return
        inbox.stall_mark = None
        if self._stall_after:
            self._stalls.set(inbox, inbox.touched + self._stall_after, self._kept_check_stall)

    def _keep_abandoned(self, inbox: Inbox, at: float) -> None:
        """Keep the summary of a job let go without its close, for ``retention`` seconds from ``at``.

        Within ``max_inboxes`` of them: past it, the oldest go first.
        """
        self._forget_abandoned(inbox.id)
        self._abandoned[inbox.id] = JobSummary.of(inbox).abandoned()
        self._abandoned_deadlines.set(inbox.id, at + self._retention, self._kept_forget_abandoned)
        if len(self._abandoned) > self._max_inboxes:
            self._forget_abandoned(next(iter(self._abandoned)))

    def _forget_abandoned(self, job_id: str) -> None:
        if self._abandoned.pop(job_id, None) is not None:
            self._abandoned_deadlines.cancel(job_id)
            if job_id not in self._inboxes:
                self._tell_forgotten(job_id)

    # The feed of jobs: told of lifecycle changes only

    def watch_lifecycle(self, watcher: LifecycleWatcher) -> Callable[[], None]:
        """Tell ``watcher`` of every job's lifecycle changes and of jobs forgotten; returns how to stop."""
        self._lifecycle.append(watcher)

        def stop() -> None:
            if watcher in self._lifecycle:
                self._lifecycle.remove(watcher)

        return stop

    def _tell_lifecycle(self, kind: str, job_id: str, change_id: int) -> None:
        for watcher in tuple(self._lifecycle):
            try:
                watcher.changed(kind, job_id, change_id)
            except Exception:
                self.log.failure("a watcher of jobs failed on {job}", job=job_id)

    def _tell_forgotten(self, job_id: str) -> None:
        for watcher in tuple(self._lifecycle):
            try:
                watcher.forgotten(job_id)
            except Exception:
                self.log.failure("a watcher of jobs failed forgetting {job}", job=job_id)
