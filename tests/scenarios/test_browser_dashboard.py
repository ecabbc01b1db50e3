"""A dashboard in headless Chromium: one page, many EventSources to one origin, over HTTPS.

Over HTTP/2 the page's streams share one connection, so all of them run.
Over HTTP/1.1 a browser holds at most six connections to an origin: the
seventh EventSource and those after it wait, with no error, for one of the
six to end, unless one EventSource names all the jobs
(``/events?stream=a&stream=b…``). ``Dashboard`` opens any set of
EventSources and reports each one's readyState and events.
"""

from __future__ import annotations

import json

import pytest

from devtools import Browser
from tls_monit import TLSMonit

pytestmark = pytest.mark.integration  # twistd, nats-server, headless Chromium
OPEN, CONNECTING = 1, 0
SOURCES = 10

DASHBOARD = """
window.dashboard = (urls) => {
  window.sources = urls.map((url) => {
    const source = { url, events: [], errors: 0, eventSource: new EventSource(url) };
    source.eventSource.onmessage = (event) => source.events.push(JSON.parse(event.data));
    source.eventSource.onerror = () => { source.errors += 1; };
    return source;
  });
  return urls.length;
};
window.report = () => window.sources.map((s) => (
  { url: s.url, readyState: s.eventSource.readyState, events: s.events, errors: s.errors }
));
"""


class Dashboard:
    """A page on monit's origin that opens EventSources and reports, per source, its state and events."""

    def __init__(self, monit: TLSMonit, *flags: str) -> None:
        self.monit = monit
        self.browser = Browser(f"{monit.base}/healthz", "--ignore-certificate-errors", *flags)
        self.browser.wait_for("location.protocol === 'https:' && document.readyState === 'complete'")
        self.browser.evaluate(DASHBOARD)

    def protocol(self) -> str:
        """What the page's navigation entry says it came over: ``http/1.1``, or (over HTTP/2 with a
        certificate Chromium was told to ignore) an empty string: Chromium leaves it out there."""
        return str(self.browser.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol"))

    def open(self, urls: list[str]) -> None:
        assert self.browser.evaluate(f"dashboard({json.dumps(urls)})") == len(urls)

    def report(self) -> list[dict]:
        """Per source: url, readyState (0 connecting, 1 open, 2 closed), events (parsed data), errors."""
        return list(self.browser.evaluate("report()"))

    def wait_for(self, condition: str, timeout: float = 20.0) -> list[dict]:
        """Wait until the JavaScript ``condition`` holds of ``report()`` (as ``r``); the report."""
        self.browser.wait_for(f"((r) => {condition})(report())", timeout)
        return self.report()

    def close(self) -> None:
        self.browser.close()


def job_urls(monit: TLSMonit, count: int) -> list[str]:
    token = monit.token("dana")
    return [f"/events?stream=dash-{n}&token={token}" for n in range(count)]


def publish_to_each(publisher, count: int, round_: int) -> None:
    for n in range(count):
        publisher.publish("monitor.user", {"id": f"dash-{n}", "messages": [{"job": n, "round": round_}]})


@pytest.fixture
def monit(tmp_path, nats_server):
    server = TLSMonit(tmp_path, nats_server.url, "--allow-query-token")
    yield server
    assert server.stop() == 0


def test_over_http2_ten_event_sources_to_one_origin_all_get_live_events(monit, publisher):
    dashboard = Dashboard(monit)
    try:
        assert dashboard.protocol() in ("h2", ""), "not HTTP/1.1"
        dashboard.open(job_urls(monit, SOURCES))
        # all ten open at once: over HTTP/1.1 only six can (the test below)
        dashboard.wait_for(f"r.filter((s) => s.readyState === {OPEN}).length === {SOURCES}")
        publish_to_each(publisher, SOURCES, 1)
        report = dashboard.wait_for("r.every((s) => s.events.length === 1)")
        assert [source["events"] for source in report] == [[{"job": n, "round": 1}] for n in range(SOURCES)]
        assert all(source["errors"] == 0 for source in report)
    finally:
        dashboard.close()


def test_over_http11_six_event_sources_connect_and_four_wait_without_an_error(monit, publisher):
    dashboard = Dashboard(monit, "--disable-http2")
    try:
        assert dashboard.protocol() == "http/1.1"
        dashboard.open(job_urls(monit, SOURCES))
        dashboard.wait_for(f"r.filter((s) => s.readyState === {OPEN}).length === 6")
        for round_ in (1, 2):  # two rounds of events reach the six, and none of the four waiting
            publish_to_each(publisher, SOURCES, round_)
            dashboard.wait_for(f"r.filter((s) => s.events.length === {round_}).length === 6")
        report = dashboard.report()
        live = [source for source in report if source["readyState"] == OPEN]
        waiting = [source for source in report if source["readyState"] == CONNECTING]
        assert (len(live), len(waiting)) == (6, 4)
        assert all(len(source["events"]) == 2 for source in live)
        assert all(source["events"] == [] and source["errors"] == 0 for source in waiting), waiting
    finally:
        dashboard.close()


def test_over_http11_one_many_job_stream_carries_all_ten_jobs(monit, publisher):
    dashboard = Dashboard(monit, "--disable-http2")
    try:
        assert dashboard.protocol() == "http/1.1"
        jobs = "&".join(f"stream=dash-{n}" for n in range(SOURCES))
        dashboard.open([f"/events?{jobs}&token={monit.token('dana')}"])
        dashboard.wait_for(f"r[0].readyState === {OPEN}")
        for round_ in (1, 2):
            publish_to_each(publisher, SOURCES, round_)
            dashboard.wait_for(f"r[0].events.length === {SOURCES * round_}")
        [source] = dashboard.report()
        received = sorted((event["stream"], event["data"]["round"]) for event in source["events"])
        assert received == sorted((f"dash-{n}", round_) for n in range(SOURCES) for round_ in (1, 2))
        assert all(event["data"]["job"] == int(event["stream"][5:]) for event in source["events"])
        assert source["errors"] == 0
    finally:
        dashboard.close()
