"""monit's HTTP/2 connection, driven frame by frame by an h2 client on a fake clock and transport."""

from __future__ import annotations

import gc
import json
import struct
import weakref
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from monit.registry import InboxRegistry
from monit.service import registry_options
from monit.settings import Settings
from monit.web import _fastpath
from monit.web.http2 import (
    CLOSE_AFTER_GOAWAY,
    CONTROL_BACKLOG,
    GOAWAY_AFTER_ENDS,
    MAX_STREAMS,
    RESETS_AT_ONCE,
    MonitH2Connection,
)
from monit.web.site import MonitSite
from monit.web.stream import EventStream, OneJob, StreamSet

WINDOW = 65535  # an h2 client's initial flow-control window, for its stream and its connection
HEAD = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/x")]
ErrorCodes = h2.errors.ErrorCodes


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

    def gone(self, reason: object) -> None:
        pass


class Told(EventStream):
    """An SSE stream that counts how often it is told its client went away."""

    __slots__ = ("told",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.told = 0

    def gone(self, reason: Failure) -> None:
        self.told += 1
        super().gone(reason)


class Streaming(Resource):
    """Every request is an SSE stream of the job ``job``, as monit's routes start one; the requests are held weakly."""

    isLeaf = True

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.registry = InboxRegistry(clock, **registry_options(Settings(grace=1)))
        self.streams = StreamSet(clock, 15, 3000)
        self.requests: list[weakref.ref] = []
        self.started: list[Told] = []

    def render(self, request):
        self.requests.append(weakref.ref(request))
        stream = Told(request, OneJob(self.registry, "job"), self.streams, "alice", self.clock, max_pending=10**6)
        stream.run()
        self.started.append(stream)
        return NOT_DONE_YET


class Pair:
    """monit's HTTP/2 connection and an h2 client, joined by hand."""

    def __init__(self, resource: Resource | None = None, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.resource = resource or Held()
        self.site = MonitSite(self.resource, self.clock, head_timeout=2, max_connections=10)
        self.server = MonitH2Connection(self.site)
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)
        config = h2.config.H2Configuration(
            header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        self.client = h2.connection.H2Connection(config)
        self.client.initiate_connection()
        self.events: list = []
        self.writes = 0  # writes to the transport
        self.exchange()

    def exchange(self) -> None:
        """Run the server's flushes, and pass bytes both ways, until all is quiet."""
        for _ in range(10_000):
            self.clock.advance(0)
            sent = self.client.data_to_send()
            if sent:
                self.server.dataReceived(sent)
            self.deliver()
            due = any(call.getTime() <= self.clock.seconds() for call in self.clock.getDelayedCalls())
            if not (sent or self.transport.value() or due):
                return
        raise AssertionError("the connection never went quiet")

    def deliver(self) -> None:
        """What the server wrote, to the client."""
        answered = self.transport.value()
        self.transport.clear()
        if answered:
            self.events.extend(self.client.receive_data(answered))

    def request(self, headers=HEAD, end_stream: bool = True) -> int:
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, list(headers), end_stream=end_stream)
        self.exchange()
        return stream_id

    def body(self, stream_id: int) -> bytes:
        return b"".join(
            e.data for e in self.events if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id
        )

    def of(self, kind: type[Any], stream_id: int | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and (stream_id is None or e.stream_id == stream_id)]

    def status(self, stream_id: int) -> int:
        return int(dict(self.of(h2.events.ResponseReceived, stream_id)[0].headers)[b":status"])

    def reset_code(self, stream_id: int) -> ErrorCodes:
        code: ErrorCodes = self.of(h2.events.StreamReset, stream_id)[0].error_code
        return code

    def goaway(self) -> h2.events.ConnectionTerminated:
        terminated: h2.events.ConnectionTerminated = self.of(h2.events.ConnectionTerminated)[0]
        return terminated


def test_the_connection_announces_its_bound_on_streams():
    pair = Pair()
    settings = pair.of(h2.events.RemoteSettingsChanged)
    announced = {code: change.new_value for e in settings for code, change in e.changed_settings.items()}
    assert announced[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == MAX_STREAMS == 100


def test_a_stream_past_the_bound_is_refused_alone():
    pair = Pair()
    # A client that ignores the bound the server announced (h2 would keep to it).
    pair.client.remote_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000}
    )
    ids = [pair.request() for _ in range(MAX_STREAMS + 1)]
    assert len(pair.resource.requests) == MAX_STREAMS
    assert pair.reset_code(ids[-1]) == ErrorCodes.REFUSED_STREAM
    assert not pair.of(h2.events.ConnectionTerminated) and not pair.transport.disconnecting
    pair.resource.requests[0].write(b"still here")
    pair.exchange()
    assert pair.body(ids[0]) == b"still here"


@pytest.mark.parametrize(
    "head",
    [
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/x"), (b"X-Upper", b"1")],
        HEAD + [(b"connection", b"keep-alive")],
        HEAD + [(b"te", b"gzip")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost")],
        [(b":method", b"GET"), (b"accept", b"*/*"), (b":scheme", b"https"), (b":path", b"/x")],
        HEAD + [(b":path", b"/y")],
        HEAD + [(b"x-bad", b"a\nb")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"x")],
    ],
    ids=["uppercase", "connection", "te", "no-path", "pseudo-after-regular", "two-paths", "newline", "relative-path"],
)
def test_a_malformed_request_head_resets_its_stream_alone(head):
    pair = Pair()
    bad = pair.request(head)
    assert pair.reset_code(bad) == ErrorCodes.PROTOCOL_ERROR
    good = pair.request()
    assert pair.resource.requests and not pair.of(h2.events.ConnectionTerminated)
    pair.resource.requests[0].finish()
    pair.exchange()
    assert pair.status(good) == 200


def test_connect_gets_405_on_its_stream():
    pair = Pair()
    stream = pair.request([(b":method", b"CONNECT"), (b":authority", b"localhost:443")], end_stream=False)
    assert pair.status(stream) == 405
    assert json.loads(pair.body(stream)) == {"error": "monit answers GET requests, not CONNECT"}
    assert pair.resource.requests == [] and pair.site.refused[405] == 1
    pair.request()
    assert len(pair.resource.requests) == 1, "the connection goes on"


def test_a_request_that_announces_a_body_is_refused_on_its_stream_alone():
    pair = Pair()
    refused = pair.client.get_next_available_stream_id()
    head = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/x")]
    pair.client.send_headers(refused, head + [(b"content-length", b"10")])
    pair.client.send_data(refused, b"0123456789", end_stream=True)  # in the same read as the headers
    pair.exchange()
    assert pair.status(refused) == 413
    assert json.loads(pair.body(refused)) == {"error": "monit takes no request bodies"}
    assert pair.of(h2.events.StreamEnded, refused)
    assert pair.resource.requests == [] and pair.site.refused[413] == 1
    pair.request()
    assert len(pair.resource.requests) == 1, "the connection goes on"


def test_a_request_that_never_ends_is_reset_and_a_connection_with_no_answer_closed_at_the_head_deadline():
    pair = Pair()
    half_open = pair.request(HEAD + [(b"content-length", b"0")], end_stream=False)
    pair.clock.advance(1.9)
    pair.exchange()
    assert not pair.of(h2.events.StreamReset) and not pair.transport.disconnecting
    pair.clock.advance(0.2)
    pair.exchange()
    assert pair.reset_code(half_open) == ErrorCodes.CANCEL
    assert pair.goaway().additional_data == b"the request head took too long"
    assert pair.transport.disconnecting and pair.site.refused[408] == 2  # the stream, then the connection


def test_a_connection_with_an_answered_stream_outlives_a_half_open_one_beside_it():
    pair = Pair()
    pair.request()
    half_open = pair.request(HEAD + [(b"content-length", b"0")], end_stream=False)
    pair.clock.advance(3)
    pair.exchange()
    assert pair.reset_code(half_open) == ErrorCodes.CANCEL
    assert not pair.of(h2.events.ConnectionTerminated) and not pair.transport.disconnecting
    pair.resource.requests[0].write(b"x")
    pair.exchange()
    assert pair.body(1) == b"x"


def test_with_no_stream_open_a_request_must_come_by_the_head_deadline():
    pair = Pair()
    pair.request()
    pair.resource.requests[0].finish()
    pair.exchange()
    pair.clock.advance(1.9)
    assert not pair.transport.disconnecting
    pair.clock.advance(0.2)
    pair.deliver()
    assert pair.goaway().additional_data == b"the request head took too long"
    assert pair.transport.disconnecting and pair.site.refused[408] == 1


def test_unsent_is_what_waits_past_the_streams_window():
    pair = Pair()
    pair.request()
    request = pair.resource.requests[0]
    assert isinstance(_fastpath.response_for(request, Producer(), _fastpath.Paths(fast=False)), _fastpath.RequestWriter)
    request.write(b"a")  # the headers go out with the first write
    pair.exchange()
    writer = _fastpath.response_for(request, Producer(), _fastpath.Paths(fast=True))
    assert isinstance(writer, _fastpath.StreamResponse)
    writer.send(b"x" * (WINDOW + 5000))
    pair.exchange()
    assert len(pair.body(1)) == WINDOW, "the client's window, and not a byte more"
    assert writer.unsent() == 5001
    pair.client.acknowledge_received_data(WINDOW, 1)
    pair.exchange()
    assert writer.unsent() == 0 and len(pair.body(1)) == WINDOW + 5001


def test_an_sse_stream_lets_its_request_go_once_its_headers_are_out_and_is_told_of_a_reset_once():
    clock = Clock()
    streaming = Streaming(clock)
    pair = Pair(streaming, clock)
    pair.request()
    assert pair.status(1) == 200 and pair.body(1) == b"retry: 3000\n\n"
    gc.collect()
    assert streaming.requests[0]() is None, "nothing holds the request once the headers are out"
    streaming.registry.publish("job", '"hello"')
    pair.exchange()
    assert pair.body(1) == b'retry: 3000\n\nid: 1\ndata: "hello"\n\n'
    inbox = streaming.registry.get("job")
    assert inbox is not None and inbox.subscribers
    pair.client.reset_stream(1)
    pair.exchange()
    stream = streaming.started[0]
    assert not inbox.subscribers and len(streaming.streams) == 0 and stream.told == 1
    pair.server.connectionLost(Failure(ConnectionDone()))
    assert stream.told == 1, "told once"


def test_a_stream_the_server_ends_is_not_told_of_the_connections_loss_before_its_end_is_out():
    clock = Clock()
    streaming = Streaming(clock)
    pair = Pair(streaming, clock)
    pair.request()
    for _ in range(8):  # more than the client's window, which it does not widen
        streaming.registry.publish("job", '"%s"' % ("x" * 10_000))
    pair.exchange()
    streaming.registry.close("job", '"done"', "service.create.done")
    clock.advance(1)  # the grace period: the inbox ends its streams
    pair.exchange()
    assert not pair.of(h2.events.StreamEnded, 1), "its end waits behind what the window holds back"
    assert len(streaming.streams) == 0, "the stream has ended"
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        pair.server.connectionLost(Failure(ConnectionDone()))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert streaming.started[0].told == 0
    assert not [e for e in logged if "closed for" in e.get("log_format", "")], "closed once, by its end"


def test_at_shutdown_sse_streams_end_and_then_the_connection_says_goaway():
    clock = Clock()
    streaming = Streaming(clock)
    pair = Pair(streaming, clock)
    pair.request()
    pair.request()
    streaming.streams.shutdown()
    pair.server.close_when_done()
    pair.exchange()
    assert pair.of(h2.events.StreamEnded, 1) and pair.of(h2.events.StreamEnded, 3)
    assert pair.body(3).startswith(b"retry: 3000\n\nretry: ") and not pair.of(h2.events.ConnectionTerminated)
    pair.clock.advance(GOAWAY_AFTER_ENDS)
    pair.deliver()
    assert pair.goaway().error_code == ErrorCodes.NO_ERROR and pair.transport.disconnecting
    pair.server.connectionLost(Failure(ConnectionDone()))
    assert [stream.told for stream in streaming.started] == [0, 0]
    assert not streaming.registry.get("job").subscribers


def test_what_the_streams_write_in_a_turn_goes_out_in_one_write_one_frame_each():
    pair = Pair()
    for _ in range(3):
        pair.request()
    pair.exchange()
    written = []
    pair.transport.write = written.append
    for request in pair.resource.requests:
        request.write(b"one ")
        request.write(b"two")
    assert written == [], "nothing goes out before the turn ends"
    pair.clock.advance(0)
    assert len(written) == 1
    pair.transport.io.write(written[0])
    pair.deliver()
    frames = pair.of(h2.events.DataReceived)
    assert sorted(e.data for e in frames) == [b"one two"] * 3


def test_a_full_socket_pauses_every_streams_producer_and_a_drained_one_resumes_them():
    pair = Pair()
    producers = []
    for _ in range(2):
        pair.request()
        producers.append(Producer())
        pair.resource.requests[-1].registerProducer(producers[-1], True)
    pair.server.pauseProducing()  # what the transport does when its buffer is full
    assert [p.paused for p in producers] == [True, True]
    pair.resource.requests[0].write(b"held")
    pair.exchange()
    assert pair.body(1) == b"", "DATA waits while the socket is full"
    pair.server.resumeProducing()
    pair.exchange()
    assert [p.paused for p in producers] == [False, False] and pair.body(1) == b"held"


def test_a_stream_whose_window_is_spent_pauses_alone_until_the_client_makes_room():
    pair = Pair()
    producers = []
    for _ in range(2):
        pair.request()
        producers.append(Producer())
        pair.resource.requests[-1].registerProducer(producers[-1], True)
    pair.resource.requests[0].write(b"x" * (WINDOW + 1))
    pair.exchange()
    assert [p.paused for p in producers] == [True, False]
    pair.client.increment_flow_control_window(10)  # the connection's window: the stream's is still spent
    pair.exchange()
    assert producers[0].paused
    pair.client.increment_flow_control_window(10, stream_id=1)
    pair.exchange()
    assert not producers[0].paused and len(pair.body(1)) == WINDOW + 1


def test_a_stream_ends_once_all_it_wrote_is_out():
    pair = Pair()
    pair.request()
    request = pair.resource.requests[0]
    request.write(b"x" * (WINDOW + 10))
    request.finish()
    pair.exchange()
    assert not pair.of(h2.events.StreamEnded, 1)
    pair.client.acknowledge_received_data(WINDOW, 1)
    pair.exchange()
    assert pair.of(h2.events.StreamEnded, 1) and len(pair.body(1)) == WINDOW + 10


def test_after_goaway_for_an_error_nothing_is_read_and_the_connection_is_aborted_within_a_second():
    pair = Pair()
    pair.request()
    ping_on_a_stream = struct.pack(">I", 8)[1:] + bytes([0x6, 0]) + struct.pack(">I", 1) + b"12345678"
    pair.server.dataReceived(ping_on_a_stream)
    pair.deliver()
    assert pair.goaway().error_code == ErrorCodes.PROTOCOL_ERROR
    assert pair.transport.disconnecting and pair.transport.producer is None
    read = []
    pair.server.conn.receive_data = read.append
    pair.server.dataReceived(b"\0" * 65536)
    assert read == [], "nothing more is read"
    pair.clock.advance(CLOSE_AFTER_GOAWAY)
    assert pair.transport.disconnected


def test_a_client_that_resets_streams_faster_than_it_could_watch_them_is_told_to_calm_down():
    pair = Pair()
    for _ in range(RESETS_AT_ONCE + 1):
        stream_id = pair.client.get_next_available_stream_id()
        pair.client.send_headers(stream_id, HEAD, end_stream=True)
        pair.client.reset_stream(stream_id)
    pair.exchange()
    assert pair.goaway().error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert pair.transport.disconnecting


def test_resets_at_a_watchers_pace_are_fine():
    pair = Pair()
    for _ in range(3 * RESETS_AT_ONCE):
        stream_id = pair.request()
        pair.client.reset_stream(stream_id)
        pair.exchange()
        pair.clock.advance(0.05)
    assert not pair.of(h2.events.ConnectionTerminated)


def test_answers_to_a_client_that_reads_none_of_them_are_bounded():
    pair = Pair()
    pair.server.pauseProducing()
    for n in range(CONTROL_BACKLOG // 17 + 10):  # a PING's answer is 17 bytes
        pair.client.ping(struct.pack(">Q", n))
        pair.server.dataReceived(pair.client.data_to_send())
        if pair.transport.disconnected:
            break
    assert pair.transport.disconnected


def test_shutdown_says_goaway_once_the_last_stream_has_ended():
    pair = Pair()
    pair.request()
    pair.server.close_when_done()
    pair.exchange()
    assert not pair.transport.disconnecting
    refused = pair.request()
    assert pair.reset_code(refused) == ErrorCodes.REFUSED_STREAM, "no new stream while closing"
    pair.resource.requests[0].write(b"retry: 1500\n\n")
    pair.resource.requests[0].finish()
    pair.exchange()
    assert pair.body(1) == b"retry: 1500\n\n" and not pair.of(h2.events.ConnectionTerminated)
    pair.clock.advance(GOAWAY_AFTER_ENDS)
    pair.deliver()
    assert pair.goaway().error_code == ErrorCodes.NO_ERROR
    assert pair.transport.disconnecting


def test_a_client_that_says_goaway_is_closed_and_its_streams_told():
    pair = Pair()
    pair.request()
    finished = []
    pair.resource.requests[0].notifyFinish().addBoth(finished.append)
    pair.client.close_connection()
    pair.exchange()
    assert pair.transport.disconnecting and pair.transport.producer is None
    pair.server.connectionLost()
    assert len(finished) == 1 and finished[0].check(Exception)
    assert pair.server not in pair.site.channels


def test_a_reset_stream_tells_its_request():
    pair = Pair()
    pair.request()
    finished = []
    pair.resource.requests[0].notifyFinish().addBoth(finished.append)
    pair.client.reset_stream(1)
    pair.exchange()
    assert len(finished) == 1 and finished[0].check(Exception)
