"""A reader that resumes on an instance still replaying the stream: the web side's hold.

StubTreq and a fake clock; tests/scenarios/test_jetstream_resume.py runs it on real parts.
"""

from __future__ import annotations

import json

import pytest
import treq
from treq.testing import StubTreq
from twisted.internet.defer import Deferred

from monit.auth.jwt_verifier import JWTVerifier
from monit.registry import InboxRegistry
from monit.routing import ID_SHIFT
from monit.service import registry_options, web_options
from monit.settings import Settings
from monit.token import mint
from monit.web.app import MonitWeb

from deferreds import answered, result_of

URL = "http://monit.example/events?stream=job"
SECRET = "hold-secret"
pytestmark = pytest.mark.clock_starts_at(1_700_000_000)


class Holds:
    """What the feed's ``hold`` does, played by the test: ids above ``replayed`` wait."""

    def __init__(self) -> None:
        self.replayed = 0
        self.waiting: dict[Deferred[None], int] = {}

    def __call__(self, after: int) -> Deferred[None] | None:
        if after <= self.replayed:
            return None
        waiter: Deferred[None] = Deferred(self._stop_waiting)
        self.waiting[waiter] = after
        return waiter

    def _stop_waiting(self, waiter: Deferred[None]) -> None:
        self.waiting.pop(waiter, None)

    def replay_to(self, event_id: int) -> None:
        self.replayed = event_id
        for waiter, after in list(self.waiting.items()):
            if after <= event_id:
                del self.waiting[waiter]
                waiter.callback(None)


def web(clock, holds, registry):
    return StubTreq(
        MonitWeb(
            registry, JWTVerifier.with_secret(SECRET, clock), clock, **web_options(Settings(heartbeat=15)), hold=holds
        ).resource()
    )


def headers(clock, last_id: int, accept: str = "*/*") -> dict:
    return {
        "X-Auth-Token": mint(SECRET, "alice", 3600, now=clock.seconds()),
        "Last-Event-ID": str(last_id),
        "Accept": accept,
    }


def test_a_held_reader_starts_once_the_replay_passes_its_id_and_gets_exactly_what_follows(clock):
    registry, holds = InboxRegistry(clock, **registry_options(Settings(jetstream=True))), Holds()
    stub = web(clock, holds, registry)
    registry.open("job", "{}", "service.create", 1 << ID_SHIFT)
    asked = stub.get(URL, headers=headers(clock, 3 << ID_SHIFT))
    stub.flush()
    assert not answered(asked) and list(holds.waiting.values()) == [3 << ID_SHIFT], "held, nothing sent"
    for seq in (2, 3, 4):
        registry.publish("job", f'{{"n":{seq}}}', None, seq << ID_SHIFT)
    holds.replay_to(4 << ID_SHIFT)
    clock.advance(0)
    stub.flush()
    response = result_of(asked)
    assert response.code == 200
    chunks: list[bytes] = []
    treq.collect(response, chunks.append)
    stub.flush()
    assert b"".join(chunks) == b'retry: 3000\n\nid: %d\ndata: {"n":4}\n\n' % (4 << ID_SHIFT)


@pytest.mark.parametrize("accept", ["*/*", "text/event-stream"])
def test_a_reader_held_past_a_heartbeat_is_told_to_come_back(clock, accept):
    holds = Holds()
    stub = web(clock, holds, InboxRegistry(clock, **registry_options(Settings(jetstream=True))))
    asked = stub.get(URL, headers=headers(clock, 9 << ID_SHIFT, accept))
    stub.flush()
    clock.advance(14.9)
    assert not answered(asked)
    clock.advance(0.2)
    stub.flush()
    response = result_of(asked)
    assert not holds.waiting, "no longer waiting"
    body = result_of(response.content())
    if accept == "*/*":
        assert response.code == 503 and response.headers.getRawHeaders("retry-after") == ["5"]
        assert json.loads(body) == {"error": "this instance is still replaying the stream: try again"}
    else:  # an EventSource gives up on anything but a 200
        assert response.code == 200 and body.startswith(b"retry: 5000\n\nevent: monit.error\n")


def test_a_new_reader_or_one_the_replay_has_passed_is_never_held(clock):
    holds = Holds()
    holds.replayed = 5 << ID_SHIFT
    stub = web(clock, holds, InboxRegistry(clock, **registry_options(Settings(jetstream=True))))
    for last_id in (0, 5 << ID_SHIFT):
        response = result_of(stub.get(URL, headers=headers(clock, last_id)))
        assert response.code == 200
    assert not holds.waiting
