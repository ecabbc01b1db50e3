"""The fast path's contract, over real loopback TCP: a stream taking its connection over, unsent bytes, fallbacks.

Nothing here fakes a transport's fields: the streams run on Twisted's own TCP
transport, and a stalled reader is a real socket that is never read.
"""

from __future__ import annotations

import json
import time

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater

from monit._twisted import seam, takeover
from monit.auth.modes import NoAuth
from monit.registry import InboxRegistry
from monit.service import registry_options, web_options
from monit.settings import Settings
from monit.web import _fastpath
from monit.web.app import MonitWeb
from monit.web.lean import LeanConnection
from monit.web.site import MonitSite
from monit.web.stream import EventStream

from loopback import base_url, stop_listening
from streams import Reader, stalled_reader
from waiting import wait_for, within

MAX_PENDING = 64 * 1024


@attrs.define
class Served:
    registry: InboxRegistry
    web: MonitWeb
    site: MonitSite
    port: IListeningPort

    @property
    def base_url(self) -> str:
        return base_url(self.port)

    def newest_stream(self) -> EventStream:
        return list(self.web.streams._streams)[-1]


async def serve() -> Served:
    settings = Settings(insecure_no_auth=True, max_pending=MAX_PENDING, history=10, heartbeat=0.2)
    registry = InboxRegistry(reactor, **registry_options(settings))
    web = MonitWeb(registry, NoAuth(), reactor, **web_options(settings))
    web.startService()
    site = MonitSite(web.resource(), reactor, head_timeout=5, max_connections=100)
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
    return Served(registry, web, site, port)


async def stop(served: Served) -> None:
    await stop_listening(served.port)
    served.web.stopService()
    await served.site.close_connections(reactor, 3)
    served.registry.stopService()  # its timers too: a later test counts what monit left on the reactor


async def healthy_and_stalled(served: Served) -> EventStream:
    """A reader that reads and one that never does, on one job; events until the stalled one is dropped.

    Past MAX_PENDING the stalled one is written nothing more; two heartbeats
    later, having taken nothing, it is dropped, having held more than
    MAX_PENDING unsent, while the healthy one got every event in order.
    Returns the stalled one's stream, whichever way it wrote.
    """
    response = await within(treq.get(f"{served.base_url}/events?stream=job", unbuffered=True))
    healthy = Reader(response)
    await wait_for(lambda: len(served.web.streams) == 1)
    stalled = stalled_reader(served.base_url, "job", "unused")
    await wait_for(lambda: len(served.web.streams) == 2)
    stalled_stream = served.newest_stream()
    sent = 0
    largest_unsent = 0
    deadline = time.monotonic() + 30
    while served.web.streams.dropped == 0 and time.monotonic() < deadline:
        served.registry.publish("job", json.dumps({"n": sent, "pad": "x" * 20_000}))
        sent += 1
        await deferLater(reactor, 0, lambda: None)  # one reactor turn: the batch goes out
        largest_unsent = max(largest_unsent, stalled_stream._response.unsent())
    stalled.close()
    assert served.web.streams.dropped == 1, "the stalled reader was never dropped"
    served.registry.publish("job", json.dumps({"n": sent}))
    await wait_for(lambda: len(healthy.events) == sent + 1)
    healthy.close()
    assert largest_unsent > MAX_PENDING
    assert [event["n"] for event in healthy.data()] == list(range(sent + 1))
    return stalled_stream


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_over_tcp_a_stream_takes_its_connection_over_and_a_stalled_reader_is_dropped():
    served = await serve()
    try:
        stalled_stream = await healthy_and_stalled(served)  # unsent read from the transport's own buffer
        assert type(stalled_stream._response) is LeanConnection
        assert stalled_stream._request is None, "the request is let go"
    finally:
        await stop(served)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_when_taking_over_does_not_fit_batches_still_go_straight_to_the_socket(monkeypatch, events):
    monkeypatch.setattr(seam, "_found", {})
    monkeypatch.setattr(takeover, "check", lambda: "pretend the connection cannot be taken over")
    served = await serve()
    try:
        warnings = [e for e in events if e.get("what") == takeover.WHAT]
        assert len(warnings) == 1 and "pretend the connection" in warnings[0]["problem"]
        stalled_stream = await healthy_and_stalled(served)  # unsent read from the transport's own buffer
        assert type(stalled_stream._response) is _fastpath.SocketWriter
    finally:
        await stop(served)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_when_the_fast_path_does_not_fit_streams_use_request_write_and_still_drop(monkeypatch, events):
    monkeypatch.setattr(_fastpath, "check", lambda: "pretend the fields changed")
    served = await serve()
    try:
        warnings = [e for e in events if "fast path does not fit" in e.get("log_format", "")]
        assert len(warnings) == 1 and warnings[0]["problem"] == "pretend the fields changed"
        stalled_stream = await healthy_and_stalled(served)  # unsent counted as written while the transport paused us
        assert type(stalled_stream._response) is _fastpath.RequestWriter
    finally:
        await stop(served)
