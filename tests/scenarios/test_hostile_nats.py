"""A buggy or hostile publisher, and a NATS server that freezes: nobody loses events they should get."""

from __future__ import annotations

import json
import os
import signal
import socket

import pytest_twisted
import treq

from streams import open_stream, start_monit
from waiting import wait_for, within

POISON = [
    b"PUB monitor.user \xff\xfe.reply 2\r\n{}\r\n",  # a reply subject that is not UTF-8
    b"HPUB monitor.user 16 18\r\nNATS/1.0 abc\r\n\r\n{}\r\n",  # a header status that is no number
]  # (nats-server refuses a header block without NATS/1.0 itself; the parser's own test covers it)


def raw_publisher(url: str) -> socket.socket:
    """A NATS client written by hand, as a buggy or hostile publisher would be."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    connection = socket.create_connection((host, int(port)))
    connection.recv(4096)  # INFO
    connection.sendall(b'CONNECT {"verbose":false,"headers":true}\r\n')
    return connection


def event(job: str, n: int) -> bytes:
    payload = json.dumps({"id": job, "messages": [{"n": n}]}).encode()
    return b"PUB monitor.user %d\r\n%s\r\n" % (len(payload), payload)


@pytest_twisted.ensureDeferred
async def test_unusable_messages_between_good_ones_cost_nothing_but_themselves(nats_server):
    monit = await start_monit(nats_server.url)
    publisher = raw_publisher(nats_server.url)
    try:
        reader = await open_stream(monit, "h1")
        for n in range(30):
            publisher.sendall(event("h1", n) + POISON[n % len(POISON)])
        await wait_for(lambda: len(reader.events) == 30, what="every good event")
        assert [e["n"] for e in reader.data()] == list(range(30))
        assert monit.nats.reconnects == 0 and monit.nats.connected
        assert monit.nats.unusable > 0  # those the server relayed were counted, then skipped
        reader.close()
    finally:
        publisher.close()
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_frozen_nats_server_is_noticed_and_readyz_says_why(private_nats_server):
    monit = await start_monit(private_nats_server.url, nats_ping_interval=0.2, nats_max_pings_out=2)
    frozen = private_nats_server.process
    try:
        os.kill(frozen.pid, signal.SIGSTOP)
        await wait_for(lambda: not monit.nats.connected, timeout=5, what="the stale connection dropped")
        response = await within(treq.get(f"{monit.base_url}/readyz"))
        body = json.loads(await within(response.content()))
        assert response.code == 503 and body["nats"] is False
        assert any("PING" in problem for problem in body["problems"]), body
        os.kill(frozen.pid, signal.SIGCONT)
        await wait_for(lambda: monit.nats.connected, timeout=10, what="reconnected after the thaw")
        response = await within(treq.get(f"{monit.base_url}/readyz"))
        assert response.code == 200 and json.loads(await within(response.content()))["problems"] == []
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_huge_message_neither_drops_fast_readers_nor_holds_the_reactor(nats_server, publisher):
    """About 1 MB in one message, 300,000 events: three readers that read get to its end."""
    monit = await start_monit(nats_server.url)
    try:
        readers = [await open_stream(monit, "big") for _ in range(3)]
        elements = 300_000
        huge = json.dumps({"id": "big", "messages": [{}] * elements}, separators=(",", ":")).encode()
        publisher.publish("monitor.user", huge)
        response = await within(treq.get(f"{monit.base_url}/healthz"))
        assert response.code == 200
        assert monit.registry.events < elements, "/healthz waited for the whole message"
        last = str(monit.registry.id_base + elements)
        await wait_for(
            lambda: all(r.events and r.events[-1].id == last for r in readers),
            timeout=60,
            what="every reader at the last event",
        )
        assert monit.web.streams.dropped == 0 and len(monit.web.streams) == 3
        for reader in readers:
            reader.close()
    finally:
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_reader_joining_a_history_bigger_than_max_pending_gets_all_of_it(nats_server, publisher):
    monit = await start_monit(nats_server.url, max_pending=64 * 1024, history=200)
    try:
        for n in range(200):  # about 2 MB of history
            publisher.publish("monitor.user", {"id": "long", "messages": [{"n": n, "pad": "x" * 10_000}]})
        await wait_for(
            lambda: "long" in monit.registry and monit.registry.get("long").last_id == monit.registry.id_base + 200
        )
        for _attempt in range(3):  # as a reconnecting reader would, again and again
            reader = await open_stream(monit, "long")
            await wait_for(lambda: len(reader.events) == 200, what="the whole history")
            assert [e["n"] for e in reader.data()] == list(range(200))
            reader.close()
        assert monit.web.streams.dropped == 0
    finally:
        await monit.stopService()
