"""HTTP/2 over TLS, on the ``h2`` library: what a connection that chose ``h2`` by ALPN becomes.

An SSE server needs little of HTTP/2: GET requests without bodies, no push,
no priorities. So this is monit's own server connection, on the public API
of ``h2`` (``h2.connection.H2Connection``, its events and settings), with
the bounds an HTTP/1.1 connection to monit has:

- it counts as one connection (``--max-connections``) and announces
  ``MAX_STREAMS`` concurrent streams; a stream past them is refused alone
  (REFUSED_STREAM), as is a malformed request head (PROTOCOL_ERROR);
- while it has no answered stream, its next request must come within the
  head deadline, and a stream whose request has not ended by then is reset;
- a request that announces a body gets 413 on its stream, ``CONNECT`` 405,
  and neither is read;
- each stream is handed to the site as an ordinary ``Request`` whose channel
  is a ``ServerStream``, so routing, auth and SSE streams are HTTP/1.1's;
  once an SSE stream's headers are out the request is let go, as an
  HTTP/1.1 stream's is (``monit.web.lean``): the stream writes to its
  ``ServerStream`` and is told its end by it;
- what the streams write waits on them and goes out once per reactor turn:
  as much of each stream's DATA as its window allows, in one socket write;
- a full socket pauses every stream's producer, and a stream whose window is
  spent pauses its own, so a reader that takes nothing is found and dropped;
- after a GOAWAY for an error it reads nothing more and is closed within
  ``CLOSE_AFTER_GOAWAY``; floods of resets, PINGs or SETTINGS are bounded;
- at shutdown it says GOAWAY once every stream has sent its end.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from zope.interface import implementer

from monit._twisted.tcp_buffer import tcp_below
from monit.deadlines import Deadlines
from monit.tuning import YoungSweep
from monit.web.errors import error_body

if TYPE_CHECKING:  # lean imports the site, which imports this module
    from monit.web.lean import Stream

MAX_STREAMS = 100  # streams one connection may have open at once (Chromium opens up to 100 before it waits)
CLOSE_AFTER_GOAWAY = 1.0  # seconds a connection told GOAWAY may take to close before it is aborted
GOAWAY_AFTER_ENDS = 0.1  # at shutdown, seconds between the last stream's end and GOAWAY (clients read them apart)
RESETS_AT_ONCE = 200  # streams a client may reset in a burst (rapid reset, CVE-2023-44487) ...
RESETS_PER_SECOND = 50  # ... and in the long run
CONTROL_BACKLOG = 100 * 1024  # bytes of answers (PING, SETTINGS acks) written to a full socket before it is aborted

ErrorCodes = h2.errors.ErrorCodes
_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,  # checked here: a malformed head is the stream's error, not the connection's
    normalize_inbound_headers=False,
    validate_outbound_headers=False,  # written here, lower-case and without connection headers
    normalize_outbound_headers=False,
)
# What the connection's SETTINGS say, and what h2 itself enforces: h2 would answer a 101st
# stream with a connection error, so it is let through to be refused here, on its stream alone.
_ADVERTISED = {
    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
}
_ENFORCED = {**_ADVERTISED, h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2**31 - 1}

_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path"))
_CONNECTION_HEADERS = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")


class Host(Protocol):
    """What an HTTP/2 connection needs of its site (``monit.web.site.MonitSite``)."""

    clock: IReactorTime
    head_timeout: float
    refused: Counter[int]
    heads: Deadlines[Any]
    requestFactory: Any
    sweep: YoungSweep

    def start_head_deadline(self, channel: Any) -> None: ...

    def stop_head_deadline(self, channel: Any) -> None: ...

    def replaced(self, old: Any, new: Any) -> None: ...

    def channel_closed(self, channel: Any) -> None: ...


def malformed(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request head breaks RFC 9113 §8.2–8.3, or None."""
    regular = False
    pseudo: dict[bytes, bytes] = {}
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return "a pseudo-header after a regular header"
            if name not in _REQUEST_PSEUDO or name in pseudo:
                return "an unknown or repeated pseudo-header"
            pseudo[name] = value
            continue
        regular = True
        if not _TOKEN.match(name):
            return "a header name that is not a lower-case token"
        if name in _CONNECTION_HEADERS or (name == b"te" and value != b"trailers"):
            return "a connection-specific header"
        if _BAD_VALUE.search(value):
            return "a header value with a forbidden character"
    method = pseudo.get(b":method")
    if method is None:
        return "no :method"
    if method != b"CONNECT" and (b":scheme" not in pseudo or pseudo.get(b":path", b"")[:1] not in (b"/", b"*")):
        return "no :scheme, or no :path"
    return None


class RequestHead:
    """A request's method, path and regular headers, as HTTP/2 gave them."""

    __slots__ = ("method", "path", "headers", "size")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = self.path = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.size = 0
        authority = None
        for name, value in headers:
            self.size += len(name) + len(value) + 32  # as SETTINGS_MAX_HEADER_LIST_SIZE counts
            if name == b":method":
                self.method = value
            elif name == b":path":
                self.path = value
            elif name == b":authority":
                authority = value
            elif name[:1] != b":":
                self.headers.append((name, value))
        if authority is not None and not any(name == b"host" for name, _ in self.headers):
            self.headers.append((b"host", authority))

    def announces_body(self, ended: bool) -> bool:
        """A length over zero, or DATA frames to come of a length not given."""
        for name, value in self.headers:
            if name == b"content-length":
                return value.strip() != b"0"
        return not ended


@implementer(IPushProducer)
class ServerStream:
    """One HTTP/2 stream: the channel of the ``Request`` it carries, as an ``HTTPChannel`` is.

    What the request writes waits in ``pending`` until its connection's next
    flush sends what the stream's window allows. Once an SSE stream's headers
    are out it lets the request go (``let_request_go``): the SSE stream
    (``monit.web.stream.EventStream``) stays its producer and its ``reader``,
    writes to it through ``monit.web._fastpath.StreamResponse``, and is told
    by it when the stream is reset or the connection closes.
    """

    __slots__ = (
        "_connection",
        "stream_id",
        "site",
        "head",
        "request",
        "producer",
        "reader",
        "pending",
        "unsent_bytes",
        "answered",
        "ending",
        "blocked",
    )
    transport = None  # a stream has no transport of its own; it is reset alone (see abortConnection)

    def __init__(self, connection: MonitH2Connection, stream_id: int, head: RequestHead) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.site = connection.site
        self.head: RequestHead | None = head
        self.request: Any = None
        self.producer: IPushProducer | Stream | None = None
        self.reader: Stream | None = None  # the SSE stream that let the request go, until it ends
        self.pending: deque[bytes] = deque()
        self.unsent_bytes = 0
        self.answered = False  # its request has ended and was handed to the site
        self.ending = False  # the response is done: END_STREAM once pending is out
        self.blocked = False  # its flow-control window is spent

    def dispatch(self) -> None:
        """The request has ended: hand it to the site, as an HTTP/1.1 channel would."""
        head, self.head = self.head, None
        assert head is not None
        self.answered = True
        request = self.request = self.site.requestFactory(self)
        headers = request.requestHeaders
        for name, value in head.headers:
            headers.addRawHeader(name, value)
        request.gotLength(0)
        request.parseCookies()
        request.requestReceived(head.method, head.path, b"HTTP/2")

    def unsent(self) -> int:
        """Bytes written that its reader has not taken: those its window or the full socket keep back."""
        return self.unsent_bytes

    def let_request_go(self, reader: Stream) -> None:
        """The SSE response's headers are out: from now on ``reader`` writes here and is told the end here.

        The request, its headers and Klein's Deferreds hold each other in
        cycles: the site's sweep frees them young.
        """
        self.request = None
        self.producer = self.reader = reader
        self.site.sweep.soon()

    def finish(self) -> None:
        """The SSE response is done (its stream has detached): END_STREAM once what waits is out."""
        self.producer = self.reader = None
        self._connection.end_stream(self)

    # The channel of its request.
    def getPeer(self) -> IAddress:
        return self._connection.getPeer()

    def getHost(self) -> IAddress:
        return self._connection.getHost()

    def isSecure(self) -> bool:
        return True

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:
        self._connection.send_headers(self, code, headers)

    def write(self, data: bytes) -> None:
        if data:
            self._connection.send_data(self, data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def requestDone(self, request: IRequest) -> None:
        self._connection.end_stream(self)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def loseConnection(self) -> None:
        """End this stream alone, at once: HTTP/2 has no connection of the request's own to close."""
        self.abortConnection()

    def abortConnection(self) -> None:
        """Reset this stream alone (CANCEL); the connection's other streams go on."""
        self._connection.reset(self, ErrorCodes.CANCEL)

    def _refuse(self, code: int, message: str) -> None:
        """Its request did not end by the head deadline: reset, and counted as a refusal."""
        self.site.refused[code] += 1
        self._connection.reset(self, ErrorCodes.CANCEL)

    # Paused and resumed by its connection: the full socket under it, or its own window.
    def pauseProducing(self) -> None:
        if self.producer is not None:
            self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        if self.producer is not None:
            self.producer.resumeProducing()

    def stopProducing(self) -> None:
        """The connection's end reaches the request through ``connection_lost``."""

    def connection_lost(self, reason: Failure) -> None:
        """The stream was reset, or its connection closed: its SSE stream learns it, or its request (notifyFinish).

        Called once at most: the connection forgets the stream first. A
        stream that its server finished has no reader left to tell.
        """
        self.site.heads.cancel(self)
        request, self.request = self.request, None
        reader, self.reader = self.reader, None
        self.producer = None
        self.pending.clear()
        if reader is not None:
            reader.gone(reason)
        elif request is not None and not request.finished:
            request.connectionLost(reason)


@implementer(IPushProducer)
class MonitH2Connection(TwistedProtocol):
    """An HTTP/2 server connection, bounded as the module docstring says."""

    log = Logger()
    transport: Any  # the TLS protocol that wraps this one (twisted.protocols.tls.TLSMemoryBIOProtocol)

    def __init__(self, site: Host) -> None:
        self.site = site
        self._clock = site.clock
        self.conn = h2.connection.H2Connection(_CONFIG)
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values=_ADVERTISED)
        self._streams: dict[int, ServerStream] = {}
        self._ready: dict[ServerStream, None] = {}  # streams with DATA to send and window for it
        self._answering = 0  # streams whose request has ended and whose response has not
        self._flushing: IDelayedCall | None = None
        self._paused = False  # the socket is full
        self._backlog = 0  # bytes written while paused
        self._closing = False  # shutting down, or the client said GOAWAY: no new streams
        self._gone_away = False  # GOAWAY sent for an error: nothing more is read
        self._abort: IDelayedCall | None = None
        self._resets = float(RESETS_AT_ONCE)
        self._resets_at = self._clock.seconds()

    # Protocol
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.conn.initiate_connection()
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values=_ENFORCED)
        self.transport.registerProducer(self, True)
        below = tcp_below(self.transport)
        if below is not None:
            below.setTcpNoDelay(True)  # events are small and should not wait
        self.site.start_head_deadline(self)
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        if self._gone_away:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:  # h2 has queued a GOAWAY with the error's code
            self._abandon(f"{type(error).__name__}: {error}")
            return
        reset = _reset_in(events)
        for event in events:
            handler = _HANDLERS.get(type(event))
            if handler is not None and not (
                reset and type(event) is h2.events.RequestReceived and event.stream_id in reset
            ):
                handler(self, event)
            if self._gone_away:  # a handler may have said GOAWAY (mypy holds to the check above)
                return  # type: ignore[unreachable]
        self._flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.stop_head_deadline(self)
        for call in (self._flushing, self._abort):
            if call is not None and call.active():
                call.cancel()
        streams, self._streams = self._streams, {}
        self._ready.clear()
        for stream in streams.values():
            stream.connection_lost(reason)
        self.site.channel_closed(self)

    def getPeer(self) -> IAddress:
        address: IAddress = self.transport.getPeer()
        return address

    def getHost(self) -> IAddress:
        address: IAddress = self.transport.getHost()
        return address

    # Events from the client
    def _request_received(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        headers: list[tuple[bytes, bytes]] = event.headers  # bytes: header_encoding=None
        if self._closing or len(self._streams) >= MAX_STREAMS:
            self._reset_id(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if malformed(headers) is not None:
            self._reset_id(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        head = RequestHead(headers)
        ended = event.stream_ended is not None
        if head.method == b"CONNECT":
            self._answer_error(stream_id, 405, "monit answers GET requests, not CONNECT")
        elif head.size > HTTPChannel.totalHeadersSize or len(head.headers) > HTTPChannel.maxHeaders:
            self._answer_error(stream_id, 431, "the request head is too large")
        elif head.announces_body(ended):
            self._answer_error(stream_id, 413, "monit takes no request bodies")
        else:
            stream = self._streams[stream_id] = ServerStream(self, stream_id, head)
            if ended:
                self._answer(stream)
            else:  # its end must come by the head deadline
                self.site.heads.set(stream, self._clock.seconds() + self.site.head_timeout, _head_too_slow)

    def _data_received(self, event: h2.events.DataReceived) -> None:
        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream = self._streams.get(event.stream_id)
        if stream is not None and not stream.answered and event.data:  # a body after content-length: 0
            self._forget(stream)
            self.site.heads.cancel(stream)
            self._answer_error(event.stream_id, 413, "monit takes no request bodies")

    def _stream_ended(self, event: h2.events.StreamEnded) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None and not stream.answered:
            self.site.heads.cancel(stream)
            self._answer(stream)

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            self._forget(stream)
            stream.connection_lost(Failure(ConnectionLost(f"stream reset by the client ({event.error_code!r})")))
        if event.remote_reset:
            self._count_reset()

    def _window_updated(self, event: h2.events.WindowUpdated | h2.events.RemoteSettingsChanged) -> None:
        """Wake the blocked streams that now have room: their own window and the connection's."""
        stream_id = getattr(event, "stream_id", 0)
        streams = [self._streams.get(stream_id)] if stream_id else tuple(self._streams.values())
        window = self.conn.local_flow_control_window
        for stream in streams:
            if stream is not None and stream.blocked and window(stream.stream_id) > 0:
                self._unblock(stream)

    def _terminated(self, event: h2.events.ConnectionTerminated) -> None:
        """The client said GOAWAY: h2 sends nothing more on this connection, so it closes now."""
        self._abandon(read_on=True)

    # Answers
    def _answer(self, stream: ServerStream) -> None:
        self._answering += 1
        if self._answering == 1:
            self.site.stop_head_deadline(self)
        stream.dispatch()

    def send_headers(self, stream: ServerStream, code: bytes, headers: Headers) -> None:
        if self._gone_away or self._streams.get(stream.stream_id) is not stream:
            return
        lines = [(b":status", code)]
        for name, values in headers.getAllRawHeaders():
            name = name.lower()
            if name not in _CONNECTION_HEADERS:
                lines.extend((name, value) for value in values)
        self.conn.send_headers(stream.stream_id, lines)
        self._want_flush()

    def send_data(self, stream: ServerStream, data: bytes) -> None:
        """The hot path: the stream's DATA waits for the next flush, once per turn for all streams."""
        if stream.ending or self._streams.get(stream.stream_id) is not stream:
            return
        stream.pending.append(data)
        stream.unsent_bytes += len(data)
        if not stream.blocked:
            self._ready[stream] = None
            if self._flushing is None:
                self._flushing = self._clock.callLater(0, self._flush)

    def end_stream(self, stream: ServerStream) -> None:
        """The response is done: END_STREAM once what it wrote is out."""
        if self._streams.get(stream.stream_id) is not stream or stream.ending:
            return
        stream.ending = True
        if not stream.blocked:
            self._ready[stream] = None
            self._want_flush()

    def reset(self, stream: ServerStream, code: ErrorCodes) -> None:
        """Reset a stream of ours alone, and tell its request or SSE stream."""
        if self._streams.get(stream.stream_id) is not stream:
            return
        self._forget(stream)
        self._reset_id(stream.stream_id, code)
        stream.connection_lost(Failure(ConnectionLost(f"stream reset by monit ({code!r})")))
        self._want_flush()

    def _answer_error(self, stream_id: int, code: int, message: str) -> None:
        """A short JSON error on this stream alone, which is then reset: what the client sends on it is dropped."""
        body = error_body(message)
        lines = [
            (b":status", b"%d" % code),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]
        fits = self.conn.local_flow_control_window(stream_id) >= len(body)
        self.conn.send_headers(stream_id, lines, end_stream=not fits)
        if fits:
            self.conn.send_data(stream_id, body, end_stream=True)
        self._reset_id(stream_id, ErrorCodes.NO_ERROR)
        self.site.refused[code] += 1

    def _reset_id(self, stream_id: int, code: ErrorCodes) -> None:
        if self._gone_away:
            return
        try:
            self.conn.reset_stream(stream_id, code)
        except h2.exceptions.StreamClosedError:
            pass  # both ends have ended it already

    # Sending
    def _want_flush(self) -> None:
        if self._flushing is None and self.transport is not None:
            self._flushing = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        """Send what every ready stream's window allows, then all that h2 has framed, in one write."""
        if self._flushing is not None:
            if self._flushing.active():
                self._flushing.cancel()
            self._flushing = None
        if self.transport is None or self._gone_away:
            return
        if self._ready and not self._paused:
            ready, self._ready = self._ready, {}
            for stream in ready:
                self._send_pending(stream)
        data = self.conn.data_to_send()
        if not data:
            return
        if self._paused:
            self._backlog += len(data)
            if self._backlog > CONTROL_BACKLOG:  # answers piling up for a client that reads nothing
                self.log.info("HTTP/2 connection aborted: it reads none of its answers")
                self.transport.abortConnection()
                return
        self.transport.write(data)

    def _send_pending(self, stream: ServerStream) -> None:
        """As much of the stream's DATA as its window allows, several writes to a frame; then its end."""
        stream_id = stream.stream_id
        pending = stream.pending
        conn = self.conn
        ended = False
        while pending:
            room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if room <= 0:
                self._block(stream)
                return
            data = pending.popleft()
            if len(data) > room:
                pending.appendleft(data[room:])
                data = data[:room]
            elif pending and len(data) + len(pending[0]) <= room:
                parts, size = [data], len(data)
                while pending and size + len(pending[0]) <= room:
                    parts.append(pending.popleft())
                    size += len(parts[-1])
                data = b"".join(parts)
            stream.unsent_bytes -= len(data)
            ended = stream.ending and not pending
            conn.send_data(stream_id, data, end_stream=ended)
        if stream.ending:
            if not ended:
                conn.end_stream(stream_id)
            self._forget(stream)
            stream.request = None

    def _block(self, stream: ServerStream) -> None:
        """Its window is spent: its producer waits for a WINDOW_UPDATE."""
        stream.blocked = True
        stream.pauseProducing()

    def _unblock(self, stream: ServerStream) -> None:
        stream.blocked = False
        if stream.pending or stream.ending:
            self._ready[stream] = None
        if not self._paused:
            stream.resumeProducing()
        self._want_flush()

    def _forget(self, stream: ServerStream) -> None:
        """The stream is over for us: its place among the streams is free again.

        With no answered stream left, the connection's next request must come
        by the head deadline, whatever streams are half open.
        """
        self._streams.pop(stream.stream_id, None)
        self._ready.pop(stream, None)
        if stream.answered:
            stream.answered = False
            self._answering -= 1
            if not self._answering and not self._closing:
                self.site.start_head_deadline(self)
        if self._closing and not self._streams:
            self._close()

    # IPushProducer: the socket under the connection
    def pauseProducing(self) -> None:
        """The socket is full: every stream's producer waits, as an HTTP/1.1 response's would."""
        self._paused = True
        for stream in tuple(self._streams.values()):
            stream.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._backlog = 0
        for stream in tuple(self._streams.values()):
            if not stream.blocked:
                stream.resumeProducing()
        self._want_flush()

    def stopProducing(self) -> None:
        """connectionLost follows, and ends every stream."""

    # Ending the connection
    def close_when_done(self) -> None:
        """Shutdown: no new streams; GOAWAY and close once every open stream has sent its end."""
        self._closing = True
        if not self._streams:
            self._close()

    def _close(self) -> None:
        """GOAWAY (NO_ERROR) a moment after the last stream's end, then close."""
        if self._abort is None and self.transport is not None:
            self._abort = self._clock.callLater(GOAWAY_AFTER_ENDS, self._go_away, ErrorCodes.NO_ERROR, "", True)

    def _refuse(self, code: int, message: str) -> None:
        """No request came by the head deadline: GOAWAY, saying why, and close (counted as a refusal)."""
        self.site.refused[code] += 1
        self._go_away(ErrorCodes.NO_ERROR, message)

    def _count_reset(self) -> None:
        """Rapid reset: a client that resets streams faster than it could watch them is told to calm down."""
        now = self._clock.seconds()
        self._resets = min(RESETS_AT_ONCE, self._resets + (now - self._resets_at) * RESETS_PER_SECOND) - 1
        self._resets_at = now
        if self._resets < 0:
            self.log.info("HTTP/2 connection closed: it resets streams faster than it could watch them")
            self._go_away(ErrorCodes.ENHANCE_YOUR_CALM, "too many streams reset")

    def _go_away(self, code: ErrorCodes, why: str, read_on: bool = False) -> None:
        if self._gone_away or self.transport is None:
            return
        self.conn.close_connection(error_code=code, additional_data=why.encode() or None)
        self._abandon(read_on=read_on)

    def _abandon(self, why: str = "", read_on: bool = False) -> None:
        """GOAWAY is queued: send it and close; abort if that takes longer than ``CLOSE_AFTER_GOAWAY``.

        After an error nothing more is read at all: what the client still
        sends stays in the kernel. At shutdown (``read_on``) the client's own
        TLS close is read, so the connection closes as soon as it answers.
        """
        if self._gone_away or self.transport is None:
            return
        if why:
            self.log.info("HTTP/2 connection closed: {why}", why=why)
        self._gone_away = True
        self._ready.clear()
        transport = self.transport
        transport.write(self.conn.data_to_send())
        below = tcp_below(transport)
        if below is not None and not read_on:
            below.pauseProducing()
        transport.unregisterProducer()  # TLS closes only once its producer has gone
        transport.loseConnection()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = self._clock.callLater(CLOSE_AFTER_GOAWAY, transport.abortConnection)


def _reset_in(events: list[h2.events.Event]) -> set[int] | None:
    """The streams the client reset in this read: a request among them is not answered.

    h2 has closed such a stream (or forgotten it) before monit sees its
    request, so an answer could only fail.
    """
    if len(events) < 2:
        return None
    return {event.stream_id for event in events if type(event) is h2.events.StreamReset} or None


def _head_too_slow(stream: ServerStream) -> None:
    stream._refuse(408, "the request did not end in time")


_HANDLERS: dict[type, Any] = {
    h2.events.RequestReceived: MonitH2Connection._request_received,
    h2.events.DataReceived: MonitH2Connection._data_received,
    h2.events.StreamEnded: MonitH2Connection._stream_ended,
    h2.events.StreamReset: MonitH2Connection._stream_reset,
    h2.events.WindowUpdated: MonitH2Connection._window_updated,
    h2.events.RemoteSettingsChanged: MonitH2Connection._window_updated,
    h2.events.ConnectionTerminated: MonitH2Connection._terminated,
}


def take_over(channel: HTTPChannel, site: Host) -> MonitH2Connection:
    """Hand a connection whose TLS handshake chose h2 from its HTTP/1.1 channel (which has read nothing) to HTTP/2."""
    transport: object = channel.transport  # typed as an interface, which ProtocolWrapper does not name
    if not isinstance(transport, ProtocolWrapper):
        raise TypeError(f"HTTP/2 needs a TLS transport that wraps its protocol, not {transport!r}")
    site.stop_head_deadline(channel)
    channel.setTimeout(None)
    transport.unregisterProducer()  # the channel was the transport's producer
    connection = MonitH2Connection(site)
    site.replaced(channel, connection)
    transport.wrappedProtocol = connection
    connection.makeConnection(transport)
    return connection


def refusal(message: str) -> bytes:
    """A whole HTTP/2 answer to a connection past a cap: the server's preface, then GOAWAY saying why."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    connection.initiate_connection()
    connection.close_connection(ErrorCodes.REFUSED_STREAM, additional_data=message.encode())
    return bytes(connection.data_to_send())
