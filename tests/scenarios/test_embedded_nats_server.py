"""EmbeddedNATS: a real nats-server child on the real reactor, and a child that dies."""

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel
from twisted.protocols.basic import LineOnlyReceiver

from monit.embedded import EmbeddedNATS

from logged import messages
from processes import executable


class FirstLine(LineOnlyReceiver):
    """Fires `line` with the first line the server sends."""

    delimiter = b"\r\n"

    def __init__(self) -> None:
        self.line: Deferred[bytes] = Deferred()

    def lineReceived(self, line: bytes) -> None:
        if not self.line.called:
            self.line.callback(line)
        assert self.transport is not None
        self.transport.loseConnection()


def real_reactor():
    from twisted.internet import reactor

    return reactor


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_serves_nats_until_stopped(events: EventLoggingObserver) -> None:
    reactor = real_reactor()
    nats = EmbeddedNATS(reactor)
    assert nats.port > 0 and nats.url == f"nats://127.0.0.1:{nats.port}"
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", nats.port, timeout=5)
    nats.startService()
    try:
        await nats.when_ready()
        client = await connectProtocol(endpoint, FirstLine())
        line = await client.line.addTimeout(10, reactor)
        assert line.startswith(b"INFO ")
    finally:
        await nats.stopService()
    assert not nats.running
    with pytest.raises(error.ConnectionRefusedError):
        await connectProtocol(endpoint, FirstLine())
    assert any(m.startswith("nats-server: ") for m in messages(events))
    assert messages(events, LogLevel.error) == []


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_child_that_dies_is_an_error(tmp_path: Path, events: EventLoggingObserver) -> None:
    binary = executable(tmp_path / "nats-server", "#!/bin/sh\necho '[1] [FTL] cannot listen' >&2\nexit 3\n")
    nats = EmbeddedNATS(real_reactor(), binary=binary)
    nats.startService()
    with pytest.raises(RuntimeError, match="not running"):
        await nats.when_ready()
    assert "nats-server: [1] [FTL] cannot listen" in messages(events, LogLevel.critical)
    [exited] = messages(events, LogLevel.error)
    assert "exited unexpectedly" in exited and "3" in exited
    await nats.stopService()
