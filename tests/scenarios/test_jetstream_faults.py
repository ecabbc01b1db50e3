"""--jetstream when the stream misbehaves: deleted, lost with the server's store, made anew, unable to store.

Real parts: a nats-server with JetStream, monit in this process over real
HTTP, nats-py as the engine and as the operator (deleting, making, sealing).
"""

from __future__ import annotations

import itertools
import json
import shutil

import pytest_twisted
import treq

from monit.routing import ID_SHIFT

from publisher import Publisher
from streams import auth, feed_of, job_message, open_stream, start_monit
from waiting import wait_for, within

_names = itertools.count(1)
CHECK = 0.2  # seconds between the feed's looks at the stream


def fresh_stream() -> str:
    return f"MONIT_FAULT_{next(_names)}"


def api(publisher: Publisher, call: str, body: dict | None = None) -> dict:
    answer: dict = json.loads(publisher.request(f"$JS.API.{call}", json.dumps(body).encode() if body else b""))
    return answer


def info(publisher: Publisher, stream: str) -> dict:
    return api(publisher, f"STREAM.INFO.{stream}")


def operators_stream(publisher: Publisher, stream: str, **config) -> dict:
    """A stream an operator makes, capturing every subject monit listens to."""
    body = {
        "name": stream,
        "subjects": ["service.>", "build.>", "environment.>", "monitor.>"],
        "no_ack": True,
        **config,
    }
    made = api(publisher, f"STREAM.CREATE.{stream}", body)
    assert "error" not in made, made
    return made


async def readyz(monit) -> tuple[int, dict]:
    response = await within(treq.get(f"{monit.base_url}/readyz"))
    body = await within(response.content())
    return response.code, json.loads(body)


async def jetstream_monit(server, stream: str, **settings):
    monit = await start_monit(server.url, jetstream=True, jetstream_stream=stream, jetstream_check=CHECK, **settings)
    await wait_for(lambda: feed_of(monit).caught_up, what="the replay caught up")
    return monit


async def a_job_gets_through(monit, publisher: Publisher, job: str) -> None:
    """A new job's events, published now, reach a reader: the stream captures and monit follows."""
    reader = await open_stream(monit, job)
    publisher.publish("service.create", {"id": job})
    publisher.publish("monitor.user", job_message(job, "one", "two"))
    await wait_for(lambda: len(reader.events) == 3, what=f"{job}'s three events")
    assert [e["body"] for e in reader.data()] == ["one", "two"]
    reader.close()


@pytest_twisted.ensureDeferred
async def test_a_deleted_stream_that_monit_made_is_made_again_and_followed(jetstream_server, events):
    stream = fresh_stream()
    monit = await jetstream_monit(jetstream_server, stream)
    publisher = Publisher(jetstream_server.url)
    try:
        await a_job_gets_through(monit, publisher, "before")
        created = info(publisher, stream)["created"]
        assert info(publisher, stream)["config"]["metadata"]["made-by"] == "monit"
        assert api(publisher, f"STREAM.DELETE.{stream}")["success"]
        await wait_for(
            lambda: "error" not in info(publisher, stream) and info(publisher, stream)["created"] != created,
            what="the stream made again",
        )
        # monit hears that it made the stream a moment after the server has it: wait for both.
        await wait_for(
            lambda: "before" not in monit.registry and feed_of(monit).caught_up,
            what="every inbox of the old stream ended, and the new stream followed",
        )
        await a_job_gets_through(monit, publisher, "after")
        assert await readyz(monit) == (
            200,
            {"ready": True, "nats": True, "jetstream": True, "listening": True, "problems": []},
        )
        assert any(
            "monit made it again" in str(e.get("log_format", "")) or e.get("why") == "monit made it again"
            for e in events
        )
    finally:
        publisher.close()
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_nats_server_back_with_an_empty_store_gets_the_stream_again(jetstream_server):
    stream = fresh_stream()
    monit = await jetstream_monit(jetstream_server, stream)
    try:
        publisher = Publisher(jetstream_server.url)
        await a_job_gets_through(monit, publisher, "before")
        publisher.close()
        jetstream_server.stop()
        shutil.rmtree(jetstream_server.store)  # a pod with no volume
        jetstream_server.start()
        publisher = Publisher(jetstream_server.url)
        await wait_for(lambda: "error" not in info(publisher, stream), timeout=30, what="the stream made again")
        await wait_for(lambda: feed_of(monit).caught_up, timeout=30, what="following the new stream")
        await a_job_gets_through(monit, publisher, "after")
        assert (await readyz(monit))[0] == 200
        publisher.close()
    finally:
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_an_operators_stream_that_is_deleted_makes_monit_unready_naming_it_until_it_is_back(jetstream_server):
    stream = fresh_stream()
    publisher = Publisher(jetstream_server.url)
    operators_stream(publisher, stream)
    monit = await jetstream_monit(jetstream_server, stream)
    try:
        await a_job_gets_through(monit, publisher, "before")
        api(publisher, f"STREAM.DELETE.{stream}")
        await wait_for(lambda: not feed_of(monit).caught_up, what="not ready")
        code, body = await readyz(monit)
        assert code == 503 and body["jetstream"] is False
        assert [p for p in body["problems"] if stream in p and "gone" in p and "--jetstream-recreate" in p], body
        assert "error" in info(publisher, stream), "monit did not make it"
        operators_stream(publisher, stream)  # the operator makes it again: monit follows it, as new
        await wait_for(lambda: feed_of(monit).caught_up, what="following the operator's new stream")
        assert "before" not in monit.registry
        await a_job_gets_through(monit, publisher, "after")
        assert (await readyz(monit)) == (
            200,
            {"ready": True, "nats": True, "jetstream": True, "listening": True, "problems": []},
        )
        assert "made-by" not in (info(publisher, stream)["config"].get("metadata") or {}), "the operator's, unchanged"
    finally:
        publisher.close()
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_told_to_recreate_monit_makes_an_operators_stream_again(jetstream_server):
    stream = fresh_stream()
    publisher = Publisher(jetstream_server.url)
    operators_stream(publisher, stream)
    monit = await jetstream_monit(jetstream_server, stream, jetstream_recreate=True)
    try:
        api(publisher, f"STREAM.DELETE.{stream}")
        await wait_for(lambda: "error" not in info(publisher, stream), what="the stream made again")
        await wait_for(lambda: feed_of(monit).caught_up, what="following it")
        await a_job_gets_through(monit, publisher, "after")
    finally:
        publisher.close()
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_stream_made_anew_is_replayed_from_its_first_message_and_old_ids_get_the_gap_notice(jetstream_server):
    stream = fresh_stream()
    publisher = Publisher(jetstream_server.url)
    monit = await jetstream_monit(jetstream_server, stream)
    try:
        reader = await open_stream(monit, "anew")
        publisher.publish("service.create", {"id": "anew"})
        for n in range(40):  # the old stream goes well past where the new one will be
            publisher.publish("monitor.user", job_message("anew", f"old{n}"))
        await wait_for(lambda: len(reader.events) == 41)
        old_id = reader.events[-1].id
        config = info(publisher, stream)["config"]
        # Someone else (another instance, an operator's script) deletes it and makes it again at once,
        # and the engine goes on: the new stream's first messages must not be skipped.
        api(publisher, f"STREAM.DELETE.{stream}")
        api(
            publisher,
            f"STREAM.CREATE.{stream}",
            {key: value for key, value in config.items() if key != "metadata"} | {"metadata": {"made-by": "monit"}},
        )
        publisher.publish("service.create", {"id": "anew"})
        for n in range(20):
            publisher.publish("monitor.user", job_message("anew", f"new{n}"))
        await within(reader.done)  # the old stream's inboxes ended
        await wait_for(
            lambda: (
                feed_of(monit).caught_up
                and "anew" in monit.registry
                and monit.registry.get("anew").last_id >> ID_SHIFT == 21
            ),
            what="the new stream replayed",
        )
        fresh = await open_stream(monit, "anew")
        await wait_for(lambda: len(fresh.data()) == 20, what="all twenty")
        assert [e["body"] for e in fresh.data()] == [f"new{n}" for n in range(20)]
        assert [int(e.id) >> ID_SHIFT for e in fresh.events] == list(range(1, 22))
        resumed = await open_stream(monit, "anew", {**auth(), "Last-Event-ID": old_id})
        await wait_for(lambda: len(resumed.events) == 22, what="the gap notice, then everything")
        assert resumed.events[0].event == "gap" and json.loads(resumed.events[0].data) == {"from": None, "to": None}
        assert [e["body"] for e in resumed.data()] == [f"new{n}" for n in range(20)]
        fresh.close()
        resumed.close()
    finally:
        publisher.close()
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_stream_that_cannot_store_is_a_problem_in_readyz_and_the_log(jetstream_server, events):
    stream = fresh_stream()
    publisher = Publisher(jetstream_server.url)
    operators_stream(publisher, stream, discard="new", max_msgs=5)
    for n in range(5):
        publisher.publish("monitor.user", job_message("filler", f"f{n}"))
    monit = await jetstream_monit(jetstream_server, stream)
    try:
        code, body = await readyz(monit)
        [problem] = body["problems"]
        assert code == 200, "it serves what it has: every instance has the same problem"
        assert stream in problem and "max_msgs" in problem and "discard: new" in problem
        assert [e for e in events if e.get("why") and "max_msgs" in e["why"] and e["log_level"].name == "error"]
        api(publisher, f"STREAM.PURGE.{stream}")
        await wait_for(lambda: not feed_of(monit).problems, what="it can store again")
        config = info(publisher, stream)["config"]
        api(publisher, f"STREAM.UPDATE.{stream}", config | {"sealed": True})
        await wait_for(lambda: feed_of(monit).problems, what="the seal noticed")
        assert "sealed" in (await readyz(monit))[1]["problems"][0]
    finally:
        publisher.close()
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_stream_whose_subject_is_at_its_limit_is_a_problem_too(jetstream_server):
    stream = fresh_stream()
    publisher = Publisher(jetstream_server.url)
    operators_stream(publisher, stream, discard="new", max_msgs_per_subject=2, discard_new_per_subject=True)
    monit = await jetstream_monit(jetstream_server, stream)
    try:
        assert feed_of(monit).problems == []
        for n in range(2):
            publisher.publish("monitor.user", job_message("filler", f"f{n}"))
        await wait_for(lambda: feed_of(monit).problems, what="the full subject noticed")
        assert "monitor.user" in feed_of(monit).problems[0] and "max_msgs_per_subject" in feed_of(monit).problems[0]
    finally:
        publisher.close()
        await monit.stopService()
