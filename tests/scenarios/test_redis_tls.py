"""--auth-redis with rediss:// and an ACL user (redis://user:password@host), as managed Redis services
want them: Debian's redis-server with --tls-port and --user, monit in process and as ``twistd monit``,
real HTTP readers."""

from __future__ import annotations

import pytest
import pytest_twisted
import treq
from twisted.logger import formatEvent

from monit.settings import Settings

from pki import CA
from processes import curl_stream, read_until, run_twistd_monit, serving_monit, stop, unread, wait_until_ready
from redisserver import RedisServer, ServerTLS, User
from streams import hang_up, job_message, open_stream, start_monit, token_header
from waiting import wait_for, within

pytestmark = pytest.mark.integration

MONIT = User("monit", "pw-acl-sekrit", ("~sess-*", "+get", "+select", "+ping"))  # sessions only, read only
DB = 1


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CA:
    return CA(tmp_path_factory.mktemp("pki"))


def tls_server(folder, ca: CA) -> RedisServer:
    cert, key = ca.issue("redis", server=True)
    return RedisServer(str(folder), password="admin-pw", users=[MONIT], tls=ServerTLS(cert, key, ca.path))


@pytest.fixture(params=["rediss", "redis"])
def redis_server(request, tmp_path, ca: CA):
    """An ACL user's Redis, with TLS only (rediss) or in plain text (redis)."""
    server = (
        tls_server(tmp_path, ca)
        if request.param == "rediss"
        else RedisServer(str(tmp_path), password="admin-pw", users=[MONIT])
    )
    server.start()
    yield server
    server.stop()


async def readiness(monit) -> tuple[int, dict]:
    response = await within(treq.get(f"{monit.base_url}/readyz"))
    return response.code, await within(response.json())


async def status(monit, token: str) -> tuple[int, dict | None]:
    response = await within(
        treq.get(f"{monit.base_url}/events?stream=t1", headers=token_header(token), unbuffered=True)
    )
    if response.code == 200:
        hang_up(response)
        return 200, None
    return response.code, await within(response.json())


@pytest_twisted.ensureDeferred
async def test_an_acl_user_looks_tokens_up_over_tls_or_not(nats_server, redis_server, ca, publisher, events):
    redis_server.cli("SET", "sess-ok", "olga", db=DB)
    redis_server.cli("SET", "other-key", "mallory", db=DB)  # outside what the ACL user may read
    monit = await start_monit(
        nats_server.url,
        jwt_secret=None,
        auth_timeout=2.0,
        auth_redis=redis_server.url(db=DB, user=MONIT),
        auth_redis_tls_ca=ca.path if redis_server.tls else None,
    )
    try:
        reader = await open_stream(monit, "t1", {"X-Auth-Token": "sess-ok"})
        publisher.publish("monitor.user", job_message("t1", "over TLS" if redis_server.tls else "in clear"))
        await wait_for(lambda: reader.data(), what="the event")
        reader.close()
        assert await status(monit, "sess-nobody") == (401, {"error": "invalid token: unknown token"})
        assert await status(monit, "other-key") == (503, {"error": "token cannot be checked now"})
        assert (await readiness(monit))[1]["problems"] == []
    finally:
        await monit.stopService()
    shown = f"{'rediss' if redis_server.tls else 'redis'}://monit@127.0.0.1:{redis_server.port}/{DB}"
    assert [formatEvent(event) for event in events if "answered with an error" in formatEvent(event)] == [
        f"token lookups Redis answered with an error on {shown}: NOPERM this user has no permissions to access "
        "one of the keys used as arguments"
    ]
    assert not [event for event in events if "pw-acl-sekrit" in repr(event)]


@pytest_twisted.ensureDeferred
async def test_a_wrong_acl_password_is_refused_and_said(nats_server, tmp_path, ca, events):
    server = tls_server(tmp_path, ca)
    server.start()
    try:
        server.cli("SET", "sess-ok", "olga", db=DB)
        url = f"rediss://monit:wrong-sekrit@127.0.0.1:{server.port}/{DB}"
        monit = await start_monit(
            nats_server.url, jwt_secret=None, auth_timeout=1.0, auth_redis=url, auth_redis_tls_ca=ca.path
        )
        try:
            assert await status(monit, "sess-ok") == (503, {"error": "token cannot be checked now"})
            problem = (
                f"auth: Redis at rediss://monit@127.0.0.1:{server.port}/{DB}: AUTH refused: WRONGPASS "
                "invalid username-password pair or user is disabled."
            )
            assert (await readiness(monit)) == (
                200,
                {"ready": True, "nats": True, "listening": True, "problems": [problem]},
            )
        finally:
            await monit.stopService()
    finally:
        server.stop()
    assert not [event for event in events if "wrong-sekrit" in repr(event)]


@pytest_twisted.ensureDeferred
async def test_a_certificate_no_trusted_ca_signed_is_refused(nats_server, tmp_path, ca, events):
    server = tls_server(tmp_path, ca)
    server.start()
    try:
        server.cli("SET", "sess-ok", "olga", db=DB)
        monit = await start_monit(
            nats_server.url, jwt_secret=None, auth_timeout=1.0, auth_redis=server.url(db=DB, user=MONIT)
        )  # the system's CAs: not ours
        try:
            assert await status(monit, "sess-ok") == (503, {"error": "token cannot be checked now"})
            problems = (await readiness(monit))[1]["problems"]
            assert len(problems) == 1 and "certificate verify failed" in problems[0], problems
        finally:
            await monit.stopService()
    finally:
        server.stop()


def test_twistd_monit_with_rediss_and_an_acl_user_streams_to_curl(tmp_path, nats_server, ca, publisher):
    server = tls_server(tmp_path, ca)
    server.start()
    base, monit = serving_monit(
        tmp_path,
        nats_server.url,
        "--auth-redis",
        server.url(db=DB, user=MONIT),
        "--auth-redis-tls-ca",
        ca.path,
        "--grace",
        "0.2",
    )
    try:
        server.cli("SET", "sess-curl", "olga", db=DB)
        wait_until_ready(base)
        publisher.publish("build.create", {"id": "r1"})
        curl = curl_stream(f"{base}/events?stream=r1", "sess-curl")
        read_until(curl, b"event: build.create\n")
        publisher.publish("monitor.user", {"id": "r1", "messages": [{"body": "over rediss"}]})
        publisher.publish("build.create.done", {"id": "r1"})
        output = unread(curl) + curl.communicate(timeout=20)[0]
        assert b'data: {"body":"over rediss"}\n\n' in output
    finally:
        assert stop(monit) == 0
        server.stop()
    assert b"pw-acl-sekrit" not in monit.stdout.read()


@pytest.mark.parametrize(
    "args, said",
    [
        (
            ["--auth-redis", "redis://cache.internal/0", "--auth-redis-tls-ca", "CA"],
            "monit: --auth-redis-tls-ca is for a rediss:// --auth-redis (Redis over TLS)",
        ),
        (
            ["--auth-redis", "rediss://monit@cache.internal/0"],
            "monit: --auth-redis 'rediss://***@cache.internal/0' names a user but no password",
        ),
    ],
)
def test_start_up_errors_are_one_line(tmp_path, ca, args, said):
    args = [ca.path if arg == "CA" else arg for arg in args]
    result = run_twistd_monit(tmp_path, *args)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), result.stderr


def test_settings_take_rediss_and_its_ca_and_show_no_password(ca):
    settings = Settings(auth_redis="rediss://monit:pw-sekrit@cache:6380/1", auth_redis_tls_ca=ca.path)
    assert settings.auth_redis_tls_ca == ca.path
    assert "auth_redis='rediss://monit:***@cache:6380/1'" in repr(settings) and "pw-sekrit" not in repr(settings)
