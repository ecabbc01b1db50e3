"""``GET /jobs`` and ``GET /jobs/ID``: fields, filters, paging and who may list.

Unit tests through StubTreq with a fake clock, then real parts: a
nats-server, monit over HTTP, an auth service over HTTP, a Redis, and two
``--jetstream`` instances that must give the same answer.
"""
from __future__ import annotations

import json
import time

import jwt
import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from monit.auth.jwt_verifier import JWTVerifier
from monit.registry import InboxRegistry
from monit.service import registry_options, web_options
from monit.settings import Settings
from monit.token import mint
from monit.web.app import MonitWeb

from deferreds import result_of
from publisher import Publisher
from redisserver import RedisServer
from streams import SECRET as MONIT_SECRET
from streams import auth, job_message, open_stream, start_monit
from waiting import wait_for, within

SECRET = "jobs-api-secret-of-a-good-length-0123456789"
NOW = 1_700_000_000.0
BASE = "http://monit.example"


def token(secret: str = SECRET, now: float = NOW, **claims) -> str:
    body = {"sub": "alice", "username": "alice", "exp": int(now) + 3600, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(NOW)
    return clock


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
        "id": "job00", "state": "open", "opened_at": "2023-11-14T22:13:20.000Z", "closed_at": None, "events": 2,
        "last_event_at": "2023-11-14T22:13:23.000Z", "last_event_type": "message", "readers": 0, "stalled": False,
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


@pytest.mark.parametrize("query, says", [
    ("?state=running", "'state' is one of"),
    ("?since=yesterday", "'since' is not an ISO 8601 time"),
    ("?limit=0", "'limit' is a number from 1 to 1000"),
    ("?limit=1001", "'limit' is a number from 1 to 1000"),
    ("?limit=ten", "'limit'"),
    ("?cursor=bm90IGEgY3Vyc29y", "'cursor' is not one that monit gave"),
    ("?cursor=%%%", "'cursor'"),
    ("?state=open&state=closed", "more than one 'state'"),
])
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


# Real parts


async def get_json(url: str, headers: dict) -> tuple[int, dict]:
    response = await within(treq.get(url, headers=headers))
    return response.code, json.loads(await within(treq.content(response)))


def bearer(secret: str = MONIT_SECRET, **claims) -> dict:
    return {"Authorization": f"Bearer {token(secret, time.time(), **claims)}"}


@pytest_twisted.ensureDeferred
async def test_listing_rights_and_paging_over_http(nats_server, publisher):
    monit = await start_monit(nats_server.url)
    try:
        names = [f"page{n}" for n in range(7)]
        for name in names:
            publisher.publish("service.create", {"service": f"env-{name}"})
        publisher.publish("monitor.user", job_message("page3", "last"))
        await wait_for(lambda: monit.registry.summary("page3") and monit.registry.summary("page3").events == 2)
        reader = await open_stream(monit, "page5")
        seen, url = [], f"{monit.base_url}/jobs?state=open&limit=3"
        while url:
            code, body = await get_json(url, bearer(scope="monit:jobs"))
            assert code == 200
            seen.extend(job for job in body["jobs"] if job["id"].startswith("page"))
            url = body["next"] and f"{monit.base_url}/jobs?state=open&limit=3&cursor={body['next']}"
        assert seen[0]["id"] == "page3" and seen[0]["events"] == 2
        assert sorted(job["id"] for job in seen) == names
        assert next(job for job in seen if job["id"] == "page5")["readers"] == 1
        code, body = await get_json(f"{monit.base_url}/jobs", bearer(streams=["page1", "page2"]))
        assert code == 200 and sorted(job["id"] for job in body["jobs"]) == ["page1", "page2"]
        code, body = await get_json(f"{monit.base_url}/jobs", auth())
        assert code == 403 and "monit:jobs" in body["error"]
        code, body = await get_json(f"{monit.base_url}/jobs/page4", auth())
        assert code == 200 and body["state"] == "open"
        code, body = await get_json(f"{monit.base_url}/jobs/nothere", auth())
        assert code == 404 and body == {"error": "no such job"}
        reader.close()
    finally:
        await monit.stopService()


VERDICTS = {
    b"lister": b'{"username":"ops","scope":"openid monit:jobs"}',
    b"plain": b'{"username":"dev"}',
    b"odd": b'{"username":"dev","scope":["monit:jobs"]}',
}


class Verdicts(Resource):
    """An auth service with a verdict for each of three tokens."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return VERDICTS[request.getHeader(b"x-auth-token")]


@pytest_twisted.ensureDeferred
async def test_the_auth_services_verdict_carries_the_scope(nats_server, publisher):
    port = reactor.listenTCP(0, Site(Verdicts()), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}/check"
    monit = await start_monit(nats_server.url, jwt_secret=None, auth_url=url)
    try:
        publisher.publish("service.create", {"service": "env-verdict1"})
        await wait_for(lambda: "verdict1" in monit.registry)
        code, body = await get_json(f"{monit.base_url}/jobs", {"X-Auth-Token": "lister"})
        assert code == 200 and "verdict1" in [job["id"] for job in body["jobs"]]
        code, body = await get_json(f"{monit.base_url}/jobs", {"X-Auth-Token": "plain"})
        assert code == 403 and "monit:jobs" in body["error"]
        code, _ = await get_json(f"{monit.base_url}/jobs", {"X-Auth-Token": "odd"})
        assert code == 503, "a scope that is not a string is a malformed verdict: monit fails closed"
        code, body = await get_json(f"{monit.base_url}/jobs/verdict1", {"X-Auth-Token": "plain"})
        assert code == 200 and body["id"] == "verdict1"
    finally:
        await monit.stopService()
        await port.stopListening()


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(str(tmp_path))
    server.start()
    yield server
    server.stop()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_redis_session_gives_no_right_to_list(nats_server, publisher, redis_server):
    redis_server.cli("SET", "sess-ops", "ops")
    monit = await start_monit(nats_server.url, jwt_secret=None, auth_redis=redis_server.url(), auth_timeout=1.0)
    try:
        publisher.publish("service.create", {"service": "env-redis1"})
        await wait_for(lambda: "redis1" in monit.registry)
        code, body = await get_json(f"{monit.base_url}/jobs", {"X-Auth-Token": "sess-ops"})
        assert code == 403 and "monit:jobs" in body["error"]
        code, body = await get_json(f"{monit.base_url}/jobs/redis1", {"X-Auth-Token": "sess-ops"})
        assert code == 200 and body["state"] == "open"
    finally:
        await monit.stopService()


def comparable(body: dict) -> list[dict]:
    """A listing without what is each instance's own (``readers``)."""
    return [{key: value for key, value in job.items() if key != "readers"} for job in body["jobs"]]


@pytest_twisted.ensureDeferred
async def test_two_jetstream_instances_give_the_same_answer(jetstream_server):
    stream = "JOBSAPI"
    one = await start_monit(jetstream_server.url, jetstream=True, jetstream_stream=stream)
    publisher = Publisher(jetstream_server.url)
    two = None
    try:
        await wait_for(lambda: one.feed.caught_up, what="the first instance ready")
        publisher.publish("service.create", {"service": "env-js1"})
        publisher.publish("monitor.user", job_message("js1", "a", "b"))
        publisher.publish("service.create", {"service": "env-js2"})
        publisher.publish("service.create.error", {"service": "env-js2"})
        publisher.publish("build.create", {"service": "env-js3"})
        publisher.publish("build.create.done", {"service": "env-js3"})
        publisher.publish("monitor.user", job_message("js4", "no open seen"))
        reader = await open_stream(one, "js1")
        two = await start_monit(jetstream_server.url, jetstream=True, jetstream_stream=stream)
        await wait_for(lambda: two.feed.caught_up, what="the second instance caught up")
        await wait_for(lambda: all(len(monit.registry) >= 4 for monit in (one, two)), what="both hold the jobs")
        answers = [await get_json(f"{monit.base_url}/jobs", bearer(scope="monit:jobs")) for monit in (one, two)]
        assert answers[0][0] == answers[1][0] == 200
        assert comparable(answers[0][1]) == comparable(answers[1][1])
        states = {job["id"]: job["state"] for job in answers[0][1]["jobs"]}
        assert states == {"js1": "open", "js2": "error", "js3": "closed", "js4": "open"}
        readers = [{job["id"]: job["readers"] for job in answer[1]["jobs"]}["js1"] for answer in answers]
        assert readers == [1, 0], "readers are each instance's own"
        for job in ("js1", "js2"):
            assert (await get_json(f"{one.base_url}/jobs/{job}", auth()))[1]["events"] == \
                (await get_json(f"{two.base_url}/jobs/{job}", auth()))[1]["events"]
        reader.close()
    finally:
        publisher.close()
        for monit in (one, two):
            if monit is not None:
                await monit.stopService()
