"""The fast path to a reader: the one module that reads Twisted's private fields.

``Request.write`` frames every write as an HTTP chunk, per reader, and the
TCP transport only registers for writing and sends on the next reactor turn:
two epoll changes per reader per event. Here a batch is framed as a chunk
once for all readers, and a healthy reader's socket takes it at once. How
many bytes a reader has left unread is read from the transport's buffer.

All of that relies on private fields of ``twisted.internet.tcp.Connection``
(``dataBuffer``, ``offset``, ``_tempDataBuffer``, ``_tempDataLen``), so
``check()`` tries them once, at start-up, on a real socket pair. If they are
not what this module expects, monit says so once and every stream goes
through ``Request.write``, judging slowness by what it wrote while the
transport asked it to pause: slower and coarser, never blind.

An HTTP/2 stream (``monit.web.http2.ServerStream``, monit's own) takes a
batch's bytes as they are, to be framed once per reactor turn with the rest
of its connection's streams; what its reader has not taken is what its
flow-control window, or the full socket under the connection, keeps back.
"""
from __future__ import annotations

import socket
from typing import Protocol

from twisted.internet import tcp
from twisted.internet.interfaces import ITransport
from twisted.web.server import Request

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


def unsent(connection: tcp.Connection) -> int:
    """The bytes a TCP transport holds that its socket has not taken yet."""
    return len(connection.dataBuffer) - connection.offset + connection._tempDataLen


def send_now(connection: tcp.Connection, data: bytes) -> None:
    """Send at once when nothing is queued; let the transport queue what the socket refuses.

    Whatever is already queued goes first, so order is kept.
    """
    if connection._tempDataLen or connection.offset != len(connection.dataBuffer):
        connection.write(data)
        return
    try:
        sent = connection.socket.send(data)
    except OSError:  # full (EAGAIN) or broken: the transport queues it and learns which
        sent = 0
    if sent < len(data):
        connection.write(data[sent:])


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
        if isinstance(transport, tcp.Connection):
            return SocketWriter(transport)
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


class _Reactor:
    """Just enough of a reactor for a connection that is never run."""

    def addWriter(self, writer: object) -> None:
        pass

    def removeWriter(self, writer: object) -> None:
        pass


def check() -> str | None:
    """Why the fast path cannot be used with the running Twisted, or None when it can.

    Writes through a real TCP transport on a socket pair (never handed to
    the reactor) and checks that the fields say what ``unsent`` and
    ``send_now`` take them to say.
    """
    ours, theirs = socket.socketpair()
    try:
        connection = tcp.Connection(ours, None, _Reactor())  # type: ignore[arg-type]
        connection.connected = True
        if unsent(connection) != 0 or not isinstance(connection.dataBuffer, bytes):
            return "an idle TCP transport does not read as empty"
        connection.write(b"queued")
        if unsent(connection) != 6:
            return "a write to a TCP transport is not counted as unsent"
        connection.doWrite()
        if unsent(connection) != 0:
            return "a flushed TCP transport does not read as empty"
        send_now(connection, b"+now")
        theirs.settimeout(1)
        received = b""
        while len(received) < 10:
            received += theirs.recv(64)
        if received != b"queued+now":
            return f"bytes arrived as {received!r}"
        if not hasattr(Request, "chunked"):
            return "twisted.web's Request has no chunked flag"
        return None
    except (AttributeError, TypeError, ValueError, OSError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        ours.close()
        theirs.close()
