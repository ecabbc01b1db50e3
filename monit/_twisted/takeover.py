"""A protocol taking a live TCP connection over from another: an idle stream without its channel.

``twisted.internet.tcp.Connection`` hands what it reads, and its loss, to
whatever its ``protocol`` attribute names, which no interface lets a
protocol change. Once a stream's headers are out, monit points it at a
small protocol of its own (``monit.web.lean``), and the ``HTTPChannel`` and
``Request`` that read the request head are let go. ``check()`` does the
same on a real socket pair (never handed to the reactor) and asks that the
new protocol, and not the old one, get the bytes and the loss. Without it
each stream keeps its request and channel: the same service, with about
three times the memory for each idle stream.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.interfaces import IProtocol, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from monit._twisted.tcp_buffer import IdleProducer, IdleReactor

WHAT = "a stream taking its TCP connection over from twisted.web's channel"
INSTEAD = "each stream keeps its Request and HTTPChannel, and an idle one takes about three times the memory"


def take_over(connection: tcp.Connection, protocol: IProtocol, producer: IPushProducer) -> None:
    """From now on ``protocol`` gets what ``connection`` reads and its loss; ``producer`` is paused when it is full."""
    connection.unregisterProducer()  # the channel was the transport's producer
    connection.protocol = protocol
    connection.registerProducer(producer, True)


class _Heard(Protocol):
    """A protocol that remembers what reached it."""

    def __init__(self) -> None:
        self.heard: list[bytes] = []
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.heard.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True


def check() -> str | None:
    """Why a protocol cannot take a TCP connection over with the installed Twisted, or None."""
    ours, theirs = socket.socketpair()
    try:
        before, after = _Heard(), _Heard()
        connection = tcp.Connection(ours, before, IdleReactor())  # type: ignore[arg-type]
        connection.connected = True
        connection.registerProducer(IdleProducer(), True)
        take_over(connection, after, IdleProducer())
        theirs.sendall(b"after")
        connection.doRead()
        connection.connectionLost(Failure(connectionDone.value))
        if before.heard or before.lost:
            return "the protocol taken over from still hears the connection"
        if after.heard != [b"after"] or not after.lost:
            return f"the new protocol heard {after.heard!r}, lost: {after.lost}"
        return None
    except (AttributeError, TypeError, ValueError, OSError, RuntimeError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        ours.close()
        theirs.close()
