"""Redis's wire protocol (monit.auth.resp): replies parsed in every split, commands answered in order,
the reply deadline, and what is not Redis talking. StringTransport and a fake clock."""

from __future__ import annotations

import re

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from monit.auth.resp import (
    MAX_LINE,
    ConnectionLost,
    Oversized,
    ProtocolError,
    RedisError,
    RedisProtocol,
    ReplyParser,
    encode,
)

from deferreds import result_of

REPLIES = (
    b"+OK\r\n-WRONGTYPE Operation against a key\r\n:42\r\n$5\r\nalice\r\n$-1\r\n$0\r\n\r\n$7\r\na\r\nb\x00c\xff\r\n"
)
PARSED = ["OK", "WRONGTYPE Operation against a key", 42, b"alice", None, b"", b"a\r\nb\x00c\xff"]


def shown(replies: list) -> list:
    return [str(reply) if isinstance(reply, RedisError) else reply for reply in replies]


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert encode(b"AUTH", b"monit", b"p\r\nw") == b"*3\r\n$4\r\nAUTH\r\n$5\r\nmonit\r\n$4\r\np\r\nw\r\n"


def test_replies_in_one_piece() -> None:
    assert shown(ReplyParser(max_bulk=100).feed(REPLIES)) == PARSED


@pytest.mark.parametrize("cut", range(1, len(REPLIES)))
def test_replies_split_anywhere(cut: int) -> None:
    parser = ReplyParser(max_bulk=100)
    assert shown(parser.feed(REPLIES[:cut]) + parser.feed(REPLIES[cut:])) == PARSED


def test_replies_a_byte_at_a_time() -> None:
    parser = ReplyParser(max_bulk=100)
    assert shown([reply for byte in REPLIES for reply in parser.feed(bytes([byte]))]) == PARSED


def test_an_error_reply_says_its_kind() -> None:
    [error] = ReplyParser(max_bulk=10).feed(b"-NOPERM this user has no permissions\r\n")
    assert isinstance(error, RedisError) and error.code == "NOPERM"


def test_a_value_past_the_limit_is_skipped_as_it_streams_and_what_follows_is_read() -> None:
    parser = ReplyParser(max_bulk=10)
    value = b"x" * 100_000
    stream = b"$100000\r\n" + value + b"\r\n$3\r\nbob\r\n"
    replies = [reply for start in range(0, len(stream), 4096) for reply in parser.feed(stream[start : start + 4096])]
    assert replies == [Oversized(100_000), b"bob"]
    assert len(parser._buffer) == 0


@pytest.mark.parametrize(
    "garbage, said",
    [
        (b"*1\r\n$1\r\na\r\n", "a reply of a kind monit never asks for (b'*')"),
        (b"%1\r\n", "a reply of a kind monit never asks for (b'%')"),
        (b"HTTP/1.1 400 Bad Request\r\n", "a reply of a kind monit never asks for (b'H')"),
        (b"$-5\r\n", "a bulk string of length -5"),
        (b"$x\r\n", "a length or integer that is not a number"),
        (b":4x\r\n", "a length or integer that is not a number"),
        (b"$3\r\nabcde\r\n", "a bulk string without its CRLF"),
        (b"+" + b"o" * (MAX_LINE + 1), f"a reply line longer than {MAX_LINE} bytes"),
    ],
)
def test_what_is_not_a_reply_monit_asked_for_is_a_protocol_error(garbage: bytes, said: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(said)):
        ReplyParser(max_bulk=10).feed(garbage)


# RedisProtocol


def connected(clock: Clock, timeout: float = 2.0) -> tuple[RedisProtocol, StringTransportWithDisconnection]:
    protocol = RedisProtocol(clock, timeout, max_bulk=1024)
    transport = StringTransportWithDisconnection()
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return protocol, transport


def test_commands_are_answered_in_the_order_they_were_sent(clock: Clock) -> None:
    protocol, transport = connected(clock)
    first, second, third = protocol.command(b"GET", b"a"), protocol.command(b"GET", b"b"), protocol.command(b"PING")
    assert transport.value() == encode(b"GET", b"a") + encode(b"GET", b"b") + encode(b"PING")
    protocol.dataReceived(b"$5\r\nalice\r\n-WRONGTYPE Operation\r\n+PO")
    assert result_of(first) == b"alice"
    with pytest.raises(RedisError, match="WRONGTYPE Operation"):
        result_of(second)
    assert not third.called
    protocol.dataReceived(b"NG\r\n")
    assert result_of(third) == "PONG"
    assert clock.getDelayedCalls() == []


def test_a_command_unanswered_in_time_drops_the_connection_and_fails_every_waiting_one(clock: Clock) -> None:
    protocol, transport = connected(clock)
    first = protocol.command(b"AUTH", b"pw")
    clock.advance(1)
    second = protocol.command(b"GET", b"a")
    clock.advance(0.99)
    assert not first.called and transport.connected
    clock.advance(0.01)
    assert transport.disconnected, "aborted, not closed politely"
    for waiting in (first, second):
        with pytest.raises(ConnectionLost, match="^no answer to AUTH in 2 s$"):
            result_of(waiting)
    assert result_of(protocol.when_lost()) == "no answer to AUTH in 2 s"
    with pytest.raises(ConnectionLost, match="no answer to AUTH"):
        result_of(protocol.command(b"GET", b"b"))
    assert clock.getDelayedCalls() == []


def test_each_command_has_its_own_deadline_counted_from_when_it_was_sent(clock: Clock) -> None:
    protocol, transport = connected(clock)
    first = protocol.command(b"GET", b"a")
    clock.advance(1)
    second = protocol.command(b"GET", b"b")
    clock.advance(0.5)
    protocol.dataReceived(b"$-1\r\n")
    assert result_of(first) is None
    clock.advance(1.49)
    assert not second.called
    clock.advance(0.01)
    with pytest.raises(ConnectionLost, match="no answer to GET in 2 s"):
        result_of(second)


def test_a_lost_connection_fails_what_waits_with_why(clock: Clock) -> None:
    protocol, transport = connected(clock)
    waiting = protocol.command(b"GET", b"a")
    transport.loseConnection()
    with pytest.raises(ConnectionLost, match="^connection lost: Connection was closed cleanly"):
        result_of(waiting)
    assert clock.getDelayedCalls() == []


def test_a_reply_of_a_kind_monit_never_asks_for_drops_the_connection(clock: Clock) -> None:
    protocol, transport = connected(clock)
    waiting = protocol.command(b"GET", b"a")
    protocol.dataReceived(b"*2\r\n$1\r\na\r\n")
    protocol.dataReceived(b"+OK\r\n")  # after the drop: not read
    assert transport.disconnected
    with pytest.raises(ConnectionLost, match="^Redis sent what monit cannot read: a reply of a kind monit never"):
        result_of(waiting)
    assert clock.getDelayedCalls() == []


def test_a_reply_to_no_command_drops_the_connection(clock: Clock) -> None:
    protocol, transport = connected(clock)
    waiting = protocol.command(b"GET", b"a")
    protocol.dataReceived(b"$3\r\nbob\r\n+OK\r\n")
    assert result_of(waiting) == b"bob"
    assert transport.disconnected
    assert result_of(protocol.when_lost()) == "Redis sent a reply to no command"
