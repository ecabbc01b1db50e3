"""Start an in-process monit against the test's nats-server, and read its streams with treq."""
from __future__ import annotations

import json
import socket

import treq
from twisted.internet import reactor

from monit.service import MonitService
from monit.settings import Settings
from monit.token import mint

from sseclient import SSEParser
from waiting import within

SECRET = "integration-secret"


async def start_monit(nats_url: str, on_fatal=None, **settings) -> MonitService:
    options = dict(listen="tcp:0:interface=127.0.0.1", jwt_secret=SECRET, grace=0.3, heartbeat=0.2)
    options.update(settings)
    service = MonitService(reactor, Settings(nats=[nats_url], **options), on_fatal=on_fatal)
    service.startService()
    await within(service.nats.when_connected())
    port = await within(service.listener.when_listening())
    service.base_url = f"http://127.0.0.1:{port.getHost().port}"
    return service


def auth(user: str = "alice") -> dict:
    return {"X-Auth-Token": mint(SECRET, user, 3600)}


class Reader:
    """One SSE response read incrementally with treq over loopback."""

    def __init__(self, response):
        self.response = response
        self.parser = SSEParser()
        self.raw = b""
        self.done = treq.collect(response, self._feed)
        self.ended = False
        self.done.addBoth(self._ended)

    def _feed(self, chunk: bytes) -> None:
        self.raw += chunk
        self.parser.feed(chunk)

    def _ended(self, result):
        self.ended = True
        return result

    @property
    def events(self):
        return self.parser.events

    def data(self):
        return [json.loads(event.data) for event in self.events if event.event == "message"]

    def close(self) -> None:
        """Hang up, as a client going away does."""
        self.done.addErrback(lambda _: None)
        self.response.original._transport.loseConnection()


async def open_stream(monit, stream: str, headers=None, query: str = "") -> Reader:
    response = await within(
        treq.get(f"{monit.base_url}/events?stream={stream}{query}",
                 headers=auth() if headers is None else headers, unbuffered=True)
    )
    assert response.code == 200, response.code
    return Reader(response)


def job_message(job: str, *bodies: str) -> dict:
    return {"service": f"env-{job}", "messages": [{"body": body, "level": "INFO"} for body in bodies]}


def stalled_reader(base_url: str, stream: str, token: str) -> socket.socket:
    """An SSE request over a socket that is never read, with a small receive buffer."""
    host, port = base_url.rsplit("/", 1)[-1].split(":")
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect((host, int(port)))
    reader.sendall(f"GET /events?stream={stream} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n\r\n".encode())
    return reader
