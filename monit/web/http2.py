"""HTTP/2 over TLS: what a connection that chose ``h2`` by ALPN becomes.

Twisted speaks HTTP/2 with ``twisted.web._http2.H2Connection`` (it needs the
``h2`` package: the ``http2`` extra). This is that connection with the bounds
an HTTP/1.1 connection to monit has:

- it counts as one connection (``--max-connections``), and carries at most
  ``MAX_STREAMS`` streams at once (its ``SETTINGS_MAX_CONCURRENT_STREAMS``);
- with no stream open, its next request must come within the head deadline;
- a request that announces a body gets 413 on its stream, and the body is not read;
- Twisted's idle timeout (the site's ``timeOut``, which is the head deadline)
  becomes a few keep-alive intervals: kept-alive streams are never timed out;
- a full socket pauses every stream, as it pauses an HTTP/1.1 response, not
  only those whose flow-control window is spent: a reader that takes nothing
  is found whatever window it offered;
- at shutdown it says GOAWAY and closes once every stream has sent its end.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection
from twisted.web.http import HTTPChannel

MAX_STREAMS = 100  # streams one connection may have open at once (Chromium opens up to 100 before it waits)


class Host(Protocol):
    """What an HTTP/2 connection needs of its site (``monit.web.site.MonitSite``)."""

    clock: IReactorTime
    idle_timeout: float
    refused: Counter[int]

    def start_head_deadline(self, channel: Any) -> None: ...

    def stop_head_deadline(self, channel: Any) -> None: ...

    def replaced(self, old: Any, new: Any) -> None: ...

    def channel_closed(self, channel: Any) -> None: ...


class MonitH2Connection(H2Connection):
    """Twisted's HTTP/2 connection, bounded as the module docstring says."""

    site: Host  # type: ignore[assignment]  # Twisted's is None until a factory sets it
    _closing = False  # shutting down: GOAWAY once the last stream has ended

    def __init__(self, reactor: IReactorTime) -> None:
        super().__init__(reactor)
        # The settings h2 would announce, with our bound on streams made explicit.
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
            },
        )

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.start_head_deadline(self)

    def connectionLost(self, reason: Failure = connectionDone, _cancelTimeouts: bool = True) -> None:
        self.site.stop_head_deadline(self)
        super().connectionLost(reason, _cancelTimeouts)
        self.site.channel_closed(self)

    def pauseProducing(self) -> None:
        """The socket is full: every stream's producer waits, as an HTTP/1.1 response's would."""
        super().pauseProducing()
        for stream in tuple(self.streams.values()):
            stream.flowControlBlocked()

    def resumeProducing(self) -> None:
        super().resumeProducing()
        for stream in tuple(self.streams.values()):
            stream.windowUpdated()  # resumes those whose window has room

    def remainingOutboundWindow(self, streamID: int) -> int:
        """Twisted's, which its send loop asks after each frame: a stream whose window is now
        spent also leaves the loop until a WINDOW_UPDATE gives it room. Twisted's loop would
        pick it again and again, sending nothing, a reactor turn each: a core's worth of CPU
        for one reader that stopped reading."""
        remaining: int = super().remainingOutboundWindow(streamID)
        if remaining <= 0 and self.conn.local_flow_control_window(streamID) <= 0:
            self.priority.block(streamID)
        return remaining

    def _handleWindowUpdate(self, event: h2.events.WindowUpdated) -> None:
        super()._handleWindowUpdate(event)
        waiting = self._sendingDeferred
        if waiting is not None and any(self._outboundStreamQueues.values()):
            self._sendingDeferred = None  # the send loop waits for work: there is some now
            waiting.callback(None)

    def _requestReceived(self, event: h2.events.RequestReceived) -> None:
        if _announces_body(event):
            self._refuse_stream(event.stream_id, 413, "monit takes no request bodies")
            return
        self.site.stop_head_deadline(self)
        super()._requestReceived(event)

    def _requestDataReceived(self, event: h2.events.DataReceived) -> None:
        if event.stream_id in self.streams:
            super()._requestDataReceived(event)
        else:  # the body of a refused request: dropped, but it used the connection's window
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def _requestEnded(self, event: h2.events.StreamEnded) -> None:
        if event.stream_id in self.streams:
            super()._requestEnded(event)

    def _requestAborted(self, event: h2.events.StreamReset) -> None:
        if event.stream_id in self.streams:
            super()._requestAborted(event)

    def _requestDone(self, streamID: int) -> None:
        super()._requestDone(streamID)
        if self.streams or not self._stillProducing:
            return
        if self._closing:
            self._go_away()
        else:
            self.site.start_head_deadline(self)

    def close_when_done(self) -> None:
        """Shutdown: GOAWAY and close once every open stream has sent its end."""
        self._closing = True
        if not self.streams:
            self._go_away()

    def _refuse(self, code: int, message: str) -> None:
        """No request came in time: GOAWAY, saying why, and close (counted as a refusal)."""
        self.site.refused[code] += 1
        self._go_away(message)

    def _refuse_stream(self, stream_id: int, code: int, message: str) -> None:
        """A short JSON error on this stream alone, which is then reset: what the client sends on it is dropped."""
        body = json.dumps({"error": message}).encode()
        fits = self.conn.local_flow_control_window(stream_id) >= len(body)
        headers = [(b":status", b"%d" % code), (b"content-type", b"application/json")]
        if fits:
            headers.append((b"content-length", b"%d" % len(body)))
        self.conn.send_headers(stream_id, headers, end_stream=not fits)
        if fits:
            self.conn.send_data(stream_id, body, end_stream=True)
        try:
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.StreamClosedError:
            pass  # its body had all come already: the stream is over
        self.site.refused[code] += 1
        self._tryToWriteControlData()

    def _go_away(self, why: str = "") -> None:
        if self.transport is None or not self._stillProducing:
            return
        self.conn.close_connection(additional_data=why.encode() or None)
        self._tryToWriteControlData()
        self.transport.loseConnection()


def _announces_body(event: h2.events.RequestReceived) -> bool:
    """A length over zero, or DATA frames to come of a length not given."""
    for name, value in event.headers:
        if name == b"content-length":
            return value.strip() != b"0"
    return event.stream_ended is None


def take_over(channel: HTTPChannel, site: Host) -> MonitH2Connection:
    """Hand a connection whose TLS handshake chose h2 from its HTTP/1.1 channel (which has read nothing) to HTTP/2."""
    transport = channel.transport
    if not isinstance(transport, ProtocolWrapper):
        raise TypeError(f"HTTP/2 needs a TLS transport that wraps its protocol, not {transport!r}")
    site.stop_head_deadline(channel)
    channel.setTimeout(None)
    transport.unregisterProducer()  # the channel was the transport's producer
    connection = MonitH2Connection(site.clock)
    connection.requestFactory = channel.requestFactory
    connection.site = site
    connection.factory = channel.factory
    connection.timeOut = site.idle_timeout
    connection.callLater = channel.callLater
    site.replaced(channel, connection)
    transport.wrappedProtocol = connection
    connection.makeConnection(transport)
    transport.registerProducer(connection, True)
    return connection


def refusal(message: str) -> bytes:
    """A whole HTTP/2 answer to a connection past a cap: the server's preface, then GOAWAY saying why."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    connection.initiate_connection()
    connection.close_connection(h2.errors.ErrorCodes.REFUSED_STREAM, additional_data=message.encode())
    return bytes(connection.data_to_send())
