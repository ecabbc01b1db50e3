"""``ClientService`` surviving a connection that closes while it is being prepared.

ClientService's state machine (Twisted 26.10 and before) has no transition
for a connection lost while ``prepareConnection`` is pending, or after it
failed: it raises automat's ``NoTransition`` out of ``connectionLost``. By
then the protocol inside has been told, and the failed handshake counted as
a failed attempt, so a wrapper between the transport and ClientService's
protocol swallows just that. ``check()`` runs a real ClientService through
such a loss and asks that nothing escape and that it try again. There is no
public way around it: if it does not fit, monit refuses to start.
"""

from __future__ import annotations

from automat import NoTransition
from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogPublisher
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

WHAT = "ClientService's handling of a connection lost while it is prepared"
INSTEAD = None


class _SurviveEarlyDisconnect(ProtocolWrapper):
    """Keep ClientService from raising out of connectionLost."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        except NoTransition:
            pass


class SurviveEarlyDisconnectFactory(WrappingFactory):
    """Puts the wrapper between the transport and ClientService's protocol."""

    protocol = _SurviveEarlyDisconnect
    noisy = False


@implementer(IStreamClientEndpoint)
class _Endpoint:
    """Connects at once to a string transport, through the wrapper."""

    def __init__(self) -> None:
        self.connected: list[IProtocol] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        wrapper = SurviveEarlyDisconnectFactory(factory).buildProtocol(None)
        assert isinstance(wrapper, ProtocolWrapper)
        wrapper.makeConnection(StringTransport())
        self.connected.append(wrapper)
        return succeed(wrapper.wrappedProtocol)  # ClientService's own protocol, as monit's endpoint gives


class _Quiet(ClientService):
    _log = Logger(observer=LogPublisher())


def check() -> str | None:
    """Why a ClientService does not survive an early loss through the wrapper, or None."""
    clock = Clock()
    endpoint = _Endpoint()
    preparing: Deferred[None] = Deferred()
    prepared = iter((preparing, succeed(None)))  # the first is lost while pending; the next is made
    service = _Quiet(
        endpoint,
        Factory.forProtocol(Protocol),
        retryPolicy=lambda attempt: 1.0,
        clock=clock,
        prepareConnection=lambda protocol: next(prepared),
    )
    service.startService()
    try:
        endpoint.connected[0].connectionLost(Failure(ConnectionDone()))
        preparing.errback(ConnectionDone())
        clock.advance(1)
    except Exception as error:
        return f"a connection lost while prepared raised {type(error).__name__}: {error}"
    finally:
        service.stopService()
    if len(endpoint.connected) != 2:
        return f"after a connection lost while prepared, {len(endpoint.connected)} attempts instead of 2"
    return None
