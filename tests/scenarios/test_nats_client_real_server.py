"""The reconnecting NATS client against a real nats-server: round trips, nats-py, restarts, refusals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent

from monit.nats.client import NATSClient
from monit.nats.protocol import Msg, NoResponders

from natsserver import NATSServer


async def within(d: Deferred[Any], seconds: float = 10.0) -> Any:
    """Await d, failing with TimeoutError after a deadline."""
    from twisted.internet import reactor

    return await d.addTimeout(seconds, reactor)


async def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll condition until it holds, or fail after a deadline."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not true within {seconds}s: {condition}"
        await deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.async_yield_fixture
async def real_client() -> AsyncIterator[Callable[[str], NATSClient]]:
    """Start NATSClients on the real reactor; stop them afterwards."""
    from twisted.internet import reactor

    clients: list[NATSClient] = []

    def make(url: str) -> NATSClient:
        client = NATSClient([url], reactor, request_timeout=2.0, initial_delay=0.05, max_delay=0.5)
        client.startService()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await within(client.stopService())


async def subscribed(client: NATSClient, subject: str) -> DeferredQueue[Msg]:
    """A queue of subject's messages, once the server is known to have the subscription."""
    queue: DeferredQueue[Msg] = DeferredQueue()
    await within(client.when_connected())
    client.subscribe(subject, queue.put)
    client.publish(subject, b"ready?")
    assert (await within(queue.get())).payload == b"ready?"
    return queue


@pytest_twisted.ensureDeferred
async def test_round_trip(nats_server: Any, real_client: Callable[[str], NATSClient]) -> None:
    client = real_client(nats_server.url)
    queue = await subscribed(client, "round.trip")
    client.publish("round.trip", b"with\r\nnewlines", headers={"X-Kind": "test"})
    msg = await within(queue.get())
    assert msg.payload == b"with\r\nnewlines"
    assert msg.headers == {"X-Kind": "test"}


@pytest_twisted.ensureDeferred
async def test_request_reply(nats_server: Any, real_client: Callable[[str], NATSClient]) -> None:
    responder, requester = real_client(nats_server.url), real_client(nats_server.url)
    await within(responder.when_connected())
    responder.subscribe("svc.upper", lambda msg: responder.publish(msg.reply or "", msg.payload.upper()))
    # The server handles a connection's commands in order: once this round trip
    # is done, it has the subscription above too.
    await subscribed(responder, "responder.ready")
    reply = await within(requester.request("svc.upper", b"shout", timeout=5))
    assert reply.payload == b"SHOUT"


@pytest_twisted.ensureDeferred
async def test_no_responders_fails_fast(nats_server: Any, real_client: Callable[[str], NATSClient]) -> None:
    client = real_client(nats_server.url)
    await within(client.when_connected())
    started = time.monotonic()
    with pytest.raises(NoResponders):
        await within(client.request("nobody.listens", timeout=5))
    assert time.monotonic() - started < 1.0


def publish_with_nats_py(url: str, subject: str, payload: bytes) -> None:
    """Publish with the official client, in its own event loop (run in a thread)."""
    import nats

    async def publish() -> None:
        connection = await nats.connect(url)
        await connection.publish(subject, payload, headers={"From": "nats-py"})
        await connection.flush()
        await connection.close()

    asyncio.run(publish())


@pytest_twisted.ensureDeferred
async def test_nats_py_publishes_we_receive(nats_server: Any, real_client: Callable[[str], NATSClient]) -> None:
    from twisted.internet.threads import deferToThread

    client = real_client(nats_server.url)
    queue = await subscribed(client, "from.nats.py")
    await within(deferToThread(publish_with_nats_py, nats_server.url, "from.nats.py", b"hello"))
    msg = await within(queue.get())
    assert (msg.payload, msg.headers) == (b"hello", {"From": "nats-py"})


@pytest_twisted.ensureDeferred
async def test_subscription_survives_a_server_restart(
    private_nats_server: Any, real_client: Callable[[str], NATSClient]
) -> None:
    client = real_client(private_nats_server.url)
    queue = await subscribed(client, "after.restart")
    private_nats_server.stop()
    await wait_until(lambda: not client.connected)
    private_nats_server.start()
    await within(client.when_connected())
    assert client.reconnects == 1
    client.publish("after.restart", b"still here")
    assert (await within(queue.get())).payload == b"still here"


def refusals(server_log: Path) -> int:
    """How many connections the nats-server refused for their credentials, by its own log."""
    if not server_log.exists():
        return 0
    return server_log.read_text(errors="replace").count("authentication error")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_refused_credentials_are_said_once_however_often_the_server_refuses(
    tmp_path: Path, real_client: Callable[[str], NATSClient], events: EventLoggingObserver
) -> None:
    """A real nats-server that knows alice by another password: five refusals, one line."""
    server_log = tmp_path / "nats-server.log"
    server = NATSServer(extra=["--user", "alice", "--pass", "right", "-l", str(server_log)])
    server.start()
    try:
        client = real_client(f"nats://alice:wrong@127.0.0.1:{server.port}")
        await wait_until(lambda: refusals(server_log) >= 5)
        await wait_until(lambda: "Authorization Violation" in (client.problem or ""))
        said = [formatEvent(e) for e in events if "Authorization Violation" in formatEvent(e)]
    finally:
        server.stop()
    assert said == [
        f"NATS handshake with nats://alice:***@127.0.0.1:{server.port} failed: Authorization Violation"
        "; trying again with backoff"
    ], said
    assert not client.connected and client.reconnects == 0
