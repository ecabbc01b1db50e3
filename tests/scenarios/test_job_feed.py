"""``GET /jobs/events`` for real: a nats-server, monit over HTTP, a job's whole life on the feed, and a
reader that resumes on a second ``--jetstream`` instance."""

from __future__ import annotations

import json
import time

import jwt
import pytest_twisted
import treq

from monit.auth.jwt_verifier import quiet_key_length

from publisher import Publisher
from streams import SECRET, Reader, ServedMonit, job_message, start_monit
from waiting import wait_for, within


def bearer(**claims) -> dict:
    body = {"sub": "alice", "username": "alice", "exp": int(time.time()) + 3600, **claims}
    with quiet_key_length():  # the tests' monit secret is short
        return {"Authorization": f"Bearer {jwt.encode(body, SECRET, algorithm='HS256')}"}


async def open_feed(monit: ServedMonit, last_id: int | None = None, **claims) -> Reader:
    headers = bearer(**(claims or {"scope": "monit:jobs"}))
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    response = await within(treq.get(f"{monit.base_url}/jobs/events", headers=headers, unbuffered=True))
    assert response.code == 200, response.code
    return Reader(response)


def changes(feed: Reader) -> list[tuple[str | None, str]]:
    """(event name, job) of every frame the feed sent."""
    return [(event.event, json.loads(event.data)["id"]) for event in feed.events]


@pytest_twisted.ensureDeferred
async def test_a_jobs_life_on_the_feed(nats_server, publisher):
    monit = await start_monit(nats_server.url, stall_after=0.5)
    try:
        feed = await open_feed(monit)
        named = await open_feed(monit, streams=["feed2"])
        publisher.publish("service.create", {"service": "env-feed1"})
        publisher.publish("service.create", {"service": "env-feed2"})
        publisher.publish("service.create.done", {"service": "env-feed1"})
        await wait_for(lambda: ("job.closed", "feed1") in changes(feed), what=lambda: feed.raw)
        await wait_for(lambda: ("job.stalled", "feed2") in changes(feed), what=lambda: feed.raw)
        publisher.publish("monitor.user", job_message("feed2", "back"))
        await wait_for(lambda: ("job.resumed", "feed2") in changes(feed), what=lambda: feed.raw)
        publisher.publish("service.create.error", {"service": "env-feed2"})
        await wait_for(lambda: ("job.error", "feed2") in changes(feed), what=lambda: feed.raw)
        assert changes(feed) == [
            ("job.opened", "feed1"),
            ("job.opened", "feed2"),
            ("job.closed", "feed1"),
            ("job.stalled", "feed2"),
            ("job.resumed", "feed2"),
            ("job.error", "feed2"),
        ]
        ids = [int(event.id) for event in feed.events if event.id]
        assert len(ids) == 6 and ids == sorted(ids)
        stalled = json.loads(feed.events[3].data)
        assert stalled["stalled"] is True and stalled["state"] == "open" and stalled["events"] == 1
        await wait_for(lambda: ("job.error", "feed2") in changes(named), what=lambda: named.raw)
        assert {job for _, job in changes(named)} == {"feed2"}
        refused = await within(treq.get(f"{monit.base_url}/jobs/events", headers=bearer()))
        assert refused.code == 403 and "monit:jobs" in json.loads(await within(treq.content(refused)))["error"]
        feed.close()
        named.close()
    finally:
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_reader_resumes_the_feed_on_another_jetstream_instance(jetstream_server):
    stream = "JOBFEED"
    one = await start_monit(jetstream_server.url, jetstream=True, jetstream_stream=stream)
    publisher = Publisher(jetstream_server.url)
    two = None
    try:
        await wait_for(lambda: one.feed.caught_up, what="the first instance ready")
        feed = await open_feed(one)
        publisher.publish("service.create", {"service": "env-js1"})
        publisher.publish("service.create", {"service": "env-js2"})
        await wait_for(lambda: len(feed.events) == 2, what=lambda: feed.raw)
        seen_upto = int(feed.events[-1].id)
        feed.close()
        publisher.publish("monitor.user", job_message("js1", "a", "b"))
        publisher.publish("service.create.done", {"service": "env-js1"})
        publisher.publish("service.create", {"service": "env-js3"})
        await wait_for(lambda: one.registry.summary("js3") is not None, what="the first instance has js3")
        two = await start_monit(jetstream_server.url, jetstream=True, jetstream_stream=stream)
        await wait_for(lambda: two.feed.caught_up, what="the second instance caught up")
        again = await open_feed(two, last_id=seen_upto)
        await wait_for(lambda: len(again.events) == 2, what=lambda: again.raw)
        assert changes(again) == [("job.closed", "js1"), ("job.opened", "js3")]
        on_one = await open_feed(one, last_id=seen_upto)
        await wait_for(lambda: len(on_one.events) == 2, what=lambda: on_one.raw)
        assert [event.id for event in again.events] == [event.id for event in on_one.events], "the stream's ids"
        assert all(int(event.id) > seen_upto for event in again.events)
        publisher.publish("service.create.error", {"service": "env-js3"})
        await wait_for(lambda: ("job.error", "js3") in changes(again), what=lambda: again.raw)
        again.close()
        on_one.close()
    finally:
        publisher.close()
        for monit in (one, two):
            if monit is not None:
                await monit.stopService()
