"""The NATS wire protocol, driven byte by byte with a StringTransport and a Clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from monit.nats.protocol import (
    MAX_CONTROL_LINE,
    Msg,
    NATSError,
    NATSProtocol,
    NotConnected,
)

from fakenats import PEER_INFO, Peer
from logged import observer


@pytest.fixture
def peer() -> Peer:
    return Peer()


@pytest.fixture
def connected() -> Peer:
    peer = Peer()
    peer.handshake()
    return peer


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(observer(events.append))
    yield events
    globalLogPublisher.removeObserver(observer(events.append))


def results(d: Any) -> list[Any]:
    """The result (or Failure) a Deferred fired with so far, as a list of 0 or 1 items."""
    out: list[Any] = []
    d.addBoth(out.append)
    return out


# Handshake


def test_info_is_answered_by_connect_then_ping(peer: Peer) -> None:
    peer = Peer(connect_options={"name": "monit", "user": "alice", "pass": "secret"})
    peer.feed(PEER_INFO)
    connect, ping, rest = peer.sent().split(b"\r\n")
    assert (ping, rest) == (b"PING", b"")
    assert connect.startswith(b"CONNECT ")
    options = json.loads(connect[len(b"CONNECT ") :])
    assert options["verbose"] is False
    assert options["pedantic"] is False
    assert options["headers"] is True
    assert options["no_responders"] is True
    assert options["protocol"] == 1
    assert options["name"] == "monit"
    assert (options["user"], options["pass"]) == ("alice", "secret")
    assert options["lang"] and options["version"]
    assert peer.protocol.server_info["server_id"] == "S1"
    assert peer.protocol.max_payload == 1024


def test_token_goes_into_connect() -> None:
    peer = Peer(connect_options={"auth_token": "s3cret"})
    peer.feed(PEER_INFO)
    options = json.loads(peer.sent().split(b"\r\n")[0][len(b"CONNECT ") :])
    assert options["auth_token"] == "s3cret"


def test_when_connected_fires_on_the_pong(peer: Peer) -> None:
    first = results(peer.protocol.when_connected())
    second = results(peer.protocol.when_connected())
    peer.feed(PEER_INFO)
    assert first == second == []
    peer.feed(b"PONG\r\n")
    assert first == second == [peer.protocol.server_info]
    assert results(peer.protocol.when_connected()) == [peer.protocol.server_info]


def test_when_connected_fails_if_the_connection_is_lost_first(peer: Peer) -> None:
    waiting = results(peer.protocol.when_connected())
    peer.feed(PEER_INFO)
    peer.lose(ConnectionLost())
    assert waiting[0].check(ConnectionLost)
    assert results(peer.protocol.when_connected())[0].check(ConnectionLost)


def test_cancelled_when_connected_is_forgotten(peer: Peer) -> None:
    waiting = peer.protocol.when_connected()
    waiting.cancel()
    waiting.addErrback(lambda _: None)
    peer.handshake()  # would raise AlreadyCalledError if it were still listed


def test_a_second_info_updates_without_a_second_connect(connected: Peer) -> None:
    connected.feed(b'INFO {"server_id":"S1","max_payload":2048}\r\n')
    assert connected.sent() == b""
    assert connected.protocol.max_payload == 2048


def test_when_lost_fires_with_the_reason(connected: Peer) -> None:
    lost = results(connected.protocol.when_lost())
    connected.lose(ConnectionLost())
    assert isinstance(lost[0], ConnectionLost)
    assert isinstance(results(connected.protocol.when_lost())[0], ConnectionLost)


# Errors


def test_fatal_err_fails_the_handshake_and_drops(peer: Peer, log_events: list) -> None:
    waiting = results(peer.protocol.when_connected())
    peer.feed(PEER_INFO, b"-ERR 'Authorization Violation'\r\n")
    assert waiting[0].check(NATSError)
    assert str(waiting[0].value) == "Authorization Violation"
    assert peer.transport.disconnecting
    assert log_events == [], "a refusal is the owner's to say, once, not each attempt's"


def test_fatal_err_after_the_handshake_is_logged_and_drops(connected: Peer, log_events: list) -> None:
    lost = results(connected.protocol.when_lost())
    connected.feed(b"-ERR 'Stale Connection'\r\n")
    assert connected.transport.disconnecting
    assert [formatEvent(e) for e in log_events] == ["dropping NATS connection: server error: Stale Connection"]
    connected.lose(ConnectionDone())
    assert str(lost[0]) == "server error: Stale Connection"


def test_permissions_violation_is_not_fatal(connected: Peer, log_events: list) -> None:
    connected.feed(b"-ERR 'Permissions Violation for Subscription to \"secret\"'\r\n")
    assert not connected.transport.disconnecting
    connected.feed(b"MSG a 1 2\r\nhi\r\n")
    assert connected.received == [(1, Msg("a", b"hi"))]
    warnings = [e for e in log_events if e["log_level"] == LogLevel.warn]
    assert "Permissions Violation" in warnings[0]["error"]


def test_ok_is_ignored(connected: Peer) -> None:
    connected.feed(b"+OK\r\n")
    assert connected.sent() == b""
    assert not connected.transport.disconnecting


@pytest.mark.parametrize(
    "garbage",
    [
        b"HELLO world\r\n",
        b"\r\n",
        b"MSG a 1 x\r\nhi\r\n",
        b"MSG a 1 -3\r\nhi\r\n",
        b"MSG a\r\n",
        b"MSG a 1 2\r\nhiXX",
        b"HMSG a 1 20 10\r\n" + b"x" * 12 + b"\r\n",
        b"PEER_INFO [1,2]\r\n",
        b"INFO {not json\r\n",
        b"MSG a 1 99999999999\r\n",
        b"X" * (MAX_CONTROL_LINE + 1),
        b"MSG " + b"a" * MAX_CONTROL_LINE + b" 1 0\r\n\r\n",
    ],
)
def test_garbage_drops_the_connection_without_raising(connected: Peer, garbage: bytes, log_events: list) -> None:
    connected.feed(garbage)
    assert connected.transport.disconnecting
    assert [e for e in log_events if e["log_level"] == LogLevel.error]
    connected.feed(b"MSG a 1 2\r\nhi\r\n")
    assert connected.received == []


@pytest.mark.parametrize(
    "unusable",
    [
        b"MSG monitor.user 1 \xff\xfe.reply 2\r\n{}\r\n",  # a reply subject that is not UTF-8
        b"MSG \xff\xfe 1 2\r\n{}\r\n",  # nor the subject
        b"HMSG monitor.user 1 16 18\r\nNATS/1.0 abc\r\n\r\n{}\r\n",  # a status that is no number
        b"HMSG monitor.user 1 5 5\r\nHTTP/\r\n",  # a header block without NATS/1.0
        b"HMSG monitor.user 1 9 5\r\nNATS/\r\n",  # headers longer than the message
        b"MSG monitor.user x 2\r\n{}\r\n",  # a sid that is no number
        b"MSG monitor.user 1 a b 2\r\n{}\r\n",  # too many fields
    ],
)
def test_an_unusable_message_is_skipped_and_the_connection_kept(unusable: bytes) -> None:
    """Anything relayed as a message costs that message alone; the next one arrives."""
    skipped: list[tuple[str, str]] = []
    peer = Peer(on_unusable=lambda subject, reason: skipped.append((subject, reason)))
    peer.handshake()
    peer.feed(b"MSG monitor.user 1 5\r\nfirst\r\n" + unusable + b"MSG monitor.user 1 4\r\nnext\r\n")
    assert not peer.transport.disconnecting
    assert [msg.payload for _, msg in peer.received] == [b"first", b"next"]
    assert len(skipped) == 1 and skipped[0][1]


def test_long_control_line_split_over_reads_drops(connected: Peer) -> None:
    for _ in range(MAX_CONTROL_LINE // 1024 + 1):
        connected.feed(b"y" * 1024)
    assert connected.transport.disconnecting


def test_a_failing_handler_does_not_stop_later_messages(log_events: list) -> None:
    delivered: list[bytes] = []

    def handler(sid: int, msg: Msg) -> None:
        delivered.append(msg.payload)
        if msg.payload == b"bad":
            raise RuntimeError("boom")

    protocol = NATSProtocol(Clock(), handler, {})
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(PEER_INFO + b"PONG\r\n")
    protocol.dataReceived(b"MSG a 1 3\r\nbad\r\nMSG a 1 4\r\ngood\r\n")
    assert delivered == [b"bad", b"good"]
    assert not transport.disconnecting
    failures = [e for e in log_events if "log_failure" in e]
    assert failures[0]["log_failure"].check(RuntimeError)
    assert failures[0]["subject"] == "a"


# Parsing

TIMEOUT_BLOCK = b"NATS/1.0 408 Request Timeout\r\nA:  b \r\n\r\n"
HEADERS_BLOCK = b"NATS/1.0\r\nContent-Type: text/plain\r\nX-Id: 1\r\nX-Id: 2\r\n\r\n"
STREAM = b"".join(
    [
        b"MSG foo.bar 1 5\r\nhello\r\n",
        b"MSG foo 2 _INBOX.x.1 7\r\na\r\nb\r\nc\r\n",
        b"PING\r\n",
        b"MSG empty 3 0\r\n\r\n",
        b"+OK\r\n",
        b"HMSG h 4 %d %d\r\n%spay\r\n" % (len(HEADERS_BLOCK), len(HEADERS_BLOCK) + 3, HEADERS_BLOCK),
        b"HMSG _INBOX.x.2 5 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
        b"HMSG r 6 reply.to %d %d\r\n%sok\r\n" % (len(TIMEOUT_BLOCK), len(TIMEOUT_BLOCK) + 2, TIMEOUT_BLOCK),
        b"msg lower 7 2\r\n\r\n\r\n",
    ]
)
EXPECTED = [
    (1, Msg("foo.bar", b"hello")),
    (2, Msg("foo", b"a\r\nb\r\nc", "_INBOX.x.1")),
    (3, Msg("empty", b"")),
    (4, Msg("h", b"pay", None, {"Content-Type": "text/plain", "X-Id": "1, 2"})),
    (5, Msg("_INBOX.x.2", b"", None, {}, 503)),
    (6, Msg("r", b"ok", "reply.to", {"A": "b"}, 408, "Request Timeout")),
    (7, Msg("lower", b"\r\n")),
]


def test_all_frames_in_one_read(connected: Peer) -> None:
    connected.feed(STREAM)
    assert connected.received == EXPECTED
    assert connected.sent() == b"PONG\r\n"


def test_frames_split_at_any_byte() -> None:
    for split in range(1, len(STREAM)):
        peer = Peer()
        peer.handshake()
        peer.feed(STREAM[:split], STREAM[split:])
        assert peer.received == EXPECTED, split
        assert peer.sent() == b"PONG\r\n", split


def test_frames_one_byte_at_a_time(connected: Peer) -> None:
    connected.feed(*(STREAM[i : i + 1] for i in range(len(STREAM))))
    assert connected.received == EXPECTED


def test_buffer_keeps_only_the_incomplete_tail(connected: Peer) -> None:
    connected.feed(STREAM + b"MSG tail 1 10\r\n01234")
    assert connected.received == EXPECTED
    assert bytes(connected.protocol._buffer) == b"MSG tail 1 10\r\n01234"


TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1)
SUBJECT = st.lists(TOKEN, min_size=1, max_size=4).map(".".join)
HEADER_VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12)
STATUS = st.sampled_from([(None, None), (503, None), (408, "Request Timeout"), (100, "Idle Heartbeat")])


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, tuple[int, Msg]]:
    """One MSG or HMSG frame, encoded here independently, and the message it holds."""
    subject = draw(SUBJECT)
    sid = draw(st.integers(1, 10**6))
    reply = draw(st.none() | SUBJECT)
    payload = draw(st.binary(max_size=64))
    head = f"{subject} {sid}" if reply is None else f"{subject} {sid} {reply}"
    headers = draw(st.none() | st.dictionaries(TOKEN, HEADER_VALUE, max_size=3))
    if headers is None:
        frame = b"MSG %s %d\r\n%s\r\n" % (head.encode(), len(payload), payload)
        return frame, (sid, Msg(subject, payload, reply))
    status, description = draw(STATUS)
    first = " ".join(str(part) for part in ("NATS/1.0", status, description) if part is not None)
    block = "".join(f"{line}\r\n" for line in [first, *(f"{k}: {v}" for k, v in headers.items())])
    encoded = (block + "\r\n").encode()
    frame = b"HMSG %s %d %d\r\n%s%s\r\n" % (head.encode(), len(encoded), len(encoded) + len(payload), encoded, payload)
    return frame, (sid, Msg(subject, payload, reply, headers, status, description))


@settings(max_examples=300, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=8), st.data())
def test_any_split_of_any_frames_parses_the_same(
    sequence: list[tuple[bytes, tuple[int, Msg]]], data: st.DataObject
) -> None:
    stream = b"".join(frame for frame, _ in sequence)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    peer = Peer()
    peer.handshake()
    peer.feed(*(stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)))
    assert peer.received == [message for _, message in sequence]
    assert not peer.transport.disconnecting


# Pings


def test_server_ping_is_answered_at_once(peer: Peer) -> None:
    peer.feed(b"PING\r\n")
    assert peer.sent() == b"PONG\r\n"


def test_ping_fires_on_its_pong(connected: Peer) -> None:
    first, second = results(connected.protocol.ping()), results(connected.protocol.ping())
    assert connected.sent() == b"PING\r\nPING\r\n"
    connected.feed(b"PONG\r\n")
    assert (first, second) == ([None], [])
    connected.feed(b"PONG\r\n")
    assert second == [None]


def test_outstanding_pings_fail_when_the_connection_is_lost(connected: Peer) -> None:
    pending = results(connected.protocol.ping())
    connected.lose(ConnectionLost())
    assert pending[0].check(ConnectionLost)
    assert results(connected.protocol.ping())[0].check(NotConnected)


def test_keepalive_pings_every_interval_while_answered() -> None:
    peer = Peer(ping_interval=5.0)
    peer.handshake()
    for _ in range(10):
        peer.clock.advance(5.0)
        assert peer.sent() == b"PING\r\n"
        peer.feed(b"PONG\r\n")
    assert not peer.transport.disconnecting


def test_stale_connection_is_dropped(log_events: list) -> None:
    peer = Peer(ping_interval=5.0, max_outstanding_pings=2)
    peer.handshake()
    peer.clock.advance(5.0)
    peer.clock.advance(5.0)
    assert peer.sent() == b"PING\r\nPING\r\n"
    assert not peer.transport.disconnecting
    peer.clock.advance(5.0)
    assert peer.transport.disconnecting
    assert any("stale" in e.get("log_format", "") for e in log_events)


def test_a_server_whose_messages_keep_coming_is_not_stale_while_its_pongs_wait_behind_them() -> None:
    """A JetStream replay: megabytes of messages queue ahead of the PONGs."""
    peer = Peer(ping_interval=5.0, max_outstanding_pings=2)
    peer.handshake()
    for _ in range(10):
        peer.feed(b"MSG x 1 2\r\nhi\r\n")
        peer.clock.advance(5.0)
    assert not peer.transport.disconnecting
    peer.feed(b"PONG\r\n" * 2)
    peer.clock.advance(5.0)
    peer.clock.advance(5.0)
    peer.clock.advance(5.0)
    assert peer.transport.disconnecting, "once nothing comes, unanswered PINGs count again"


def test_a_server_monit_is_not_reading_from_is_not_judged_by_its_pongs() -> None:
    peer = Peer(ping_interval=5.0, max_outstanding_pings=2)
    peer.handshake()
    peer.clock.advance(5.0)
    peer.protocol.pause_reading(True)
    for _ in range(5):
        peer.clock.advance(5.0)
    assert not peer.transport.disconnecting
    peer.protocol.pause_reading(False)
    peer.clock.advance(5.0)
    peer.clock.advance(5.0)
    assert peer.transport.disconnecting


def test_no_timer_is_left_after_the_connection_is_lost() -> None:
    peer = Peer(ping_interval=5.0)
    peer.handshake()
    assert peer.clock.getDelayedCalls()
    peer.lose()
    assert peer.clock.getDelayedCalls() == []


# Commands


def test_commands_need_a_connection(peer: Peer) -> None:
    with pytest.raises(NotConnected):
        peer.protocol.publish("a", b"x")
    with pytest.raises(NotConnected):
        peer.protocol.subscribe(1, "a")
    peer.handshake()
    peer.lose()
    with pytest.raises(NotConnected):
        peer.protocol.unsubscribe(1)


def test_subscribe_and_unsubscribe(connected: Peer) -> None:
    connected.protocol.subscribe(1, "foo.*")
    connected.protocol.subscribe(2, "bar.>", queue="workers")
    connected.protocol.unsubscribe(1)
    connected.protocol.unsubscribe(2, max_msgs=5)
    assert connected.sent() == (b"SUB foo.* 1\r\nSUB bar.> workers 2\r\nUNSUB 1\r\nUNSUB 2 5\r\n")


def test_publish(connected: Peer) -> None:
    connected.protocol.publish("foo", b"a\r\nb")
    connected.protocol.publish("foo", b"", reply="_INBOX.1")
    assert connected.sent() == b"PUB foo 4\r\na\r\nb\r\nPUB foo _INBOX.1 0\r\n\r\n"


def test_publish_with_headers(connected: Peer) -> None:
    connected.protocol.publish("foo", b"hi", reply="r", headers={"A": "1", "B-C": "x y"})
    block = b"NATS/1.0\r\nA: 1\r\nB-C: x y\r\n\r\n"
    expected = b"HPUB foo r %d %d\r\n%shi\r\n" % (len(block), len(block) + 2, block)
    assert connected.sent() == expected


@pytest.mark.parametrize(
    "subject, headers",
    [
        ("", None),
        ("a b", None),
        ("a\r\nPUB x 0", None),
        ("a", {"A\r\n": "1"}),
        ("a", {"A": "1\r\n"}),
    ],
)
def test_publish_refuses_what_would_break_the_framing(connected: Peer, subject: str, headers: dict | None) -> None:
    with pytest.raises(ValueError):
        connected.protocol.publish(subject, b"x", headers=headers)
    assert connected.sent() == b""


def test_publish_honours_max_payload(connected: Peer) -> None:
    connected.protocol.publish("a", b"x" * 1024)
    connected.sent()
    with pytest.raises(ValueError, match="max_payload"):
        connected.protocol.publish("a", b"x" * 1025)
    with pytest.raises(ValueError, match="max_payload"):
        connected.protocol.publish("a", b"x" * 1020, headers={"A": "b"})
    assert connected.sent() == b""


@contextmanager
def no_parser_failure() -> Iterator[None]:
    """Fail if the parser's catch-all logged a failure: bad input must be a protocol error."""
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observer(observe))
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observer(observe))
    assert not failures, [formatEvent(e) + " " + e["log_failure"].getTraceback() for e in failures]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_bytes_never_raise_out_of_data_received(chunks: list[bytes]) -> None:
    """Whatever arrives is parsed, ignored or a protocol error that drops the connection."""
    peer = Peer()
    peer.handshake()
    with no_parser_failure():
        for chunk in chunks:
            peer.feed(chunk)


@settings(max_examples=200)
@given(
    st.lists(
        st.sampled_from(
            [
                b"MSG ",
                b"HMSG ",
                b"PING",
                b"PONG",
                b"+OK",
                b"-ERR 'x'",
                b"INFO {}",
                b"\r\n",
                b" ",
                b"a.b",
                b"1",
                b"5",
                b"hello",
                b"NATS/1.0",
                b"-1",
                b"99999999999999999999",
            ]
        ),
        max_size=30,
    )
)
def test_protocol_shaped_noise_never_raises(pieces: list[bytes]) -> None:
    """Near-miss frames, where a parser is most likely to trip."""
    peer = Peer()
    peer.handshake()
    with no_parser_failure():
        peer.feed(b"".join(pieces))
