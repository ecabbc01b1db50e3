"""The registry's part in --jetstream's faults: a reset for a stream made anew, and where a replay may start."""

from twisted.internet.task import Clock

from monit.registry import InboxRegistry
from monit.routing import ID_SHIFT
from monit.service import registry_options
from monit.settings import Settings

from inboxreader import InboxReader


def make() -> tuple[Clock, InboxRegistry]:
    clock = Clock()
    clock.advance(1_000_000)
    return clock, InboxRegistry(clock, **registry_options(Settings(jetstream=True, grace=10, retention=60)))


def at(seq: int, index: int = 0) -> int:
    return (seq << ID_SHIFT) + index


def test_a_reset_ends_every_inbox_and_stream_forgets_ids_and_keeps_the_counters():
    clock, registry = make()
    reader = InboxReader()
    registry.open("a", "{}", "service.create", at(1))
    registry.subscribe("a", reader)
    registry.publish("b", "{}", None, at(2))
    registry.subscribe("made-by-reader", InboxReader(), maker="alice")
    events = registry.events
    registry.reset()
    assert len(registry) == 0 and reader.ended and registry.last_id == 0
    assert registry.events == events
    registry.open("a", "{}", "service.create", at(1))  # the new stream's first message: not taken as seen
    assert registry.get("a").last_id == at(1) and registry.history_bytes > 0
    assert registry.admit("made-by-reader", maker="alice") is None


def test_the_first_needed_id_is_the_oldest_kept_runs_first_event():
    clock, registry = make()
    assert registry.first_needed_id() is None
    registry.subscribe("watched-before-any-event", InboxReader(), maker="alice")
    assert registry.first_needed_id() is None, "an inbox with no event needs nothing"
    registry.publish("b", "{}", None, at(7, 3))
    registry.open("c", "{}", "service.create", at(9))
    assert registry.first_needed_id() == at(7, 3)
    registry.close("b", "{}", "service.create.done", at(10))
    clock.advance(10 + 60 + 1)  # grace and retention over: b is dropped
    assert "b" not in registry and registry.first_needed_id() == at(9)


def test_a_new_run_needs_the_end_of_the_run_before_it():
    clock, registry = make()
    registry.open("job", "{}", "service.create", at(3))
    registry.close("job", "{}", "service.create.done", at(4))
    registry.open("job", "{}", "service.create", at(8))  # within the grace: a new run of it
    inbox = registry.get("job")
    assert inbox.run_after == at(4) and inbox.start == at(8) - 1
    assert registry.first_needed_id() == at(3), "the run before is kept as a record: from its start"
    clock.advance(10 + 60 + 1)  # the record's grace and retention are over
    assert registry.first_needed_id() == at(4), "replaying from the close makes the same new run"


def test_ids_a_replay_starts_past_are_known():
    clock, registry = make()
    registry.start_after(at(100) - 1)
    assert registry.last_id == at(100) - 1
    registry.publish("x", "{}", None, at(101))
    registry.start_after(at(50))
    assert registry.last_id == at(101), "never back"
