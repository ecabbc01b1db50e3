"""A stopped MonitService leaves nothing behind: no timer of its own, no connection, no listening port."""

from __future__ import annotations

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.base import DelayedCall
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall, deferLater

from streams import open_stream, start_monit, token_header
from waiting import wait_for, within

pytestmark = pytest.mark.integration  # a real nats-server, and monit on the real reactor


def owned_by_monit(call: IDelayedCall) -> bool:
    """Whether a delayed call runs monit's code: a function or method of monit's, or a LoopingCall of one."""
    assert isinstance(call, DelayedCall)  # the reactor's own
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


async def stopped_cleanly(monit, before: set[object]) -> None:
    """Stop monit; then none of its timers is left and its sockets are closed."""
    await within(monit.stopService())
    assert [call for call in reactor.getDelayedCalls() if owned_by_monit(call)] == []
    await wait_for(lambda: selectables() <= before, what="monit's sockets closed")
    await deferLater(reactor, 0, lambda: None)  # a turn later, nothing came back
    assert selectables() <= before


@pytest_twisted.ensureDeferred
async def test_with_an_auth_service_the_bounds_tally_and_pooled_connections_go_too(nats_server, auth_service):
    """--auth-url: a check refused at the bound starts the tally's timer; a check answered leaves a
    pooled connection to the auth service. Both end with the service."""
    before = selectables()
    monit = await start_monit(nats_server.url, jwt_secret=None, auth_url=auth_service.url, auth_concurrency=1)
    auth_service.hold = True
    held = ensureDeferred(ask(monit, "slow-held"))
    await wait_for(lambda: len(auth_service.held) == 1, what="one check in flight")
    refused = await ask(monit, "slow-refused")
    assert refused.code == 503 and monit.auth.remote.refused == 1
    auth_service.release()
    answered = await within(held)
    assert answered.code == 200
    answered.original._transport.loseConnection()
    assert any(owned_by_monit(call) for call in reactor.getDelayedCalls()), "the tally's timer runs"

    await stopped_cleanly(monit, before | set(auth_service.factory.protocols))
    await wait_for(lambda: not auth_service.factory.protocols, what="the pooled connection closed by monit")


async def ask(monit, token: str):
    return await within(treq.get(f"{monit.base_url}/events?stream=j", headers=token_header(token), unbuffered=True))
