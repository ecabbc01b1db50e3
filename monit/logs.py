"""Machine-readable logs: ``twistd --logger=monit.logs.json_stdout -n --pidfile= monit …``.

One JSON object per line on standard output, for ``jq`` or a log shipper:
``time`` (ISO 8601, UTC), ``level``, ``system`` (where it comes from), the
rendered ``message``, and the event's own named fields (stream, user,
reason, duration, events, subject, url, code …). A failure adds its
``traceback``. Values that are not JSON are written as their text.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, formatEvent
from zope.interface import implementer

# Keys of Twisted's own bookkeeping, and of its legacy log API, that are not an event's fields.
_NOT_FIELDS = frozenset({"message", "format", "isError", "system", "printed", "time", "why", "failure"})


@implementer(ILogObserver)
class JSONLines:
    """Writes each log event as one line of JSON."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: LogEvent) -> None:
        self._out.write(json.dumps(record_of(event), ensure_ascii=False, default=str) + "\n")
        self._out.flush()


def record_of(event: LogEvent) -> dict[str, Any]:
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(timespec="milliseconds"),
        "level": level.name if level is not None else "info",
        "system": _system(event),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if not key.startswith("log_") and key not in _NOT_FIELDS and key not in record:
            record[key] = _plain(value)
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return record


def _system(event: LogEvent) -> str:
    """Where the event comes from: its system if it names one, else its logger's namespace."""
    system = event.get("log_system")
    if system and system != "-":
        return str(system)
    return str(event.get("log_namespace") or "-")


def _plain(value: object) -> object:
    """The value as JSON has it: scalars, lists and objects as they are; anything else as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)


def json_stdout() -> ILogObserver:
    """The log observer factory twistd's --logger option takes."""
    return JSONLines(sys.stdout)
