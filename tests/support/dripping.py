"""An HTTP server on loopback whose every answer is a body that never ends: a header, then a byte every 50 ms."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import LoopingCall


class Drip(Protocol):
    """Answers any request with a JSON body that never ends, counting the connections open."""

    def connectionMade(self) -> None:
        self.factory.open += 1
        self.factory.made += 1
        self.dripping: LoopingCall | None = None

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        if self.dripping is None and b"\r\n\r\n" in data:
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            )
            self.dripping = LoopingCall(self.transport.write, b" ")
            self.dripping.start(0.05)

    def connectionLost(self, reason: object = None) -> None:
        self.factory.open -= 1
        if self.dripping is not None and self.dripping.running:
            self.dripping.stop()


class DripFactory(ServerFactory):
    protocol = Drip

    def __init__(self) -> None:
        self.open = 0
        self.made = 0


@pytest.fixture
def drip() -> Iterator[tuple[DripFactory, str]]:
    """The server's counts, and a URL on it."""
    factory = DripFactory()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    yield factory, f"http://127.0.0.1:{address.port}/certs"
    pytest_twisted.blockon(port.stopListening())
