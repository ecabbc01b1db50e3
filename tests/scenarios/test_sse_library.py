"""A stream read by an SSE client library from PyPI (httpx-sse), reconnecting by Last-Event-ID."""

from __future__ import annotations

import json

import httpx
import pytest
import pytest_twisted
from httpx_sse import connect_sse
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread

from publisher import Publisher
from streams import auth, start_monit
from waiting import wait_for, within


@pytest.fixture
def monit(nats_server):
    service = pytest_twisted.blockon(ensureDeferred(start_monit(nats_server.url, grace=0.2)))
    yield service
    pytest_twisted.blockon(service.stopService())


def read_events(url: str, headers: dict, stop_after: int | None = None) -> list:
    """Read (event, id, data, retry) until the stream ends or ``stop_after`` events arrived."""
    seen = []
    with httpx.Client(timeout=10) as client:
        with connect_sse(client, "GET", url, headers=headers) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            for sse in source.iter_sse():
                if not sse.data:  # httpx-sse also hands over retry-only and comment-only blocks
                    continue
                seen.append((sse.event, sse.id, sse.data, sse.retry))
                if stop_after is not None and len(seen) >= stop_after:
                    break
    return seen


@pytest_twisted.ensureDeferred
async def test_httpx_sse_reads_a_job_and_resumes_where_it_left_off(monit, nats_server):
    url = f"{monit.base_url}/events?stream=h1"
    publisher = Publisher(nats_server.url)
    try:
        publisher.publish("build.create", {"id": "h1"})
        for n in range(4):
            publisher.publish("monitor.user", {"id": "h1", "messages": [{"n": n, "text": "a\nb"}]})
        await wait_for(
            lambda: "h1" in monit.registry and monit.registry.get("h1").last_id == monit.registry.id_base + 5
        )
        first = await within(deferToThread(read_events, url, auth(), stop_after=3))
        assert [event for event, *_ in first] == ["build.create", "message", "message"]
        assert json.loads(first[1][2]) == {"n": 0, "text": "a\nb"}
        publisher.publish("build.create.done", {"id": "h1"})
        rest = await within(deferToThread(read_events, url, {**auth(), "Last-Event-ID": first[-1][1]}))
    finally:
        publisher.close()
    assert [int(sse_id) - monit.registry.id_base for _, sse_id, _, _ in rest] == [4, 5, 6]
    assert [json.loads(data)["n"] for event, _, data, _ in rest if event == "message"] == [2, 3]
    assert rest[-1][0] == "build.create.done"
