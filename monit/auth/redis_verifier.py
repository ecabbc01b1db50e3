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
- Redis unreachable, refusing monit's credentials or database, refusing the
  lookup (``NOPERM`` for an ACL user kept to some keys), or no answer within
  the timeout: L{AuthUnavailable}.

The connection (L{monit.auth.redis_connection}) is made again after any
failure and says why it is down; unusable values and refused lookups are
said once, then how many more every ten seconds.

A lookup's Deferred fires when Redis answers or the connection is given up
(after ``timeout`` without a reply); L{Deadline} answers the caller within
``timeout`` meanwhile.  A lookup that runs out of time is answered, but not
abandoned: its ``GET`` keeps its place among the connection's replies.  In
front of the lookups, between the two, the bound (L{monit.auth.bound}) keeps a
slot for each until it ends.  So while Redis is down, ``concurrency`` lookups
wait for it and the rest are refused at once, and memory stays bounded.  A
late answer is still judged: an unusable value is said even when its caller
has had the deadline's answer.

The password never reaches a log line: the URL is shown without it.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Protocol, TypeVar

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IReactorTime
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
from monit.auth.redis_connection import RedisTarget
from monit.auth.resp import Oversized, RedisError, Reply
from monit.relay import relayed
from monit.tally import Tally

MAX_USER_LENGTH = 256
T = TypeVar("T")


class UnusableValue(AuthUnavailable):
    """The token's key holds something that is not a user name: not a yes."""

    def __str__(self) -> str:
        return f"unusable value: {super().__str__()}"


class _Store(Protocol):
    """What RedisVerifier uses of a RedisConnection (a fake in unit tests)."""

    @property
    def problem(self) -> str | None: ...

    def get(self, key: bytes) -> Deferred[Reply]: ...

    def startService(self) -> None: ...

    def stopService(self) -> Deferred[None]: ...


@implementer(ITokenVerifier)
class RedisVerifier(Service):
    """Tokens looked up in Redis; see the module docstring for the answers.

    A service: the connection is made when it starts and closed when it stops.
    Each lookup's Deferred is its work: it fires when Redis answers, however
    late (L{Deadline} answers the caller in time).
    """

    log = Logger()

    def __init__(self, target: RedisTarget, store: _Store, clock: IReactorTime) -> None:
        self._shown = str(target)
        self._store = store
        self.unusable = Tally(clock, self.log, "Redis values that are no user name")
        self.errors = Tally(clock, self.log, "token lookups Redis answered with an error")

    @property
    def problem(self) -> str | None:
        """Why tokens cannot be looked up now (for /readyz); None when they can."""
        problem = self._store.problem
        return None if problem is None else f"Redis at {self._shown}: {problem}"

    def startService(self) -> None:
        super().startService()
        self._store.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.unusable.stop()
        self.errors.stop()
        return self._store.stopService()

    def verify(self, token: str) -> Deferred[Identity]:
        """``GET token``, judged when Redis answers."""
        try:
            key = check_header_token(token).encode("ascii")
        except InvalidToken as e:
            return fail(e)
        if not self.running:
            return fail(AuthUnavailable("not connected to Redis"))
        return maybeDeferred(self._store.get, key).addCallbacks(self._identity, self._unavailable)

    def _identity(self, value: Reply) -> Identity:
        if value is None:
            raise InvalidToken("unknown token")
        try:
            user = _user_name(value)
        except UnusableValue as e:
            self.unusable.add(self._shown, str(e))
            raise
        return Identity(user=user, claims=MappingProxyType({"username": user}), expires=None, revocable=True)

    def _unavailable(self, failure: Failure) -> Failure:
        """Any failure to answer is AuthUnavailable (a lost connection is said by the connection)."""
        if failure.check(InvalidToken, AuthUnavailable):
            return failure
        error: AuthUnavailable
        if isinstance(failure.value, RedisError) and failure.value.code == "WRONGTYPE":
            error = UnusableValue("the key holds no string")
            self.unusable.add(self._shown, str(error))
        elif failure.check(RedisError):
            error = AuthUnavailable("Redis refused the lookup")
            self.errors.add(self._shown, str(failure.value))
        else:
            error = AuthUnavailable("Redis is unavailable")
        error.__cause__ = failure.value
        return Failure(error)


@implementer(ITokenVerifier)
class Deadline:
    """An L{ITokenVerifier} in front of Redis's lookups: each answered within ``timeout``, the work going on.

    Past the deadline the answer is L{AuthUnavailable}. Neither the deadline
    nor the caller cancelling stops the lookup: a command sent to Redis must
    keep its place among the connection's replies.
    """

    def __init__(self, inner: ITokenVerifier, clock: IReactorTime, timeout: float) -> None:
        self._inner = inner
        self._clock = clock
        self._timeout = timeout

    def verify(self, token: str) -> Deferred[Identity]:
        """The lookup's answer; one given at once (refused, say) needs no timer."""
        work = maybeDeferred(self._inner.verify, token)
        return work if work.called else _by_deadline(work, self._timeout, self._clock)


def _by_deadline(work: Deferred[T], timeout: float, clock: IReactorTime) -> Deferred[T]:
    """The caller's Deferred: the work's outcome, or AuthUnavailable after ``timeout``."""

    def expire() -> None:
        error = AuthUnavailable("Redis is unavailable")
        error.__cause__ = defer.TimeoutError(timeout, "token lookup")
        result.errback(error)

    def stop_timer(outcome: T) -> T:
        if timer.active():
            timer.cancel()
        return outcome

    timer = clock.callLater(timeout, expire)
    result = relayed(work)  # cancelled, it fails with CancelledError: the timer stops as for any end
    return result.addBoth(stop_timer)


def _user_name(value: Reply) -> str:
    """The user a session's value names; UnusableValue if it names none."""
    if isinstance(value, Oversized):
        raise UnusableValue(f"longer than {MAX_USER_LENGTH} characters")
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
