"""Room for the jobs and a bound on memory: no reader or publisher can crowd the others out."""

import pytest
from twisted.internet.task import Clock

from monit.inbox import InboxLimit, UserInboxLimit
from monit.registry import InboxRegistry
from monit.service import registry_options
from monit.settings import Settings

from inboxreader import InboxReader


def make(**settings) -> tuple[Clock, InboxRegistry]:
    clock = Clock()
    return clock, InboxRegistry(clock, **registry_options(Settings(**settings)))


def test_a_new_job_takes_the_place_of_reader_made_then_closed_then_idle_inboxes():
    clock, registry = make(max_inboxes=100)
    registry.subscribe("watched", InboxReader())
    for n in range(30):
        registry.open(f"idle{n}", "{}", "service.create")
        clock.advance(1)
    for n in range(10):
        registry.close(f"idle{n}", "{}", "service.create.done")
    clock.advance(10)  # the grace period: ten are closed records now
    for n in range(69):
        reader = InboxReader()
        registry.subscribe(f"asked{n}", reader, maker="mallory")
        registry.unsubscribe(registry.get(f"asked{n}"), reader)
    assert len(registry) == 100
    for n in range(69):  # one new job displaces one inbox
        registry.open(f"job{n}", "{}", "service.create")
    assert len(registry) <= 100 and registry.refused == 0
    assert not any(f"asked{n}" in registry for n in range(69)), "reader-made inboxes went first"
    assert "watched" in registry
    for n in range(10):
        registry.open(f"more{n}", "{}", "service.create")
    assert not any(f"idle{n}" in registry for n in range(10)), "closed records went next"
    # Room is made five (a twentieth of the limit) at a time, a little at each new job: the idle ones come last.
    gone = [n for n in range(10, 30) if f"idle{n}" not in registry]
    assert gone == list(range(10, 10 + len(gone))) and len(gone) < 5, "before the idle ones, oldest first"
    for n in range(10, 200):
        registry.open(f"more{n}", "{}", "service.create")
    assert "watched" in registry and registry.refused == 0


def test_room_is_made_by_latest_activity_and_a_reader_leaving_makes_an_inbox_a_candidate_again():
    clock, registry = make(max_inboxes=3)
    for name in ("a", "b", "c"):
        registry.open(name, "{}", "service.create")
        clock.advance(1)
    registry.publish("a", "{}")  # a, the first in, is now the most recently active
    clock.advance(1)
    registry.open("d", "{}", "service.create")
    assert sorted(inbox.id for inbox in registry) == ["a", "c", "d"], "b, the least recently active, went"
    reader = InboxReader()
    registry.subscribe("c", reader)
    clock.advance(1)
    registry.open("e", "{}", "service.create")
    assert "c" in registry and "a" not in registry, "a watched inbox stays; a was the least recently active"
    registry.unsubscribe(registry.get("c"), reader)
    registry.open("f", "{}", "service.create")
    assert sorted(inbox.id for inbox in registry) == ["d", "e", "f"] and registry.evicted == 3


def test_an_inbox_a_reader_made_still_goes_first_once_a_close_event_reached_it():
    """No job opened it: a close event without an open does not make it the job's."""
    clock, registry = make(max_inboxes=20)
    reader = InboxReader()
    registry.subscribe("asked", reader, maker="mallory")
    registry.unsubscribe(registry.get("asked"), reader)
    for n in range(19):
        clock.advance(1)
        registry.open(f"job{n}", "{}", "service.create")
    registry.close("asked", "{}", "service.create.done")  # now its latest activity
    registry.open("new", "{}", "service.create")
    assert "asked" not in registry and all(f"job{n}" in registry for n in range(19))


def test_a_reader_only_displaces_what_readers_made():
    clock, registry = make(max_inboxes=10)
    for n in range(10):
        registry.open(f"job{n}", "{}", "service.create")
    with pytest.raises(InboxLimit):
        registry.admit("new", maker="mallory")
    assert all(f"job{n}" in registry for n in range(10))


def test_one_user_makes_a_bounded_number_of_inboxes_nobody_opened():
    clock, registry = make(max_inboxes_per_user=3)
    for n in range(3):
        registry.subscribe(f"s{n}", InboxReader(), maker="mallory")
    with pytest.raises(UserInboxLimit):
        registry.admit("s3", maker="mallory")
    registry.subscribe("s3", InboxReader(), maker="alice")  # another user is not held back
    registry.open("s0", "{}", "service.create")  # a job took one over: it no longer counts
    registry.subscribe("s4", InboxReader(), maker="mallory")
    registry.subscribe("s0", InboxReader(), maker="mallory")  # watching an existing inbox costs nothing


def test_a_flood_of_new_job_ids_never_refuses_a_job_and_never_grows_past_the_limit():
    clock, registry = make(max_inboxes=100)
    for n in range(10_000):
        registry.publish(f"flood{n}", "{}")
    assert len(registry) <= 100 and registry.refused == 0 and registry.evicted >= 9_900
    registry.open("real", "{}", "service.create")
    assert "real" in registry


def test_readers_of_jobs_not_started_yet_find_room_between_a_flood_of_new_jobs():
    """A reader only displaces what readers made, but the room a flood's jobs make comes a twentieth at a time."""
    clock, registry = make(max_inboxes=100)
    admitted = 0
    for n in range(1000):
        registry.publish(f"flood{n}", "{}")
        if n % 10 == 9:
            reader = InboxReader()
            try:
                registry.subscribe(f"asked{n}", reader, maker="alice")
            except InboxLimit:
                continue
            admitted += 1
            registry.unsubscribe(registry.get(f"asked{n}"), reader)
    assert len(registry) <= 100 and registry.refused == 100 - admitted
    assert admitted >= 80, f"{admitted} of 100 readers found room"


def test_histories_stay_within_the_memory_budget_least_recently_active_trimmed_first():
    clock, registry = make(memory_budget=20_000, history=1000)
    payload = '"' + "x" * 100 + '"'  # frames of about 115 bytes
    for _ in range(100):
        registry.publish("old", payload)
    clock.advance(1)
    for _ in range(200):
        registry.publish("new", payload)
        assert registry.history_bytes <= 20_000
    old, new = registry.get("old"), registry.get("new")
    assert old.bytes < new.bytes and registry.history_bytes == old.bytes + new.bytes
    reader = InboxReader()
    registry.subscribe("old", reader, after=1)  # resuming into trimmed history
    assert b"event: gap" in reader.received


def test_dropping_an_inbox_gives_its_bytes_back():
    clock, registry = make(expiry=5)
    registry.publish("gone", '"' + "x" * 100 + '"')
    assert registry.history_bytes > 0
    clock.advance(5)
    assert "gone" not in registry and registry.history_bytes == 0


def test_replayed_events_are_judged_by_their_own_time():
    clock, registry = make(grace=10, retention=600, abandon=3600)
    clock.advance(20_000)
    hours_ago = clock.seconds() - 3 * 3600
    registry.open("old", "{}", "service.create", event_id=1 << 20, at=hours_ago)
    registry.close("old", "{}", "service.create.done", event_id=2 << 20, at=hours_ago + 5)
    registry.open("running", "{}", "service.create", event_id=3 << 20, at=clock.seconds() - 600)
    clock.advance(0)
    clock.advance(0)
    assert "old" not in registry, "closed three hours ago: not kept for --retention again"
    assert registry.get("running").last_id == 3 << 20
    clock.advance(2999)
    assert "running" in registry
    clock.advance(1)
    assert "running" not in registry, "abandoned an hour after its own last event"


def test_an_event_delivered_again_is_not_taken_twice():
    clock, registry = make()
    registry.publish("job", '{"n":1}', event_id=5 << 20)
    registry.publish("job", '{"n":1}', event_id=5 << 20)
    registry.publish("job", '{"n":2}', event_id=(5 << 20) + 1)
    reader = InboxReader()
    registry.subscribe("job", reader)
    assert reader.received.count(b"data:") == 2


def test_ids_from_the_stream_have_holes_and_readers_resume_between_them():
    clock, registry = make(history=3)
    for seq in (3, 9, 12, 20, 31):
        registry.publish("job", f'{{"seq":{seq}}}', event_id=seq << 20)
    fresh, resumed, behind = InboxReader(), InboxReader(), InboxReader()
    registry.subscribe("job", fresh)
    registry.subscribe("job", resumed, after=12 << 20)
    registry.subscribe("job", behind, after=3 << 20)
    fell_out = b'event: gap\ndata: {"from":%d,"to":%d}' % (3 << 20, 9 << 20)  # from the first event on
    assert fresh.received.startswith(fell_out) and fresh.received.count(b"data:") == 4
    assert resumed.received.count(b"data:") == 2 and b"gap" not in resumed.received
    assert b'event: gap\ndata: {"from":%d,"to":%d}' % ((3 << 20) + 1, 9 << 20) in behind.received


# ids shared by every job: one id places a reader in all of them


def test_core_mode_ids_are_one_counter_for_every_job():
    clock, registry = make()
    registry.open("a", "{}", "service.create")
    registry.publish("b", "{}")
    registry.publish("a", "{}")
    base = registry.id_base
    assert (registry.get("a").last_id, registry.get("b").last_id, registry.last_id) == (base + 3, base + 2, base + 3)


def test_jetstream_ids_come_from_the_stream_and_the_latest_is_known():
    clock, registry = make(jetstream=True)
    registry.publish("a", "{}", event_id=7 << 20)
    registry.publish("b", "{}", event_id=9 << 20)
    assert registry.last_id == 9 << 20 and registry.get("a").last_id == 7 << 20


def test_room_for_several_inboxes_is_checked_at_once():
    clock, registry = make(max_inboxes_per_user=5)
    registry.follow_job("old", InboxReader(), "mallory")
    registry.admit_many(["old", "n1", "n2", "n3", "n4"], "mallory")  # four new: five in all
    with pytest.raises(UserInboxLimit):
        registry.admit_many(["n1", "n2", "n3", "n4", "n5"], "mallory")
    assert len(registry) == 1


def test_watching_adds_a_follower_without_a_replay_and_a_closed_inbox_keeps_it_for_the_next_run():
    clock, registry = make(grace=1, retention=5)
    registry.publish("a", "{}")
    reader = InboxReader()
    inbox = registry.follow_job("a", reader, "alice")
    assert reader in inbox.subscribers and reader.received == b""
    registry.close("c", "{}", "service.create.done")
    clock.advance(2)
    follower = InboxReader()
    closed = registry.follow_job("c", follower, "alice")
    assert closed.closed and follower in closed.subscribers
    clock.advance(10)
    assert registry.get("c") is closed, "kept past its retention while followed"
    registry.open("c", "{}", "service.create")
    assert follower in registry.get("c").subscribers and closed.successor is registry.get("c")
    registry.unfollow_job("c", follower)
    clock.advance(1)
    assert registry.get("c").state == "open" and not registry.get("c").subscribers
    assert registry.history_bytes == registry.get("c").bytes + inbox.bytes, "the old run's record went"


def test_after_flush_runs_once_every_inbox_has_handed_out_its_events():
    clock, registry = make()
    seen: list[int] = []
    reader = InboxReader()
    registry.subscribe("a", reader)
    registry.publish("a", "{}")
    registry.after_flush(lambda: seen.append(len(reader.received)))
    registry.after_flush(lambda: 1 / 0)  # a failing one is logged; the others still run
    assert seen == []
    clock.advance(0)
    assert seen and seen[0] > 0, "called after a's events went out"
    registry.after_flush(lambda: seen.append(-1))  # with nothing pending, still called
    clock.advance(0)
    assert seen[-1] == -1
