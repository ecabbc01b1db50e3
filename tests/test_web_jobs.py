"""A many-job response, deterministically: id order across jobs, pacing, the end, the keep-alive."""
import pytest
from twisted.internet.task import Clock

from monit.registry import InboxRegistry
from monit.settings import Settings
from monit.web.jobs import JobsStream
from monit.web.stream import StreamSet

from test_web_stream import StreamingRequest, event


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def registry(clock):
    return InboxRegistry(clock, Settings(grace=1))


def follow(registry, clock, jobs, capacity=4096, after=0, max_pending=100_000):
    streams = StreamSet(clock, 15, 3000)
    request = StreamingRequest(capacity=capacity)
    stream = JobsStream(request, registry, streams, "alice", clock, max_pending)
    stream.run_jobs(jobs, after)
    return request, stream, streams


class Other:
    def deliver(self, batch) -> None:
        pass

    def end(self) -> None:
        pass


def test_a_frame_waits_for_a_lower_id_that_is_not_handed_out_yet(registry, clock):
    request, stream, _ = follow(registry, clock, ["a", "b"])
    registry.deliver("a", event(1))  # id 1, pending
    registry.deliver("b", event(2))  # id 2, pending
    registry.subscribe("b", Other())  # a new reader of b: b's pending is handed out first, a's is not
    stream.resumeProducing()  # the socket asks for more before the flush: b's id 2 must wait for a's id 1
    assert request.ids() == []
    clock.advance(0)
    assert request.ids() == [1, 2]


def test_jobs_interleaved_in_one_turn_go_out_in_id_order(registry, clock):
    request, _, _ = follow(registry, clock, ["a", "b", "c"])
    for n in range(30):
        registry.deliver("abc"[n % 3], event(n))
    clock.advance(0)
    assert request.ids() == list(range(1, 31))
    text = b"".join(request.written)
    assert text.count(b'"stream":"a"') == text.count(b'"stream":"c"') == 10


def test_a_long_history_of_several_jobs_comes_at_the_pace_of_the_socket(registry, clock):
    for n in range(1500):  # about 200 KB over three jobs
        registry.deliver("abc"[n % 7 % 3], event(n))
    clock.advance(0)
    request, _, streams = follow(registry, clock, ["a", "b", "c"])
    assert len(request.transport.value()) < 4096 + 70_000, "one batch at a time"
    while request.paused:
        request.drain()
    assert request.ids() == list(range(1, 1501)) and streams.dropped == 0


def test_a_reader_resuming_from_one_id_gets_only_what_it_has_not_seen_of_each_job(registry, clock):
    for n in range(10):
        registry.deliver("ab"[n % 2], event(n))
    registry.deliver("c", event(10))
    clock.advance(0)
    request, _, _ = follow(registry, clock, ["a", "b", "c"], after=6)
    assert request.ids() == [7, 8, 9, 10, 11]


def test_a_job_that_had_no_events_when_the_reader_left_is_given_from_its_start(registry, clock):
    registry.deliver("a", event(0))
    clock.advance(0)
    request, _, _ = follow(registry, clock, ["a", "b"], after=1)  # b is new: made by the reader
    registry.deliver("b", event(1))
    registry.deliver("b", event(2))
    clock.advance(0)
    assert request.ids() == [2, 3] and b"gap" not in b"".join(request.written)


def test_an_id_from_no_history_of_ours_gets_a_notice_per_job_then_everything(registry, clock):
    registry.deliver("a", event(0))
    registry.deliver("b", event(1))
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
