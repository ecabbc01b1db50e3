"""monit's HTTP/2 connection, driven frame by frame by an h2 client on a fake clock and transport."""
from __future__ import annotations

import json

import h2.config
import h2.connection
import h2.events
import h2.settings
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from monit.web import _fastpath
from monit.web.http2 import MAX_STREAMS, MonitH2Connection
from monit.web.site import MonitSite

WINDOW = 65535  # an h2 client's initial flow-control window, for its stream and its connection


class Held(Resource):
    """Every request is kept open, for the test to write to."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list = []

    def render(self, request):
        self.requests.append(request)
        return NOT_DONE_YET


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class Pair:
    """monit's HTTP/2 connection and an h2 client, joined by hand."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.resource = Held()
        self.site = MonitSite(self.resource, self.clock, head_timeout=2, max_connections=10, keepalive=1)
        self.server = MonitH2Connection(self.clock)
        self.server.site = self.site
        self.server.requestFactory = self.site.requestFactory
        self.server.timeOut = self.site.idle_timeout
        self.server.callLater = self.clock.callLater
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding=None))
        self.client.initiate_connection()
        self.events: list = []
        self.exchange()

    def exchange(self) -> None:
        """Run the server's send loop, and pass bytes both ways, until all is quiet."""
        for _ in range(10_000):
            self.clock.advance(0)
            sent = self.client.data_to_send()
            if sent:
                self.server.dataReceived(sent)
            answered = self.transport.value()
            self.transport.clear()
            if answered:
                self.events.extend(self.client.receive_data(answered))
            due = any(call.getTime() <= self.clock.seconds() for call in self.clock.getDelayedCalls())
            if not (sent or answered or due):
                return
        raise AssertionError("the connection never went quiet")

    def request(self, method: bytes = b"GET", path: bytes = b"/x", extra=(), end_stream: bool = True) -> int:
        stream_id = self.client.get_next_available_stream_id()
        headers = [(b":method", method), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", path)]
        self.client.send_headers(stream_id, headers + list(extra), end_stream=end_stream)
        self.exchange()
        return stream_id

    def body(self, stream_id: int) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id)


def test_the_connection_announces_its_bound_on_streams():
    pair = Pair()
    settings = [e for e in pair.events if isinstance(e, h2.events.RemoteSettingsChanged)]
    announced = {code: change.new_value for e in settings for code, change in e.changed_settings.items()}
    assert announced[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == MAX_STREAMS == 100


def test_unsent_is_what_waits_in_the_streams_queue_past_its_window():
    pair = Pair()
    pair.request()
    request = pair.resource.requests[0]
    request.write(b"a")  # the headers go out with the first write
    pair.exchange()
    writer = _fastpath.writer_for(request, fast=True)
    assert isinstance(writer, _fastpath.StreamQueueWriter)
    request.write(b"x" * (WINDOW + 5000))
    pair.exchange()
    assert len(pair.body(1)) == WINDOW, "the client's window, and not a byte more"
    assert writer.unsent() == 5001
    pair.client.acknowledge_received_data(WINDOW, 1)
    pair.exchange()
    assert writer.unsent() == 0 and len(pair.body(1)) == WINDOW + 5001
    assert isinstance(_fastpath.writer_for(request, fast=False), _fastpath.RequestWriter)


def test_a_full_socket_pauses_every_streams_producer_and_a_drained_one_resumes_them():
    pair = Pair()
    producers = []
    for _ in range(2):
        pair.request()
        producers.append(Producer())
        pair.resource.requests[-1].registerProducer(producers[-1], True)
    pair.server.pauseProducing()  # what the transport does when its buffer is full
    assert [p.paused for p in producers] == [True, True]
    pair.server.resumeProducing()
    assert [p.paused for p in producers] == [False, False]


def test_a_request_that_announces_a_body_is_refused_on_its_stream_alone():
    pair = Pair()
    refused = pair.client.get_next_available_stream_id()
    head = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/x")]
    pair.client.send_headers(refused, head + [(b"content-length", b"10")])
    pair.client.send_data(refused, b"0123456789", end_stream=True)  # in the same read as the headers
    pair.exchange()
    response = next(e for e in pair.events if isinstance(e, h2.events.ResponseReceived))
    assert dict(response.headers)[b":status"] == b"413"
    assert json.loads(pair.body(refused)) == {"error": "monit takes no request bodies"}
    assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == refused for e in pair.events)
    assert pair.resource.requests == [] and pair.site.refused[413] == 1
    pair.request()
    assert len(pair.resource.requests) == 1, "the connection goes on"


def test_with_no_stream_open_a_request_must_come_by_the_head_deadline():
    pair = Pair()
    pair.request()
    pair.resource.requests[0].finish()
    pair.exchange()
    pair.clock.advance(1.9)
    assert not pair.transport.disconnecting
    pair.clock.advance(0.2)
    pair.events.extend(pair.client.receive_data(pair.transport.value()))
    goaway = next(e for e in pair.events if isinstance(e, h2.events.ConnectionTerminated))
    assert goaway.additional_data == b"the request head took too long"
    assert pair.transport.disconnecting and pair.site.refused[408] == 1


def test_an_open_stream_keeps_the_connection_past_the_head_deadline():
    pair = Pair()
    pair.request()
    pair.clock.advance(3)  # longer than the head deadline, shorter than the idle timeout (4 keep-alives)
    assert not pair.transport.disconnecting


def test_shutdown_says_goaway_once_the_last_stream_has_ended():
    pair = Pair()
    pair.request()
    pair.server.close_when_done()
    pair.exchange()
    assert not pair.transport.disconnecting
    pair.resource.requests[0].write(b"retry: 1500\n\n")
    pair.resource.requests[0].finish()
    pair.exchange()
    assert pair.body(1) == b"retry: 1500\n\n"
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in pair.events)
    assert pair.transport.disconnecting
