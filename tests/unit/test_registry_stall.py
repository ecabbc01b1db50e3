"""Stalled jobs: ``monit.stalled`` after --stall-after seconds of silence, ``monit.resumed`` when the job speaks.

With a fake clock: the registry, one-job and many-job streams (for real: tests/scenarios/test_stalled_jobs.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock

from monit.registry import InboxRegistry
from monit.service import registry_options
from monit.settings import Settings
from monit.sse import decode_frames
from monit.web.jobs import ManyJobs

from inboxreader import InboxReader

NOW = 1_700_000_000.0


class Reader(InboxReader):
    """Reads back what it was handed as frames: (id, event name, data)."""

    def decoded(self) -> list[tuple[int | None, str | None, object]]:
        return [(event_id, name, json.loads(data)) for event_id, name, data, _ in decode_frames(self.received)]

    def names(self) -> list[str | None]:
        return [name for _, name, _ in self.decoded()]


def make(stall_after: float = 300, **settings) -> tuple[Clock, InboxRegistry]:
    clock = Clock()
    clock.advance(NOW)
    options: dict[str, Any] = dict(grace=10, retention=600, expiry=300, abandon=3600, stall_after=stall_after)
    options.update(settings)
    return clock, InboxRegistry(clock, **registry_options(Settings(**options)))


def open_job(registry: InboxRegistry, job: str = "job") -> Reader:
    registry.open(job, f'{{"id":"{job}"}}', "service.create")
    reader = Reader()
    registry.subscribe(job, reader)
    return reader


def test_a_silent_open_job_stalls_and_its_readers_are_told_without_an_id():
    clock, registry = make()
    reader = open_job(registry)
    clock.advance(299.8)
    assert reader.names() == ["service.create"] and not registry.summary("job").stalled
    clock.advance(0.3)
    event_id, name, data = reader.decoded()[-1]
    assert (event_id, name) == (None, "monit.stalled")
    assert data == {"silent_for": pytest.approx(300.1), "last_event_at": "2023-11-14T22:13:20.000Z"}
    assert registry.summary("job").stalled and registry.stalled_jobs == 1


def test_the_job_speaking_again_resumes_it_before_its_event():
    clock, registry = make()
    reader = open_job(registry)
    clock.advance(400)
    registry.publish("job", '{"body":"back"}')
    clock.advance(0)
    frames = reader.decoded()
    assert [name for _, name, _ in frames] == ["service.create", "monit.stalled", "monit.resumed", None]
    assert frames[2][0] is None and frames[2][2] == {"silent_for": 400.0, "last_event_at": "2023-11-14T22:20:00.000Z"}
    assert frames[3][2] == {"body": "back"}
    assert not registry.summary("job").stalled and registry.stalled_jobs == 0


def test_it_stalls_again_after_another_silence_and_not_before():
    clock, registry = make()
    reader = open_job(registry)
    clock.advance(400)
    registry.publish("job", '{"body":"back"}')
    clock.advance(299)
    assert reader.names().count("monit.stalled") == 1
    clock.advance(1.2)
    assert reader.names().count("monit.stalled") == 2


def test_an_unwatched_job_resumes_quietly_and_its_silence_counts_from_its_last_event():
    clock, registry = make()
    registry.open("job", '{"id":"job"}', "service.create")
    clock.advance(300.2)
    assert registry.summary("job").stalled
    clock.advance(100)
    registry.publish("job", '{"body":"back"}')
    assert not registry.summary("job").stalled, "at once, without waiting for a timer"
    clock.advance(299.5)
    assert not registry.summary("job").stalled
    clock.advance(0.6)
    assert registry.summary("job").stalled


def test_a_reader_that_comes_to_a_stalled_job_is_told_after_its_history():
    clock, registry = make()
    registry.open("job", '{"id":"job"}', "service.create")
    clock.advance(350.2)
    reader = Reader()
    registry.subscribe("job", reader)
    frames = reader.decoded()
    assert [name for _, name, _ in frames] == ["service.create", "monit.stalled"]
    assert frames[1][2]["silent_for"] == 350.2


def test_a_stalled_job_that_closes_resumes_first_and_a_closed_one_never_stalls():
    clock, registry = make()
    reader = open_job(registry)
    clock.advance(300.2)
    registry.close("job", '{"id":"job"}', "service.create.done")
    clock.advance(0)
    assert reader.names() == ["service.create", "monit.stalled", "monit.resumed", "service.create.done"]
    clock.advance(5000)
    assert reader.names().count("monit.stalled") == 1
    assert registry.stalled_jobs == 0


def test_judged_from_the_stream_time_with_jetstream():
    clock, registry = make(jetstream=True)
    registry.open("job", '{"id":"job"}', "service.create", event_id=1 << 20, at=NOW - 250)
    reader = Reader()
    registry.subscribe("job", reader)
    clock.advance(50.2)
    assert reader.decoded()[-1][1:] == (
        "monit.stalled",
        {"silent_for": 300.2, "last_event_at": "2023-11-14T22:09:10.000Z"},
    )


def test_a_replayed_job_silent_for_long_is_stalled_at_once():
    clock, registry = make(jetstream=True)
    registry.open("job", '{"id":"job"}', "service.create", event_id=1 << 20, at=NOW - 1000)
    clock.advance(0.2)
    assert registry.summary("job").stalled


def test_zero_turns_it_off():
    clock, registry = make(stall_after=0)
    reader = open_job(registry)
    clock.advance(3000)
    assert reader.names() == ["service.create"] and not registry.summary("job").stalled


def test_a_job_waiting_for_its_open_is_not_stalled():
    clock, registry = make()
    reader = Reader()
    registry.subscribe("job", reader)
    clock.advance(1000)
    assert reader.received == b"" and not registry.summary("job").stalled


class Stream:
    """What a many-job source needs of its stream."""

    def __init__(self, registry: InboxRegistry) -> None:
        self.written = b""
        self.source: ManyJobs | None = None

    def catch_up(self) -> None:
        assert self.source is not None
        batch = self.source.next_batch(0)
        while batch is not None:
            self.written += batch.data
            batch = self.source.next_batch(0)

    def write_notice(self, frames: bytes) -> None:
        self.written += frames

    notice = write_notice


def test_a_many_job_stream_gets_each_jobs_notices_naming_the_job():
    clock, registry = make()
    registry.open("a", '{"id":"a"}', "service.create")
    clock.advance(100)
    registry.open("b", '{"id":"b"}', "service.create")
    stream = Stream(registry)
    source = stream.source = ManyJobs(registry, ["a", "b"])
    source.attach(stream, 0, "alice")
    source.started(stream)
    clock.advance(200.2)
    registry.publish("a", '{"body":"back"}')
    clock.advance(0)
    frames = [(name, json.loads(data)) for _, name, data, _ in decode_frames(stream.written)]
    notices = [(name, data["stream"]) for name, data in frames if name and name.startswith("monit.")]
    assert notices == [("monit.stalled", "a"), ("monit.resumed", "a")]
    assert frames[-1] == (None, {"stream": "a", "data": {"body": "back"}})
    clock.advance(100)
    assert b'event: monit.stalled\ndata: {"stream":"b","data":{"silent_for":300.2' in stream.written
