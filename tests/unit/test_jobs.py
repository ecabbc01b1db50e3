"""Jobs as a whole, in the registry: summaries, abandoned records, counts; a fake clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from monit.jobs import JobSummary, iso_time
from monit.registry import InboxRegistry
from monit.service import registry_options
from monit.settings import Settings

from inboxreader import InboxReader

NOW = 1_700_000_000.0


def make(**settings) -> tuple[Clock, InboxRegistry]:
    clock = Clock()
    clock.advance(NOW)
    options: dict[str, Any] = dict(grace=10, retention=600, expiry=300, abandon=3600, stall_after=0)
    options.update(settings)
    return clock, InboxRegistry(clock, **registry_options(Settings(**options)))


def test_an_open_job_is_summarized_from_its_events():
    clock, registry = make()
    registry.open("job", '{"id":"job"}', "service.create")
    clock.advance(2)
    registry.publish("job", '{"body":"one"}')
    registry.publish("job", '{"body":"two"}')
    reader = InboxReader()
    registry.subscribe("job", reader)
    assert registry.summary("job").as_json() == {
        "id": "job",
        "state": "open",
        "opened_at": iso_time(NOW),
        "closed_at": None,
        "events": 3,
        "last_event_at": iso_time(NOW + 2),
        "last_event_type": "message",
        "readers": 1,
        "stalled": False,
    }
    assert iso_time(NOW + 2) == "2023-11-14T22:13:22.000Z"


def test_a_close_makes_it_closed_or_error_by_its_subject():
    clock, registry = make()
    for job, subject in (("good", "build.create.done"), ("bad", "build.create.error")):
        registry.open(job, f'{{"id":"{job}"}}', "build.create")
        clock.advance(1)
        registry.close(job, f'{{"id":"{job}"}}', subject)
    good, bad = registry.summary("good"), registry.summary("bad")
    assert (good.state, bad.state) == ("closed", "error")
    assert good.last_event_type == "build.create.done"
    assert good.as_json()["closed_at"] == iso_time(NOW + 1)
    clock.advance(11)  # past the grace period: a closed record now, still the same summary
    assert registry.summary("bad").state == "error"


def test_a_job_a_reader_asked_for_waits_and_one_that_speaks_without_an_open_is_open():
    _, registry = make()
    registry.subscribe("asked", InboxReader())
    registry.publish("speaking", '{"body":"x"}')
    asked, speaking = registry.summary("asked"), registry.summary("speaking")
    assert (asked.state, asked.events, asked.last_event_at, asked.last_event_type) == ("waiting", 0, None, None)
    assert (speaking.state, speaking.opened_at) == ("open", None)
    assert registry.summary("unknown") is None


def test_a_new_run_is_summarized_and_counts_readers_of_every_run():
    clock, registry = make()
    registry.open("job", '{"id":"job"}', "service.create")
    registry.subscribe("job", InboxReader())
    registry.close("job", '{"id":"job"}', "service.create.done")
    clock.advance(1)
    registry.open("job", '{"id":"job"}', "service.create")  # runs again, the old run in its grace period
    summary = registry.summary("job")
    assert (summary.state, summary.events, summary.opened_at, summary.readers) == ("open", 1, NOW + 1, 1)


def test_times_come_from_the_stream_with_jetstream():
    clock, registry = make(jetstream=True)
    registry.open("job", '{"id":"job"}', "service.create", event_id=1 << 20, at=NOW - 50)
    registry.publish("job", '{"body":"x"}', event_id=2 << 20, at=NOW - 40)
    summary = registry.summary("job")
    assert (summary.opened_at, summary.last_event_at, summary.activity) == (NOW - 50, NOW - 40, NOW - 40)


def test_the_last_event_type_survives_a_trimmed_history():
    _, registry = make(memory_budget=1000)
    registry.open("job", '{"id":"job"}', "service.create")
    registry.publish("job", '{"body":"' + "x" * 2000 + '"}')  # over the budget: the history is emptied
    summary = registry.summary("job")
    assert registry.get("job").bytes == 0
    assert (summary.events, summary.last_event_type) == (2, "message")


def test_an_abandoned_job_is_kept_as_such_for_the_retention_then_forgotten():
    clock, registry = make()
    registry.open("job", '{"id":"job"}', "service.create")
    clock.advance(3600.2)
    assert "job" not in registry, "let go, as before"
    assert registry.summary("job").as_json()["state"] == "abandoned"
    assert list(registry.job_ids()) == ["job"]
    assert registry.job_counts()["abandoned"] == 1
    clock.advance(600)
    assert registry.summary("job") is None
    assert not clock.getDelayedCalls(), "no timer is left for it"


def test_an_abandoned_job_that_speaks_again_is_open_and_a_reader_does_not_hide_it():
    clock, registry = make()
    registry.open("job", '{"id":"job"}', "service.create")
    clock.advance(3600.2)
    registry.subscribe("job", InboxReader())  # a reader asks for it: it still shows as abandoned
    assert registry.summary("job").state == "abandoned"
    registry.publish("job", '{"body":"back"}')
    assert registry.summary("job").state == "open"
    assert registry.job_counts() == {"open": 1}


def test_an_abandoned_run_does_not_hold_back_where_a_replay_starts():
    clock, registry = make(jetstream=True)
    registry.open("old", '{"id":"old"}', "service.create", event_id=5 << 20, at=NOW)
    registry.open("new", '{"id":"new"}', "service.create", event_id=9 << 20, at=NOW + 3000)
    clock.advance(3600.2)
    assert registry.summary("old").state == "abandoned"
    assert registry.first_needed_id() == (9 << 20)


def test_job_counts_by_state():
    clock, registry = make()
    registry.open("a", '{"id":"a"}', "service.create")
    registry.open("b", '{"id":"b"}', "service.create")
    registry.close("b", '{"id":"b"}', "service.create.error")
    registry.subscribe("c", InboxReader())
    assert registry.job_counts() == {"open": 1, "error": 1, "waiting": 1}


def test_a_summary_is_a_value_the_feed_can_reuse():
    _, registry = make()
    registry.open("job", '{"id":"job"}', "service.create")
    summary = registry.summary("job")
    assert isinstance(summary, JobSummary)
    assert summary == registry.summary("job")
    assert summary.abandoned().as_json()["state"] == "abandoned"
