"""The JetStream pieces alone: subject matching, ack subjects, and the ordered consumer's recoveries."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from monit.nats.jetstream import (
    JetStreamAPI,
    JetStreamError,
    OrderedConsumer,
    Position,
    StreamMismatch,
    ensure_stream,
    made_by_monit,
    missing_subjects,
    needs_subject_counts,
    position_of,
    subject_matches,
    why_it_cannot_store,
)
from monit.nats.protocol import NoResponders

from deferreds import result_of
from fakenats import ScriptedNATS


@pytest.mark.parametrize(
    "pattern, subject, matches",
    [
        ("service.create", "service.create", True),
        ("service.*", "service.create", True),
        ("service.*", "service.create.done", False),
        ("service.>", "service.create.done", True),
        (">", "monitor.user", True),
        ("service.>", "service", False),
        ("monitor.*", "monitor.user.x", False),
    ],
)
def test_subject_matching(pattern, subject, matches):
    assert subject_matches(pattern, subject) is matches


def test_missing_subjects():
    assert missing_subjects(["service.>", "build.*"], ["service.create.done", "build.create", "monitor.user"]) == [
        "monitor.user"
    ]


def test_positions_from_ack_subjects_old_and_new():
    assert position_of("$JS.ACK.MONIT.c1.1.42.7.1700000000500000000.3") == (Position(42, 1700000000.5), 7)
    assert position_of("$JS.ACK.dom.acc.MONIT.c1.1.42.7.1700000000500000000.3.rnd") == (Position(42, 1700000000.5), 7)


def make() -> tuple[ScriptedNATS, Clock, OrderedConsumer, list[int]]:
    nats, clock, received = ScriptedNATS(), Clock(), []
    consumer = OrderedConsumer(nats, JetStreamAPI(nats, 1.0), "S", lambda msg, at: received.append(at.seq), clock)
    consumer.start()
    return nats, clock, consumer, received


def test_messages_in_order_then_a_gap_starts_again_after_the_last_seen():
    nats, clock, consumer, received = make()
    assert nats.consumers()[0]["deliver_policy"] == "all" and nats.consumers()[0]["ack_policy"] == "none"
    for n in (1, 2, 3):
        nats.deliver(stream_seq=n + 10, consumer_seq=n)
    nats.deliver(stream_seq=15, consumer_seq=5)  # consumer sequence 4 never came
    assert received == [11, 12, 13]
    again = nats.consumers()[-1]
    assert (again["deliver_policy"], again["opt_start_seq"]) == ("by_start_sequence", 14)
    nats.deliver(stream_seq=14, consumer_seq=1)
    assert received == [11, 12, 13, 14]
    consumer.stop()


def test_flow_control_is_answered_and_a_stall_unblocked():
    nats, clock, consumer, received = make()
    nats.control("FlowControl Request", reply="$JS.FC.S.x.1")
    nats.control("Idle Heartbeat", **{"Nats-Consumer-Stalled": "$JS.FC.S.x.2", "Nats-Last-Consumer": "0"})
    assert nats.published == [("$JS.FC.S.x.1", b""), ("$JS.FC.S.x.2", b"")]
    assert len(nats.consumers()) == 1
    consumer.stop()


def test_a_heartbeat_that_says_something_was_missed_starts_again():
    nats, clock, consumer, received = make()
    nats.deliver(stream_seq=1, consumer_seq=1)
    nats.control("Idle Heartbeat", **{"Nats-Last-Consumer": "3", "Nats-Last-Stream": "3"})
    assert nats.consumers()[-1]["opt_start_seq"] == 2
    consumer.stop()


def test_silence_or_a_reconnection_starts_again_after_the_last_seen():
    nats, clock, consumer, received = make()
    nats.deliver(stream_seq=7, consumer_seq=1)
    clock.advance(5)
    assert len(nats.consumers()) == 1, "one beat of silence is fine"
    clock.advance(6)
    assert len(nats.consumers()) == 2 and nats.consumers()[-1]["opt_start_seq"] == 8
    nats.reconnects += 1
    clock.advance(5)
    assert len(nats.consumers()) == 3
    assert len(nats.subscriptions) == 1, "the old subjects were let go"
    consumer.stop()


def test_a_missing_stream_is_made_and_a_mismatched_one_refused():
    nats = ScriptedNATS(
        answers={
            "STREAM.INFO": [{"error": {"code": 404, "err_code": 10059, "description": "stream not found"}}],
            "STREAM.CREATE": [{"config": {"subjects": ["a", "b"]}, "state": {}}],
        }
    )
    info = result_of(Deferred.fromCoroutine(ensure_stream(JetStreamAPI(nats, 1.0), "S", ["a", "b"], 3, 60.0)))
    assert info["config"]["subjects"] == ["a", "b"]
    created = nats.requests[-1][1]
    assert created["no_ack"] is True and created["num_replicas"] == 3 and created["max_age"] == 60 * 10**9
    assert made_by_monit({"config": created}), "marked as monit's, for when it is gone"
    assert not made_by_monit({"config": {"metadata": {"_nats.ver": "2.15.1"}}}) and not made_by_monit({})
    nats = ScriptedNATS(answers={"STREAM.INFO": [{"config": {"subjects": ["a"]}, "state": {}}]})
    with pytest.raises(StreamMismatch, match="does not capture b"):
        result_of(Deferred.fromCoroutine(ensure_stream(JetStreamAPI(nats, 1.0), "S", ["a", "b"], 1, 60.0)))


def test_no_jetstream_on_the_server_says_so():
    nats = ScriptedNATS(answers={"STREAM.INFO": [NoResponders("no responders")]})
    with pytest.raises(JetStreamError, match="JetStream is not enabled"):
        result_of(JetStreamAPI(nats, 1.0).stream_info("S"))


def test_a_missing_stream_is_left_missing_when_monit_may_not_make_it():
    nats = ScriptedNATS(
        answers={
            "STREAM.INFO": [{"error": {"code": 404, "err_code": 10059, "description": "stream not found"}}],
        }
    )
    assert (
        result_of(Deferred.fromCoroutine(ensure_stream(JetStreamAPI(nats, 1.0), "S", ["a"], 1, 60.0, make=False)))
        is None
    )
    assert [subject for subject, _ in nats.requests] == ["$JS.API.STREAM.INFO.S"]


def stream(state: dict, **config) -> dict:
    return {"config": {"discard": "old", "max_msgs": -1, "max_bytes": -1, **config}, "state": state}


@pytest.mark.parametrize(
    "info, why",
    [
        (stream({"messages": 10, "bytes": 1000}, max_msgs=10), None),  # discard old: the oldest go
        (stream({"messages": 10, "bytes": 1000}, discard="new", max_msgs=10), "its max_msgs"),
        (stream({"messages": 9, "bytes": 900}, discard="new", max_msgs=10), None),
        (stream({"messages": 10, "bytes": 1000}, discard="new", max_bytes=1050), "max_bytes 1050"),
        (stream({"messages": 10, "bytes": 1000}, discard="new", max_bytes=1100), None),
        (stream({"messages": 0, "bytes": 0}, discard="new", max_bytes=1000), None),
        (stream({"messages": 1, "bytes": 10}, sealed=True), "sealed"),
        (
            stream({"subjects": {"a": 3, "b": 1}}, discard="new", max_msgs_per_subject=3, discard_new_per_subject=True),
            "a holds 3 messages",
        ),
        (stream({"subjects": {"a": 2}}, discard="new", max_msgs_per_subject=3, discard_new_per_subject=True), None),
        (stream({"subjects": {"a": 3}}, discard="new", max_msgs_per_subject=3), None),  # the oldest of a go
    ],
)
def test_a_stream_that_cannot_store_says_why(info, why):
    found = why_it_cannot_store(info)
    assert (found is None) if why is None else (why in found)


def test_counts_per_subject_are_asked_for_only_when_they_matter():
    assert needs_subject_counts(stream({}, discard="new", max_msgs_per_subject=3, discard_new_per_subject=True))
    assert not needs_subject_counts(stream({}, discard="new", max_msgs_per_subject=3))
    assert not needs_subject_counts(stream({}, max_msgs_per_subject=3, discard_new_per_subject=True))


def test_a_consumer_that_cannot_be_made_or_starts_again_says_so():
    troubles = []
    nats = ScriptedNATS(
        answers={
            "CONSUMER.CREATE": [{}, {"error": {"code": 404, "err_code": 10059, "description": "stream not found"}}]
        }
    )
    clock = Clock()
    consumer = OrderedConsumer(
        nats,
        JetStreamAPI(nats, 1.0),
        "S",
        lambda msg, at: None,
        clock,
        trouble=lambda: troubles.append(len(nats.consumers())),
    )
    consumer.start()
    assert troubles == [], "starting is no trouble"
    clock.advance(11)  # no heartbeat: started again, and the stream is not found
    assert troubles == [2, 2]
    consumer.stop()
