"""One SSE response: unsubscribing on disconnect, and slow readers judged through the public API.

These run on ``Request.write`` (a DummyRequest is not a TCP connection); the
fast path has its own tests over a real socket in test_web_fastpath.py.
"""
import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from monit.inbox import InboxRegistry
from monit.settings import Settings
from monit.web.stream import EventStream, StreamSet


class StreamingRequest(DummyRequest):
    """DummyRequest drives producers as pull producers; a stream is a push producer."""

    def __init__(self):
        super().__init__([b"events"])
        self.transport = StringTransport()

    def write(self, data: bytes) -> None:
        super().write(data)
        self.transport.write(data)

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None




@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def registry(clock):
    return InboxRegistry(clock, Settings())


def test_a_client_that_goes_away_is_unsubscribed_at_once(registry, clock):
    """The request's notifyFinish fails when the connection is lost."""
    streams = StreamSet(clock, 15, 3000)
    request = StreamingRequest()
    stream = EventStream(request, registry, streams, "alice", clock, max_pending=1000)
    stream.run("job")
    assert registry.get("job").subscribers
    request.processingFailed(Failure(ConnectionLost()))
    assert not registry.get("job").subscribers
    assert len(streams) == 0
    registry.deliver("job", '"after"')
    clock.advance(0)
    assert b"after" not in b"".join(request.written)


def test_a_reader_that_stops_reading_is_dropped_past_max_pending(registry, clock):
    streams = StreamSet(clock, 15, 3000)
    request = StreamingRequest()
    stream = EventStream(request, registry, streams, "slow", clock, max_pending=1000)
    stream.run("job")
    stream.pauseProducing()
    for n in range(8):  # 8 frames of about 115 bytes: under the limit
        registry.deliver("job", '"' + "x" * 100 + '"')
        clock.advance(0)
    assert not request.transport.disconnecting
    registry.deliver("job", '"' + "x" * 100 + '"')
    clock.advance(0)
    assert request.transport.disconnecting, "aborted"
    assert streams.dropped == 1
    assert not registry.get("job").subscribers


def test_a_reader_that_catches_up_is_kept(registry, clock):
    streams = StreamSet(clock, 15, 3000)
    request = StreamingRequest()
    stream = EventStream(request, registry, streams, "ok", clock, max_pending=1000)
    stream.run("job")
    for n in range(50):
        stream.pauseProducing()
        registry.deliver("job", '"' + "x" * 100 + '"')
        clock.advance(0)
        request.transport.clear()  # the socket took it all
        stream.resumeProducing()
    assert streams.dropped == 0 and registry.get("job").subscribers
