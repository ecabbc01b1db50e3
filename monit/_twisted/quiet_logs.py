"""``HTTPChannel`` and ``ClientService`` without their line per timed-out client or retry.

Both log through a ``_log`` class attribute; a subclass whose ``_log`` has an
observer of its own (a publisher with none) keeps those lines out of the
global log. monit says what matters itself: the site counts what it refuses,
and the NATS client says why it cannot connect, once per reason. ``check()``
makes each class log such a line, and hears it through ``_log``. Without it
Twisted's lines show: noisier, nothing else.
"""

from __future__ import annotations

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, Logger, LogPublisher
from twisted.web.http import HTTPChannel
from zope.interface import implementer

WHAT = "the loggers of HTTPChannel and ClientService"
INSTEAD = "Twisted logs each timed-out HTTP client and each NATS retry"


class QuietHTTPChannel(HTTPChannel):
    """HTTPChannel without its "Timing out client" line for every idle connection."""

    _log = Logger(observer=LogPublisher())


class QuietClientService(ClientService):
    """ClientService without its line per retry."""

    _log = Logger(observer=LogPublisher())


def check() -> str | None:
    """Why the two classes' lines do not go through ``_log``, or None."""
    return _channel_heard() or _service_heard()


@implementer(ILogObserver)
class _Ear:
    """What a logger said."""

    def __init__(self) -> None:
        self.heard: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.heard.append(event)


def _channel_heard() -> str | None:
    ear = _Ear()

    class Heard(QuietHTTPChannel):
        _log = Logger(observer=ear)
        abortTimeout = None  # type: ignore[assignment]  # no abort timer on the global reactor

    channel = Heard()
    channel.timeOut = None
    channel.makeConnection(StringTransport())
    channel.timeoutConnection()
    channel.connectionLost(connectionDone)
    return None if ear.heard else "HTTPChannel timed a client out without a line through _log"


@implementer(IStreamClientEndpoint)
class _Unreachable:
    """An endpoint no connection is ever made to."""

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return fail(ConnectionRefusedError("never"))


def _service_heard() -> str | None:
    ear = _Ear()

    class Heard(QuietClientService):
        _log = Logger(observer=ear)

    clock = Clock()
    service = Heard(_Unreachable(), Factory.forProtocol(Protocol), retryPolicy=lambda attempt: 1.0, clock=clock)
    service.startService()
    service.stopService()
    return None if ear.heard else "ClientService retried without a line through _log"
