"""The connection to Redis (monit.auth.redis_connection): the handshake, reconnecting after any failure
with backoff (a timed-out AUTH or SELECT included), refusals, the problem it reports, and the log.
A fake endpoint hands out StringTransports; the clock is fake."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransportWithDisconnection
from twisted.logger import LogLevel, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from monit.auth.redis_connection import (
    MAX_VALUE_BYTES,
    RETRY_REFUSED,
    NotConnected,
    RedisConnection,
    RedisTarget,
)
from monit.auth.resp import ConnectionLost, Oversized, RedisProtocol

from deferreds import result_of

TIMEOUT = 2.0


@implementer(IStreamClientEndpoint)
class Endpoint:
    """Connects at once to a StringTransport (or refuses, or hangs, as told); keeps each one."""

    def __init__(self) -> None:
        self.refuse = False
        self.hang = False
        self.connections: list[tuple[RedisProtocol, StringTransportWithDisconnection]] = []
        self.hanging: list[Deferred] = []
        self.attempts = 0

    def connect(self, factory) -> Deferred:
        self.attempts += 1
        if self.refuse:
            return fail(ConnectionRefusedError("Connection refused"))
        if self.hang:
            d: Deferred = Deferred()
            self.hanging.append(d)
            return d
        protocol = factory.buildProtocol(None)
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)

    @property
    def last(self) -> tuple[RedisProtocol, StringTransportWithDisconnection]:
        return self.connections[-1]

    def sent(self) -> list[list[bytes]]:
        """The commands the newest connection was sent, each as its arguments."""
        data = self.last[1].value()
        commands = []
        while data:
            header, data = data.split(b"\r\n", 1)
            arguments = []
            for _ in range(int(header[1:])):
                length, data = data.split(b"\r\n", 1)
                arguments.append(data[: int(length[1:])])
                data = data[int(length[1:]) + 2 :]
            commands.append(arguments)
        return commands

    def answer(self, *replies: bytes) -> None:
        self.last[0].dataReceived(b"".join(replies))


class Delays:
    """A backoff policy that says what it was asked: the attempt counts, one delay each."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def __call__(self, failures: int) -> float:
        self.asked.append(failures)
        return float(failures)


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


@pytest.fixture
def delays() -> Delays:
    return Delays()


def connection_to(url: str, endpoint: Endpoint, clock: Clock, delays: Delays) -> RedisConnection:
    connection = RedisConnection(RedisTarget.from_url(url), endpoint, clock, TIMEOUT, backoff=delays)
    connection.startService()
    return connection


def said(events: EventLoggingObserver) -> list[str]:
    return [
        formatEvent(event)
        for event in events
        if event["log_level"] >= LogLevel.info
        and event.get("log_namespace", "").startswith("monit.auth.redis_connection")
    ]


# The URL


@pytest.mark.parametrize(
    "url, target",
    [
        ("redis://127.0.0.1:6390/2", RedisTarget("127.0.0.1", 6390, 2)),
        ("redis://cache.internal", RedisTarget("cache.internal", 6379, 0)),
        ("redis://:s3cr%2Ft@[::1]:7000/15", RedisTarget("::1", 7000, 15, "s3cr/t")),
        ("rediss://cache.internal:6380/1", RedisTarget("cache.internal", 6380, 1, tls=True)),
        ("rediss://monit:pw%40x@cache.internal", RedisTarget("cache.internal", 6379, 0, "pw@x", "monit", True)),
        ("redis://ops%2Fmonit:pw@cache.internal/3", RedisTarget("cache.internal", 6379, 3, "pw", "ops/monit")),
    ],
)
def test_the_url_names_host_port_db_user_password_and_tls(url: str, target: RedisTarget) -> None:
    assert RedisTarget.from_url(url) == target


def test_logs_show_the_user_never_the_password() -> None:
    target = RedisTarget.from_url("rediss://monit:pw-sekrit@cache.internal:6380/3")
    assert str(target) == "rediss://monit@cache.internal:6380/3"
    assert "pw-sekrit" not in repr(target)


@pytest.mark.parametrize(
    "url, handshake",
    [
        ("redis://cache", [[b"PING"]]),
        ("redis://:pw@cache", [[b"AUTH", b"pw"]]),
        ("redis://monit:pw@cache/4", [[b"AUTH", b"monit", b"pw"], [b"SELECT", b"4"]]),
        ("redis://cache/4", [[b"SELECT", b"4"]]),
    ],
)
def test_each_connection_is_proven_before_use(url: str, handshake: list[list[bytes]]) -> None:
    assert [list(step) for step in RedisTarget.from_url(url).handshake()] == handshake


# The handshake


def test_a_lookup_waits_for_auth_and_select_then_goes(endpoint: Endpoint, clock: Clock, delays: Delays) -> None:
    connection = connection_to("redis://monit:pw@cache/4", endpoint, clock, delays)
    lookup = connection.get(b"tok")
    assert endpoint.sent() == [[b"AUTH", b"monit", b"pw"]]
    assert connection.problem == "not connected yet"
    endpoint.answer(b"+OK\r\n")
    assert endpoint.sent()[1:] == [[b"SELECT", b"4"]] and not lookup.called
    endpoint.answer(b"+OK\r\n")
    assert endpoint.sent()[2:] == [[b"GET", b"tok"]] and connection.problem is None
    endpoint.answer(b"$5\r\nalice\r\n")
    assert result_of(lookup) == b"alice"
    connection.get(b"another")
    assert endpoint.sent()[3:] == [[b"GET", b"another"]], "sent at once on the ready connection"


def test_a_value_too_long_to_be_a_name_is_skipped(endpoint: Endpoint, clock: Clock, delays: Delays) -> None:
    connection = connection_to("redis://cache", endpoint, clock, delays)
    endpoint.answer(b"+PONG\r\n")
    lookup = connection.get(b"tok")
    endpoint.answer(b"$%d\r\n" % (MAX_VALUE_BYTES + 1), b"v" * (MAX_VALUE_BYTES + 1), b"\r\n")
    assert result_of(lookup) == Oversized(MAX_VALUE_BYTES + 1)


@pytest.mark.parametrize(
    "url, stalls",
    [
        ("redis://:pw@cache/2", "AUTH"),
        ("redis://cache/2", "SELECT"),
        ("redis://cache", "PING"),
    ],
)
def test_a_handshake_that_gets_no_answer_is_tried_again_and_again_until_redis_answers(
    endpoint: Endpoint, clock: Clock, delays: Delays, events: EventLoggingObserver, url: str, stalls: str
) -> None:
    connection = connection_to(url, endpoint, clock, delays)
    steps = RedisTarget.from_url(url).handshake()
    for attempt in range(1, 6):
        assert len(endpoint.connections) == attempt
        for step in steps:  # every step before the stalled one is answered
            if step[0].decode() == stalls:
                break
            endpoint.answer(b"+OK\r\n")
        clock.advance(TIMEOUT)
        assert endpoint.last[1].disconnected, "the stalled connection is aborted"
        assert connection.problem == f"no answer to {stalls} in 2 s"
        clock.advance(attempt)  # the backoff
    assert delays.asked == [1, 2, 3, 4, 5]
    for _ in steps:
        endpoint.answer(b"+OK\r\n")
    assert connection.problem is None
    assert said(events) == [
        f"cannot look tokens up in Redis at {RedisTarget.from_url(url)}: no answer to {stalls} in 2 s; "
        "token checks answer 503 until it answers",
        f"Redis at {RedisTarget.from_url(url)} answers again",
    ]


def test_a_lookup_that_gets_no_answer_drops_the_connection_and_another_is_made(
    endpoint: Endpoint, clock: Clock, delays: Delays, events: EventLoggingObserver
) -> None:
    connection = connection_to("redis://cache", endpoint, clock, delays)
    endpoint.answer(b"+PONG\r\n")
    stuck = connection.get(b"tok")
    clock.advance(TIMEOUT)
    with pytest.raises(ConnectionLost, match="no answer to GET in 2 s"):
        result_of(stuck)
    assert connection.problem == "no answer to GET in 2 s"
    clock.advance(1)
    assert len(endpoint.connections) == 2
    endpoint.answer(b"+PONG\r\n")
    assert connection.problem is None and delays.asked == [1]


def test_a_lookup_waits_for_a_connection_no_longer_than_the_timeout(
    endpoint: Endpoint, clock: Clock, delays: Delays
) -> None:
    endpoint.refuse = True
    connection = connection_to("redis://cache", endpoint, clock, delays)
    lookup = connection.get(b"tok")
    clock.advance(TIMEOUT)
    with pytest.raises(NotConnected, match="^Connection was refused"):
        result_of(lookup)
    assert connection.problem is not None and connection.problem.startswith("Connection was refused")


def test_a_lookup_waiting_is_sent_on_the_next_connection(endpoint: Endpoint, clock: Clock, delays: Delays) -> None:
    endpoint.refuse = True
    connection = connection_to("redis://cache", endpoint, clock, delays)
    lookup = connection.get(b"tok")
    endpoint.refuse = False
    clock.advance(1)
    endpoint.answer(b"+PONG\r\n")
    assert endpoint.sent()[1:] == [[b"GET", b"tok"]]
    endpoint.answer(b"$3\r\nbob\r\n")
    assert result_of(lookup) == b"bob"


def test_connecting_backs_off_and_each_reason_is_said_once(
    endpoint: Endpoint, clock: Clock, delays: Delays, events: EventLoggingObserver
) -> None:
    endpoint.refuse = True
    connection = connection_to("redis://cache", endpoint, clock, delays)
    for failures in range(1, 5):
        clock.advance(failures)
    assert endpoint.attempts == 5 and delays.asked == [1, 2, 3, 4, 5]
    endpoint.refuse, endpoint.hang = False, True
    clock.advance(5)
    endpoint.hanging[0].errback(Failure(ConnectionLost("connection lost: Connection reset by peer")))
    assert connection.problem == "connection lost: Connection reset by peer"
    assert said(events) == [
        "cannot look tokens up in Redis at redis://cache:6379/0: Connection was refused by other side: "
        "Connection refused.; token checks answer 503 until it answers",
        "cannot look tokens up in Redis at redis://cache:6379/0: connection lost: Connection reset by peer; "
        "token checks answer 503 until it answers",
    ]


def test_a_lost_connection_is_made_again(endpoint: Endpoint, clock: Clock, delays: Delays) -> None:
    connection = connection_to("redis://cache", endpoint, clock, delays)
    endpoint.answer(b"+PONG\r\n")
    endpoint.last[1].loseConnection()
    assert connection.problem is not None and connection.problem.startswith(
        "connection lost: Connection was closed cleanly"
    )
    clock.advance(1)
    endpoint.answer(b"+PONG\r\n")
    assert connection.problem is None and len(endpoint.connections) == 2


# Refusals


@pytest.mark.parametrize(
    "url, replies, reason",
    [
        (
            "redis://monit:wrong@cache",
            [b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"],
            "AUTH refused: WRONGPASS invalid username-password pair or user is disabled.",
        ),
        ("redis://cache/99", [b"-ERR DB index is out of range\r\n"], "SELECT 99 refused: ERR DB index is out of range"),
        (
            "redis://:pw@cache/1",
            [b"+OK\r\n", b"-NOPERM this user has no permissions to run the 'select' command\r\n"],
            "SELECT 1 refused: NOPERM this user has no permissions to run the 'select' command",
        ),
    ],
)
def test_refused_credentials_or_database_are_said_once_and_tried_again_every_30_s(
    endpoint: Endpoint,
    clock: Clock,
    delays: Delays,
    events: EventLoggingObserver,
    url: str,
    replies: list[bytes],
    reason: str,
) -> None:
    connection = connection_to(url, endpoint, clock, delays)
    for attempt in range(3):
        for reply in replies:
            endpoint.answer(reply)
        assert not endpoint.last[1].connected
        assert connection.problem == reason
        clock.advance(RETRY_REFUSED - 0.1)
        assert len(endpoint.connections) == attempt + 1
        clock.advance(0.1)
    for _ in RedisTarget.from_url(url).handshake():
        endpoint.answer(b"+OK\r\n")
    assert connection.problem is None and delays.asked == []
    target = RedisTarget.from_url(url)
    assert said(events) == [
        f"Redis at {target}: {reason}; token checks answer 503, and monit tries again every 30 s",
        f"Redis at {target} answers again",
    ]
    assert not [event for event in events if "wrong" in repr(event) and "WRONGPASS" not in repr(event)]


# Stopping


def test_stopping_closes_the_connection_and_leaves_nothing_behind(
    endpoint: Endpoint, clock: Clock, delays: Delays
) -> None:
    connection = connection_to("redis://cache", endpoint, clock, delays)
    endpoint.answer(b"+PONG\r\n")
    waiting = connection.get(b"tok")
    stopped = connection.stopService()
    assert result_of(stopped) is None and not endpoint.last[1].connected
    with pytest.raises(ConnectionLost):
        result_of(waiting)
    assert clock.getDelayedCalls() == []
    with pytest.raises(NotConnected):
        result_of(connection.get(b"tok"))


@pytest.mark.parametrize("moment", ["connecting", "handshake", "backoff", "refused"])
def test_stopping_at_any_moment_tries_no_more(endpoint: Endpoint, clock: Clock, delays: Delays, moment: str) -> None:
    endpoint.hang = moment == "connecting"
    endpoint.refuse = moment == "backoff"
    connection = connection_to("redis://:pw@cache", endpoint, clock, delays)
    waiting = connection.get(b"tok")
    if moment == "refused":
        endpoint.answer(b"-WRONGPASS no\r\n")
    result_of(connection.stopService())
    with pytest.raises(NotConnected, match="monit is stopping"):
        result_of(waiting)
    assert clock.getDelayedCalls() == []
    if endpoint.connections:
        assert not endpoint.last[1].connected
    clock.advance(RETRY_REFUSED)
    assert endpoint.attempts == 1
