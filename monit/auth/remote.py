"""Ask an auth service over HTTP whether a token is good.

The token goes to the service in ``X-Auth-Token`` and ``Authorization: Bearer``.
The answer is read from the status code and, for a yes, the body:

- ``2xx`` with a well-formed verdict: valid.  A well-formed verdict is a body
  of UTF-8 JSON (standard JSON, L{monit.strictjson}: no ``NaN`` or
  ``Infinity``, nor a number past a double such as ``1e999``) whose top level is
  an object, in which ``username``, if present, is a string (``""`` names no
  one: the user is ``"unknown"``) and ``streams``, if present, is ``"*"`` or a
  list of strings (the stream ids the user may watch), and ``scope``, if
  present, is a string of space-separated rights (``monit:jobs`` lists every
  job).  Other fields are ignored.  An identity from here is ``revocable``: open streams ask again.
- ``2xx`` with anything else (an empty body, as with ``204``; HTML, such as a
  proxy's login page; a JSON array, string or null; ``null`` or a number as
  ``username``; ``streams`` or ``scope`` of the wrong type): a malformed reply, logged as
  such, and L{AuthUnavailable}.  A yes we cannot read is not a yes.
- ``401``/``403``: L{InvalidToken}.
- Anything else, including redirects (not followed, so the token never goes
  elsewhere), a body over L{MAX_BODY_BYTES}, a timeout or a connection error:
  L{AuthUnavailable}.  The check fails closed.

A check that times out, or that its caller abandons, ends its request then:
the bound on checks in flight (L{monit.auth.bound}) frees its slot when the
check's Deferred fires.  The URL's query values never reach the log.
"""

from __future__ import annotations

from http.cookiejar import DefaultCookiePolicy
from types import MappingProxyType
from typing import Any, NoReturn
from typing import Protocol as TypingProtocol

from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IResponse
from zope.interface import implementer

from monit.auth.body import read_body
from monit.auth.interface import (
    AuthUnavailable,
    Identity,
    InvalidToken,
    ITokenVerifier,
    check_header_token,
)
from monit.redact import redacted_url
from monit.relay import relayed
from monit.strictjson import json_object

MAX_BODY_BYTES = 64 * 1024
MAX_PERSISTENT_PER_HOST = 10


class MalformedReply(AuthUnavailable):
    """The service said yes (2xx) in a form we cannot read: not a yes."""

    def __str__(self) -> str:
        return f"malformed reply: {super().__str__()}"


class _HTTPGetter(TypingProtocol):
    """What RemoteVerifier uses of treq's HTTPClient (StubTreq in tests)."""

    def get(
        self,
        url: str,
        /,
        *,
        headers: dict[bytes | str, bytes | str],
        allow_redirects: bool,
        unbuffered: bool,
    ) -> Deferred[Any]: ...


@implementer(ITokenVerifier)
class RemoteVerifier:
    """Tokens checked by an auth service; see the module docstring for the answers."""

    log = Logger()

    def __init__(
        self,
        http: _HTTPGetter,
        url: str,
        clock: IReactorTime,
        timeout: float,
    ) -> None:
        self._http = http
        self._url = url
        self._shown_url = redacted_url(url)
        self._clock = clock
        self._timeout = timeout
        self._trouble: str | None = None  # why the newest check that settled got no answer

    @property
    def problem(self) -> str | None:
        """Why the service could not answer the newest check (for /readyz); None once it answers."""
        return None if self._trouble is None else f"auth service at {self._shown_url}: {self._trouble}"

    def verify(self, token: str) -> Deferred[Identity]:
        """One GET to the service, answered within the timeout (body included)."""
        try:
            check_header_token(token)
        except InvalidToken as e:
            return fail(e)
        answer = self._ask(token).addBoth(self._settled)
        return _abandonable(answer).addErrback(self._unavailable)

    def _ask(self, token: str) -> Deferred[Identity]:
        request = maybeDeferred(
            self._http.get,
            self._url,
            headers={"X-Auth-Token": token, "Authorization": f"Bearer {token}"},
            # Read the body ourselves, capped; never send the token on to a redirect.
            unbuffered=True,
            allow_redirects=False,
        )
        answer: Deferred[Identity] = request.addCallback(_answer)
        # The clock is ours to inject: treq's own timeout would use the global reactor.
        return answer.addTimeout(self._timeout, self._clock, onTimeoutCancel=_timed_out)

    def _settled(self, outcome: Identity | Failure) -> Identity | Failure:
        """The work is over (an answer, a timeout or the caller abandoning it): did the service answer?"""
        if not isinstance(outcome, Failure) or outcome.check(InvalidToken):
            self._trouble = None
        return outcome

    def _unavailable(self, failure: Failure) -> Failure:
        """Log why the service could not answer; turn any error into AuthUnavailable."""
        if failure.check(InvalidToken, CancelledError):
            return failure
        self._trouble = _describe(failure.value)
        self.log.warn(
            "could not check a token with {url}: {reason}",
            url=self._shown_url,
            reason=self._trouble,
        )
        if failure.check(AuthUnavailable):
            return failure
        error = AuthUnavailable("the auth service is unavailable")
        error.__cause__ = failure.value
        return Failure(error)


def _timed_out(result: object, timeout: float) -> NoReturn:
    # Cancelling a request fails it with whatever the agent says; a timeout is a timeout.
    raise defer.TimeoutError(timeout, "token check")


def _abandonable(work: Deferred[Identity]) -> Deferred[Identity]:
    """The caller's Deferred: cancelling it fails it with a plain CancelledError at
    once and abandons the work, whose own failure is then nobody's business."""

    def abandon(result: Deferred[Identity]) -> None:
        result.errback(CancelledError())
        work.cancel()

    return relayed(work, abandon)


def remote_pool(reactor: IReactorTime) -> HTTPConnectionPool:
    """One persistent pool for every token check, so checks reuse connections."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
    return pool


def remote_http_client(reactor: IReactorTime, pool: HTTPConnectionPool | None = None) -> HTTPClient:
    """A treq client for L{RemoteVerifier}, pooled and without cookies.

    The cookie jar refuses every cookie: a session cookie the service set for
    one user must never ride along with the next user's token.
    """
    agent = Agent(reactor, pool=pool if pool is not None else remote_pool(reactor))
    no_cookies = IndexableCookieJar(DefaultCookiePolicy(allowed_domains=[]))
    return HTTPClient(agent, cookiejar=no_cookies)


def _answer(response: IResponse) -> Deferred[Identity]:
    """Read the whole (capped) body, so the connection goes back to the pool, then judge."""
    body = read_body(response, MAX_BODY_BYTES, lambda: AuthUnavailable("the auth service's answer is too long"))
    return body.addCallback(lambda content: _judge(response.code, content))


def _judge(code: int, body: bytes) -> Identity:
    if 200 <= code < 300:
        return _identity(body)
    if code in (401, 403):
        raise InvalidToken("refused by the auth service")
    raise AuthUnavailable(f"the auth service answered HTTP {code}")


def _identity(body: bytes) -> Identity:
    """The identity a well-formed verdict names (see the module docstring)."""
    reply = _json_object(body)
    user = reply.get("username", "")
    if not isinstance(user, str):
        raise MalformedReply("'username' is not a string")
    claims: dict[str, Any] = {"username": user or "unknown"}
    if "streams" in reply:
        claims["streams"] = _streams(reply["streams"])
    if "scope" in reply:
        claims["scope"] = _scope(reply["scope"])
    return Identity(user=claims["username"], claims=MappingProxyType(claims), expires=None, revocable=True)


def _json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; anything else is a malformed reply."""
    if not body.strip():
        raise MalformedReply("empty body")
    return json_object(body, MalformedReply)


def _streams(value: object) -> list[str] | str:
    if value == "*":
        return "*"
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise MalformedReply("'streams' is not a list of ids or '*'")


def _scope(value: object) -> str:
    if isinstance(value, str):
        return value
    raise MalformedReply("'scope' is not a string of space-separated rights")


def _describe(error: BaseException | None) -> str:
    """Why a check failed, in words that quote no request header."""
    if isinstance(error, AuthUnavailable):
        return str(error)
    if isinstance(error, defer.TimeoutError):
        return "no answer in time"
    return type(error).__name__
