"""The HTTP site: keeps track of its connections so a shutdown can close them all."""
from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.resource import IResource
from twisted.web.server import Site

from monit.oneshot import OneShotObserver


class _TrackedChannel(HTTPChannel):
    """HTTP/1.1 only (no HTTP/2 negotiation layer); tells its site when it opens and closes."""

    site: MonitSite  # set by the site that builds it

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.site.channel_closed(self)


class MonitSite(Site):
    """A Site whose open connections can be counted, closed and waited for.

    Stopping a listening port leaves its connections open; at shutdown monit
    ends its streams, then closes every connection once its last bytes are
    written, and waits (boundedly) for that before NATS goes away.
    """

    protocol = _TrackedChannel  # type: ignore[assignment]
    displayTracebacks = False
    noisy = False

    def __init__(self, resource: IResource, clock: IReactorTime, idle_timeout: float) -> None:
        super().__init__(resource, timeout=idle_timeout, reactor=clock)
        self.channels: set[HTTPChannel] = set()
        self._emptied: OneShotObserver[None] | None = None

    def log(self, request: Request) -> None:
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
            if channel.transport is not None:
                channel.transport.loseConnection()
        waiter.addTimeout(timeout, clock, onTimeoutCancel=lambda *_: None)
        return waiter
