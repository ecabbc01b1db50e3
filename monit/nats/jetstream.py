"""JetStream over monit's own NATS client: the stream's API, and an ordered consumer.

The API is request/reply on ``$JS.API.*`` with JSON bodies; an error is a
JSON ``error`` object, surfaced as a JetStreamError with its codes. The
ordered consumer (NATS ADR-17) is an ephemeral push consumer without acks:
messages come in stream order, flow control is answered, idle heartbeats are
watched, and a sequence gap, a missed heartbeat or a reconnection start a new
consumer from the last stream sequence seen plus one.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from monit.nats.protocol import Msg, NoResponders

STREAM_NOT_FOUND = 10059
STREAM_NAME_IN_USE = 10058
NANOSECONDS = 1_000_000_000


class JetStreamError(Exception):
    """The JetStream API answered with an error."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (JetStream error {err_code}, {code})")
        self.code = code
        self.err_code = err_code
        self.description = description


class _Client(Protocol):
    """What JetStream uses of NATSClient."""

    def request(self, subject: str, payload: bytes = b"", timeout: float | None = None) -> Deferred[Msg]: ...

    def subscribe(self, subject: str, callback: Callable[[Msg], None]) -> Any: ...

    def publish(self, subject: str, payload: bytes, reply: str | None = None) -> None: ...

    reconnects: int


class JetStreamAPI:
    """``$JS.API.*`` requests, answered as dicts or failed with JetStreamError."""

    def __init__(self, nats: _Client, timeout: float) -> None:
        self._nats = nats
        self._timeout = timeout

    def call(self, api: str, body: Mapping[str, Any] | None = None) -> Deferred[dict[str, Any]]:
        payload = json.dumps(body).encode() if body is not None else b""
        asked = self._nats.request(f"$JS.API.{api}", payload, timeout=self._timeout)
        return asked.addCallbacks(_answer, _no_jetstream)

    def stream_info(self, name: str) -> Deferred[dict[str, Any] | None]:
        """The stream's config and state, or None if there is no such stream."""
        return self.call(f"STREAM.INFO.{name}").addErrback(_none_if, STREAM_NOT_FOUND)

    def create_stream(self, config: Mapping[str, Any]) -> Deferred[dict[str, Any]]:
        return self.call(f"STREAM.CREATE.{config['name']}", config)

    def create_consumer(self, stream: str, config: Mapping[str, Any]) -> Deferred[dict[str, Any]]:
        return self.call(f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config})

    def delete_consumer(self, stream: str, name: str) -> Deferred[dict[str, Any]]:
        return self.call(f"CONSUMER.DELETE.{stream}.{name}")


def _answer(msg: Msg) -> dict[str, Any]:
    answer = json.loads(msg.payload)
    if not isinstance(answer, dict):
        raise ValueError("a JetStream answer that is not a JSON object")
    error = answer.get("error")
    if isinstance(error, dict):
        raise JetStreamError(int(error.get("code", 0)), int(error.get("err_code", 0)), str(error.get("description")))
    return answer


def _no_jetstream(failure: Failure) -> Failure:
    if failure.check(NoResponders):
        return Failure(JetStreamError(503, 0, "JetStream is not enabled on this NATS server (nobody answers $JS.API)"))
    return failure


def _none_if(failure: Failure, err_code: int) -> None:
    failure.trap(JetStreamError)
    if failure.value.err_code != err_code:  # type: ignore[union-attr]
        failure.raiseException()
    return None


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a NATS subject pattern (with ``*`` and ``>``) takes in a subject."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(wanted) == len(tokens)


def missing_subjects(patterns: Iterable[str], subjects: Iterable[str]) -> list[str]:
    """The subjects that no pattern takes in."""
    patterns = list(patterns)
    return [subject for subject in subjects if not any(subject_matches(p, subject) for p in patterns)]


class StreamMismatch(Exception):
    """The operator's stream does not capture what monit listens to."""


async def ensure_stream(
    api: JetStreamAPI, name: str, subjects: Sequence[str], replicas: int, max_age: float
) -> dict[str, Any]:
    """The stream's info: the one an operator made (checked, never changed), else one monit makes.

    Instances that start together may both try to make it; the one that finds
    it already made binds to it.
    """
    info = await api.stream_info(name)
    if info is None:
        config = {
            "name": name,
            "subjects": list(subjects),
            "retention": "limits",
            "storage": "file",
            "num_replicas": replicas,
            "max_age": int(max_age * NANOSECONDS),
            "discard": "old",
            "no_ack": True,  # never answer the engine's requests before its responder does
        }
        try:
            info = await api.create_stream(config)
        except JetStreamError as error:
            if error.err_code != STREAM_NAME_IN_USE:
                raise
            info = await api.stream_info(name)
            if info is None:
                raise
    missing = missing_subjects(info["config"].get("subjects", []), subjects)
    if missing:
        raise StreamMismatch(f"the JetStream stream {name} does not capture {', '.join(missing)}")
    return info


class Position(NamedTuple):
    """Where a message stands in the stream, from its delivery: its sequence and time."""

    seq: int
    at: float  # seconds since the epoch, when the stream stored it


def position_of(reply: str) -> tuple[Position, int]:
    """The stream position and consumer sequence in a ``$JS.ACK`` reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``,
    or with a domain and account hash after ``ACK`` (12 tokens or more).
    """
    tokens = reply.split(".")
    first = 2 if len(tokens) == 9 else 4
    stream_seq, consumer_seq, nanos = tokens[first + 3], tokens[first + 4], tokens[first + 5]
    return Position(int(stream_seq), int(nanos) / NANOSECONDS), int(consumer_seq)


class OrderedConsumer:
    """Every message of a stream, once and in order, from a sequence on; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        nats: _Client,
        api: JetStreamAPI,
        stream: str,
        received: Callable[[Msg, Position], None],
        clock: IReactorTime,
        heartbeat: float = 5.0,
    ) -> None:
        self._nats = nats
        self._api = api
        self._stream = stream
        self._received = received
        self._clock = clock
        self._heartbeat = heartbeat
        self.last_seq = 0  # the last stream sequence handed on
        self._consumer_seq = 0
        self._name: str | None = None
        self._subscription: Any = None
        self._heard = 0.0
        self._reconnects = nats.reconnects
        self._watch = LoopingCall(self._check)
        self._watch.clock = clock
        self.restarts = 0

    def start(self, after: int = 0) -> None:
        """Deliver from the message after stream sequence ``after`` (0: from the first)."""
        self.last_seq = after
        self._renew("starting")
        self._watch.start(self._heartbeat, now=False)

    def stop(self) -> None:
        if self._watch.running:
            self._watch.stop()
        self._drop_consumer()

    def _renew(self, why: str) -> None:
        """A new consumer, on a new subject, from the last sequence seen plus one."""
        self._drop_consumer()
        subject = f"_INBOX.monit.{secrets.token_hex(8)}"
        self._subscription = self._nats.subscribe(subject, self._on_message)
        self._consumer_seq = 0
        self._heard = self._clock.seconds()
        config: dict[str, Any] = {
            "deliver_subject": subject,
            "ack_policy": "none",
            "max_deliver": 1,
            "flow_control": True,
            "idle_heartbeat": int(self._heartbeat * NANOSECONDS),
            "mem_storage": True,
            "num_replicas": 1,
            "inactive_threshold": int(max(60.0, self._heartbeat * 12) * NANOSECONDS),
        }
        if self.last_seq:
            config.update(deliver_policy="by_start_sequence", opt_start_seq=self.last_seq + 1)
        else:
            config["deliver_policy"] = "all"
        self.log.info(
            "following JetStream stream {stream} from sequence {seq} ({why})",
            stream=self._stream, seq=self.last_seq + 1, why=why,
        )
        created = self._api.create_consumer(self._stream, config)
        created.addCallbacks(self._created, self._not_created, callbackArgs=(subject,))

    def _created(self, answer: dict[str, Any], subject: str) -> None:
        if self._subscription is not None and self._subscription.subject == subject:
            self._name = str(answer.get("name"))

    def _not_created(self, failure: Failure) -> None:
        """Logged; the watchdog tries again when no heartbeat comes."""
        self.log.warn(
            "could not make a JetStream consumer on {stream}: {why}",
            stream=self._stream, why=failure.getErrorMessage(),
        )

    def _drop_consumer(self) -> None:
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None
        if self._name is not None:
            name, self._name = self._name, None
            self._api.delete_consumer(self._stream, name).addErrback(lambda _: None)

    def _on_message(self, msg: Msg) -> None:
        self._heard = self._clock.seconds()
        if msg.status == 100:
            self._control(msg)
            return
        if msg.reply is None or not msg.reply.startswith("$JS.ACK."):
            return
        position, consumer_seq = position_of(msg.reply)
        if consumer_seq != self._consumer_seq + 1:
            self._renew(f"consumer sequence {consumer_seq} after {self._consumer_seq}")
            return
        self._consumer_seq = consumer_seq
        if position.seq <= self.last_seq:
            return  # already handed on
        self.last_seq = position.seq
        self._received(msg, position)

    def _control(self, msg: Msg) -> None:
        """Flow control asks for an answer; a heartbeat says where the consumer is."""
        headers = msg.headers or {}
        if msg.reply and (msg.description or "").startswith("FlowControl"):
            self._nats.publish(msg.reply, b"")
        stalled = headers.get("Nats-Consumer-Stalled")
        if stalled:
            self._nats.publish(stalled, b"")
        last = headers.get("Nats-Last-Consumer")
        if last is not None and last.isdigit() and int(last) != self._consumer_seq:
            self._renew(f"the heartbeat says consumer sequence {last}, not {self._consumer_seq}")

    def _check(self) -> None:
        """Start again after a reconnection, or when the heartbeats have stopped."""
        if self._nats.reconnects != self._reconnects:
            self._reconnects = self._nats.reconnects
            self._renew("NATS reconnected")
        elif self._clock.seconds() - self._heard > 2 * self._heartbeat:
            self._renew(f"no heartbeat for {2 * self._heartbeat:g} s")
