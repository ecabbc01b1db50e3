"""An identity provider's JWKS endpoint, as a Twisted resource the test changes and as http.server in a thread."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from treq.testing import StubTreq
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.server import Request as WebRequest
from twisted.web.util import redirectTo


class Provider(Resource):
    """A JWKS endpoint: answers with ``code`` and ``body``, redirects (``redirect``) or holds the request (``hang``).

    For StubTreq, or served on loopback; ``requests`` counts what it was asked.
    """

    isLeaf = True
    # Where it listens, once a test has it served.
    url: str
    port: IListeningPort

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body
        self.code = 200
        self.redirect: str | None = None
        self.hang = False
        self.held: list[WebRequest] = []
        self.requests = 0

    def render_GET(self, request: WebRequest) -> bytes | int:
        self.requests += 1
        if self.hang:
            self.held.append(request)
            return NOT_DONE_YET
        if self.redirect is not None:
            return redirectTo(self.redirect.encode(), request)
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", b"application/json")
        return self.body

    def answer_held(self, stub: StubTreq) -> None:
        """Answer the requests held, with the body as it is now."""
        held, self.held = self.held, []
        for request in held:
            request.write(self.body)
            request.finish()
        stub.flush()


class ThreadedJWKS(http.server.BaseHTTPRequestHandler):
    """The JWKS endpoint for twistd: http.server in a thread of its own, counting its requests."""

    body = b""
    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def jwks_in_a_thread(body: bytes) -> Iterator[str]:
    """Serve ``body`` as a JWKS (``ThreadedJWKS``) until the block ends; its URL."""
    ThreadedJWKS.body, ThreadedJWKS.requests = body, 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ThreadedJWKS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
