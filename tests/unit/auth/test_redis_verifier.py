"""Tokens looked up in Redis (--auth-redis): the option, the answers, the bound, the deadline
and the log, with a fake connection and a fake clock."""

from __future__ import annotations

import os
import re

import attrs
import pytest
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent
from zope.interface.verify import verifyObject

from monit.auth.bound import BoundedVerifier
from monit.auth.interface import AuthUnavailable, Identity, InvalidToken, ITokenVerifier, may_watch
from monit.auth.modes import FirstValid, cache_ttl, verification_for
from monit.auth.redis_connection import NotConnected, RedisConnection, RedisTarget
from monit.auth.redis_verifier import MAX_USER_LENGTH, Deadline, RedisVerifier, UnusableValue
from monit.auth.resp import ConnectionLost, Oversized, RedisError
from monit.service import auth_options
from monit.settings import Settings
from monit.tap import Options

from deferreds import result_of

URL = "redis://127.0.0.1:6379/0"


class Store:
    """A fake RedisConnection: answers from a dict, or holds every GET with ``hold``."""

    def __init__(self, values: dict[bytes, object] | None = None) -> None:
        self.values = values or {}
        self.asked: list[bytes] = []
        self.held: list[Deferred] = []
        self.hold = False
        self.down: Exception | None = None
        self.problem: str | None = None
        self.running = False

    def get(self, key: bytes) -> Deferred:
        self.asked.append(key)
        if self.down is not None:
            return fail(self.down)
        if self.hold:
            d: Deferred = Deferred()
            self.held.append(d)
            return d
        value = self.values.get(key)
        return fail(value) if isinstance(value, Exception) else succeed(value)

    def startService(self) -> None:
        self.running = True

    def stopService(self) -> Deferred:
        self.running = False
        return succeed(None)


@pytest.fixture
def store() -> Store:
    return Store({b"tok-alice": b"alice"})


def started(store: Store, clock: Clock, url: str = URL) -> RedisVerifier:
    verifier = RedisVerifier(RedisTarget.from_url(url), store, clock)
    verifier.startService()
    return verifier


def in_time(redis: RedisVerifier, clock: Clock, concurrency: int = 100) -> tuple[Deadline, BoundedVerifier]:
    """The lookups behind their bound and their deadline, as monit.auth.modes puts them."""
    bound = BoundedVerifier(redis, clock, concurrency, log=redis.log, kind=URL, checks="lookups")
    return Deadline(bound, clock, timeout=2.0), bound


@pytest.fixture
def verifier(store: Store, clock: Clock) -> RedisVerifier:
    return started(store, clock)


def failure_of(d: Deferred) -> BaseException:
    with pytest.raises(Exception) as error:
        result_of(d)
    return error.value


# The URL


@pytest.mark.parametrize(
    "url, said",
    [
        ("http://cache.internal/0", "must be a redis:// or rediss:// URL"),
        ("rediss:/cache.internal/0", "names no host"),
        ("redis:///0", "names no host"),
        ("redis://pw-sekrit@cache.internal/0", "'redis://***@cache.internal/0' names a user but no password"),
        ("redis://monit:@cache.internal/0", "'redis://monit:***@cache.internal/0' names a user but no password"),
        ("redis://cache.internal:port/0", "is not a URL"),
        ("redis://cache.internal:0/0", "has port 0"),
        ("redis://cache.internal/zero", "the path must be a database number"),
        ("redis://cache.internal/-1", "the path must be a database number"),
        ("redis://cache.internal/0?password=pw-sekrit", "must not have a query or a fragment"),
    ],
)
def test_a_url_that_names_no_redis_is_refused_without_its_password(url: str, said: str) -> None:
    with pytest.raises(ValueError, match=re.escape(said)) as error:
        RedisTarget.from_url(url)
    assert "pw-sekrit" not in str(error.value)


# The option


def parse(*args: str) -> Settings:
    options = Options()
    options.parseOptions(list(args))
    return options.settings


@pytest.fixture(autouse=True)
def no_monit_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MONIT_") or name in ("JWT_SECRET", "NATS_URI"):
            monkeypatch.delenv(name)


def test_the_option_and_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse("--auth-redis", "redis://:pw@cache:6380/1").auth_redis == "redis://:pw@cache:6380/1"
    monkeypatch.setenv("MONIT_AUTH_REDIS", "redis://cache/2")
    assert parse().auth_redis == "redis://cache/2"
    assert Settings().auth_redis is None


def test_its_password_is_not_in_the_settings_repr() -> None:
    settings = Settings(auth_redis="redis://:pw-sekrit@cache:6380/1")
    assert "pw-sekrit" not in repr(settings)
    assert "auth_redis='redis://:***@cache:6380/1'" in repr(settings)


def test_a_bad_url_is_one_line_naming_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as flag:
        parse("--auth-redis", "http://:pw-sekrit@cache/0")
    monkeypatch.setenv("MONIT_AUTH_REDIS", "redis://cache/x")
    with pytest.raises(SystemExit) as variable:
        parse()
    with pytest.raises(ValueError, match="names no host"):
        Settings(auth_redis="redis:///0")
    assert (
        str(flag.value)
        == "monit: --auth-redis 'http://:***@cache/0' must be a redis:// or rediss:// URL (redis://host:port/db)"
    )
    assert str(variable.value).startswith("monit: MONIT_AUTH_REDIS 'redis://cache/x': the path must be")


@pytest.mark.parametrize(
    "args, said",
    [
        (["--auth-url", "http://auth.example/check"], "--auth-redis and --auth-url are two places to ask"),
        (["--insecure-no-auth"], "--insecure-no-auth checks no token: it does not go with --auth-redis"),
    ],
)
def test_conflicting_auth_options_are_refused(args: list[str], said: str) -> None:
    with pytest.raises(SystemExit, match=said):
        parse("--auth-redis", URL, *args)


# What the settings make


def test_redis_alone_fetches_no_jwt_secret_and_caps_the_cache_at_the_recheck_period() -> None:
    settings = Settings(
        auth_redis="redis://:pw@cache:6380/1", auth_concurrency=3, auth_timeout=1.5, auth_recheck=10, auth_cache_ttl=30
    )
    made = verification_for(auth_options(settings), MemoryReactorClock(), nats=None)  # type: ignore[arg-type]
    assert made.jwt is None and made._pool is None
    redis, bound, deadline = made.backend, made.remote, made.verifier._inner
    assert isinstance(redis, RedisVerifier) and isinstance(bound, BoundedVerifier) and isinstance(deadline, Deadline)
    [lookups] = made
    assert list(lookups) == [redis, bound], "the bound stops first, saying its last"
    connection = redis._store
    assert isinstance(connection, RedisConnection)
    assert connection._target == RedisTarget("cache", 6380, 1, "pw") and connection._timeout == 1.5
    assert (deadline._inner, deadline._timeout) == (bound, 1.5)
    assert (bound._inner, bound._concurrency, bound._checks) == (redis, 3, "lookups")
    assert bound._kind == "redis://cache:6380/1", "refusals are said about Redis, shown without its password"
    assert made.verifier._ttl == 10
    assert cache_ttl(auth_options(attrs.evolve(settings, auth_recheck=0))) == 30


def test_with_a_jwt_secret_a_valid_jwt_is_taken_and_the_rest_looked_up() -> None:
    settings = Settings(auth_redis=URL, jwt_secret="s" * 32)
    made = verification_for(auth_options(settings), MemoryReactorClock(), nats=None)  # type: ignore[arg-type]
    inner = made.verifier._inner
    assert isinstance(inner, FirstValid) and inner.local is made.jwt
    assert isinstance(inner.remote, Deadline) and inner.remote._inner is made.remote


# The answers


def test_provides_the_interface(verifier: RedisVerifier) -> None:
    assert verifyObject(ITokenVerifier, verifier)


def test_a_known_token_is_its_user_who_may_watch_any_stream(verifier: RedisVerifier, store: Store) -> None:
    identity = result_of(verifier.verify("tok-alice"))
    assert identity == Identity(user="alice", claims={"username": "alice"}, expires=None, revocable=True)
    assert may_watch(identity, "any-job")
    assert store.asked == [b"tok-alice"]
    with pytest.raises(TypeError):
        identity.claims["streams"] = ["x"]


def test_an_unknown_token_is_invalid(verifier: RedisVerifier) -> None:
    error = failure_of(verifier.verify("tok-nobody"))
    assert isinstance(error, InvalidToken) and str(error) == "unknown token"


@pytest.mark.parametrize(
    "value, why",
    [
        (b"", "blank"),
        (b"  ", "blank"),
        (b"\xff\xfe", "not UTF-8"),
        (b"alice\nINFO forged log line", "not printable"),
        (b"a" * (MAX_USER_LENGTH + 1), f"longer than {MAX_USER_LENGTH} characters"),
        (RedisError("WRONGTYPE Operation against a key holding the wrong kind of value"), "the key holds no string"),
        (Oversized(70_000), f"longer than {MAX_USER_LENGTH} characters"),
    ],
)
def test_a_value_that_is_no_user_name_is_unavailable(
    store: Store, verifier: RedisVerifier, value: object, why: str
) -> None:
    store.values[b"tok-odd"] = value
    error = failure_of(verifier.verify("tok-odd"))
    assert isinstance(error, UnusableValue) and str(error) == f"unusable value: {why}"


def test_a_user_name_may_be_any_printable_text(store: Store, verifier: RedisVerifier) -> None:
    store.values[b"tok-zoe"] = "Zoë O'Brien".encode()
    store.values[b"tok-long"] = b"b" * MAX_USER_LENGTH
    assert result_of(verifier.verify("tok-zoe")).user == "Zoë O'Brien"
    assert result_of(verifier.verify("tok-long")).user == "b" * MAX_USER_LENGTH


@pytest.mark.parametrize("token", ["", "tok\nen", "tök", "x" * 9000, None])
def test_tokens_that_cannot_travel_are_refused_without_asking(
    store: Store, verifier: RedisVerifier, token: object
) -> None:
    assert isinstance(failure_of(verifier.verify(token)), InvalidToken)  # type: ignore[arg-type]
    assert store.asked == []


def test_before_start_and_after_stop_it_is_unavailable(store: Store, clock: Clock) -> None:
    verifier = RedisVerifier(RedisTarget.from_url(URL), store, clock)
    assert isinstance(failure_of(verifier.verify("tok-alice")), AuthUnavailable)
    verifier.startService()
    assert store.running
    assert result_of(verifier.verify("tok-alice")).user == "alice"
    result_of(verifier.stopService())
    assert not store.running
    assert isinstance(failure_of(verifier.verify("tok-alice")), AuthUnavailable)


@pytest.mark.parametrize(
    "error, said",
    [
        (ConnectionLost("no answer to GET in 2 s"), "Redis is unavailable"),
        (NotConnected("Connection refused"), "Redis is unavailable"),
        (RedisError("NOPERM this user has no permissions to access one of the keys"), "Redis refused the lookup"),
        (RedisError("LOADING Redis is loading the dataset in memory"), "Redis refused the lookup"),
        (OSError(), "Redis is unavailable"),
    ],
)
def test_redis_failing_is_unavailable(store: Store, verifier: RedisVerifier, error: Exception, said: str) -> None:
    store.down = error
    failure = failure_of(verifier.verify("tok-alice"))
    assert type(failure) is AuthUnavailable and failure.__cause__ is error and str(failure) == said


def test_its_problem_is_the_connections_named_by_its_url(store: Store, verifier: RedisVerifier) -> None:
    assert verifier.problem is None
    store.problem = "no answer to AUTH in 2 s"
    assert verifier.problem == "Redis at redis://127.0.0.1:6379/0: no answer to AUTH in 2 s"


# The deadline and the bound


def test_no_answer_in_time_is_unavailable_and_the_slot_is_kept_until_redis_answers(
    store: Store, verifier: RedisVerifier, clock: Clock
) -> None:
    lookups, bound = in_time(verifier, clock)
    store.hold = True
    answer = lookups.verify("tok-alice")
    clock.advance(1.9)
    assert not answer.called
    clock.advance(0.1)
    error = failure_of(answer)
    assert type(error) is AuthUnavailable and str(error) == "Redis is unavailable"
    assert isinstance(error.__cause__, defer.TimeoutError)
    assert bound.in_flight == 1, "the GET is still on the connection"
    store.held[0].callback(b"alice")
    assert bound.in_flight == 0
    assert not clock.getDelayedCalls()


def test_a_caller_cancelling_gets_cancelled_and_the_slot_is_freed_by_the_answer(
    store: Store, verifier: RedisVerifier, clock: Clock
) -> None:
    lookups, bound = in_time(verifier, clock)
    store.hold = True
    answer = lookups.verify("tok-alice")
    answer.cancel()
    assert isinstance(failure_of(answer), CancelledError)
    assert not clock.getDelayedCalls()
    assert bound.in_flight == 1
    store.held[0].errback(ConnectionLost("connection lost"))
    assert bound.in_flight == 0


def test_an_answer_given_at_once_needs_no_timer(store: Store, verifier: RedisVerifier, clock: Clock) -> None:
    lookups, _ = in_time(verifier, clock)
    assert result_of(lookups.verify("tok-alice")).user == "alice"
    assert isinstance(failure_of(lookups.verify("tok\nen")), InvalidToken)
    assert not clock.getDelayedCalls()


def test_lookups_in_flight_are_bounded_and_refusals_counted(
    store: Store, verifier: RedisVerifier, clock: Clock, events: EventLoggingObserver
) -> None:
    lookups, bound = in_time(verifier, clock, concurrency=2)
    store.hold = True
    waiting = [lookups.verify(f"tok-{n}") for n in range(2)]
    refused = lookups.verify("tok-2")
    assert isinstance(failure_of(refused), AuthUnavailable) and str(failure_of(lookups.verify("tok-3"))) == (
        "too many token checks in flight"
    )
    assert (bound.in_flight, bound.refused, len(store.asked)) == (2, 2, 2)
    assert warnings(events) == [
        "refused token lookups at the concurrency bound on redis://127.0.0.1:6379/0: 2 lookups are in flight"
    ]
    store.held[0].callback(None)
    assert isinstance(failure_of(waiting[0]), InvalidToken)
    store.hold = False
    assert result_of(lookups.verify("tok-alice")).user == "alice"
    bound.stopService()
    assert warnings(events)[1:] == [
        "refused token lookups at the concurrency bound: 1 more in the last 10 s (redis://127.0.0.1:6379/0: 1)"
    ]


# The log


def warnings(events: EventLoggingObserver) -> list[str]:
    return [
        formatEvent(event)
        for event in events
        if event["log_level"] >= LogLevel.info
        and event.get("log_namespace", "").startswith("monit.auth.redis_verifier")
    ]


def test_lookups_redis_refuses_are_said_once_then_counted(
    store: Store, verifier: RedisVerifier, clock: Clock, events: EventLoggingObserver
) -> None:
    store.down = RedisError("NOPERM this user has no permissions to access one of the keys used as arguments")
    for _ in range(3):
        failure_of(verifier.verify("tok-alice"))
    clock.advance(10)
    assert warnings(events) == [
        "token lookups Redis answered with an error on redis://127.0.0.1:6379/0: NOPERM this user has no "
        "permissions to access one of the keys used as arguments",
        "token lookups Redis answered with an error: 2 more in the last 10 s (redis://127.0.0.1:6379/0: 2)",
    ]


def test_unusable_values_are_said_once_then_counted(
    store: Store, verifier: RedisVerifier, clock: Clock, events: EventLoggingObserver
) -> None:
    store.values[b"tok-odd"] = b""
    for _ in range(4):
        failure_of(verifier.verify("tok-odd"))
    clock.advance(10)
    assert warnings(events) == [
        "Redis values that are no user name on redis://127.0.0.1:6379/0: unusable value: blank",
        "Redis values that are no user name: 3 more in the last 10 s (redis://127.0.0.1:6379/0: 3)",
    ]
    result_of(verifier.stopService())
    assert not clock.getDelayedCalls()


def test_neither_token_nor_password_is_logged(clock: Clock, events: EventLoggingObserver) -> None:
    store = Store({b"tok-sekrit-odd": b"\x00"})
    verifier = started(store, clock, url="redis://monit:pw-sekrit@127.0.0.1:6379/0")
    failure_of(verifier.verify("tok-sekrit-odd"))
    store.down = RedisError("NOPERM no permissions")
    failure_of(verifier.verify("tok-sekrit-2"))
    assert warnings(events) == [
        "Redis values that are no user name on redis://monit@127.0.0.1:6379/0: unusable value: not printable",
        "token lookups Redis answered with an error on redis://monit@127.0.0.1:6379/0: NOPERM no permissions",
    ]
    assert not [event for event in events if "sekrit" in repr(event)]
