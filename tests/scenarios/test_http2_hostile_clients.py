"""Hostile HTTP/2 clients against ``twistd monit`` on ``ssl:``: a raw h2 client over real TLS, real NATS.

Each test is a client that breaks the protocol or leans on a bound, and checks
what monit answers on the wire, that it stays within its memory and CPU, and
that other clients are still served.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable

import h2.errors
import h2.events
import h2.settings
import hpack
import pytest

from tls_monit import RawH2, TLSMonit, read_all_until

pytestmark = pytest.mark.integration  # twistd, nats-server, TLS on loopback

ErrorCodes = h2.errors.ErrorCodes
MIB = 1024 * 1024
DATA, HEADERS, SETTINGS, PING, CONTINUATION = 0x0, 0x1, 0x4, 0x6, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
HEALTH = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/healthz")]
TCP_ESTABLISHED = 1


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame as bytes, whatever the protocol says of it."""
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


def start(tmp_path, nats_server, *options: str) -> TLSMonit:
    return TLSMonit(tmp_path, nats_server.url, *options)


def stop(monit: TLSMonit) -> None:
    """A clean stop, and nothing went wrong inside monit on the way."""
    assert monit.stop() == 0, "SIGTERM is a clean stop"
    no_tracebacks(monit)


def no_tracebacks(monit: TLSMonit) -> None:
    """Nothing went wrong inside monit that it did not handle."""
    log = monit.log.read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 300 :][:3000]


@pytest.fixture
def monit(tmp_path, nats_server):
    server = start(tmp_path, nats_server)
    yield server
    stop(server)


def rss(pid: int) -> int:
    """The process's resident memory, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tcp_gone(client: RawH2) -> bool:
    """The TCP connection under the client was closed or reset by monit (not merely told TLS close_notify)."""
    info = client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
    return info[0] != TCP_ESTABLISHED


def served(monit: TLSMonit) -> None:
    """A new client, on its own connection, gets its answer."""
    other = RawH2(monit)
    try:
        stream = other.get("/healthz", monit.token())
        other.read_until(other.ended(stream))
        assert (other.status(stream), json.loads(other.body(stream))) == (200, {"status": "ok"})
    finally:
        other.close()


def healthy_on(client: RawH2, monit: TLSMonit) -> None:
    """The connection goes on: a GET on it gets its answer."""
    stream = client.get("/healthz", monit.token())
    client.read_until(client.ended(stream))
    assert (client.status(stream), json.loads(client.body(stream))) == (200, {"status": "ok"})
    assert client.goaway is None


def sse_events(body: bytes) -> list[dict]:
    """The data of each whole event in a stream's body (the last may still be coming)."""
    whole = body[: body.rfind(b"\n\n") + 1].decode()
    return [json.loads(line[6:]) for line in whole.split("\n") if line.startswith("data: ")]


def publish(publisher, job: str, message: dict) -> None:
    publisher.publish("monitor.user", {"id": job, "messages": [message]})


# 1. GOAWAY for a connection error: nothing more is read, and the connection is closed.

JUNK = frame(PING, 0, 1, bytes(8)) * 4096  # 68 KiB of frames that are errors themselves


def flood_until_gone(client: RawH2, budget: int, timeout: float) -> tuple[int, float]:
    """Send junk (at most ``budget`` bytes) until monit has closed the TCP connection; (bytes sent, seconds)."""
    began = time.monotonic()
    sent = 0
    while time.monotonic() - began < timeout:
        client.socket.settimeout(0.05)
        try:
            if sent < budget:
                sent += client.socket.send(JUNK)
            else:
                client.socket.recv(65536)
        except OSError:  # full buffers (a timeout), a reset, or the TLS session's end: the TCP state says which
            pass
        if tcp_gone(client):
            return sent, time.monotonic() - began
    raise TimeoutError(f"the connection still open {timeout}s after GOAWAY; {sent} bytes sent")


def continuation_flood() -> bytes:
    """A HEADERS without END_HEADERS, then 65 CONTINUATION frames: one more than h2 buffers."""
    head = hpack.Encoder().encode(HEALTH)
    return frame(HEADERS, 0, 1, head) + frame(CONTINUATION, 0, 1, b"") * 65


@pytest.mark.parametrize(
    "error", [frame(PING, 0, 1, bytes(8)), continuation_flood()], ids=["ping-on-a-stream", "continuation-flood"]
)
def test_after_goaway_for_an_error_monit_reads_nothing_more_and_closes_within_a_second(monit, error):
    client = RawH2(monit)
    try:
        client.read_until(lambda events: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events))
        before = rss(monit.process.pid)
        client.send_raw(error)
        client.read_until(lambda events: client.goaway is not None)
        assert client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR

        sent, took = flood_until_gone(client, budget=50 * MIB, timeout=3.0)

        assert took < 3.0
        assert sent < 50 * MIB, "what monit did not read stayed in the kernel's buffers"
        assert rss(monit.process.pid) - before < 4 * MIB, f"{sent} bytes sent after GOAWAY"
        served(monit)
    finally:
        client.close()


# 2. Half-open requests: reset at the head deadline, and a connection with no answered stream closed.


def open_half_open_streams(client: RawH2, count: int) -> list[int]:
    """Request heads with ``content-length: 0`` whose END_STREAM never comes."""
    return [client.request(b"GET", "/healthz", [(b"content-length", b"0")], end_stream=False) for _ in range(count)]


def test_connections_of_half_open_streams_are_closed_at_the_head_deadline_while_others_are_served(
    tmp_path, nats_server
):
    monit = start(tmp_path, nats_server, "--auth-timeout", "1")
    clients: list[RawH2] = []
    try:
        began = time.monotonic()
        for _ in range(20):
            client = RawH2(monit)
            clients.append(client)
            open_half_open_streams(client, 100)
        served(monit)

        def ping_all() -> None:
            for client in clients:
                client.ping()

        read_all_until(
            clients, lambda: all(tcp_gone(client) for client in clients), timeout=8.0, every=0.3, tick=ping_all
        )

        assert time.monotonic() - began < 6.0, "closed about a second after the head deadline"
        for client in clients:
            client.read_available()  # what came before the close and was not read yet
        assert all(client.goaway is not None for client in clients), "each was told GOAWAY first"
        served(monit)
    finally:
        for client in clients:
            client.close()
        stop(monit)


def test_a_half_open_stream_is_reset_alone_beside_an_answered_live_one(tmp_path, nats_server, publisher):
    monit = start(tmp_path, nats_server, "--auth-timeout", "1")
    client = RawH2(monit)
    try:
        live = client.get("/events?stream=half", monit.token())
        client.read_until(lambda events: client.responded(live))
        [half_open] = open_half_open_streams(client, 1)
        opened = time.monotonic()

        read_all_until(
            [client], lambda: client.reset_code(half_open) is not None, timeout=5.0, every=0.3, tick=client.ping
        )

        assert client.reset_code(half_open) == ErrorCodes.CANCEL
        assert 0.5 < time.monotonic() - opened < 3.0, "reset at the head deadline"
        publish(publisher, "half", {"n": 1})
        client.read_until(lambda events: sse_events(client.body(live)) == [{"n": 1}])
        assert client.goaway is None and not client.closed
        assert client.reset_code(live) is None
    finally:
        client.close()
        stop(monit)


# 3. CONNECT: 405 on its stream, and the connection goes on.


def test_connect_gets_405_on_its_stream_and_the_connection_goes_on(monit):
    client = RawH2(monit, validate=False)
    try:
        stream = client.send_head([(b":method", b"CONNECT"), (b":authority", b"localhost")], end_stream=False)
        client.read_until(client.ended(stream))

        assert client.status(stream) == 405
        body = client.body(stream)
        assert len(body) < 200 and set(json.loads(body)) == {"error"}
        healthy_on(client, monit)
    finally:
        client.close()


# 4. Stream errors, not connection errors.


def test_the_101st_stream_is_refused_alone_and_the_hundred_others_keep_receiving(monit, publisher):
    client = RawH2(monit)
    try:
        client.read_until(lambda events: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events))
        settings = next(e for e in client.events if isinstance(e, h2.events.RemoteSettingsChanged))
        limit = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
        assert settings.changed_settings[limit].new_value == 100

        jobs = [f"many-{n}" for n in range(100)]
        streams = {client.get(f"/events?stream={job}", monit.token()): job for job in jobs}
        client.read_until(lambda events: all(client.responded(stream) for stream in streams))
        client.ignore_stream_limit()
        refused = client.get("/events?stream=many-100", monit.token())
        client.read_until(lambda events: client.reset_code(refused) is not None)
        assert client.reset_code(refused) == ErrorCodes.REFUSED_STREAM

        for job in jobs:
            publish(publisher, job, {"job": job})
        client.read_until(lambda events: all(sse_events(client.body(stream)) for stream in streams), timeout=30)

        assert all(sse_events(client.body(stream)) == [{"job": job}] for stream, job in streams.items())
        assert client.goaway is None
        assert not any(client.reset_code(stream) for stream in streams)
    finally:
        client.close()


MALFORMED = {
    "an-uppercase-header-name": HEALTH + [(b"X-Upper", b"1")],
    "a-connection-header": HEALTH + [(b"connection", b"keep-alive")],
    "te-gzip": HEALTH + [(b"te", b"gzip")],
    "no-path": HEALTH[:3],
    "a-pseudo-header-after-a-regular-one": HEALTH[:3] + [(b"x-first", b"1"), HEALTH[3]],
    "a-duplicated-path": HEALTH + [HEALTH[3]],
}


@pytest.mark.parametrize("head", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_request_head_resets_its_stream_alone(monit, head):
    client = RawH2(monit, validate=False)
    try:
        stream = client.send_head(head)
        client.read_until(client.ended(stream))

        assert client.reset_code(stream) == ErrorCodes.PROTOCOL_ERROR
        assert not client.responded(stream)
        healthy_on(client, monit)
    finally:
        client.close()


def test_a_request_reset_in_the_same_read_as_its_head_is_dropped_quietly(tmp_path, nats_server):
    monit = start(tmp_path, nats_server)
    client = RawH2(monit)
    try:
        stream = client.connection.get_next_available_stream_id()
        client.connection.send_headers(stream, HEALTH, end_stream=True)
        client.connection.reset_stream(stream, ErrorCodes.CANCEL)
        client.flush()  # HEADERS and RST_STREAM in one write: monit reads them together

        healthy_on(client, monit)
        no_tracebacks(monit)
    finally:
        client.close()
        assert monit.stop() == 0


# 5. Rapid reset (CVE-2023-44487).


def test_a_client_that_opens_and_resets_thousands_of_streams_is_told_to_calm_down(tmp_path, nats_server):
    monit = start(tmp_path, nats_server)
    bystander = RawH2(monit)
    watching = bystander.get("/events?stream=calm", monit.token())
    bystander.read_until(lambda events: bystander.responded(watching))
    client = RawH2(monit)
    try:
        opened = 0
        while client.goaway is None and not client.closed and opened < 5000:
            for _ in range(100):
                stream = client.connection.get_next_available_stream_id()
                client.connection.send_headers(stream, HEALTH, end_stream=True)
                client.connection.reset_stream(stream, ErrorCodes.CANCEL)
            try:
                client.flush()
            except OSError:
                break
            opened += 100
            client.read_available()
        client.read_until(lambda events: client.goaway is not None, timeout=5.0)

        assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert opened < 5000
        read_all_until([client], lambda: tcp_gone(client), timeout=3.0)
        healthy_on(bystander, monit)
        no_tracebacks(monit)
    finally:
        client.close()
        bystander.close()
        assert monit.stop() == 0


# 6. SETTINGS and PING floods from a client that reads nothing.


@pytest.mark.parametrize("flood", [frame(SETTINGS, 0, 0, b""), frame(PING, 0, 0, bytes(8))], ids=["settings", "ping"])
def test_a_flood_of_frames_to_answer_from_a_client_that_reads_nothing_is_cut_off(monit, flood):
    client = RawH2(monit, receive_buffer=4096)
    try:
        before = rss(monit.process.pid)
        chunk = flood * (65536 // len(flood))
        sent = 0
        deadline = time.monotonic() + 20
        client.socket.settimeout(1)
        while not tcp_gone(client):
            assert time.monotonic() < deadline, f"still open after {sent} bytes of frames to answer"
            try:
                sent += client.socket.send(chunk)
            except (TimeoutError, ssl.SSLWantWriteError):
                pass
            except OSError:  # aborted by monit
                break

        assert rss(monit.process.pid) - before < 4 * MIB, f"{sent} bytes sent"
        served(monit)
    finally:
        client.close()


# 7. HPACK bomb.


def test_a_header_block_that_expands_past_the_limit_is_a_goaway_and_memory_stays_bounded(monit):
    client = RawH2(monit)
    try:
        client.read_until(lambda events: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events))
        before = rss(monit.process.pid)
        # a 4 kB value indexed once, then referenced by one byte each: 16 kB that expand to 64 MB
        bomb = hpack.Encoder().encode(HEALTH + [(b"x-bomb", b"b" * 4000)] * 16000)
        assert len(bomb) < 20_000
        client.send_raw(frame(HEADERS, END_STREAM, 1, bomb[:16384]) + frame(CONTINUATION, END_HEADERS, 1, bomb[16384:]))
        client.read_until(lambda events: client.goaway is not None)

        assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        read_all_until([client], lambda: tcp_gone(client), timeout=3.0)
        assert rss(monit.process.pid) - before < 4 * MIB
        served(monit)
    finally:
        client.close()


# 8. Zero-window readers cost no CPU.


def test_readers_that_give_no_window_cost_monit_no_cpu_while_events_flow(monit, publisher):
    zero = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
    clients = [RawH2(monit, settings=zero) for _ in range(10)]
    jobs = [f"zero-{n}" for n in range(10)]
    try:
        streams = {client: [client.get(f"/events?stream={job}", monit.token()) for job in jobs] for client in clients}
        read_all_until(clients, lambda: all(c.responded(s) for c, ids in streams.items() for s in ids))

        pid = monit.process.pid
        began, cpu = time.monotonic(), cpu_seconds(pid)
        published = 0
        while time.monotonic() - began < 3.0:
            publish(publisher, jobs[published % len(jobs)], {"n": published, "pad": "z" * 200})
            published += 1
            time.sleep(0.01)  # a steady trickle of events, not a burst
        used = cpu_seconds(pid) - cpu
        wall = time.monotonic() - began

        assert used / wall < 0.10, f"{used:.2f}s of CPU in {wall:.2f}s for {published} events"
        for client in clients:
            client.read_available()
            assert not client.closed and client.goaway is None
            assert all(client.body(stream) == b"" for stream in streams[client]), "nothing past a zero window"
        served(monit)
    finally:
        for client in clients:
            client.close()


# 9. One stalled stream beside live ones on the same connection.


def read_acking(
    client: RawH2, live: set[int], condition: Callable[[list[h2.events.Event]], bool], timeout: float = 15.0
) -> None:
    """Read, giving the live streams their window back; a stalled stream's data frees the connection's window only."""
    acked = 0

    def acknowledge_then(events: list[h2.events.Event]) -> bool:
        nonlocal acked
        for event in events[acked:]:
            if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                if event.stream_id in live:
                    client.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                else:
                    client.connection.increment_flow_control_window(event.flow_controlled_length)
        acked = len(events)
        client.flush()
        return condition(events)

    client.read_until(acknowledge_then, timeout)


def last_seen(client: RawH2, stream: int) -> int:
    """The ``n`` of the last whole event the stream has had, or -1."""
    seen = sse_events(client.body(stream))
    return seen[-1]["n"] if seen else -1


def stalled_beside_live(monit: TLSMonit) -> tuple[RawH2, int, set[int]]:
    """A connection watching one job on four streams: the first never gives its window back."""
    client = RawH2(monit)
    stalled = client.get("/events?stream=shared", monit.token())
    live = {client.get("/events?stream=shared", monit.token()) for _ in range(3)}
    read_acking(client, live, lambda events: all(client.responded(s) for s in live | {stalled}))
    return client, stalled, live


def test_a_stalled_stream_is_reset_alone_while_live_streams_beside_it_keep_receiving(tmp_path, nats_server, publisher):
    monit = start(tmp_path, nats_server, "--heartbeat", "0.5", "--max-pending", "4096")
    client, stalled, live = stalled_beside_live(monit)
    try:
        began = time.monotonic()
        n = 0
        while client.reset_code(stalled) is None:  # events flow on; the live streams take each
            assert time.monotonic() - began < 5.0, f"not reset; {len(client.body(stalled))} bytes taken"
            publish(publisher, "shared", {"n": n, "pad": "x" * 1000})
            read_acking(client, live, lambda events: all(last_seen(client, s) == n for s in live))
            n += 1

        assert client.reset_code(stalled) == ErrorCodes.CANCEL
        assert n > 64, "reset once its 64 kB window was spent, not before"
        assert 0 < len(client.body(stalled)) <= 65535, "it got what its window allowed, no more"
        assert client.goaway is None and not client.closed, "the connection lives"
        assert all(client.reset_code(s) is None for s in live)
    finally:
        client.close()
        stop(monit)


def test_a_stream_that_stalls_with_the_last_events_of_a_burst_is_reset_too(tmp_path, nats_server, publisher):
    monit = start(tmp_path, nats_server, "--heartbeat", "0.5", "--max-pending", "4096")
    client, stalled, live = stalled_beside_live(monit)
    try:
        for n in range(100):  # 100 kB: past the stalled stream's window (64 kB) and --max-pending
            publish(publisher, "shared", {"n": n, "pad": "x" * 1000})
        published = time.monotonic()
        read_acking(client, live, lambda events: all(last_seen(client, s) == 99 for s in live))
        read_acking(client, live, lambda events: client.reset_code(stalled) is not None, timeout=5.0)

        assert client.reset_code(stalled) == ErrorCodes.CANCEL
        assert time.monotonic() - published < 3.0, "reset after about two heartbeats"
        assert 0 < len(client.body(stalled)) <= 65535, "it got what its window allowed, no more"
        publish(publisher, "shared", {"n": 100})
        read_acking(client, live, lambda events: all(last_seen(client, s) == 100 for s in live))
        assert client.goaway is None and not client.closed, "the connection lives"
        assert all(client.reset_code(s) is None for s in live)
    finally:
        client.close()
        stop(monit)


# 10. Many connections of many streams.


def test_ten_connections_of_a_hundred_streams_all_get_a_published_event(monit, publisher):
    jobs = [f"wide-{n}" for n in range(100)]
    clients = [RawH2(monit) for _ in range(10)]
    try:
        streams = {
            client: {client.get(f"/events?stream={job}", monit.token()): job for job in jobs} for client in clients
        }
        read_all_until(clients, lambda: all(c.responded(s) for c, ids in streams.items() for s in ids), timeout=30)

        for job in jobs:
            publish(publisher, job, {"job": job})

        def everyone_has_theirs() -> bool:
            return all(
                sse_events(c.body(stream)) == [{"job": job}]
                for c, ids in streams.items()
                for stream, job in ids.items()
            )

        read_all_until(clients, everyone_has_theirs, timeout=30)
        assert all(client.goaway is None for client in clients)
    finally:
        for client in clients:
            client.close()
