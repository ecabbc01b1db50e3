"""The one strict JSON decoder: what a browser's JSON.parse reads back, and what the bytes are instead."""

from __future__ import annotations

import pytest

from monit.strictjson import json_object


class Refused(ValueError):
    """The caller's own error, raised with what the bytes are instead."""


@pytest.mark.parametrize(
    "data, document",
    [
        (b"{}", {}),
        (b'{"id": "1", "x": 1.5e300, "ok": true, "no": null}', {"id": "1", "x": 1.5e300, "ok": True, "no": None}),
        ('{"user": "Zoë"}'.encode(), {"user": "Zoë"}),
    ],
)
def test_a_json_object_is_read(data: bytes, document: dict) -> None:
    assert json_object(data, Refused) == document


@pytest.mark.parametrize(
    "data, what",
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b'{"a": 1} trailing', "not JSON"),
        (b"[" * 60_000, "not JSON"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": Infinity}', "not JSON"),
        (b'{"a": -Infinity}', "not JSON"),
        (b'{"a": 1e999}', "not JSON"),
        (b'{"a": -1e999}', "not JSON"),
        (b'{"a": 1' + b"0" * 400 + b".0}", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b"42", "not a JSON object"),
    ],
)
def test_anything_else_is_the_callers_error_saying_what_it_is(data: bytes, what: str) -> None:
    with pytest.raises(Refused) as info:
        json_object(data, Refused)
    assert str(info.value) == what
    assert info.value.__context__ is None or info.value.__suppress_context__, "no decoder internals in the chain"
