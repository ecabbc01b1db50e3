"""A many-job response's live queue: one write per flush, in id order, shared by readers of the same jobs.

A reader that is live gets each flush's batches of its jobs as one batch,
the same bytes for every reader of those jobs; one that is not (behind, a
job that ran again, events still pending) reads the histories, and is live
again once it has all.
"""

import json

import pytest

from monit.registry import InboxRegistry
from monit.service import registry_options
from monit.settings import Settings
from monit.sse import encode_event
from monit.web.jobs import ManyJobs
from monit.web.stream import EventStream, StreamSet

from inboxreader import InboxReader
from streamingrequest import StreamingRequest, event


@pytest.fixture
def registry(clock):
    return InboxRegistry(clock, **registry_options(Settings(grace=1, history=1000)))


def follow(registry, clock, jobs, capacity=10**9, max_pending=100_000, after=0):
    request = StreamingRequest(capacity=capacity)
    stream = EventStream(request, ManyJobs(registry, jobs), StreamSet(clock, 15, 3000), "alice", clock, max_pending)
    stream.run(after)
    return request, stream


def turn(request, registry, clock, jobs: str) -> list[bytes]:
    """An event for each of ``jobs`` in order, then the flush: what that wrote to ``request``, write by write."""
    before = len(request.written)
    for job in jobs:
        registry.publish(job, event(0))
    clock.advance(0)
    written: list[bytes] = request.written[before:]
    return written


def jobs_of(data: bytes) -> list[str]:
    return [json.loads(line[6:])["stream"] for line in data.decode().split("\n") if line.startswith("data: ")]


def test_a_flush_of_several_jobs_is_one_write_in_id_order_shared_by_readers_of_the_same_jobs(registry, clock):
    first, _ = follow(registry, clock, ["a", "b", "c"])
    second, _ = follow(registry, clock, ["c", "a", "b"])
    [one] = turn(first, registry, clock, "abcacb")  # a's and b's frames interleave: their batches' ids overlap
    [other] = second.written[-1:]
    assert first.ids() == second.ids() == [1, 2, 3, 4, 5, 6]
    assert jobs_of(one) == ["a", "b", "c", "a", "c", "b"]
    assert one is other, "made once, for every reader of these jobs"


def test_readers_of_other_jobs_get_only_theirs(registry, clock):
    both, _ = follow(registry, clock, ["a", "b"])
    one, _ = follow(registry, clock, ["a"])
    turn(both, registry, clock, "abab")
    assert both.ids() == [1, 2, 3, 4] and one.ids() == [1, 3]


def test_a_frame_handed_out_early_waits_for_a_lower_id_still_pending(registry, clock):
    request, stream = follow(registry, clock, ["a", "b"])
    registry.publish("a", event(1))  # id 1, pending
    registry.publish("b", event(2))  # id 2, pending
    registry.subscribe("b", InboxReader())  # b's pending is handed out now, into the queue; a's is not
    stream.catch_up()  # the stream reads before the flush: id 2 must wait for id 1
    assert request.ids() == []
    clock.advance(0)
    assert request.ids() == [1, 2]
    assert len(turn(request, registry, clock, "ba")) == 1 and request.ids() == [1, 2, 3, 4]


def test_a_job_that_runs_again_is_followed_into_its_new_run_and_the_queue_goes_on(registry, clock):
    first, _ = follow(registry, clock, ["a", "b"])
    second, _ = follow(registry, clock, ["a", "b"])
    registry.open("a", "{}", "service.create")
    registry.publish("b", event(0))
    registry.close("a", "{}", "service.create.done")
    clock.advance(0.5)  # a's grace period: its next open is a new run
    registry.open("a", '{"run":2}', "service.create")
    registry.publish("a", event(1))
    registry.publish("b", event(2))
    clock.advance(0)
    assert first.ids() == second.ids() == [1, 2, 3, 4, 5, 6]
    [one] = turn(first, registry, clock, "ab")
    assert one is second.written[-1] and first.ids() == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_reader_that_falls_behind_reads_the_histories_then_is_live_again(registry, clock):
    slow, stream = follow(registry, clock, ["a", "b"], capacity=2000, max_pending=1000)
    fast, _ = follow(registry, clock, ["a", "b"])
    for step in range(20):  # more each turn than the slow socket holds: it falls behind
        for n in range(4):
            registry.publish("ab"[n % 2], event(step))
        clock.advance(0)
    assert slow.paused and len(slow.ids()) < 80
    while slow.paused:
        slow.drain()
    assert slow.ids() == fast.ids() == list(range(1, 81))
    slow.drain()
    [one] = turn(slow, registry, clock, "ba")
    assert one is fast.written[-1], "live again: the queue's batch, shared"
    assert slow.ids() == list(range(1, 83))


def test_a_notice_comes_after_the_frames_handed_out_before_it(registry, clock):
    request, _ = follow(registry, clock, ["a", "b"])
    registry.publish("a", event(1))
    registry.subscribe("a", InboxReader())  # a's event is handed out now: it waits in the queue for the flush
    registry.get("a").notify(encode_event(None, '{"silent_for":1}', "monit.stalled"))
    registry.publish("b", event(2))
    clock.advance(0)
    text = b"".join(request.written)
    assert text.index(b"id: 1\n") < text.index(b"event: monit.stalled") < text.index(b"id: 2\n")
    assert request.ids() == [1, 2]


def test_a_batch_of_events_the_reader_has_had_is_not_written_again(registry, clock):
    """A restarted instance may replay a job's older events after a reader came back with a later id."""
    registry.publish("c", event(0), event_id=100)
    clock.advance(0)
    request, _ = follow(registry, clock, ["a", "b"], after=100)
    before = len(request.written)
    registry.publish("a", event(1), event_id=60)  # the reader had it before it came back
    clock.advance(0)
    assert b"id: 60\n" not in b"".join(request.written[before:])
    registry.publish("b", event(2), event_id=101)
    clock.advance(0)
    assert b"id: 101\n" in b"".join(request.written[before:]), "the stream goes on"
