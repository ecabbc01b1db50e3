"""HTTP/2 over TLS against ``twistd monit`` on ``ssl:``: real clients (httpx, a raw h2 client), real NATS."""

from __future__ import annotations

import asyncio
import json
import re

import h2.events
import httpx
import pytest

from tls_monit import RawH2, TLSMonit

pytestmark = pytest.mark.integration  # twistd, nats-server, TLS on loopback


@pytest.fixture
def monit(tmp_path, nats_server):
    server = TLSMonit(tmp_path, nats_server.url, "--grace", "0.2")
    yield server
    assert server.stop() == 0, "SIGTERM is a clean stop"


def client(monit: TLSMonit, http2: bool = True, **options) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=monit.base, http2=http2, http1=not http2, verify=monit.context(), timeout=30, **options
    )


async def until(condition, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def first_event(response: httpx.Response, lines=None) -> dict:
    """The next event's data, from the response's lines (or from ``lines``, an iterator over them already begun)."""
    async for line in lines or response.aiter_lines():
        if line.startswith("data: "):
            event: dict = json.loads(line[6:])
            return event
    raise EOFError("the stream ended without an event")


def test_a_hundred_streams_on_one_connection_all_get_live_events(monit, publisher):
    jobs = [f"h2-{n}" for n in range(100)]

    async def watch() -> tuple[set[str], list[dict]]:
        versions: set[str] = set()
        opened: list[str] = []
        async with client(monit, limits=httpx.Limits(max_connections=1)) as http:
            headers = {"X-Auth-Token": monit.token()}

            async def read(job: str) -> dict:
                async with http.stream("GET", f"/events?stream={job}", headers=headers) as response:
                    assert response.status_code == 200
                    versions.add(response.http_version)
                    opened.append(job)
                    return await first_event(response)

            reading = [asyncio.create_task(read(job)) for job in jobs]
            await until(lambda: len(opened) == len(jobs))
            for job in jobs:
                await asyncio.to_thread(publisher.publish, "monitor.user", {"id": job, "messages": [{"job": job}]})
            return versions, await asyncio.wait_for(asyncio.gather(*reading), 30)

    versions, received = asyncio.run(watch())

    assert versions == {"HTTP/2"}
    assert received == [{"job": job} for job in jobs]


def test_http11_over_tls_still_works(monit, publisher):
    async def watch() -> tuple[str, dict]:
        async with client(monit, http2=False) as http:
            async with http.stream("GET", "/events?stream=tls1", headers={"X-Auth-Token": monit.token()}) as response:
                await asyncio.to_thread(publisher.publish, "monitor.user", {"id": "tls1", "messages": [{"n": 1}]})
                return response.http_version, await first_event(response)

    assert asyncio.run(watch()) == ("HTTP/1.1", {"n": 1})


def test_a_stalled_stream_is_dropped_alone_while_another_connection_keeps_receiving(tmp_path, nats_server, publisher):
    monit = TLSMonit(tmp_path, nats_server.url, "--heartbeat", "0.5", "--max-pending", "4096")
    stalled = RawH2(monit)
    try:
        stream = stalled.get("/events?stream=stall", monit.token())
        stalled.read_until(lambda events: any(isinstance(e, h2.events.ResponseReceived) for e in events))
        padding = "x" * 1000

        async def keep_reading() -> int:
            async with client(monit) as http:
                headers = {"X-Auth-Token": monit.token()}
                async with http.stream("GET", "/events?stream=stall", headers=headers) as response:
                    seen = 0
                    for n in range(200):  # 200 kB: past the stalled stream's window (64 kB) and --max-pending
                        await asyncio.to_thread(
                            publisher.publish, "monitor.user", {"id": "stall", "messages": [{"n": n, "pad": padding}]}
                        )
                    lines = response.aiter_lines()
                    async for line in lines:
                        if line.startswith("data: "):
                            seen = json.loads(line[6:])["n"]
                            if seen == 199:
                                break
                    # the stalled stream is reset, and this one still gets what comes next
                    await asyncio.to_thread(
                        stalled.read_until,
                        lambda events: any(
                            isinstance(e, h2.events.StreamReset) and e.stream_id == stream for e in events
                        ),
                    )
                    await asyncio.to_thread(
                        publisher.publish, "monitor.user", {"id": "stall", "messages": [{"n": 200}]}
                    )
                    return int((await first_event(response, lines))["n"])

        assert asyncio.run(keep_reading()) == 200
        assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in stalled.events), "the connection lives"
        assert 0 < len(stalled.body(stream)) <= 65535, "it got what its window allowed, no more"
    finally:
        stalled.close()
        assert monit.stop() == 0
    assert re.search(r"stream stall closed for tess: too slow", monit.log.read_text())


def test_shutdown_ends_every_http2_stream_with_a_retry_hint(monit):
    opened: list[str] = []

    async def watch() -> list[str]:
        async with client(monit) as http:
            headers = {"X-Auth-Token": monit.token()}

            async def read(job: str) -> str:
                async with http.stream("GET", f"/events?stream={job}", headers=headers) as response:
                    assert response.http_version == "HTTP/2"
                    opened.append(job)
                    return "".join([chunk async for chunk in response.aiter_text()])

            reading = [asyncio.create_task(read(f"bye-{n}")) for n in range(3)]
            await until(lambda: len(opened) == 3)
            await asyncio.to_thread(monit.stop)
            return await asyncio.wait_for(asyncio.gather(*reading), 20)

    bodies = asyncio.run(watch())
    for body in bodies:
        assert body.startswith("retry: 3000\n\n")
        assert re.fullmatch(r"retry: 3000\n\n(: keep-alive\n\n)*retry: \d+\n\n", body), body
    assert monit.process.returncode == 0


def test_kept_alive_streams_outlive_the_head_deadline_and_the_idle_timeout(tmp_path, nats_server, publisher):
    # keep-alives every 0.3 s; the request head must come within 0.5 s; the idle timeout is 4 keep-alives
    monit = TLSMonit(tmp_path, nats_server.url, "--heartbeat", "0.3", "--auth-timeout", "0.5")

    async def watch() -> tuple[int, dict]:
        async with client(monit) as http:
            async with http.stream("GET", "/events?stream=idle", headers={"X-Auth-Token": monit.token()}) as response:
                keepalives = 0
                lines = response.aiter_lines()
                async for line in lines:
                    keepalives += line == ": keep-alive"
                    if keepalives == 10:  # 3 s: twice the idle timeout, six head deadlines
                        break
                await asyncio.to_thread(publisher.publish, "monitor.user", {"id": "idle", "messages": [{"n": 1}]})
                return keepalives, await first_event(response, lines)

    try:
        assert asyncio.run(watch()) == (10, {"n": 1})
    finally:
        assert monit.stop() == 0


def test_a_body_is_refused_on_its_stream_and_the_connection_goes_on(monit):
    raw = RawH2(monit)
    try:
        announced = [(b"x-auth-token", monit.token().encode()), (b"content-length", b"100000")]
        refused = raw.request(b"POST", "/events?stream=b1", announced, end_stream=False)
        raw.connection.send_data(refused, b"x" * 1000)  # the start of the body; the rest never comes
        raw.flush()
        raw.read_until(raw.ended(refused))
        assert raw.status(refused) == 413
        assert json.loads(raw.body(refused)) == {"error": "monit takes no request bodies"}
        health = raw.get("/healthz", monit.token())
        raw.read_until(raw.ended(health))
        assert (raw.status(health), json.loads(raw.body(health))) == (200, {"status": "ok"})
    finally:
        raw.close()


def test_a_connection_that_asks_nothing_is_closed_at_the_head_deadline(tmp_path, nats_server):
    monit = TLSMonit(tmp_path, nats_server.url, "--auth-timeout", "0.5")
    silent = RawH2(monit)
    try:
        silent.read_until(lambda events: any(isinstance(e, h2.events.ConnectionTerminated) for e in events))
        goaway = next(e for e in silent.events if isinstance(e, h2.events.ConnectionTerminated))
        assert goaway.additional_data == b"the request head took too long"
    finally:
        silent.close()
        assert monit.stop() == 0


def test_past_max_connections_an_http2_client_is_told_why(tmp_path, nats_server):
    monit = TLSMonit(tmp_path, nats_server.url, "--max-connections", "1")
    first = RawH2(monit)
    second = RawH2(monit)
    try:
        second.read_until(lambda events: any(isinstance(e, h2.events.ConnectionTerminated) for e in events))
        goaway = next(e for e in second.events if isinstance(e, h2.events.ConnectionTerminated))
        assert goaway.additional_data == b"too many connections"
        stream = first.get("/healthz", monit.token())
        first.read_until(first.ended(stream))
        assert json.loads(first.body(stream)) == {"status": "ok"}
    finally:
        first.close()
        second.close()
        assert monit.stop() == 0
