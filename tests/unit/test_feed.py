"""The feed's looks at the stream, step by step: a fake JetStream played by the test, a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from monit.feed import JetStreamFeed
from monit.registry import InboxRegistry
from monit.routing import ID_SHIFT, Router
from monit.service import feed_options, registry_options, router_options
from monit.settings import Settings

from fakenats import FakeJetStream

CHECK = 5.0


def operators(last_seq: int, created: str = "t1") -> dict:
    subjects = ["service.>", "build.>", "environment.>", "monitor.>"]
    return {"created": created, "config": {"subjects": subjects}, "state": {"messages": last_seq, "last_seq": last_seq}}


def started(stream: dict | None, **settings) -> tuple[FakeJetStream, Clock, InboxRegistry, JetStreamFeed]:
    nats, clock = FakeJetStream(stream), Clock()
    clock.advance(1_000)
    options = Settings(jetstream=True, jetstream_checkpoint=False, jetstream_check=CHECK, **settings)
    registry = InboxRegistry(clock, **registry_options(options))
    # a fake client where JetStreamFeed names the real one
    feed = JetStreamFeed(
        nats,  # type: ignore[arg-type]
        Router(registry, **router_options(options)),
        registry,
        clock,
        print,
        **feed_options(options),
    )
    feed.startService()
    return nats, clock, registry, feed


def test_a_stream_whose_last_sequence_is_below_one_read_is_taken_as_made_anew():
    nats, clock, registry, feed = started(operators(3))
    for seq in (1, 2, 3):
        nats.deliver(seq, seq)
    assert feed.caught_up and registry.get("job").last_id == 3 << ID_SHIFT
    nats.stream = operators(1)  # the same creation time, yet fewer messages than were read
    clock.advance(CHECK)
    assert "job" not in registry and not feed.caught_up
    assert nats.consumers[-1]["deliver_policy"] == "all", "from its first message again"
    nats.deliver(1, 1)
    assert feed.caught_up and registry.get("job").last_id == 1 << ID_SHIFT
    feed.stopService()


def test_an_operators_stream_that_is_gone_is_a_problem_until_it_is_back_as_it_was():
    nats, clock, registry, feed = started(operators(2))
    nats.deliver(1, 1)
    nats.deliver(2, 2)
    nats.stream = None
    clock.advance(CHECK)
    assert not feed.caught_up and feed.problems == [
        f"JetStream: stream {feed._stream} is gone: an operator made it, and monit may not make it again "
        "(see --jetstream-recreate)"
    ]
    assert not nats.subscriptions, "no consumer meanwhile"
    held = feed.hold(3 << ID_SHIFT)
    assert held is not None and feed.hold(2 << ID_SHIFT) is not None, "nothing is passed while it is gone"
    nats.stream = operators(3)  # back as it was (a node that answered "not found" for a while)
    clock.advance(CHECK)
    assert nats.consumers[-1]["opt_start_seq"] == 3 and registry.get("job").last_id == 2 << ID_SHIFT
    nats.deliver(3, 1)
    assert feed.caught_up and feed.problems == [] and feed.holding == 0
    feed.stopService()


def test_a_stream_monit_cannot_make_again_is_said_once_and_tried_at_every_look(events):
    nats, clock, registry, feed = started(None)  # made by monit at start: its own
    nats.stream = None
    nats.create_error = {"error": {"code": 403, "err_code": 10999, "description": "not allowed"}}
    for _ in range(3):
        clock.advance(CHECK)
    assert "could not make it again" in feed.problems[0] and not feed.caught_up
    said = [e for e in events if "making it again failed" in e.get("log_format", "")]
    assert len(said) == 1
    nats.create_error = None
    clock.advance(CHECK)
    assert feed.caught_up and nats.stream["created"] == "made by monit"
    feed.stopService()


def test_a_held_reader_past_the_stream_goes_on_once_a_later_look_finds_its_id_from_no_history_of_ours():
    nats, clock, registry, feed = started(operators(2))
    nats.deliver(1, 1)
    nats.deliver(2, 2)
    went: list[object] = []
    held = feed.hold(9 << ID_SHIFT)  # caught up, and the id is past the stream's end
    assert held is not None
    held.addCallback(went.append)
    assert went == [None], "a look at once: the stream's last sequence is 2"
    nats.stream = operators(12)
    later = feed.hold(11 << ID_SHIFT)  # past what was read, but the stream has it
    assert later is not None
    later.addCallback(went.append)
    assert went == [None], "held: the stream holds it"
    for seq in range(3, 12):
        nats.deliver(seq, seq)
    assert went == [None, None] and feed.holding == 0
    feed.stopService()
