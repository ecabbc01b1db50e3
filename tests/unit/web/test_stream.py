"""One SSE response: unsubscribing on disconnect, and slow readers judged through the public API.

These run on ``Request.write`` (a DummyRequest is not a TCP connection); the
fast path has its own tests over a real socket in tests/scenarios/test_fastpath_over_tcp.py.
"""

import pytest
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from monit.registry import InboxRegistry
from monit.service import registry_options
from monit.settings import Settings
from monit.web.stream import EventStream, OneJob, StreamSet

from streamingrequest import StreamingRequest, event


@pytest.fixture
def registry(clock):
    return InboxRegistry(clock, **registry_options(Settings()))


def test_a_client_that_goes_away_is_unsubscribed_at_once(registry, clock):
    """The request's notifyFinish fails when the connection is lost."""
    streams = StreamSet(clock, 15, 3000)
    request = StreamingRequest()
    stream = EventStream(request, OneJob(registry, "job"), streams, "alice", clock, max_pending=1000)
    stream.run()
    assert registry.get("job").subscribers
    request.processingFailed(Failure(ConnectionLost()))
    assert not registry.get("job").subscribers
    assert len(streams) == 0
    registry.publish("job", '"after"')
    clock.advance(0)
    assert b"after" not in b"".join(request.written)


def test_past_max_pending_a_reader_falls_behind_then_catches_up_from_the_history(registry, clock):
    streams = StreamSet(clock, 15, 3000)
    request = StreamingRequest(capacity=200)
    stream = EventStream(request, OneJob(registry, "job"), streams, "slow", clock, max_pending=1000)
    stream.run()
    for n in range(30):  # frames of about 130 bytes: past 1,000 unsent bytes it writes nothing more
        registry.publish("job", event(n))
        clock.advance(0)
    assert 1000 < len(request.transport.value()) < 1400
    request.drain()  # the socket empties: what it missed comes from the history, at its pace
    while request.paused:
        request.drain()
    assert request.ids() == list(range(1, 31))
    registry.publish("job", event(30))
    clock.advance(0)
    assert request.ids()[-1] == 31 and streams.dropped == 0


def test_a_reader_that_fell_out_of_the_history_is_told_of_the_gap(clock):
    registry = InboxRegistry(clock, **registry_options(Settings(history=5)))
    streams = StreamSet(clock, 15, 3000)
    request = StreamingRequest(capacity=200)
    stream = EventStream(request, OneJob(registry, "job"), streams, "slow", clock, max_pending=300)
    stream.run()
    for n in range(30):
        registry.publish("job", event(n))
        clock.advance(0)
    seen = request.ids()
    while request.paused:
        request.drain()
    assert b'event: gap\ndata: {"from":%d,"to":25}' % (seen[-1] + 1) in b"".join(request.written)
    assert request.ids() == seen + list(range(26, 31))


def test_a_long_history_is_replayed_at_the_pace_of_the_socket(registry, clock):
    for n in range(500):  # about 65 KB of history, against 1,000 bytes of max_pending
        registry.publish("job", event(n))
    clock.advance(0)
    streams = StreamSet(clock, 15, 3000)
    request = StreamingRequest(capacity=4096)
    EventStream(request, OneJob(registry, "job"), streams, "late", clock, max_pending=1000).run()
    while request.paused:
        request.drain()
    assert request.ids() == list(range(1, 501)) and streams.dropped == 0


def test_a_reader_that_takes_nothing_for_a_heartbeat_is_dropped(registry, clock):
    streams = StreamSet(clock, 15, 3000)
    streams.start()
    request = StreamingRequest(capacity=200)
    stream = EventStream(request, OneJob(registry, "job"), streams, "stalled", clock, max_pending=1000)
    stream.run()
    for n in range(30):
        registry.publish("job", event(n))
        clock.advance(0)
    clock.advance(15)  # the first heartbeat notes what is unsent
    assert not request.transport.disconnecting
    clock.advance(15)  # nothing taken since: dropped
    assert request.transport.disconnecting and streams.dropped == 1
    assert not registry.get("job").subscribers
    streams.shutdown()


def test_a_reader_that_catches_up_is_kept(registry, clock):
    streams = StreamSet(clock, 15, 3000)
    request = StreamingRequest(capacity=200)
    stream = EventStream(request, OneJob(registry, "job"), streams, "ok", clock, max_pending=1000)
    stream.run()
    for n in range(50):
        registry.publish("job", event(n))
        clock.advance(0)
        request.drain()  # the socket took it all
    assert streams.dropped == 0 and registry.get("job").subscribers
    assert request.ids() == list(range(1, 51))
