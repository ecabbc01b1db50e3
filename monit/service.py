"""monit as one Twisted service, for ``twistd monit`` and for embedding: the parts, put together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource

from monit import tuning
from monit._twisted.startup import check_all
from monit.auth.modes import verification_for
from monit.auth.options import AuthOptions
from monit.checkpoint import checkpoint_key
from monit.embedded import EmbeddedNATS
from monit.feed import JetStreamFeed
from monit.inbox import Event
from monit.metrics import MonitCollector, exposition
from monit.nats.client import NATSClient
from monit.nats.nkeys import NATSUser, creds_file, seed_file
from monit.nats.tls import ClientTLS
from monit.probe import RoundTrip
from monit.registry import InboxRegistry
from monit.routing import Router
from monit.settings import Settings
from monit.watch import Watch
from monit.web.app import MonitWeb, Readiness
from monit.web.listener import WebListener, endpoint_from_nats
from monit.web.site import MonitSite


class MonitService(MultiService):
    """The NATS client, the inboxes, the router and the web endpoint, as one service.

    Children start in the order they are made: the collector's pace, the
    embedded nats-server if asked for, NATS, the registry, the router, the
    JetStream feed, token checking, the round trip of ``/readyz?deep=1``, the
    web app, the listener. Stopping goes: stop accepting, end every stream
    with a retry hint, close the HTTP connections once written, then the rest
    in reverse order, NATS last.

    A program of the same process can act on jobs directly: ``watch`` reads
    one job's events, ``when_closed`` waits for its end, and ``follow`` sees
    every job's events as they come.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        settings: Settings,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        tuning.CollectorPace(reactor).setServiceParent(self)  # first: it freezes what the parts made before they start
        check_all()  # against the installed Twisted: each misfit said once; Unfit when monit cannot run with it
        self.settings = settings
        self.on_fatal = on_fatal or self._log_fatal
        nats_urls = settings.nats
        if settings.embedded_nats:
            embedded = EmbeddedNATS(
                IReactorProcess(reactor),
                port=settings.embedded_nats_port,
                store=settings.embedded_nats_store,
                on_fatal=self.on_fatal,
            )
            embedded.setServiceParent(self)
            nats_urls = (embedded.url,)
        self.nats = NATSClient(
            nats_urls,
            reactor,
            request_timeout=settings.request_timeout,
            ping_interval=settings.nats_ping_interval,
            max_pings_out=settings.nats_max_pings_out,
            tls=_nats_tls(settings),
            user=_nats_user(settings),
        )
        self.nats.setServiceParent(self)
        self.registry = InboxRegistry(reactor, **registry_options(settings))
        self.registry.setServiceParent(self)
        self.router = Router(self.registry, paused=self.nats.pause_reading, **router_options(settings))
        self.router.setServiceParent(self)
        self.feed: JetStreamFeed | None = None
        if settings.jetstream:
            self.feed = JetStreamFeed(
                self.nats, self.router, self.registry, reactor, self.on_fatal, **feed_options(settings)
            )
            self.feed.setServiceParent(self)
        else:
            for subject in self.router.subjects:
                self.nats.subscribe(subject, self.router)
        self.auth = verification_for(auth_options(settings), reactor, self.nats, self.on_fatal)
        self.auth.setServiceParent(self)
        self.round_trip = RoundTrip(self.nats, reactor)
        self.round_trip.setServiceParent(self)
        self.web = MonitWeb(
            self.registry,
            self.auth.verifier,
            reactor,
            **web_options(settings),
            readiness=self.readiness,
            round_trip=self.round_trip.check,
            metrics=self._metrics if settings.metrics else None,
            hold=self.feed.hold if self.feed is not None else None,
        )
        self.web.setServiceParent(self)
        self.resource: IResource = self.web.resource()
        self.listener: WebListener | None = None
        if settings.serve:
            site = MonitSite(
                self.resource,
                reactor,
                head_timeout=settings.auth_timeout,
                max_connections=settings.max_connections,
                max_per_address=settings.max_connections_per_ip,
            )
            ask = endpoint_from_nats(self.nats, settings.request_timeout)
            self.listener = WebListener(reactor, site, settings.listen, ask, self.on_fatal)
            self.listener.setServiceParent(self)
        self._figures = MonitCollector(
            inboxes=self.registry,
            router=self.router,
            web=self.web,
            nats=self.nats,
            auth_cache=self.auth.verifier,
            remote=self.auth.remote,
            rechecks=self.web.rechecker,
            site=self.listener.site if self.listener is not None else None,
            jobs=self.registry,
        )

    def _metrics(self) -> bytes:
        return exposition(self._figures)

    def readiness(self) -> Readiness:
        """What /readyz reports: each check, and in words what is wrong."""
        checks = {"nats": self.nats.connected}
        problems = [] if self.nats.problem is None else [f"NATS: {self.nats.problem}"]
        if self.feed is not None:
            checks["jetstream"] = self.feed.caught_up
            problems.extend(self.feed.problems)
        if self.listener is not None:
            checks["listening"] = self.listener.listening
            if not self.listener.listening:
                problems.append("HTTP: not listening yet")
        # Listed, not a failed check: every instance shares the auth backend, and taking them
        # all out of rotation would also end what still works (README, Tokens and access).
        problems.extend(f"auth: {problem}" for problem in self.auth.problems())
        return Readiness(checks, problems)

    # Jobs, in process

    def watch(self, job_id: str, after: int = 0) -> Watch:
        """Read one job's events (those after ``after``, then live ones) with Deferreds.

        Raises InboxLimit when the job has no inbox and there is no room for one.
        """
        return Watch(self.registry, job_id, after, self.settings.max_pending, self.settings.base64)

    def when_closed(self, job_id: str) -> Deferred[Event]:
        """Fire with the job's close event (``….done`` or ``….error``)."""
        return self.registry.when_closed(job_id)

    def follow(self, follower: Callable[[str, Event], None]) -> Callable[[], None]:
        """Call ``follower(job_id, event)`` with every event of every job; returns how to stop."""
        return self.registry.follow(follower)

    # Service

    def _log_fatal(self, line: str) -> None:
        self.log.critical("{line}", line=line)

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop_listening()
        self.web.stopService()  # each stream ends with a retry hint before its connection is closed
        if self.listener is not None:
            await self.listener.close_connections()
        await super().stopService()


def _nats_tls(settings: Settings) -> ClientTLS | None:
    """The TLS files given for NATS, read; None when none were."""
    if settings.nats_tls_ca is None and settings.nats_tls_cert is None:
        return None
    return ClientTLS.from_files(settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key)


def _nats_user(settings: Settings) -> NATSUser | None:
    """The NKey or .creds user monit is to NATS, if one was given."""
    if settings.nats_creds is not None:
        return creds_file(settings.nats_creds)
    if settings.nats_nkey is not None:
        return seed_file(settings.nats_nkey)
    return None


# What each part is told: the few settings it uses, as keyword arguments.


def registry_options(settings: Settings) -> dict[str, Any]:
    """``InboxRegistry``'s."""
    return {
        "history": settings.history,
        "grace": settings.grace,
        "expiry": settings.expiry,
        "abandon": settings.abandon,
        "retention": settings.retention,
        "max_inboxes": settings.max_inboxes,
        "max_inboxes_per_user": settings.max_inboxes_per_user,
        "memory_budget": settings.memory_budget,
        "base64": settings.base64,
        "stream_ids": settings.jetstream,
        "stall_after": settings.stall_after,
    }


def router_options(settings: Settings) -> dict[str, Any]:
    """``Router``'s."""
    return {
        "open_subjects": settings.open_subjects,
        "deliver_subjects": settings.deliver_subjects,
        "max_payload": settings.max_payload,
    }


def feed_options(settings: Settings) -> dict[str, Any]:
    """``JetStreamFeed``'s; its checkpoints' key names the settings that decide what is kept."""
    key = checkpoint_key(
        open_subjects=settings.open_subjects,
        deliver_subjects=settings.deliver_subjects,
        grace=settings.grace,
        retention=settings.retention,
        expiry=settings.expiry,
        abandon=settings.abandon,
        max_inboxes=settings.max_inboxes,
        max_payload=settings.max_payload,
    )
    return {
        "stream": settings.jetstream_stream,
        "replicas": settings.jetstream_replicas,
        "max_age": settings.jetstream_max_age,
        "recreate": settings.jetstream_recreate,
        "request_timeout": settings.request_timeout,
        "check_every": settings.jetstream_check,
        "checkpoint_key": key if settings.jetstream_checkpoint else None,
    }


def web_options(settings: Settings) -> dict[str, Any]:
    """``MonitWeb``'s."""
    return {
        "max_streams": settings.max_streams,
        "max_jobs_per_stream": settings.max_jobs_per_stream,
        "max_pending": settings.max_pending,
        "heartbeat": settings.heartbeat,
        "retry_ms": settings.retry_ms,
        "require_token": not settings.insecure_no_auth,
        "allow_query_token": settings.allow_query_token,
        "cors_origins": settings.cors_origins,
        "metrics_public": settings.metrics_public,
        "auth_recheck": settings.auth_recheck,
        "open_subjects": settings.open_subjects,
    }


def auth_options(settings: Settings) -> AuthOptions:
    """The auth parts' (``monit.auth.modes``)."""
    return AuthOptions(**{field.name: getattr(settings, field.name) for field in attrs.fields(AuthOptions)})
