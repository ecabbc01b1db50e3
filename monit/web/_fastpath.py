"""The fast paths to a reader: a batch framed once, and written straight to each socket.

``Request.write`` frames every write as an HTTP chunk, per reader, and the
TCP transport only registers for writing and sends on the next reactor turn:
two epoll changes per reader per event. Here a batch is framed as a chunk
once for all readers, and a healthy reader's socket takes it at once. How
many bytes a reader has left unread is read from the transport's buffer.

Each stream writes to a ``Response``, the fastest its connection allows:

- over plain TCP, the stream takes its connection over from twisted.web
  (``monit.web.lean.LeanConnection``) and lets the channel and request go;
- where that cannot be done (a channel that is not monit's), ``SocketWriter``
  sends to the same socket and keeps the request for the rest;
- over TLS, ``ChunkWriter`` writes chunks to the TLS transport and reads
  what is unsent from the TCP below;
- over HTTP/2, the stream's own ``monit.web.http2.ServerStream`` lets the
  request go, as a lean HTTP/1.1 connection does, and ``StreamResponse``
  hands it a batch's bytes as they are, to be framed once per reactor turn
  with the rest of its connection's streams; what its reader has not taken
  is what its flow-control window, or the full socket under the
  connection, keeps back;
- else ``RequestWriter`` goes through ``Request.write``.

Reading the transport's buffer, sending past it and taking a connection over
need private parts of ``twisted.internet.tcp.Connection``: they live behind
the wall, in ``monit._twisted.tcp_buffer`` and ``monit._twisted.takeover``,
each with a check that tries it on a real socket pair. ``Paths.check()``
runs them once, when the streams start; if one does not fit, monit says so
once, naming the Twisted, and takes the next way down: without the buffer,
every stream goes through ``Request.write``, judging slowness by what it
wrote while the transport asked it to pause: slower and coarser, never blind.
"""

from __future__ import annotations

from typing import Protocol, cast

from twisted.internet import tcp
from twisted.internet.interfaces import ITCPTransport, ITransport
from twisted.web.server import Request

from monit._twisted import takeover, tcp_buffer
from monit._twisted.seam import fits, unfit
from monit._twisted.tcp_buffer import send_now, tcp_below, unsent
from monit.inbox import Batch
from monit.web import lean
from monit.web.lean import http_chunk


class Response(Protocol):
    """Where a stream writes once its headers are out, and how much its reader has not taken."""

    def write(self, batch: Batch) -> None:
        """Events, encoded once for every reader."""

    def send(self, data: bytes) -> None:
        """The stream's own frames: keep-alives, notices, errors, the last retry hint."""

    def unsent(self) -> int: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def finish(self) -> None:
        """End the response (the connection may go on, or close)."""

    def abort(self) -> None:
        """Drop the reader at once: its connection, or over HTTP/2 its stream alone."""


class _ViaRequest:
    """A response that keeps its ``Request``: its own frames, its end and a drop go through it."""

    __slots__ = ("_request",)

    def __init__(self, request: Request) -> None:
        self._request = request

    def send(self, data: bytes) -> None:
        self._request.write(data)

    def finish(self) -> None:
        self._request.unregisterProducer()
        self._request.finish()

    def abort(self) -> None:
        transport = self._request.transport
        if ITCPTransport.providedBy(transport):
            transport.abortConnection()
        elif transport is not None:
            transport.loseConnection()
        else:  # HTTP/2: reset this stream alone; the connection's other streams go on
            cast(HTTP2Stream, self._request.channel).abortConnection()


class SocketWriter(_ViaRequest):
    """HTTP/1.1 over plain TCP, for a channel that cannot be let go: chunks straight to the socket."""

    __slots__ = ("_connection",)

    def __init__(self, request: Request, connection: tcp.Connection) -> None:
        super().__init__(request)
        self._connection = connection

    def write(self, batch: Batch) -> None:
        send_now(self._connection, http_chunk(batch))

    def unsent(self) -> int:
        return unsent(self._connection)

    def pause(self) -> None:
        """The transport's buffer is read directly: pausing changes nothing here."""

    def resume(self) -> None:
        """As for pause."""


class ChunkWriter(_ViaRequest):
    """HTTP/1.1 over a wrapping transport (TLS): chunks to the wrapper, unsent bytes from the TCP below."""

    __slots__ = ("_transport", "_connection")

    def __init__(self, request: Request, transport: ITransport, connection: tcp.Connection) -> None:
        super().__init__(request)
        self._transport = transport
        self._connection = connection

    def write(self, batch: Batch) -> None:
        self._transport.write(http_chunk(batch))

    def unsent(self) -> int:
        return unsent(self._connection)

    def pause(self) -> None:
        """The TCP buffer is read directly: pausing changes nothing here."""

    def resume(self) -> None:
        """As for pause."""


class RequestWriter(_ViaRequest):
    """The public API: ``Request.write``, and slowness judged by producer accounting.

    While the transport has paused us its buffer is full, so whatever is
    written until it resumes is left unsent: a lower bound of the real
    figure, which is enough to drop a reader that does not read.
    """

    __slots__ = ("_paused", "_since_pause")

    def __init__(self, request: Request) -> None:
        super().__init__(request)
        self._paused = False
        self._since_pause = 0

    def write(self, batch: Batch) -> None:
        self._request.write(batch.data)
        if self._paused:
            self._since_pause += len(batch.data)

    def unsent(self) -> int:
        return self._since_pause

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._since_pause = 0


class StreamResponse:
    """HTTP/2, its request let go: the batch's bytes to the stream, which knows what waits unsent."""

    __slots__ = ("_stream",)

    def __init__(self, stream: HTTP2Stream) -> None:
        self._stream = stream

    def write(self, batch: Batch) -> None:
        self._stream.write(batch.data)

    def send(self, data: bytes) -> None:
        self._stream.write(data)

    def unsent(self) -> int:
        return self._stream.unsent()

    def pause(self) -> None:
        """The stream counts what waits: pausing changes nothing here."""

    def resume(self) -> None:
        """As for pause."""

    def finish(self) -> None:
        """END_STREAM once what waits is out; the stream is not told of its own end."""
        self._stream.finish()

    def abort(self) -> None:
        """Reset this stream alone (CANCEL): the connection's other streams go on."""
        self._stream.abortConnection()


class HTTP2Stream(Protocol):
    """What ``StreamResponse`` needs of an HTTP/2 stream (``monit.web.http2.ServerStream``)."""

    def let_request_go(self, reader: lean.Stream) -> None: ...

    def write(self, data: bytes) -> None: ...

    def unsent(self) -> int: ...

    def finish(self) -> None: ...

    def abortConnection(self) -> None: ...


class Paths:
    """Which of the faster ways to a reader the installed Twisted allows, checked once when the streams start."""

    __slots__ = ("fast", "lean")

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self.lean = fast

    def check(self) -> str | None:
        """Why the fast path does not fit (it is then off), or None; a misfit of the lean one is logged by its seam."""
        problem = check() if self.fast else None
        if problem is not None:
            self.fast = False
        self.lean = self.fast and fits(takeover)
        return problem


def response_for(request: Request, stream: lean.Stream, paths: Paths) -> Response:
    """The fastest response that is safe for this reader, once its headers are out."""
    if paths.fast and getattr(request, "chunked", False):
        transport = request.channel.transport
        connection: object = transport  # typed as an interface, which tcp.Connection does not name
        if isinstance(connection, tcp.Connection):
            taken = lean.take_over(request, connection, stream) if paths.lean else None
            return taken if taken is not None else SocketWriter(request, connection)
        below = tcp_below(transport)
        if transport is not None and below is not None:
            return ChunkWriter(request, transport, below)
    elif paths.fast and request.clientproto == b"HTTP/2":
        channel = getattr(request, "channel", None)
        if callable(getattr(channel, "let_request_go", None)):
            h2_stream = cast(HTTP2Stream, channel)
            h2_stream.let_request_go(stream)
            return StreamResponse(h2_stream)
    return RequestWriter(request)


def check() -> str | None:
    """Why the fast path cannot be used with the installed Twisted (named), or None when it can."""
    problem = tcp_buffer.check()
    if problem is None and not hasattr(Request, "chunked"):
        problem = "twisted.web's Request has no chunked flag"
    return None if problem is None else unfit(problem)
