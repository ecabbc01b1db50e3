"""A real browser's EventSource against monit: replay on reconnect, exactly once, and the end.

Headless Chromium loads tests/support/browser/eventsource.html from a small page server
in this process (another origin than monit's, so CORS is exercised); the page
opens ``new EventSource(monit + "/events?stream=ID&token=…")`` and POSTs every
happening to the page server's ``/report``, one report at a time, numbered.

What the EventSource spec (HTML, "Server-sent events") makes the page see:

* the response is a 200 ``text/event-stream``: "announce the connection",
  readyState OPEN, an ``open`` event;
* the connection drops or the response ends: "reestablish the connection",
  readyState CONNECTING, one ``error`` event, then after the ``retry:`` time a
  new request carrying ``Last-Event-ID`` (and, if it is a 200, another ``open``);
* the answer is not a 200 (monit's 204 once a closed inbox has nothing more):
  "fail the connection", readyState CLOSED, one ``error`` event, no ``open``,
  and no reconnection ever after.

So the drop gives one error (CONNECTING) and one open; the end of the stream
after the grace period gives one error (CONNECTING), and the 204 one error
(CLOSED): two opens in all, and the errors' readyStates are 0, 0, 2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Site

from monit.token import mint
from monit.web.site import MonitRequest

from loopback import QuietSite
from publisher import Publisher
from streams import SECRET, ServedMonit, start_monit
from waiting import wait_for

pytestmark = pytest.mark.integration  # headless Chromium
PAGE = Path(__file__).parents[1] / "support" / "browser" / "eventsource.html"
STREAM = "browser-1"
RETRY_MS = 200
SETTLE_MS = 5 * RETRY_MS  # how long the page watches a CLOSED source for any further attempt
CONNECTING, OPEN, CLOSED = 0, 1, 2


def chromium_binary() -> str:
    """Debian's Chromium, which `make test` installs when it is missing."""
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    assert os.access(binary, os.X_OK), "chromium is missing: run `make test`, which installs it"
    return binary


class Reports(Resource):
    """``POST /report``: one JSON document per happening on the page, kept in order of arrival."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict] = []

    def render_POST(self, request) -> bytes:
        self.received.append(json.loads(request.content.read()))
        request.setResponseCode(204)
        return b""

    def ordered(self) -> list[dict]:
        """The reports in the page's order; the page sends them one at a time, so none is missing."""
        reports = sorted(self.received, key=lambda report: report["seq"])
        assert [report["seq"] for report in reports] == list(range(len(reports))), reports
        return reports

    def of(self, kind: str) -> list[dict]:
        return [report for report in self.ordered() if report["kind"] == kind]

    def numbers(self) -> list[int]:
        return [json.loads(report["data"])["n"] for report in self.of("message")]


class Page(Resource):
    """``GET /eventsource.html``: the page; anything else (the favicon) is a 404."""

    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return PAGE.read_bytes()


class PageRoot(Resource):
    def getChild(self, name: bytes, request):
        return notFound()


def page_site(reports: Reports) -> Site:
    root = PageRoot()
    root.putChild(b"eventsource.html", Page())
    root.putChild(b"report", reports)
    return QuietSite(root)


class Chromium:
    """Headless Chromium on one URL, in a session of its own, with a fresh profile."""

    def __init__(self, binary: str, url: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="monit-chromium-")
        self.log_path = os.path.join(self.profile, "chromium.log")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={self.profile}",
                url,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, size: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as log:
                return log.read()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate, wait, kill if need be; then any helper left in its process group."""
        process = self.process
        try:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the group this test started, if any is left
            except (ProcessLookupError, PermissionError):
                pass
        finally:
            self._log.close()
            shutil.rmtree(self.profile, ignore_errors=True)


def deliver(publisher: Publisher, *numbers: int) -> None:
    for n in numbers:
        publisher.publish("monitor.user", {"id": STREAM, "messages": [{"n": n}]})


def record_event_heads(monit: ServedMonit) -> list[tuple[bytes | None, bytes | None]]:
    """The Origin and Last-Event-ID of each /events request monit gets from now on (a stream lets its request go)."""
    heads: list[tuple[bytes | None, bytes | None]] = []

    class Recorded(MonitRequest):
        def process(self) -> None:
            if self.path.startswith(b"/events"):
                heads.append((self.getHeader(b"origin"), self.getHeader(b"last-event-id")))
            super().process()

    assert monit.listener is not None
    monit.listener.site.requestFactory = Recorded
    return heads


def the_stream(monit):
    """The one stream monit is serving (for this test, the browser's)."""
    streams = list(monit.web.streams._streams)
    assert len(streams) == 1, streams
    return streams[0]


@pytest_twisted.ensureDeferred
async def test_eventsource_resumes_after_a_drop_exactly_once_and_stops_on_204(nats_server):
    binary = chromium_binary()
    reports = Reports()
    page_port = reactor.listenTCP(0, page_site(reports), interface="127.0.0.1")
    page_origin = f"http://127.0.0.1:{page_port.getHost().port}"
    monit = publisher = browser = None
    try:
        monit = await start_monit(
            nats_server.url,
            allow_query_token=True,
            cors_origins=frozenset({page_origin}),
            grace=0.3,
            retry_ms=RETRY_MS,
        )
        publisher = Publisher(nats_server.url)
        query = urlencode(
            {
                "monit": monit.base_url,
                "stream": STREAM,
                "token": mint(SECRET, "alice", 3600),
                "settle": SETTLE_MS,
            }
        )
        heads = record_event_heads(monit)
        browser = Chromium(binary, f"{page_origin}/eventsource.html?{query}")

        # The page connects; monit serves it.
        await wait_for(
            lambda: reports.of("open") and len(monit.web.streams) == 1, timeout=30, what="the page's EventSource opened"
        )
        first = the_stream(monit)
        assert heads == [(page_origin.encode(), None)], "an Origin, and no Last-Event-ID yet"
        inbox = monit.registry.get(STREAM)

        deliver(publisher, 1, 2, 3)
        await wait_for(lambda: reports.numbers() == [1, 2, 3], what="events 1-3 on the page")
        base = int(reports.of("message")[0]["lastEventId"]) - 1  # ids go on from monit's start time

        # monit drops the browser; events arrive while it is away.
        first._response.abort()
        await wait_for(
            lambda: len(monit.web.streams) == 0 and not inbox.subscribers, what="monit let go of the dropped stream"
        )
        deliver(publisher, 4, 5, 6)
        await wait_for(lambda: inbox.last_id == base + 6, what="events 4-6 in the inbox")
        assert len(monit.web.streams) == 0, "the browser came back before 4-6 arrived: nothing was missed"

        # The browser comes back by itself, from where it was, and gets what it missed.
        await wait_for(
            lambda: len(reports.of("open")) == 2 and len(monit.web.streams) == 1, what="the EventSource reconnected"
        )
        second = the_stream(monit)
        assert second is not first
        assert heads[1:] == [(page_origin.encode(), str(base + 3).encode())], "back from the last id it had"
        deliver(publisher, 7, 8, 9)
        await wait_for(lambda: len(reports.of("message")) >= 9, what="events 4-9 on the page")
        assert reports.numbers() == list(range(1, 10)), "a gap or a duplicate across the reconnect"

        # The job ends: its last event, then after the grace period the stream ends,
        # the browser asks for more after id 10, and monit's 204 closes the source for good.
        publisher.publish("service.create.done", {"id": STREAM})
        await wait_for(
            lambda: reports.of("settled"), timeout=15, what="the page saw its EventSource closed, and waited"
        )

        assert reports.numbers() == list(range(1, 10))
        assert [report["lastEventId"] for report in reports.of("message")] == [str(base + n) for n in range(1, 10)]
        timeline = [
            (report["kind"], report.get("readyState", report.get("lastEventId"))) for report in reports.ordered()
        ]
        assert timeline == [
            ("created", CONNECTING),
            ("open", OPEN),
            *[("message", str(base + n)) for n in (1, 2, 3)],
            ("error", CONNECTING),  # the drop: reestablish the connection
            ("open", OPEN),  # the reconnection, with Last-Event-ID: 3
            *[("message", str(base + n)) for n in range(4, 10)],
            ("service.create.done", str(base + 10)),
            ("error", CONNECTING),  # the response ended after the grace period
            ("error", CLOSED),  # the reconnection after id 10 got 204: fail the connection
            ("probe", str(base + 10)),
            ("settled", CLOSED),  # and nothing more within SETTLE_MS
        ], json.dumps(reports.ordered(), indent=1)
        assert all(report["data"] is None for report in reports.of("error")), reports.of("error")
        assert json.loads(reports.of("service.create.done")[0]["data"]) == {"id": STREAM}
        probe = reports.of("probe")[0]
        assert (probe["status"], probe["body"]) == (204, ""), probe
        assert len(monit.web.streams) == 0 and inbox.closed
    except BaseException:
        print("page reports:", json.dumps(sorted(reports.received, key=lambda r: r["seq"]), indent=1))
        if browser is not None:
            print("chromium log:", browser.log_tail())
        raise
    finally:
        if browser is not None:
            browser.stop()
        if publisher is not None:
            publisher.close()
        if monit is not None:
            await monit.stopService()
        await page_port.stopListening()
