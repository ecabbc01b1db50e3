"""From NATS subjects to inbox actions, with the seed service's rules."""
from __future__ import annotations

import enum
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from monit.inbox import InboxLimit, InboxRegistry, valid_inbox_id
from monit.nats.protocol import Msg
from monit.settings import Settings
from monit.sse import compact_json

CLOSE_SUFFIXES = (".done", ".error")
WARN_INTERVAL = 1.0  # seconds between warnings about one subject's bad messages


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


def _no_constant(name: str) -> NoReturn:
    """NaN, Infinity and -Infinity are Python's extensions, not JSON: JSON.parse refuses them."""
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A float literal; one too large for a double (1e999) would be sent on as Infinity."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


# Made once: json.loads with arguments builds a decoder per call. parse_float
# costs a call per float literal only; payloads without floats pay nothing.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def parse_payload(payload: bytes, max_payload: int) -> dict[str, Any]:
    """The payload as a JSON object that a browser's ``JSON.parse`` would read back."""
    if len(payload) > max_payload:
        raise Malformed(f"payload of {len(payload)} bytes is over the {max_payload} byte limit")
    try:
        document = _DECODER.decode(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise Malformed("payload is not UTF-8") from None
    except (ValueError, RecursionError):
        raise Malformed("payload is not JSON") from None
    if not isinstance(document, dict):
        raise Malformed("payload is not a JSON object")
    return document


class Router:
    """Turns each NATS message into inbox events; bad input is logged, counted, skipped.

    A flood of bad messages is logged at most once a second per subject, with
    how many went unlogged, so the log cannot become the bottleneck.
    """

    log = Logger()

    def __init__(self, registry: InboxRegistry, settings: Settings) -> None:
        self._registry = registry
        self._clock: IReactorTime = registry.clock
        self._warned: dict[str, tuple[float, int]] = {}
        self._table = subject_table(settings.open_subjects, settings.deliver_subjects)
        self._max_payload = settings.max_payload
        self.received: Counter[Action] = Counter()
        self.malformed = 0
        self.refused = 0

    @property
    def subjects(self) -> list[str]:
        return list(self._table)

    def __call__(self, msg: Msg) -> None:
        action = self._table.get(msg.subject)
        if action is None:
            return
        self.received[action] += 1
        try:
            self._route(action, msg)
        except Malformed as reason:
            self._skip(msg.subject, str(reason))
        except InboxLimit:
            self.refused += 1
            self.log.warn("skipped message on {subject}: inbox limit reached", subject=msg.subject)

    def _route(self, action: Action, msg: Msg) -> None:
        document = parse_payload(msg.payload, self._max_payload)
        inbox_id = inbox_id_of(document)
        if action is Action.DELIVER:
            self._deliver(msg.subject, inbox_id, document)
        elif action is Action.OPEN:
            self._registry.open(inbox_id, compact_json(document), msg.subject)
        else:
            self._registry.close(inbox_id, compact_json(document), msg.subject)

    def _deliver(self, subject: str, inbox_id: str, document: dict[str, Any]) -> None:
        """Each element of ``messages`` is one event; a bad element is skipped alone."""
        messages = document.get("messages")
        if not isinstance(messages, list):
            raise Malformed("'messages' is not a list")
        for message in messages:
            if isinstance(message, dict):
                self._registry.deliver(inbox_id, compact_json(message))
            else:
                self._skip(subject, "an element of 'messages' is not an object")

    def _skip(self, subject: str, reason: str) -> None:
        self.malformed += 1
        now = self._clock.seconds()
        last, unlogged = self._warned.get(subject, (float("-inf"), 0))
        if now - last < WARN_INTERVAL:
            self._warned[subject] = (last, unlogged + 1)
            return
        self._warned[subject] = (now, 0)
        self.log.warn(
            "skipped message on {subject}: {reason} ({unlogged} more skipped unlogged before it)",
            subject=subject,
            reason=reason,
            unlogged=unlogged,
        )
