"""Redis's wire protocol (RESP2), as far as token lookups need it: commands out, replies in order.

A command is an array of bulk strings; Redis answers every command of a
connection in the order they came. The replies monit asks for are simple
strings (``+OK``), errors (``-WRONGTYPE …``), integers and bulk strings (a
value, or nil). Anything else on this connection (an array, a RESP3 type, a
reply nobody asked for, a line without end) means the connection cannot be
read any further: it is dropped.

A bulk string longer than ``max_bulk`` is skipped as it streams past, never
held, and answered as L{Oversized}: one large value cannot grow the process.

A command that gets no reply within ``timeout`` drops the connection: its
reply, and those of the commands after it, would come too late, and Redis
that has stopped answering one connection has usually stopped answering
them all. Every command still waiting then fails with L{ConnectionLost}.
"""

from __future__ import annotations

from collections import deque

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from monit.oneshot import OneShotObserver

MAX_LINE = 64 * 1024  # a status or error line longer than this is not Redis talking


class RedisError(Exception):
    """Redis answered a command with an error (``WRONGTYPE …``, ``NOPERM …``, ``WRONGPASS …``)."""

    @property
    def code(self) -> str:
        """The error's first word, which says what kind it is."""
        return str(self).split(" ", 1)[0]


class ConnectionLost(Exception):
    """The connection closed, or was dropped, before the reply came."""


class ProtocolError(Exception):
    """Bytes that are not a reply monit asked for."""


@attrs.frozen
class Oversized:
    """A bulk string longer than the protocol keeps: its bytes were read and dropped."""

    size: int


Reply = bytes | str | int | None | Oversized


def encode(*args: bytes) -> bytes:
    """One command, as Redis reads it: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class ReplyParser:
    """Replies out of a byte stream, however it is split."""

    def __init__(self, max_bulk: int) -> None:
        self._max_bulk = max_bulk
        self._buffer = bytearray()
        self._bulk: int | None = None  # the length of the bulk string being read
        self._skip = 0  # bytes of an oversized bulk string (and its CRLF) still to drop
        self._skipped = 0  # that string's length

    def feed(self, data: bytes) -> list[Reply | RedisError]:
        """The replies ``data`` completes; ProtocolError when it is not Redis's protocol."""
        self._buffer += data
        replies: list[Reply | RedisError] = []
        while True:
            if self._skip:
                if not self._drop():
                    return replies
                replies.append(Oversized(self._skipped))
            elif self._bulk is not None:
                if len(self._buffer) < self._bulk + 2:
                    return replies
                replies.append(self._take_bulk(self._bulk))
            else:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_LINE:
                        raise ProtocolError(f"a reply line longer than {MAX_LINE} bytes")
                    return replies
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                if line[:1] != b"$":
                    replies.append(_simple(line))
                elif (length := _integer(line[1:])) == -1:
                    replies.append(None)  # nil: no such key
                else:
                    self._start_bulk(length)

    def _start_bulk(self, length: int) -> None:
        if length < 0:
            raise ProtocolError(f"a bulk string of length {length}")
        if length > self._max_bulk:
            self._skip, self._skipped = length + 2, length
        else:
            self._bulk = length

    def _take_bulk(self, length: int) -> bytes:
        if self._buffer[length : length + 2] != b"\r\n":
            raise ProtocolError("a bulk string without its CRLF")
        value = bytes(self._buffer[:length])
        del self._buffer[: length + 2]
        self._bulk = None
        return value

    def _drop(self) -> bool:
        """Drop what is buffered of an oversized string; True once all of it is gone."""
        dropped = min(self._skip, len(self._buffer))
        del self._buffer[:dropped]
        self._skip -= dropped
        return self._skip == 0


def _simple(line: bytes) -> str | int | RedisError:
    """A one-line reply: a status, an error or an integer."""
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode("utf-8", "replace")
    if kind == b"-":
        return RedisError(rest.decode("utf-8", "replace"))
    if kind == b":":
        return _integer(rest)
    raise ProtocolError(f"a reply of a kind monit never asks for ({kind!r})")


def _integer(text: bytes) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProtocolError("a length or integer that is not a number") from None


class RedisProtocol(Protocol):
    """One connection's commands, each answered by a Deferred, in the order they were sent."""

    def __init__(self, clock: IReactorTime, timeout: float, max_bulk: int) -> None:
        self._clock = clock
        self._timeout = timeout
        self._parser = ReplyParser(max_bulk)
        self._waiting: deque[tuple[Deferred[Reply], bytes, float]] = deque()  # reply, command name, sent at
        self._deadline: IDelayedCall | None = None
        self._gone: str | None = None  # why the connection was dropped or lost
        self._lost: OneShotObserver[str] = OneShotObserver()

    def command(self, *args: bytes) -> Deferred[Reply]:
        """Send a command; fires with its reply, fails with RedisError or ConnectionLost."""
        if self._gone is not None or self.transport is None:
            return fail(ConnectionLost(self._gone or "not connected"))
        reply: Deferred[Reply] = Deferred()
        self._waiting.append((reply, args[0], self._clock.seconds()))
        self.transport.write(encode(*args))
        if self._deadline is None:
            self._arm()
        return reply

    def dataReceived(self, data: bytes) -> None:
        if self._gone is not None:
            return  # dropped: what still comes is not read
        try:
            replies = self._parser.feed(data)
        except ProtocolError as error:
            self._drop(f"Redis sent what monit cannot read: {error}")
            return
        for reply in replies:
            if not self._waiting:
                self._drop("Redis sent a reply to no command")
                return
            waiter, _, _ = self._waiting.popleft()
            self._disarm()
            if self._waiting:
                self._arm()
            if isinstance(reply, RedisError):
                waiter.errback(reply)
            else:
                waiter.callback(reply)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail every command still waiting, with why the connection went."""
        self._disarm()
        if self._gone is None:
            self._gone = f"connection lost: {reason.getErrorMessage()}"
        waiting, self._waiting = self._waiting, deque()
        for waiter, _, _ in waiting:
            waiter.errback(ConnectionLost(self._gone))
        self._lost.fire(self._gone)

    def when_lost(self) -> Deferred[str]:
        """Fires, with why, once the connection has gone."""
        return self._lost.when_fired()

    def close(self) -> None:
        """Close the connection (at shutdown): what waits fails with ConnectionLost."""
        self._gone = self._gone or "closed by monit"
        if self.transport is not None:
            self.transport.loseConnection()

    def _arm(self) -> None:
        """Time the oldest command waiting: its reply is the next to come."""
        _, name, sent = self._waiting[0]
        left = max(0.0, sent + self._timeout - self._clock.seconds())
        self._deadline = self._clock.callLater(left, self._expired, name)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self, name: bytes) -> None:
        self._deadline = None
        self._drop(f"no answer to {name.decode('ascii', 'replace')} in {self._timeout:g} s")

    def _drop(self, reason: str) -> None:
        self._gone = reason
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
