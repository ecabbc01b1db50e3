"""HTTP at its edges, with raw sockets against a real server on loopback: bodies, slowloris, caps, nits."""

from __future__ import annotations

import json
import socket
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread

from monit.auth.modes import NoAuth
from monit.registry import InboxRegistry
from monit.service import registry_options, web_options
from monit.settings import Settings
from monit.web.app import MonitWeb
from monit.web.listener import with_backlog
from monit.web.site import MonitSite

from loopback import port_number
from waiting import wait_for, within

pytestmark = pytest.mark.integration  # a real listening socket and raw clients


class ServedSite(MonitSite):
    """A MonitSite that knows its port."""

    port: int


@pytest.fixture
def site():
    settings = Settings(insecure_no_auth=True)
    web = MonitWeb(InboxRegistry(reactor, **registry_options(settings)), NoAuth(), reactor, **web_options(settings))
    site = ServedSite(web.resource(), reactor, head_timeout=1.0, max_connections=20, max_per_address=10)
    port = pytest_twisted.blockon(serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site))
    site.port = port_number(port)
    yield site
    pytest_twisted.blockon(port.stopListening())
    pytest_twisted.blockon(site.close_connections(reactor, 3))


def connect(site: ServedSite) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", site.port))
    client.settimeout(10)
    return client


def answer(client: socket.socket) -> tuple[int, dict]:
    """Read a response to the end of the connection: its status and JSON body."""
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunked(body)
    return int(head.split()[1]), json.loads(body) if body else {}


def dechunked(body: bytes) -> bytes:
    data = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        length = int(size, 16)
        data, body = data + body[:length], body[length + 2 :]
        if not length:
            break
    return data


async def exchange(site: ServedSite, *pieces: bytes) -> tuple[int, dict]:
    def talk() -> tuple[int, dict]:
        with connect(site) as client:
            for piece in pieces:
                client.sendall(piece)
            return answer(client)

    return await within(deferToThread(talk), timeout=20)


@pytest.mark.parametrize("body_header", [b"Content-Length: 500000000", b"Transfer-Encoding: chunked"])
@pytest_twisted.ensureDeferred
async def test_a_request_body_is_refused_before_it_is_read(site, body_header):
    status, body = await exchange(
        site, b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + body_header + b"\r\n\r\n", b"x" * 100_000
    )
    assert status == 413 and "no request bodies" in body["error"]
    assert site.refused[413] == 1


@pytest_twisted.ensureDeferred
async def test_a_head_trickled_a_byte_at_a_time_meets_an_absolute_deadline(site):
    def trickle() -> tuple[float, int]:
        with connect(site) as client:
            started = time.monotonic()
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100:
                try:
                    client.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.2)  # the pace of the attack, not a wait for an event
                if time.monotonic() - started > 10:
                    break
            return time.monotonic() - started, answer(client)[0]

    took, status = await within(deferToThread(trickle), timeout=30)
    assert status == 408 and took < 3, f"held for {took:.1f} s"


@pytest_twisted.ensureDeferred
async def test_too_long_a_request_line_is_414_and_too_large_headers_431(site):
    status, _ = await exchange(site, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n")
    assert status == 414
    status, _ = await exchange(site, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: y\r\n" * 3000 + b"\r\n")
    assert status == 431


@pytest_twisted.ensureDeferred
async def test_http_1_1_without_host_is_400(site):
    status, body = await exchange(site, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert status == 400 and "Host" in body["error"]


@pytest.mark.parametrize("query", ["lastEventId=%C2%B2", "lastEventId=%D9%A3"])
@pytest_twisted.ensureDeferred
async def test_a_last_event_id_in_other_digits_is_400_not_500(site, query):
    status, body = await exchange(
        site, f"GET /events?stream=a&{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert status == 400 and "Last-Event-ID" in body["error"]


@pytest_twisted.ensureDeferred
async def test_head_of_a_stream_opens_no_stream(site):
    def head() -> bytes:
        with connect(site) as client:
            client.sendall(b"HEAD /events?stream=a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := client.recv(65536):
                data += chunk
            return data

    response = await within(deferToThread(head))
    assert response.startswith(b"HTTP/1.1 405") and b"Allow: GET, OPTIONS" in response


@pytest_twisted.ensureDeferred
async def test_connections_past_the_caps_get_503_and_are_counted(site):
    held = [connect(site) for _ in range(10)]
    try:
        await wait_for(lambda: len(site.channels) == 10)
        status, body = await exchange(site)
        assert status == 503 and "this address" in body["error"]
        assert site.refused_connections["max-connections-per-ip"] == 1
    finally:
        for client in held:
            client.close()


def test_a_tcp_listener_gets_a_backlog_for_thousands_unless_one_is_given():
    assert with_backlog("tcp:8080:interface=127.0.0.1") == "tcp:8080:interface=127.0.0.1:backlog=4096"
    assert with_backlog("tcp:8080:backlog=100") == "tcp:8080:backlog=100"
    assert with_backlog("unix:/run/monit.sock") == "unix:/run/monit.sock"
