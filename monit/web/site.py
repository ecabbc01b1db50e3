"""The HTTP site: bounded connections and request heads, and what it needs to close them all.

No endpoint takes a body, so a request that announces one (a length or
chunks) is answered 413 before a byte of it is read. The whole request head
(request line and headers) must arrive within ``head_timeout`` of the
connection or of the previous response: the idle timeout alone resets on
every byte, so a client trickling one byte a second would hold a connection
for ever. An overlong request line gets 414, overlong headers 431, an
HTTP/1.1 request without ``Host`` 400. Connections are capped overall and,
if asked, per client address.

Over TLS the site offers ``h2`` and ``http/1.1`` by ALPN (``h2`` only when the
``h2`` package is installed); a connection that chose ``h2`` is handed to
``monit.web.http2`` once its handshake is done, and keeps its place in the
counts.
"""

from __future__ import annotations

import typing
from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IHandshakeListener, IReactorTime, ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.resource import IResource
from twisted.web.server import Request as ServerRequest
from twisted.web.server import Site
from zope.interface import implementer

from monit import tuning
from monit._twisted import head_counts
from monit._twisted.quiet_logs import QuietHTTPChannel
from monit._twisted.seam import fits
from monit.deadlines import Deadlines
from monit.oneshot import OneShotObserver
from monit.web.errors import error_body

try:
    from monit.web import http2
except ImportError as missing:
    http2 = None  # type: ignore[assignment]
    HTTP2_OFF: str | None = f"the h2 package is not installed ({missing}); pip install 'txmonit[http2]'"
else:
    HTTP2_OFF = None

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def refusal(code: int, message: str) -> bytes:
    """A whole HTTP/1.1 response: a short JSON error, then the connection closes."""
    body = error_body(message)
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    return head % (code, _REASONS[code], len(body)) + body


class MonitRequest(ServerRequest):
    """A request; HTTP/1.1 without ``Host`` is refused before any resource sees it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tuning.preset_request(self)

    def process(self) -> None:
        if self.clientproto == b"HTTP/1.1" and not self.requestHeaders.hasHeader(b"host"):
            self.setResponseCode(400)
            self.setHeader(b"content-type", b"application/json")
            self.setHeader(b"connection", b"close")
            self.write(error_body("an HTTP/1.1 request needs a Host header"))
            self.finish()
            return
        super().process()


@implementer(IHandshakeListener)
class MonitChannel(QuietHTTPChannel):
    """HTTP/1.1 with the bounds in the module docstring; over TLS, HTTP/2 takes over if ALPN chose it.

    Without Twisted's line for every timed-out client: the site counts what it refuses.
    """

    site: MonitSite  # set by the site that builds it
    # Few attributes of its own: a channel's dict is sized by how many there are, and a
    # thousand idle streams are a thousand channels. The head's size and lines are counted
    # by HTTPChannel itself (read through monit._twisted.head_counts).
    _refused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        tuning.preset_connection(self)
        self.site.opened(self)
        self._start_head()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_head()
        super().connectionLost(reason)
        self.site.channel_closed(self)

    def handshakeCompleted(self) -> None:
        """TLS is up, and nothing read yet: if ALPN chose h2, HTTP/2 takes this connection over."""
        if self._refused:
            return
        if http2 is not None and getattr(self.transport, "negotiatedProtocol", None) == b"h2":
            http2.take_over(self, self.site)

    def close_when_done(self) -> None:
        """Shutdown: close once the pending writes are out."""
        if self.transport is not None:
            self.transport.loseConnection()

    def _start_head(self) -> None:
        self.site.start_head_deadline(self)

    def _stop_head(self) -> None:
        self.site.stop_head_deadline(self)

    def head_bytes(self) -> int:
        """The bytes of the request head read so far (its lines, without line ends)."""
        return head_counts.head_bytes(self)

    def headers_read(self) -> int:
        """The headers of the request head read whole so far."""
        return head_counts.headers_read(self)

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if self.head_bytes() + len(line) > self.totalHeadersSize or self.headers_read() >= self.maxHeaders:
            self._refuse(431, "the request head is too large")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self.head_bytes():
            self._refuse(431, "a request header is too long")
        else:
            self._refuse(414, "the request line is too long")

    def allHeadersReceived(self) -> None:
        self._stop_head()
        if self.length != 0:  # a length, or chunks (None): no endpoint takes a body
            self._refuse(413, "monit takes no request bodies")
            self.length = None  # raw mode from here on, and rawDataReceived drops it all
            return
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def requestDone(self, request: Request) -> None:
        super().requestDone(request)
        if not self._refused:
            self._start_head()  # the next request on this connection

    def _refuse(self, code: int, message: str) -> None:
        """Answer with a short JSON error, read nothing more, and close once it is written."""
        if self._refused or self.transport is None:
            return
        self._refused = True
        self._stop_head()
        self.site.refused[code] += 1
        self.transport.write(refusal(code, message))
        self.transport.loseConnection()


class SelfCountingChannel(MonitChannel):
    """MonitChannel for a Twisted whose head counts monit cannot read: it counts for itself.

    It counts as HTTPChannel does: the bytes of each line, and each header
    once the line after it shows it whole (a continuation line is part of it).
    """

    _head_bytes = 0
    _header_lines = 0  # lines that began a header, the last maybe not whole yet

    def head_bytes(self) -> int:
        return self._head_bytes

    def headers_read(self) -> int:
        return max(self._header_lines - 1, 0)

    def lineReceived(self, line: bytes) -> None:
        began_header = self._head_bytes > 0 and line[:1] not in (b"", b" ", b"\t")
        super().lineReceived(line)
        self._head_bytes += len(line)
        self._header_lines += began_header

    def allHeadersReceived(self) -> None:
        self._head_bytes = self._header_lines = 0  # the next line begins the next head
        super().allHeadersReceived()


class _Connection(typing.Protocol):
    """An open connection of the site's: MonitChannel, MonitH2Connection, or a stream's LeanConnection."""

    def __hash__(self) -> int: ...

    def close_when_done(self) -> None: ...


class _Reading(_Connection, typing.Protocol):
    """A connection that reads requests (MonitChannel or MonitH2Connection), refused when a head is too slow."""

    def _refuse(self, code: int, message: str) -> None: ...


def _head_too_slow(channel: _Reading) -> None:
    channel._refuse(408, "the request head took too long")


@implementer(IHandshakeListener)
class _Refuser(Protocol):
    """A connection past a cap: one 503, then closed.

    Over TLS the answer waits for the handshake, which says in which HTTP to
    give it; a handshake that does not end by the head deadline is aborted.
    """

    def __init__(self, message: str, clock: IReactorTime, timeout: float) -> None:
        self._message = message
        self._clock = clock
        self._timeout = timeout
        self._handshake: IDelayedCall | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        if ISSLTransport.providedBy(self.transport):
            self._handshake = self._clock.callLater(self._timeout, self.transport.abortConnection)
        else:
            self._answer(refusal(503, self._message))

    def handshakeCompleted(self) -> None:
        if http2 is not None and getattr(self.transport, "negotiatedProtocol", None) == b"h2":
            self._answer(http2.refusal(self._message))
        else:
            self._answer(refusal(503, self._message))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._handshake is not None and self._handshake.active():
            self._handshake.cancel()

    def _answer(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        self.transport.loseConnection()


class MonitSite(Site):
    """A Site whose connections are capped, and can be counted, closed and waited for.

    Stopping a listening port leaves its connections open; at shutdown monit
    ends its streams, then closes every connection once its last bytes are
    written, and waits (boundedly) for that before NATS goes away.
    """

    protocol = MonitChannel  # type: ignore[assignment]
    requestFactory = MonitRequest
    displayTracebacks = False
    noisy = False

    def __init__(
        self,
        resource: IResource,
        clock: IReactorTime,
        head_timeout: float,
        max_connections: int,
        max_per_address: int = 0,
    ) -> None:
        super().__init__(resource, timeout=head_timeout, reactor=clock)
        if not fits(head_counts):
            self.protocol = SelfCountingChannel
        self.clock = clock
        self.head_timeout = head_timeout
        self._max_connections = max_connections
        self._max_per_address = max_per_address
        self.channels: dict[_Connection, str] = {}  # each open connection's protocol, with its client's address
        self._per_address: Counter[str] = Counter()
        self.refused: Counter[int] = Counter()  # requests answered here, by status code
        self.refused_connections: Counter[str] = Counter()  # connections turned away, by cap
        self._emptied: OneShotObserver[None] | None = None
        # Each connection's while its request head comes, and each HTTP/2 stream's until its request ends.
        self.heads: Deadlines[_Reading] = Deadlines(clock)
        self.sweep = tuning.YoungSweep(clock)  # the channels and requests that streams let go

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override]
        if len(self.channels) >= self._max_connections:
            self.refused_connections["max-connections"] += 1
            return _Refuser("too many connections", self.clock, self.head_timeout)
        host = getattr(addr, "host", "")
        if self._max_per_address and self._per_address[host] >= self._max_per_address:
            self.refused_connections["max-connections-per-ip"] += 1
            return _Refuser("too many connections from this address", self.clock, self.head_timeout)
        channel: Protocol | None = super().buildProtocol(addr)
        return channel

    def acceptableProtocols(self) -> list[bytes]:
        """What TLS offers by ALPN: HTTP/2 first when it can be spoken."""
        return [b"http/1.1"] if http2 is None else [b"h2", b"http/1.1"]

    def log(self, request: Request) -> None:
        """No access log: monit logs streams and refusals itself, without tokens."""

    def start_head_deadline(self, channel: _Reading) -> None:
        """A request head is awaited: it has until the deadline (one the site keeps for every connection)."""
        self.heads.set(channel, self.clock.seconds() + self.head_timeout, _head_too_slow)

    def stop_head_deadline(self, channel: _Reading) -> None:
        self.heads.cancel(channel)

    def opened(self, channel: MonitChannel) -> None:
        peer = channel.transport.getPeer() if channel.transport is not None else None
        address = self.channels[channel] = str(getattr(peer, "host", ""))
        self._per_address[address] += 1

    def replaced(self, old: _Connection, new: _Connection) -> None:
        """The connection has a new protocol (HTTP/2, or a stream's own): the same connection, counted once."""
        self.channels[new] = self.channels.pop(old)

    def channel_closed(self, channel: _Connection) -> None:
        address = self.channels.pop(channel, None)
        if address is not None:
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]
        if not self.channels and self._emptied is not None:
            emptied, self._emptied = self._emptied, None
            emptied.fire(None)

    def close_connections(self, clock: IReactorTime, timeout: float) -> Deferred[None]:
        """Close every connection after its pending writes; fires when all are gone."""
        self.sweep.cancel()
        if not self.channels:
            return succeed(None)
        if self._emptied is None:
            self._emptied = OneShotObserver()
        waiter = self._emptied.when_fired()
        for channel in tuple(self.channels):
            channel.close_when_done()
        waiter.addTimeout(timeout, clock, onTimeoutCancel=lambda *_: None)
        return waiter
