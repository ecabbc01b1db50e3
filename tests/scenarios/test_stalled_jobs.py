"""A job that goes quiet, for real: monit.stalled and monit.resumed on its streams with a short --stall-after."""

from __future__ import annotations

import json

import pytest_twisted
import treq

from monit.sse import decode_frames

from streams import auth, job_message, open_stream, start_monit
from waiting import wait_for, within


@pytest_twisted.ensureDeferred
async def test_a_real_job_stalls_and_resumes_on_its_streams(nats_server, publisher):
    monit = await start_monit(nats_server.url, stall_after=0.5)
    try:
        publisher.publish("service.create", {"service": "env-stall1", "name": "env"})
        one = await open_stream(monit, "stall1")
        many = await open_stream(monit, "stall1", query="&stream=other1")
        await wait_for(lambda: "monit.stalled" in [e.event for e in one.events], what="a stalled notice")
        await wait_for(lambda: "monit.stalled" in [e.event for e in many.events], what="a tagged one")
        summary = json.loads(
            await within(treq.content(await within(treq.get(f"{monit.base_url}/jobs/stall1", headers=auth()))))
        )
        assert summary["stalled"] is True and summary["state"] == "open"
        stalled = next(frame for frame in decode_frames(one.raw) if frame[1] == "monit.stalled")
        assert stalled[0] is None and json.loads(stalled[2])["silent_for"] >= 0.5
        assert json.loads(next(e for e in many.events if e.event == "monit.stalled").data)["stream"] == "stall1"
        publisher.publish("monitor.user", job_message("stall1", "back"))
        await wait_for(lambda: one.data() == [{"body": "back", "level": "INFO"}], what="the event after the stall")
        names = [e.event for e in one.events]
        assert names.index("monit.resumed") == names.index("message") - 1
        assert names[:2] == ["service.create", "monit.stalled"]
        metrics = await within(treq.content(await within(treq.get(f"{monit.base_url}/metrics", headers=auth()))))
        assert b'monit_jobs{state="open"}' in metrics and b"monit_jobs_stalled " in metrics
        one.close()
        many.close()
    finally:
        await monit.stopService()
