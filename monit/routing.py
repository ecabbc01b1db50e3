"""From NATS subjects to inbox actions, with the seed service's rules."""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from monit.inbox import InboxLimit, valid_inbox_id
from monit.nats.jetstream import Position
from monit.nats.protocol import Msg
from monit.registry import InboxRegistry
from monit.sse import compact_json
from monit.strictjson import json_object
from monit.tally import Tally

CLOSE_SUFFIXES = (".done", ".error")
ID_SHIFT = 20  # room for 1,048,576 events per JetStream message in an id
SLICE = 1000  # events delivered per reactor turn from one message; the rest wait their turn


class Action(enum.StrEnum):
    OPEN = "open"
    CLOSE = "close"
    DELIVER = "deliver"


def subject_table(open_subjects: Iterable[str], deliver_subjects: Iterable[str]) -> dict[str, Action]:
    """Each open subject opens; it followed by ``.done``/``.error`` closes."""
    table: dict[str, Action] = {}
    for subject in open_subjects:
        table[subject] = Action.OPEN
        for suffix in CLOSE_SUFFIXES:
            table[subject + suffix] = Action.CLOSE
    for subject in deliver_subjects:
        table[subject] = Action.DELIVER
    return table


class Malformed(ValueError):
    """A message monit cannot use; the reason goes to the log and the counters."""


def inbox_id_of(payload: Mapping[str, Any]) -> str:
    """The ``service`` field's last ``-`` segment, else the ``id`` field."""
    service = payload.get("service")
    if isinstance(service, str) and service:
        candidate = service.rsplit("-", 1)[-1]
    else:
        raw = payload.get("id")
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise Malformed("no usable 'service' or 'id' field")
        candidate = str(raw)
    if not valid_inbox_id(candidate):
        raise Malformed("inbox id is empty, too long or has odd characters")
    return candidate


def _not_an_object(what: str) -> Malformed:
    """What the payload is instead, raised once: bad messages can come in floods."""
    return Malformed(f"payload is {what}")


@attrs.frozen
class _Rest:
    """The elements of one message still to deliver, after a turn's share of them."""

    subject: str
    inbox_id: str
    messages: list[Any]
    start: int
    position: Position | None


@attrs.frozen
class _Waiting:
    """A message that waits behind one still being delivered."""

    msg: Msg
    position: Position | None

    @property
    def subject(self) -> str:
        return self.msg.subject


def event_id(position: Position | None, index: int) -> int | None:
    """A JetStream message's events' ids: its stream sequence, then its place in the message.

    Every instance, and every restart, gives an event the same id. Core mode
    (no position) leaves the ids to the inbox.
    """
    if position is None:
        return None
    return (position.seq << ID_SHIFT) + index


class Router(Service):
    """Turns each NATS message into inbox events; bad input is logged, counted, skipped.

    The first bad message of a subject is logged with its reason, then how
    many more came every ten seconds, so the log cannot become the bottleneck.

    A message with many events is delivered ``SLICE`` events per reactor
    turn, so it cannot hold the reactor (and every reader) for seconds. The
    messages after it wait their turn, in order, and ``paused`` tells the
    NATS client to stop reading until the backlog is gone: NATS holds the
    rest, and a publisher that outruns monit meets NATS's slow-consumer limit
    rather than monit's memory.
    """

    log = Logger()

    def __init__(
        self,
        registry: InboxRegistry,
        *,
        open_subjects: tuple[str, ...],
        deliver_subjects: tuple[str, ...],
        max_payload: int,
        paused: Callable[[bool], None] = lambda paused: None,
    ) -> None:
        """``paused(True)`` asks NATS to stop reading while a backlog waits; ``paused(False)``, to go on."""
        self._registry = registry
        self._clock = registry.clock
        self.skipped = Tally(registry.clock, self.log, "skipped bad messages")
        self._table = subject_table(open_subjects, deliver_subjects)
        self._max_payload = max_payload
        self._backlog: deque[_Waiting | _Rest] = deque()
        self._draining: IDelayedCall | None = None
        self.paused = paused
        self.received: Counter[Action] = Counter()
        self.malformed = 0
        self.refused = 0

    @property
    def subjects(self) -> list[str]:
        return list(self._table)

    def __call__(self, msg: Msg, position: Position | None = None) -> None:
        """Route a message; ``position``: where a JetStream message stands in its stream."""
        if self._backlog:
            self._backlog.append(_Waiting(msg, position))  # behind a message still being delivered
        else:
            self._handle_message(msg, position)

    @property
    def idle(self) -> bool:
        """Nothing waits to be delivered."""
        return not self._backlog

    def _handle(self, item: _Waiting | _Rest) -> int:
        """Route a message that waited, or deliver more of one; how many events that took."""
        if isinstance(item, _Waiting):
            return self._handle_message(item.msg, item.position)
        try:
            return self._deliver(item.subject, item.inbox_id, item.messages, item.start, item.position)
        except InboxLimit:
            return self._refuse(item.subject)

    def _handle_message(self, msg: Msg, position: Position | None) -> int:
        """Route a message; how many events that took."""
        action = self._table.get(msg.subject)
        if action is None:
            return 0
        self.received[action] += 1
        try:
            return self._route(action, msg, position)
        except Malformed as reason:
            self._skip(msg.subject, str(reason))
        except InboxLimit:
            self._refuse(msg.subject)
        return 1

    def _refuse(self, subject: str) -> int:
        self.refused += 1
        self.log.warn("skipped message on {subject}: inbox limit reached", subject=subject)
        return 1

    def _route(self, action: Action, msg: Msg, position: Position | None) -> int:
        payload = msg.payload
        if len(payload) > self._max_payload:
            raise Malformed(f"payload of {len(payload)} bytes is over the {self._max_payload} byte limit")
        # A JSON object a browser's JSON.parse would read back; read here, not in a helper: the ingest path.
        document = json_object(payload, _not_an_object)
        inbox_id = inbox_id_of(document)
        if action is Action.DELIVER:
            messages = document.get("messages")
            if not isinstance(messages, list):
                raise Malformed("'messages' is not a list")
            return self._deliver(msg.subject, inbox_id, messages, 0, position)
        at = None if position is None else position.at
        if action is Action.OPEN:
            self._registry.open(inbox_id, compact_json(document), msg.subject, event_id(position, 0), at)
        else:
            self._registry.close(inbox_id, compact_json(document), msg.subject, event_id(position, 0), at)
        return 1

    def _deliver(self, subject: str, inbox_id: str, messages: list[Any], start: int, position: Position | None) -> int:
        """Each element of ``messages`` is one event; a bad element is skipped alone.

        At most SLICE of them now; the rest wait for the next turn, first in line.
        """
        end = len(messages) if position is None else min(len(messages), 1 << ID_SHIFT)
        stop = min(end, start + SLICE)
        at = None if position is None else position.at
        for index in range(start, stop):
            message = messages[index]
            if isinstance(message, dict):
                self._registry.publish(inbox_id, compact_json(message), None, event_id(position, index), at)
            else:
                self._skip(subject, "an element of 'messages' is not an object")
        if stop < end:
            self._backlog.appendleft(_Rest(subject, inbox_id, messages, stop, position))
            self._drain_soon()
        elif stop < len(messages):
            self._skip(subject, f"events after the first {end} of one message have no id")
        return stop - start

    def stopService(self) -> None:
        """Shutdown: what waits in the backlog is dropped (NATS or the stream has it); the tally says its last."""
        super().stopService()
        if self._draining is not None and self._draining.active():
            self._draining.cancel()
        self._draining = None
        self._backlog.clear()
        self.skipped.stop()

    def _drain_soon(self) -> None:
        if self._draining is None:
            self.paused(True)
            self._draining = self._clock.callLater(0, self._drain)

    def _drain(self) -> None:
        """One turn's share of the backlog, in order."""
        self._draining = None
        budget = SLICE
        while self._backlog and budget > 0:
            budget -= self._handle(self._backlog.popleft())
        if self._backlog:
            self._drain_soon()
        else:
            self.paused(False)

    def _skip(self, subject: str, reason: str) -> None:
        self.malformed += 1
        self.skipped.add(subject, reason)
