"""Serving on a free loopback port: listening at once, and the port's number and URL."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.web.http import Request as HTTPRequest
from twisted.web.server import Site

from deferreds import result_of


def listen(factory: IProtocolFactory) -> IListeningPort:
    """A free loopback port that listens for ``factory`` (a TCP endpoint listens before it returns)."""
    port: IListeningPort = result_of(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory))
    return port


def port_number(port: IListeningPort) -> int:
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    return address.port


def base_url(port: IListeningPort, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{port_number(port)}"


class QuietSite(Site):
    """A Site that writes no access log: the test's servers are not monit."""

    def log(self, request: HTTPRequest) -> None:
        pass


async def stop_listening(port: IListeningPort) -> None:
    """Stop the port, waiting when it says how long that takes (the interface lets it say nothing)."""
    stopped = port.stopListening()
    if stopped is not None:
        await stopped
