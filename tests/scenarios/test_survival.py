"""Streams that survive: replay, gaps, ends, slow readers, NATS outages, bad input."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import ensureDeferred

from publisher import Publisher
from streams import auth, job_message, open_stream, start_monit
from waiting import wait_for, within


def monit_with(nats_url: str, **settings):
    service = pytest_twisted.blockon(ensureDeferred(start_monit(nats_url, **settings)))
    return service


@pytest.fixture
def monit(nats_server):
    service = monit_with(nats_server.url, history=50, retention=30, max_payload=100_000)
    yield service
    pytest_twisted.blockon(service.stopService())


@pytest_twisted.ensureDeferred
async def test_reconnect_with_last_event_id_while_events_arrive(monit, publisher):
    """No gap and no duplicate across a reconnect, even with events published meanwhile."""
    first = await open_stream(monit, "r1")
    for n in range(10):
        publisher.publish("monitor.user", job_message("r1", f"m{n}"))
    await wait_for(lambda: len(first.events) == 10)
    first.close()
    await wait_for(lambda: not monit.registry.get("r1").subscribers)
    for n in range(10, 15):
        publisher.publish("monitor.user", job_message("r1", f"m{n}"))
    headers = {**auth(), "Last-Event-ID": first.events[-1].id}
    second = await open_stream(monit, "r1", headers)
    for n in range(15, 20):
        publisher.publish("monitor.user", job_message("r1", f"m{n}"))
    await wait_for(lambda: len(second.events) == 10, what="the missed and the new events")
    seen = [event["body"] for event in first.data() + second.data()]
    assert seen == [f"m{n}" for n in range(20)]
    assert [int(event.id) - monit.registry.id_base for event in second.events] == list(range(11, 21))


@pytest_twisted.ensureDeferred
async def test_last_event_id_as_a_query_parameter(monit, publisher):
    for n in range(3):
        publisher.publish("monitor.user", job_message("q1", f"m{n}"))
    await wait_for(lambda: "q1" in monit.registry and monit.registry.get("q1").last_id == monit.registry.id_base + 3)
    reader = await open_stream(monit, "q1", query=f"&lastEventId={monit.registry.id_base + 2}")
    await wait_for(lambda: reader.events)
    assert [event.id for event in reader.events] == [str(monit.registry.id_base + 3)]


@pytest_twisted.ensureDeferred
async def test_a_reader_behind_the_history_gets_a_gap_frame(monit, publisher):
    for n in range(60):
        publisher.publish("monitor.user", job_message("g1", f"m{n}"))
    await wait_for(lambda: "g1" in monit.registry and monit.registry.get("g1").last_id == monit.registry.id_base + 60)
    base = monit.registry.id_base
    reader = await open_stream(monit, "g1", {**auth(), "Last-Event-ID": str(base + 3)})
    await wait_for(lambda: len(reader.events) == 51)
    gap = reader.events[0]
    assert gap.event == "gap" and json.loads(gap.data) == {"from": base + 4, "to": base + 10}
    assert reader.events[1].id == str(base + 11) and reader.events[-1].id == str(base + 60)


@pytest_twisted.ensureDeferred
async def test_after_a_closed_inbox_ends_a_reconnect_gets_204(monit, publisher):
    reader = await open_stream(monit, "c1")
    publisher.publish("service.create", {"id": "c1"})
    publisher.publish("service.create.done", {"id": "c1"})
    await within(reader.done)
    last = reader.events[-1].id
    response = await within(treq.get(f"{monit.base_url}/events?stream=c1", headers={**auth(), "Last-Event-ID": last}))
    assert response.code == 204
    late = await open_stream(monit, "c1", {**auth(), "Last-Event-ID": str(monit.registry.id_base + 1)})
    await within(late.done)
    assert [event.event for event in late.events] == ["service.create.done"]


@pytest_twisted.ensureDeferred
async def test_a_job_that_runs_again_keeps_its_previous_run_for_readers_that_were_away(monit, publisher):
    """A reader of run 1 gets its end; new readers see run 2; a reader in run 1 gets the rest of it, then run 2."""
    old = await open_stream(monit, "again")
    publisher.publish("service.create", {"id": "again"})
    publisher.publish("monitor.user", job_message("again", "run 1"))
    await wait_for(lambda: len(old.events) == 2)
    old.close()  # away while run 1 ends and run 2 starts
    publisher.publish("service.create.done", {"id": "again", "run": 1})
    publisher.publish("service.create", {"id": "again", "run": 2})
    publisher.publish("monitor.user", job_message("again", "run 2"))
    await wait_for(lambda: monit.registry.get("again").last_id == monit.registry.id_base + 5)
    new = await open_stream(monit, "again")
    await wait_for(lambda: len(new.events) == 2)
    assert [event.event for event in new.events] == ["service.create", "message"]
    assert json.loads(new.events[0].data)["run"] == 2
    back = await open_stream(monit, "again", {**auth(), "Last-Event-ID": old.events[-1].id})
    await within(back.done)  # run 1's rest and its end, then the response ends, as the run did
    assert [event.event for event in back.events] == ["service.create.done"]
    onward = await open_stream(monit, "again", {**auth(), "Last-Event-ID": back.events[-1].id})
    await wait_for(lambda: len(onward.events) == 2, what="run 2, from its start")
    assert [event.id for event in onward.events] == [event.id for event in new.events]
    assert all(event.event != "gap" for event in back.events + onward.events)
    publisher.publish("service.create.done", {"id": "again", "run": 2})
    await within(onward.done)
    response = await within(
        treq.get(f"{monit.base_url}/events?stream=again", headers={**auth(), "Last-Event-ID": onward.events[-1].id})
    )
    assert response.code == 204
    new.close()


@pytest_twisted.ensureDeferred
async def test_streams_survive_a_nats_restart(private_nats_server):
    monit = await start_monit(private_nats_server.url)
    publisher = None
    try:
        reader = await open_stream(monit, "n1")
        private_nats_server.stop()
        await wait_for(lambda: not monit.nats.connected, what="NATS loss noticed")
        ready = await within(treq.get(f"{monit.base_url}/readyz"))
        assert ready.code == 503
        assert (await within(ready.json()))["nats"] is False
        keepalives = len(reader.parser.comments)
        await wait_for(lambda: len(reader.parser.comments) > keepalives, what="keep-alives go on")
        private_nats_server.start()
        await wait_for(lambda: monit.nats.connected, timeout=20, what="reconnected")
        publisher = Publisher(private_nats_server.url)
        publisher.publish("monitor.user", job_message("n1", "after the restart"))
        await wait_for(lambda: reader.events, what="an event published after the restart")
        assert reader.data() == [{"body": "after the restart", "level": "INFO"}]
        assert not reader.ended
        assert (await within(treq.get(f"{monit.base_url}/readyz"))).code == 200
    finally:
        if publisher is not None:
            publisher.close()
        await monit.stopService()


BAD_INPUT = [
    ("monitor.user", b"\xc3\x28 not utf-8"),
    ("monitor.user", b"{not json"),
    ("monitor.user", b"[1, 2, 3]"),
    ("monitor.user", b"null"),
    ("monitor.user", json.dumps({"id": "b1", "messages": "text"}).encode()),
    ("monitor.user", json.dumps({"id": "b1", "messages": [1, "two", None]}).encode()),
    ("monitor.user", json.dumps({"id": ["b1"], "messages": []}).encode()),
    ("monitor.user", json.dumps({"id": 1.5, "messages": []}).encode()),
    ("monitor.user", json.dumps({"service": {"x": 1}, "messages": []}).encode()),
    ("monitor.user", json.dumps({"id": "b1", "messages": [{"body": "x" * 500_000}]}).encode()),
    ("monitor.user", b"[" * 50_000 + b"]" * 50_000),
    ("service.create", json.dumps({"id": "b 1"}).encode()),
    ("service.create", b""),
    ("monitor.user.odd", b"{}"),
    ("monitor..user", b"{}"),
]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("subject, payload", BAD_INPUT)
async def test_bad_input_then_a_good_message_that_arrives(monit, publisher, subject, payload):
    reader = await open_stream(monit, "b1")
    skipped = monit.router.malformed
    publisher.publish(subject, payload)
    publisher.publish("monitor.user", job_message("b1", "good"))
    await wait_for(lambda: reader.data(), what="the good message")
    assert reader.data() == [{"body": "good", "level": "INFO"}]
    if subject in monit.router.subjects:
        assert monit.router.malformed > skipped, "logged, counted and skipped"
    assert monit.running
