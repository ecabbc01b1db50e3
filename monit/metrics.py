"""``/metrics`` in Prometheus text format, read from the live objects at scrape time.

Nothing is counted twice on the hot path: the figures are the plain integers
the router, inboxes, streams and NATS client keep anyway, gathered by one
collector when Prometheus asks.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from monit.routing import Action

if TYPE_CHECKING:
    from monit.service import MonitService

INBOX_STATES = ("unopened", "open", "closing", "closed")


class MonitCollector:
    """A prometheus_client collector over one MonitService."""

    def __init__(self, monit: MonitService) -> None:
        self._monit = monit

    def collect(self) -> Iterator[Metric]:
        monit = self._monit
        yield from self._streams(monit)
        yield from self._inboxes(monit)
        yield from self._nats(monit)
        yield from self._auth(monit)

    def _streams(self, monit: MonitService) -> Iterator[Metric]:
        streams = monit.web.streams
        yield GaugeMetricFamily("monit_streams_open", "SSE responses open now", value=len(streams))
        yield CounterMetricFamily(
            "monit_events_delivered", "Events handed to readers (one per reader per event)",
            value=monit.registry.deliveries,
        )
        yield CounterMetricFamily(
            "monit_readers_dropped", "Readers disconnected for falling too far behind",
            value=streams.dropped,
        )
        refused = CounterMetricFamily(
            "monit_requests_refused", "HTTP requests refused, by status code", labels=["code"]
        )
        for code, count in sorted(monit.web.refusals.items()):
            refused.add_metric([str(code)], count)
        yield refused

    def _inboxes(self, monit: MonitService) -> Iterator[Metric]:
        inboxes = GaugeMetricFamily("monit_inboxes", "Inboxes held, by state", labels=["state"])
        states = Counter(inbox.state for inbox in monit.registry)
        for state in INBOX_STATES:
            inboxes.add_metric([state], states[state])
        yield inboxes
        yield CounterMetricFamily(
            "monit_events", "Events that entered an inbox", value=monit.registry.events
        )

    def _nats(self, monit: MonitService) -> Iterator[Metric]:
        router = monit.router
        received = CounterMetricFamily(
            "monit_nats_messages", "NATS messages received, by what their subject does",
            labels=["action"],
        )
        for action in Action:
            received.add_metric([action.value], router.received[action])
        yield received
        yield CounterMetricFamily(
            "monit_nats_malformed", "NATS messages (or elements) skipped as unusable",
            value=router.malformed,
        )
        yield CounterMetricFamily(
            "monit_nats_refused", "NATS messages skipped because the inbox limit was reached",
            value=router.refused,
        )
        yield GaugeMetricFamily(
            "monit_nats_connected", "1 while connected to NATS", value=int(monit.nats.connected)
        )
        yield CounterMetricFamily(
            "monit_nats_reconnects", "Connections to NATS made again after losing one",
            value=monit.nats.reconnects,
        )

    def _auth(self, monit: MonitService) -> Iterator[Metric]:
        results = CounterMetricFamily(
            "monit_auth_results", "Token checks, by outcome", labels=["outcome"]
        )
        for outcome in ("valid", "invalid", "unavailable"):
            results.add_metric([outcome], monit.web.auth_results[outcome])
        yield results
        cache = monit.verifier
        yield CounterMetricFamily("monit_auth_cache_hits", "Token checks answered from the cache",
                                  value=cache.hits)
        yield CounterMetricFamily("monit_auth_cache_misses", "Token checks that asked a verifier",
                                  value=cache.misses)


def exposition(monit: MonitService) -> bytes:
    """The text a Prometheus scrape gets (a registry of its own, not the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitCollector(monit))
    return generate_latest(registry)
