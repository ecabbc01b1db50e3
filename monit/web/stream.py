"""One SSE response, fed by an inbox; and the set of them that share a keep-alive."""
from __future__ import annotations

import random

from twisted.internet.interfaces import IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from monit.auth.recheck import Recheck
from monit.inbox import Batch, Inbox, InboxRegistry
from monit.sse import KEEPALIVE, encode_error, encode_retry
from monit.web import _fastpath


@implementer(IPushProducer)
class EventStream:
    """Writes an inbox's frames to one HTTP response until the inbox or the client ends.

    It finishes the response itself when the stream is over, and learns from
    the request's ``notifyFinish`` that the client went away, unsubscribing at
    once so nothing writes to a dead socket. (Klein's own chain of Deferreds
    for the request is over by then: an idle stream costs only what it needs.)

    The stream is the response's producer: the transport pauses it when the
    socket's buffer is full. While paused, a reader whose socket holds more
    than ``max_pending`` unsent bytes is dropped, so one slow reader can
    neither grow the process nor hold up the others.
    """

    __slots__ = (
        "_request", "_registry", "_streams", "_user", "_clock", "_max_pending", "_expires",
        "_inbox", "_stream_id", "_started", "_paused", "_writer", "events", "_recheck",
    )
    log = Logger()

    def __init__(
        self,
        request: Request,
        registry: InboxRegistry,
        streams: StreamSet,
        user: str,
        clock: IReactorTime,
        max_pending: int,
        expires: float | None = None,
        recheck: Recheck | None = None,
    ) -> None:
        self._request = request
        self._registry = registry
        self._streams = streams
        self._user = user
        self._clock = clock
        self._max_pending = max_pending
        self._expires = expires
        self._recheck = recheck
        self._inbox: Inbox | None = None
        self._stream_id = ""
        self._started: float | None = None
        self._paused = False
        self._writer: _fastpath.Writer = _fastpath.RequestWriter(request)
        self.events = 0

    def run(self, inbox_id: str, after: int = 0) -> None:
        """Start the response, replay what the reader has not seen, then go live.

        Raises InboxClosed (before anything is written) if there is nothing
        more to see, and InboxLimit if the inbox would be one too many.
        """
        self._stream_id = inbox_id
        self._registry.admit(inbox_id, after)
        self._start()
        self._request.notifyFinish().addErrback(self._gone)
        inbox = self._registry.subscribe(inbox_id, self, after)
        self.log.info("stream {stream} opened for {user}", stream=inbox_id, user=self._user)
        if inbox.closed:
            self._finish("inbox closed")
        else:
            self._inbox = inbox
            self._streams.add(self)

    def deliver(self, batch: Batch) -> None:
        """The hot path: one write of bytes encoded once for every reader."""
        self.events += batch.events
        self._writer.write(batch)
        if self._paused and self._writer.unsent() > self._max_pending:
            self._drop()

    def _start(self) -> None:
        """Send the headers and the retry time; learn how to write to this reader."""
        request = self._request
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        request.registerProducer(self, True)
        transport = request.transport
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)  # events are small and should not wait
        self._started = self._clock.seconds()
        request.write(encode_retry(self._streams.retry_ms))
        self._writer = _fastpath.writer_for(request, self._streams.fast_path)

    def keepalive(self, now: float) -> None:
        """The shared heartbeat: a keep-alive comment, or the end if the token ran out.

        Checking the token's exp on the heartbeat, not with a timer per stream,
        ends a stream at most one heartbeat late and saves a timer per reader.
        A revocable token is asked about again when its recheck is due.
        """
        if self._expires is not None and self._expires <= now:
            self._expired()
        else:
            self._request.write(KEEPALIVE)
            if self._recheck is not None and self._recheck.due <= now:
                self._recheck.run(now, self._stream_id).addCallback(self._rechecked)

    def end(self) -> None:
        """The inbox closed: finish the response."""
        self._finish("inbox closed")

    def shutdown(self) -> None:
        """The server is stopping: a last retry hint, jittered so clients spread out."""
        retry_ms = self._streams.retry_ms
        self._request.write(encode_retry(random.randint(retry_ms // 2, retry_ms)))
        self._finish("server stopping")

    def _expired(self) -> None:
        """The token ran out: a revoked user must not watch forever."""
        self._request.write(encode_error("token expired"))
        self._finish("token expired")

    def _rechecked(self, reason: str | None) -> None:
        """The recheck's verdict: the same end as expiry, unless the stream ended meanwhile."""
        if reason is not None and self._started is not None:
            self._request.write(encode_error(reason))
            self._finish(reason)

    def pauseProducing(self) -> None:
        self._paused = True
        self._writer.pause()

    def resumeProducing(self) -> None:
        self._paused = False
        self._writer.resume()

    def stopProducing(self) -> None:
        """The connection is going away; notifyFinish's errback detaches."""

    def _drop(self) -> None:
        self._streams.dropped += 1
        self._detach(f"too slow: over {self._max_pending} bytes pending")
        transport = self._request.transport
        if ITCPTransport.providedBy(transport):
            transport.abortConnection()
        elif transport is not None:
            transport.loseConnection()

    def _finish(self, reason: str) -> None:
        """End the response; only ever called while the connection is up."""
        self._detach(reason)
        self._request.unregisterProducer()
        self._request.finish()

    def _gone(self, _: Failure) -> None:
        """The client went away (or was dropped)."""
        self._detach("client gone")

    def _detach(self, reason: str) -> None:
        self._streams.discard(self)
        if self._inbox is not None:
            self._registry.unsubscribe(self._inbox, self)
            self._inbox = None
        if self._started is not None:
            self.log.info(
                "stream {stream} closed for {user}: {reason} after {duration:.1f}s, {events} events sent",
                stream=self._stream_id,
                user=self._user,
                reason=reason,
                duration=self._clock.seconds() - self._started,
                events=self.events,
            )
            self._started = None


class StreamSet:
    """The open streams, with one keep-alive timer for all of them (not one each)."""

    log = Logger()

    def __init__(
        self, clock: IReactorTime, heartbeat: float, retry_ms: int, fast_path: bool = True
    ) -> None:
        self._streams: dict[EventStream, None] = {}
        self.fast_path = fast_path
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
        """Start the keep-alives; check once that the fast path suits this Twisted."""
        if self.fast_path:
            problem = _fastpath.check()
            if problem is not None:
                self.log.warn(
                    "streams write through Request.write: the fast path does not fit this Twisted ({problem})",
                    problem=problem,
                )
                self.fast_path = False
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
