"""The watch page in headless Chromium, against a live job, with monit's default security settings."""

from __future__ import annotations

import subprocess

import pytest

from monit.token import mint

from devtools import Browser
from natsserver import free_port
from processes import script, stop, wait_until_ready

pytestmark = pytest.mark.integration  # twistd, nats-server, headless Chromium
SECRET = "watch-page-secret-of-a-good-length-0123456789"
STATE = "document.getElementById('state').textContent"
LINES = "[...document.querySelectorAll('#log li')].map(li => [li.className, li.textContent])"


def test_the_page_follows_a_job_live_on_a_session_cookie(tmp_path, nats_server, publisher):
    port = free_port()
    monit = subprocess.Popen(
        [
            script("twistd"),
            "-n",
            "--pidfile=",
            "monit",
            "--nats",
            nats_server.url,
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--jwt-secret",
            SECRET,
            "--grace",
            "0.5",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    token = mint(SECRET, "dana", 600)
    browser = None
    try:
        wait_until_ready(f"http://127.0.0.1:{port}")
        browser = Browser(f"http://127.0.0.1:{port}/watch?stream=w1#token={token}")
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
    port = free_port()
    monit = subprocess.Popen(
        [
            script("twistd"),
            "-n",
            "--pidfile=",
            "monit",
            "--nats",
            nats_server.url,
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--jwt-secret",
            SECRET,
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    browser = None
    try:
        wait_until_ready(f"http://127.0.0.1:{port}")
        browser = Browser(f"http://127.0.0.1:{port}/watch?stream=w2#token=not-a-token")
        assert browser.wait_for("!document.getElementById('sign-in').hidden")
        assert "invalid token" in browser.evaluate("document.getElementById('why').textContent")
    finally:
        if browser is not None:
            browser.close()
        stop(monit)
