"""The NATS client wire protocol as a Twisted protocol.

The parser is the hot path: it keeps one ``bytearray``, walks it with an
offset, and drops the consumed prefix once per ``dataReceived`` call, so a
frame split over many reads, or many frames in one read, cost no quadratic
copying.  See https://docs.nats.io/reference/protocols/client.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
    ITLSTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from monit import __version__
from monit.oneshot import OneShotObserver

# The server's default message size limit, until its INFO says what it is.
SERVER_MAX_PAYLOAD = 1024 * 1024
# A control line (everything before CRLF) longer than this is garbage.
MAX_CONTROL_LINE = 64 * 1024
# The largest max_payload a server can be configured with; a bigger frame is garbage.
MAX_FRAME_PAYLOAD = 64 * 1024 * 1024

_CRLF = b"\r\n"
_HEADER_VERSION = "NATS/1.0"
_INVALID_TOKEN = re.compile(r"[\s\x00]")
# -ERR texts after which the server keeps the connection open.
_NON_FATAL_ERRORS = ("permissions violation", "invalid subject")


_CONNECT_DEFAULTS: dict[str, Any] = {
    "verbose": False,
    "pedantic": False,
    "headers": True,
    "no_responders": True,
    "protocol": 1,
    "lang": "python-twisted",
    "version": __version__,
}


class Msg(NamedTuple):
    """One message delivered by the server (MSG or HMSG); a tuple, cheap to make per message."""

    subject: str
    payload: bytes
    reply: str | None = None
    headers: Mapping[str, str] | None = None
    status: int | None = None
    # The text after the status code, e.g. "Request Timeout".
    description: str | None = None


class NATSError(Exception):
    """The server sent -ERR, or broke the protocol."""


class NoResponders(Exception):
    """A request found nobody subscribed to its subject."""


class NotConnected(Exception):
    """There is no usable connection to a NATS server."""


class RequestTimeout(Exception):
    """No reply arrived in time."""


class _ProtocolViolation(ValueError):
    """The peer sent bytes that are not the NATS protocol: the framing is lost."""


class _Refused(Exception):
    """The handshake cannot go on with this server: the reason is the message."""


class _UnusableMessage(ValueError):
    """A message whose frame is whole but whose fields cannot be read: skipped alone."""


def check_subject(subject: str, what: str = "subject") -> None:
    """Refuse a subject (or queue, or reply) that would break the framing.

    A space or CRLF in a subject would let a caller inject protocol lines.
    """
    if not subject or _INVALID_TOKEN.search(subject):
        raise ValueError(f"invalid NATS {what}: {subject!r}")


def _encode_headers(headers: Mapping[str, str]) -> bytes:
    """The NATS/1.0 header block, ending with an empty line."""
    lines = [_HEADER_VERSION]
    for key, value in headers.items():
        if not key or ":" in key or _INVALID_TOKEN.search(key):
            raise ValueError(f"invalid NATS header name: {key!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"invalid NATS header value for {key!r}")
        lines.append(f"{key}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _parse_headers(
    block: bytes,
) -> tuple[dict[str, str], int | None, str | None]:
    """Headers, status and description from an HMSG header block.

    The first line is "NATS/1.0", optionally followed by a status code and a
    description ("NATS/1.0 503", "NATS/1.0 408 Request Timeout").  A name
    that appears on several lines gets its values joined with ", ".
    """
    lines = block.decode("utf-8", "replace").split("\r\n")
    version_line, *fields = lines
    if not version_line.startswith(_HEADER_VERSION):
        raise _UnusableMessage(f"header block without {_HEADER_VERSION}")
    status_text, _, description = version_line[len(_HEADER_VERSION) :].strip().partition(" ")
    if status_text and not (status_text.isascii() and status_text.isdigit()):
        raise _UnusableMessage(f"header status {status_text[:16]!r} is not a number")
    status = int(status_text) if status_text else None
    headers: dict[str, str] = {}
    for field in fields:
        name, colon, value = field.partition(":")
        if not colon:
            continue
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers, status, description.strip() or None


def _size(text: bytes | bytearray) -> int:
    """A byte count from a control line, refusing absurd ones."""
    size = int(text)
    if not 0 <= size <= MAX_FRAME_PAYLOAD:
        raise _ProtocolViolation(f"bad message size {size}")
    return size


def _message(op: bytes, args: list[bytearray], buf: bytearray, start: int, stop: int) -> tuple[int, Msg]:
    """The sid and message of a complete MSG or HMSG whose body is buf[start:stop].

    Raises ValueError (a UnicodeDecodeError, a bad number, an _UnusableMessage)
    for a message that cannot be read; its frame is whole, so only it is lost.
    """
    if op == b"MSG":
        # MSG <subject> <sid> [reply-to] <#bytes>
        if len(args) == 4:
            return int(args[2]), Msg(args[1].decode(), bytes(buf[start:stop]))
        if len(args) == 5:
            return int(args[2]), Msg(args[1].decode(), bytes(buf[start:stop]), args[3].decode())
        raise _UnusableMessage("MSG with a wrong number of fields")
    # HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
    if len(args) not in (5, 6):
        raise _UnusableMessage("HMSG with a wrong number of fields")
    split = start + _size(args[-2])
    if split > stop:
        raise _UnusableMessage("HMSG headers larger than the message")
    headers, status, description = _parse_headers(bytes(buf[start:split]))
    reply = args[3].decode() if len(args) == 6 else None
    return int(args[2]), Msg(args[1].decode(), bytes(buf[split:stop]), reply, headers, status, description)


class NATSProtocol(Protocol):
    """One connection to a NATS server, from INFO to connectionLost.

    It answers the handshake and keep-alives itself; subscription ids are the
    caller's business, so that a reconnecting owner can keep them stable.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        on_message: Callable[[int, Msg], None],
        connect_options: dict[str, Any],
        ping_interval: float = 30.0,
        max_outstanding_pings: int = 2,
        on_unusable: Callable[[str, str], None] | None = None,
        on_info: Callable[[dict[str, Any]], None] | None = None,
        tls: Callable[[], IOpenSSLClientConnectionCreator] | None = None,
        want_tls: bool = False,
        sign: Callable[[str], dict[str, str]] | None = None,
    ) -> None:
        """``tls`` makes the options to upgrade with, when ``want_tls`` or the server requires it;
        ``sign`` answers the server's nonce with CONNECT fields (an NKey's, a JWT's)."""
        self._clock = clock
        self._on_message = on_message
        self._on_unusable = on_unusable or self._log_unusable
        self._connect_options = {**_CONNECT_DEFAULTS, **connect_options}
        self._on_info = on_info
        self._tls = tls
        self._want_tls = want_tls
        self._sign = sign
        self._ping_interval = ping_interval
        self._max_outstanding_pings = max_outstanding_pings
        self.server_info: dict[str, Any] = {}
        self.max_payload = SERVER_MAX_PAYLOAD
        self._buffer = bytearray()
        self._pongs: deque[Deferred[None]] = deque()
        self._heard = False  # data came since the last keep-alive: the server lives
        self._reading_paused = False
        self._handshake: OneShotObserver[dict[str, Any]] = OneShotObserver()
        self._ended: OneShotObserver[BaseException] = OneShotObserver()
        self._keepalive: LoopingCall | None = None
        self._connect_sent = False
        self._closing = False
        self._lost: Failure | None = None
        self._dropped_because: NATSError | None = None  # when monit, not the peer, ended it

    # Lifecycle

    def when_connected(self) -> Deferred[dict[str, Any]]:
        """Fire with the server INFO once CONNECT was answered by a PONG."""
        if self._lost is not None:
            return fail(self._lost)
        return self._handshake.when_fired()

    def when_lost(self) -> Deferred[BaseException]:
        """Fire with the reason (an exception, as a result) once the connection is gone."""
        return self._ended.when_fired()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail everything still waiting on this connection."""
        self._lost = reason
        self._closing = True
        self._buffer.clear()
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        pongs, self._pongs = self._pongs, deque()
        for pong in pongs:
            pong.errback(reason)
        self._handshake.fire(reason)
        self._ended.fire(self._dropped_because or cast(BaseException, reason.value))

    def _log_unusable(self, subject: str, reason: str) -> None:
        self.log.warn("skipped an unusable NATS message on {subject}: {reason}", subject=subject, reason=reason)

    def _drop(self, why: str) -> None:
        """Close the connection after a protocol error; parse nothing more."""
        self.log.error("dropping NATS connection: {why}", why=why)
        self._closing = True
        self._dropped_because = NATSError(why)
        self._buffer.clear()
        self._connection().loseConnection()

    def _connection(self) -> ITCPTransport:
        """The transport, once connected (a TCP one, or another that can abort)."""
        assert self.transport is not None, "not connected"
        return cast(ITCPTransport, self.transport)

    def _send(self, data: bytes) -> None:
        self._connection().write(data)

    # Commands

    def _check_writable(self) -> None:
        """Commands may follow CONNECT, and must stop once the connection goes."""
        if not self._connect_sent or self._closing:
            raise NotConnected("no NATS connection")

    def subscribe(self, sid: int, subject: str, queue: str | None = None) -> None:
        """Ask for the messages on subject, delivered under sid."""
        check_subject(subject)
        self._check_writable()
        if queue is None:
            self._send(b"SUB %s %d\r\n" % (subject.encode(), sid))
        else:
            check_subject(queue, "queue group")
            self._send(b"SUB %s %s %d\r\n" % (subject.encode(), queue.encode(), sid))

    def unsubscribe(self, sid: int, max_msgs: int | None = None) -> None:
        """Stop sid now, or after it has delivered max_msgs in all."""
        self._check_writable()
        if max_msgs is None:
            self._send(b"UNSUB %d\r\n" % sid)
        else:
            self._send(b"UNSUB %d %d\r\n" % (sid, max_msgs))

    def publish(
        self,
        subject: str,
        payload: bytes,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send PUB, or HPUB when there are headers."""
        check_subject(subject)
        self._check_writable()
        head = subject.encode()
        if reply is not None:
            check_subject(reply, "reply subject")
            head += b" " + reply.encode()
        if headers:
            block = _encode_headers(headers)
            self._check_size(len(block) + len(payload))
            line = b"HPUB %s %d %d\r\n" % (head, len(block), len(block) + len(payload))
            self._send(b"".join((line, block, payload, _CRLF)))
        else:
            self._check_size(len(payload))
            line = b"PUB %s %d\r\n" % (head, len(payload))
            self._send(b"".join((line, payload, _CRLF)))

    def _check_size(self, size: int) -> None:
        """The server would close the connection on a message over max_payload."""
        if size > self.max_payload:
            raise ValueError(f"message of {size} bytes exceeds the server's max_payload of {self.max_payload}")

    def ping(self) -> Deferred[None]:
        """Send PING; fire on the PONG that answers it."""
        try:
            self._check_writable()
        except NotConnected:
            return fail()
        pong: Deferred[None] = Deferred()
        self._pongs.append(pong)
        self._send(b"PING\r\n")
        return pong

    def _send_connect(self, info: dict[str, Any]) -> None:
        """Answer the first INFO; the PONG to the PING after it ends the handshake."""
        options = dict(self._connect_options)
        if self._upgrade(info):
            options["tls_required"] = True
        if self._sign is not None:
            nonce = info.get("nonce")
            if not isinstance(nonce, str):
                raise _Refused("the server sent no nonce to sign: is the NKey or .creds user configured there?")
            options.update(self._sign(nonce))
        self._send(b"CONNECT " + json.dumps(options, separators=(",", ":")).encode() + _CRLF)
        self._connect_sent = True
        self.ping().addCallbacks(self._handshake_done, lambda _: None)

    def _upgrade(self, info: dict[str, Any]) -> bool:
        """Start TLS if we want it or the server requires it; say whether we did."""
        required = bool(info.get("tls_required"))
        if not (self._want_tls or required):
            return False
        if not (required or info.get("tls_available")):
            raise _Refused("the server does not offer TLS")
        if self._tls is None:
            raise _Refused("the server requires TLS")
        cast(ITLSTransport, self.transport).startTLS(self._tls())
        return True

    def _refuse(self, why: str) -> None:
        """End the handshake with ``why``: the owner says it (once), so it is not logged here."""
        self._handshake.fire(Failure(NATSError(why)))
        self._closing = True
        self._dropped_because = NATSError(why)
        self._buffer.clear()
        self._connection().loseConnection()

    def _handshake_done(self, _: None) -> None:
        self._keepalive = LoopingCall(self._send_keepalive)
        self._keepalive.clock = self._clock
        self._keepalive.start(self._ping_interval, now=False).addErrback(
            lambda f: self.log.failure("NATS keep-alive failed", f)
        )
        self._handshake.fire(self.server_info)

    def pause_reading(self, paused: bool) -> None:
        """Stop (or go on) reading from the server: NATS holds what monit cannot take yet."""
        self._reading_paused = paused
        producer = IPushProducer(self.transport, None)
        if producer is None:
            return  # type: ignore[unreachable]  # mypy-zope types an adaptation with a default as never None
        if paused:
            producer.pauseProducing()
        else:
            producer.resumeProducing()

    def _send_keepalive(self) -> None:
        """PING the server; drop a connection whose PINGs go unanswered.

        A server whose data is still coming in is alive, even if the PONGs
        wait behind megabytes of messages (a JetStream replay), and so is one
        monit is not reading from: neither is judged by its PONGs.
        """
        heard, self._heard = self._heard, False
        if self._pongs and (heard or self._reading_paused):
            return
        if len(self._pongs) >= self._max_outstanding_pings:
            self.log.warn(
                "NATS server did not answer {count} PINGs: dropping stale connection",
                count=len(self._pongs),
            )
            self._closing = True
            self._dropped_because = NATSError(f"no answer to {len(self._pongs)} PINGs")
            self._connection().abortConnection()
            return
        self.ping().addErrback(lambda _: None)

    # Parsing

    def dataReceived(self, data: bytes) -> None:
        """Parse every complete frame; keep the incomplete tail for later."""
        if self._closing:
            return
        self._heard = True
        buffer = self._buffer
        buffer += data
        try:
            consumed = self._parse(buffer)
        except (ValueError, IndexError) as error:
            self._drop(f"protocol error: {error}")
        except Exception:
            self.log.failure("NATS parser failed")
            self._drop("parser failure")
        else:
            del buffer[:consumed]

    def _parse(self, buf: bytearray) -> int:
        """Handle the complete frames in buf; return how many bytes they used."""
        pos = 0
        end = len(buf)
        on_message = self._on_message
        while not self._closing:
            eol = buf.find(b"\r\n", pos, pos + MAX_CONTROL_LINE)
            if eol < 0:
                if end - pos >= MAX_CONTROL_LINE:
                    raise _ProtocolViolation("control line too long")
                return pos
            args = buf[pos:eol].split()
            op = bytes(args[0]).upper() if args else b""
            if op != b"MSG" and op != b"HMSG":
                self._control(op, bytes(buf[pos:eol]))
                pos = eol + 2
                continue
            start = eol + 2
            stop = start + _size(args[-1])
            if stop + 2 > end:
                return pos
            if buf[stop] != 13 or buf[stop + 1] != 10:
                raise _ProtocolViolation("message payload not followed by CRLF")
            pos = stop + 2
            try:
                sid, msg = _message(op, args, buf, start, stop)
            except ValueError as error:
                self._on_unusable(bytes(args[1]).decode("utf-8", "replace") if len(args) > 1 else "", str(error))
                continue
            try:
                on_message(sid, msg)
            except Exception:
                self.log.failure("NATS message handler failed for {subject}", subject=msg.subject)
        return pos

    def _control(self, op: bytes, line: bytes) -> None:
        """Handle a frame without a payload."""
        if op == b"PING":
            self._send(b"PONG\r\n")
        elif op == b"PONG":
            if self._pongs:
                self._pongs.popleft().callback(None)
        elif op == b"INFO":
            self._info(line.partition(b" ")[2])
        elif op == b"+OK":
            pass
        elif op == b"-ERR":
            self._error(line.partition(b" ")[2].strip().strip(b"'").decode("utf-8", "replace"))
        else:
            raise _ProtocolViolation(f"unknown operation {op[:32]!r}")

    def _info(self, payload: bytes) -> None:
        info = json.loads(payload)
        if not isinstance(info, dict):
            raise _ProtocolViolation("INFO is not a JSON object")
        self.server_info = info
        self.max_payload = int(info.get("max_payload", SERVER_MAX_PAYLOAD))
        if self._on_info is not None:
            self._on_info(info)
        if not self._connect_sent:
            try:
                self._send_connect(info)
            except _Refused as refusal:
                self._refuse(str(refusal))

    def _error(self, text: str) -> None:
        """Log -ERR; drop the connection unless the server keeps it open.

        During the handshake it is a refusal (``Authorization Violation``):
        the owner, which tries again, says it once, not once per attempt.
        """
        if text.lower().startswith(_NON_FATAL_ERRORS):
            self.log.warn("NATS server error: {error}", error=text)
            return
        if not self._handshake.fired:
            self._refuse(text)
            return
        self._drop(f"server error: {text}")
