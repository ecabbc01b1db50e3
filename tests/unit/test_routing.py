"""The router: subject table, inbox id rules, and bad input skipped without loss."""

import json

import pytest
from twisted.internet.base import DelayedCall
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from monit.inbox import InboxState
from monit.nats.protocol import Msg
from monit.registry import InboxRegistry
from monit.routing import SLICE, Action, Malformed, Router, inbox_id_of, subject_table
from monit.service import registry_options, router_options
from monit.settings import DELIVER_SUBJECTS, LIFECYCLE_SUBJECTS, Settings

from inboxreader import InboxReader


def make_router(**kwargs):
    clock = Clock()
    settings = Settings(grace=10, **kwargs)
    registry = InboxRegistry(clock, **registry_options(settings))
    return clock, registry, Router(registry, **router_options(settings))


def msg(subject, payload):
    if not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    return Msg(subject=subject, payload=payload)


def test_default_subject_table_follows_the_seed():
    table = subject_table(LIFECYCLE_SUBJECTS, DELIVER_SUBJECTS)
    for subject in (
        "service.create",
        "service.delete",
        "service.import",
        "build.create",
        "build.delete",
        "build.import",
        "environment.sync",
    ):
        assert table[subject] is Action.OPEN
        assert table[subject + ".done"] is Action.CLOSE
        assert table[subject + ".error"] is Action.CLOSE
    assert table["monitor.user"] is Action.DELIVER
    assert len(table) == 22


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"service": "my-env-1a2b"}, "1a2b"),
        ({"service": "plain"}, "plain"),
        ({"service": "my-env-1a2b", "id": "other"}, "1a2b"),
        ({"id": "abc"}, "abc"),
        ({"id": 42}, "42"),
        ({"service": "", "id": "abc"}, "abc"),
    ],
)
def test_inbox_id_rules(payload, expected):
    assert inbox_id_of(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"id": None},
        {"id": True},
        {"id": 1.5},
        {"id": ["x"]},
        {"service": "env-"},
        {"service": "a b"},
        {"id": "x" * 200},
        {"service": 7},
    ],
)
def test_unusable_ids(payload):
    with pytest.raises(Malformed):
        inbox_id_of(payload)


def test_each_element_of_messages_is_one_event():
    clock, registry, router = make_router()
    reader = InboxReader()
    registry.subscribe("1a2b", reader)
    router(
        msg(
            "monitor.user",
            {"service": "env-1a2b", "messages": [{"body": "one", "level": "INFO"}, {"body": "two", "level": "ERROR"}]},
        )
    )
    clock.advance(0)
    assert reader.frames == [
        b'id: 1\ndata: {"body":"one","level":"INFO"}\n\nid: 2\ndata: {"body":"two","level":"ERROR"}\n\n',
    ]


def test_lifecycle_events_carry_their_subject_and_close_after_grace():
    clock, registry, router = make_router()
    router(msg("service.create", {"id": "job", "name": "web"}))
    router(msg("service.create.done", {"id": "job"}))
    inbox = registry.get("job")
    assert inbox.state is InboxState.CLOSING
    frames = inbox.frames_after(0).data
    assert b'event: service.create\ndata: {"id":"job","name":"web"}' in frames
    assert b"event: service.create.done" in frames
    clock.advance(10)
    assert registry.get("job").state is InboxState.CLOSED


def test_irrelevant_subjects_are_ignored_quietly():
    clock, registry, router = make_router()
    router(msg("something.else", b"not json"))
    assert router.malformed == 0 and len(registry) == 0


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe not utf-8",
        b"not json",
        b"[1, 2]",
        b'"a string"',
        b"[" * 100000,
        json.dumps({"service": "env-1", "messages": "not a list"}).encode(),
        json.dumps({"messages": []}).encode(),
        json.dumps({"id": {"nested": 1}, "messages": []}).encode(),
    ],
)
def test_bad_input_is_counted_and_the_next_good_message_arrives(payload):
    clock, registry, router = make_router()
    reader = InboxReader()
    registry.subscribe("1", reader)
    router(msg("monitor.user", payload))
    router(msg("monitor.user", {"id": "1", "messages": [{"body": "good"}]}))
    clock.advance(0)
    assert router.malformed == 1
    assert reader.frames == [b'id: 1\ndata: {"body":"good"}\n\n']


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400 + ".0"])
@pytest.mark.parametrize("subject", ["monitor.user", "service.create", "service.create.done"])
def test_numbers_json_parse_refuses_are_skipped_as_not_json(subject, number):
    """Python reads NaN, Infinity and 1e999 (as inf); a browser's JSON.parse would refuse
    the bare NaN/Infinity monit would send on, so the whole message is skipped."""
    clock, registry, router = make_router()
    reader = InboxReader()
    registry.subscribe("1", reader)
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        payload = '{"id": "1", "messages": [{"body": "before"}, {"progress": %s}]}' % number
        router(msg(subject, payload.encode()))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    clock.advance(0)
    assert router.malformed == 1
    assert reader.frames == []
    assert [event["reason"] for event in logged if event.get("kind") == subject] == ["payload is not JSON"]
    router.skipped.stop()


def test_finite_numbers_pass_and_stay_strict_json():
    clock, registry, router = make_router()
    reader = InboxReader()
    registry.subscribe("1", reader)
    big = "1" + "0" * 400
    payload = '{"id": "1", "messages": [{"a": 1.5, "b": 1e308, "c": -2.5e-300, "d": %s, "e": 0}]}' % big
    router(msg("monitor.user", payload.encode()))
    clock.advance(0)
    assert router.malformed == 0
    [frame] = reader.frames
    data = frame.decode().split("data: ", 1)[1].strip()

    def refuse(name):
        raise ValueError(name)

    assert json.loads(data, parse_constant=refuse) == {"a": 1.5, "b": 1e308, "c": -2.5e-300, "d": int(big), "e": 0}


def test_a_bad_element_is_skipped_alone():
    clock, registry, router = make_router()
    router(msg("monitor.user", {"id": "1", "messages": [1, {"body": "ok"}, "x"]}))
    assert router.malformed == 2
    assert registry.get("1").last_id == 1


def test_messages_past_the_inbox_limit_are_counted_and_skipped():
    clock = Clock()
    settings = Settings(max_inboxes=1)
    registry = InboxRegistry(clock, **registry_options(settings))
    router = Router(registry, **router_options(settings))
    router(msg("service.create", {"id": "first"}))
    registry.subscribe("first", InboxReader())  # a watched inbox is never displaced
    router(msg("service.create", {"id": "second"}))
    router(msg("monitor.user", {"id": "first", "messages": [{"body": "ok"}]}))
    assert router.refused == 1 and router.malformed == 0
    assert "second" not in registry and registry.get("first").last_id == 2


def test_oversized_payload_is_skipped():
    clock, registry, router = make_router(max_payload=100)
    router(msg("monitor.user", {"id": "1", "messages": [{"body": "x" * 200}]}))
    assert router.malformed == 1 and len(registry) == 0


def test_custom_subjects():
    clock, registry, router = make_router(open_subjects=["job.start"], deliver_subjects=["job.log"])
    router(msg("job.start", {"id": "j"}))
    router(msg("job.log", {"id": "j", "messages": [{"m": 1}]}))
    router(msg("service.create", {"id": "j"}))
    assert registry.get("j").last_id == 2


def test_a_flood_of_bad_messages_is_one_line_then_a_count_every_ten_seconds():
    clock, registry, router = make_router()
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        for _ in range(1000):
            router(msg("monitor.user", b"junk"))
        router(msg("service.create", b"junk"))
        said = [formatEvent(event) for event in logged if event.get("what")]
        assert said == [
            "skipped bad messages on monitor.user: payload is not JSON",
            "skipped bad messages on service.create: payload is not JSON",
        ]
        clock.advance(10)  # nothing more arrives, and the count is still said
        said = [formatEvent(event) for event in logged if event.get("what")]
        assert said[2:] == ["skipped bad messages: 999 more in the last 10 s (monitor.user: 999)"]
        clock.advance(10)
        clock.advance(10)
        assert len([event for event in logged if event.get("what")]) == 3, "nothing more to say"
        assert not clock.getDelayedCalls(), "the timer runs only while there is something to say"
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert router.malformed == 1001


def one_turn(clock: Clock) -> None:
    """What one reactor turn runs: the calls due now, not those they schedule."""
    for call in [c for c in clock.getDelayedCalls() if c.getTime() <= clock.seconds()]:
        assert isinstance(call, DelayedCall)  # a Clock's
        if call.active():
            func, args, kw = call.func, call.args, call.kw
            call.cancel()
            func(*args, **kw)


def test_a_message_with_many_events_is_delivered_a_slice_per_turn_and_what_follows_waits():
    clock, registry, router = make_router()
    paused = []
    router.paused = paused.append
    many = [{"n": n} for n in range(SLICE * 3 + 5)]
    router(msg("monitor.user", {"id": "big", "messages": many}))
    router(msg("monitor.user", {"id": "big", "messages": [{"n": "after"}]}))
    router(msg("service.create", {"id": "other"}))
    assert registry.get("big").last_id == SLICE and "other" not in registry
    assert paused == [True]
    for turn in range(2, 5):
        one_turn(clock)
        assert registry.get("big").last_id == min(SLICE * turn, len(many) + 1)
    one_turn(clock)
    assert registry.get("big").last_id == len(many) + 1 and "other" in registry
    assert json.loads(registry.get("big").frames_after(len(many)).data.split(b"data: ")[1]) == {"n": "after"}
    assert paused[-1] is False
