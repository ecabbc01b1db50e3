"""The fast path to a reader: a batch framed once, and written straight to each socket.

``Request.write`` frames every write as an HTTP chunk, per reader, and the
TCP transport only registers for writing and sends on the next reactor turn:
two epoll changes per reader per event. Here a batch is framed as a chunk
once for all readers, and a healthy reader's socket takes it at once. How
many bytes a reader has left unread is read from the transport's buffer.

Reading that buffer, and sending past it, needs private fields of
``twisted.internet.tcp.Connection``: those two functions live behind the wall,
in ``monit._twisted.tcp_buffer``, with the check that tries them on a real
socket pair. The writers stay here, since the rest of what they do (framing,
``Request.write``, the HTTP/2 stream) is monit's own or public. ``check()``
runs once, when the streams start; if the fields are not what the wall
expects, monit says so once, naming the Twisted, and every stream goes through
``Request.write``, judging slowness by what it wrote while the transport asked
it to pause: slower and coarser, never blind.

An HTTP/2 stream (``monit.web.http2.ServerStream``, monit's own) takes a
batch's bytes as they are, to be framed once per reactor turn with the rest
of its connection's streams; what its reader has not taken is what its
flow-control window, or the full socket under the connection, keeps back.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet import tcp
from twisted.internet.interfaces import ITransport
from twisted.web.server import Request

from monit._twisted import tcp_buffer
from monit._twisted.seam import unfit
from monit._twisted.tcp_buffer import send_now, unsent
from monit.inbox import Batch


class Writer(Protocol):
    """How a stream writes its batches, and knows how much its reader has not taken."""

    def write(self, batch: Batch) -> None: ...

    def unsent(self) -> int: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


def http_chunk(batch: Batch) -> bytes:
    """The batch as one HTTP/1.1 chunk, framed by the first reader that needs it."""
    framed = batch.framed
    if framed is None:
        framed = batch.framed = b"%x\r\n%s\r\n" % (len(batch.data), batch.data)
    return framed


class SocketWriter:
    """HTTP/1.1 over plain TCP: chunks straight to the socket."""

    __slots__ = ("_connection",)

    def __init__(self, connection: tcp.Connection) -> None:
        self._connection = connection

    def write(self, batch: Batch) -> None:
        send_now(self._connection, http_chunk(batch))

    def unsent(self) -> int:
        return unsent(self._connection)

    def pause(self) -> None:
        """The transport's buffer is read directly: pausing changes nothing here."""

    def resume(self) -> None:
        """As for pause."""


class ChunkWriter:
    """HTTP/1.1 over a wrapping transport (TLS): chunks to the wrapper, unsent bytes from the TCP below."""

    __slots__ = ("_transport", "_connection")

    def __init__(self, transport: ITransport, connection: tcp.Connection) -> None:
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


class RequestWriter:
    """The public API: ``Request.write``, and slowness judged by producer accounting.

    While the transport has paused us its buffer is full, so whatever is
    written until it resumes is left unsent: a lower bound of the real
    figure, which is enough to drop a reader that does not read.
    """

    __slots__ = ("_request", "_paused", "_since_pause")

    def __init__(self, request: Request) -> None:
        self._request = request
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


class StreamWriter:
    """HTTP/2: the batch's bytes to the stream, which knows what waits unsent."""

    __slots__ = ("_stream",)

    def __init__(self, stream: HTTP2Stream) -> None:
        self._stream = stream

    def write(self, batch: Batch) -> None:
        self._stream.write(batch.data)

    def unsent(self) -> int:
        return self._stream.unsent()

    def pause(self) -> None:
        """The stream counts what waits: pausing changes nothing here."""

    def resume(self) -> None:
        """As for pause."""


class HTTP2Stream(Protocol):
    """What ``StreamWriter`` needs of an HTTP/2 stream (``monit.web.http2.ServerStream``)."""

    def write(self, data: bytes) -> None: ...

    def unsent(self) -> int: ...


def writer_for(request: Request, fast: bool) -> Writer:
    """The fastest writer that is safe for this response, once its headers are out."""
    if fast and getattr(request, "chunked", False):
        transport = request.channel.transport
        connection: object = transport  # typed as an interface, which tcp.Connection does not name
        if isinstance(connection, tcp.Connection):
            return SocketWriter(connection)
        below = tcp_below(transport)
        if transport is not None and below is not None:
            return ChunkWriter(transport, below)
    elif fast and request.clientproto == b"HTTP/2":
        stream = getattr(request, "channel", None)
        if callable(getattr(stream, "unsent", None)):
            return StreamWriter(stream)  # type: ignore[arg-type]
    return RequestWriter(request)


def tcp_below(transport: object) -> tcp.Connection | None:
    """The TCP connection under a wrapping transport (TLS writes to it), if there is one."""
    for _ in range(4):
        transport = getattr(transport, "transport", None)
        if isinstance(transport, tcp.Connection):
            return transport
    return None


def check() -> str | None:
    """Why the fast path cannot be used with the installed Twisted (named), or None when it can."""
    problem = tcp_buffer.check()
    if problem is None and not hasattr(Request, "chunked"):
        problem = "twisted.web's Request has no chunked flag"
    return None if problem is None else unfit(problem)
