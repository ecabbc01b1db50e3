"""``twistd monit``: command-line options and the service they make."""
from __future__ import annotations

import os
import signal
import sys

from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from monit.routing import DELIVER_SUBJECTS, LIFECYCLE_SUBJECTS
from monit.service import MonitService, Settings

DEFAULT_NATS = "nats://127.0.0.1:4222"


def _positive(kind: type, name: str):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise usage.UsageError(f"--{name} must be a number, not {value!r}") from None
        if number <= 0:
            raise usage.UsageError(f"--{name} must be greater than 0")
        return number

    return parse


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Gathers the progress a workflow engine publishes to NATS into per-job "
        "inboxes and streams them to authenticated users as Server-Sent Events: "
        "GET /events?stream=ID with X-Auth-Token or Authorization: Bearer."
    )
    optFlags = [
        ["embedded-nats", None, "Start nats-server (from monit[embedded]) on loopback and use it."],
        ["base64", None, "Send each data: payload base64-encoded, as the Go service's EncodeBase64 did."],
        ["allow-query-token", None,
         "Also take the token from ?token= or the monit_token cookie, for browsers' EventSource "
         "(a query token can end up in proxy logs; monit's own logs never show it)."],
        ["insecure-no-auth", None, "Let anyone watch any stream without a token (local use only)."],
        ["no-metrics", None, "Do not serve /metrics (Prometheus text format; served by default)."],
        ["metrics-public", None, "Serve /metrics without a token (by default it takes a valid one)."],
    ]
    optParameters = [
        ["nats", None, None,
         "NATS server URLs, comma separated, tried in turn (default: $NATS_URI, "
         f"else {DEFAULT_NATS}). Credentials go in the URL: nats://user:pass@host:port."],
        ["embedded-nats-port", None, 0,
         "Port of the embedded nats-server (0: any free port).", int],
        ["listen", None, None,
         "Twisted endpoint to serve HTTP on, e.g. tcp:8080:interface=127.0.0.1 or "
         "ssl:8443:privateKey=key.pem:certKey=cert.pem (default: ask NATS "
         "config.get.monitor, else tcp:8080)."],
        ["jwt-secret", None, None,
         "HS256 secret for tokens (default: $JWT_SECRET, else ask NATS config.get.jwt_token)."],
        ["auth-url", None, None,
         "Ask this URL about each token (GET with X-Auth-Token): 2xx valid, 401/403 invalid, "
         "anything else 503. With a JWT secret too, valid JWTs are accepted locally."],
        ["auth-timeout", None, 2.0,
         "Seconds a token check (and a connection's request headers) may take.",
         _positive(float, "auth-timeout")],
        ["auth-cache-ttl", None, 30.0,
         "Seconds a valid token's answer is kept (never past its exp).",
         _positive(float, "auth-cache-ttl")],
        ["grace", None, 10.0,
         "Seconds a closed job's stream stays open for late readers.", _positive(float, "grace")],
        ["heartbeat", None, 15.0,
         "Seconds between keep-alive comments on idle streams.", _positive(float, "heartbeat")],
        ["history", None, 1000,
         "Events an inbox keeps for readers who connect late.", _positive(int, "history")],
        ["expiry", None, 300.0,
         "Seconds an inbox nobody opened or watches lives on.", _positive(float, "expiry")],
        ["retention", None, 600.0,
         "Seconds a closed inbox is kept so reconnecting readers get its end.",
         _positive(float, "retention")],
        ["max-pending", None, 1024 * 1024,
         "Bytes a reader may leave unread before it is dropped as too slow.",
         _positive(int, "max-pending")],
        ["max-streams", None, 50_000,
         "Concurrent SSE responses; past it, 503 with Retry-After.", _positive(int, "max-streams")],
        ["max-inboxes", None, 100_000,
         "Inboxes held at once, including those readers created; past it, 503.",
         _positive(int, "max-inboxes")],
        ["retry", None, 3000,
         "Milliseconds a client should wait before reconnecting (SSE retry:).",
         _positive(int, "retry")],
        ["max-payload", None, 1024 * 1024,
         "Largest NATS message, in bytes, monit reads; larger ones are skipped.",
         _positive(int, "max-payload")],
        ["open-subjects", None, ",".join(LIFECYCLE_SUBJECTS),
         "Comma-separated subjects that open an inbox; each followed by .done or "
         ".error closes it."],
        ["deliver-subjects", None, ",".join(DELIVER_SUBJECTS),
         "Comma-separated subjects whose 'messages' list holds a job's events."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["cors-origin"] = []

    def opt_cors_origin(self, origin: str) -> None:
        """Let pages from this origin (e.g. https://app.example.com) read streams; repeatable; * for any."""
        if origin != "*" and "://" not in origin:
            raise usage.UsageError(f"--cors-origin {origin!r} must be like https://host[:port], or *")
        self["cors-origin"].append(origin.rstrip("/"))

    def postOptions(self) -> None:
        nats = self["nats"] or os.environ.get("NATS_URI") or DEFAULT_NATS
        self["nats"] = [url.strip() for url in nats.split(",") if url.strip()]
        if not self["nats"]:
            raise usage.UsageError("--nats needs at least one URL")
        for name in ("open-subjects", "deliver-subjects"):
            self[name] = _subjects(self[name])
        self["jwt-secret"] = self["jwt-secret"] or os.environ.get("JWT_SECRET") or None
        if self["listen"] is not None:
            self._check_endpoint(self["listen"])
        url = self["auth-url"]
        if url is not None and not url.startswith(("http://", "https://")):
            raise usage.UsageError(f"--auth-url {url!r} must be an http:// or https:// URL")

    @staticmethod
    def _check_endpoint(description: str) -> None:
        from twisted.internet import reactor

        try:
            serverFromString(reactor, description)
        except (ValueError, TypeError, KeyError) as error:
            raise usage.UsageError(f"--listen {description!r} is not an endpoint: {error}") from None


def _subjects(value: str) -> tuple[str, ...]:
    subjects = tuple(subject.strip() for subject in value.split(",") if subject.strip())
    for subject in subjects:
        if any(char.isspace() for char in subject) or "*" in subject or ">" in subject:
            raise usage.UsageError(f"{subject!r} is not a plain NATS subject")
    return subjects


def settings_from(options: Options, nats: list[str]) -> Settings:
    return Settings(
        nats=tuple(nats),
        listen=options["listen"],
        jwt_secret=options["jwt-secret"],
        grace=options["grace"],
        heartbeat=options["heartbeat"],
        history=options["history"],
        expiry=options["expiry"],
        retry_ms=options["retry"],
        retention=options["retention"],
        base64=bool(options["base64"]),
        max_pending=options["max-pending"],
        max_streams=options["max-streams"],
        max_inboxes=options["max-inboxes"],
        max_payload=options["max-payload"],
        auth_url=options["auth-url"],
        auth_timeout=options["auth-timeout"],
        auth_cache_ttl=options["auth-cache-ttl"],
        insecure_no_auth=bool(options["insecure-no-auth"]),
        allow_query_token=bool(options["allow-query-token"]),
        cors_origins=frozenset(options["cors-origin"]),
        metrics=not options["no-metrics"],
        metrics_public=bool(options["metrics-public"]),
        open_subjects=options["open-subjects"],
        deliver_subjects=options["deliver-subjects"],
    )


def fatal(line: str) -> None:
    """A startup problem: one clear line, then the process stops with status 1."""
    from twisted.internet import reactor

    Logger().critical("{line}", line=line)
    print(line, file=sys.stderr, flush=True)
    reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
    reactor.callWhenRunning(reactor.stop)


def _stop_cleanly_on_signals(reactor) -> None:
    """SIGTERM and SIGINT are the normal way to stop monit: exit 0, not by the signal.

    twistd would re-raise the signal after shutdown; installed once the reactor
    runs, these handlers replace its own.
    """

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    def handler(signum: int, frame: object) -> None:
        Logger().info("received signal {signum}, stopping", signum=signum)
        reactor.callFromThread(stop)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    reactor.callWhenRunning(_stop_cleanly_on_signals, reactor)
    top = MultiService()
    nats = options["nats"]
    if options["embedded-nats"]:
        from monit.embedded import EmbeddedNATS

        try:
            embedded = EmbeddedNATS(reactor, port=options["embedded-nats-port"])
        except RuntimeError as error:
            sys.exit(f"monit: {error}")
        embedded.setServiceParent(top)
        nats = [embedded.url]
    MonitService(reactor, settings_from(options, nats), on_fatal=fatal).setServiceParent(top)
    return top
