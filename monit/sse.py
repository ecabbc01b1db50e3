"""Server-Sent Events framing: every event is encoded once, when it arrives."""

from __future__ import annotations

import json
import re
from base64 import b64encode
from collections.abc import Callable, Iterator
from typing import Any

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

KEEPALIVE = b": keep-alive\n\n"


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _made_once() -> Callable[[Any], str]:
    """``_COMPACT.encode``, without the C encoder it sets up on every call (a third of its time).

    ``json.encoder.c_make_encoder`` is the json package's own and not public:
    where it is missing, the encoder's ``encode``. Made without a circular
    reference check: events are decoded JSON, which has no cycles.
    Benchmark: ``benchmarks/json_micro.py``, 8 % of ingest CPU per typical
    message, byte-identical.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _COMPACT.encode
    encode = make(None, _COMPACT.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda value: "".join(encode(value, 0))


compact_json: Callable[[Any], str] = _made_once()
"""The JSON text an event carries: compact, UTF-8, no ASCII escaping."""


def encode_event(event_id: int | None, data: str, event: str | None = None, base64: bool = False) -> bytes:
    """One SSE frame: ``id``, optional ``event``, one ``data:`` line per payload line.

    A payload line break of any kind (CRLF, CR, LF) starts a new ``data:``
    line, as the SSE parsing rules require; a client joins them back with LF.
    With ``base64`` the payload's UTF-8 bytes go out base64-encoded, as the Go
    service's ``EncodeBase64`` did. A frame without an id leaves the client's
    last event id as it was.
    """
    if base64:
        data = b64encode(data.encode("utf-8", "replace")).decode("ascii")
    lines = [] if event_id is None else [f"id: {event_id}"]
    if event is not None:
        lines.append(f"event: {_single_line(event)}")
    if "\n" in data or "\r" in data:
        lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    else:  # compact JSON never breaks lines: the usual case, without a regex
        lines.append(f"data: {data}")
    lines.append("\n")
    return "\n".join(lines).encode("utf-8", "replace")


def encode_gap(first_missing: int | None, last_missing: int | None) -> bytes:
    """Tells a reader that events it asked for have fallen out of the inbox's history.

    None for both: the reader's last id is not from this history at all (the
    JetStream stream was made anew), so what it missed cannot be named.
    """
    return encode_event(None, compact_json({"from": first_missing, "to": last_missing}), "gap")


def frame_id(frame: bytes) -> int:
    """The id of an event frame monit encoded (it starts ``id: N``)."""
    return int(frame[4 : frame.index(b"\n", 4)])


def tag_frame(frame: bytes, stream: bytes, base64: bool = False) -> bytes:
    """The frame as a many-job response sends it: its data becomes ``{"stream": …, "data": …}``.

    The id and event name stay, so EventSource handlers work as for one job
    and read the job from ``data``. ``stream`` is an inbox id, which needs no
    JSON escaping. The data is one line: monit's payloads are compact JSON
    (or base64, which an event's, not a notice's, may be: it becomes a JSON
    string).
    """
    head, _, data = frame[:-2].partition(b"data: ")
    if base64 and head.startswith(b"id: "):
        data = b'"' + data + b'"'
    return b'%sdata: {"stream":"%s","data":%s}\n\n' % (head, stream, data)


ERROR_EVENT = "monit.error"  # not "error": EventSource fires its own "error" on every reconnect


def encode_error(message: str) -> bytes:
    """A ``monit.error`` event: why the server is ending (or refusing) this stream."""
    return encode_event(None, compact_json({"error": message}), ERROR_EVENT)


def encode_retry(milliseconds: int) -> bytes:
    """The ``retry:`` field that tells a client how long to wait before reconnecting."""
    return f"retry: {int(milliseconds)}\n\n".encode("ascii")


def _single_line(field: str) -> str:
    """A field value other than data cannot span lines; fold any break into a space."""
    return _LINE_BREAK.sub(" ", field)


def decode_frames(data: bytes) -> Iterator[tuple[int | None, str | None, str, int]]:
    """The frames monit encoded, read back: id, event name, data text and the frame's size.

    For consumers in the same process (they read what an HTTP reader would);
    comments and ``retry:`` lines are skipped.
    """
    for frame in data.split(b"\n\n"):
        if not frame:
            continue
        event_id: int | None = None
        event: str | None = None
        lines: list[str] = []
        for line in frame.decode("utf-8", "replace").split("\n"):
            field, _, value = line.partition(": ")
            if field == "id":
                event_id = int(value)
            elif field == "event":
                event = value
            elif field == "data":
                lines.append(value)
        if lines:
            yield event_id, event, "\n".join(lines), len(frame) + 2
