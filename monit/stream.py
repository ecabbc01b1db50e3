"""One SSE response, fed by an inbox; and the set of them that share a keep-alive."""
from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from monit.inbox import Inbox, InboxRegistry
from monit.sse import KEEPALIVE, encode_retry


class EventStream:
    """Writes an inbox's frames to one HTTP response until the inbox or the client ends.

    The Deferred from :meth:`run` fires when the inbox closes (Klein then
    finishes the response); Klein cancels it when the client goes away, and
    the canceller unsubscribes at once, so nothing writes to a dead socket.
    """

    log = Logger()

    def __init__(
        self,
        request: IRequest,
        registry: InboxRegistry,
        streams: StreamSet,
        user: str,
        clock: IReactorTime,
    ) -> None:
        self._request = request
        self._registry = registry
        self._streams = streams
        self._user = user
        self._clock = clock
        self._inbox: Inbox | None = None
        self._done: Deferred[None] = Deferred(self._cancelled)
        self._started = 0.0
        self.writes = 0

    def run(self, inbox_id: str, retry_ms: int, after: int = 0) -> Deferred[None]:
        request = self._request
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        request.write(encode_retry(retry_ms))
        self._started = self._clock.seconds()
        self._streams.add(self)
        self._inbox = self._registry.subscribe(inbox_id, self, after)
        self.log.info("stream {stream} opened for {user}", stream=inbox_id, user=self._user)
        return self._done

    def send(self, frame: bytes) -> None:
        self.writes += 1
        self._request.write(frame)

    def keepalive(self) -> None:
        self._request.write(KEEPALIVE)

    def end(self) -> None:
        """The inbox closed: finish the response."""
        self._detach("inbox closed")
        self._done.callback(None)

    def _cancelled(self, _: Deferred[None]) -> None:
        """The client went away (or the server is stopping the stream)."""
        self._detach("client gone")

    def _detach(self, reason: str) -> None:
        self._streams.discard(self)
        if self._inbox is not None:
            self._registry.unsubscribe(self._inbox, self)
            self.log.info(
                "stream {stream} closed for {user}: {reason} after {duration:.1f}s, {writes} writes",
                stream=self._inbox.id,
                user=self._user,
                reason=reason,
                duration=self._clock.seconds() - self._started,
                writes=self.writes,
            )
            self._inbox = None


class StreamSet:
    """The open streams, with one keep-alive timer for all of them (not one each)."""

    def __init__(self, clock: IReactorTime, heartbeat: float) -> None:
        self._streams: dict[EventStream, None] = {}
        self._heartbeat = heartbeat
        self._beat = LoopingCall(self._beat_all)
        self._beat.clock = clock

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, stream: EventStream) -> None:
        self._streams[stream] = None

    def discard(self, stream: EventStream) -> None:
        self._streams.pop(stream, None)

    def start(self) -> None:
        self._beat.start(self._heartbeat, now=False)

    def stop(self) -> None:
        if self._beat.running:
            self._beat.stop()

    def _beat_all(self) -> None:
        for stream in tuple(self._streams):
            stream.keepalive()
