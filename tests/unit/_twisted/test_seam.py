"""Each check behind the wall passes on the installed Twisted; each misfit is said once and its way out works."""

from __future__ import annotations

import pytest
import twisted
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from monit._twisted import (
    early_disconnect,
    head_counts,
    key_sharing,
    quiet_logs,
    seam,
    takeover,
    tcp_buffer,
    trust_root,
)
from monit._twisted.startup import SEAMS, check_all
from monit.nats.tls import ClientTLS
from monit.web.site import MonitChannel, MonitSite, SelfCountingChannel


@pytest.fixture(autouse=True)
def unchecked(monkeypatch):
    """Each test checks afresh (a process checks once)."""
    monkeypatch.setattr(seam, "_found", {})


@pytest.mark.parametrize("module", [*SEAMS, tcp_buffer, takeover], ids=lambda module: module.__name__)
def test_each_check_fits_the_installed_twisted(module):
    assert module.check() is None


def test_all_fit_and_nothing_is_said(events):
    check_all()
    assert [event for event in events if "does not fit" in event.get("log_format", "")] == []


def misfits(events) -> list[dict]:
    return [event for event in events if event.get("log_format", "").startswith("{what} does not fit")]


def test_a_misfit_with_a_public_way_is_said_once_naming_twisted(monkeypatch, events):
    monkeypatch.setattr(quiet_logs, "check", lambda: "pretend")
    check_all()
    check_all()
    assert [event["problem"] for event in misfits(events)] == [f"Twisted {twisted.__version__}: pretend"]


def test_a_misfit_without_a_public_way_stops_monit_with_one_line(monkeypatch):
    monkeypatch.setattr(early_disconnect, "check", lambda: "pretend")
    with pytest.raises(seam.Unfit) as raised:
        check_all()
    assert str(raised.value).count("\n") == 0 and f"Twisted {twisted.__version__}: pretend" in str(raised.value)


def test_trust_roots_misfit_changes_nothing_at_run_time(monkeypatch, events):
    monkeypatch.setattr(trust_root, "check", lambda: "pretend")
    assert not seam.fits(trust_root)
    assert [event["what"] for event in misfits(events)] == [trust_root.WHAT]
    options = ClientTLS.from_files().for_server("nats.example")  # the system's trust, taken as before
    assert IOpenSSLClientConnectionCreator.providedBy(options)


class Answer(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b"ok"


def site() -> MonitSite:
    return MonitSite(Answer(), Clock(), head_timeout=5, max_connections=10)


def connect(site: MonitSite) -> tuple[MonitChannel, StringTransport]:
    channel = site.buildProtocol(None)
    assert isinstance(channel, MonitChannel)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def test_without_twisted_s_head_counts_channels_count_for_themselves(monkeypatch, events):
    monkeypatch.setattr(head_counts, "check", lambda: "pretend")
    served = site()
    assert [event["what"] for event in misfits(events)] == [head_counts.WHAT]
    channel, _ = connect(served)
    assert type(channel) is SelfCountingChannel
    for line in (b"GET / HTTP/1.1", b"Host: example", b"Accept: */*"):
        channel.lineReceived(line)
    assert (channel.head_bytes(), channel.headers_read()) == (
        head_counts.head_bytes(channel),
        head_counts.headers_read(channel),
    )


@pytest.mark.parametrize("counting", [MonitChannel, SelfCountingChannel])
@pytest.mark.parametrize(
    "head, answer",
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 10 + b"\r\n", b"HTTP/1.1 431 "),  # 11 whole
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 300 + b"\r\n", b"HTTP/1.1 431 "),
        (b"GET /" + b"a" * 600 + b" HTTP/1.1\r\n", b"HTTP/1.1 414 "),
    ],
)
def test_both_ways_of_counting_refuse_alike(monkeypatch, counting, head, answer):
    monkeypatch.setattr(MonitChannel, "maxHeaders", 10)
    monkeypatch.setattr(MonitChannel, "totalHeadersSize", 200)
    monkeypatch.setattr(MonitChannel, "MAX_LENGTH", 500)
    served = site()
    served.protocol = counting
    channel, transport = connect(served)
    channel.dataReceived(head)
    assert transport.value().startswith(answer)


def test_both_ways_of_counting_let_a_head_just_within_bounds_through(monkeypatch):
    """Ten headers whole (the limit) then the end: neither way refuses it."""
    monkeypatch.setattr(MonitChannel, "maxHeaders", 10)
    for counting in (MonitChannel, SelfCountingChannel):
        served = site()
        served.protocol = counting
        channel, transport = connect(served)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 9 + b"\r\n")
        assert transport.value().startswith(b"HTTP/1.1 200 "), counting


def test_without_the_presets_connections_are_left_as_twisted_makes_them(monkeypatch, events):
    monkeypatch.setattr(key_sharing, "check", lambda: "pretend")
    channel, _ = connect(site())
    assert "_HTTPChannel__first_line" not in vars(channel)
    assert [event["what"] for event in misfits(events)] == [key_sharing.WHAT]


def test_with_the_presets_connections_have_the_names_at_once():
    channel, _ = connect(site())
    assert "_HTTPChannel__first_line" in vars(channel)
