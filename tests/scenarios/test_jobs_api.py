"""``GET /jobs`` for real: a nats-server, monit over HTTP, an auth service over HTTP, a Redis, and two
``--jetstream`` instances that must give the same answer."""

from __future__ import annotations

import json
import time

import jwt
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from monit.auth.jwt_verifier import quiet_key_length

from publisher import Publisher
from redisserver import RedisServer
from streams import SECRET as MONIT_SECRET
from streams import auth, job_message, open_stream, start_monit
from waiting import wait_for, within


async def get_json(url: str, headers: dict) -> tuple[int, dict]:
    response = await within(treq.get(url, headers=headers))
    body: bytes = await within(treq.content(response))
    return response.code, json.loads(body)


def bearer(secret: str = MONIT_SECRET, **claims) -> dict:
    body = {"sub": "alice", "username": "alice", "exp": int(time.time()) + 3600, **claims}
    with quiet_key_length():  # the tests' monit secret is short
        return {"Authorization": f"Bearer {jwt.encode(body, secret, algorithm='HS256')}"}


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
            assert (await get_json(f"{one.base_url}/jobs/{job}", auth()))[1]["events"] == (
                await get_json(f"{two.base_url}/jobs/{job}", auth())
            )[1]["events"]
        reader.close()
    finally:
        publisher.close()
        for monit in (one, two):
            if monit is not None:
                await monit.stopService()
