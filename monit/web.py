"""The HTTP face: ``GET /events?stream=ID`` as Server-Sent Events, errors as short JSON."""
from __future__ import annotations

import json

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed, NotFound

from monit.auth import AuthUnavailable, Identity, InvalidToken, ITokenVerifier, token_from_request
from monit.inbox import InboxRegistry, valid_inbox_id
from monit.stream import EventStream, StreamSet


class BadRequest(ValueError):
    """The request itself is wrong: a 400 that says why."""


def stream_id_of(request: IRequest) -> str:
    """The one ``stream`` query parameter, validated as an inbox id."""
    values = request.args.get(b"stream", [])
    if not values or values == [b""]:
        raise BadRequest("missing 'stream' parameter")
    if len(values) > 1:
        raise BadRequest("more than one 'stream' parameter")
    try:
        inbox_id = values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("'stream' is not UTF-8") from None
    if not valid_inbox_id(inbox_id):
        raise BadRequest("'stream' must be 1 to 128 letters, digits or . _ : ~ -")
    return inbox_id


def json_error(request: IRequest, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps({"error": message}).encode("utf-8")


class MonitWeb:
    """The Klein app, with the registry, verifier and open streams injected."""

    app = Klein()
    log = Logger()

    def __init__(
        self,
        registry: InboxRegistry,
        verifier: ITokenVerifier,
        clock: IReactorTime,
        *,
        heartbeat: float = 15.0,
        retry_ms: int = 3000,
    ) -> None:
        self._registry = registry
        self._verifier = verifier
        self._clock = clock
        self._retry_ms = retry_ms
        self.streams = StreamSet(clock, heartbeat)

    def resource(self) -> IResource:
        return self.app.resource()

    def start(self) -> None:
        self.streams.start()

    def stop(self) -> None:
        """End every open stream: a stopped listener does not end its connections."""
        self.streams.stop()
        self._registry.close_all()

    @app.route("/events", methods=["GET"])
    def events(self, request: IRequest) -> Deferred[None] | bytes:
        try:
            inbox_id = stream_id_of(request)
        except BadRequest as reason:
            return self._refuse(request, 400, str(reason))
        token = token_from_request(request)
        if token is None:
            return self._refuse(request, 401, "missing token: send X-Auth-Token or Authorization: Bearer")
        verified = self._verifier.verify(token)
        return verified.addCallbacks(
            self._stream,
            self._auth_failed,
            callbackArgs=(request, inbox_id),
            errbackArgs=(request,),
        )

    def _stream(self, identity: Identity, request: IRequest, inbox_id: str) -> Deferred[None]:
        stream = EventStream(request, self._registry, self.streams, identity.user, self._clock)
        return stream.run(inbox_id, self._retry_ms)

    def _auth_failed(self, failure: Failure, request: IRequest) -> bytes | Failure:
        if failure.check(InvalidToken):
            return self._refuse(request, 401, "invalid token")
        if failure.check(AuthUnavailable):
            request.setHeader(b"retry-after", b"5")
            return self._refuse(request, 503, "token cannot be checked now")
        if failure.check(CancelledError):
            return failure
        self.log.failure("token check failed", failure)
        return self._refuse(request, 503, "token cannot be checked now")

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        return json_error(request, 404, "not found")

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        return json_error(request, 405, "method not allowed")

    def _refuse(self, request: IRequest, code: int, message: str) -> bytes:
        self.log.info(
            "refused {method} {path}: {code} {reason}",
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"),
            code=code,
            reason=message,
        )
        return json_error(request, code, message)
