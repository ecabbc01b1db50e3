"""The standard library's json against orjson and msgspec on monit's ingest path: time, and what differs.

    .venv/bin/python benchmarks/json_micro.py [--runs 5] [--messages 20000]

For each kind of message monit gets it times, per message, the decode as
monit/strictjson.py does it against orjson.loads and msgspec.json.decode, and
the encode of each event's data as monit/sse.py does it against orjson.dumps
and msgspec.json.encode; and, for scale, the whole ingest path of the same
message (ingest_micro.py's in-process figure: parse, validate, encode once,
store). A library's saving is its decode and encode time subtracted from the
standard library's, as a share of that whole path. The encoders' bytes would
still have to become the str that sse.encode_event takes: not counted, so the
savings are upper bounds. One more column, with no new dependency: sse's
encoder made once instead of on every call. Every figure is the best of
--runs runs.

Then it checks whether the libraries keep monit's rules: the same documents
refused and the same values read (strictjson's cases), the same bytes written
(sse's). Neither library is a dependency: a missing one is said and skipped.
"""

from __future__ import annotations

import argparse
import importlib
import json.encoder
import time
import timeit
from collections.abc import Callable
from typing import Any, NoReturn
from unittest.mock import patch

from ingest_micro import connected_protocol, reads  # benchmarks/ is not a package: run as a script

from monit import routing
from monit.sse import compact_json
from monit.strictjson import json_object

Decode = Callable[[bytes], Any]
Encode = Callable[[Any], bytes | str]


def _element(seq: int) -> str:
    """An event as run.py's generator sends it: phase, sequence, due time, padded to a 200-byte frame."""
    head = '{"p":2,"s":%d,"t":%.3f,"pad":"' % (seq, 1733420000123.456 + seq)
    return head + "x" * (200 - len("id: 1234\ndata: \n\n") - len(head) - 2) + '"}'


_TEXT = "Création du réseau « web-env-net » ✓ — 東京リージョン 🚀, étape %d/8 terminée"
KINDS = {
    "typical": ('{"id":"s0042","messages":[%s]}' % _element(12345)).encode(),
    "large": (
        '{"id":"s0042","messages":[%s]}'
        % ",".join('{"level":"INFO","n":%d,"t":%.3f,"body":"%s"}' % (n, 1733420000.5 + n, _TEXT % n) for n in range(8))
    ).encode(),
    "malformed": b'{"id":"bad","messages":[{"n":',
}

# strictjson's rules: each document is refused by monit, or read to the value the libraries must match.
DECODE_CASES = {
    "NaN": b'{"a":NaN}',
    "Infinity": b'{"a":Infinity}',
    "-Infinity": b'{"a":-Infinity}',
    "1e999": b'{"a":1e999}',
    "duplicate keys": b'{"a":1,"a":2}',
    "lone surrogate \\ud800": b'{"a":"\\ud800"}',
    "surrogate pair \\ud83d\\ude80": b'{"a":"\\ud83d\\ude80"}',
    "UTF-8 BOM": b'\xef\xbb\xbf{"a":1}',
    "trailing data": b'{"a":1} x',
    "two documents": b'{"a":1}{}',
    "not UTF-8": b'{"a":"\xff"}',
    "raw control character": b'{"a":"\x01"}',
    "integer 2**64": b'{"a":18446744073709551616}',
    "integer -2**63-1": b'{"a":-9223372036854775809}',
    "integer 10**30": b'{"a":1000000000000000000000000000000}',
    "1e-400 (underflow)": b'{"a":1e-400}',
    "-0.0": b'{"a":-0.0}',
    "leading zero": b'{"a":01}',
    "2,000 nested arrays": b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}",
}

# sse's encoding: the bytes a frame carries, which the libraries must match.
ENCODE_CASES: dict[str, Any] = {
    "typical event": json_object(KINDS["typical"], ValueError)["messages"][0],
    "unicode text": {"body": _TEXT % 1},
    "\\u2028 \\u2029 </script>": {"a": "\u2028\u2029</script><!--"},
    "control characters, \\x7f": {"a": '\x00\x01\x08\t\n\x0c\r\x1f\x7f"\\/'},
    "lone surrogate (as stdlib reads it)": {"a": "\ud800"},
    "floats 0.1 -0.0 1.5": {"a": [0.1, -0.0, 1.5, 123456789.123]},
    "floats 1e16 1e22": {"a": [1e16, 1e22]},
    "floats 1e-5 1e-7 5e-324": {"a": [1e-5, 1e-7, 5e-324]},
    "integers ±2**63": {"a": [2**63 - 1, -(2**63), 2**64 - 1]},
    "integers beyond 64 bits": {"a": [2**64, -(2**63) - 1, 10**30]},
    "key order, true, null, {}, []": {"z": True, "a": None, "m": {}, "b": []},
}


def stdlib_decode(data: bytes) -> Any:
    return json_object(data, ValueError)


def _unencodable(value: Any) -> NoReturn:
    raise TypeError(f"{type(value).__name__} is not JSON")


def encoder_made_once() -> Encode | None:
    """sse's encoding without JSONEncoder.encode's set-up on every call: json's C encoder (a private name), made once."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    iterencode = make(None, _unencodable, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda value: "".join(iterencode(value, 0))


def libraries() -> dict[str, tuple[Decode, Encode]]:
    """The standard library as monit uses it, its encoder made once, and whichever of orjson and msgspec are installed."""
    found: dict[str, tuple[Decode, Encode]] = {"stdlib": (stdlib_decode, compact_json)}
    once = encoder_made_once()
    if once is not None:
        found["stdlib encoder made once"] = (stdlib_decode, once)
    for name in ("orjson", "msgspec"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            print(f"{name}: not installed, its column is skipped (pip install {name})")
            continue
        found[name] = (module.loads, module.dumps) if name == "orjson" else (module.json.decode, module.json.encode)
    return found


def refusing(decode: Decode) -> Decode:
    """The decode as the router calls it: a refused document is None, not an exception."""

    def attempt(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception:
            return None

    return attempt


def best(function: Callable[[Any], Any], argument: Any, runs: int, number: int = 20_000) -> float:
    """Seconds per call, the best of ``runs`` timings."""
    return min(timeit.repeat("f(x)", globals={"f": function, "x": argument}, number=number, repeat=runs)) / number


def as_router(decode: Decode, encode: Encode) -> tuple[Callable[..., Any], Callable[[Any], str]]:
    """strictjson.json_object and sse.compact_json made of a library's decode and encode, for the router."""

    def json_object(data: bytes, error: Callable[[str], Exception]) -> Any:
        try:
            document = decode(data)
        except (ValueError, RecursionError):
            raise error("not JSON") from None
        if not isinstance(document, dict):
            raise error("not a JSON object")
        return document

    def compact_json(value: Any) -> str:
        text = encode(value)
        return text if isinstance(text, str) else text.decode("utf-8")

    return json_object, compact_json


def whole_path(payload: bytes, messages: int, runs: int, decode: Decode, encode: Encode) -> float:
    """CPU seconds per message through monit's NATS protocol, router and inbox (as ingest_micro.py
    measures), the router's JSON decode and encode replaced by ``decode`` and ``encode``."""
    spent = []
    json_object, compact_json = as_router(decode, encode)
    with patch.object(routing, "json_object", json_object), patch.object(routing, "compact_json", compact_json):
        for _ in range(runs):
            protocol, chunks = connected_protocol(), reads(payload, messages)
            started = time.process_time()
            for chunk in chunks:
                protocol.dataReceived(chunk)
            spent.append(time.process_time() - started)
    return min(spent) / messages


def timings(libs: dict[str, tuple[Decode, Encode]], runs: int, messages: int) -> None:
    """One table: per message, each library's decode, encode and whole ingest path, and what it saves of the latter.

    Saved twice over: the decode and encode times subtracted, and the whole path measured with them in it.
    """
    names = list(libs)
    print("\n| message | per message | " + " | ".join(names) + " |")
    print("| --- | --- |" + " --- |" * len(names))
    for kind, payload in KINDS.items():
        document = refusing(stdlib_decode)(payload)
        events = document["messages"] if document else []
        decode = {name: best(refusing(pair[0]), payload, runs) for name, pair in libs.items()}
        encode = {name: sum(best(pair[1], event, runs) for event in events) for name, pair in libs.items()}
        whole = {name: whole_path(payload, messages, runs, *pair) for name, pair in libs.items()}
        rows = {"decode": decode, "encode, every event": encode, "whole ingest path": whole}
        first = f"| {kind} ({len(payload)} B, {len(events)} event{'' if len(events) == 1 else 's'}) |"
        for step, figures in rows.items():
            if figures is encode and not events:
                continue
            cells = " | ".join(f"{figures[n] * 1e6:.2f} µs" for n in names)
            print(f"{first} {step} | {cells} |")
            first = "| |"
        subtracted = [
            (decode["stdlib"] + encode["stdlib"] - decode[n] - encode[n]) / whole["stdlib"] for n in names[1:]
        ]
        measured = [1 - whole[n] / whole["stdlib"] for n in names[1:]]
        print("| | saved: decode and encode subtracted | |" + "".join(f" {share:.0%} |" for share in subtracted))
        print("| | saved: whole path measured | |" + "".join(f" {share:.0%} |" for share in measured))


def outcome(function: Callable[[Any], Any], argument: Any) -> tuple[str, Any]:
    """What a decode reads or an encode writes; text as a frame carries it (encode_event makes UTF-8, replacing)."""
    try:
        result = function(argument)
    except Exception as error:
        return "refused", f"{type(error).__name__}: {error}"[:60]
    return "ok", result.encode("utf-8", "replace") if isinstance(result, str) else result


def verdict(reference: tuple[str, Any], got: tuple[str, Any], verb: str) -> str:
    """``same``, or how a library differs from the standard library (repr tells 0 from 0.0 and -0.0)."""
    if reference[0] == got[0] and (got[0] == "refused" or repr(reference[1]) == repr(got[1])):
        return "same"
    if got[0] == "refused":
        return f"**refuses** ({got[1]})"
    return f"**{verb if reference[0] == 'ok' else 'accepts'}** `{repr(got[1])[:50]}`"


def rules(libs: dict[str, tuple[Decode, Encode]]) -> None:
    """Two tables: documents refused or read, and bytes written, each library against the standard library."""
    for title, cases, which, verb in (("decode", DECODE_CASES, 0, "reads"), ("encode", ENCODE_CASES, 1, "writes")):
        reference = libs["stdlib"][which]
        names = [name for name, pair in libs.items() if pair[which] is not reference]
        print(f"\n| {title} | stdlib | " + " | ".join(names) + " |")
        print("| --- | --- |" + " --- |" * len(names))
        for case, argument in cases.items():
            expected = outcome(reference, argument)
            shown = repr(expected[1])[:50] if expected[0] == "ok" else "refused"
            cells = [verdict(expected, outcome(libs[name][which], argument), verb) for name in names]
            print(f"| {case} | `{shown}` | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timings of each figure; the best is kept")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run of the whole path")
    args = parser.parse_args()
    libs = libraries()
    timings(libs, args.runs, args.messages)
    rules(libs)


if __name__ == "__main__":
    main()
