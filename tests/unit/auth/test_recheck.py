"""Rechecks of open streams' tokens: the verdicts, the spread, and the stream they end.

A fake clock and a verifier answered by hand; the end-to-end run against a real
auth service is in tests/scenarios/test_access.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.python.failure import Failure

from monit.auth.interface import AuthUnavailable, Identity, InvalidToken
from monit.auth.recheck import ACCESS_REVOKED, REVOKED, Recheck, Rechecker
from monit.registry import InboxRegistry
from monit.service import registry_options
from monit.settings import Settings
from monit.sse import KEEPALIVE, encode_error
from monit.web.stream import EventStream, OneJob, StreamSet

from deferreds import result_of
from inboxreader import inbox_of
from streamingrequest import StreamingRequest
from verifiers import HandVerifier, RaisingVerifier

TOKEN = "revocable-token-that-must-never-be-shown-0123456789"
GRACE = Identity(user="grace", claims={"username": "grace"}, expires=None, revocable=True)
HEARTBEAT = 15.0
PERIOD = 60.0


@pytest.fixture
def verifier() -> HandVerifier:
    return HandVerifier()


@pytest.fixture
def rechecker(verifier: HandVerifier) -> Rechecker:
    return Rechecker(verifier, PERIOD, jitter=lambda: 0.0)  # first due at half a period


# the verdicts


def verdict(rechecker: Rechecker, verifier: HandVerifier, answer: Identity | Exception, stream: str = "s1") -> Any:
    recheck = rechecker.for_stream(TOKEN, 0.0)
    d = recheck.run(100.0, (stream,))
    assert verifier.calls[-1][0] == TOKEN
    verifier.answer(answer)
    assert recheck.due == 100.0 + PERIOD
    return result_of(d)


def test_still_valid_keeps_the_stream(rechecker: Rechecker, verifier: HandVerifier) -> None:
    assert verdict(rechecker, verifier, GRACE) is None
    assert (rechecker.checks, rechecker.revoked, rechecker.unavailable) == (1, 0, 0)


def test_refused_ends_it(rechecker: Rechecker, verifier: HandVerifier) -> None:
    assert verdict(rechecker, verifier, InvalidToken("refused by the auth service")) == REVOKED
    assert (rechecker.checks, rechecker.revoked) == (1, 1)


def test_no_longer_allowed_to_watch_this_stream_ends_it(rechecker: Rechecker, verifier: HandVerifier) -> None:
    narrowed = Identity(user="grace", claims={"streams": ["other"]}, expires=None, revocable=True)
    assert verdict(rechecker, verifier, narrowed, stream="s1") == ACCESS_REVOKED
    assert verdict(rechecker, verifier, narrowed, stream="other") is None


def test_unavailable_keeps_the_stream(
    rechecker: Rechecker, verifier: HandVerifier, events: EventLoggingObserver
) -> None:
    """Fail closed is for new requests: an auth service's blip must not end every stream."""
    assert verdict(rechecker, verifier, AuthUnavailable("the auth service is unavailable")) is None
    assert (rechecker.revoked, rechecker.unavailable) == (0, 1)
    assert not [e for e in events if "log_failure" in e]


def test_an_unexpected_error_keeps_the_stream_and_is_logged(
    rechecker: Rechecker, verifier: HandVerifier, events: EventLoggingObserver
) -> None:
    assert verdict(rechecker, verifier, ZeroDivisionError()) is None
    assert len([e for e in events if "log_failure" in e]) == 1


def test_a_verifier_raising_keeps_the_stream(events: EventLoggingObserver) -> None:
    assert result_of(Rechecker(RaisingVerifier(), PERIOD).for_stream(TOKEN, 0.0).run(1.0, ("s1",))) is None


def test_the_first_recheck_is_spread_over_a_period() -> None:
    """A reconnect storm opens thousands of streams at once: their rechecks must not
    all come on one heartbeat."""
    rechecker = Rechecker(HandVerifier(), PERIOD)
    dues = [rechecker.for_stream(TOKEN, 1000.0).due for _ in range(10_000)]
    assert 1000 + PERIOD / 2 <= min(dues) and max(dues) < 1000 + PERIOD * 1.5
    per_heartbeat = [
        sum(1 for due in dues if start <= due < start + HEARTBEAT) for start in (1030.0, 1045.0, 1060.0, 1075.0)
    ]
    assert all(2000 <= n <= 3000 for n in per_heartbeat), per_heartbeat


def test_its_repr_never_shows_the_token(rechecker: Rechecker) -> None:
    recheck = rechecker.for_stream(TOKEN, 0.0)
    assert TOKEN not in repr(recheck) and TOKEN[:8] not in repr(recheck)
    assert not hasattr(recheck, "__dict__")


# on an open stream, driven by the shared heartbeat


@pytest.fixture
def registry(clock: Clock) -> InboxRegistry:
    return InboxRegistry(clock, **registry_options(Settings()))


@pytest.fixture
def streams(clock: Clock) -> StreamSet:
    streams = StreamSet(clock, HEARTBEAT, 3000, fast_path=False)
    streams.start()
    return streams


def open_stream(registry: InboxRegistry, streams: StreamSet, clock: Clock, recheck: Recheck | None) -> StreamingRequest:
    request = StreamingRequest()
    # a DummyRequest stands in for the HTTP request
    EventStream(request, OneJob(registry, "s1"), streams, "grace", clock, 1000, None, recheck).run()  # type: ignore[arg-type]
    return request


def written(request: StreamingRequest) -> bytes:
    return b"".join(request.written)


def test_a_revoked_token_ends_its_stream_with_an_error_frame(
    registry: InboxRegistry, streams: StreamSet, clock: Clock, rechecker: Rechecker, verifier: HandVerifier
) -> None:
    request = open_stream(registry, streams, clock, rechecker.for_stream(TOKEN, clock.seconds()))
    clock.advance(HEARTBEAT)  # not due before half a period
    assert verifier.calls == []
    clock.advance(HEARTBEAT)
    assert len(verifier.calls) == 1
    verifier.answer(GRACE)
    clock.advance(HEARTBEAT * 3)  # the next one is a period later
    assert len(verifier.calls) == 1
    clock.advance(HEARTBEAT)
    assert len(verifier.calls) == 2
    verifier.answer(InvalidToken("refused by the auth service"))
    assert written(request).endswith(KEEPALIVE + encode_error("token revoked"))
    assert request.finished
    assert len(streams) == 0 and not inbox_of(registry, "s1").subscribers


def test_an_auth_service_blip_keeps_the_stream(
    registry: InboxRegistry, streams: StreamSet, clock: Clock, rechecker: Rechecker, verifier: HandVerifier
) -> None:
    request = open_stream(registry, streams, clock, rechecker.for_stream(TOKEN, clock.seconds()))
    clock.advance(HEARTBEAT * 2)
    verifier.answer(AuthUnavailable("the auth service is unavailable"))
    registry.publish("s1", '{"body":"still here"}')
    clock.advance(HEARTBEAT * 4)
    assert len(verifier.calls) == 2, "asked again a period later"
    verifier.answer(GRACE)
    assert not request.finished and len(streams) == 1
    assert b"still here" in written(request)


def test_a_stream_gone_while_its_recheck_is_asked_is_left_alone(
    registry: InboxRegistry, streams: StreamSet, clock: Clock, rechecker: Rechecker, verifier: HandVerifier
) -> None:
    request = open_stream(registry, streams, clock, rechecker.for_stream(TOKEN, clock.seconds()))
    clock.advance(HEARTBEAT * 2)
    request.processingFailed(Failure(ConnectionLost()))
    before = written(request)
    verifier.answer(InvalidToken("refused by the auth service"))
    assert written(request) == before
    assert len(streams) == 0


def test_streams_without_a_recheck_are_never_asked(
    registry: InboxRegistry, streams: StreamSet, clock: Clock, verifier: HandVerifier
) -> None:
    request = open_stream(registry, streams, clock, None)
    clock.advance(HEARTBEAT * 100)
    assert verifier.calls == [] and not request.finished
