"""A stopped MonitService leaves nothing behind: no timer of its own, no connection, no listening port."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.base import DelayedCall
from twisted.internet.task import LoopingCall, deferLater

from streams import open_stream, start_monit
from waiting import wait_for, within

pytestmark = pytest.mark.integration  # a real nats-server, and monit on the real reactor


def owned_by_monit(call: DelayedCall) -> bool:
    """Whether a delayed call runs monit's code: a function or method of monit's, or a LoopingCall of one."""
    func = call.func
    if isinstance(func, LoopingCall):
        func = func.f
    owner = getattr(func, "__self__", None)
    module = getattr(func, "__module__", None) or type(owner).__module__
    return module.startswith("monit")


def selectables() -> set[object]:
    return set(reactor.getReaders()) | set(reactor.getWriters())


@pytest_twisted.ensureDeferred
async def test_a_stopped_service_leaves_no_timer_and_no_connection(nats_server, publisher):
    before = selectables()
    monit = await start_monit(nats_server.url, heartbeat=0.5)
    reader = await open_stream(monit, "leftovers")
    publisher.publish("monitor.user", b"{not json")  # the router's tally of bad messages starts its timer
    publisher.publish("monitor.user", {"id": "leftovers", "messages": [{"n": 1}]})
    await wait_for(lambda: reader.data() == [{"n": 1}], what="the event")
    await wait_for(lambda: monit.router.malformed == 1, what="the bad message counted")
    assert any(owned_by_monit(call) for call in reactor.getDelayedCalls()), "the test sees monit's timers"

    await within(monit.stopService())
    await within(reader.done.addErrback(lambda _: None))

    assert [call for call in reactor.getDelayedCalls() if owned_by_monit(call)] == []
    await wait_for(lambda: selectables() <= before, what="monit's sockets closed")
    await deferLater(reactor, 0, lambda: None)  # a turn later, nothing came back
    assert selectables() <= before
