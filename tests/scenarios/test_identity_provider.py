"""Tokens of an identity provider, end to end: a JWKS served on loopback, monit in process and
as ``twistd monit``, real HTTP readers, a real nats-server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import pytest_twisted
import treq
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent
from twisted.web.server import Site

from jwks_provider import Provider, jwks_in_a_thread
from loopback import base_url, listen, stop_listening
from natsserver import free_port
from processes import curl_stream, read_until, run_twistd_monit, stop, twistd_monit, wait_until_ready
from publisher import Publisher
from signing import AUDIENCE, ISSUER, Signer, hmac_with_public_key, jwks
from streams import hang_up, job_message, open_stream, start_monit, token_header
from waiting import wait_for, within

MIN_REFETCH = 1.0  # seconds between fetches for unknown kids: monit's default
AUTH_TIMEOUT = 2.0  # --auth-timeout's default


@pytest.fixture
def provider(rsa: Signer, ec: Signer, ed: Signer) -> Iterator[Provider]:
    provider = Provider(jwks(rsa, ec, ed))
    port = listen(Site(provider))
    provider.url = f"{base_url(port)}/realms/ops/protocol/openid-connect/certs"
    provider.port = port
    yield provider
    pytest_twisted.blockon(maybeDeferred(port.stopListening))  # a test may have stopped it


@pytest.fixture
def monit(nats_server, provider: Provider):
    service = pytest_twisted.blockon(
        ensureDeferred(
            start_monit(
                nats_server.url,
                jwt_secret=None,
                jwt_jwks_url=provider.url,
                jwt_audience=AUDIENCE,
                jwt_issuer=ISSUER,
            )
        )
    )
    pytest_twisted.blockon(ensureDeferred(wait_for(lambda: provider.requests == 1, what="keys fetched at start")))
    yield service
    pytest_twisted.blockon(service.stopService())


async def answer(monit, token: str, stream: str = "job") -> tuple[int, dict]:
    """The status and JSON body of a request that is refused."""
    response = await within(treq.get(f"{monit.base_url}/events?stream={stream}", headers=token_header(token)))
    assert response.code != 200, "expected a refusal"
    return response.code, await within(response.json())


async def first_status(monit, token: str) -> int:
    response = await within(
        treq.get(f"{monit.base_url}/events?stream=probe", headers=token_header(token), unbuffered=True)
    )
    hang_up(response)  # a 200 is a stream: hang up
    code: int = response.code
    return code


@pytest_twisted.ensureDeferred
async def test_rs256_es256_and_eddsa_tokens_stream(monit, publisher, rsa: Signer, ec: Signer, ed: Signer) -> None:
    readers = [await open_stream(monit, "idp1", headers={"X-Auth-Token": signer.token()}) for signer in (rsa, ec, ed)]
    publisher.publish("monitor.user", job_message("idp1", "hello"))
    await wait_for(lambda: all(reader.data() for reader in readers), what="the message on every stream")
    assert [reader.data() for reader in readers] == [[{"body": "hello", "level": "INFO"}]] * 3
    for reader in readers:
        reader.close()


@pytest_twisted.ensureDeferred
async def test_refusals_say_why(monit, rsa: Signer, ec: Signer) -> None:
    forged = hmac_with_public_key(rsa)
    for token, code, error in [
        (ec.token(aud="another-app"), 401, "invalid token: unexpected audience"),
        (ec.token(aud=None), 401, "invalid token: token has no aud"),
        (rsa.token(iss="https://evil.example"), 401, "invalid token: unexpected issuer"),
        (forged, 401, "invalid token: algorithm not allowed"),
        (Signer.make("RS256").token(kid=rsa.kid), 401, "invalid token: bad signature"),
        (ec.token(streams=["elsewhere"]), 403, None),
    ]:
        status, body = await answer(monit, token)
        assert status == code, body
        assert error is None or body == {"error": error}


@pytest_twisted.ensureDeferred
async def test_a_key_rotated_in_just_after_a_fetch_is_taken_at_its_first_use(
    monit, provider: Provider, rsa: Signer
) -> None:
    new = Signer.make("RS256")
    provider.body = jwks(rsa, new)  # the start-up fetch was a moment ago
    started = time.monotonic()
    assert await first_status(monit, new.token()) == 200, "no 401: an EventSource would give up for good"
    assert time.monotonic() - started < AUTH_TIMEOUT
    assert provider.requests == 2


@pytest_twisted.ensureDeferred
async def test_made_up_kids_cost_one_fetch_a_second_shared(monit, provider: Provider, rsa: Signer) -> None:
    fetched, started = provider.requests, time.monotonic()
    tokens = [rsa.token(kid=f"bogus-{n}") for n in range(50)]
    storm = [ensureDeferred(answer(monit, token)) for token in tokens]
    for check in storm:
        assert await within(check) == (401, {"error": "invalid token: unknown signing key"})
    allowed = 1 + (time.monotonic() - started) / MIN_REFETCH
    assert provider.requests - fetched <= allowed, "fifty made-up kids, no more fetches than the limit allows"
    fetched = provider.requests
    again = [ensureDeferred(answer(monit, token)) for token in tokens[:10]]  # the same tokens: not kept as 401
    for check in again:
        assert await within(check) == (401, {"error": "invalid token: unknown signing key"})
    assert provider.requests == fetched + 1, "asked again, all ten in one fetch"


@pytest_twisted.ensureDeferred
async def test_an_rsa_and_an_ec_key_sharing_a_kid_each_check_their_own_tokens(
    monit, provider: Provider, rsa: Signer, ec: Signer
) -> None:
    provider.body = json.dumps({"keys": [rsa.jwk(kid="shared"), ec.jwk(kid="shared")]}).encode()
    for signer in (rsa, ec):
        assert await first_status(monit, signer.token(kid="shared")) == 200, signer.algorithm


async def readiness(monit) -> tuple[int, dict]:
    response = await within(treq.get(f"{monit.base_url}/readyz"))
    return response.code, await within(response.json())


@pytest_twisted.ensureDeferred
async def test_while_the_jwks_is_down_known_keys_stream_unknown_ones_get_503_and_readyz_says_why(
    monit, provider: Provider, publisher, ec: Signer
) -> None:
    await stop_listening(provider.port)
    known = await open_stream(monit, "down1", headers={"X-Auth-Token": ec.token()})
    publisher.publish("monitor.user", job_message("down1", "still here"))
    await wait_for(lambda: known.data(), what="the message")
    assert known.data() == [{"body": "still here", "level": "INFO"}]
    stranger = Signer.make("ES256")
    assert await answer(monit, stranger.token()) == (503, {"error": "token cannot be checked now"})
    code, document = await readiness(monit)
    assert code == 200 and document["ready"], "listed, not unready: known keys and open streams still work"
    [problem] = document["problems"]
    assert problem.startswith(f"auth: JWKS at {provider.url}: Connection was refused") and problem.endswith(
        "(keeping the 3 keys we have)"
    ), problem
    assert (await open_stream(monit, "down2", headers={"X-Auth-Token": ec.token()})).response.code == 200
    known.close()


@pytest_twisted.ensureDeferred
async def test_a_redirect_is_not_followed_even_to_the_same_keys(
    monit, provider: Provider, rsa: Signer, ec: Signer, ed: Signer
) -> None:
    elsewhere = Provider(jwks(rsa, ec, ed, Signer.make("ES256")))
    port = listen(Site(elsewhere))
    try:
        target = f"{base_url(port)}/certs"
        provider.redirect = target
        assert await answer(monit, Signer.make("ES256").token()) == (503, {"error": "token cannot be checked now"})
        assert elsewhere.requests == 0
        problems = (await readiness(monit))[1]["problems"]
        assert problems == [
            f"auth: JWKS at {provider.url}: HTTP 302: a redirect, which monit does not follow "
            "(give the URL it points to) (keeping the 3 keys we have)"
        ]
    finally:
        await stop_listening(port)


@pytest_twisted.ensureDeferred
async def test_an_rsa_key_under_2048_bits_is_refused_and_said_once(
    monit, provider: Provider, rsa: Signer, events: EventLoggingObserver
) -> None:
    weak = Signer("weak-rsa", "RS256", generate_private_key(public_exponent=65537, key_size=1024))
    provider.body = jwks(rsa, weak)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)  # the provider's signing, not monit's
        tokens = [weak.token() for _ in range(3)]
    assert await answer(monit, tokens[0]) == (401, {"error": "invalid token: signing key refused"})
    await monit.auth.jwks.refresh()
    for token in tokens[1:]:
        assert await answer(monit, token) == (401, {"error": "invalid token: signing key refused"})
    said = [formatEvent(e) for e in events if "refuses" in formatEvent(e)]
    assert said == [
        f"the JWKS at {provider.url} has a key monit refuses, weak-rsa: an RSA key of 1024 bits: "
        "2048 or more are needed; tokens it signed get 401"
    ]


@pytest_twisted.ensureDeferred
async def test_a_jwks_answering_garbage_is_said_once_and_fails_closed(
    monit, provider: Provider, ec: Signer, events: EventLoggingObserver
) -> None:
    provider.body = b"<html><body>Service Unavailable</body></html>"
    stranger = Signer.make("ES256")
    for _ in range(3):  # three fetches, each asked for by a kid monit does not know
        before = provider.requests
        assert await answer(monit, stranger.token()) == (503, {"error": "token cannot be checked now"})
        assert provider.requests == before + 1
    reader = await open_stream(monit, "garbage1", headers={"X-Auth-Token": ec.token()})
    reader.close()
    said = [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn and "signing keys" in formatEvent(e)]
    assert said == [
        f"could not fetch the signing keys from {provider.url}: not JSON; keeping the 3 we have "
        "(tokens naming other keys get 503 until a fetch succeeds)"
    ]


# twistd monit, as an operator runs it


def refused(url: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"X-Auth-Token": token})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    return caught.value.code, json.loads(caught.value.read())


@pytest.fixture
def threaded_provider(rsa: Signer, ec: Signer) -> Iterator[str]:
    with jwks_in_a_thread(jwks(rsa, ec)) as url:
        yield url


def watch_one_message(base: str, token: str, nats_url: str, job: str) -> bytes:
    """curl a job's stream with the token, publish one message, and read it off the stream."""
    curl = curl_stream(f"{base}/events?stream={job}", token)
    publisher = Publisher(nats_url)
    try:
        read_until(curl, b"retry: 3000\n")  # the stream is open: the token was taken
        publisher.publish("monitor.user", job_message(job, "from twistd"))
        return read_until(curl, b'"level":"INFO"}\n')
    finally:
        publisher.close()
        stop(curl)


def test_twistd_with_a_jwks_url(tmp_path: Path, nats_server, threaded_provider: str, rsa: Signer, ec: Signer) -> None:
    port = free_port()
    process = twistd_monit(
        tmp_path,
        "--nats",
        nats_server.url,
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--jwt-jwks-url",
        threaded_provider,
        "--jwt-audience",
        AUDIENCE,
        "--jwt-issuer",
        ISSUER,
        "--jwt-algorithms",
        "RS256,ES256",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base)
        for signer, job in ((rsa, "tw1"), (ec, "tw2")):
            assert b'data: {"body":"from twistd","level":"INFO"}\n' in watch_one_message(
                base, signer.token(), nats_server.url, job
            )
        assert refused(f"{base}/events?stream=tw1", rsa.token(iss="https://evil.example")) == (
            401,
            {"error": "invalid token: unexpected issuer"},
        )
        assert refused(f"{base}/events?stream=tw1", hmac_with_public_key(rsa)) == (
            401,
            {"error": "invalid token: algorithm not allowed"},
        )
    finally:
        assert stop(process) == 0


def test_twistd_with_a_public_key(tmp_path: Path, nats_server, ec: Signer) -> None:
    port = free_port()
    process = twistd_monit(
        tmp_path,
        "--nats",
        nats_server.url,
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--jwt-public-key",
        ec.write_pem(tmp_path),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base)
        assert b"from twistd" in watch_one_message(base, ec.token(kid=None, aud=None), nats_server.url, "pk1")
        assert refused(f"{base}/events?stream=pk1", hmac_with_public_key(ec, aud=None)) == (
            401,
            {"error": "invalid token: algorithm not allowed"},
        )
        assert refused(f"{base}/events?stream=pk1", Signer.make("ES256").token(aud=None)) == (
            401,
            {"error": "invalid token: bad signature"},
        )
    finally:
        assert stop(process) == 0


@pytest.mark.integration  # each case starts twistd
@pytest.mark.parametrize(
    "args, said",
    [
        (
            ["--jwt-jwks-url", "https://id.example/certs", "--jwt-algorithms", "none"],
            "monit: --jwt-algorithms must not allow 'none': an unsigned token proves nothing",
        ),
        (
            ["--jwt-jwks-url", "https://id.example/certs", "--jwt-algorithms", "RS256,none"],
            "monit: --jwt-algorithms must not allow 'none'",
        ),
        (
            ["--jwt-jwks-url", "https://id.example/certs", "--jwt-algorithms", "RS257"],
            "monit: --jwt-algorithms 'RS257' is not an algorithm monit knows",
        ),
        (
            ["--jwt-jwks-url", "https://id.example/certs", "--jwt-algorithms", "HS256"],
            "monit: --jwt-algorithms HS256 needs --jwt-secret: a public key is never an HMAC secret",
        ),
        (["--jwt-jwks-url", "id.example/certs"], "monit: --jwt-jwks-url 'id.example/certs' must be an http"),
        (
            ["--jwt-jwks-url", "https://id.example/certs", "--jwt-secret", "s"],
            "monit: --jwt-secret (or JWT_SECRET) cannot go with --jwt-jwks-url or --jwt-public-key",
        ),
        (
            ["--jwt-public-key", "/nonexistent/key.pem"],
            "monit: --jwt-public-key cannot read /nonexistent/key.pem: No such file or directory",
        ),
        (
            ["--jwt-public-key", "KEY", "--jwt-algorithms", "ES256"],
            "monit: --jwt-algorithms ES256 does not suit --jwt-public-key",
        ),
        (["--jwt-public-key", "GARBAGE"], "is not a PEM public key or certificate"),
    ],
)
def test_jwt_options_that_cannot_work_stop_twistd_with_one_line(
    tmp_path: Path, rsa: Signer, args: list[str], said: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    args = [{"KEY": rsa.write_pem(tmp_path), "GARBAGE": str(garbage)}.get(arg, arg) for arg in args]
    result = run_twistd_monit(tmp_path, *args)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and said in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
