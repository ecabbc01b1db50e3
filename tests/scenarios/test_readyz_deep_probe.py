"""/readyz?deep=1: a message through NATS that must come back on monit's own subscription.

A client can stay connected, and publish, with no right left to subscribe:
plain /readyz says ready, the deep check must not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
import treq

from natsserver import NATSServer
from streams import start_monit
from waiting import within

pytestmark = pytest.mark.integration


@pytest.fixture
def deaf_nats(tmp_path: Path) -> Iterator[NATSServer]:
    """A nats-server where user ``deaf`` may connect and publish but subscribe to nothing."""
    config = tmp_path / "deaf.conf"
    config.write_text(
        "authorization { users = [\n"
        '  { user: "deaf", password: "deaf-pw", permissions: { subscribe: { deny: [">"] } } }\n'
        "] }\n"
    )
    server = NATSServer(extra=["-c", str(config)])
    server.start()
    yield server
    server.stop()


async def readyz(monit, query: str = "") -> tuple[int, dict]:
    response = await within(treq.get(f"{monit.base_url}/readyz{query}"))
    return response.code, await within(response.json())


@pytest_twisted.ensureDeferred
async def test_a_probe_that_comes_back_is_ready(nats_server):
    monit = await start_monit(nats_server.url)
    try:
        code, document = await readyz(monit, "?deep=1")
        assert (code, document["ready"], document["nats_round_trip"]) == (200, True, True)
        assert document["problems"] == []
        code, document = await readyz(monit)
        assert code == 200 and "nats_round_trip" not in document, "plain /readyz stays cheap"
    finally:
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_connection_that_may_not_subscribe_is_not_ready_deep(deaf_nats):
    monit = await start_monit(f"nats://deaf:deaf-pw@127.0.0.1:{deaf_nats.port}")
    try:
        code, document = await readyz(monit)
        assert code == 200 and document["nats"] is True, "connected, so plain /readyz is ready"
        code, document = await readyz(monit, "?deep=1")
        assert code == 503 and document["ready"] is False and document["nats_round_trip"] is False
        assert document["problems"] == ["NATS: a message published by monit did not come back to it within a second"]
    finally:
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_deep_takes_1_or_0(nats_server):
    monit = await start_monit(nats_server.url)
    try:
        code, document = await readyz(monit, "?deep=yes")
        assert code == 400 and document == {"error": "'deep' is 1 or 0"}
        assert (await readyz(monit, "?deep=0"))[0] == 200
    finally:
        await monit.stopService()
