"""Fetching a JWKS over real HTTP on loopback from servers that misbehave: a body dripped slowly
(each fetch times out, and its connection is closed, not left open), and a browser's EventSource
whose token names a key rotated in just after monit's last fetch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_twisted
from twisted.internet import reactor

from monit.auth.jwks import JWKS, jwks_http_client

from devtools import Browser
from jwks_provider import ThreadedJWKS, jwks_in_a_thread
from processes import serving_monit, stop, wait_until_ready
from signing import AUDIENCE, ISSUER, Signer, jwks
from waiting import wait_for, within

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_a_dripped_body_times_out_and_each_attempt_closes_its_connection(drip, events) -> None:
    factory, url = drip
    keys = JWKS(jwks_http_client(reactor), url, reactor, timeout=0.3, min_refetch=1.0, refresh=600.0)
    keys.startService()  # the first fetch
    try:
        for attempt in range(1, 4):
            if attempt > 1:
                await within(keys.refresh())
            else:
                await wait_for(
                    lambda: keys.problem is not None and "no answer in time" in keys.problem,
                    what="the first fetch to time out",
                )
            await wait_for(lambda: factory.open == 0, timeout=2, what=f"attempt {attempt}'s connection closed")
        assert factory.made == 3
        assert keys.problem == f"JWKS at {url}: no answer in time (keeping the 0 keys we have)"
    finally:
        keys.stopService()


# A browser's EventSource gives up for good on a 401 (and on any status but 200)


@pytest.fixture
def threaded_provider(rsa: Signer) -> Iterator[str]:
    with jwks_in_a_thread(jwks(rsa)) as url:
        yield url


OPEN_SOURCE = """
window.source = new EventSource(%s);
window.opened = 0;
source.onopen = () => { window.opened += 1; };
0
"""


def test_an_eventsource_whose_key_was_rotated_in_after_the_last_fetch_opens(
    tmp_path: Path, nats_server, threaded_provider: str, rsa: Signer
) -> None:
    base, monit = serving_monit(
        tmp_path,
        nats_server.url,
        "--jwt-jwks-url",
        threaded_provider,
        "--jwt-audience",
        AUDIENCE,
        "--jwt-issuer",
        ISSUER,
        "--allow-query-token",
        stdout=None,
    )
    browser = None
    try:
        wait_until_ready(base)
        deadline = time.monotonic() + 10
        while ThreadedJWKS.requests < 1:  # monit's start-up fetch
            assert time.monotonic() < deadline, "monit never fetched the keys"
            time.sleep(0.02)
        browser = Browser(f"{base}/healthz")
        browser.wait_for("location.pathname === '/healthz' && document.readyState === 'complete'")
        new = Signer.make("ES256")
        ThreadedJWKS.body = jwks(rsa, new)  # rotated in now, after monit's last fetch
        browser.evaluate(OPEN_SOURCE % repr(f"/events?stream=rot1&token={quote(new.token())}"))
        assert browser.wait_for("(window.opened || source.readyState === 2) && source.readyState", 10) == 1
        assert ThreadedJWKS.requests == 2
        # a made-up kid: the fetch lacks it, and the EventSource is closed for good by the 401
        browser.evaluate(OPEN_SOURCE % repr(f"/events?stream=rot2&token={quote(rsa.token(kid='made-up'))}"))
        assert browser.wait_for("source.readyState === 2 && 'closed'", 10) == "closed"
    finally:
        if browser is not None:
            browser.close()
        assert stop(monit) == 0
