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
NO_MESSAGE_FOUND = 10037
NANOSECONDS = 1_000_000_000
# How monit marks the streams it makes, in their config: the mark outlives every monit process.
MADE_BY = "made-by"
MONIT = "monit"


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

    def stream_info(self, name: str, subjects: bool = False) -> Deferred[dict[str, Any] | None]:
        """The stream's config and state, or None if there is no such stream.

        ``subjects``: with each subject's count of messages in ``state.subjects``.
        """
        body = {"subjects_filter": ">"} if subjects else None
        return self.call(f"STREAM.INFO.{name}", body).addErrback(_none_if, STREAM_NOT_FOUND)

    def last_message(self, stream: str, subject: str) -> Deferred[dict[str, Any] | None]:
        """The stream's last message on a subject (``data`` in base64), or None if it has none."""
        got = self.call(f"STREAM.MSG.GET.{stream}", {"last_by_subj": subject})
        return got.addCallback(lambda answer: answer.get("message")).addErrback(_none_if, NO_MESSAGE_FOUND)

    def store(self, subject: str, payload: bytes) -> Deferred[dict[str, Any]]:
        """Publish to a stream's subject and wait for the stream's acknowledgement."""
        asked = self._nats.request(subject, payload, timeout=self._timeout)
        return asked.addCallbacks(_answer, _no_jetstream)

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


def made_by_monit(info: Mapping[str, Any]) -> bool:
    """Whether monit made this stream (its config carries monit's mark)."""
    metadata = info.get("config", {}).get("metadata") or {}
    return bool(metadata.get(MADE_BY) == MONIT)


def check_subjects(info: Mapping[str, Any], subjects: Sequence[str]) -> None:
    """Raise StreamMismatch unless the stream captures every subject."""
    config = info.get("config", {})
    missing = missing_subjects(config.get("subjects", []), subjects)
    if missing:
        raise StreamMismatch(f"the JetStream stream {config.get('name')} does not capture {', '.join(missing)}")


async def ensure_stream(
    api: JetStreamAPI, name: str, subjects: Sequence[str], replicas: int, max_age: float, make: bool = True
) -> dict[str, Any] | None:
    """The stream's info: the one an operator made (checked, never changed), else one monit makes.

    ``make``: whether to make it if missing (else None). The stream monit
    makes carries monit's mark in its metadata. Instances that start
    together may both try to make it; the one that finds it already made
    binds to it.
    """
    info = await api.stream_info(name)
    if info is None:
        if not make:
            return None
        config = {
            "name": name,
            "description": "job events for monit, made by monit (made again by monit if it goes)",
            "subjects": list(subjects),
            "retention": "limits",
            "storage": "file",
            "num_replicas": replicas,
            "max_age": int(max_age * NANOSECONDS),
            "discard": "old",
            "no_ack": True,  # never answer the engine's requests before its responder does
            "metadata": {MADE_BY: MONIT},
        }
        try:
            info = await api.create_stream(config)
        except JetStreamError as error:
            if error.err_code != STREAM_NAME_IN_USE:
                raise
            info = await api.stream_info(name)
            if info is None:
                raise
    check_subjects(info, subjects)
    return info


def why_it_cannot_store(info: Mapping[str, Any]) -> str | None:
    """Why the stream refuses new messages (the engine's events would be lost), or None.

    Sealed, or ``discard: new`` with a limit reached: ``max_msgs``,
    ``max_bytes`` (less room left than its average message), or, with
    ``discard_new_per_subject``, ``max_msgs_per_subject`` on some subject
    (the counts come with ``stream_info(..., subjects=True)``).
    """
    config, state = info.get("config", {}), info.get("state", {})
    if config.get("sealed"):
        return "it is sealed: it takes no new messages"
    if config.get("discard") != "new":
        return None
    messages, size = int(state.get("messages", 0)), int(state.get("bytes", 0))
    max_msgs, max_bytes = int(config.get("max_msgs", -1)), int(config.get("max_bytes", -1))
    if max_msgs > 0 and messages >= max_msgs:
        return f"it holds {messages} messages, its max_msgs, and refuses new ones (discard: new)"
    average = size // messages if messages else 1
    if max_bytes > 0 and size + max(average, 1) > max_bytes:
        return f"it holds {size} bytes of its max_bytes {max_bytes}, and refuses new messages (discard: new)"
    per_subject = int(config.get("max_msgs_per_subject", -1))
    if config.get("discard_new_per_subject") and per_subject > 0:
        full = sorted(subject for subject, count in (state.get("subjects") or {}).items() if count >= per_subject)
        if full:
            return (
                f"{', '.join(full)} holds {per_subject} messages, its max_msgs_per_subject, "
                "and refuses new ones (discard: new)"
            )
    return None


def needs_subject_counts(info: Mapping[str, Any]) -> bool:
    """Whether ``why_it_cannot_store`` needs the stream's counts per subject."""
    config = info.get("config", {})
    return bool(
        config.get("discard") == "new"
        and config.get("discard_new_per_subject")
        and int(config.get("max_msgs_per_subject", -1)) > 0
    )


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
        trouble: Callable[[], None] = lambda: None,
    ) -> None:
        """``trouble``: called when the consumer starts again after a fault, or cannot be made
        (its owner may want to look at the stream: gone, or made anew)."""
        self._nats = nats
        self._api = api
        self._stream = stream
        self._received = received
        self._clock = clock
        self._heartbeat = heartbeat
        self._trouble = trouble
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

    @property
    def running(self) -> bool:
        return self._watch.running

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
            stream=self._stream,
            seq=self.last_seq + 1,
            why=why,
        )
        created = self._api.create_consumer(self._stream, config)
        created.addCallbacks(self._created, self._not_created, callbackArgs=(subject,))
        if why != "starting":
            self._trouble()

    def _created(self, answer: dict[str, Any], subject: str) -> None:
        if self._subscription is not None and self._subscription.subject == subject:
            self._name = str(answer.get("name"))

    def _not_created(self, failure: Failure) -> None:
        """Logged; the watchdog tries again when no heartbeat comes."""
        self.log.warn(
            "could not make a JetStream consumer on {stream}: {why}",
            stream=self._stream,
            why=failure.getErrorMessage(),
        )
        self._trouble()

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
