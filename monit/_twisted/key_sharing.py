"""The attributes ``HTTPChannel`` and its TCP transport set only later, set at once instead.

CPython keeps one table of attribute names for all the instances of a class,
and stops adding names to it once a few dozen instances exist; a name first
set after that gives that instance a whole dict of its own. Connections are
made by the thousand before any has a request, so each would have two such
dicts (1.5 KiB an idle stream), unless every connection sets these names at
once, to the values they have. Most are Twisted's private fields, one
name-mangled; ``monit.tuning`` applies them through ``preset``.

``check()`` presets a real channel on a real loopback TCP connection (never
handed to the reactor), runs a streamed request through it, and checks that
the answer is whole and that Twisted set no name the presets missed. Without
them connections are not preset: the same service, with more memory for
each idle connection.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.web.http import HTTPChannel, Request

from monit._twisted.tcp_buffer import IdleProducer, IdleReactor

WHAT = "the attributes HTTPChannel sets later"
INSTEAD = "connections are not preset, and each idle one takes more memory"

_CHANNEL_SETS_LATER = (
    "_busyReceiving",
    "_buffer",
    "_receivedHeaderSize",
    "_HTTPChannel__first_line",
    "_HTTPChannel__header",
    "_receivedHeaderCount",
    "persistent",
    "length",
    "_savedTimeOut",
    "line_mode",
    "_requestProducer",
    "_requestProducerStreaming",
    "_command",
    "_path",
    "_version",  # the request line, held while its head is read: None till then
)
_TRANSPORT_SETS_LATER = ("producer", "streamingProducer", "dataBuffer", "offset")


def preset(channel: HTTPChannel) -> None:
    """Give a new channel, and its TCP transport, every name they would set later, as they are."""
    _set_early(channel, _CHANNEL_SETS_LATER)
    transport: object = channel.transport  # typed as an interface, which tcp.Connection does not name
    if isinstance(transport, tcp.Connection):  # not over TLS: its transport is TLS's protocol
        _set_early(transport, _TRANSPORT_SETS_LATER)


def _set_early(instance: object, names: tuple[str, ...]) -> None:
    """Give the instance its own copy of each name now, with the value it already has (or None)."""
    for name in names:
        setattr(instance, name, getattr(instance, name, None))


class _StreamedRequest(Request):
    """Answers as a stream does: a streaming producer, chunks, then the end."""

    def process(self) -> None:
        self.registerProducer(IdleProducer(), True)
        self.write(b"ok")
        self.unregisterProducer()
        self.finish()


class _Connection(tcp.Connection):
    """A TCP transport that knows its addresses, as a server's does."""

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", *self.socket.getpeername())

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", *self.socket.getsockname())


def check() -> str | None:
    """Why presetting does not fit the installed Twisted, or None."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        with socket.create_connection(listening.getsockname()) as client:
            ours, _ = listening.accept()
            with ours:
                try:
                    return _try(ours, client)
                except (AttributeError, TypeError, ValueError, OSError) as error:
                    return f"{type(error).__name__}: {error}"


def _try(ours: socket.socket, client: socket.socket) -> str | None:
    channel = HTTPChannel()
    channel.requestFactory = _StreamedRequest
    channel.timeOut = None
    transport = _Connection(ours, channel, IdleReactor())  # type: ignore[arg-type]
    transport.connected = True
    channel.makeConnection(transport)
    preset(channel)
    names = set(vars(channel)), set(vars(transport))
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    transport.doWrite()
    client.settimeout(1)
    answer = client.recv(4096)
    if not answer.startswith(b"HTTP/1.1 200 ") or not answer.endswith(b"2\r\nok\r\n0\r\n\r\n"):
        return f"a preset channel answered {answer!r}"
    later = sorted((set(vars(channel)) - names[0]) | (set(vars(transport)) - names[1]))
    if later:
        return f"it sets {', '.join(later)} later too"
    return None
