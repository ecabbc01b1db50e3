"""NATS played by the test, in one place.

The server's end of a connection, byte by byte on a StringTransport (``Peer`` for
the protocol alone, ``FakeServers`` for the reconnecting client on a fake
reactor), and fake clients for the code that only asks a client for requests and
subscriptions (``HandAnsweredNATS``, ``ScriptedNATS``, ``FakeJetStream``, ``LoopbackNATS``).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from monit.nats.client import NotConnected
from monit.nats.protocol import Msg, NATSProtocol

# What the server says first: Peer's server takes payloads of 1 KiB (the protocol tests reach
# its limit), FakeServers' 1 MiB.
PEER_INFO = b'INFO {"server_id":"S1","version":"2.10.0","max_payload":1024,"headers":true}\r\n'
SERVER_INFO = b'INFO {"server_id":"S","max_payload":1048576,"headers":true}\r\n'
# The JetStream API's answer for a stream that is not there.
NOT_FOUND = {"error": {"code": 404, "err_code": 10059, "description": "stream not found"}}


class ServerEnd:
    """The server's end of one connection on a StringTransport: the test feeds what a server says."""

    def __init__(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def feed(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.protocol.dataReceived(chunk)

    def sent(self) -> bytes:
        """What the protocol wrote since the last call."""
        value: bytes = self.transport.value()
        self.transport.clear()
        return value


class Peer(ServerEnd):
    """A NATSProtocol on a StringTransport, and every message it delivered."""

    protocol: NATSProtocol

    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self.received: list[tuple[int, Msg]] = []
        super().__init__(
            NATSProtocol(
                self.clock,
                lambda sid, msg: self.received.append((sid, msg)),
                options.pop("connect_options", {"name": "test"}),
                **options,
            )
        )

    def handshake(self) -> None:
        self.feed(PEER_INFO)
        self.sent()
        self.feed(b"PONG\r\n")

    def lose(self, reason: Exception | None = None) -> None:
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))


class Connection(ServerEnd):
    """One TCP connection the client asked the fake reactor for, on a StringTransport."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        host, port, factory, _, _ = reactor.tcpClients.pop(0)
        self.address = (host, port)
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert protocol is not None
        super().__init__(protocol)
        self.lost = False

    def handshake(self) -> bytes:
        """Play the server's part; return all the client sent meanwhile."""
        self.feed(SERVER_INFO)
        connect = self.sent()
        self.feed(b"PONG\r\n")
        resubscribe = self.sent()
        assert resubscribe.endswith(b"PING\r\n")
        self.feed(b"PONG\r\n")
        return connect + resubscribe

    def lose(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))


class FakeServers:
    """Hands out the connections a client makes on a MemoryReactorClock."""

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.connections: list[Connection] = []

    def accept(self) -> Connection:
        connection = Connection(self.reactor)
        self.connections.append(connection)
        return connection

    def refuse(self) -> None:
        """Refuse the pending attempt, as a host with nothing on the port does."""
        _, _, factory, _, _ = self.reactor.tcpClients.pop(0)
        # no connector: the client's factory does not read it
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))  # type: ignore[arg-type]
        self.reactor.advance(0.5)  # the endpoint gives up on that address

    def next_attempt(self) -> None:
        """Let the clock run until the client tries to connect again, whatever its backoff."""
        for _ in range(1000):
            if self.reactor.tcpClients:
                return
            self.reactor.advance(0.1)
        raise AssertionError("no new attempt to connect")

    def connected(self) -> Connection:
        """Accept the pending attempt and complete the handshake."""
        connection = self.accept()
        connection.handshake()
        return connection


@attrs.define
class HandAnsweredNATS:
    """Records requests; the test answers each one's Deferred."""

    requests: list[tuple[str, bytes, float, Deferred[Msg]]] = attrs.Factory(list)

    def when_connected(self) -> Deferred[None]:
        return succeed(None)

    def request(self, subject: str, payload: bytes, timeout: float) -> Deferred[Msg]:
        d: Deferred[Msg] = Deferred()
        self.requests.append((subject, payload, timeout, d))
        return d

    def reply(self, payload: bytes) -> None:
        subject = self.requests[-1][0]
        self.requests[-1][3].callback(Msg(subject, payload))

    def fail(self, error: Exception) -> None:
        self.requests[-1][3].errback(error)


class Subscriber(Protocol):
    subscriptions: dict[str, Subscription]


@attrs.define
class Subscription:
    subject: str
    callback: Any
    client: Subscriber

    def unsubscribe(self) -> None:
        self.client.subscriptions.pop(self.subject, None)


class Subscribing:
    """A fake client's subscriptions: one per subject, as a consumer makes them."""

    subscriptions: dict[str, Subscription]

    def subscribe(self, subject: str, callback: Any) -> Subscription:
        self.subscriptions[subject] = Subscription(subject, callback, self)
        return self.subscriptions[subject]


@attrs.define
class ScriptedNATS(Subscribing):
    """Records what the consumer asks of NATS; the test plays the server, with answers by API call."""

    answers: dict[str, list[Any]] = attrs.Factory(dict)
    requests: list[tuple[str, dict | None]] = attrs.Factory(list)
    subscriptions: dict[str, Subscription] = attrs.Factory(dict)
    published: list[tuple[str, bytes]] = attrs.Factory(list)
    reconnects: int = 0

    def request(self, subject: str, payload: bytes = b"", timeout: float | None = None) -> Deferred[Msg]:
        self.requests.append((subject, json.loads(payload) if payload else None))
        answer = self.answers.get(subject.split(".")[2] + "." + subject.split(".")[3], [{}]).pop(0)
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(Msg(subject, json.dumps(answer).encode()))

    def publish(self, subject: str, payload: bytes, reply: str | None = None) -> None:
        self.published.append((subject, payload))

    def deliver(self, stream_seq: int, consumer_seq: int, payload: bytes = b"{}") -> None:
        [subscription] = self.subscriptions.values()
        reply = f"$JS.ACK.S.c.1.{stream_seq}.{consumer_seq}.{stream_seq * 10**9}.0"
        subscription.callback(Msg("monitor.user", payload, reply))

    def control(self, description: str, reply: str | None = None, **headers: str) -> None:
        [subscription] = self.subscriptions.values()
        subscription.callback(Msg(subscription.subject, b"", reply, headers, 100, description))

    def consumers(self) -> list[dict]:
        return [body["config"] for subject, body in self.requests if body is not None and "CONSUMER.CREATE" in subject]


@attrs.define
class FakeJetStream(Subscribing):
    """A NATS client whose JetStream API is a dict the test changes: ``stream`` (None: gone)."""

    stream: dict | None
    create_error: dict | None = None
    consumers: list[dict] = attrs.Factory(list)
    subscriptions: dict[str, Subscription] = attrs.Factory(dict)
    reconnects: int = 0

    def when_connected(self) -> Deferred[None]:
        return succeed(None)

    def request(self, subject: str, payload: bytes = b"", timeout: float | None = None) -> Deferred[Msg]:
        api = subject.removeprefix("$JS.API.")
        body: Any = json.loads(payload) if payload else None
        answer: dict
        if api.startswith("STREAM.INFO."):
            answer = self.stream if self.stream is not None else NOT_FOUND
        elif api.startswith("STREAM.CREATE."):
            answer = self.create_error or self.made(body)
        elif api.startswith("CONSUMER.CREATE."):
            self.consumers.append(body["config"])
            answer = {"name": f"c{len(self.consumers)}"}
        else:
            answer = {}
        return succeed(Msg(subject, json.dumps(answer).encode()))

    def made(self, config: dict) -> dict:
        self.stream = {"created": "made by monit", "config": config, "state": {"messages": 0, "last_seq": 0}}
        return self.stream

    def publish(self, subject: str, payload: bytes, reply: str | None = None) -> None:
        pass

    def deliver(self, stream_seq: int, consumer_seq: int, job: str = "job") -> None:
        [subscription] = self.subscriptions.values()
        reply = f"$JS.ACK.S.c.1.{stream_seq}.{consumer_seq}.{1_000 * 10**9}.0"  # stored when the clock starts
        payload = json.dumps({"id": job, "messages": [{"seq": stream_seq}]}).encode()
        subscription.callback(Msg("monitor.user", payload, reply))


class LoopbackNATS:
    """Hears what is published on what it was subscribed to, when ``echo`` is on; ``connected`` may be off."""

    def __init__(self) -> None:
        self.echo = True
        self.connected = True
        self.published: list[tuple[str, bytes]] = []
        self.callbacks: dict[str, Any] = {}

    def subscribe(self, subject: str, callback: Any) -> Any:
        self.callbacks[subject] = callback
        nats = self

        class Subscription:
            def unsubscribe(self) -> None:
                nats.callbacks.pop(subject, None)

        return Subscription()

    def publish(self, subject: str, payload: bytes) -> None:
        if not self.connected:
            raise NotConnected("not connected to NATS")
        self.published.append((subject, payload))

    def deliver_all(self) -> None:
        published, self.published = self.published, []
        for subject, payload in published:
            if self.echo and subject in self.callbacks:
                self.callbacks[subject](Msg(subject, payload))
