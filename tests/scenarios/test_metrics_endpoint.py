"""/metrics parses with prometheus_client's own parser, and its figures move with traffic."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import ensureDeferred

from publisher import Publisher
from streams import auth, job_message, open_stream, stalled_reader, start_monit
from waiting import wait_for, within


@pytest.fixture
def monit(nats_server):
    service = pytest_twisted.blockon(ensureDeferred(start_monit(nats_server.url, max_pending=1000)))
    yield service
    pytest_twisted.blockon(service.stopService())


async def scrape(monit, headers=None) -> dict:
    response = await within(treq.get(f"{monit.base_url}/metrics", headers=auth() if headers is None else headers))
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families((await within(response.text())).strip() + "\n"):
        for sample in family.samples:
            key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items()))
            samples[key] = sample.value
    return samples


@pytest_twisted.ensureDeferred
async def test_metrics_need_a_token_unless_public(monit, nats_server):
    response = await within(treq.get(f"{monit.base_url}/metrics"))
    assert response.code == 401
    public = await start_monit(nats_server.url, metrics_public=True)
    try:
        assert "monit_streams_open" in await scrape(public, headers={})
    finally:
        await public.stopService()
    off = await start_monit(nats_server.url, metrics=False)
    try:
        assert (await within(treq.get(f"{off.base_url}/metrics", headers=auth()))).code == 404
    finally:
        await off.stopService()


@pytest_twisted.ensureDeferred
async def test_figures_move_as_traffic_flows(monit, nats_server):
    before = await scrape(monit)
    publisher = Publisher(nats_server.url)
    try:
        reader = await open_stream(monit, "m1")
        publisher.publish("service.create", {"id": "m1"})
        publisher.publish("monitor.user", job_message("m1", "one", "two"))
        publisher.publish("monitor.user", b"not json")
        await wait_for(lambda: len(reader.events) == 3)
        await within(treq.get(f"{monit.base_url}/events?stream=m1", headers={"X-Auth-Token": "bad"}))
        after = await scrape(monit)
        reader.close()
        stalled = stalled_reader(monit.base_url, "m2", auth()["X-Auth-Token"])
        await wait_for(lambda: len(monit.web.streams) == 1 and "m2" in monit.registry)
        deadline = time.monotonic() + 30
        while monit.web.streams.dropped == 0 and time.monotonic() < deadline:  # until the socket is full
            events = monit.registry.events
            publisher.publish("monitor.user", job_message("m2", "x" * 100_000))
            await wait_for(lambda: monit.registry.events > events)
        dropped = await scrape(monit)
    finally:
        stalled.close()
        publisher.close()

    def moved(name):
        return after.get(name, 0) - before.get(name, 0)

    assert moved("monit_nats_messages_total{action=open}") == 1
    assert moved("monit_nats_messages_total{action=deliver}") == 2
    assert moved("monit_nats_malformed_total") == 1
    assert moved("monit_events_total") == 3
    assert moved("monit_events_delivered_total") == 3
    assert moved("monit_auth_results_total{outcome=valid}") == 1
    assert moved("monit_auth_results_total{outcome=invalid}") == 1
    assert moved("monit_requests_refused_total{code=401}") == 1
    assert after["monit_inboxes{state=open}"] >= 1
    assert after["monit_nats_connected"] == 1
    assert after["monit_streams_open"] == 1
    assert dropped["monit_readers_dropped_total"] - after["monit_readers_dropped_total"] == 1
    assert dropped["monit_streams_open"] == 0
