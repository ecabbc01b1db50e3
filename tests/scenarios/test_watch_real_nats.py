"""Jobs in process against a real nats-server: a program watches a job, waits for its end, follows every job."""

from __future__ import annotations

import pytest
import pytest_twisted

from streams import job_message, start_monit
from waiting import within


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_program_acts_on_jobs_published_to_a_real_nats_server(nats_server, publisher):
    monit = await start_monit(nats_server.url)
    try:
        followed: list[str] = []
        monit.follow(lambda job, event: followed.append(job))
        watcher = monit.watch("w1")
        closed = monit.when_closed("w1")
        publisher.publish("service.create", {"id": "w1"})
        publisher.publish("monitor.user", job_message("w1", "one"))
        publisher.publish("service.create.done", {"id": "w1", "status": "done"})
        events = [await within(watcher.next()) for _ in range(3)]
        assert [event.type for event in events] == ["service.create", "message", "service.create.done"]
        assert events[1].data == {"body": "one", "level": "INFO"}
        assert (await within(closed)).data == {"id": "w1", "status": "done"}
        assert await within(watcher.next()) is None  # after the grace period
        assert followed == ["w1"] * 3
    finally:
        await monit.stopService()
