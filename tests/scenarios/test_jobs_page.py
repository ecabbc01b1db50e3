"""The jobs page (``GET /watch`` without ``?stream=``) in headless Chromium: jobs appear, change state and go
stalled, live from the feed, with no reload. A screenshot of it is kept in ``test-artifacts/``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import jwt
import pytest

from devtools import Browser
from processes import serving_monit, stop, wait_until_ready

pytestmark = pytest.mark.integration  # twistd, nats-server, headless Chromium
SECRET = "jobs-page-secret-of-a-good-length-0123456789"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ROWS = "[...document.querySelectorAll('#rows tr')].map(tr => [tr.dataset.job, tr.children[1].textContent])"


def lister_token() -> str:
    claims = {"sub": "erin", "username": "erin", "exp": int(time.time()) + 600, "scope": "openid monit:jobs"}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def started(tmp_path: Path, nats_url: str, *flags: str) -> tuple[str, subprocess.Popen]:
    base, monit = serving_monit(tmp_path, nats_url, "--jwt-secret", SECRET, *flags, stdout=subprocess.DEVNULL)
    wait_until_ready(base)
    return base, monit


def test_the_jobs_page_follows_jobs_live(tmp_path, nats_server, publisher):
    base, monit = started(tmp_path, nats_server.url, "--stall-after", "1.5", "--grace", "0.5")
    browser = None
    try:
        publisher.publish("service.create", {"service": "web-env-p1", "name": "web-env"})
        publisher.publish("monitor.user", {"service": "web-env-p1", "messages": [{"body": "Creating network"}]})
        browser = Browser(f"{base}/watch#token={lister_token()}")
        assert browser.wait_for("document.getElementById('feed').textContent === 'live'")
        assert browser.evaluate("location.hash") == "", "the token left the address bar"
        browser.wait_for(f"new Map({ROWS}).get('p1') === 'open'")
        browser.evaluate("window.sameDocument = true")  # a reload would lose it

        publisher.publish("service.create", {"service": "web-env-p2", "name": "web-env"})
        browser.wait_for(f"{ROWS}.some(([job]) => job === 'p2')")  # appears, no reload
        publisher.publish("service.create.done", {"service": "web-env-p1", "status": "done"})
        browser.wait_for(f"new Map({ROWS}).get('p1') === 'closed'")
        browser.wait_for(f"(new Map({ROWS}).get('p2') || '').includes('stalled for')", timeout=10)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.screenshot(ARTIFACTS / "jobs-page.png")
        assert (ARTIFACTS / "jobs-page.png").read_bytes().startswith(b"\x89PNG")

        publisher.publish("monitor.user", {"service": "web-env-p2", "messages": [{"body": "back"}]})
        browser.wait_for(f"new Map({ROWS}).get('p2') === 'open'")  # resumed: the badge alone
        assert browser.evaluate("document.getElementById('stalled').textContent") == "0"
        assert browser.evaluate("window.sameDocument") is True, "never reloaded"
        link = browser.evaluate("document.querySelector('#rows tr[data-job=\"p2\"] a').getAttribute('href')")
        assert link == "watch?stream=p2"
    finally:
        if browser is not None:
            browser.close()
        stop(monit)


def test_a_token_that_may_not_list_is_told_so(tmp_path, nats_server):
    base, monit = started(tmp_path, nats_server.url)
    token = jwt.encode({"sub": "finn", "username": "finn", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    browser = None
    try:
        browser = Browser(f"{base}/watch#token={token}")
        assert browser.wait_for("!document.getElementById('sign-in').hidden")
        assert browser.evaluate("document.getElementById('why').textContent").startswith("Not listed: ")
        assert browser.evaluate("document.getElementById('jobs').hidden")
    finally:
        if browser is not None:
            browser.close()
        stop(monit)
