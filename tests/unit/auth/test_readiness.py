"""A broken auth backend: each backend says what is wrong (``problem``) and the service lists it
(docs/howto/tokens.md, "When the backend fails"). The auth service unit by unit (StubTreq, fake clock)."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from monit.auth.bound import BoundedVerifier
from monit.auth.interface import AuthUnavailable, InvalidToken
from monit.auth.modes import Verification
from monit.auth.remote import RemoteVerifier

from auth_service import OneAnswerAuthService
from deferreds import result_of
from stubhttp import StubHTTP

URL = "http://auth.example/check?apikey=sekrit"
SHOWN = "http://auth.example/check?apikey=***"
ALICE = b'{"username": "alice"}'


def outcome(d: Any) -> type:
    try:
        result_of(d)
    except Exception as error:
        return type(error)
    return object


def test_the_auth_services_problem_is_its_newest_checks_and_clears_when_it_answers() -> None:
    service, clock = OneAnswerAuthService(body=ALICE), Clock()
    verifier = RemoteVerifier(StubHTTP(service), URL, clock, timeout=2.0)
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
    service, clock = OneAnswerAuthService(body=ALICE), Clock()
    service.hang = True
    remote = RemoteVerifier(StubHTTP(service), URL, clock, timeout=2.0)
    bound = BoundedVerifier(remote, clock, 1, log=remote.log, kind=SHOWN)
    bound.verify("tok-1")
    assert outcome(bound.verify("tok-2")) is AuthUnavailable
    assert remote.problem is None


def test_the_service_lists_every_backends_problem() -> None:
    class Broken:
        problem = "Redis at redis://cache:6379/0: no answer to AUTH in 2 s"

    class Fine:
        problem = None

    verification = Verification(verifier=None, jwt=None, pool=None, jwks=Fine(), backend=Broken())  # type: ignore
    assert verification.problems() == ["Redis at redis://cache:6379/0: no answer to AUTH in 2 s"]
    assert Verification(verifier=None, jwt=None, pool=None).problems() == []  # type: ignore[arg-type]
