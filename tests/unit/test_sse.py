"""SSE framing: the bytes a reader gets for each event."""

import json

from hypothesis import given
from hypothesis import strategies as st

from monit import sse
from monit.sse import compact_json, encode_event, encode_gap, encode_retry, tag_frame

from sseclient import SSEParser


def parse_frame(frame: bytes) -> dict:
    """Parse one frame by the SSE spec's rules (fields, data lines joined with LF)."""
    text = frame.decode("utf-8")
    assert text.endswith("\n\n")
    fields: dict = {"data": []}
    for line in text[:-2].split("\n"):
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            fields["data"].append(value)
        else:
            fields[name] = value
    fields["data"] = "\n".join(fields["data"])
    return fields


def test_frame_has_id_event_and_data():
    assert encode_event(7, '{"a":1}', "service.create") == (b'id: 7\nevent: service.create\ndata: {"a":1}\n\n')


def test_frame_without_event_name():
    assert encode_event(1, "x") == b"id: 1\ndata: x\n\n"


def test_multiline_payload_is_split_over_data_lines():
    assert encode_event(2, "one\ntwo\r\nthree\rfour") == (b"id: 2\ndata: one\ndata: two\ndata: three\ndata: four\n\n")


def test_non_ascii_payload_is_utf8():
    frame = encode_event(3, compact_json({"body": "déploiement ✓ 完了"}))
    assert frame == 'id: 3\ndata: {"body":"déploiement ✓ 完了"}\n\n'.encode()


def test_event_name_cannot_break_the_frame():
    assert parse_frame(encode_event(1, "x", "evil\nid: 99"))["id"] == "1"


def test_compact_json_has_no_spaces():
    assert compact_json({"a": [1, 2], "b": "c d"}) == '{"a":[1,2],"b":"c d"}'


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
SAME_AS_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@given(JSON_VALUES)
def test_compact_json_writes_what_the_json_package_writes(value):
    assert compact_json(value) == SAME_AS_JSON.encode(value)


def test_compact_json_writes_edge_values_as_the_json_package_does():
    for value in [1e-05, 1e16, -0.0, 18446744073709551616, "\u2028</script>\x7f\x00", {"a": [1.5, None, True]}]:
        assert compact_json(value) == SAME_AS_JSON.encode(value)


def test_compact_json_without_json_s_c_encoder_uses_the_public_encode(monkeypatch):
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    assert sse._made_once() == sse._COMPACT.encode


def test_retry_field():
    assert encode_retry(3000) == b"retry: 3000\n\n"


@given(st.text(), st.integers(min_value=1, max_value=2**53), st.none() | st.text(min_size=1))
def test_any_payload_round_trips_through_a_spec_parser(payload, event_id, event):
    """What a spec-conformant client reads is the payload, line breaks as LF."""
    parser = SSEParser()
    parser.feed(encode_event(event_id, payload, event))
    [received] = parser.events
    expected = payload.replace("\r\n", "\n").replace("\r", "\n")
    assert received.data == expected.encode("utf-8", "replace").decode("utf-8")
    assert received.id == str(event_id)


@given(st.lists(st.text(), min_size=1, max_size=5), st.integers(min_value=1, max_value=64))
def test_frames_split_anywhere_parse_the_same(payloads, split_every):
    stream = b"".join(encode_event(n, payload) for n, payload in enumerate(payloads, 1))
    parser = SSEParser()
    for start in range(0, len(stream), split_every):
        parser.feed(stream[start : start + split_every])
    assert [event.id for event in parser.events] == [str(n) for n in range(1, len(payloads) + 1)]


def test_a_tagged_frame_keeps_id_and_event_and_wraps_the_data():
    frame = encode_event(7, '{"body":"x"}', "service.create")
    tagged = tag_frame(frame, b"job-1")
    assert tagged == b'id: 7\nevent: service.create\ndata: {"stream":"job-1","data":{"body":"x"}}\n\n'


def test_a_tagged_base64_event_carries_a_string_and_a_notice_stays_json():
    event = encode_event(8, '{"body":"x"}', None, base64=True)
    assert tag_frame(event, b"j", base64=True) == b'id: 8\ndata: {"stream":"j","data":"eyJib2R5IjoieCJ9"}\n\n'
    notice = encode_gap(3, 5)
    assert tag_frame(notice, b"j", base64=True) == b'event: gap\ndata: {"stream":"j","data":{"from":3,"to":5}}\n\n'
