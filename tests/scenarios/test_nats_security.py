"""How monit reaches production NATS: TLS (and mutual TLS), NKey users, .creds in operator mode,
and the cluster's other servers learnt from INFO. Each against a real nats-server."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredQueue

from monit.nats.client import NATSClient
from monit.nats.nkeys import NATSUser, NKey, creds_file, seed_file
from monit.nats.protocol import Msg
from monit.nats.tls import ClientTLS

from natsserver import NATSCluster, NATSServer
from pki import CA, USER, KeyPair, operator_mode
from publisher import Publisher
from streams import job_message, open_stream, start_monit
from waiting import wait_for, within

pytestmark = pytest.mark.integration


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path)


def started(server: NATSServer) -> Iterator[NATSServer]:
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tls_server(ca: CA) -> Iterator[NATSServer]:
    """A nats-server that speaks only TLS."""
    cert, key = ca.issue("nats-server", server=True)
    yield from started(NATSServer(extra=["--tls", "--tlscert", cert, "--tlskey", key]))


@pytest.fixture
def mutual_tls_server(ca: CA) -> Iterator[NATSServer]:
    """A nats-server that wants a client certificate signed by the CA."""
    cert, key = ca.issue("nats-server", server=True)
    yield from started(NATSServer(extra=["--tlsverify", "--tlscert", cert, "--tlskey", key, "--tlscacert", ca.path]))


@pytest.fixture
def user_key() -> KeyPair:
    return KeyPair(USER)


@pytest.fixture
def nkey_server(tmp_path: Path, user_key: KeyPair) -> Iterator[NATSServer]:
    """A nats-server whose users are an NKey (monit's) and a password (the publisher's)."""
    config = tmp_path / "nkey.conf"
    config.write_text(
        "authorization { users = [\n"
        f'  {{ nkey: "{user_key.public}" }}\n'
        '  { user: "engine", password: "engine-pw" }\n'
        "] }\n"
    )
    yield from started(NATSServer(extra=["-c", str(config)]))


@pytest_twisted.async_yield_fixture
async def client() -> AsyncIterator[Callable[..., NATSClient]]:
    """Start NATSClients on the real reactor; stop them afterwards."""
    clients: list[NATSClient] = []

    def make(*urls: str, **options: Any) -> NATSClient:
        made = NATSClient(list(urls), reactor, request_timeout=2.0, initial_delay=0.05, max_delay=0.5, **options)
        made.startService()
        clients.append(made)
        return made

    yield make
    for made in clients:
        await within(made.stopService())


async def round_trip(client: NATSClient, subject: str = "secure.round.trip") -> Msg:
    """Subscribe, publish and receive over the client's connection."""
    await within(client.when_connected())
    queue: DeferredQueue[Msg] = DeferredQueue()
    client.subscribe(subject, queue.put)
    client.publish(subject, b"over the wire")
    return await within(queue.get())


def ssl_context(ca: CA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca.path)


# TLS


@pytest_twisted.ensureDeferred
async def test_tls_url_with_the_servers_ca(tls_server: NATSServer, ca: CA, client) -> None:
    secure = client(f"tls://127.0.0.1:{tls_server.port}", tls=ClientTLS.from_files(ca.path))
    assert (await round_trip(secure)).payload == b"over the wire"
    assert secure.url == f"tls://127.0.0.1:{tls_server.port}"


@pytest_twisted.ensureDeferred
async def test_a_nats_url_is_upgraded_when_the_server_requires_tls(tls_server: NATSServer, ca: CA, client) -> None:
    secure = client(tls_server.url, tls=ClientTLS.from_files(ca.path))
    assert (await round_trip(secure)).payload == b"over the wire"


@pytest_twisted.ensureDeferred
async def test_a_certificate_from_another_ca_is_refused(tls_server: NATSServer, tmp_path: Path, client) -> None:
    stranger = CA(tmp_path, "another CA")
    secure = client(f"tls://127.0.0.1:{tls_server.port}", tls=ClientTLS.from_files(stranger.path))
    await wait_for(lambda: "certificate verify failed" in (secure.problem or ""), what=lambda: secure.problem)
    assert not secure.connected


@pytest_twisted.ensureDeferred
async def test_a_server_without_tls_is_not_spoken_to_in_plain_text(private_nats_server: NATSServer, client) -> None:
    secure = client(f"tls://127.0.0.1:{private_nats_server.port}")
    await wait_for(lambda: "does not offer TLS" in (secure.problem or ""), what=lambda: secure.problem)
    assert not secure.connected


@pytest_twisted.ensureDeferred
async def test_mutual_tls(mutual_tls_server: NATSServer, ca: CA, client) -> None:
    cert, key = ca.issue("monit", server=False)
    url = f"tls://127.0.0.1:{mutual_tls_server.port}"
    secure = client(url, tls=ClientTLS.from_files(ca.path, cert, key))
    anonymous = client(url, tls=ClientTLS.from_files(ca.path))
    assert (await round_trip(secure)).payload == b"over the wire"
    await wait_for(lambda: "handshake" in (anonymous.problem or ""), what=lambda: anonymous.problem)
    assert not anonymous.connected


@pytest_twisted.ensureDeferred
async def test_monit_streams_a_job_published_over_tls(mutual_tls_server: NATSServer, ca: CA) -> None:
    cert, key = ca.issue("monit", server=False)
    engine_cert, engine_key = ca.issue("engine", server=False)
    url = f"tls://127.0.0.1:{mutual_tls_server.port}"
    monit = await start_monit(url, nats_tls_ca=ca.path, nats_tls_cert=cert, nats_tls_key=key)
    context = ssl_context(ca)
    context.load_cert_chain(engine_cert, engine_key)
    publisher = Publisher(url, tls=context)
    try:
        publisher.publish("service.create", {"id": "tlsjob", "service": "env-tlsjob"})
        await wait_for(lambda: "tlsjob" in monit.registry, what="inbox opened")
        reader = await open_stream(monit, "tlsjob")
        publisher.publish("monitor.user", job_message("tlsjob", "secret progress"))
        await wait_for(lambda: len(reader.events) == 2)
        assert "secret progress" in reader.events[1].data
    finally:
        publisher.close()
        await monit.stopService()


def test_tls_files_that_cannot_be_used_are_named(tmp_path: Path, ca: CA) -> None:
    cert, key = ca.issue("monit", server=False)
    _, other_key = ca.issue("other", server=False)
    with pytest.raises(ValueError, match="are not a PEM certificate and its private key"):
        ClientTLS.from_files(ca.path, cert, other_key)
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        ClientTLS.from_files(key)
    with pytest.raises(ValueError, match="go together"):
        ClientTLS.from_files(ca.path, cert)
    with pytest.raises(ValueError, match=f"cannot read {tmp_path}/missing.pem"):
        ClientTLS.from_files(str(tmp_path / "missing.pem"))


# NKeys and .creds


@pytest_twisted.ensureDeferred
async def test_an_nkey_user_signs_the_nonce(nkey_server: NATSServer, user_key: KeyPair, client) -> None:
    signed = client(nkey_server.url, user=NATSUser(NKey.from_seed(user_key.seed)))
    assert (await round_trip(signed)).payload == b"over the wire"


@pytest_twisted.ensureDeferred
async def test_an_unknown_nkey_is_refused_with_the_servers_reason(nkey_server: NATSServer, client) -> None:
    stranger = client(nkey_server.url, user=NATSUser(NKey.from_seed(KeyPair(USER).seed)))
    await wait_for(lambda: "Authorization Violation" in (stranger.problem or ""), what=lambda: stranger.problem)


@pytest_twisted.ensureDeferred
async def test_monit_with_an_nkey_seed_file(nkey_server: NATSServer, user_key: KeyPair, tmp_path: Path) -> None:
    seed = tmp_path / "monit.nk"
    seed.write_text(user_key.seed + "\n")
    monit = await start_monit(nkey_server.url, nats_nkey=str(seed))
    publisher = Publisher(nkey_server.url, user="engine", password="engine-pw")
    try:
        publisher.publish("service.create", {"id": "nkeyjob", "service": "env-nkeyjob"})
        await wait_for(lambda: "nkeyjob" in monit.registry, what="inbox opened")
        reader = await open_stream(monit, "nkeyjob")
        publisher.publish("monitor.user", job_message("nkeyjob", "signed"))
        await wait_for(lambda: len(reader.events) == 2)
    finally:
        publisher.close()
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_creds_file_in_operator_mode(tmp_path: Path, client) -> None:
    config, creds = operator_mode(tmp_path)
    server = NATSServer(extra=["-c", config])
    server.start()
    try:
        signed = client(server.url, user=creds_file(creds))
        assert (await round_trip(signed)).payload == b"over the wire"
        anonymous = client(server.url)
        await wait_for(lambda: "Authorization Violation" in (anonymous.problem or ""), what=lambda: anonymous.problem)
    finally:
        server.stop()


def test_seed_and_creds_files_that_cannot_be_used_are_named(tmp_path: Path, user_key: KeyPair) -> None:
    broken = tmp_path / "broken.nk"
    # A character in the middle: every bit of it is the key's (the last one's low bits are padding,
    # which a change may leave the decoded bytes, and the checksum, as they were).
    middle = user_key.seed[20]
    broken.write_text(user_key.seed[:20] + ("A" if middle != "A" else "B") + user_key.seed[21:])
    with pytest.raises(ValueError, match="broken.nk has a wrong checksum"):
        seed_file(str(broken))
    public = tmp_path / "public.nk"
    public.write_text(user_key.public)
    with pytest.raises(ValueError, match="public.nk is not an NKey seed"):
        seed_file(str(public))
    account = tmp_path / "account.nk"
    account.write_text(KeyPair(0).seed)
    with pytest.raises(ValueError, match="is not a user's seed"):
        seed_file(str(account))
    with pytest.raises(ValueError, match="is not a .creds file"):
        creds_file(str(account))
    assert user_key.seed not in repr(NKey.from_seed(user_key.seed))


# The cluster, learnt from INFO


@pytest_twisted.ensureDeferred
async def test_the_cluster_is_learnt_so_losing_the_seed_server_is_survived(tmp_path: Path, client) -> None:
    cluster = NATSCluster(str(tmp_path), size=3)
    cluster.start()
    try:
        seed, *others = cluster.nodes
        follower = client(seed.url)
        await wait_for(lambda: len(follower.servers) == 3, what=lambda: follower.servers)
        queue: DeferredQueue[Msg] = DeferredQueue()
        follower.subscribe("cluster.news", queue.put)
        seed.kill()
        await wait_for(lambda: follower.connected and follower.url != f"nats://127.0.0.1:{seed.port}", timeout=20)
        publisher = Publisher(others[1].url)
        try:
            await wait_for(lambda: publish_until_heard(publisher, queue), timeout=10)
        finally:
            publisher.close()
    finally:
        cluster.stop()


def publish_until_heard(publisher: Publisher, queue: DeferredQueue[Msg]) -> bool:
    """Publish once; whether a message has reached the queue (routes take a moment to carry interest)."""
    publisher.publish("cluster.news", b"still here")
    return bool(queue.pending)
