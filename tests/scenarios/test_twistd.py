"""``twistd monit`` from the installed package, driven like a user would: curl and NATS."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from monit.settings import options_table
from monit.token import mint

from natsserver import free_port, wait_for_port
from processes import curl_stream, read_until, run_twistd_monit, script, stop, twistd_monit, unread, wait_until_ready
from publisher import Publisher

SECRET = "twistd-secret"
pytestmark = pytest.mark.integration  # twistd and curl as child processes
ROOT = Path(__file__).resolve().parents[2]
OPTIONS_PAGE = ROOT / "docs" / "reference" / "options.md"


@pytest.fixture
def monit_process(tmp_path, nats_server):
    port = free_port()
    process = twistd_monit(
        tmp_path,
        "--nats",
        nats_server.url,
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--jwt-secret",
        SECRET,
        "--grace",
        "0.2",
    )
    wait_until_ready(f"http://127.0.0.1:{port}")
    yield port, process
    assert stop(process) == 0, "SIGTERM is a clean stop"


def test_plugin_is_listed_and_documents_every_option(tmp_path):
    listing = subprocess.run([script("twistd"), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert "monit" in listing.stdout
    help_text = subprocess.run(
        [script("twistd"), "monit", "--help"], cwd=tmp_path, capture_output=True, text=True
    ).stdout
    documented = set(re.findall(r"--[a-z][a-z0-9-]+", documented_options()))
    offered = set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]+)", help_text, re.MULTILINE))
    offered -= {"--help", "--version"}
    assert {"--nats", "--listen", "--jwt-secret", "--auth-url", "--max-pending"} <= offered
    assert offered <= documented, f"options missing from the documentation: {offered - documented}"


def documented_options() -> str:
    """The documentation's options page as it is built: its text, and the table its directive makes of Settings."""
    page = OPTIONS_PAGE.read_text()
    assert "```{monit-options}" in page, "the page shows the table made from monit/settings.py"
    return page + options_table()


def test_curl_watches_a_job_from_start_to_end(monit_process, nats_server):
    port, _ = monit_process
    publisher = Publisher(nats_server.url)
    try:
        publisher.publish("build.create", {"id": "b7"})
        curl = curl_stream(f"http://127.0.0.1:{port}/events?stream=b7", mint(SECRET, "bob", 60))
        opened = read_until(curl, b"event: build.create\n")
        publisher.publish("monitor.user", {"id": "b7", "messages": [{"body": "compiling\nlinking"}]})
        publisher.publish("build.create.done", {"id": "b7"})
        output = opened + unread(curl) + curl.communicate(timeout=20)[0]
    finally:
        publisher.close()
    assert curl.returncode == 0, "the stream ended by itself after the grace period"
    base = int(re.search(rb"id: (\d+)\nevent: build.create\n", output).group(1)) - 1  # ids go on from start time
    assert b'id: %d\ndata: {"body":"compiling\\nlinking"}\n\n' % (base + 2) in output
    assert output.endswith(b'id: %d\nevent: build.create.done\ndata: {"id":"b7"}\n\n' % (base + 3))


def one_line_on_stderr(result: subprocess.CompletedProcess) -> str:
    """A start-up problem: a non-zero exit and one line on stderr, no usage text, no traceback."""
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Usage" not in result.stdout + result.stderr and "Traceback" not in result.stdout + result.stderr
    line: str = lines[0]
    return line


@pytest.mark.parametrize(
    "args, said",
    [
        (["--listen", "nonsense:1"], "monit: --listen 'nonsense:1' is not an endpoint"),
        (["--nats", "http://x"], "monit: --nats 'http://x' is not a NATS URL"),
        (["--nats-nkey", "/nonexistent/seed"], "monit: --nats-nkey cannot read /nonexistent/seed"),
        (["--grace", "soon"], "monit: --grace must be a number, not 'soon'"),
        (["--bogus"], "monit: option --bogus not recognized"),
    ],
)
def test_a_bad_option_is_one_clear_line_and_a_failure(tmp_path, args, said):
    result = run_twistd_monit(tmp_path, *args, "--jwt-secret", "x")
    assert said in one_line_on_stderr(result)
    assert result.stdout == ""


def test_version(tmp_path):
    result = subprocess.run([script("twistd"), "monit", "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith(f"monit {version('txmonit')}")


def test_an_auth_url_with_a_password_is_refused_at_start_without_showing_it(tmp_path):
    """Today's alternative was worse: accepted, then every token check failed."""
    result = run_twistd_monit(tmp_path, "--auth-url", "http://admin:pw-sekrit@auth.example/check")
    assert "--auth-url 'http://admin:***@auth.example/check' must not carry a user or password" in (
        one_line_on_stderr(result)
    )
    assert "pw-sekrit" not in result.stdout + result.stderr


def test_port_in_use_is_one_line_and_status_1(tmp_path, nats_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_twistd_monit(
            tmp_path,
            "--nats",
            nats_server.url,
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--jwt-secret",
            "a-secret-long-enough-to-say-nothing",
        )
    assert result.returncode == 1
    assert "monit: cannot listen" in one_line_on_stderr(result)
    assert "cannot listen" not in result.stdout, "reported once, on stderr"
    # NATS is up: the stop that follows says nothing against it (an attempt cut short is no fault)
    complaints = [line for line in result.stdout.splitlines() if re.search(r"#(warn|error|critical)\]", line)]
    assert complaints == [], complaints


def test_embedded_nats_on_a_taken_port_names_the_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_twistd_monit(
            tmp_path,
            "--embedded-nats",
            "--embedded-nats-port",
            str(port),
            "--listen",
            f"tcp:{free_port()}:interface=127.0.0.1",
            "--jwt-secret",
            "x",
        )
    assert str(port) in one_line_on_stderr(result)


def test_embedding_example_serves_its_own_pages_and_monit_streams(tmp_path, nats_server):
    port = free_port()
    example = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "embed.py"), "--nats", nats_server.url, "--port", str(port)],
        env={"JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    publisher = Publisher(nats_server.url)
    try:
        read_until(example, b"serving on")
        wait_until_ready(f"http://127.0.0.1:{port}/monit")
        page = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/"], capture_output=True)
        assert page.stdout == b"my application\n"
        curl = curl_stream(f"http://127.0.0.1:{port}/monit/events?stream=e1", mint(SECRET, "eve", 60))
        read_until(curl, b"retry: 3000")
        publisher.publish("service.create", {"id": "e1"})
        publisher.publish("monitor.user", {"id": "e1", "messages": [{"body": "embedded"}]})
        read_until(curl, b'data: {"body":"embedded"}')
        publisher.publish("service.create.done", {"id": "e1", "status": "done"})
        read_until(example, b"job e1 ended: service.create.done {'id': 'e1', 'status': 'done'}")
        curl.terminate()
        curl.wait()
    finally:
        publisher.close()
        assert stop(example) == 0


def test_no_secret_anywhere_stops_with_status_1(tmp_path, nats_server):
    result = subprocess.run(
        [
            script("twistd"),
            "-n",
            "--pidfile=",
            "monit",
            "--nats",
            nats_server.url,
            "--listen",
            f"tcp:{free_port()}:interface=127.0.0.1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "monit: no JWT secret" in one_line_on_stderr(result)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class EventCount:
    """The events a growing SSE file holds so far, each byte read once."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._read = 0
        self._count = 0
        self._tail = b""  # the end of what was read, in case an "id:" line starts across reads

    def events(self) -> int:
        if not self._path.exists():
            return 0
        with self._path.open("rb") as file:
            file.seek(self._read)
            chunk = self._tail + file.read()
        self._read += len(chunk) - len(self._tail)
        self._count += chunk.count(b"\nid: ")
        self._tail = chunk[-4:]
        return self._count


def test_a_reader_that_never_reads_is_dropped_without_growing_monit(tmp_path, nats_server):
    """30 MB flow to a stalled reader and to curl: curl gets all, monit stays small.

    Past --max-pending the stalled reader is written nothing more, and having
    taken nothing for a heartbeat it is dropped. Were it written all, monit
    would hold most of the 30 MB for it.
    """
    port = free_port()
    monit = twistd_monit(
        tmp_path,
        "--nats",
        nats_server.url,
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--jwt-secret",
        SECRET,
        "--max-pending",
        "262144",
        "--history",
        "100",
        "--heartbeat",
        "1",
    )
    publisher = Publisher(nats_server.url)
    token = mint(SECRET, "carol", 600)
    stalled = socket.socket()
    try:
        wait_until_ready(f"http://127.0.0.1:{port}")
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(f"GET /events?stream=s1 HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n\r\n".encode())
        output = tmp_path / "curl.out"
        curl = curl_stream(f"http://127.0.0.1:{port}/events?stream=s1", token, "-o", str(output))
        read_until(monit, b"stream s1 opened for carol")
        read_until(monit, b"stream s1 opened for carol")
        before = rss_kib(monit.pid)
        body = "x" * 2000
        curl_has = EventCount(output)
        deadline = time.monotonic() + 60
        for batch in range(300):
            # At most two batches ahead of curl: a reader that is busy, not stalled, stays within
            # --max-pending and the history (a loaded machine would otherwise show it a gap).
            while curl_has.events() < (batch - 2) * 50 and time.monotonic() < deadline:
                time.sleep(0.005)
            publisher.publish(
                "monitor.user",
                {"id": "s1", "messages": [{"body": body, "n": n} for n in range(batch * 50, batch * 50 + 50)]},
            )
        read_until(monit, b"too slow", timeout=30)
        while curl_has.events() < 15000 and time.monotonic() < deadline:
            time.sleep(0.05)
        grown = rss_kib(monit.pid) - before
        curl.terminate()
        curl.wait()
        received = [
            json.loads(line[6:])["n"] for line in output.read_bytes().split(b"\n") if line.startswith(b"data: ")
        ]
        assert received == list(range(15000))
        assert grown < 12 * 1024, f"monit grew by {grown} KiB while 30 MB flowed"
    finally:
        stalled.close()
        publisher.close()
        stop(monit)


def test_sigterm_ends_streams_with_a_retry_hint_and_exits_0(monit_process):
    port, monit = monit_process
    token = mint(SECRET, "dave", 60)
    readers = [curl_stream(f"http://127.0.0.1:{port}/events?stream=t{n}", token) for n in range(3)]
    for reader in readers:
        read_until(reader, b"retry: 3000\n\n")
    started = time.monotonic()
    monit.send_signal(signal.SIGTERM)
    assert monit.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    for reader in readers:
        output, _ = reader.communicate(timeout=10)
        assert reader.returncode == 0, "the response ended cleanly, not cut"
        assert re.fullmatch(rb"retry: \d+\n\n", output), output


def test_json_logs_carry_the_stream_figures_and_never_the_token(tmp_path, nats_server):
    port = free_port()
    token = mint(SECRET, "erin", 60)
    monit = subprocess.Popen(
        [
            script("twistd"),
            "--logger=monit.logs.json_stdout",
            "-n",
            "--pidfile=",
            "monit",
            "--nats",
            nats_server.url,
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--jwt-secret",
            SECRET,
            "--allow-query-token",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, up=True)
        curl = curl_stream(f"http://127.0.0.1:{port}/events?stream=j1&token={token}")
        read_until(curl, b"retry: 3000")
        curl.terminate()
        curl.wait()
        output = read_until(monit, b"stream j1 closed for erin") + read_until(monit, b"\n")
    finally:
        stop(monit)
    parsed = subprocess.run(["jq", "-c", "."], input=output, capture_output=True, check=True).stdout
    records = [json.loads(line) for line in output.splitlines()]
    assert len(parsed.splitlines()) == len(records), "one object per line, as jq reads them"
    for record in records:
        assert {"time", "level", "system", "message"} <= set(record), record
        assert not any(key.startswith("log_") for key in record) and b"unpersistable" not in output
    [closed] = [r for r in records if r["message"].startswith("stream j1 closed for erin")]
    assert closed["stream"] == "j1" and closed["user"] == "erin" and closed["level"] == "info"
    assert closed["reason"] == "client gone" and "duration" in closed and closed["events"] == 0
    assert closed["system"] == "monit.web.stream.EventStream"
    assert token.encode() not in output
