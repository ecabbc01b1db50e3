"""The watch page in headless Chromium, against a live job, with monit's default security settings."""

from __future__ import annotations

import subprocess

import pytest

from monit.token import mint

from devtools import Browser
from processes import serving_monit, stop, wait_until_ready

pytestmark = pytest.mark.integration  # twistd, nats-server, headless Chromium
SECRET = "watch-page-secret-of-a-good-length-0123456789"
STATE = "document.getElementById('state').textContent"
LINES = "[...document.querySelectorAll('#log li')].map(li => [li.className, li.textContent])"


def test_the_page_follows_a_job_live_on_a_session_cookie(tmp_path, nats_server, publisher):
    base, monit = serving_monit(
        tmp_path, nats_server.url, "--jwt-secret", SECRET, "--grace", "0.5", stdout=subprocess.DEVNULL
    )
    token = mint(SECRET, "dana", 600)
    browser = None
    try:
        wait_until_ready(base)
        browser = Browser(f"{base}/watch?stream=w1#token={token}")
        assert browser.wait_for(f"{STATE} === 'open' && {STATE}")
        assert browser.evaluate("location.hash") == "", "the token left the address bar"
        assert token not in browser.evaluate("document.cookie + location.href"), "HttpOnly, not in the URL"
        publisher.publish("service.create", {"service": "web-env-w1", "name": "web-env"})
        for level, body in [("INFO", "Creating network"), ("WARNING", "Port 22 is open"), ("ERROR", "web-2 failed")]:
            publisher.publish("monitor.user", {"service": "web-env-w1", "messages": [{"body": body, "level": level}]})
        publisher.publish("service.create.done", {"service": "web-env-w1", "status": "done"})
        assert browser.wait_for(f"{STATE} === 'done'")
        assert browser.evaluate("document.getElementById('count').textContent") == "5"
        lines = browser.evaluate(LINES)
        assert [css for css, _ in lines] == ["lifecycle", "INFO", "WARNING", "ERROR", "lifecycle"]
        assert "WARNINGPort 22 is open" in lines[2][1] and "service.create.done" in lines[4][1]
        assert browser.evaluate("getComputedStyle(document.querySelector('#log li.ERROR')).color") != (
            browser.evaluate("getComputedStyle(document.querySelector('#log li.INFO')).color")
        ), "levels coloured"
        browser.wait_for("document.getElementById('reconnects').textContent === '1'")  # the end, then 204
        assert browser.evaluate(STATE) == "done" and browser.evaluate("document.getElementById('sign-in').hidden")
    finally:
        if browser is not None:
            browser.close()
        stop(monit)


def test_without_a_token_the_page_asks_for_one(tmp_path, nats_server):
    base, monit = serving_monit(tmp_path, nats_server.url, "--jwt-secret", SECRET, stdout=subprocess.DEVNULL)
    browser = None
    try:
        wait_until_ready(base)
        browser = Browser(f"{base}/watch?stream=w2#token=not-a-token")
        assert browser.wait_for("!document.getElementById('sign-in').hidden")
        assert "invalid token" in browser.evaluate("document.getElementById('why').textContent")
    finally:
        if browser is not None:
            browser.close()
        stop(monit)
