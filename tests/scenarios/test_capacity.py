"""Capacity one user or one publisher could take from everyone, against the real server."""

from __future__ import annotations

import pytest_twisted
import treq

from streams import auth, job_message, open_stream, start_monit
from waiting import wait_for, within


@pytest_twisted.ensureDeferred
async def test_one_reader_asking_for_many_ids_cannot_crowd_out_the_jobs(nats_server, publisher):
    monit = await start_monit(nats_server.url, max_inboxes=30, max_inboxes_per_user=20)
    try:
        mallory = auth("mallory")
        for n in range(20):
            reader = await open_stream(monit, f"made{n}", headers=mallory)
            reader.close()
        refused = await within(treq.get(f"{monit.base_url}/events?stream=made20", headers=mallory))
        assert refused.code == 503
        assert "this user" in (await within(refused.json()))["error"]
        for n in range(10):  # another user fills what is left
            (await open_stream(monit, f"other{n}", headers=auth("oscar"))).close()
        await wait_for(lambda: not any(inbox.subscribers for inbox in monit.registry))
        watcher = await open_stream(monit, "1a2b")  # the only watched inbox
        publisher.publish("service.create", {"service": "env-job1"})
        publisher.publish("monitor.user", job_message("job1", "the engine's job finds room"))
        await wait_for(
            lambda: "job1" in monit.registry and monit.registry.get("job1").last_id == monit.registry.id_base + 2
        )
        assert monit.router.refused == 0 and len(monit.registry) <= 30
        assert "1a2b" in monit.registry
        watcher.close()
    finally:
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_a_flood_of_new_job_ids_leaves_room_for_the_next_real_job(nats_server, publisher):
    monit = await start_monit(nats_server.url, max_inboxes=100)
    try:
        for n in range(2_000):
            publisher.publish("service.create", {"id": f"flood{n}"})
        await wait_for(lambda: monit.router.received["open"] >= 2_000, what="the flood read")
        publisher.publish("service.create", {"id": "real"})
        await wait_for(lambda: "real" in monit.registry)
        reader = await open_stream(monit, "real")
        publisher.publish("monitor.user", job_message("real", "delivered"))
        await wait_for(lambda: len(reader.events) == 2)
        assert reader.data()[0]["body"] == "delivered"
        assert monit.router.refused == 0 and len(monit.registry) <= 100
        reader.close()
    finally:
        await monit.stopService()


@pytest_twisted.ensureDeferred
async def test_histories_stay_within_the_memory_budget(nats_server, publisher):
    monit = await start_monit(nats_server.url, memory_budget=200_000, metrics_public=True)
    try:
        for job in range(20):
            publisher.publish("monitor.user", {"id": f"j{job}", "messages": [{"pad": "x" * 1000}] * 50})
        await wait_for(lambda: monit.registry.events == 1000)
        response = await within(treq.get(f"{monit.base_url}/metrics"))
        figures = await within(response.text())
        held = next(float(line.split()[-1]) for line in figures.splitlines() if line.startswith("monit_history_bytes "))
        assert 0 < held <= 200_000 and held == monit.registry.history_bytes
        reader = await open_stream(monit, "j0", query="&lastEventId=1")  # its oldest events went first
        await wait_for(lambda: reader.events and reader.events[0].event == "gap")
        reader.close()
    finally:
        await monit.stopService()
