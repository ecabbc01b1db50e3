"""Many jobs on one response (``?stream=a&stream=b``): a real nats-server, nats-py, real HTTP readers."""

from __future__ import annotations

import json
import random

import pytest
import pytest_twisted
import treq
from twisted.internet import threads
from twisted.internet.defer import ensureDeferred

from monit.token import mint

from streams import SECRET, Reader, auth, job_message, open_stream, start_monit
from waiting import wait_for, within


@pytest.fixture
def monit(nats_server):
    service = pytest_twisted.blockon(
        ensureDeferred(
            start_monit(nats_server.url, history=1000, retention=30, max_jobs_per_stream=5, max_inboxes_per_user=8)
        )
    )
    yield service
    pytest_twisted.blockon(service.stopService())


def jobs_query(*jobs: str) -> str:
    return "".join(f"&stream={job}" for job in jobs)


def tagged(reader) -> list[tuple[str, str, object]]:
    """(job, event name, payload) of every frame, as a page would read them."""
    frames = []
    for event in reader.events:
        document = json.loads(event.data)
        frames.append((document["stream"], event.event, document["data"]))
    return frames


def ids(reader) -> list[int]:
    return [int(event.id) for event in reader.events if event.id]


@pytest_twisted.ensureDeferred
async def test_every_frame_names_its_job_and_ids_increase_across_jobs(monit, publisher):
    reader = await open_stream(monit, "a1", query=jobs_query("b1"))
    publisher.publish("service.create", {"id": "a1"})
    publisher.publish("service.create", {"id": "b1"})
    for n in range(20):  # interleaved, so that one read from NATS holds both jobs' events
        publisher.publish("monitor.user", job_message("a1", f"a{n}"))
        publisher.publish("monitor.user", job_message("b1", f"b{n}"))
    await wait_for(lambda: len(reader.events) == 42, what="both jobs' events")
    frames = tagged(reader)
    assert frames[0] == ("a1", "service.create", {"id": "a1"})
    assert [body["body"] for job, name, body in frames if job == "a1" and name == "message"] == [
        f"a{n}" for n in range(20)
    ]
    assert [body["body"] for job, name, body in frames if job == "b1" and name == "message"] == [
        f"b{n}" for n in range(20)
    ]
    assert ids(reader) == sorted(ids(reader)) and len(set(ids(reader))) == 42
    assert reader.raw.startswith(b"retry: 3000\n\n")


@pytest_twisted.ensureDeferred
async def test_one_last_event_id_resumes_every_job(monit, publisher):
    first = await open_stream(monit, "r1", query=jobs_query("r2", "r3"))
    for n in range(5):
        publisher.publish("monitor.user", job_message("r1", f"one{n}"))
        publisher.publish("monitor.user", job_message("r2", f"two{n}"))
    await wait_for(lambda: len(first.events) == 10)
    first.close()
    await wait_for(lambda: not monit.registry.get("r1").subscribers and not monit.registry.get("r2").subscribers)
    for n in range(5, 8):
        publisher.publish("monitor.user", job_message("r2", f"two{n}"))
        publisher.publish("monitor.user", job_message("r3", f"three{n}"))
    await wait_for(lambda: "r3" in monit.registry and monit.registry.get("r3").last_id == monit.registry.last_id)
    second = await open_stream(
        monit, "r1", {**auth(), "Last-Event-ID": first.events[-1].id}, query=jobs_query("r2", "r3")
    )
    publisher.publish("monitor.user", job_message("r1", "one-later"))
    await wait_for(lambda: len(second.events) == 7, what="the missed events of r2 and r3, and r1's new one")
    seen = [(job, body["body"]) for job, _, body in tagged(first) + tagged(second)]
    assert sorted(seen) == sorted(
        [("r1", f"one{n}") for n in range(5)]
        + [("r1", "one-later")]
        + [("r2", f"two{n}") for n in range(8)]
        + [("r3", f"three{n}") for n in range(5, 8)]
    )
    assert ids(first) + ids(second) == sorted(set(ids(first) + ids(second)))


@pytest_twisted.ensureDeferred
async def test_the_response_ends_when_the_last_job_ends_and_a_reconnect_gets_204(monit, publisher):
    reader = await open_stream(monit, "e1", query=jobs_query("e2"))
    publisher.publish("service.create", {"id": "e1"})
    publisher.publish("service.create", {"id": "e2"})
    publisher.publish("service.create.done", {"id": "e1"})
    await wait_for(lambda: monit.registry.get("e1").closed, what="e1's grace period over")
    publisher.publish("monitor.user", job_message("e2", "still here"))
    await wait_for(lambda: len(reader.events) == 4, what="e2 goes on after e1 ended")
    assert not reader.ended
    publisher.publish("service.create.done", {"id": "e2"})
    await within(reader.done)
    assert [(job, name) for job, name, _ in tagged(reader)] == [
        ("e1", "service.create"),
        ("e2", "service.create"),
        ("e1", "service.create.done"),
        ("e2", "message"),
        ("e2", "service.create.done"),
    ]
    again = await within(
        treq.get(
            f"{monit.base_url}/events?stream=e1&stream=e2", headers={**auth(), "Last-Event-ID": reader.events[-1].id}
        )
    )
    assert again.code == 204


@pytest_twisted.ensureDeferred
async def test_a_job_that_has_ended_gives_the_rest_and_the_others_go_on(monit, publisher):
    publisher.publish("service.create", {"id": "f1"})
    publisher.publish("service.create.done", {"id": "f1"})
    await wait_for(lambda: "f1" in monit.registry and monit.registry.get("f1").closed)
    reader = await open_stream(monit, "f1", query=jobs_query("f2"))
    await wait_for(lambda: len(reader.events) == 2, what="f1's whole run")
    publisher.publish("monitor.user", job_message("f2", "live"))
    await wait_for(lambda: len(reader.events) == 3)
    assert [job for job, _, _ in tagged(reader)] == ["f1", "f1", "f2"] and not reader.ended


@pytest_twisted.ensureDeferred
async def test_a_history_larger_than_max_pending_arrives_whole_and_in_order(nats_server, publisher):
    monit = await start_monit(nats_server.url, history=2000, max_pending=32 * 1024)
    try:
        body = "x" * 400
        for n in range(0, 1000, 50):
            publisher.publish("monitor.user", job_message("h1", *(f"{m}{body}" for m in range(n, n + 50))))
            publisher.publish("monitor.user", job_message("h2", *(f"{m}{body}" for m in range(n, n + 50))))
        await wait_for(lambda: monit.registry.events == 2000, what="2,000 events held")
        reader = await open_stream(monit, "h1", query=jobs_query("h2"))
        await wait_for(lambda: len(reader.events) == 2000, timeout=20, what="both histories")
        assert ids(reader) == sorted(set(ids(reader)))
        for job in ("h1", "h2"):
            numbers = [int(body["body"][:-400]) for of, _, body in tagged(reader) if of == job]
            assert numbers == list(range(1000))
    finally:
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_refusal_for_one_job_refuses_the_request_naming_it(monit):
    token = mint(SECRET, "heidi", 3600, streams=["a1", "b1"])
    response = await within(
        treq.get(f"{monit.base_url}/events?stream=a1&stream=b1&stream=c1", headers={"X-Auth-Token": token})
    )
    assert response.code == 403
    assert json.loads(await response.content()) == {"error": "not allowed to watch stream 'c1'"}
    assert "c1" not in monit.registry and "a1" not in monit.registry


@pytest_twisted.ensureDeferred
async def test_more_jobs_than_max_jobs_per_stream_is_a_400(monit):
    response = await within(
        treq.get(f"{monit.base_url}/events?{jobs_query(*(f'j{n}' for n in range(6)))[1:]}", headers=auth())
    )
    assert response.code == 400
    assert json.loads(await response.content()) == {"error": "at most 5 'stream' parameters in one request"}


@pytest_twisted.ensureDeferred
async def test_jobs_count_against_what_one_user_may_make(monit):
    """--max-inboxes-per-user 8: a second request for five new jobs is refused whole."""
    first = await open_stream(monit, "u1", query=jobs_query("u2", "u3", "u4", "u5"))
    response = await within(
        treq.get(f"{monit.base_url}/events?{jobs_query('u6', 'u7', 'u8', 'u9', 'u10')[1:]}", headers=auth())
    )
    assert response.code == 503
    assert json.loads(await response.content()) == {"error": "too many inboxes that no job opened for this user"}
    assert not any(f"u{n}" in monit.registry for n in range(6, 11))
    first.close()


@pytest_twisted.ensureDeferred
async def test_a_repeated_job_is_one_job_with_the_single_job_format(monit, publisher):
    reader = await open_stream(monit, "s1", query=jobs_query("s1"))
    publisher.publish("monitor.user", job_message("s1", "plain"))
    await wait_for(lambda: reader.events)
    assert reader.data() == [{"body": "plain", "level": "INFO"}]


def run_plan(rng: random.Random, jobs: list[str]) -> list[tuple[str, dict]]:
    """Each job runs two or three times (open, messages, done or error), the jobs' messages interleaved."""
    queues = []
    for job in jobs:
        messages: list[tuple[str, dict]] = []
        for run in range(rng.randint(2, 3)):
            messages.append(("service.create", {"id": job, "run": run}))
            messages.extend(("monitor.user", job_message(job, f"{job} r{run} m{n}")) for n in range(rng.randint(5, 40)))
            messages.append((rng.choice(["service.create.done", "service.create.error"]), {"id": job, "run": run}))
        queues.append(messages)
    plan = []
    while any(queues):
        plan.append(rng.choice([queue for queue in queues if queue]).pop(0))
    return plan


def expected_frames(plan: list[tuple[str, dict]]) -> dict[str, list[tuple[str, object]]]:
    """Per job, (event name, payload) of every frame a reader must get, in order."""
    frames: dict[str, list[tuple[str, object]]] = {}
    for subject, payload in plan:
        if subject == "monitor.user":
            job = payload["service"].split("-")[-1]
            frames.setdefault(job, []).extend(("message", message) for message in payload["messages"])
        else:
            frames.setdefault(payload["id"], []).append((subject, payload))
    return frames


async def read_coming_and_going(monit, jobs: list[str], rng: random.Random) -> list:
    """A many-job reader that hangs up at random and resumes with its last id, until it gets 204."""
    received: list = []
    last = None
    while True:
        headers = auth() if last is None else {**auth(), "Last-Event-ID": last}
        response = await within(
            treq.get(f"{monit.base_url}/events?{jobs_query(*jobs)[1:]}", headers=headers, unbuffered=True)
        )
        if response.code == 204:
            return received
        assert response.code == 200
        reader = Reader(response)
        leave_after = rng.randint(1, 150)
        await wait_for(lambda: len(reader.events) >= leave_after or reader.ended, timeout=30, what="events or the end")
        if not reader.ended:
            reader.close()
            await within(reader.done.addErrback(lambda _: None))
        received.extend(reader.events)
        ids_now = [event.id for event in received if event.id]
        last = ids_now[-1] if ids_now else last


@pytest.mark.parametrize("seed", [1, 2])
@pytest_twisted.ensureDeferred
async def test_jobs_that_run_again_reach_readers_that_come_and_go_whole(nats_server, publisher, seed):
    """14 jobs, each run two or three times (a run often opening in its predecessor's grace period),
    read by three many-job readers that hang up at random and resume with Last-Event-ID."""
    rng = random.Random(seed)
    monit = await start_monit(nats_server.url, history=1000, grace=0.2)
    try:
        jobs = [f"rr{seed}x{n}" for n in range(14)]
        plan = run_plan(rng, jobs)
        readers = [ensureDeferred(read_coming_and_going(monit, jobs, random.Random(seed * 10 + n))) for n in range(3)]
        published = threads.deferToThread(lambda: [publisher.publish(subject, payload) for subject, payload in plan])
        await within(published, timeout=30)
        expected = expected_frames(plan)
        for received in [await within(reader, timeout=60) for reader in readers]:
            assert not [event for event in received if event.event == "gap"]
            event_ids = [int(event.id) for event in received]
            assert event_ids == sorted(set(event_ids)), "each event once, in id order"
            got: dict[str, list[tuple[str, object]]] = {}
            for event in received:
                document = json.loads(event.data)
                got.setdefault(document["stream"], []).append((event.event, document["data"]))
            assert got == expected
    finally:
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_many_job_reader_from_before_a_restart_is_told_of_the_gap(nats_server, publisher):
    """Core mode: the ids of a process that has gone place the reader nowhere in the new one's history."""
    first = await start_monit(nats_server.url)
    try:
        reader = await open_stream(first, "rs1", query=jobs_query("rs2"))
        publisher.publish("monitor.user", job_message("rs1", "before"))
        await wait_for(lambda: len(reader.events) == 1)
        reader.close()
    finally:
        await first.stopService()
    second = await start_monit(nats_server.url)
    try:
        publisher.publish("monitor.user", job_message("rs1", "lost"))  # nobody hears this one
        await wait_for(lambda: "rs1" in second.registry)
        back = await open_stream(
            second, "rs1", {**auth(), "Last-Event-ID": reader.events[-1].id}, query=jobs_query("rs2")
        )
        publisher.publish("monitor.user", job_message("rs2", "after"))
        await wait_for(lambda: len(back.events) == 4, what="a notice for each job and both events")
        assert [(event.event, json.loads(event.data)["stream"]) for event in back.events] == [
            ("gap", "rs1"),
            ("message", "rs1"),
            ("gap", "rs2"),
            ("message", "rs2"),
        ]
        back.close()
    finally:
        await second.stopService()
