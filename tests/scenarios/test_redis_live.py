"""--auth-redis against a real redis-server and a real nats-server, over real HTTP:
in-process monit read with treq, and ``twistd monit`` read with curl."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher

from natsserver import free_port
from processes import curl_stream, read_until, run_twistd_monit, stop, twistd_monit, unread, wait_until_ready
from redisserver import RedisServer
from streams import hang_up, job_message, open_stream, start_monit, token_header
from waiting import wait_for, within

pytestmark = pytest.mark.integration  # redis-server, nats-server and curl as child processes


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of the test's own, which it may stop and restart."""
    server = RedisServer(str(tmp_path))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_monit(nats_server, redis_server):
    """monit looking tokens up in the test's Redis, asking again about open streams every half second."""
    service = pytest_twisted.blockon(
        ensureDeferred(
            start_monit(
                nats_server.url, jwt_secret=None, auth_redis=redis_server.url(), auth_timeout=1.0, auth_recheck=0.5
            )
        )
    )
    yield service
    pytest_twisted.blockon(service.stopService())


async def get(monit, stream: str, token: str):
    response = await within(
        treq.get(
            f"{monit.base_url}/events?stream={stream}",
            headers={**token_header(token), "Accept": "*/*"},
            unbuffered=True,
        )
    )
    if response.code == 200:
        hang_up(response)
    return response


async def codes_until_200(monit, token: str, timeout: float) -> list[int]:
    """Ask until the answer is 200, with a deadline; every answer's code."""
    deadline = time.monotonic() + timeout
    codes = [(await get(monit, "r1", token)).code]
    while codes[-1] != 200:
        assert time.monotonic() < deadline, f"no 200 within {timeout}s: {codes}"
        await deferLater(reactor, 0.05, lambda: None)
        codes.append((await get(monit, "r1", token)).code)
    return codes


@pytest_twisted.ensureDeferred
async def test_a_known_token_streams_a_jobs_events(redis_monit, redis_server, publisher, events):
    redis_server.cli("SET", "sess-alice", "alice")
    reader = await open_stream(redis_monit, "r1", {"X-Auth-Token": "sess-alice"})
    publisher.publish("monitor.user", job_message("r1", "hello from the engine"))
    await wait_for(lambda: reader.data(), what="the event on the stream")
    assert reader.data() == [{"body": "hello from the engine", "level": "INFO"}]
    assert "stream r1 opened for alice" in [formatEvent(event) for event in events]
    reader.close()


@pytest_twisted.ensureDeferred
async def test_an_unknown_token_is_401_with_a_reason_and_a_challenge(redis_monit):
    response = await get(redis_monit, "r1", "sess-nobody")
    assert response.code == 401
    assert await within(response.json()) == {"error": "invalid token: unknown token"}
    assert response.headers.getRawHeaders("www-authenticate") == [
        'Bearer realm="monit", error="invalid_token", error_description="invalid token: unknown token"'
    ]


@pytest_twisted.ensureDeferred
async def test_a_value_that_is_no_user_name_fails_closed(redis_monit, redis_server):
    redis_server.cli("SET", "sess-blank", "")
    redis_server.cli("RPUSH", "sess-list", "alice")
    redis_server.cli("SET", "sess-binary", b"\xff\xfe")
    for token in ("sess-blank", "sess-list", "sess-binary"):
        response = await get(redis_monit, "r1", token)
        assert response.code == 503, token
        assert await within(response.json()) == {"error": "token cannot be checked now"}


@pytest_twisted.ensureDeferred
async def test_redis_stopped_is_503_and_back_to_200_when_it_returns(redis_monit, redis_server):
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        redis_server.cli("SET", "sess-a", "alice")
        assert (await get(redis_monit, "r1", "sess-a")).code == 200
        redis_server.stop()
        for n in range(2):
            response = await get(redis_monit, "r1", f"sess-{n}")
            assert response.code == 503
            assert response.headers.getRawHeaders("retry-after") == ["5"]
        redis_server.start()
        redis_server.cli("SET", "sess-b", "bob")
        codes = await codes_until_200(redis_monit, "sess-b", timeout=30)
        assert set(codes[:-1]) <= {503}, codes
    finally:
        globalLogPublisher.removeObserver(seen.append)
    said = [formatEvent(event) for event in seen if "Redis at" in formatEvent(event)]
    gone, back = said[:-1], said[-1]
    assert gone and len(set(gone)) == len(gone), said  # each reason once: the connection lost, then refused
    assert all(
        line.startswith(f"cannot look tokens up in Redis at redis://127.0.0.1:{redis_server.port}/0: ") for line in gone
    ), said
    assert back == f"Redis at redis://127.0.0.1:{redis_server.port}/0 answers again"


@pytest_twisted.ensureDeferred
async def test_a_redis_that_does_not_answer_is_503_within_the_auth_timeout(redis_monit, redis_server):
    redis_server.cli("SET", "sess-a", "alice")
    assert (await get(redis_monit, "r1", "sess-a")).code == 200
    redis_server.pause()
    try:
        started = time.monotonic()
        response = await get(redis_monit, "r1", "sess-p")
        assert response.code == 503
        assert time.monotonic() - started < 5, "answered at --auth-timeout (1 s), not left hanging"
    finally:
        redis_server.resume()
    codes = await codes_until_200(redis_monit, "sess-a", timeout=30)
    assert set(codes[:-1]) <= {503}, codes
    await wait_for(lambda: redis_monit.auth.remote.in_flight == 0, what="every lookup's slot freed")


@pytest_twisted.ensureDeferred
async def test_a_del_ends_an_open_stream_at_its_recheck(redis_monit, redis_server, publisher):
    redis_server.cli("SET", "sess-gone", "grace")
    redis_server.cli("SET", "sess-kept", "heidi")
    gone = await open_stream(redis_monit, "d1", {"X-Auth-Token": "sess-gone"})
    kept = await open_stream(redis_monit, "d1", {"X-Auth-Token": "sess-kept"})
    publisher.publish("monitor.user", job_message("d1", "before"))
    await wait_for(lambda: gone.data() and kept.data(), what="the event on both streams")
    assert redis_server.cli("DEL", "sess-gone") == "1"
    await within(gone.done, timeout=10)
    assert gone.events[-1].event == "monit.error"
    assert json.loads(gone.events[-1].data) == {"error": "token revoked"}
    publisher.publish("monitor.user", job_message("d1", "after"))
    await wait_for(lambda: len(kept.data()) == 2, what="the next event on the stream kept")
    assert not kept.ended and redis_monit.web.rechecker.revoked == 1
    kept.close()


@pytest_twisted.ensureDeferred
async def test_the_cache_answers_repeated_requests_without_asking_redis_each_time(nats_server, redis_server):
    redis_server.cli("SET", "sess-busy", "ivan")
    monit = await start_monit(nats_server.url, jwt_secret=None, auth_redis=redis_server.url(), auth_timeout=1.0)
    try:
        before = redis_server.calls("get")
        for _ in range(20):
            assert (await get(monit, "c1", "sess-busy")).code == 200
        for _ in range(5):
            assert (await get(monit, "c1", "sess-unknown")).code == 401
        assert redis_server.calls("get") - before == 2, "one GET per token"
        assert monit.auth.verifier.hits == 23
        metrics = await within(treq.get(f"{monit.base_url}/metrics", headers={"X-Auth-Token": "sess-busy"}))
        text = await within(treq.text_content(metrics))
        assert "monit_auth_checks_in_flight 0.0" in text and "monit_auth_checks_refused_total 0.0" in text
    finally:
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_password_and_a_database_of_the_url_are_used_and_never_logged(nats_server, tmp_path):
    server = RedisServer(str(tmp_path), password="pw-sekrit-42")
    server.start()
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        server.cli("SET", "sess-db3", "judy", db=3)
        server.cli("SET", "sess-db0", "mallory")
        monit = await start_monit(nats_server.url, jwt_secret=None, auth_redis=server.url(db=3), auth_timeout=1.0)
        try:
            assert (await get(monit, "p1", "sess-db3")).code == 200
            assert (await get(monit, "p1", "sess-db0")).code == 401, "another database's session"
            server.stop()
            assert (await get(monit, "p1", "sess-other")).code == 503
        finally:
            await monit.stopService()
    finally:
        globalLogPublisher.removeObserver(seen.append)
        server.stop()
    assert any("cannot look tokens up in Redis" in formatEvent(event) for event in seen)
    leaks = [event for event in seen if "pw-sekrit" in repr(event) or "pw-sekrit" in formatEvent(event)]
    assert not leaks, leaks[:3]


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_fails_closed_and_is_said(nats_server, tmp_path, events):
    server = RedisServer(str(tmp_path), password="right-password")
    server.start()
    try:
        server.cli("SET", "sess-x", "ken")
        monit = await start_monit(
            nats_server.url,
            jwt_secret=None,
            auth_timeout=1.0,
            auth_redis=f"redis://:wrong-password@127.0.0.1:{server.port}/0",
        )
        try:
            assert (await get(monit, "w1", "sess-x")).code == 503
            await wait_for(lambda: refusals(events), what="the refusal logged")
        finally:
            await monit.stopService()
    finally:
        server.stop()
    assert refusals(events) == [
        f"Redis at redis://127.0.0.1:{server.port}/0: AUTH refused: WRONGPASS invalid username-password pair "
        "or user is disabled.; token checks answer 503, and monit tries again every 30 s"
    ]
    assert not [event for event in events if "wrong-password" in repr(event)]
    assert not [event for event in events if "log_failure" in event], "closed without an error"


def refusals(events) -> list[str]:
    return [formatEvent(event) for event in events if "AUTH refused" in formatEvent(event)]


# twistd monit


def test_twistd_monit_with_auth_redis_streams_to_curl(tmp_path, nats_server, redis_server, publisher):
    redis_server.cli("SET", "sess-curl", "olga")
    port = free_port()
    monit = twistd_monit(
        tmp_path,
        "--nats",
        nats_server.url,
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--auth-redis",
        redis_server.url(),
        "--grace",
        "0.2",
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}")
        refused = subprocess.run(
            ["curl", "-s", "-H", "X-Auth-Token: sess-nobody", f"http://127.0.0.1:{port}/events?stream=t1"],
            capture_output=True,
            timeout=30,
        )
        assert json.loads(refused.stdout) == {"error": "invalid token: unknown token"}
        publisher.publish("build.create", {"id": "t1"})
        curl = curl_stream(f"http://127.0.0.1:{port}/events?stream=t1", "sess-curl")
        read_until(curl, b"event: build.create\n")
        publisher.publish("monitor.user", {"id": "t1", "messages": [{"body": "compiling"}]})
        publisher.publish("build.create.done", {"id": "t1"})
        output = unread(curl) + curl.communicate(timeout=20)[0]
        assert b'data: {"body":"compiling"}\n\n' in output and b"event: build.create.done\n" in output
    finally:
        assert stop(monit) == 0, "SIGTERM is a clean stop"


@pytest.mark.parametrize(
    "args, said",
    [
        (
            ["--auth-redis", "redis://:pw-sekrit@cache.internal/db"],
            "monit: --auth-redis 'redis://:***@cache.internal/db': the path must be a database number (/0, /1, …)",
        ),
        (
            ["--auth-redis", "redis://cache.internal/0", "--auth-url", "http://auth.example/check"],
            "monit: --auth-redis and --auth-url are two places to ask about a token: give one",
        ),
    ],
)
def test_start_up_errors_are_one_line_and_status_1(tmp_path, args, said):
    result = run_twistd_monit(tmp_path, *args)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [said]
    assert "Traceback" not in result.stdout + result.stderr and "pw-sekrit" not in result.stdout + result.stderr
