"""The bound on token checks in flight, in front of a verifier answered by hand, with a fake clock.

The bound in front of the auth service and of Redis, as monit puts it, is tested
with them (unit/auth/test_remote.py, unit/auth/test_redis_verifier.py) and end to end (scenarios/test_access.py).
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, LogLevel, formatEvent
from zope.interface.verify import verifyObject

from monit.auth.bound import BoundedVerifier
from monit.auth.interface import AuthUnavailable, Identity, InvalidToken, ITokenVerifier

from deferreds import result_of
from verifiers import HandVerifier

ALICE = Identity(user="alice", claims={"username": "alice"}, expires=None, revocable=True)
LOG = Logger(namespace="monit.auth.backend")


@pytest.fixture
def inner() -> HandVerifier:
    return HandVerifier()


@pytest.fixture
def bound(inner: HandVerifier, clock: Clock) -> BoundedVerifier:
    return BoundedVerifier(inner, clock, 2, log=LOG, kind="backend.example")


def warnings(events: EventLoggingObserver) -> list[str]:
    return [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn and e["log_namespace"] == LOG.namespace]


def test_provides_the_interface(bound: BoundedVerifier) -> None:
    assert verifyObject(ITokenVerifier, bound)


def test_past_the_bound_a_check_is_refused_at_once_and_said_in_the_inner_verifiers_log(
    bound: BoundedVerifier, inner: HandVerifier, events: EventLoggingObserver
) -> None:
    waiting = [bound.verify("tok-1"), bound.verify("tok-2")]
    with pytest.raises(AuthUnavailable, match="^too many token checks in flight$"):
        result_of(bound.verify("tok-3"))
    assert [token for token, _ in inner.calls] == ["tok-1", "tok-2"]
    assert (bound.in_flight, bound.refused) == (2, 1)
    assert warnings(events) == [
        "refused token checks at the concurrency bound on backend.example: 2 checks are in flight"
    ]
    inner.answer(ALICE, 0)
    assert result_of(waiting[0]) == ALICE and bound.in_flight == 1
    bound.verify("tok-4")
    assert bound.in_flight == 2 and bound.refused == 1


@pytest.mark.parametrize("ending", [ALICE, InvalidToken("refused"), AuthUnavailable("down"), CancelledError()])
def test_a_slot_is_held_until_the_inner_answer_fires_however_it_ends(
    bound: BoundedVerifier, inner: HandVerifier, ending: object
) -> None:
    answer = bound.verify("tok-1")
    assert bound.in_flight == 1
    inner.answer(ending)  # type: ignore[arg-type]
    answer.addErrback(lambda f: f.trap(InvalidToken, AuthUnavailable, CancelledError))
    assert bound.in_flight == 0


def test_the_caller_cancelling_cancels_the_inner_check_and_frees_its_slot(
    bound: BoundedVerifier, inner: HandVerifier
) -> None:
    answer = bound.verify("tok-1")
    answer.cancel()
    with pytest.raises(CancelledError):
        result_of(answer)
    assert inner.calls[0][1].called and bound.in_flight == 0


@pytest.mark.parametrize("token", ["", "tok\nen", "tök", "x" * 9000, None])
def test_a_token_that_cannot_travel_is_invalid_even_at_the_bound_and_takes_no_slot(
    bound: BoundedVerifier, inner: HandVerifier, token: object
) -> None:
    bound.verify("tok-1"), bound.verify("tok-2")
    with pytest.raises(InvalidToken):
        result_of(bound.verify(token))  # type: ignore[arg-type]
    assert (bound.in_flight, bound.refused, len(inner.calls)) == (2, 0, 2)


def test_stopping_says_the_refusals_held_and_leaves_no_timer(
    bound: BoundedVerifier, clock: Clock, events: EventLoggingObserver
) -> None:
    bound.startService()
    bound.verify("tok-1"), bound.verify("tok-2")
    for _ in range(4):
        bound.verify("tok-3").addErrback(lambda f: f.trap(AuthUnavailable))
    assert clock.getDelayedCalls(), "the count is said on a timer"
    bound.stopService()
    assert warnings(events)[1:] == [
        "refused token checks at the concurrency bound: 3 more in the last 10 s (backend.example: 3)"
    ]
    assert not clock.getDelayedCalls()
