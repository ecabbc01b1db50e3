"""--jetstream against a real nats-server with JetStream: ids from the stream, nothing lost across restarts."""

from __future__ import annotations

import itertools
import json

import pytest_twisted
import treq

from monit.routing import ID_SHIFT

from publisher import Publisher
from streams import auth, feed_of, job_message, open_stream, start_monit
from waiting import wait_for, within

_names = itertools.count(1)


def fresh_stream() -> str:
    return f"MONIT_TEST_{next(_names)}"


async def jetstream_monit(server, stream: str, **settings):
    monit = await start_monit(server.url, jetstream=True, jetstream_stream=stream, **settings)
    await wait_for(lambda: feed_of(monit).caught_up, what="the replay caught up")
    return monit


def stream_info(publisher: Publisher, stream: str) -> dict:
    info: dict = json.loads(publisher.request(f"$JS.API.STREAM.INFO.{stream}", b""))
    return info


@pytest_twisted.ensureDeferred
async def test_a_stream_is_made_that_captures_every_subject_and_acks_nothing(jetstream_server):
    stream = fresh_stream()
    monit = await jetstream_monit(jetstream_server, stream)
    publisher = Publisher(jetstream_server.url)
    try:
        config = stream_info(publisher, stream)["config"]
        assert set(config["subjects"]) == set(monit.router.subjects)
        assert config["no_ack"] is True and config["num_replicas"] == 1
        response = await within(treq.get(f"{monit.base_url}/readyz"))
        body = json.loads(await within(response.content()))
        assert response.code == 200 and body["jetstream"] is True
    finally:
        publisher.close()
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_event_ids_are_the_stream_sequence_and_a_restart_loses_nothing(jetstream_server):
    stream = fresh_stream()
    publisher = Publisher(jetstream_server.url)
    first = await jetstream_monit(jetstream_server, stream)
    try:
        reader = await open_stream(first, "js1")
        publisher.publish("service.create", {"id": "js1"})
        publisher.publish("monitor.user", job_message("js1", "one", "two"))
        await wait_for(lambda: len(reader.events) == 3)
        seq = stream_info(publisher, stream)["state"]["last_seq"]
        assert [int(e.id) for e in reader.events] == [(seq - 1) << ID_SHIFT, seq << ID_SHIFT, (seq << ID_SHIFT) + 1]
        seen = reader.events[-1].id
        reader.close()
    finally:
        await first.stopService()
    publisher.publish("monitor.user", job_message("js1", "while monit was down"))
    second = await jetstream_monit(jetstream_server, stream)
    try:
        resumed = await open_stream(second, "js1", {**auth(), "Last-Event-ID": seen})
        publisher.publish("monitor.user", job_message("js1", "after the restart"))
        await wait_for(lambda: len(resumed.events) == 2)
        assert [e["body"] for e in resumed.data()] == ["while monit was down", "after the restart"]
        fresh = await open_stream(second, "js1")
        await wait_for(lambda: len(fresh.events) == 5)
        assert [e.id for e in fresh.events][:3] == [e.id for e in reader.events]  # the same ids again
        resumed.close()
        fresh.close()
    finally:
        publisher.close()
        await second.stopService()


@pytest_twisted.ensureDeferred
async def test_two_instances_agree_and_a_reader_moves_between_them(jetstream_server):
    stream = fresh_stream()
    one, two = await jetstream_monit(jetstream_server, stream), await jetstream_monit(jetstream_server, stream)
    publisher = Publisher(jetstream_server.url)
    try:
        reader = await open_stream(one, "move")
        publisher.publish("service.create", {"id": "move"})
        for n in range(5):
            publisher.publish("monitor.user", job_message("move", f"m{n}"))
        await wait_for(lambda: len(reader.events) == 6)
        reader.close()
        for n in range(5, 8):
            publisher.publish("monitor.user", job_message("move", f"m{n}"))
        moved = await open_stream(two, "move", {**auth(), "Last-Event-ID": reader.events[-1].id})
        await wait_for(lambda: len(moved.events) == 3)
        assert [e["body"] for e in reader.data() + moved.data()] == [f"m{n}" for n in range(8)]
        assert one.registry.get("move").last_id == two.registry.get("move").last_id
        moved.close()
    finally:
        publisher.close()
        await one.stopService()
        await two.stopService()


@pytest_twisted.ensureDeferred
async def test_a_reader_of_several_jobs_moves_between_instances_with_one_id(jetstream_server):
    stream = fresh_stream()
    one, two = await jetstream_monit(jetstream_server, stream), await jetstream_monit(jetstream_server, stream)
    publisher = Publisher(jetstream_server.url)
    try:
        reader = await open_stream(one, "left", query="&stream=right")
        for n in range(4):
            publisher.publish("monitor.user", job_message("left", f"l{n}"))
            publisher.publish("monitor.user", job_message("right", f"r{n}"))
        await wait_for(lambda: len(reader.events) == 8)
        reader.close()
        for n in range(4, 6):
            publisher.publish("monitor.user", job_message("right", f"r{n}"))
            publisher.publish("monitor.user", job_message("left", f"l{n}"))
        moved = await open_stream(two, "left", {**auth(), "Last-Event-ID": reader.events[-1].id}, query="&stream=right")
        await wait_for(lambda: len(moved.events) == 4)
        seen = [
            (json.loads(e.data)["stream"], json.loads(e.data)["data"]["body"]) for e in reader.events + moved.events
        ]
        assert sorted(seen) == sorted([("left", f"l{n}") for n in range(6)] + [("right", f"r{n}") for n in range(6)])
        ids = [int(e.id) for e in reader.events + moved.events]
        assert ids == sorted(set(ids)) and all(i >> ID_SHIFT for i in ids)
        moved.close()
    finally:
        publisher.close()
        await one.stopService()
        await two.stopService()


@pytest_twisted.ensureDeferred
async def test_a_job_published_while_no_monit_runs_is_served_after(jetstream_server):
    stream = fresh_stream()
    (await jetstream_monit(jetstream_server, stream)).stopService()  # makes the stream, then goes
    publisher = Publisher(jetstream_server.url)
    try:
        publisher.publish("service.create", {"id": "early"})
        publisher.publish("monitor.user", job_message("early", "nobody was watching"))
        publisher.publish("service.create.done", {"id": "early"})
        monit = await jetstream_monit(jetstream_server, stream, retention=60)
        try:
            reader = await open_stream(monit, "early")
            await within(reader.done)
            assert [e.event for e in reader.events] == ["service.create", "message", "service.create.done"]
        finally:
            await monit.stopService()
    finally:
        publisher.close()


@pytest_twisted.ensureDeferred
async def test_the_engines_requests_still_get_the_engines_replies(jetstream_server):
    stream = fresh_stream()
    monit = await jetstream_monit(jetstream_server, stream)
    engine, caller = Publisher(jetstream_server.url), Publisher(jetstream_server.url)
    try:
        engine.reply_to("build.create", b"the engine's answer")
        assert caller.request("build.create", json.dumps({"id": "asked"}).encode()) == b"the engine's answer"
        await wait_for(lambda: "asked" in monit.registry, what="the request is in the stream too")
    finally:
        engine.close()
        caller.close()
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_an_operators_stream_that_misses_a_subject_stops_monit(jetstream_server):
    stream = fresh_stream()
    publisher = Publisher(jetstream_server.url)
    try:
        config = {"name": stream, "subjects": ["service.>"], "no_ack": True}
        publisher.request(f"$JS.API.STREAM.CREATE.{stream}", json.dumps(config).encode())
        fatal: list[str] = []
        monit = await start_monit(jetstream_server.url, fatal.append, jetstream=True, jetstream_stream=stream)
        await wait_for(lambda: fatal, what="a fatal line")
        assert "does not capture" in fatal[0] and "monitor.user" in fatal[0]
        assert stream_info(publisher, stream)["config"]["subjects"] == ["service.>"], "never changed"
        await monit.stopService()
    finally:
        publisher.close()
