"""``GET /jobs`` and ``GET /jobs/ID`` (monit.web.listing) through StubTreq with a fake clock: fields,
filters, paging and who may list."""

from __future__ import annotations

import jwt
import pytest
from treq.testing import StubTreq

from monit.auth.jwt_verifier import JWTVerifier
from monit.registry import InboxRegistry
from monit.service import registry_options, web_options
from monit.settings import Settings
from monit.web.app import MonitWeb

from deferreds import result_of

SECRET = "jobs-api-secret-of-a-good-length-0123456789"
NOW = 1_700_000_000.0
BASE = "http://monit.example"
pytestmark = pytest.mark.clock_starts_at(NOW)


def token(secret: str = SECRET, now: float = NOW, **claims) -> str:
    body = {"sub": "alice", "username": "alice", "exp": int(now) + 3600, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


@pytest.fixture
def registry(clock):
    return InboxRegistry(clock, **registry_options(Settings(grace=10, stall_after=300)))


@pytest.fixture
def stub(clock, registry):
    web = MonitWeb(registry, JWTVerifier.with_secret(SECRET, clock), clock, **web_options(Settings()))
    return StubTreq(web.resource())


def get(stub, path: str, bearer: str | None) -> tuple[int, dict]:
    headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
    response = result_of(stub.get(BASE + path, headers=headers))
    body = response.json()
    stub.flush()
    return response.code, result_of(body)


class Quiet:
    """A reader that takes everything and keeps nothing."""

    def deliver(self, batch) -> None:
        pass

    def end(self) -> None:
        pass

    def notice(self, frame: bytes) -> None:
        pass


def add_jobs(registry, clock, count: int) -> list[str]:
    """Jobs job00…, each a second after the one before; the newest first, as listed."""
    names = [f"job{n:02d}" for n in range(count)]
    for name in names:
        registry.open(name, f'{{"id":"{name}"}}', "service.create")
        clock.advance(1)
    return names[::-1]


def test_the_scope_lists_every_job_newest_activity_first(stub, registry, clock):
    newest_first = add_jobs(registry, clock, 3)
    registry.publish("job00", '{"body":"late"}')
    code, body = get(stub, "/jobs", token(scope="openid monit:jobs"))
    assert code == 200
    assert [job["id"] for job in body["jobs"]] == ["job00", *newest_first[:2]]
    assert body["next"] is None
    assert body["jobs"][0] == {
        "id": "job00",
        "state": "open",
        "opened_at": "2023-11-14T22:13:20.000Z",
        "closed_at": None,
        "events": 2,
        "last_event_at": "2023-11-14T22:13:23.000Z",
        "last_event_type": "message",
        "readers": 0,
        "stalled": False,
    }


def test_pages_follow_the_cursor_without_repeats_or_holes(stub, registry, clock):
    newest_first = add_jobs(registry, clock, 25)
    seen, path = [], "/jobs?limit=10"
    while True:
        code, body = get(stub, path, token(scope="monit:jobs"))
        assert code == 200 and len(body["jobs"]) <= 10
        seen.extend(job["id"] for job in body["jobs"])
        if body["next"] is None:
            break
        path = f"/jobs?limit=10&cursor={body['next']}"
    assert seen == newest_first


def test_jobs_with_the_same_time_page_by_id(stub, registry):
    for name in ("b", "a", "c"):
        registry.open(name, f'{{"id":"{name}"}}', "service.create")
    _, first = get(stub, "/jobs?limit=2", token(scope="monit:jobs"))
    _, second = get(stub, f"/jobs?limit=2&cursor={first['next']}", token(scope="monit:jobs"))
    assert [job["id"] for job in first["jobs"] + second["jobs"]] == ["a", "b", "c"]


def test_filters_by_state_and_since(stub, registry, clock):
    add_jobs(registry, clock, 4)
    registry.close("job01", '{"id":"job01"}', "service.create.done")
    registry.close("job02", '{"id":"job02"}', "service.create.error")
    registry.subscribe("asked", Quiet())
    scoped = token(scope="monit:jobs")
    assert [j["id"] for j in get(stub, "/jobs?state=open", scoped)[1]["jobs"]] == ["job03", "job00"]
    assert [j["id"] for j in get(stub, "/jobs?state=error", scoped)[1]["jobs"]] == ["job02"]
    assert [j["id"] for j in get(stub, "/jobs?state=waiting", scoped)[1]["jobs"]] == ["asked"]
    since = get(stub, "/jobs?since=2023-11-14T22:13:23Z", scoped)[1]["jobs"]
    assert {j["id"] for j in since} == {"job01", "job02", "job03", "asked"}
    naive = get(stub, "/jobs?since=2023-11-14T22:13:23.5", scoped)[1]["jobs"]
    assert {j["id"] for j in naive} == {"job01", "job02", "asked"}


@pytest.mark.parametrize(
    "query, says",
    [
        ("?state=running", "'state' is one of"),
        ("?since=yesterday", "'since' is not an ISO 8601 time"),
        ("?limit=0", "'limit' is a number from 1 to 1000"),
        ("?limit=1001", "'limit' is a number from 1 to 1000"),
        ("?limit=ten", "'limit'"),
        ("?cursor=bm90IGEgY3Vyc29y", "'cursor' is not one that monit gave"),
        ("?cursor=%%%", "'cursor'"),
        ("?state=open&state=closed", "more than one 'state'"),
    ],
)
def test_a_query_monit_cannot_read_is_400(stub, query, says):
    code, body = get(stub, "/jobs" + query, token(scope="monit:jobs"))
    assert code == 400 and says in body["error"]


def test_a_limit_of_a_thousand_is_taken(stub, registry, clock):
    add_jobs(registry, clock, 3)
    code, body = get(stub, "/jobs?limit=1000", token(scope="monit:jobs"))
    assert code == 200 and len(body["jobs"]) == 3


def test_a_streams_claim_lists_only_its_jobs_without_a_scope(stub, registry, clock):
    add_jobs(registry, clock, 5)
    code, body = get(stub, "/jobs", token(streams=["job01", "job03", "nothere"]))
    assert code == 200 and [job["id"] for job in body["jobs"]] == ["job03", "job01"]


def test_without_the_right_listing_is_403_with_the_reason(stub, registry, clock):
    add_jobs(registry, clock, 2)
    for bearer in (token(), token(scope="monit:other"), token(streams="*")):
        code, body = get(stub, "/jobs", bearer)
        assert code == 403 and "monit:jobs" in body["error"]


def test_listing_takes_a_valid_token(stub):
    assert get(stub, "/jobs", None)[0] == 401
    assert get(stub, "/jobs", token(secret="another-secret-of-a-good-length-012345"))[0] == 401


def test_one_job_needs_only_the_right_to_watch_it(stub, registry, clock):
    add_jobs(registry, clock, 2)
    code, body = get(stub, "/jobs/job01", token())
    assert code == 200 and body["id"] == "job01" and body["state"] == "open"
    assert get(stub, "/jobs/job01", token(streams=["job01"]))[0] == 200
    code, body = get(stub, "/jobs/job00", token(streams=["job01"]))
    assert code == 403 and body == {"error": "not allowed to watch this job"}


def test_an_unknown_job_is_404_and_a_bad_id_400(stub):
    code, body = get(stub, "/jobs/nothere", token())
    assert code == 404 and body == {"error": "no such job"}
    assert get(stub, "/jobs/a%20b", token())[0] == 400


def test_an_abandoned_job_is_listed_as_such(stub, registry, clock):
    registry.open("gone", '{"id":"gone"}', "service.create")
    clock.advance(3600.2)
    code, body = get(stub, "/jobs?state=abandoned", token(now=clock.seconds(), scope="monit:jobs"))
    assert code == 200 and [(job["id"], job["state"]) for job in body["jobs"]] == [("gone", "abandoned")]
    assert get(stub, "/jobs/gone", token(now=clock.seconds()))[1]["state"] == "abandoned"
