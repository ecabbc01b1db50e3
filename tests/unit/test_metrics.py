"""The collector alone: the figures it is given, read back with prometheus_client's own parser."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from monit.metrics import MonitCollector, exposition
from monit.routing import Action


def test_the_collector_reads_the_figures_it_is_given():
    """No service and no nats-server: the collector takes its sources explicitly."""
    inboxes = Figures(
        events=5, deliveries=12, evicted=3, history_bytes=4096, inboxes=[Figures(state="open"), Figures(state="closed")]
    )
    streams = Sized(3, dropped=1)
    web = Figures(streams=streams, refusals={401: 2}, auth_results={"valid": 4})
    router = Figures(received={Action.DELIVER: 6}, malformed=1, refused=0)  # and 1 unusable frame
    collector = MonitCollector(
        inboxes=inboxes,
        router=router,
        web=web,
        nats=Figures(connected=True, reconnects=2, unusable=1),
        auth_cache=Figures(hits=7, misses=3),
        remote=Figures(in_flight=2, refused=5),
        rechecks=Figures(checks=10, revoked=1, unavailable=2),
    )
    samples = {
        sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition(collector).decode())
        for sample in family.samples
    }
    assert samples["monit_streams_open"] == 3 and samples["monit_readers_dropped_total"] == 1
    assert samples["monit_events_total"] == 5 and samples["monit_events_delivered_total"] == 12
    assert samples["monit_inboxes{state=open}"] == 1 and samples["monit_inboxes{state=unopened}"] == 0
    assert samples["monit_nats_messages_total{action=deliver}"] == 6
    assert samples["monit_nats_messages_total{action=open}"] == 0
    assert samples["monit_requests_refused_total{code=401}"] == 2
    assert samples["monit_auth_results_total{outcome=valid}"] == 4
    assert samples["monit_auth_cache_hits_total"] == 7 and samples["monit_nats_reconnects_total"] == 2
    assert samples["monit_nats_malformed_total"] == 2  # the router's and the protocol's
    assert samples["monit_history_bytes"] == 4096 and samples["monit_inboxes_evicted_total"] == 3
    assert samples["monit_auth_checks_in_flight"] == 2 and samples["monit_auth_checks_refused_total"] == 5
    assert samples["monit_auth_rechecks_total{outcome=revoked}"] == 1
    assert samples["monit_auth_rechecks_total{outcome=valid}"] == 7


class Figures(SimpleNamespace):
    def __iter__(self):
        return iter(self.inboxes)


class Sized(SimpleNamespace):
    def __init__(self, length: int, **figures):
        super().__init__(**figures)
        self.length = length

    def __len__(self) -> int:
        return self.length
