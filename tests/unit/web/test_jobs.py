"""A many-job response, deterministically: id order across jobs, pacing, the end, the keep-alive."""

import json
import random

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from monit.registry import InboxRegistry
from monit.service import registry_options
from monit.settings import Settings
from monit.web.jobs import ManyJobs
from monit.web.stream import EventStream, StreamSet

from inboxreader import InboxReader
from streamingrequest import StreamingRequest, event


@pytest.fixture
def registry(clock):
    return InboxRegistry(clock, **registry_options(Settings(grace=1)))


def follow(registry, clock, jobs, capacity=4096, after=0, max_pending=100_000):
    streams = StreamSet(clock, 15, 3000)
    request = StreamingRequest(capacity=capacity)
    stream = EventStream(request, ManyJobs(registry, jobs), streams, "alice", clock, max_pending)
    stream.run(after)
    return request, stream, streams


def test_a_frame_waits_for_a_lower_id_that_is_not_handed_out_yet(registry, clock):
    request, stream, _ = follow(registry, clock, ["a", "b"])
    registry.publish("a", event(1))  # id 1, pending
    registry.publish("b", event(2))  # id 2, pending
    registry.subscribe("b", InboxReader())  # a new reader of b: b's pending is handed out first, a's is not
    stream.resumeProducing()  # the socket asks for more before the flush: b's id 2 must wait for a's id 1
    assert request.ids() == []
    clock.advance(0)
    assert request.ids() == [1, 2]


def test_jobs_interleaved_in_one_turn_go_out_in_id_order(registry, clock):
    request, _, _ = follow(registry, clock, ["a", "b", "c"])
    for n in range(30):
        registry.publish("abc"[n % 3], event(n))
    clock.advance(0)
    assert request.ids() == list(range(1, 31))
    text = b"".join(request.written)
    assert text.count(b'"stream":"a"') == text.count(b'"stream":"c"') == 10


def test_a_long_history_of_several_jobs_comes_at_the_pace_of_the_socket(registry, clock):
    for n in range(1500):  # about 200 KB over three jobs
        registry.publish("abc"[n % 7 % 3], event(n))
    clock.advance(0)
    request, _, streams = follow(registry, clock, ["a", "b", "c"])
    assert len(request.transport.value()) < 4096 + 70_000, "one batch at a time"
    while request.paused:
        request.drain()
    assert request.ids() == list(range(1, 1501)) and streams.dropped == 0


def test_a_reader_resuming_from_one_id_gets_only_what_it_has_not_seen_of_each_job(registry, clock):
    for n in range(10):
        registry.publish("ab"[n % 2], event(n))
    registry.publish("c", event(10))
    clock.advance(0)
    request, _, _ = follow(registry, clock, ["a", "b", "c"], after=6)
    assert request.ids() == [7, 8, 9, 10, 11]


def test_a_job_that_had_no_events_when_the_reader_left_is_given_from_its_start(registry, clock):
    registry.publish("a", event(0))
    clock.advance(0)
    request, _, _ = follow(registry, clock, ["a", "b"], after=1)  # b is new: made by the reader
    registry.publish("b", event(1))
    registry.publish("b", event(2))
    clock.advance(0)
    assert request.ids() == [2, 3] and b"gap" not in b"".join(request.written)


def test_an_id_from_no_history_of_ours_gets_a_notice_per_job_then_everything(registry, clock):
    registry.publish("a", event(0))
    registry.publish("b", event(1))
    clock.advance(0)
    request, _, _ = follow(registry, clock, ["a", "b"], after=99)
    text = b"".join(request.written)
    assert text.count(b'event: gap\ndata: {"stream":') == 2 and b'"data":{"from":null,"to":null}' in text
    assert request.ids() == [1, 2]


def test_the_response_ends_when_every_job_has_ended(registry, clock):
    request, stream, streams = follow(registry, clock, ["a", "b"])
    registry.close("a", "{}", "service.create.done")
    clock.advance(2)  # a's grace is over: its inbox ends, the response does not
    assert len(streams) == 1 and not request.finished
    registry.close("b", "{}", "service.create.done")
    clock.advance(2)
    assert len(streams) == 0 and request.finished
    assert not registry.get("a").subscribers and not registry.get("b").subscribers


def test_a_reader_that_goes_away_leaves_every_inbox(registry, clock):
    request, stream, streams = follow(registry, clock, ["a", "b"])
    stream.shutdown()
    assert len(streams) == 0 and request.finished
    assert not registry.get("a").subscribers and not registry.get("b").subscribers


def frames(request) -> list[tuple[str, str, object]]:
    """(event name, job, payload) of every frame written, keep-alives and retry lines left out."""
    out = []
    for block in b"".join(request.written).decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith((":", "retry:"))]
        if not lines:
            continue
        name = next((line[7:] for line in lines if line.startswith("event: ")), "message")
        document = json.loads("".join(line[6:] for line in lines if line.startswith("data: ")))
        out.append((name, document["stream"], document["data"]))
    return out


def test_a_reader_that_takes_nothing_for_a_heartbeat_is_dropped_from_every_job(registry, clock):
    """The same judge of slow readers as a one-job stream's: the stream is one class."""
    request, _, streams = follow(registry, clock, ["a", "b"], capacity=200, max_pending=1000)
    streams.start()
    for n in range(30):
        registry.publish("ab"[n % 2], event(n))
        clock.advance(0)
    clock.advance(15)  # the first heartbeat notes what is unsent
    assert not request.transport.disconnecting
    clock.advance(15)  # nothing taken since: dropped
    assert request.transport.disconnecting and streams.dropped == 1
    assert not registry.get("a").subscribers and not registry.get("b").subscribers
    streams.shutdown()


class Recheck:
    """Asks about the token on every heartbeat, and keeps what it was asked about."""

    due = 0.0

    def __init__(self) -> None:
        self.asked: list[tuple[str, ...]] = []

    def run(self, now, jobs):
        self.asked.append(jobs)
        return succeed(None)


def test_a_recheck_asks_access_to_every_job_of_the_response(registry, clock):
    streams = StreamSet(clock, 15, 3000)
    streams.start()
    recheck = Recheck()
    EventStream(StreamingRequest(), ManyJobs(registry, ["a", "b"]), streams, "alice", clock, 1000, None, recheck).run()
    clock.advance(15)
    assert recheck.asked == [("a", "b")]
    streams.shutdown()


def test_a_job_that_opens_again_is_followed_into_its_new_run(registry, clock):
    request, stream, streams = follow(registry, clock, ["a", "b"])
    registry.open("a", '{"run":1}', "service.create")
    registry.close("a", '{"run":1}', "service.create.done")
    registry.publish("b", event(0))
    clock.advance(0.5)  # in a's grace period
    registry.open("a", '{"run":2}', "service.create")
    registry.publish("a", event(1))
    registry.publish("b", event(2))
    clock.advance(0)
    assert request.ids() == list(range(1, 7))
    clock.advance(2)  # run 1's grace is over: the response follows run 2
    assert len(streams) == 1 and not request.finished
    registry.close("a", '{"run":2}', "service.create.done")
    registry.close("b", "{}", "service.create.done")
    clock.advance(0)
    assert request.ids() == list(range(1, 9))
    clock.advance(2)
    assert request.finished
    assert [(name, job) for name, job, _ in frames(request)][:4] == [
        ("service.create", "a"),
        ("service.create.done", "a"),
        ("message", "b"),
        ("service.create", "a"),
    ]


def test_a_job_that_opens_again_after_its_record_was_kept_for_the_follower(registry, clock):
    """Run 1 ends while another job goes on; the job runs again long after: the response still follows it."""
    request, _, _ = follow(registry, clock, ["a", "b"])
    registry.open("a", "{}", "service.create")
    registry.close("a", "{}", "service.create.done")
    clock.advance(2 + 3600)  # past a's grace and retention (b keeps the response open)
    registry.open("a", '{"run":2}', "service.create")
    clock.advance(0)
    assert request.ids() == [1, 2, 3] and not request.finished


def test_a_reader_resuming_in_a_run_before_the_latest_gets_its_rest_then_the_new_run(registry, clock):
    registry.open("a", "{}", "service.create")
    registry.publish("a", event(0))
    registry.publish("b", event(1))
    registry.close("a", "{}", "service.create.done")
    clock.advance(0.5)
    registry.open("a", "{}", "service.create")
    registry.publish("a", event(2))
    registry.publish("b", event(3))
    clock.advance(0)
    request, _, _ = follow(registry, clock, ["a", "b"], after=2)
    assert request.ids() == [3, 4, 5, 6, 7]
    assert b"gap" not in b"".join(request.written)


def test_a_reader_from_before_a_core_mode_restart_is_told_of_the_gap_in_each_job():
    clock = Clock()
    clock.advance(2_000_000)
    registry = InboxRegistry(clock, **registry_options(Settings(grace=1)))
    before = registry.id_base - 500  # an id the previous process gave
    registry.publish("a", event(0))
    clock.advance(0)
    request, _, _ = follow(registry, clock, ["a", "b"], after=before)
    registry.publish("b", event(1))
    clock.advance(0)
    gaps = [(job, data) for name, job, data in frames(request) if name == "gap"]
    assert gaps == [
        ("a", {"from": before + 1, "to": registry.id_base}),
        ("b", {"from": before + 1, "to": registry.id_base + 1}),
    ]
    assert request.ids() == [registry.id_base + 1, registry.id_base + 2]


@pytest.mark.parametrize("seed", range(20))
def test_jobs_that_run_again_and_again_reach_a_reader_that_comes_and_goes_exactly_once(seed):
    """Random runs of several jobs, and a reader that leaves for a while and resumes with its last id."""
    rng = random.Random(seed)
    clock = Clock()
    registry = InboxRegistry(clock, **registry_options(Settings(grace=1, retention=30, history=10_000)))
    jobs = [f"j{n}" for n in range(5)]
    published: dict[str, list[int]] = {job: [] for job in jobs}
    state = dict.fromkeys(jobs, "new")
    seen: list[tuple[str, int]] = []
    request, stream, _ = follow(registry, clock, jobs, capacity=10**9)
    away = 0  # steps until the reader comes back
    for step in range(400):
        job = rng.choice(jobs)
        if state[job] != "open" and rng.random() < 0.5:
            registry.open(job, "{}", "service.create")
            state[job] = "open"
        elif state[job] == "open" and job != "j0" and rng.random() < 0.1:  # j0 keeps the response open
            registry.close(job, "{}", "service.create.done")
            state[job] = "closed"
        else:
            registry.publish(job, event(step))
        published[job].append(registry.last_id)
        clock.advance(rng.choice([0, 0, 0, 0.4, 1.5]))
        if stream is not None and rng.random() < 0.05:
            seen.extend(received(request))
            stream.shutdown()
            stream, away = None, rng.randint(0, 10)
        elif stream is None and away <= 0:
            last = seen[-1][1] if seen else 0
            request, stream, _ = follow(registry, clock, jobs, capacity=10**9, after=last)
        away -= 1
    if stream is None:
        request, stream, _ = follow(registry, clock, jobs, capacity=10**9, after=seen[-1][1] if seen else 0)
    clock.advance(0)
    seen.extend(received(request))
    for job in jobs:
        assert [event_id for name, event_id in seen if name == job] == published[job], job
    assert [event_id for _, event_id in seen] == sorted(event_id for _, event_id in seen)


def received(request) -> list[tuple[str, int]]:
    """(job, id) of every event frame written; there must be no gap notice."""
    written = frames(request)
    assert all(name != "gap" for name, _, _ in written)
    return list(zip([job for _, job, _ in written], request.ids(), strict=True))
