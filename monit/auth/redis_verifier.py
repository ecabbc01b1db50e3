"""Look a token up in Redis, as the Go service did: ``GET token`` names the user.

The platform's session store keeps a session as a key, the token, whose value
is the user's name.  The answers:

- a value that is a user name (UTF-8, not blank, at most
  L{MAX_USER_LENGTH} printable characters): valid.  The user may watch any
  stream, as with the Go service, and the identity is ``revocable``: open
  streams ask again (--auth-recheck), so a later ``DEL`` ends them;
- no such key: L{InvalidToken}, ``unknown token``;
- any other value (blank, not UTF-8, control characters, too long, a key that
  holds a list or a hash): L{UnusableValue}, an L{AuthUnavailable}; a yes we
  cannot read is not a yes;
- Redis unreachable, refusing monit's password or database, or no answer
  within the timeout: L{AuthUnavailable}.

Failures are logged once per change: Redis going away is said once, its coming
back once; unusable values once, then how many more every ten seconds.

At most ``concurrency`` lookups are in flight; past that, a lookup is refused
at once.  A lookup that runs out of time is answered, but not abandoned: its
``GET`` keeps its place among the connection's replies, and its slot is freed
when Redis answers or the connection is given up (after ``timeout`` without a
reply).  So while Redis is down, ``concurrency`` lookups wait for it and the
rest are refused at once, and memory stays bounded.

The password never reaches a log line: the URL is shown without it.
"""
from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from monit.auth.interface import (
    AuthUnavailable,
    Identity,
    InvalidToken,
    ITokenVerifier,
    check_header_token,
)
from monit.redact import redacted_url
from monit.relay import relayed
from monit.tally import Tally

DEFAULT_PORT = 6379
DEFAULT_CONCURRENCY = 100
MAX_USER_LENGTH = 256
RETRY_REFUSED = 30.0  # seconds before a connection Redis refused is made again
T = TypeVar("T")


class UnusableValue(AuthUnavailable):
    """The token's key holds something that is not a user name: not a yes."""

    def __str__(self) -> str:
        return f"unusable value: {super().__str__()}"


@attrs.frozen
class RedisTarget:
    """Where the sessions are: ``redis://[:password@]host[:port][/db]``."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    password: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> RedisTarget:
        """The target a URL names; ValueError (showing no password) if it names none."""
        shown = redacted_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{shown!r} is not a URL") from None
        if parts.scheme != "redis":
            raise ValueError(f"{shown!r} must be a redis:// URL (redis://host:port/db)")
        if not parts.hostname:
            raise ValueError(f"{shown!r} names no host")
        if parts.username:
            raise ValueError(
                f"{shown!r} names a user: only a password goes before the host (redis://:password@host:port/db)"
            )
        if port == 0:
            raise ValueError(f"{shown!r} has port 0")
        if parts.query or parts.fragment:
            raise ValueError(f"{shown!r} must not have a query or a fragment")
        db = parts.path.removeprefix("/") or "0"
        if not (db.isascii() and db.isdigit()):
            raise ValueError(f"{shown!r}: the path must be a database number (/0, /1, …)")
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, DEFAULT_PORT if port is None else port, int(db), password)

    def __str__(self) -> str:
        """The URL as logs show it: never the password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


class _Store(Protocol):
    """What RedisVerifier uses of a txredisapi connection (a fake in unit tests)."""

    def get(self, key: bytes) -> Deferred[object]: ...

    def disconnect(self) -> Deferred[object]: ...


def connect(target: RedisTarget, timeout: float, refused: Callable[[Failure], None]) -> _Store:
    """A txredisapi connection that connects, and reconnects, by itself.

    Values come back as bytes, never turned into numbers or text: telling a
    user name from anything else is ours to do.  A connection that leaves a
    command unanswered for ``timeout`` is dropped and made again.  If Redis
    refuses the password or the database, txredisapi stops trying and calls
    ``refused``.
    """
    import txredisapi  # here, not at the top: importing it installs the global reactor

    store: _Store = txredisapi.lazyConnection(
        target.host,
        target.port,
        dbid=target.db,
        password=target.password,
        charset=None,
        convertNumbers=False,
        connectTimeout=timeout,
        replyTimeout=timeout,
    )
    # The lazy handler tells of a refusal only through this Deferred (left alone, an unhandled error).
    connected = getattr(store, "_connected", None)
    if isinstance(connected, Deferred):
        connected.addErrback(refused)
    return store


@implementer(ITokenVerifier)
class RedisVerifier(Service):
    """Tokens looked up in Redis; see the module docstring for the answers.

    A service: the connection is made when it starts and closed when it stops.
    A connection whose password or database Redis refused is made again every
    L{RETRY_REFUSED} seconds, so fixing Redis needs no restart of monit.
    """

    log = Logger()

    def __init__(
        self,
        target: RedisTarget,
        clock: IReactorTime,
        timeout: float,
        concurrency: int = DEFAULT_CONCURRENCY,
        connect: Callable[[RedisTarget, float, Callable[[Failure], None]], _Store] = connect,
    ) -> None:
        self._target = target
        self._shown = str(target)
        self._clock = clock
        self._timeout = timeout
        self._concurrency = concurrency
        self._connect = connect
        self._store: _Store | None = None
        self._retry: IDelayedCall | None = None
        self._reachable: bool | None = None  # None until Redis has answered or failed once
        self._refusal: str | None = None  # why Redis refused the connection, until it answers
        self.in_flight = 0
        self.refused = 0  # lookups refused at once: ``concurrency`` were in flight
        self.refusals = Tally(clock, self.log, "refused token lookups at the concurrency bound")
        self.unusable = Tally(clock, self.log, "Redis values that are no user name")

    def startService(self) -> None:
        super().startService()
        self._open()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.refusals.stop()
        self.unusable.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        return self._close()

    def _open(self) -> None:
        self._retry = None
        self._store = self._connect(self._target, self._timeout, self._refused)

    def _close(self) -> Deferred[None]:
        store, self._store = self._store, None
        if store is None:
            return succeed(None)
        closed = store.disconnect().addCallback(lambda _: None)
        return closed.addErrback(lambda failure: self.log.failure("closing the Redis connection failed", failure))

    def _refused(self, failure: Failure) -> None:
        """Redis refused the password or the database: say so once, and try again later."""
        reason = str(failure.value)
        if reason != self._refusal:
            self.log.error(
                "Redis at {url} refused monit: {reason}; token checks answer 503, and monit tries "
                "again every {every:g} s",
                url=self._shown,
                reason=reason,
                every=RETRY_REFUSED,
            )
        self._refusal = reason
        self._reachable = False
        self._close()
        if self.running:
            self._retry = self._clock.callLater(RETRY_REFUSED, self._open)

    def verify(self, token: str) -> Deferred[Identity]:
        """``GET token``, answered within the timeout."""
        try:
            key = check_header_token(token).encode("ascii")
        except InvalidToken as e:
            return fail(e)
        store = self._store
        if store is None:
            return fail(AuthUnavailable("not connected to Redis"))
        if self.in_flight >= self._concurrency:
            return fail(self._refuse())
        self.in_flight += 1
        lookup = maybeDeferred(store.get, key).addBoth(self._landed)
        answer = _by_deadline(lookup, self._timeout, self._clock, self._timed_out)
        return answer.addCallbacks(self._identity, self._unavailable)

    def _landed(self, outcome: object) -> object:
        """Free the slot; a value, or a key of the wrong type, means Redis is there."""
        self.in_flight -= 1
        if isinstance(outcome, Failure) and not _wrong_type(outcome):
            self._gone(_describe(outcome))
        else:
            self._back()
        return outcome

    def _timed_out(self) -> None:
        self._gone(f"no answer in {self._timeout:g} s")

    def _gone(self, reason: str) -> None:
        if self._reachable is not False:
            self.log.warn(
                "cannot look tokens up in Redis at {url}: {reason}; token checks answer 503 until it answers",
                url=self._shown,
                reason=reason,
            )
        self._reachable = False

    def _back(self) -> None:
        if self._reachable is False:
            self.log.info("Redis at {url} answers again", url=self._shown)
        self._reachable, self._refusal = True, None

    def _identity(self, value: object) -> Identity:
        if value is None:
            raise InvalidToken("unknown token")
        try:
            user = _user_name(value)
        except UnusableValue as e:
            self.unusable.add(self._shown, str(e))
            raise
        return Identity(user=user, claims=MappingProxyType({"username": user}), expires=None, revocable=True)

    def _unavailable(self, failure: Failure) -> Failure:
        """Any failure to answer is AuthUnavailable (its cause logged once, by _gone)."""
        if failure.check(defer.CancelledError):
            return failure
        if _wrong_type(failure):
            error: AuthUnavailable = UnusableValue("the key holds no string")
            self.unusable.add(self._shown, str(error))
        else:
            error = AuthUnavailable("Redis is unavailable")
        error.__cause__ = failure.value
        return Failure(error)

    def _refuse(self) -> AuthUnavailable:
        self.refused += 1
        self.refusals.add(self._shown, f"{self._concurrency} lookups are in flight")
        return AuthUnavailable("too many token checks in flight")


def _by_deadline(work: Deferred[T], timeout: float, clock: IReactorTime, on_timeout: Callable[[], None]) -> Deferred[T]:
    """The caller's Deferred: the work's outcome, or a TimeoutError after ``timeout``.

    Neither the deadline nor the caller cancelling stops the work: a command
    sent to Redis must keep its place among the connection's replies.
    """

    def expire() -> None:
        on_timeout()
        result.errback(defer.TimeoutError(timeout, "token lookup"))

    def stop_timer(outcome: T) -> T:
        if timer.active():
            timer.cancel()
        return outcome

    timer = clock.callLater(timeout, expire)
    result = relayed(work)  # cancelled, it fails with CancelledError: the timer stops as for any end
    return result.addBoth(stop_timer)


def _user_name(value: object) -> str:
    """The user a session's value names; UnusableValue if it names none."""
    if not isinstance(value, bytes):
        raise UnusableValue("not a string")
    try:
        name = value.decode("utf-8")
    except UnicodeDecodeError:
        raise UnusableValue("not UTF-8") from None
    if not name.strip():
        raise UnusableValue("blank")
    if len(name) > MAX_USER_LENGTH:
        raise UnusableValue(f"longer than {MAX_USER_LENGTH} characters")
    if not name.isprintable():
        raise UnusableValue("not printable")
    return name


def _wrong_type(failure: Failure) -> bool:
    """Redis answered that the key holds a list, a hash…: it is there, the value is not usable.

    Its other error replies (NOAUTH, NOPERM, LOADING…) mean it cannot answer.
    """
    from txredisapi import ResponseError

    return failure.check(ResponseError) is not None and str(failure.value).startswith("WRONGTYPE")


def _describe(failure: Failure) -> str:
    """Why Redis could not answer, in words that quote no token: the messages of a lost
    connection and of Redis's refusals name no key; anything else is named by its type."""
    from txredisapi import ConnectionError, ResponseError

    if failure.check(defer.TimeoutError):
        return "no answer in time"
    if failure.check(ConnectionError, ResponseError) and str(failure.value):
        return str(failure.value)
    return type(failure.value).__name__
