"""``GET /jobs/events`` (monit.web.job_feed) through StubTreq with a fake clock: the order and content
of its frames, stalls, who may read it, and resuming with ``Last-Event-ID``."""

from __future__ import annotations

import json

import jwt
import pytest
import treq
from treq.testing import StubTreq

from monit.auth.jwt_verifier import JWTVerifier
from monit.registry import InboxRegistry
from monit.service import registry_options, web_options
from monit.settings import Settings
from monit.sse import KEEPALIVE, decode_frames, encode_error
from monit.web.app import MonitWeb
from monit.web.job_feed import FeedReader
from monit.web.stream import EventStream, StreamSet

from deferreds import result_of
from streamingrequest import StreamingRequest

SECRET = "jobs-feed-secret-of-a-good-length-0123456789"
NOW = 1_700_000_000.0
URL = "http://monit.example/jobs/events"
pytestmark = pytest.mark.clock_starts_at(NOW)


def token(**claims) -> str:
    body = {"sub": "alice", "username": "alice", "exp": int(NOW) + 3600, **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


LISTER = token(scope="openid monit:jobs")


@pytest.fixture
def registry(clock):
    return InboxRegistry(clock, **registry_options(Settings(grace=10, retention=60, stall_after=300)))


@pytest.fixture
def web(clock, registry):
    return MonitWeb(registry, JWTVerifier.with_secret(SECRET, clock), clock, **web_options(Settings(heartbeat=15)))


@pytest.fixture
def stub(web):
    return StubTreq(web.resource())


class Feed:
    """One reader of the feed: what it has been sent so far."""

    def __init__(self, stub, bearer: str = LISTER, last_id: int | None = None) -> None:
        headers = {"Authorization": f"Bearer {bearer}"}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        self.stub = stub
        self.response = result_of(stub.get(URL, headers=headers))
        self.chunks: list[bytes] = []
        treq.collect(self.response, self.chunks.append)
        stub.flush()

    def frames(self) -> list[tuple[int | None, str | None, dict]]:
        """(id, event name, data) of every frame sent, keep-alives and the retry line left out."""
        self.stub.flush()
        return [
            (frame_id, name, json.loads(data))
            for frame_id, name, data, _ in decode_frames(b"".join(self.chunks))
            if data
        ]

    def seen(self) -> list[tuple[str | None, str]]:
        """(event name, job) of every frame sent."""
        return [(name, data["id"]) for _, name, data in self.frames()]


def test_a_reader_gets_each_change_live_in_order_with_the_jobs_summary(stub, registry, clock):
    feed = Feed(stub)
    assert feed.response.code == 200 and feed.frames() == []
    registry.open("a", '{"id":"a"}', "service.create")
    opened_a = registry.last_id
    clock.advance(1)
    registry.open("b", '{"id":"b"}', "build.create")
    registry.publish("a", '{"body":"working"}')
    registry.publish("a", '{"body":"still"}')
    clock.advance(1)
    registry.close("a", '{"id":"a"}', "service.create.done")
    closed_a = registry.last_id
    clock.advance(1)
    registry.close("b", '{"id":"b"}', "build.create.error")
    clock.advance(0)
    frames = feed.frames()
    assert [(name, data["id"], data["state"]) for _, name, data in frames] == [
        ("job.opened", "a", "open"),
        ("job.opened", "b", "open"),
        ("job.closed", "a", "closed"),
        ("job.error", "b", "error"),
    ]
    ids = [frame_id for frame_id, _, _ in frames]
    assert ids[0] == opened_a and ids[2] == closed_a and ids == sorted(ids)
    assert frames[2][2] == {
        "id": "a",
        "state": "closed",
        "opened_at": "2023-11-14T22:13:20.000Z",
        "closed_at": "2023-11-14T22:13:22.000Z",
        "events": 4,
        "last_event_at": "2023-11-14T22:13:22.000Z",
        "last_event_type": "service.create.done",
        "readers": 0,
        "stalled": False,
    }


def test_the_jobs_events_are_not_on_the_feed(stub, registry, clock):
    registry.open("a", "{}", "service.create")
    feed = Feed(stub)
    for n in range(50):
        registry.publish("a", f'{{"n":{n}}}')
        clock.advance(1)
    assert feed.seen() == [("job.opened", "a")]


def test_a_job_whose_open_was_missed_opens_on_the_feed_when_it_speaks(stub, registry, clock):
    feed = Feed(stub)
    registry.publish("quiet", '{"body":"hello"}')
    clock.advance(0)
    [(frame_id, name, data)] = feed.frames()
    assert (frame_id, name, data["state"], data["events"]) == (registry.last_id, "job.opened", "open", 1)


def test_a_job_that_goes_quiet_stalls_and_resumes_on_the_feed_unwatched(stub, registry, clock):
    registry.open("a", "{}", "service.create")
    registry.open("b", "{}", "service.create")
    clock.advance(100)
    registry.publish("b", '{"n":1}')
    last_before_stall = registry.last_id
    feed = Feed(stub)
    clock.advance(199.9)
    assert [name for name, _ in feed.seen()] == ["job.opened", "job.opened"]
    clock.advance(0.1)
    stalled = feed.frames()[-1]
    assert stalled[:2] == (last_before_stall, "job.stalled"), "no event of its own: the latest id there is"
    assert stalled[2]["id"] == "a" and stalled[2]["stalled"] is True
    clock.advance(5)
    registry.publish("a", '{"n":2}')
    clock.advance(0)
    resumed = feed.frames()[-1]
    assert resumed[:2] == (registry.last_id, "job.resumed"), "the id of the event that ended the silence"
    assert resumed[2]["stalled"] is False and resumed[2]["events"] == 2
    assert registry.summary("a").stalled is False


def test_a_new_reader_gets_each_known_jobs_latest_change_then_live_ones(stub, registry, clock):
    registry.open("a", "{}", "service.create")
    registry.open("b", "{}", "service.create")
    registry.close("a", "{}", "service.create.done")
    clock.advance(1)
    feed = Feed(stub)
    assert feed.seen() == [("job.opened", "b"), ("job.closed", "a")]
    registry.open("c", "{}", "service.create")
    clock.advance(0)
    assert feed.seen()[-1] == ("job.opened", "c")


def test_last_event_id_resumes_after_it_with_each_jobs_latest_change(stub, registry, clock):
    first = Feed(stub)
    registry.open("a", "{}", "service.create")
    registry.open("b", "{}", "service.create")
    clock.advance(1)
    seen_upto = first.frames()[-1][0]
    registry.close("a", "{}", "service.create.done")
    registry.open("c", "{}", "service.create")
    registry.close("c", "{}", "service.create.error")
    clock.advance(1)
    again = Feed(stub, last_id=seen_upto)
    assert again.seen() == [("job.closed", "a"), ("job.error", "c")], "c's latest change only"
    assert Feed(stub, last_id=again.frames()[-1][0]).frames() == []


def test_a_reader_back_with_a_stalls_id_gets_the_stalls_at_that_id_again_but_not_the_rest(stub, registry, clock):
    registry.open("a", "{}", "service.create")
    registry.open("b", "{}", "service.create")
    clock.advance(300)
    first = Feed(stub)
    assert sorted(first.seen()) == [("job.stalled", "a"), ("job.stalled", "b")]
    stall_id = first.frames()[-1][0]
    assert first.frames()[0][0] == stall_id == registry.last_id, "both found silent with no event between"
    registry.open("c", "{}", "service.create")
    clock.advance(0)
    again = Feed(stub, last_id=stall_id).seen()
    assert sorted(again[:2]) == [("job.stalled", "a"), ("job.stalled", "b")] and again[2:] == [("job.opened", "c")]


def test_an_id_from_no_history_of_ours_gets_every_change(stub, registry, clock):
    registry.open("a", "{}", "service.create")
    clock.advance(0)
    assert Feed(stub, last_id=registry.last_id + 1000).seen() == [("job.opened", "a")]


def test_a_job_the_registry_lets_go_leaves_the_feed(stub, registry, clock):
    registry.open("a", "{}", "service.create")
    registry.close("a", "{}", "service.create.done")
    registry.open("b", "{}", "service.create")
    clock.advance(10 + 60 + 1)  # a's grace, then its retention
    assert "a" not in registry
    assert Feed(stub).seen() == [("job.opened", "b")]


def test_without_the_right_the_feed_is_403_with_the_reason(stub):
    response = result_of(stub.get(URL, headers={"Authorization": f"Bearer {token()}"}))
    body = json.loads(result_of(response.content()))
    assert response.code == 403 and "'monit:jobs'" in body["error"]


def test_a_streams_claim_limits_the_feed_to_its_jobs(stub, registry, clock):
    feed = Feed(stub, token(streams=["b", "c"]))
    for job in ("a", "b", "c", "d"):
        registry.open(job, "{}", "service.create")
    registry.close("c", "{}", "service.create.done")
    clock.advance(0)
    assert feed.seen() == [("job.opened", "b"), ("job.closed", "c")]
    assert Feed(stub, token(streams=["d"])).seen() == [("job.opened", "d")]


def test_the_feed_counts_against_max_streams_and_ends_with_a_retry_hint_on_shutdown(clock, registry):
    web = MonitWeb(
        registry, JWTVerifier.with_secret(SECRET, clock), clock, **web_options(Settings(heartbeat=15, max_streams=1))
    )
    stub = StubTreq(web.resource())
    feed = Feed(stub)
    refused = result_of(stub.get(URL, headers={"Authorization": f"Bearer {LISTER}"}))
    assert refused.code == 503 and json.loads(result_of(refused.content())) == {"error": "too many streams"}
    web.stopService()
    stub.flush()
    assert b"".join(feed.chunks).endswith(b"\n\n") and b"".join(feed.chunks).count(b"retry: ") == 2
    assert len(web.streams) == 0


def test_heartbeats_go_on_and_an_expired_token_ends_the_feed_at_one(stub, web, clock):
    web.startService()
    feed = Feed(stub, token(scope="monit:jobs", exp=int(NOW) + 20))
    clock.advance(15)
    stub.flush()
    assert b"".join(feed.chunks).endswith(KEEPALIVE)
    clock.advance(15)
    stub.flush()
    assert b"".join(feed.chunks).endswith(encode_error("token expired")) and len(web.streams) == 0
    web.stopService()


def test_a_slow_reader_gets_the_changes_at_the_pace_of_its_socket(registry, clock, web):
    for n in range(600):  # about 200 KB of summaries
        registry.open(f"job{n:03d}", "{}", "service.create")
    clock.advance(0)
    request = StreamingRequest(capacity=4096)
    streams = StreamSet(clock, 15, 3000)
    EventStream(request, FeedReader(web.job_feed, registry, None), streams, "alice", clock, 100_000).run(0)
    assert len(request.transport.value()) < 4096 + 70_000, "a batch at a time"
    while request.paused:
        request.drain()
    assert len(request.ids()) == 600 and request.ids() == sorted(request.ids()) and streams.dropped == 0
