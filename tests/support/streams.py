"""Start an in-process monit against the test's nats-server, and read its streams with treq."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import treq
from treq.response import _Response
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.web._newclient import Response as ClientResponse

from monit.feed import JetStreamFeed
from monit.service import MonitService
from monit.settings import Settings
from monit.token import mint

from sseclient import Event, SSEParser
from waiting import within

SECRET = "integration-secret"
# Request headers as treq takes them.
HeaderDict = dict[str | bytes, str | bytes]


class ServedMonit(MonitService):
    """A MonitService that knows where it listens."""

    base_url: str


async def start_monit(nats_url: str, on_fatal: Callable[[str], None] | None = None, **settings: Any) -> ServedMonit:
    options: dict[str, Any] = dict(listen="tcp:0:interface=127.0.0.1", jwt_secret=SECRET, grace=0.3, heartbeat=0.2)
    options.update(settings)
    service = ServedMonit(reactor, Settings(nats=(nats_url,), **options), on_fatal=on_fatal)
    service.startService()
    await within(service.nats.when_connected())
    assert service.listener is not None
    port = await within(service.listener.when_listening())
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    service.base_url = f"http://127.0.0.1:{address.port}"
    return service


def feed_of(monit: MonitService) -> JetStreamFeed:
    """The service's JetStream feed, which a test that started it with --jetstream knows it has."""
    assert monit.feed is not None, "started without --jetstream"
    return monit.feed


def auth(user: str = "alice") -> HeaderDict:
    return {"X-Auth-Token": mint(SECRET, user, 3600)}


class Reader:
    """One SSE response read incrementally with treq over loopback."""

    def __init__(self, response: _Response) -> None:
        self.response = response
        self.parser = SSEParser()
        self.raw = b""
        self.done: Deferred[None] = treq.collect(response, self._feed)
        self.ended = False
        self.done.addBoth(self._ended)

    def _feed(self, chunk: bytes) -> None:
        self.raw += chunk
        self.parser.feed(chunk)

    def _ended(self, result: object) -> object:
        self.ended = True
        return result

    @property
    def events(self) -> list[Event]:
        return self.parser.events

    def data(self) -> list[Any]:
        return [json.loads(event.data) for event in self.events if event.event == "message"]

    def close(self) -> None:
        """Hang up, as a client going away does."""
        self.done.addErrback(lambda _: None)
        hang_up(self.response)


async def open_stream(monit: ServedMonit, stream: str, headers: HeaderDict | None = None, query: str = "") -> Reader:
    response = await within(
        treq.get(
            f"{monit.base_url}/events?stream={stream}{query}",
            headers=auth() if headers is None else headers,
            unbuffered=True,
        )
    )
    assert response.code == 200, response.code
    return Reader(response)


def token_header(token: str) -> HeaderDict:
    return {"X-Auth-Token": token}


def hang_up(response: _Response) -> None:
    """Close the response's connection, as a client going away does."""
    original = response.original
    assert isinstance(original, ClientResponse)
    original._transport.loseConnection()


def job_message(job: str, *bodies: str) -> dict[str, Any]:
    return {"service": f"env-{job}", "messages": [{"body": body, "level": "INFO"} for body in bodies]}


def stalled_reader(base_url: str, stream: str, token: str) -> socket.socket:
    """An SSE request over a socket that is never read, with a small receive buffer."""
    host, port = base_url.rsplit("/", 1)[-1].split(":")
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect((host, int(port)))
    reader.sendall(f"GET /events?stream={stream} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n\r\n".encode())
    return reader
