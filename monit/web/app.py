"""The HTTP face: ``GET /events?stream=ID`` as Server-Sent Events, errors as short JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import attrs
from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as WaitedTooLong
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from monit.auth.interface import (
    AuthUnavailable,
    Identity,
    InvalidToken,
    ITokenVerifier,
    may_watch,
)
from monit.auth.recheck import Recheck, Rechecker
from monit.auth.request import browser_token, token_from_request
from monit.inbox import InboxClosed, InboxLimit, valid_inbox_id
from monit.registry import InboxRegistry
from monit.sse import encode_error, encode_retry
from monit.web.errors import BadRequest, error_body, one_parameter
from monit.web.job_feed import FeedReader, JobFeed
from monit.web.jobs import ManyJobs
from monit.web.listing import JobQuery, NotAllowed, list_jobs, listable, query_of
from monit.web.page import (
    SESSION_PATHS,
    SESSION_SECONDS,
    cookie_safe,
    jobs_page,
    session_cookie,
    session_token,
    watch_page,
)
from monit.web.stream import EventStream, OneJob, Source, StreamSet

RETRY_AFTER_SECONDS = 5
Answer = IResource | bytes  # what a route hands Klein: a body, or a resource that renders it


class _Streaming(Resource):
    """What the route hands Klein once a stream has started: the response stays open."""

    isLeaf = True

    def render(self, request: IRequest) -> int:
        return NOT_DONE_YET


STREAMING = _Streaming()


@attrs.frozen
class Readiness:
    """What /readyz reports: each check by name, and in words what is wrong."""

    checks: Mapping[str, bool]
    problems: Sequence[str] = ()


def stream_ids_of(request: IRequest, most: int) -> list[str]:
    """The ``stream`` query parameters, each validated as an inbox id, without repeats."""
    values = request.args.get(b"stream", [])
    if not values:
        raise BadRequest("missing 'stream' parameter")
    if len(values) > most:
        raise BadRequest(f"at most {most} 'stream' parameters in one request")
    inbox_ids: dict[str, None] = {}
    for value in values:
        try:
            inbox_id = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("'stream' is not UTF-8") from None
        if not valid_inbox_id(inbox_id):
            raise BadRequest("'stream' must be 1 to 128 letters, digits or . _ : ~ -")
        inbox_ids[inbox_id] = None
    return list(inbox_ids)


def last_event_id_of(request: IRequest) -> int:
    """Where a reconnecting reader left off: ``Last-Event-ID``, else ``?lastEventId=``."""
    header = request.getHeader(b"last-event-id")
    value = header.decode("latin-1") if header is not None else one_parameter(request, b"lastEventId")
    if value is None or value.strip() == "":
        return 0
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 18:  # str.isdigit takes "²" too
        raise BadRequest("'Last-Event-ID' must be an event id monit sent")
    return int(value)


def accepts_event_stream(request: IRequest) -> bool:
    """What a browser's EventSource sends; it gives up for good on any non-200."""
    accept = request.getHeader(b"accept") or b""
    return b"text/event-stream" in accept.lower()


def json_error(request: IRequest, code: int, message: str) -> bytes:
    return json_answer(request, code, error_body(message))


def json_body(request: IRequest, code: int, document: Mapping[str, object]) -> bytes:
    return json_answer(request, code, json.dumps(document).encode("utf-8"))


def json_answer(request: IRequest, code: int, body: bytes) -> bytes:
    """The JSON body, once the status and headers every JSON answer has are set."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return body


class MonitWeb(Service):
    """The Klein app, with the registry, verifier and open streams injected."""

    app = Klein()
    log = Logger()

    def __init__(
        self,
        registry: InboxRegistry,
        verifier: ITokenVerifier,
        clock: IReactorTime,
        *,
        max_streams: int,
        max_jobs_per_stream: int,
        max_pending: int,
        heartbeat: float,
        retry_ms: int,
        require_token: bool,
        allow_query_token: bool,
        cors_origins: frozenset[str],
        metrics_public: bool,
        auth_recheck: float,
        open_subjects: tuple[str, ...],
        readiness: Callable[[], Readiness] = lambda: Readiness({}),
        round_trip: Callable[[], Deferred[bool]] | None = None,
        metrics: Callable[[], bytes] | None = None,
        hold: Callable[[int], Deferred[None] | None] | None = None,
    ) -> None:
        """``hold``: given a resuming reader's last id, None if it can be served now, else a
        Deferred that fires when it can (the JetStream replay has not reached that id yet).
        ``auth_recheck``: seconds between asking again about an open stream's token (0: never).
        ``open_subjects``: what the watch page's demo publishes to.
        ``round_trip``: fires True once a message sent through NATS came back (``/readyz?deep=1``)."""
        self._registry = registry
        self._verifier = verifier
        self._clock = clock
        self._max_streams = max_streams
        self._max_jobs = max_jobs_per_stream
        self._max_pending = max_pending
        self._readiness = readiness
        self._round_trip = round_trip
        self._hold = hold
        self._hold_seconds = heartbeat
        self._require_token = require_token
        self._allow_query_token = allow_query_token
        self._cors_origins = cors_origins
        self._metrics = metrics
        self._metrics_public = metrics_public
        self.auth_results: Counter[str] = Counter()
        self.refusals: Counter[int] = Counter()
        self.streams = StreamSet(clock, heartbeat, retry_ms)
        self.job_feed = JobFeed(registry)
        self.rechecker = Rechecker(verifier, auth_recheck) if auth_recheck else None
        self._page, self._page_policy = watch_page(open_subjects)
        self._jobs_page = jobs_page()

    def resource(self) -> IResource:
        return self.app.resource()

    def startService(self) -> None:
        super().startService()
        self.streams.start()

    def stopService(self) -> None:
        """End every open stream with a retry hint (a stopped listener does not end them)."""
        super().stopService()
        self.streams.shutdown()

    @app.route("/events", methods=["OPTIONS"])
    def preflight(self, request: IRequest) -> bytes:
        """CORS preflight: what a page on an allowed origin may send with its request."""
        if self._cors(request):
            request.setHeader(b"access-control-allow-methods", b"GET, OPTIONS")
            request.setHeader(
                b"access-control-allow-headers",
                b"Authorization, X-Auth-Token, Last-Event-ID, Cache-Control",
            )
            request.setHeader(b"access-control-max-age", b"600")
        request.setResponseCode(204)
        return b""

    @app.route("/events", methods=["GET"])
    def events(self, request: Request) -> Deferred[Answer] | bytes:
        if request.method == b"HEAD":  # Klein takes HEAD for a GET route; a stream has no head alone
            request.setHeader(b"allow", b"GET, OPTIONS")
            return self._refuse(request, 405, "a stream is read with GET")
        self._cors(request)
        try:
            inbox_ids = stream_ids_of(request, self._max_jobs)
            after = last_event_id_of(request)
        except BadRequest as reason:
            return self._refuse(request, 400, str(reason))
        return self._with_identity(
            request, lambda identity, token: self._stream(identity, request, inbox_ids, after, token)
        )

    @app.route("/jobs", methods=["GET"])
    def jobs(self, request: IRequest) -> Deferred[Answer] | bytes:
        """The jobs this token may list, newest activity first, a page at a time."""
        self._cors(request)
        try:
            query = query_of(request)
        except BadRequest as reason:
            return self._refuse(request, 400, str(reason))
        return self._with_identity(request, lambda identity, _: self._listing(identity, request, query))

    def _listing(self, identity: Identity, request: IRequest, query: JobQuery) -> bytes:
        try:
            allowed = listable(identity)
        except NotAllowed as reason:
            self.log.info("{user} may not list jobs", user=identity.user)
            return self._refuse(request, 403, str(reason))
        return json_body(request, 200, list_jobs(self._registry, query, allowed))

    @app.route("/jobs/events", methods=["GET"])
    def job_events(self, request: Request) -> Deferred[Answer] | bytes:
        """The live feed of jobs: each job's lifecycle changes, for whoever may list them."""
        if request.method == b"HEAD":
            request.setHeader(b"allow", b"GET")
            return self._refuse(request, 405, "a stream is read with GET")
        self._cors(request)
        try:
            after = last_event_id_of(request)
        except BadRequest as reason:
            return self._refuse(request, 400, str(reason))
        return self._with_identity(request, lambda identity, token: self._feed(identity, request, after, token))

    def _feed(self, identity: Identity, request: Request, after: int, token: str) -> Answer | Deferred[Answer]:
        try:
            allowed = listable(identity)
        except NotAllowed as reason:
            self.log.info("{user} may not list jobs", user=identity.user)
            return self._refuse(request, 403, str(reason))
        if len(self.streams) >= self._max_streams:
            return self._unavailable(request, "too many streams")

        def start() -> IResource | bytes:
            return self._run(FeedReader(self.job_feed, self._registry, allowed), identity, request, after, token)

        held = self._hold(after) if self._hold is not None else None
        return start() if held is None else self._held(held, start, request)

    @app.route("/jobs/<job_id>", methods=["GET"])
    def job(self, request: IRequest, job_id: str) -> Deferred[Answer] | bytes:
        """One job's summary, for whoever may watch it."""
        self._cors(request)
        if not valid_inbox_id(job_id):
            return self._refuse(request, 400, "a job id is 1 to 128 letters, digits or . _ : ~ -")
        return self._with_identity(request, lambda identity, _: self._job_summary(identity, request, job_id))

    def _job_summary(self, identity: Identity, request: IRequest, job_id: str) -> bytes:
        if not may_watch(identity, job_id):
            self.log.info("{user} may not watch stream {stream}", user=identity.user, stream=job_id)
            return self._refuse(request, 403, "not allowed to watch this job")
        summary = self._registry.summary(job_id)
        if summary is None:
            return json_error(request, 404, "no such job")
        return json_body(request, 200, summary.as_json())

    def _with_identity(
        self, request: IRequest, answer: Callable[[Identity, str], Answer | Deferred[Answer]]
    ) -> Deferred[Answer] | bytes:
        """Check the request's token, then answer for its identity and token (or refuse: 401, 403, 503)."""
        token = self._token(request)
        if token is None:
            return self._no_token(request)
        verified = self._verifier.verify(token)
        return verified.addCallbacks(
            self._verified, self._auth_failed, callbackArgs=(answer, token), errbackArgs=(request,)
        )

    def _verified(
        self, identity: Identity, answer: Callable[[Identity, str], Answer | Deferred[Answer]], token: str
    ) -> Answer | Deferred[Answer]:
        self.auth_results["valid"] += 1
        return answer(identity, token)

    @app.route("/watch", methods=["GET"])
    def watch_page(self, request: IRequest) -> bytes:
        """A page that follows one job live (``?stream=ID``), or lists the jobs live, for a person with a browser."""
        page, policy = (self._page, self._page_policy) if b"stream" in request.args else self._jobs_page
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", policy)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return page

    @app.route("/session", methods=["POST"])
    def session(self, request: IRequest) -> Deferred[bytes] | bytes:
        """Trade a token (in a header) for the watch page's cookie, once it is checked."""
        token = token_from_request(request)
        if token is None:
            return self._no_token(request)
        if not cookie_safe(token):
            return self._refuse(request, 400, "this token cannot travel in a cookie: send it in a header")
        verified = self._verifier.verify(token)
        return verified.addCallbacks(
            self._session_started, self._auth_failed, callbackArgs=(request, token), errbackArgs=(request,)
        )

    def _session_started(self, identity: Identity, request: IRequest, token: str) -> bytes:
        self.auth_results["valid"] += 1
        lifetime: float = SESSION_SECONDS
        if identity.expires is not None:
            lifetime = min(lifetime, identity.expires - self._clock.seconds())
        for place in SESSION_PATHS:
            request.responseHeaders.addRawHeader(b"set-cookie", session_cookie(request, token, lifetime, place))
        request.setHeader(b"cache-control", b"no-store")
        request.setResponseCode(204)
        return b""

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        """The process lives and its reactor turns."""
        return json_body(request, 200, {"status": "ok"})

    @app.route("/readyz", methods=["GET"])
    def readyz(self, request: IRequest) -> bytes | Deferred[bytes]:
        """Ready when NATS is connected and HTTP is listening: route traffic here.

        ``?deep=1`` also sends a message through NATS and waits (up to a
        second) for it to come back on monit's own subscription.
        """
        readiness = self._readiness()
        deep = one_parameter(request, b"deep")
        if deep in (None, "0"):
            return self._ready_answer(request, readiness)
        if deep != "1" or self._round_trip is None:
            return json_error(request, 400, "'deep' is 1 or 0" if deep != "1" else "no deep check here")
        return self._round_trip().addCallback(lambda heard: self._ready_answer(request, readiness, heard))

    def _ready_answer(self, request: IRequest, readiness: Readiness, heard: bool | None = None) -> bytes:
        checks, problems = dict(readiness.checks), list(readiness.problems)
        if heard is not None:
            checks["nats_round_trip"] = heard
            if not heard:
                problems.append("NATS: a message published by monit did not come back to it within a second")
        ready = all(checks.values())
        return json_body(request, 200 if ready else 503, {"ready": ready, **checks, "problems": problems})

    def _token(self, request: IRequest) -> str | None:
        token = token_from_request(request) or session_token(request)
        if token is None and self._allow_query_token:
            token = browser_token(request)
        if token is None and not self._require_token:
            return ""
        return token

    def _cors(self, request: IRequest) -> bool:
        """Answer an allowed origin's request with CORS headers; others get none."""
        origin = request.getHeader(b"origin")
        if origin is None:
            return False
        request.setHeader(b"vary", b"Origin")
        if "*" in self._cors_origins:
            request.setHeader(b"access-control-allow-origin", b"*")
            return True
        if origin.decode("latin-1") not in self._cors_origins:
            return False
        request.setHeader(b"access-control-allow-origin", origin)
        request.setHeader(b"access-control-allow-credentials", b"true")
        return True

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> Deferred[bytes] | bytes:
        """Prometheus exposition; it takes a valid token unless made public."""
        if self._metrics is None:
            return json_error(request, 404, "not found")
        if self._metrics_public:
            return self._exposition(None, request)
        token = self._token(request)
        if token is None:
            return self._no_token(request)
        verified = self._verifier.verify(token)
        return verified.addCallbacks(
            self._exposition, self._auth_failed, callbackArgs=(request,), errbackArgs=(request,)
        )

    def _exposition(self, identity: Identity | None, request: IRequest) -> bytes:
        assert self._metrics is not None, "the route answers 404 without metrics"
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self._metrics()

    def _stream(
        self, identity: Identity, request: Request, inbox_ids: list[str], after: int, token: str
    ) -> Answer | Deferred[Answer]:
        for inbox_id in inbox_ids:
            if not may_watch(identity, inbox_id):
                self.log.info("{user} may not watch stream {stream}", user=identity.user, stream=inbox_id)
                named = "this stream" if len(inbox_ids) == 1 else f"stream {inbox_id!r}"
                return self._refuse(request, 403, f"not allowed to watch {named}")
        if len(self.streams) >= self._max_streams:
            return self._unavailable(request, "too many streams")
        held = self._hold(after) if self._hold is not None else None
        if held is not None:
            return self._held(held, lambda: self._start_stream(identity, request, inbox_ids, after, token), request)
        return self._start_stream(identity, request, inbox_ids, after, token)

    def _held(self, held: Deferred[None], start: Callable[[], IResource | bytes], request: Request) -> Deferred[Answer]:
        """Start the stream once the replay has passed the reader's id, so it goes on exactly after it.

        The wait is at most one ``--heartbeat``: nothing is written
        meanwhile, and a proxy that keeps an idle stream open that long keeps
        this request too (the site's own deadline, ``--auth-timeout``, is for
        the request head, which has come). Then the reader is told to come back (an
        EventSource gets a 200 with a retry hint, as for any transient
        refusal: any other status would make it give up). A reader that goes
        away cancels the wait.
        """
        held.addTimeout(self._hold_seconds, self._clock)
        return held.addCallbacks(
            lambda _: start(),
            self._not_replayed,
            errbackArgs=(request,),
        )

    def _not_replayed(self, failure: Failure, request: Request) -> bytes | Failure:
        if not failure.check(WaitedTooLong):
            return failure
        return self._unavailable(request, "this instance is still replaying the stream: try again")

    def _start_stream(
        self, identity: Identity, request: Request, inbox_ids: list[str], after: int, token: str
    ) -> IResource | bytes:
        source: Source
        if len(inbox_ids) == 1:  # one job: frames exactly as the seed sent them
            source = OneJob(self._registry, inbox_ids[0])
        else:
            source = ManyJobs(self._registry, inbox_ids)
        return self._run(source, identity, request, after, token)

    def _run(self, source: Source, identity: Identity, request: Request, after: int, token: str) -> IResource | bytes:
        """Stream the source to the reader, bounded like every stream."""
        recheck = self._recheck(identity, token)
        stream = EventStream(
            request, source, self.streams, identity.user, self._clock, self._max_pending, identity.expires, recheck
        )
        try:
            stream.run(after)
            return STREAMING
        except InboxClosed:
            request.setResponseCode(204)
            return b""
        except InboxLimit as limit:
            return self._unavailable(request, str(limit))

    def _recheck(self, identity: Identity, token: str) -> Recheck | None:
        """Only an auth service's answer can be taken back: only its streams keep their token."""
        if self.rechecker is None or not identity.revocable:
            return None
        return self.rechecker.for_stream(token, self._clock.seconds())

    def _auth_failed(self, failure: Failure, request: IRequest) -> bytes | Failure:
        if failure.check(CancelledError):
            return failure
        if failure.check(InvalidToken):
            self.auth_results["invalid"] += 1
            return self._unauthorized(request, f"invalid token: {failure.getErrorMessage()}", "invalid_token")
        self.auth_results["unavailable"] += 1
        if not failure.check(AuthUnavailable):
            self.log.failure("token check failed", failure)
        return self._unavailable(request, "token cannot be checked now")

    def _no_token(self, request: IRequest) -> bytes:
        """401 for a request without a token: say where one goes."""
        where = "send X-Auth-Token or Authorization: Bearer"
        if self._allow_query_token:
            where += ", or ?token= or the monit_token cookie"
        elif b"token" in request.args:
            where += " (?token= is read only with --allow-query-token)"
        return self._unauthorized(request, f"missing token: {where}")

    def _unauthorized(self, request: IRequest, message: str, error: str | None = None) -> bytes:
        """401 with the challenge RFC 6750 describes; ``error`` once a token was sent and refused."""
        challenge = 'Bearer realm="monit"'
        if error is not None:
            challenge += f', error="{error}", error_description="{message.replace(chr(34), chr(39))}"'
        request.setHeader(b"www-authenticate", challenge.encode("ascii", "replace"))
        return self._refuse(request, 401, message)

    def _unavailable(self, request: IRequest, message: str) -> bytes:
        """A transient refusal: 503 for most clients, a retryable stream for EventSource."""
        self._log_refusal(request, 503, message)
        if not accepts_event_stream(request):
            request.setHeader(b"retry-after", str(RETRY_AFTER_SECONDS).encode())
            return json_error(request, 503, message)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return encode_retry(RETRY_AFTER_SECONDS * 1000) + encode_error(message)

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        return json_error(request, 404, "not found")

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = getattr(failure.value, "valid_methods", None) or []
        request.setHeader(b"allow", ", ".join(sorted(allowed)).encode("ascii"))
        return json_error(request, 405, "method not allowed")

    def _refuse(self, request: IRequest, code: int, message: str) -> bytes:
        self._log_refusal(request, code, message)
        return json_error(request, code, message)

    def _log_refusal(self, request: IRequest, code: int, message: str) -> None:
        self.refusals[code] += 1
        self.log.info(
            "refused {method} {path}: {code} {reason}",
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"),
            code=code,
            reason=message,
        )
