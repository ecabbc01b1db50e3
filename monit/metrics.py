"""``/metrics`` in Prometheus text format, read from the live objects at scrape time.

Nothing is counted twice on the hot path: the figures are the plain integers
the router, inboxes, streams and NATS client keep anyway, gathered by one
collector when Prometheus asks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from monit.jobs import JOB_STATES
from monit.routing import Action

INBOX_STATES = ("unopened", "open", "closing", "closed")


class _HasState(Protocol):
    @property
    def state(self) -> str: ...


class InboxFigures(Iterable[_HasState], Protocol):
    """The inbox registry: its inboxes, and what went into and out of them."""

    events: int
    deliveries: int
    evicted: int
    history_bytes: int


class JobFigures(Protocol):
    """The jobs as a whole: how many in each state, and how many of the open ones are stalled."""

    def job_counts(self) -> Mapping[str, int]: ...

    @property
    def stalled_jobs(self) -> int: ...


class StreamFigures(Sized, Protocol):
    dropped: int


class WebFigures(Protocol):
    """The web app: its open streams and what it answered."""

    @property
    def streams(self) -> StreamFigures: ...

    @property
    def refusals(self) -> Mapping[int, int]: ...

    @property
    def auth_results(self) -> Mapping[str, int]: ...


class SiteFigures(Protocol):
    """The HTTP site: requests it answered itself, and connections it turned away."""

    @property
    def refused(self) -> Mapping[int, int]: ...

    @property
    def refused_connections(self) -> Mapping[str, int]: ...


class RouterFigures(Protocol):
    """The router: NATS messages by action, and those skipped."""

    @property
    def received(self) -> Mapping[Action, int]: ...

    malformed: int
    refused: int


class NATSFigures(Protocol):
    @property
    def connected(self) -> bool: ...

    reconnects: int
    unusable: int


class CacheFigures(Protocol):
    hits: int
    misses: int


class RemoteFigures(Protocol):
    """The auth service's checks: those in flight, and those refused at the bound."""

    in_flight: int
    refused: int


class RecheckFigures(Protocol):
    """The open streams' tokens, asked about again."""

    checks: int
    revoked: int
    unavailable: int


class MonitCollector:
    """A prometheus_client collector over the objects that keep monit's figures."""

    def __init__(
        self,
        *,
        inboxes: InboxFigures,
        router: RouterFigures,
        web: WebFigures,
        nats: NATSFigures,
        auth_cache: CacheFigures,
        remote: RemoteFigures | None = None,
        rechecks: RecheckFigures | None = None,
        site: SiteFigures | None = None,
        jobs: JobFigures | None = None,
    ) -> None:
        self._inboxes = inboxes
        self._router = router
        self._web = web
        self._nats = nats
        self._auth_cache = auth_cache
        self._remote = remote
        self._rechecks = rechecks
        self._site = site
        self._jobs = jobs

    def collect(self) -> Iterator[Metric]:
        yield from self._streams()
        yield from self._inbox_figures()
        yield from self._job_figures()
        yield from self._nats_figures()
        yield from self._auth()

    def _streams(self) -> Iterator[Metric]:
        streams = self._web.streams
        yield GaugeMetricFamily("monit_streams_open", "SSE responses open now", value=len(streams))
        yield CounterMetricFamily(
            "monit_events_delivered",
            "Events handed to readers (one per reader per event)",
            value=self._inboxes.deliveries,
        )
        yield CounterMetricFamily(
            "monit_readers_dropped",
            "Readers disconnected for falling too far behind",
            value=streams.dropped,
        )
        refused = CounterMetricFamily(
            "monit_requests_refused", "HTTP requests refused, by status code", labels=["code"]
        )
        codes = Counter(self._web.refusals)
        if self._site is not None:
            codes.update(self._site.refused)
        for code, count in sorted(codes.items()):
            refused.add_metric([str(code)], count)
        yield refused
        if self._site is not None:
            turned_away = CounterMetricFamily(
                "monit_connections_refused", "Connections turned away at a cap", labels=["reason"]
            )
            for reason in ("max-connections", "max-connections-per-ip"):
                turned_away.add_metric([reason], self._site.refused_connections.get(reason, 0))
            yield turned_away

    def _inbox_figures(self) -> Iterator[Metric]:
        inboxes = GaugeMetricFamily("monit_inboxes", "Inboxes held, by state", labels=["state"])
        states = Counter(inbox.state for inbox in self._inboxes)
        for state in INBOX_STATES:
            inboxes.add_metric([state], states[state])
        yield inboxes
        yield CounterMetricFamily("monit_events", "Events that entered an inbox", value=self._inboxes.events)
        yield GaugeMetricFamily(
            "monit_history_bytes",
            "Bytes the inboxes' histories hold (within --memory-budget)",
            value=self._inboxes.history_bytes,
        )
        yield CounterMetricFamily(
            "monit_inboxes_evicted",
            "Unwatched inboxes dropped to make room for new jobs",
            value=self._inboxes.evicted,
        )

    def _job_figures(self) -> Iterator[Metric]:
        if self._jobs is None:
            return
        jobs = GaugeMetricFamily("monit_jobs", "Jobs known, by state (as GET /jobs lists them)", labels=["state"])
        counts = self._jobs.job_counts()
        for state in JOB_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily(
            "monit_jobs_stalled", "Open jobs silent for --stall-after seconds", value=self._jobs.stalled_jobs
        )

    def _nats_figures(self) -> Iterator[Metric]:
        router = self._router
        received = CounterMetricFamily(
            "monit_nats_messages",
            "NATS messages received, by what their subject does",
            labels=["action"],
        )
        for action in Action:
            received.add_metric([action.value], router.received.get(action, 0))
        yield received
        yield CounterMetricFamily(
            "monit_nats_malformed",
            "NATS messages (or elements) skipped as unusable",
            value=router.malformed + self._nats.unusable,
        )
        yield CounterMetricFamily(
            "monit_nats_refused",
            "NATS messages skipped because the inbox limit was reached",
            value=router.refused,
        )
        yield GaugeMetricFamily("monit_nats_connected", "1 while connected to NATS", value=int(self._nats.connected))
        yield CounterMetricFamily(
            "monit_nats_reconnects",
            "Connections to NATS made again after losing one",
            value=self._nats.reconnects,
        )

    def _auth(self) -> Iterator[Metric]:
        results = CounterMetricFamily("monit_auth_results", "Token checks, by outcome", labels=["outcome"])
        for outcome in ("valid", "invalid", "unavailable"):
            results.add_metric([outcome], self._web.auth_results.get(outcome, 0))
        yield results
        cache = self._auth_cache
        yield CounterMetricFamily("monit_auth_cache_hits", "Token checks answered from the cache", value=cache.hits)
        yield CounterMetricFamily("monit_auth_cache_misses", "Token checks that asked a verifier", value=cache.misses)
        if self._remote is not None:
            yield GaugeMetricFamily(
                "monit_auth_checks_in_flight", "Token checks waiting for the auth service", value=self._remote.in_flight
            )
            yield CounterMetricFamily(
                "monit_auth_checks_refused", "Token checks refused at --auth-concurrency", value=self._remote.refused
            )
        if self._rechecks is not None:
            rechecks = CounterMetricFamily(
                "monit_auth_rechecks", "Open streams' tokens asked about again, by outcome", labels=["outcome"]
            )
            rechecks.add_metric(["revoked"], self._rechecks.revoked)
            rechecks.add_metric(["unavailable"], self._rechecks.unavailable)
            rechecks.add_metric(["valid"], self._rechecks.checks - self._rechecks.revoked - self._rechecks.unavailable)
            yield rechecks


def exposition(collector: MonitCollector) -> bytes:
    """The text a Prometheus scrape gets (a registry of its own, not the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
