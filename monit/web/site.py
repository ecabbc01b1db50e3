"""The HTTP site: keeps track of its connections so a shutdown can close them all."""
from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Site

from monit.oneshot import OneShotObserver


class _TrackedChannel(HTTPChannel):
    """HTTP/1.1 only (no HTTP/2 negotiation layer), and tells its site when it closes."""

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.site.channel_closed(self)


class MonitSite(Site):
    """A Site whose open connections can be counted, closed and waited for.

    Stopping a listening port leaves its connections open; at shutdown monit
    ends its streams, then closes every connection once its last bytes are
    written, and waits (boundedly) for that before NATS goes away.
    """

    protocol = _TrackedChannel
    displayTracebacks = False
    noisy = False

    def __init__(self, resource: IResource, clock: IReactorTime, idle_timeout: float = 60.0) -> None:
        super().__init__(resource, timeout=idle_timeout, reactor=clock)
        self.channels: set[HTTPChannel] = set()
        self._emptied: OneShotObserver[None] | None = None

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        self.channels.add(channel)
        return channel

    def log(self, request) -> None:
        """No access log: monit logs streams and refusals itself, without tokens."""

    def channel_closed(self, channel: HTTPChannel) -> None:
        self.channels.discard(channel)
        if not self.channels and self._emptied is not None:
            emptied, self._emptied = self._emptied, None
            emptied.fire(None)

    def close_connections(self, clock: IReactorTime, timeout: float) -> Deferred[None]:
        """Close every connection after its pending writes; fires when all are gone."""
        if not self.channels:
            return succeed(None)
        if self._emptied is None:
            self._emptied = OneShotObserver()
        waiter = self._emptied.when_fired()
        for channel in tuple(self.channels):
            channel.transport.loseConnection()
        waiter.addTimeout(timeout, clock, onTimeoutCancel=lambda *_: None)
        return waiter
