"""/readyz and a broken auth backend: each backend says what is wrong (``problem``), the service
lists it, and /readyz stays 200 (README, "When the backend fails"). The auth service unit by unit
(StubTreq, fake clock), then monit with a real auth service on loopback."""
from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.server import Request as WebRequest

from monit.auth.bound import BoundedVerifier
from monit.auth.interface import AuthUnavailable, InvalidToken
from monit.auth.modes import Verification
from monit.auth.remote import RemoteVerifier

from deferreds import result_of
from streams import start_monit
from waiting import within

URL = "http://auth.example/check?apikey=sekrit"
SHOWN = "http://auth.example/check?apikey=***"


class AuthService(Resource):
    """Answers with ``code`` (a verdict for 200), or holds the request (``hang``)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.code = 200
        self.hang = False

    def render_GET(self, request: WebRequest) -> bytes | int:
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        return b'{"username": "alice"}' if self.code == 200 else b"{}"


def outcome(d: Any) -> type:
    try:
        result_of(d)
    except Exception as error:
        return type(error)
    return object


def test_the_auth_services_problem_is_its_newest_checks_and_clears_when_it_answers() -> None:
    service, clock = AuthService(), Clock()
    verifier = RemoteVerifier(StubTreq(service), URL, clock, timeout=2.0)
    assert verifier.problem is None
    service.code = 502
    assert outcome(verifier.verify("tok-1")) is AuthUnavailable
    assert verifier.problem == f"auth service at {SHOWN}: the auth service answered HTTP 502"
    service.code = 401
    assert outcome(verifier.verify("tok-2")) is InvalidToken
    assert verifier.problem is None, "a refusal is an answer"
    service.hang = True
    waiting = verifier.verify("tok-3")
    clock.advance(2.0)
    assert outcome(waiting) is AuthUnavailable
    assert verifier.problem == f"auth service at {SHOWN}: no answer in time"
    service.hang, service.code = False, 200
    assert outcome(verifier.verify("tok-4")) is object
    assert verifier.problem is None


def test_a_check_refused_at_the_concurrency_bound_is_no_problem_of_the_service() -> None:
    service, clock = AuthService(), Clock()
    service.hang = True
    remote = RemoteVerifier(StubTreq(service), URL, clock, timeout=2.0)
    bound = BoundedVerifier(remote, clock, 1, log=remote.log, kind=SHOWN)
    bound.verify("tok-1")
    assert outcome(bound.verify("tok-2")) is AuthUnavailable
    assert remote.problem is None


@pytest.fixture
def auth_service():
    service = AuthService()
    port = reactor.listenTCP(0, Site(service), interface="127.0.0.1")
    service.url = f"http://127.0.0.1:{port.getHost().port}/check"
    yield service
    pytest_twisted.blockon(port.stopListening())


async def get(url: str, token: str | None = None) -> tuple[int, dict]:
    headers = {"X-Auth-Token": token} if token else {}
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
        assert await get(f"{monit.base_url}/readyz") == (200, {**ready, "problems": [
            f"auth: auth service at {auth_service.url}: the auth service answered HTTP 503"]})
        auth_service.code = 401
        assert (await get(f"{monit.base_url}/events?stream=r1", "tok-b"))[0] == 401
        assert await get(f"{monit.base_url}/readyz") == (200, {**ready, "problems": []})
    finally:
        await monit.stopService()


def test_the_service_lists_every_backends_problem() -> None:
    class Broken:
        problem = "Redis at redis://cache:6379/0: no answer to AUTH in 2 s"

    class Fine:
        problem = None

    verification = Verification(verifier=None, jwt=None, pool=None, jwks=Fine(), backend=Broken())  # type: ignore
    assert verification.problems() == ["Redis at redis://cache:6379/0: no answer to AUTH in 2 s"]
    assert Verification(verifier=None, jwt=None, pool=None).problems() == []  # type: ignore[arg-type]
