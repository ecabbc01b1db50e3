"""A reader that resumes on an instance still replaying the stream: held until the replay passes its id.

Real parts: a nats-server with JetStream, two monit instances in this process
over real HTTP, nats-py as the engine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket

import nats
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from monit.routing import ID_SHIFT
from monit.token import mint

from deferreds import answered
from publisher import Publisher
from streams import SECRET as MONIT_SECRET
from streams import Reader, auth, feed_of, job_message, open_stream, start_monit
from waiting import wait_for, within

_names = itertools.count(1)


async def publish_many(url: str, count: int, jobs: int) -> None:
    """The engine, busy with other jobs: ``count`` messages, flushed now and then."""

    async def run() -> None:
        client = await nats.connect(url)
        for n in range(count):
            body = {"id": f"other{n % jobs}", "messages": [{"n": n}]}
            await client.publish("monitor.user", json.dumps(body).encode())
            if n % 5000 == 0:
                await client.flush()
        await client.flush()
        await client.close()

    await deferToThread(asyncio.run, run())


@pytest_twisted.ensureDeferred
async def test_a_reader_resuming_on_an_instance_still_replaying_gets_only_what_follows(jetstream_server):
    stream = f"MONIT_RESUME_{next(_names)}"
    one = await start_monit(jetstream_server.url, jetstream=True, jetstream_stream=stream)
    publisher = Publisher(jetstream_server.url)
    two = None
    try:
        await wait_for(lambda: feed_of(one).caught_up, what="the stream made")
        await publish_many(jetstream_server.url, 100_000, 1000)
        publisher.publish("service.create", {"id": "mine"})
        for n in range(49):
            publisher.publish("monitor.user", job_message("mine", f"m{n}"))
        reader = await open_stream(one, "mine")
        await wait_for(lambda: len(reader.events) == 50, timeout=60, what="all fifty from the first instance")
        reader.close()
        # The second instance replays the whole stream (no checkpoint: the other jobs are all kept
        # anyway), and the reader comes to it with the first one's last id before it is done.
        two = await start_monit(
            jetstream_server.url, jetstream=True, jetstream_stream=stream, jetstream_checkpoint=False, heartbeat=60
        )
        asked = treq.get(
            f"{two.base_url}/events?stream=mine",
            headers={**auth(), "Last-Event-ID": reader.events[-1].id},
            unbuffered=True,
        )
        await wait_for(lambda: feed_of(two).held == 1, what="the reader held: it came while the replay ran")
        resumed = Reader(await within(asked, timeout=60))
        assert two.registry.get("mine").last_id == int(reader.events[-1].id), "let go once the replay passed it"
        publisher.publish("monitor.user", job_message("mine", "after"))
        await wait_for(lambda: resumed.events, timeout=20, what="the new event")
        assert [e["body"] for e in resumed.data()] == ["after"] and len(resumed.events) == 1
        resumed.close()
    finally:
        publisher.close()
        await one.stopService()
        if two is not None:
            await two.stopService()


@pytest_twisted.ensureDeferred
async def test_a_held_reader_that_goes_away_is_let_go(jetstream_server):
    stream = f"MONIT_RESUME_{next(_names)}"
    one = await start_monit(jetstream_server.url, jetstream=True, jetstream_stream=stream)
    await wait_for(lambda: feed_of(one).caught_up)
    await one.stopService()
    await publish_many(jetstream_server.url, 50_000, 100)
    two = await start_monit(jetstream_server.url, jetstream=True, jetstream_stream=stream, heartbeat=60)
    try:
        host, port = two.base_url.rsplit("/", 1)[-1].split(":")
        token = mint(MONIT_SECRET, "alice", 3600)
        with socket.create_connection((host, int(port))) as client:
            client.sendall(
                f"GET /events?stream=x HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
                f"Last-Event-ID: {60_000 << ID_SHIFT}\r\n\r\n".encode()
            )
            await wait_for(lambda: feed_of(two).holding == 1, what="held")
            two.nats.pause_reading(True)  # the replay stalls: only the client's going can let it go
        try:
            await wait_for(lambda: feed_of(two).holding == 0, what="let go when the client went away")
            assert not feed_of(two).caught_up and len(two.web.streams) == 0
        finally:
            two.nats.pause_reading(False)
        await wait_for(lambda: feed_of(two).caught_up, timeout=30)
        assert "x" not in two.registry, "no stream was started for it"
    finally:
        await two.stopService()


@pytest_twisted.ensureDeferred
async def test_a_reader_held_longer_than_the_auth_timeout_keeps_its_connection(jetstream_server):
    """The site's deadline is for the request's head: a held request has sent it, and is not cut."""
    stream = f"MONIT_RESUME_{next(_names)}"
    one = await start_monit(jetstream_server.url, jetstream=True, jetstream_stream=stream)
    publisher = Publisher(jetstream_server.url)
    two = None
    try:
        await wait_for(lambda: feed_of(one).caught_up, what="the stream made")
        await publish_many(jetstream_server.url, 50_000, 100)
        publisher.publish("service.create", {"id": "slow"})
        publisher.publish("monitor.user", job_message("slow", "seen"))
        await wait_for(
            lambda: "slow" in one.registry and one.registry.get("slow").last_id >> ID_SHIFT == 50_002,
            timeout=60,
            what="the first instance has both events",
        )
        last = str(one.registry.get("slow").last_id)
        two = await start_monit(
            jetstream_server.url,
            jetstream=True,
            jetstream_stream=stream,
            jetstream_checkpoint=False,
            heartbeat=60,
            auth_timeout=0.2,
        )
        asked = treq.get(
            f"{two.base_url}/events?stream=slow", headers={**auth(), "Last-Event-ID": last}, unbuffered=True
        )
        response = answered(asked)
        await wait_for(lambda: feed_of(two).holding == 1, what="held")
        two.nats.pause_reading(True)  # the replay stalls for five times the auth timeout
        try:
            await deferLater(reactor, 1.0)
            assert feed_of(two).holding == 1 and not response, "still held, not cut"
        finally:
            two.nats.pause_reading(False)
        resumed = Reader(await within(asked, timeout=60))
        assert resumed.response.code == 200
        publisher.publish("monitor.user", job_message("slow", "after"))
        await wait_for(lambda: resumed.events, what="the new event")
        assert [e["body"] for e in resumed.data()] == ["after"] and len(resumed.events) == 1
        resumed.close()
    finally:
        publisher.close()
        await one.stopService()
        if two is not None:
            await two.stopService()
