"""A reader of SSE streams written from the spec's parsing rules, for the tests."""

from __future__ import annotations

import attrs


@attrs.frozen
class Event:
    data: str
    event: str = "message"
    id: str | None = None


@attrs.define
class SSEParser:
    """Feed bytes as they come; complete events collect in ``events``."""

    events: list[Event] = attrs.Factory(list)
    comments: list[str] = attrs.Factory(list)
    retry: int | None = None
    _buffer: bytes = b""
    _data: list[str] = attrs.Factory(list)
    _event: str = ""
    _last_id: str | None = None

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        for line in lines:
            self._line(line.decode("utf-8"))

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
        elif line.startswith(":"):
            self.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            self._field(name, value[1:] if value.startswith(" ") else value)

    def _field(self, name: str, value: str) -> None:
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)

    def _dispatch(self) -> None:
        if self._data:
            self.events.append(Event("\n".join(self._data), self._event or "message", self._last_id))
        self._data, self._event = [], ""
