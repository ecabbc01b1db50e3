"""monit end to end: a real nats-server, nats-py publishing, real HTTP readers."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import ensureDeferred

from monit.token import mint

from streams import auth, job_message, open_stream, start_monit
from waiting import wait_for, within


@pytest.fixture
def monit(nats_server):
    service = pytest_twisted.blockon(ensureDeferred(start_monit(nats_server.url)))
    yield service
    pytest_twisted.blockon(service.stopService())


@pytest_twisted.ensureDeferred
async def test_open_messages_done_then_the_stream_ends_after_grace(monit, publisher):
    publisher.publish("service.create", {"id": "j1", "service": "env-j1"})
    await wait_for(lambda: "j1" in monit.registry, what="inbox opened")
    reader = await open_stream(monit, "j1")
    publisher.publish("monitor.user", job_message("j1", "one", "two"))
    publisher.publish("service.create.done", {"id": "j1", "service": "env-j1"})
    await within(reader.done)
    assert [event.event for event in reader.events] == ["service.create", "message", "message", "service.create.done"]
    assert reader.raw.startswith(b"retry: 3000\n\n")
    assert [int(event.id) - monit.registry.id_base for event in reader.events] == [1, 2, 3, 4]
    assert reader.data() == [{"body": "one", "level": "INFO"}, {"body": "two", "level": "INFO"}]
    assert reader.parser.retry == 3000


@pytest_twisted.ensureDeferred
async def test_message_for_an_unknown_inbox_waits_for_its_reader(monit, publisher):
    publisher.publish("monitor.user", job_message("j2", "early"))
    await wait_for(lambda: "j2" in monit.registry, what="inbox made by the message")
    reader = await open_stream(monit, "j2")
    await wait_for(lambda: reader.events, what="the early message")
    assert reader.data() == [{"body": "early", "level": "INFO"}]


@pytest_twisted.ensureDeferred
async def test_client_first_then_open(monit, publisher):
    reader = await open_stream(monit, "j3")
    publisher.publish("service.delete", {"service": "env-j3"})
    publisher.publish("monitor.user", job_message("j3", "deleting"))
    publisher.publish("service.delete.done", {"service": "env-j3"})
    await within(reader.done)
    assert [event.event for event in reader.events] == ["service.delete", "message", "service.delete.done"]


@pytest_twisted.ensureDeferred
async def test_keepalives_flow_on_an_idle_stream(monit):
    reader = await open_stream(monit, "idle")
    await wait_for(lambda: len(reader.parser.comments) >= 2, what="two keep-alives")
    assert reader.events == []


@pytest_twisted.ensureDeferred
async def test_two_streams_see_only_their_own_events(monit, publisher):
    first, second = await open_stream(monit, "a1"), await open_stream(monit, "b1")
    publisher.publish("monitor.user", job_message("a1", "for a"))
    publisher.publish("monitor.user", job_message("b1", "for b"))
    await wait_for(lambda: first.events and second.events)
    assert first.data() == [{"body": "for a", "level": "INFO"}]
    assert second.data() == [{"body": "for b", "level": "INFO"}]


@pytest_twisted.ensureDeferred
async def test_malformed_payloads_are_skipped_and_the_next_good_one_arrives(monit, publisher):
    reader = await open_stream(monit, "m1")
    bad = [
        b"\xff\xfe",
        b"not json",
        b"[]",
        b'{"service": 5}',
        b'{"id": "m1", "messages": {}}',
        json.dumps({"id": "m1", "messages": ["x"]}).encode(),
    ]
    for payload in bad:
        publisher.publish("monitor.user", payload)
    publisher.publish("monitor.user", job_message("m1", "good"))
    await wait_for(lambda: reader.events, what="the good message")
    assert reader.data() == [{"body": "good", "level": "INFO"}]
    assert monit.router.malformed == len(bad)
    assert monit.running


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "query, headers, code",
    [
        ("", None, 400),
        ("?stream=", None, 400),
        ("?stream=x", {}, 401),
        ("?stream=x", {"X-Auth-Token": "garbage"}, 401),
        ("?stream=x", {"Authorization": "Bearer " + mint("other-secret", "eve", 3600)}, 401),
    ],
)
async def test_refusals(monit, query, headers, code):
    response = await within(treq.get(f"{monit.base_url}/events{query}", headers=auth() if headers is None else headers))
    assert response.code == code
    body = await within(response.json())
    assert set(body) == {"error"}


@pytest_twisted.ensureDeferred
async def test_a_client_that_disconnects_is_unsubscribed(monit):
    response = await within(treq.get(f"{monit.base_url}/events?stream=gone", headers=auth(), unbuffered=True))
    await wait_for(lambda: monit.registry.get("gone") and monit.registry.get("gone").subscribers)
    response.original._transport.loseConnection()
    await wait_for(lambda: not monit.registry.get("gone").subscribers, what="unsubscribed")
    assert len(monit.web.streams) == 0
