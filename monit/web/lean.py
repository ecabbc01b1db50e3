"""An HTTP/1.1 stream's connection once its headers are out: chunks straight to the socket, and little else.

What twisted.web keeps for a request (the ``HTTPChannel`` with its parser,
the ``Request`` with its headers, Klein's Deferreds) is all dead weight once
an SSE response has started: from then on HTTP is only chunk framing. So a
stream over plain TCP takes its connection over (``monit._twisted.takeover``)
and the channel and request are let go; an idle stream costs the transport,
this small object and the stream. The site counts the connection as before,
and closes it at shutdown.

An HTTP/2 stream shares the design: its ``monit.web.http2.ServerStream``
lets the request go in the same way, and tells the same ``Stream`` its end.

A client has nothing more to say on an SSE connection: what it sends is
dropped, and past ``MOST_IGNORED`` bytes it is cut off. The response's end
closes the connection; a client that wants more opens another, as an
EventSource does.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet import tcp
from twisted.internet.interfaces import IProtocol, IPushProducer, ITransport
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from monit._twisted import takeover
from monit._twisted.tcp_buffer import send_now, unsent
from monit.inbox import Batch
from monit.web.site import MonitChannel, MonitSite

MOST_IGNORED = 16 * 1024  # bytes a client may send on a stream before it is cut off
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """Bytes as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def http_chunk(batch: Batch) -> bytes:
    """The batch as one HTTP/1.1 chunk, framed by the first reader that needs it."""
    framed = batch.framed
    if framed is None:
        framed = batch.framed = chunk(batch.data)
    return framed


class Stream(Protocol):
    """What its connection tells a stream (``monit.web.stream.EventStream``) once the request is let go.

    Over HTTP/1.1 the connection is a ``LeanConnection``; over HTTP/2, the
    stream's own ``monit.web.http2.ServerStream``.
    """

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def gone(self, reason: Failure) -> None: ...


@implementer(IProtocol, IPushProducer)
class LeanConnection:
    """The protocol of a TCP connection that carries one SSE response, and that response's writer."""

    __slots__ = ("_connection", "_stream", "_site", "_ignored")

    def __init__(self, connection: tcp.Connection, stream: Stream, site: MonitSite) -> None:
        self._connection = connection
        self._stream: Stream | None = stream
        self._site = site
        self._ignored = 0

    # What the stream writes.

    def write(self, batch: Batch) -> None:
        send_now(self._connection, http_chunk(batch))

    def send(self, data: bytes) -> None:
        send_now(self._connection, chunk(data))

    def unsent(self) -> int:
        return unsent(self._connection)

    def pause(self) -> None:
        """The transport's buffer is read directly: pausing changes nothing here."""

    def resume(self) -> None:
        """As for pause."""

    def finish(self) -> None:
        """The last chunk, then the connection closes once it is written."""
        self._stream = None
        send_now(self._connection, LAST_CHUNK)
        self._connection.loseConnection()

    def abort(self) -> None:
        self._connection.abortConnection()

    # What the transport tells it.

    def makeConnection(self, transport: ITransport) -> None:
        """Never called: the connection is taken over already made."""

    def connectionMade(self) -> None:
        """As for makeConnection."""

    def dataReceived(self, data: bytes) -> None:
        self._ignored += len(data)
        if self._ignored > MOST_IGNORED:
            self._connection.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        self._site.channel_closed(self)
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.gone(reason)

    def pauseProducing(self) -> None:
        if self._stream is not None:
            self._stream.pauseProducing()

    def resumeProducing(self) -> None:
        if self._stream is not None:
            self._stream.resumeProducing()

    def stopProducing(self) -> None:
        """The connection is going away: connectionLost tells the stream."""

    # What the site asks of each connection.

    def close_when_done(self) -> None:
        self._connection.loseConnection()


def take_over(request: Request, connection: tcp.Connection, stream: Stream) -> LeanConnection | None:
    """The stream's connection, taken from monit's HTTP/1.1 channel; None on a channel that is not monit's."""
    channel = request.channel
    if not isinstance(channel, MonitChannel):
        return None
    lean = LeanConnection(connection, stream, channel.site)
    channel.site.replaced(channel, lean)
    takeover.take_over(connection, lean, lean)
    channel.site.sweep.soon()
    return lean
