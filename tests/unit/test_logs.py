"""JSON log records: one object per line, the rendered message and the event's own fields."""

import io
import json

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure

from monit.logs import JSONLines


def logged(emit) -> list[dict]:
    out = io.StringIO()
    publisher = LogPublisher(JSONLines(out))
    emit(Logger(namespace="monit.test", observer=publisher))
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_record_has_time_level_system_message_and_fields():
    [record] = logged(lambda log: log.warn("skipped {count} on {subject}", count=3, subject="monitor.user"))
    assert record["message"] == "skipped 3 on monitor.user" and record["level"] == "warn"
    assert record["system"] == "monit.test" and record["time"].endswith("+00:00")
    assert record["count"] == 3 and record["subject"] == "monitor.user"
    assert not [key for key in record if key.startswith("log_")]


def test_values_that_are_not_json_are_their_text_and_a_failure_its_traceback():
    def emit(log: Logger) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            log.failure("it broke for {thing}", Failure(), thing=object(), level=LogLevel.error)

    [record] = logged(emit)
    assert record["thing"].startswith("<object object") and "ValueError: boom" in record["traceback"]
    assert record["level"] == "error"
