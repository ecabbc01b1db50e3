"""What a TCP transport has not sent yet, and sending past its queue: the streams' fast path.

``twisted.internet.tcp.Connection`` keeps what the socket has not taken in
``dataBuffer`` from ``offset`` on, plus ``_tempDataBuffer`` (``_tempDataLen``
bytes) not yet joined to it; none of that is public. ``check()`` writes
through a real transport on a socket pair (never handed to the reactor) and
checks that the fields say what ``unsent`` and ``send_now`` take them to say.

Without them the streams write through ``Request.write`` and judge slowness
by what they wrote while paused (``monit.web._fastpath.RequestWriter``):
coarser, never blind. The streams run this check themselves when they start,
since they choose the writer.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


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


def tcp_below(transport: object) -> tcp.Connection | None:
    """The TCP connection under a wrapping transport (TLS writes to it), if there is one."""
    for _ in range(4):
        transport = getattr(transport, "transport", None)
        if isinstance(transport, tcp.Connection):
            return transport
    return None


@implementer(IPushProducer)
class IdleProducer:
    """A producer that is never paused for real (the checks' streams)."""

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class IdleReactor:
    """Just enough of a reactor for a connection that is never run (the checks' socket pairs)."""

    def addReader(self, reader: object) -> None:
        pass

    def removeReader(self, reader: object) -> None:
        pass

    def addWriter(self, writer: object) -> None:
        pass

    def removeWriter(self, writer: object) -> None:
        pass


def check() -> str | None:
    """Why ``unsent`` and ``send_now`` cannot be used with the installed Twisted, or None."""
    ours, theirs = socket.socketpair()
    try:
        connection = tcp.Connection(ours, None, IdleReactor())  # type: ignore[arg-type]
        connection.connected = True
        return _try(connection, theirs)
    except (AttributeError, TypeError, ValueError, OSError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        ours.close()
        theirs.close()


def _try(connection: tcp.Connection, theirs: socket.socket) -> str | None:
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
        chunk = theirs.recv(64)
        if not chunk:
            break
        received += chunk
    if received != b"queued+now":
        return f"bytes arrived as {received!r}"
    return None
