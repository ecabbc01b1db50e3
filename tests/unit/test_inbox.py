"""Inboxes: replay, live delivery, grace on close, expiry of unwatched inboxes."""

import pytest
from twisted.internet.task import Clock

from monit.inbox import Event, Inbox, InboxClosed, InboxLimit, InboxState, valid_inbox_id
from monit.registry import InboxRegistry
from monit.service import registry_options
from monit.settings import Settings

from inboxreader import InboxReader


def make_registry(**kwargs):
    clock = Clock()
    return clock, InboxRegistry(
        clock, **registry_options(Settings(grace=10, expiry=300, abandon=3600, retention=600, **kwargs))
    )


def test_late_reader_gets_history_then_live_events():
    clock, registry = make_registry()
    registry.open("job1", '{"id":"job1"}', "service.create")
    registry.publish("job1", '{"body":"one"}')
    reader = InboxReader()
    registry.subscribe("job1", reader)
    registry.publish("job1", '{"body":"two"}')
    clock.advance(0)
    assert reader.ids() == [1, 2, 3]
    assert b"event: service.create" in reader.received
    assert reader.received.endswith(b'data: {"body":"two"}\n\n')


def test_each_reader_gets_the_same_encoded_frame():
    clock, registry = make_registry()
    readers = [InboxReader(), InboxReader()]
    for reader in readers:
        registry.subscribe("job", reader)
    registry.publish("job", '"x"')
    clock.advance(0)
    assert readers[0].received == readers[1].received == b'id: 1\ndata: "x"\n\n'


def test_replay_after_an_id():
    clock, registry = make_registry()
    for n in range(5):
        registry.publish("job", str(n))
    reader = InboxReader()
    registry.subscribe("job", reader, after=3)
    assert reader.ids() == [4, 5]


def test_history_is_bounded():
    clock, registry = make_registry(history=3)
    for n in range(10):
        registry.publish("job", str(n))
    reader = InboxReader()
    registry.subscribe("job", reader)
    assert reader.ids() == [8, 9, 10]


def test_close_is_delivered_then_streams_end_after_grace():
    clock, registry = make_registry()
    reader = InboxReader()
    registry.open("job", "{}", "service.create")
    registry.subscribe("job", reader)
    registry.close("job", "{}", "service.create.done")
    clock.advance(0)
    assert b"event: service.create.done" in reader.received
    clock.advance(9.9)
    assert not reader.ended
    late = InboxReader()
    registry.subscribe("job", late)
    assert late.ids() == [1, 2]
    clock.advance(0.1)
    assert reader.ended and late.ended
    assert registry.get("job").closed, "kept as a closed record"
    clock.advance(600)
    assert "job" not in registry
    assert not clock.getDelayedCalls()


def test_closed_record_gives_the_rest_then_nothing():
    clock, registry = make_registry()
    for n in range(3):
        registry.publish("job", str(n))
    registry.close("job", "{}", "service.create.done")
    clock.advance(10)
    rest = InboxReader()
    inbox = registry.subscribe("job", rest, after=2)
    assert inbox.closed and rest.ids() == [3, 4]
    assert not inbox.subscribers, "a closed inbox keeps no readers"
    everything = InboxReader()
    registry.subscribe("job", everything)
    assert everything.ids() == [1, 2, 3, 4]
    with pytest.raises(InboxClosed):
        registry.admit("job", after=4)
    registry.admit("job", after=3)


def test_activity_revives_a_closed_record_and_ids_go_on():
    clock, registry = make_registry()
    registry.open("job", "{}", "service.create")
    registry.close("job", "{}", "service.create.done")
    clock.advance(10)
    registry.open("job", "{}", "service.delete")
    reader = InboxReader()
    registry.subscribe("job", reader, after=2)
    assert reader.ids() == [3] and not registry.get("job").closed
    clock.advance(600)
    assert "job" in registry, "the retention timer went with the revival"


def test_an_inbox_is_unopened_then_open_then_closing_then_closed_and_activity_revives_it():
    clock, registry = make_registry()
    registry.publish("job", "{}")
    inbox = registry.get("job")
    assert inbox.state is InboxState.UNOPENED
    registry.open("job", "{}", "service.create")
    assert inbox.state is InboxState.OPEN
    registry.close("job", "{}", "service.create.done")
    assert inbox.state is InboxState.CLOSING
    clock.advance(10)
    assert inbox.state is InboxState.CLOSED
    registry.publish("job", "{}")
    assert registry.get("job") is inbox and inbox.state is InboxState.UNOPENED


def test_a_second_close_event_is_kept_but_the_grace_period_runs_from_the_first():
    inbox = Inbox("job", history=10, now=0.0)
    inbox.publish("{}", 5.0)
    first, second = Event(1, "service.create.done", {}), Event(2, "service.create.error", {})
    assert inbox.close(first, grace=10) and inbox.ends_at == 15.0
    inbox.publish("{}", 8.0)
    assert not inbox.close(second, grace=10)
    assert inbox.ends_at == 15.0 and inbox.close_event is second and inbox.state is InboxState.CLOSING


def test_a_job_opened_again_by_what_waits_for_its_close_starts_a_new_run():
    """The close has taken effect by the time those waiting for it hear of it."""
    clock, registry = make_registry()
    registry.open("job", "{}", "service.create")
    registry.when_closed("job").addCallback(lambda _: registry.open("job", "{}", "service.create"))
    registry.close("job", "{}", "service.create.done")
    assert [run.state for run in registry.runs("job")] == [InboxState.CLOSING, InboxState.OPEN]


def test_a_reader_behind_the_history_is_told_of_the_gap():
    clock, registry = make_registry(history=3)
    for n in range(10):
        registry.publish("job", str(n))
    reader = InboxReader()
    registry.subscribe("job", reader, after=2)
    assert reader.received.startswith(b'event: gap\ndata: {"from":3,"to":7}\n\n')
    assert reader.ids() == [8, 9, 10]


def test_a_reader_from_an_earlier_life_gets_everything():
    clock, registry = make_registry()
    registry.publish("job", "1")
    reader = InboxReader()
    registry.subscribe("job", reader, after=57)
    assert reader.ids() == [1]


def test_inbox_limit_when_every_inbox_is_watched():
    clock, registry = make_registry(max_inboxes=2)
    registry.subscribe("a", InboxReader())
    registry.subscribe("b", InboxReader())
    registry.admit("a")
    with pytest.raises(InboxLimit):
        registry.admit("c")
    with pytest.raises(InboxLimit):
        registry.publish("c", "1")
    registry.publish("a", "still fine")
    assert registry.refused == 2


def test_base64_payloads():
    clock, registry = make_registry(base64=True)
    reader = InboxReader()
    registry.subscribe("job", reader)
    registry.publish("job", '{"body":"é"}')
    clock.advance(0)
    assert reader.received == b"id: 1\ndata: eyJib2R5Ijoiw6kifQ==\n\n"


@pytest.mark.parametrize("after_grace", [False, True])
def test_a_job_that_opens_again_after_its_close_starts_a_new_run(after_grace):
    clock, registry = make_registry()
    old = InboxReader()
    registry.open("job", "{}", "service.create")
    registry.subscribe("job", old)
    registry.close("job", "{}", "service.create.done")
    clock.advance(10 if after_grace else 1)
    registry.open("job", "{}", "service.delete")
    clock.advance(0)
    assert old.ids() == [1, 2] and old.ended == after_grace, "a run's readers end when its grace is over"
    clock.advance(10)
    assert old.ended and old.ids() == [1, 2]
    new = InboxReader()
    registry.subscribe("job", new)
    assert new.ids() == [3] and b"done" not in new.received and b"gap" not in new.received
    registry.admit("job", after=2)  # it has all of run 1: on into run 2, from its start, with no notice
    onward = InboxReader()
    registry.subscribe("job", onward, after=2)
    assert onward.ids() == [3] and b"gap" not in onward.received and not onward.ended


def test_a_reader_of_a_run_before_the_latest_gets_the_rest_of_it_and_its_end():
    clock, registry = make_registry()
    registry.open("job", "{}", "service.create")
    registry.publish("job", '{"n":1}')
    registry.close("job", "{}", "service.create.done")
    clock.advance(1)
    registry.open("job", "{}", "service.create")  # run 2, in run 1's grace period
    registry.publish("job", '{"n":2}')
    clock.advance(0)
    in_grace = InboxReader()
    registry.subscribe("job", in_grace, after=1)
    assert in_grace.ids() == [2, 3] and not in_grace.ended, "run 1's rest, then its end when its grace is over"
    clock.advance(10)
    assert in_grace.ended and in_grace.ids() == [2, 3]
    late = InboxReader()
    registry.admit("job", after=2)
    inbox = registry.subscribe("job", late, after=2)
    assert late.ids() == [3] and inbox.closed, "a closed run's record: the rest of it, and the caller ends"
    assert registry.get("job").state == "open" and registry.get("job").last_id == 5


def test_a_run_record_goes_after_its_retention_and_a_reader_of_it_is_told_of_the_gap():
    clock, registry = make_registry()
    registry.open("job", "{}", "service.create")
    registry.publish("job", '{"n":1}')
    registry.close("job", "{}", "service.create.done")
    clock.advance(1)
    registry.open("job", "{}", "service.create")
    clock.advance(0)
    held = registry.history_bytes
    clock.advance(10 + 600)
    assert registry.history_bytes < held, "the record's history is let go"
    reader = InboxReader()
    registry.subscribe("job", reader, after=1)
    text = reader.received.decode()
    assert text.startswith('event: gap\ndata: {"from":2,"to":3}') and reader.ids() == [4]


def test_a_job_that_runs_again_and_again_keeps_each_run_for_its_retention():
    clock, registry = make_registry()
    for run in range(3):
        registry.open("job", "{}", "service.create")
        registry.publish("job", f'{{"run":{run}}}')
        registry.close("job", "{}", "service.create.done")
        clock.advance(1)
    for after, first in ((0, 7), (1, 2), (3, 4), (5, 6), (6, 7)):
        reader = InboxReader()
        registry.subscribe("job", reader, after=after)
        assert reader.ids()[0] == first, after
    registry.close_all()
    assert registry.history_bytes == 0


def test_a_reader_with_an_id_beyond_a_closed_jobs_last_is_a_stranger_not_done():
    """Its id is from no history of ours (a JetStream stream made anew): the notice and the job, not 204."""
    clock, registry = make_registry()
    registry.open("job", "{}", "service.create")
    registry.close("job", "{}", "service.create.done")
    clock.advance(10)
    with pytest.raises(InboxClosed):
        registry.admit("job", after=2)
    registry.admit("job", after=7)
    reader = InboxReader()
    registry.subscribe("job", reader, after=7)
    assert reader.received.startswith(b'event: gap\ndata: {"from":null,"to":null}') and reader.ids() == [1, 2]


def test_unwatched_unopened_inbox_expires():
    clock, registry = make_registry()
    reader = InboxReader()
    inbox = registry.subscribe("job", reader)
    clock.advance(1000)
    assert "job" in registry, "a watched inbox does not expire"
    registry.unsubscribe(inbox, reader)
    clock.advance(299)
    assert "job" in registry
    clock.advance(1)
    assert "job" not in registry
    assert not clock.getDelayedCalls()


def test_activity_postpones_expiry():
    clock, registry = make_registry()
    registry.publish("job", "1")
    clock.advance(200)
    registry.publish("job", "2")
    clock.advance(200)
    assert "job" in registry
    clock.advance(100)
    assert "job" not in registry


def test_opened_inbox_is_abandoned_only_after_a_long_silence():
    clock, registry = make_registry()
    registry.open("job", "{}", "service.create")
    clock.advance(3599)
    assert "job" in registry
    clock.advance(1)
    assert "job" not in registry


def test_close_all_ends_every_stream_and_timer():
    clock, registry = make_registry()
    readers = [InboxReader(), InboxReader()]
    registry.subscribe("a", readers[0])
    registry.subscribe("b", readers[1])
    registry.close_all()
    assert all(reader.ended for reader in readers)
    assert len(registry) == 0
    assert not clock.getDelayedCalls()


def test_a_reader_that_leaves_while_being_sent_to_does_not_break_delivery():
    clock, registry = make_registry()
    others = InboxReader()

    class Leaver(InboxReader):
        def deliver(self, batch):
            super().deliver(batch)
            registry.unsubscribe(inbox, self)

    leaver = Leaver()
    inbox = registry.subscribe("job", leaver)
    registry.subscribe("job", others)
    registry.publish("job", "1")
    clock.advance(0)
    registry.publish("job", "2")
    clock.advance(0)
    assert leaver.ids() == [1]
    assert others.ids() == [1, 2]


def test_inbox_ids():
    assert valid_inbox_id("1a2b")
    assert valid_inbox_id("job_1.x:y~z-2")
    assert not valid_inbox_id("")
    assert not valid_inbox_id("a" * 129)
    assert not valid_inbox_id("a b")
    assert not valid_inbox_id("a/b")
    assert not valid_inbox_id("é")


def test_events_of_one_turn_reach_each_reader_in_one_write():
    clock, registry = make_registry()
    readers = [InboxReader(), InboxReader()]
    for reader in readers:
        registry.subscribe("job", reader)
    for n in range(50):
        registry.publish("job", str(n))
    assert readers[0].writes == 0, "nothing is written before the turn ends"
    clock.advance(0)
    assert [reader.writes for reader in readers] == [1, 1]
    assert readers[0].ids() == list(range(1, 51))
    assert not clock.getDelayedCalls(), "no flush left, and a watched inbox needs no expiry timer"


def test_a_reader_joining_mid_turn_gets_each_event_once():
    clock, registry = make_registry()
    early, late = InboxReader(), InboxReader()
    registry.subscribe("job", early)
    registry.publish("job", "1")
    registry.subscribe("job", late)
    registry.publish("job", "2")
    clock.advance(0)
    assert early.ids() == [1, 2]
    assert late.ids() == [1, 2]


class Broken(InboxReader):
    """A reader whose delivery raises, as a buggy subscriber might."""

    def deliver(self, batch) -> None:
        raise RuntimeError("broken reader")


def test_a_reader_that_raises_is_detached_and_the_others_get_every_event(events):
    clock, registry = make_registry()
    broken, first, second = Broken(), InboxReader(), InboxReader()
    registry.subscribe("job1", broken)  # first in line: it raises before the others are served
    registry.subscribe("job1", first)
    registry.subscribe("job2", second)  # an inbox flushed after the broken one, in the same turn
    for n in range(3):
        registry.publish("job1", f'{{"n":{n}}}')
        registry.publish("job2", f'{{"n":{n}}}')
    clock.advance(0)
    registry.publish("job1", '{"n":3}')
    clock.advance(0)
    assert first.ids() == [1, 3, 5, 7] and second.ids() == [2, 4, 6]  # ids are shared by every job
    assert broken.ended and broken not in registry.get("job1").subscribers
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1 and failures[0]["inbox"] == "job1"


def test_a_lone_broken_reader_leaves_an_inbox_that_still_expires(events):
    clock, registry = make_registry()
    registry.subscribe("job1", Broken())
    registry.publish("job1", '{"n":1}')
    clock.advance(0)
    assert not registry.get("job1").subscribers
    clock.advance(300)
    assert "job1" not in registry


def test_a_reader_whose_id_is_from_no_history_of_ours_is_told_then_gets_everything():
    """As after the JetStream stream was made anew: its sequences started again."""
    clock, registry = make_registry()
    for n in range(3):
        registry.publish("job", f'{{"n":{n}}}')
    reader = InboxReader()
    registry.subscribe("job", reader, after=10**12)
    assert reader.received.startswith(b'event: gap\ndata: {"from":null,"to":null}\n\n')
    assert reader.ids() == [1, 2, 3]


def test_a_frame_is_tagged_for_many_job_streams_once_and_old_tags_are_let_go():
    inbox = Inbox("job", history=10, now=0.0)
    for n in range(400):
        inbox.publish('{"n":%d}' % n, 0.0)
        frame = inbox.frames_after(n).data
        tag = inbox.tagged(frame, n + 1)
        assert tag == b'id: %d\ndata: {"stream":"job","data":{"n":%d}}\n\n' % (n + 1, n)
        assert inbox.tagged(frame, n + 1) is tag, "made once, shared by every reader"
    assert len(inbox._tagged or ()) <= 2 * 10 + 64 + 1, "tags of frames gone from the history are let go"
