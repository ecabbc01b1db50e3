"""/readyz with a broken auth backend: monit with a real auth service on loopback lists the service's
problem and /readyz stays 200 (docs/howto/tokens.md, "When the backend fails")."""

from __future__ import annotations

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.server import Site

from auth_service import OneAnswerAuthService
from streams import start_monit, token_header
from waiting import within


@pytest.fixture
def auth_service():
    service = OneAnswerAuthService(body=b'{"username": "alice"}')
    port = reactor.listenTCP(0, Site(service), interface="127.0.0.1")
    service.url = f"http://127.0.0.1:{port.getHost().port}/check"
    yield service
    pytest_twisted.blockon(port.stopListening())


async def get(url: str, token: str | None = None) -> tuple[int, dict]:
    headers = token_header(token) if token else {}
    response = await within(treq.get(url, headers=headers))
    return response.code, await within(response.json())


@pytest_twisted.ensureDeferred
async def test_readyz_lists_an_auth_service_that_cannot_answer_and_stays_200(nats_server, auth_service):
    monit = await start_monit(nats_server.url, jwt_secret=None, auth_url=auth_service.url, auth_timeout=1.0)
    try:
        ready = {"ready": True, "nats": True, "listening": True}
        assert await get(f"{monit.base_url}/readyz") == (200, {**ready, "problems": []})
        auth_service.code = 503
        assert (await get(f"{monit.base_url}/events?stream=r1", "tok-a"))[0] == 503
        assert await get(f"{monit.base_url}/readyz") == (
            200,
            {**ready, "problems": [f"auth: auth service at {auth_service.url}: the auth service answered HTTP 503"]},
        )
        auth_service.code = 401
        assert (await get(f"{monit.base_url}/events?stream=r1", "tok-b"))[0] == 401
        assert await get(f"{monit.base_url}/readyz") == (200, {**ready, "problems": []})
    finally:
        await monit.stopService()
