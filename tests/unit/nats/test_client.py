"""The reconnecting NATS client: deterministic tests on a fake reactor."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IResolutionReceiver
from twisted.logger import formatEvent, globalLogPublisher
from zope.interface import implementer

from monit.nats.client import NATSClient
from monit.nats.protocol import Msg, NoResponders, NotConnected, RequestTimeout

from fakenats import SERVER_INFO, Connection, FakeServers
from logged import observer

URL = "nats://127.0.0.1:4222"
MAX_DELAY = 2.0
# Long enough for any retry: the backoff is capped at MAX_DELAY, plus up to 1s of jitter.
RETRY = MAX_DELAY + 1.0


def results(d: Deferred[Any]) -> list[Any]:
    """What the Deferred fired with so far (a result or a Failure), as a list of 0 or 1 items."""
    out: list[Any] = []
    d.addBoth(out.append)
    return out


@pytest.fixture
def servers() -> FakeServers:
    return FakeServers()


@pytest.fixture
def make_client(servers: FakeServers) -> Iterator[Callable[..., NATSClient]]:
    """Start clients on the fake reactor; stop them and check nothing is left scheduled."""
    clients: list[NATSClient] = []

    def make(*urls: str, **options: Any) -> NATSClient:
        options.setdefault("initial_delay", 0.5)
        options.setdefault("max_delay", MAX_DELAY)
        options.setdefault("request_timeout", 1.0)
        client = NATSClient(list(urls or [URL]), servers.reactor, **options)
        client.startService()
        clients.append(client)
        return client

    yield make
    for client in clients:
        stopped = results(client.stopService())
        for connection in servers.connections:
            connection.lose()
        assert stopped == [None]
    assert servers.reactor.getDelayedCalls() == []


@pytest.fixture
def client(make_client: Callable[..., NATSClient]) -> NATSClient:
    return make_client()


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(observer(events.append))
    yield events
    globalLogPublisher.removeObserver(observer(events.append))


def sent_lines(connection: Connection) -> list[bytes]:
    return connection.sent().split(b"\r\n")[:-1]


# Connecting


def test_connected_after_the_handshake(servers: FakeServers, client: NATSClient) -> None:
    waiting = results(client.when_connected())
    connection = servers.accept()
    assert connection.address == ("127.0.0.1", 4222)
    assert not client.connected and waiting == []
    connection.handshake()
    assert client.connected and waiting == [None]
    assert client.url == URL
    assert client.reconnects == 0
    assert results(client.when_connected()) == [None]


def test_subscriptions_are_sent_again_after_a_reconnect(servers: FakeServers, client: NATSClient) -> None:
    received: list[Msg] = []
    first = servers.connected()
    client.subscribe("a.*", received.append)
    gone = client.subscribe("gone", received.append)
    assert sent_lines(first) == [b"SUB a.* 1", b"SUB gone 2"]
    gone.unsubscribe()
    gone.unsubscribe()
    assert sent_lines(first) == [b"UNSUB 2"]

    first.lose()
    assert not client.connected and client.url is None
    client.subscribe("b", received.append, queue="workers")
    servers.reactor.advance(RETRY)
    second = servers.accept()
    second.feed(SERVER_INFO)
    assert sent_lines(second)[1:] == [b"PING"]
    second.feed(b"PONG\r\n")
    assert sent_lines(second) == [b"SUB a.* 1", b"SUB b workers 3", b"PING"]
    assert not client.connected
    second.feed(b"PONG\r\n")
    assert client.connected and client.reconnects == 1

    second.feed(b"MSG a.x 1 2\r\nhi\r\nMSG gone 2 0\r\n\r\nMSG b 3 0\r\n\r\n")
    assert received == [Msg("a.x", b"hi"), Msg("b", b"")]


def test_subscription_changes_while_connecting_are_sent(servers: FakeServers, client: NATSClient) -> None:
    old = client.subscribe("old", lambda msg: None)
    connection = servers.accept()
    connection.feed(SERVER_INFO + b"PONG\r\n")
    assert sent_lines(connection)[-2:] == [b"SUB old 1", b"PING"]
    old.unsubscribe()
    client.subscribe("new", lambda msg: None)
    connection.feed(b"PONG\r\n")
    assert client.connected
    assert sent_lines(connection) == [b"UNSUB 1", b"SUB new 2"]


def test_when_connected_waits_for_the_next_connection(servers: FakeServers, client: NATSClient) -> None:
    servers.connected().lose()
    waiting = results(client.when_connected())
    servers.reactor.advance(RETRY)
    servers.connected()
    assert waiting == [None]


def test_urls_are_tried_in_turn(servers: FakeServers, make_client: Callable[..., NATSClient]) -> None:
    # The fake reactor resolves every host to 127.0.0.1: tell them apart by port.
    make_client("nats://127.0.0.1:4223", "nats://localhost")
    first = servers.accept()
    assert first.address == ("127.0.0.1", 4223)
    first.lose()
    servers.reactor.advance(RETRY)
    second = servers.accept()
    assert second.address == ("127.0.0.1", 4222)
    second.lose()
    servers.reactor.advance(RETRY)
    assert servers.accept().address == ("127.0.0.1", 4223)


def test_credentials_go_into_connect_and_never_into_logs(
    servers: FakeServers, make_client: Callable[..., NATSClient], log_events: list
) -> None:
    client = make_client("nats://alice:s3cret@127.0.0.1:4222", name="watcher")
    connection = servers.accept()
    connect = connection.handshake()
    assert b'"user":"alice","pass":"s3cret"' in connect
    assert b'"name":"watcher"' in connect
    assert client.url == "nats://alice:***@127.0.0.1:4222"
    connection.lose()
    logged = " ".join(formatEvent(event) for event in log_events)
    assert "connected to NATS at nats://alice:***@127.0.0.1:4222" in logged
    assert "the NATS server at nats://alice:***@127.0.0.1:4222 closed the connection" in logged
    assert "s3cret" not in logged + repr(log_events)


def test_why_connecting_fails_is_said_once_per_reason_not_once_per_retry(
    servers: FakeServers, client: NATSClient, log_events: list
) -> None:
    for _attempt in range(5):
        servers.refuse()
        servers.next_attempt()
    said = [
        formatEvent(e) for e in log_events if e.get("log_namespace", "").startswith(("monit", "twisted.application"))
    ]
    assert said == [
        "cannot connect to NATS at nats://127.0.0.1:4222: Connection was refused by other side"
        "; trying again with backoff"
    ], said
    assert client.problem == said[0].removesuffix("; trying again with backoff")
    connection = servers.accept()
    connection.handshake()
    connection.lose()  # after a connection, the same reason is said again when it comes back
    servers.next_attempt()
    servers.refuse()
    said = [formatEvent(e) for e in log_events if "cannot connect" in formatEvent(e)]
    assert len(said) == 2


@implementer(IHostResolution)
class _Lookup:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class _LookupsThatNeverEnd:
    """A name resolver whose lookups are still going when the client stops."""

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        lookup = _Lookup(hostName)
        resolutionReceiver.resolutionBegan(lookup)
        return lookup


def test_stopping_while_the_host_is_looked_up_says_nothing_against_nats(servers: FakeServers, log_events: list) -> None:
    """Twisted's HostnameEndpoint fails a cancelled lookup with "DNS lookup failed" (twisted#9696)."""
    servers.reactor.installNameResolver(_LookupsThatNeverEnd())
    client = NATSClient([URL], servers.reactor, request_timeout=1.0)
    client.startService()
    assert results(client.stopService()) == [None]
    said = [formatEvent(e) for e in log_events if e.get("log_namespace", "").startswith("monit")]
    assert said == [], said
    assert servers.reactor.getDelayedCalls() == []


def test_token_goes_into_connect(servers: FakeServers, make_client: Callable[..., NATSClient]) -> None:
    client = make_client("nats://t0ken@127.0.0.1:4222")
    assert b'"auth_token":"t0ken"' in servers.accept().handshake()
    assert client.url == "nats://***@127.0.0.1:4222"


@pytest.mark.parametrize("url", ["http://127.0.0.1:4222", "127.0.0.1:4222", "nats://:4222"])
def test_unsupported_urls_are_refused(url: str, servers: FakeServers) -> None:
    with pytest.raises(ValueError):
        NATSClient([url], servers.reactor, request_timeout=2.0)


def test_a_failed_handshake_is_retried(servers: FakeServers, client: NATSClient, log_events: list) -> None:
    connection = servers.accept()
    connection.feed(SERVER_INFO + b"-ERR 'Authorization Violation'\r\n")
    assert connection.transport.disconnecting
    connection.lose()
    assert not client.connected
    assert not [e for e in log_events if "log_failure" in e]
    servers.reactor.advance(RETRY)
    servers.connected()
    assert client.connected and client.reconnects == 0


def test_a_handshake_that_never_ends_is_dropped(servers: FakeServers, client: NATSClient) -> None:
    connection = servers.accept()
    connection.feed(SERVER_INFO)
    servers.reactor.advance(30)
    assert connection.transport.disconnecting
    connection.lose()
    servers.reactor.advance(RETRY)
    servers.connected()
    assert client.connected


def test_stop_during_the_handshake(servers: FakeServers, client: NATSClient) -> None:
    connection = servers.accept()
    connection.feed(SERVER_INFO)
    stopped = results(client.stopService())
    assert connection.transport.disconnecting
    connection.lose()
    assert stopped == [None]


# Publishing


def test_publish(servers: FakeServers, client: NATSClient) -> None:
    with pytest.raises(NotConnected):
        client.publish("a", b"x")
    connection = servers.connected()
    client.publish("a", b"x", reply="r", headers={"K": "v"})
    assert connection.sent() == b"HPUB a r 18 19\r\nNATS/1.0\r\nK: v\r\n\r\nx\r\n"


def test_a_bad_subject_is_refused_even_when_disconnected(client: NATSClient) -> None:
    with pytest.raises(ValueError):
        client.subscribe("a b", lambda msg: None)


# Requests


def inbox_and_request(connection: Connection) -> tuple[bytes, bytes]:
    """The inbox subscription's sid and the request's reply subject, from what was sent."""
    sub, pub, payload = sent_lines(connection)
    _, inbox, sid = sub.split()
    _, _, reply, _ = pub.split()
    assert reply.startswith(inbox[:-1]) and inbox.endswith(b".*")
    return sid, reply


def test_request_and_reply(servers: FakeServers, client: NATSClient) -> None:
    connection = servers.connected()
    answer = results(client.request("svc", b"question"))
    sid, reply = inbox_and_request(connection)
    connection.feed(b"MSG %s %s 6\r\nanswer\r\n" % (reply, sid))
    assert answer == [Msg(reply.decode(), b"answer")]


def test_requests_share_one_inbox(servers: FakeServers, client: NATSClient) -> None:
    connection = servers.connected()
    first, second = results(client.request("svc")), results(client.request("svc"))
    lines = sent_lines(connection)
    assert [line[:3] for line in lines] == [b"SUB", b"PUB", b"", b"PUB", b""]
    sid = lines[0].split()[2]
    second_reply = lines[3].split()[2]
    connection.feed(b"MSG %s %s 1\r\n2\r\n" % (second_reply, sid))
    assert first == [] and second[0].payload == b"2"


def test_request_timeout(servers: FakeServers, client: NATSClient) -> None:
    servers.connected()
    answer = results(client.request("svc", timeout=0.5))
    servers.reactor.advance(0.4)
    assert answer == []
    servers.reactor.advance(0.2)
    assert answer[0].check(RequestTimeout)


def test_no_responders(servers: FakeServers, client: NATSClient) -> None:
    connection = servers.connected()
    answer = results(client.request("nobody"))
    sid, reply = inbox_and_request(connection)
    connection.feed(b"HMSG %s %s 16 16\r\nNATS/1.0 503\r\n\r\n\r\n" % (reply, sid))
    assert answer[0].check(NoResponders)


def test_cancel_a_request(servers: FakeServers, client: NATSClient) -> None:
    connection = servers.connected()
    request = client.request("svc")
    answer = results(request)
    sid, reply = inbox_and_request(connection)
    request.cancel()
    assert answer[0].check(CancelledError)
    connection.feed(b"MSG %s %s 4\r\nlate\r\n" % (reply, sid))


def test_a_request_waits_for_a_connection(servers: FakeServers, client: NATSClient) -> None:
    answer = results(client.request("svc", b"q"))
    connection = servers.accept()
    connection.handshake()
    sid, reply = inbox_and_request(connection)
    connection.feed(b"MSG %s %s 1\r\n!\r\n" % (reply, sid))
    assert answer[0].payload == b"!"


def test_a_request_times_out_waiting_for_a_connection(servers: FakeServers, client: NATSClient) -> None:
    answer = results(client.request("svc", b"q"))
    servers.reactor.advance(1.0)
    assert answer[0].check(RequestTimeout)
    connection = servers.connected()
    assert connection.sent() == b""


def test_a_request_too_big_fails(servers: FakeServers, client: NATSClient) -> None:
    servers.accept().handshake()
    answer = results(client.request("svc", b"x" * (1024 * 1024 + 1)))
    assert isinstance(answer[0].value, ValueError)


def test_stop_fails_pending_requests(servers: FakeServers, client: NATSClient) -> None:
    connection = servers.connected()
    waiting = results(client.request("svc"))
    stopped = results(client.stopService())
    assert connection.transport.disconnecting
    connection.lose()
    assert stopped == [None]
    assert waiting[0].check(NotConnected)
    assert servers.reactor.getDelayedCalls() == []


def test_servers_learnt_from_info_take_the_credentials_and_are_tried_next(
    servers: FakeServers, make_client: Callable[..., NATSClient]
) -> None:
    client = make_client("nats://u:pw@seed.example:4222")
    connection = servers.accept()
    connection.feed(
        b'INFO {"server_id":"S","connect_urls":["10.0.0.2:4222","[::1]:4223","seed.example:4222",7,":x"]}\r\n'
    )
    assert client.servers == [
        "nats://u:***@seed.example:4222",
        "nats://u:***@10.0.0.2:4222",
        "nats://u:***@[::1]:4223",
    ]
    assert b'"user":"u","pass":"pw"' in connection.sent()
    connection.lose()
    servers.next_attempt()
    assert b'"user":"u","pass":"pw"' in servers.accept().handshake()
    assert client.url == "nats://u:***@10.0.0.2:4222"


def test_a_signer_answers_the_nonce_and_no_nonce_is_a_clear_refusal(
    servers: FakeServers, make_client: Callable[..., NATSClient]
) -> None:
    from monit.nats.nkeys import NATSUser, NKey

    from pki import USER, KeyPair

    key = KeyPair(USER)
    client = make_client(user=NATSUser(NKey.from_seed(key.seed)))
    connection = servers.accept()
    connection.feed(b'INFO {"server_id":"S","nonce":"abc"}\r\n')
    connect = json.loads(connection.sent().split(b"\r\n")[0].partition(b" ")[2])
    assert connect["nkey"] == key.public
    signature = base64.urlsafe_b64decode(connect["sig"] + "==")
    key.private.public_key().verify(signature, b"abc")  # raises if it is not the nonce's signature
    connection.lose()
    servers.next_attempt()
    unsigned = servers.accept()
    unsigned.feed(SERVER_INFO)
    assert unsigned.transport.disconnecting and b"CONNECT" not in unsigned.sent()
    assert "no nonce" in (client.problem or "")
