"""One SSE response, fed by one job or many; and the set of them that share a keep-alive."""

from __future__ import annotations

import random
from typing import Protocol

from twisted.internet.interfaces import IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from monit.auth.recheck import Recheck
from monit.inbox import CLOSED, Batch, Inbox
from monit.registry import InboxRegistry
from monit.sse import KEEPALIVE, encode_error, encode_retry
from monit.web import _fastpath


class Source(Protocol):
    """What a stream shows: one job (``OneJob``) or many (``monit.web.jobs.ManyJobs``).

    It subscribes the stream, hands it what the reader has not seen, and
    says when there is nothing more; the stream writes, keeps pace with its
    socket, and ends the response.
    """

    name: str  # the stream as log lines name it
    ended: str  # why the stream ends once the source is over, for the log

    def admit(self, after: int, maker: str) -> None:
        """Raise what attaching would (InboxClosed, InboxLimit), before anything is written."""

    def attach(self, stream: EventStream, after: int, maker: str) -> None:
        """Subscribe the stream for a reader whose last id is ``after``, on ``maker``'s behalf."""

    def started(self, stream: EventStream) -> None:
        """The stream is open and counted: set it going (end it, if the replay was all there is)."""

    def next_batch(self, after: int) -> Batch | None:
        """A piece of what the reader has not had (``after``: the last id written to it); None when caught up."""

    def over(self) -> bool:
        """Nothing more will come: the stream ends once caught up."""

    def watching(self) -> tuple[str, ...]:
        """The jobs it shows: what a recheck asks access to."""

    def detach(self, stream: EventStream) -> None:
        """Unsubscribe the stream; nothing more reaches it (called again, does nothing)."""


class OneJob:
    """One job's inbox, as the seed streamed it: the stream is the inbox's reader.

    The inbox hands the stream each batch (``EventStream.deliver``), and
    tells it the end (``EventStream.end``) when its grace period is over.
    """

    __slots__ = ("_registry", "name", "_inbox")
    ended = "inbox closed"

    def __init__(self, registry: InboxRegistry, job_id: str) -> None:
        self._registry = registry
        self.name = job_id
        self._inbox: Inbox | None = None

    def admit(self, after: int, maker: str) -> None:
        self._registry.admit(self.name, after, maker=maker)

    def attach(self, stream: EventStream, after: int, maker: str) -> None:
        """Replay what the reader has not seen, then go live (the registry does both)."""
        self._inbox = self._registry.subscribe(self.name, stream, after, maker=maker)

    def started(self, stream: EventStream) -> None:
        if self._inbox is not None and self._inbox.state is CLOSED:  # the replay was all there is
            stream.end()

    def next_batch(self, after: int) -> Batch | None:
        inbox = self._inbox
        return None if inbox is None else inbox.frames_after(after)

    def over(self) -> bool:
        """Never of itself: the inbox says when it is over (``EventStream.end``)."""
        return False

    def watching(self) -> tuple[str, ...]:
        return (self.name,)

    def detach(self, stream: EventStream) -> None:
        if self._inbox is not None:
            self._registry.unsubscribe(self._inbox, stream)
            self._inbox = None


@implementer(IPushProducer)
class EventStream:
    """Writes a source's frames to one HTTP response until the source or the client ends.

    It finishes the response itself when the stream is over, and learns that
    the client went away (``gone``: from the request's ``notifyFinish``, or,
    once the request is let go, from its lean HTTP/1.1 connection or HTTP/2
    stream), unsubscribing at once so nothing writes to a dead socket. Once the headers are out it writes to a ``Response``
    (``monit.web._fastpath``) and lets the request go if that can do without
    it: an idle stream costs only what it needs.

    The stream is the response's producer: the transport pauses it when the
    socket's buffer is full. Batches go out at once while the reader keeps
    up. Once its socket holds more than ``max_pending`` unsent bytes, the
    stream falls *behind*: it writes nothing more, and when the socket has
    drained it catches up from the inbox's history, a piece at a time, at the
    pace the socket takes it (a gap notice first if the history moved on).
    So a slow reader costs at most ``max_pending`` and a piece, a long replay
    or a burst never drops a reader that reads, and one that takes nothing
    for two heartbeats is dropped.
    """

    __slots__ = (
        "_request",
        "_source",
        "_streams",
        "_user",
        "_clock",
        "_max_pending",
        "_expires",
        "_started",
        "_paused",
        "_response",
        "events",
        "_recheck",
        "_sent_upto",
        "_behind",
        "_ending",
        "_unsent_at_beat",
    )
    log = Logger()

    def __init__(
        self,
        request: Request,
        source: Source,
        streams: StreamSet,
        user: str,
        clock: IReactorTime,
        max_pending: int,
        expires: float | None = None,
        recheck: Recheck | None = None,
    ) -> None:
        self._request: Request | None = request  # until the headers are out
        self._source = source
        self._streams = streams
        self._user = user
        self._clock = clock
        self._max_pending = max_pending
        self._expires = expires
        self._recheck = recheck
        self._started: float | None = None
        self._paused = False
        self._response: _fastpath.Response = _fastpath.RequestWriter(request)
        self.events = 0
        self._sent_upto = 0  # the id of the last event written to the reader
        self._behind = False  # writing nothing new: catching up from the history instead
        self._ending = False  # the source has ended: finish once caught up
        self._unsent_at_beat = -1  # while behind and paused, what was unsent at the last heartbeat

    def run(self, after: int = 0) -> None:
        """Start the response, replay what the reader has not seen, then go live.

        Raises InboxClosed (before anything is written) if there is nothing
        more to see, and InboxLimit if an inbox would be one too many.
        """
        source = self._source
        source.admit(after, self._user)
        request = self._request
        assert request is not None, "a stream runs once"
        request.notifyFinish().addErrback(self.gone)
        self._start(request)
        self._sent_upto = after
        source.attach(self, after, self._user)
        self.log.info("stream {stream} opened for {user}", stream=source.name, user=self._user)
        self._streams.add(self)
        source.started(self)

    def deliver(self, batch: Batch) -> None:
        """The hot path: one write of bytes encoded once for every reader."""
        if self._behind:
            return  # caught up from the history once the socket drains
        self.events += batch.events
        self._response.write(batch)
        self._sent_upto = batch.last_id
        if self._paused and self._response.unsent() > self._max_pending:
            self._behind = True

    def catch_up(self) -> None:
        """Write what the reader has not had from the history, a piece at a time, while the socket takes it."""
        self._behind = True  # until caught up: a pause leaves the rest to resumeProducing
        source = self._source
        while not self._paused and self._started is not None:
            batch = source.next_batch(self._sent_upto)
            if batch is None:
                self._behind = False
                self._unsent_at_beat = -1
                if self._ending or source.over():
                    self._finish(source.ended)
                return
            self.events += batch.events
            self._response.write(batch)
            self._sent_upto = batch.last_id

    def write_notice(self, frames: bytes) -> None:
        """Write frames that are no event (a gap notice), ahead of the events."""
        self._response.send(frames)

    def notice(self, frame: bytes) -> None:
        """The inbox's notice about the job (``monit.stalled``): written at once, while the stream is open."""
        if self._started is not None:
            self._response.send(frame)

    def _start(self, request: Request) -> None:
        """Send the headers and the retry time; learn how to write to this reader, and let the request go."""
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        request.registerProducer(self, True)
        transport = request.transport
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)  # events are small and should not wait
        self._started = self._clock.seconds()
        request.write(encode_retry(self._streams.retry_ms))
        self._response = _fastpath.response_for(request, self, self._streams.paths)
        self._request = None

    def keepalive(self, now: float) -> None:
        """The shared heartbeat: a keep-alive comment, or the end if the token ran out.

        Checking the token's exp on the heartbeat, not with a timer per stream,
        ends a stream at most one heartbeat late and saves a timer per reader.
        A revocable token is asked about again when its recheck is due.
        """
        if self._expires is not None and self._expires <= now:
            self._expired()
        elif self._behind:
            self._check_progress()
        else:
            self._response.send(KEEPALIVE)
            if self._recheck is not None and self._recheck.due <= now:
                self._recheck.run(now, self._source.watching()).addCallback(self._rechecked)

    def _check_progress(self) -> None:
        """Drop a reader that is behind and has taken nothing since the last heartbeat."""
        if not self._paused:
            return
        unsent = self._response.unsent()
        if 0 <= self._unsent_at_beat <= unsent:
            self._drop()
        else:
            self._unsent_at_beat = unsent

    def end(self) -> None:
        """The source is over: finish the response, once the reader has all of it."""
        if self._behind:
            self._ending = True
        else:
            self._finish(self._source.ended)

    def shutdown(self) -> None:
        """The server is stopping: a last retry hint, jittered so clients spread out."""
        retry_ms = self._streams.retry_ms
        self._response.send(encode_retry(random.randint(retry_ms // 2, retry_ms)))
        self._finish("server stopping")

    def _expired(self) -> None:
        """The token ran out: a revoked user must not watch forever."""
        self._response.send(encode_error("token expired"))
        self._finish("token expired")

    def _rechecked(self, reason: str | None) -> None:
        """The recheck's verdict: the same end as expiry, unless the stream ended meanwhile."""
        if reason is not None and self._started is not None:
            self._response.send(encode_error(reason))
            self._finish(reason)

    def pauseProducing(self) -> None:
        """The reader takes no more for now; past ``--max-pending`` unsent it is behind (HTTP/2 pauses a
        stream only once its window is spent, after the turn's writes)."""
        self._paused = True
        self._response.pause()
        if self._response.unsent() > self._max_pending:
            self._behind = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._response.resume()
        if self._behind:
            self.catch_up()

    def stopProducing(self) -> None:
        """The connection is going away; ``gone`` follows, and detaches."""

    def _drop(self) -> None:
        self._streams.dropped += 1
        self._detach(f"too slow: took nothing for a heartbeat with over {self._max_pending} bytes pending")
        self._response.abort()

    def _finish(self, reason: str) -> None:
        """End the response; only ever called while the connection is up."""
        self._detach(reason)
        self._response.finish()

    def gone(self, _: Failure) -> None:
        """The client went away (or was dropped)."""
        self._detach("client gone")

    def _detach(self, reason: str) -> None:
        self._streams.discard(self)
        self._source.detach(self)
        if self._started is not None:
            self.log.info(
                "stream {stream} closed for {user}: {reason} after {duration:.1f}s, {events} events sent",
                stream=self._source.name,
                user=self._user,
                reason=reason,
                duration=self._clock.seconds() - self._started,
                events=self.events,
            )
            self._started = None


class StreamSet:
    """The open streams, with one keep-alive timer for all of them (not one each)."""

    log = Logger()

    def __init__(self, clock: IReactorTime, heartbeat: float, retry_ms: int, fast_path: bool = True) -> None:
        self._streams: dict[EventStream, None] = {}
        self.paths = _fastpath.Paths(fast_path)
        self._heartbeat = heartbeat
        self._clock = clock
        self.retry_ms = retry_ms
        self.dropped = 0
        self._beat = LoopingCall(self._beat_all)
        self._beat.clock = clock

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, stream: EventStream) -> None:
        self._streams[stream] = None

    def discard(self, stream: EventStream) -> None:
        self._streams.pop(stream, None)

    def start(self) -> None:
        """Start the keep-alives; check once that the fast paths suit this Twisted."""
        problem = self.paths.check()
        if problem is not None:
            self.log.warn(
                "streams write through Request.write: the fast path does not fit this Twisted ({problem})",
                problem=problem,
            )
        self._beat.start(self._heartbeat, now=False)

    def shutdown(self) -> None:
        """Stop the keep-alives and end every stream with a retry hint."""
        if self._beat.running:
            self._beat.stop()
        for stream in tuple(self._streams):
            stream.shutdown()

    def _beat_all(self) -> None:
        now = self._clock.seconds()
        for stream in tuple(self._streams):
            stream.keepalive(now)
