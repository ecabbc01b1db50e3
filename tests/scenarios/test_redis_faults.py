"""--auth-redis through a Redis that stalls (``DEBUG SLEEP``, SIGSTOP): lookups time out, and so do
the reconnection's AUTH and SELECT; monit keeps reconnecting with backoff, /readyz lists the trouble
meanwhile, and tokens are taken again once Redis answers. Real redis-server, real HTTP."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent

from redisserver import RedisServer
from streams import hang_up, start_monit, token_header
from waiting import wait_for, within

pytestmark = pytest.mark.integration

DB = 2  # a database other than 0, so every connection sends SELECT after AUTH


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(str(tmp_path), password="pw-stall")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def monit(nats_server, redis_server):
    service = pytest_twisted.blockon(
        ensureDeferred(
            start_monit(nats_server.url, jwt_secret=None, auth_redis=redis_server.url(db=DB), auth_timeout=1.0)
        )
    )
    yield service
    pytest_twisted.blockon(service.stopService())


async def status(monit, token: str) -> int:
    response = await within(
        treq.get(f"{monit.base_url}/events?stream=s1", headers=token_header(token), unbuffered=True)
    )
    if response.code == 200:
        hang_up(response)
    else:
        await within(treq.content(response))
    code: int = response.code
    return code


async def readiness(monit) -> tuple[int, dict]:
    response = await within(treq.get(f"{monit.base_url}/readyz"))
    return response.code, await within(response.json())


class Tokens:
    """Fresh tokens, so no answer comes from monit's cache: each one is a lookup in Redis."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"sess-fresh-{self.count}"


async def watch_until(
    monit, condition: Callable[[int], bool], token: Callable[[], str], timeout: float, seen: list[str]
) -> list[int]:
    """Ask with fresh tokens until ``condition(status)``, noting /readyz's problems meanwhile."""
    deadline = time.monotonic() + timeout
    codes: list[int] = []
    while True:
        codes.append(await status(monit, token()))
        code, document = await readiness(monit)
        assert code == 200, document  # a broken auth backend is listed, not made unready (docs/howto/tokens.md)
        seen.extend(document["problems"])
        if condition(codes[-1]):
            return codes
        assert time.monotonic() < deadline, f"not within {timeout}s: {codes}"
        await deferLater(reactor, 0.05, lambda: None)


def said(events: EventLoggingObserver, text: str) -> list[str]:
    return [formatEvent(event) for event in events if text in formatEvent(event)]


async def survive(
    monit,
    redis_server: RedisServer,
    stall: Callable[[], object],
    end: Callable[[], Awaitable[object]],
    events: EventLoggingObserver,
    until_auth_times_out: bool,
) -> list[str]:
    """Stall Redis; see lookups fail (and, if asked, a new connection's AUTH time out), then recovery.

    Returns the problems /readyz listed meanwhile."""
    redis_server.cli("SET", "sess-before", "alice", db=DB)
    assert await status(monit, "sess-before") == 200
    fresh = Tokens()
    seen: list[str] = []
    stall()
    try:
        codes = await watch_until(monit, lambda code: code == 503, fresh, timeout=3, seen=seen)
        assert set(codes[:-1]) <= {401}, codes  # unknown tokens, until the stall began
        if until_auth_times_out:  # a lookup gave up on the connection; the next one's AUTH gets no answer
            await watch_until(
                monit, lambda _: bool(said(events, "no answer to AUTH in 1 s")), fresh, timeout=6, seen=seen
            )
    finally:
        await end()
    redis_server.cli("SET", "sess-after", "bob", db=DB)
    codes = await watch_until(monit, lambda code: code == 200, lambda: "sess-after", timeout=20, seen=seen)
    assert set(codes[:-1]) <= {503}, codes
    shown = f"Redis at redis://127.0.0.1:{redis_server.port}/{DB}"
    assert f"auth: {shown}: no answer to GET in 1 s" in seen, seen
    assert (await readiness(monit))[1]["problems"] == []
    assert said(events, f"{shown} answers again")
    assert not said(events, "pw-stall") and not [event for event in events if "pw-stall" in repr(event)]
    return seen


@pytest_twisted.ensureDeferred
async def test_debug_sleep_4_times_lookups_out_then_monit_reconnects_by_itself(monit, redis_server, events):
    sleeper = None

    def sleep() -> None:
        nonlocal sleeper
        sleeper = redis_server.debug_sleep(4)

    async def woken() -> None:
        assert sleeper is not None
        await wait_for(lambda: sleeper.poll() is not None, what="DEBUG SLEEP to end")
        assert sleeper.returncode == 0

    # Whether a new connection's AUTH also falls within the 4 s depends on the backoff's jitter:
    # the SIGSTOP test below holds Redis until it has.
    await survive(monit, redis_server, sleep, woken, events, until_auth_times_out=False)


@pytest_twisted.ensureDeferred
async def test_sigstop_then_sigcont_is_survived_and_a_new_connections_auth_times_out_meanwhile(
    monit, redis_server, events
):
    async def resume() -> None:
        redis_server.resume()

    seen = await survive(monit, redis_server, redis_server.pause, resume, events, until_auth_times_out=True)
    assert f"auth: Redis at redis://127.0.0.1:{redis_server.port}/{DB}: no answer to AUTH in 1 s" in seen
