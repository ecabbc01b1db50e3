"""Restarts in seconds: a starting --jetstream instance replays from the checkpoint its peers keep.

Against real parts: a nats-server with JetStream,
monit instances in this process, nats-py as the engine and to read the
bucket. The central test compares an instance started from the checkpoint
with one that replayed the whole stream, inbox by inbox, frame by frame.
"""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest_twisted

from monit.checkpoint import Checkpoint, bucket_for
from monit.inbox import Inbox
from monit.routing import ID_SHIFT
from monit.service import feed_options
from monit.settings import Settings

from publisher import Publisher
from streams import feed_of, job_message, open_stream, start_monit
from waiting import wait_for

_names = itertools.count(1)
# Short timers, so that jobs end and are dropped within the test.
TIMERS: dict[str, Any] = dict(grace=0.3, retention=4.0, expiry=2.0, abandon=2.5, jetstream_check=0.2)
LONG: dict[str, Any] = {**TIMERS, "expiry": 300.0}  # jobs that are never opened stay for the whole test


def key_of(settings: Settings) -> str:
    """The key of the checkpoints of an instance with these settings."""
    key: str = feed_options(settings)["checkpoint_key"]
    return key


# Real parts


def fresh_stream() -> str:
    return f"MONIT_CHECKPOINT_{next(_names)}"


def api(publisher: Publisher, call: str, body: dict | None = None) -> dict:
    answer: dict = json.loads(publisher.request(f"$JS.API.{call}", json.dumps(body).encode() if body else b""))
    return answer


def stored_checkpoint(publisher: Publisher, stream: str, settings: Settings) -> Checkpoint | None:
    """The checkpoint as a peer reads it from the bucket."""
    bucket = bucket_for(stream)
    answer = api(publisher, f"STREAM.MSG.GET.KV_{bucket}", {"last_by_subj": f"$KV.{bucket}.{key_of(settings)}"})
    if "error" in answer:
        return None
    return Checkpoint.decode(base64.b64decode(answer["message"]["data"]))


def snapshot(monit) -> dict:
    """Every job as a reader would find it: of each run kept, its state, ids and every frame of its history."""
    registry = monit.registry

    def frames(inbox: Inbox) -> bytes:
        batch = inbox.frames_after(0, limit=1 << 30)
        return b"" if batch is None else batch.data

    return {
        inbox.id: [(run.state, run.start, run.last_id, run.run_after, frames(run)) for run in registry.runs(inbox.id)]
        for inbox in registry
    }


def last_seq(publisher: Publisher, stream: str) -> int:
    seq: int = api(publisher, f"STREAM.INFO.{stream}")["state"]["last_seq"]
    return seq


async def jetstream_monit(server, stream: str, timers: dict = TIMERS, **settings):
    monit = await start_monit(server.url, jetstream=True, jetstream_stream=stream, **timers, **settings)
    await wait_for(lambda: feed_of(monit).caught_up, timeout=30, what="the replay caught up")
    return monit


@pytest_twisted.ensureDeferred
async def test_a_start_from_the_checkpoint_builds_what_a_whole_replay_builds(jetstream_server):
    stream = fresh_stream()
    publisher = Publisher(jetstream_server.url)
    peer = await jetstream_monit(jetstream_server, stream)
    started = []
    try:
        # Jobs that end, or are given up, before the horizon: a whole replay drops them too.
        publisher.publish("service.create", {"id": "done"})
        publisher.publish("monitor.user", job_message("done", "d1", "d2"))
        publisher.publish("service.create.done", {"id": "done"})
        publisher.publish("monitor.user", job_message("loose", "never opened"))
        publisher.publish("build.create", {"id": "quiet"})
        publisher.publish("monitor.user", job_message("quiet", "then silence"))
        old = last_seq(publisher, stream)
        await wait_for(lambda: peer.registry.last_id >> ID_SHIFT == old, what="the peer has the old jobs")
        await wait_for(lambda: len(peer.registry) == 0, timeout=20, what="the peer dropped the old jobs")
        # Jobs the peer keeps: run again (the first run ends first), running, finished (a record), never opened.
        publisher.publish("service.create", {"id": "rerun"})
        publisher.publish("monitor.user", job_message("rerun", "first run"))
        publisher.publish("service.create.error", {"id": "rerun"})
        publisher.publish("service.create", {"id": "live"})
        publisher.publish("monitor.user", job_message("live", *(f"l{n}" for n in range(5))))
        publisher.publish("service.create", {"id": "finished"})
        publisher.publish("monitor.user", job_message("finished", "f1"))
        publisher.publish("service.create.done", {"id": "finished"})
        publisher.publish("service.create", {"id": "rerun"})  # within --retention: a new run of it
        publisher.publish("monitor.user", job_message("rerun", "second run"))
        publisher.publish("monitor.user", job_message("stray", "no open seen"))
        last = last_seq(publisher, stream)
        settings = Settings(**TIMERS)
        # The first kept run is rerun's first: the record of it is kept for --retention.
        await wait_for(
            lambda: feed_of(peer).checkpoint == old + 1 and peer.registry.last_id >> ID_SHIFT == last,
            what="the peer's checkpoint: the start of rerun's first run",
        )
        await wait_for(
            lambda: (
                stored_checkpoint(publisher, stream, settings) is not None
                and stored_checkpoint(publisher, stream, settings).horizon == old + 1
            ),
            what="stored",
        )

        checkpointed = await jetstream_monit(jetstream_server, stream)
        started.append(checkpointed)
        whole = await jetstream_monit(jetstream_server, stream, jetstream_checkpoint=False)
        started.append(whole)
        assert feed_of(checkpointed).replayed_from == old and feed_of(whole).replayed_from == 0
        await wait_for(
            lambda: snapshot(checkpointed) == snapshot(whole) == snapshot(peer),
            timeout=5,
            what="the same inboxes, histories and ids",
        )
        kept = snapshot(checkpointed)
        assert sorted(kept) == ["finished", "live", "rerun", "stray"]
        first, second = kept["rerun"]
        assert first[0] == "closing" or first[0] == "closed"
        assert second[3] >> ID_SHIFT == old + 3, "the second run follows the first's end"
        assert checkpointed.registry.last_id == whole.registry.last_id == peer.registry.last_id
        reader = await open_stream(checkpointed, "live")
        await wait_for(lambda: len(reader.events) == 6)
        assert [int(e.id) >> ID_SHIFT for e in reader.events] == [old + 4] + [old + 5] * 5
        reader.close()
    finally:
        publisher.close()
        for monit in (peer, *started):
            await monit.stopService()


def write(publisher: Publisher, stream: str, checkpoint: Checkpoint) -> bool:
    """Put a checkpoint in the bucket; whether it is the one stored now."""
    publisher.request(f"$KV.{bucket_for(stream)}.{key_of(Settings(**LONG))}", checkpoint.encode())
    return stored_checkpoint(publisher, stream, Settings(**LONG)) == checkpoint


@pytest_twisted.ensureDeferred
async def test_a_checkpoint_of_a_stream_made_anew_or_past_its_end_is_ignored(jetstream_server):
    stream = fresh_stream()
    publisher = Publisher(jetstream_server.url)
    first = await jetstream_monit(jetstream_server, stream, LONG)
    await first.stopService()
    try:
        for n in range(5):
            publisher.publish("monitor.user", job_message("kept", f"k{n}"))
        created = api(publisher, f"STREAM.INFO.{stream}")["created"]
        for written, why in (
            (Checkpoint(4, "2001-01-01T00:00:00Z"), "made anew since"),
            (Checkpoint(7, created), "past the end"),
        ):
            await wait_for(lambda: write(publisher, stream, written), what="written")
            monit = await jetstream_monit(jetstream_server, stream, LONG)
            try:
                assert feed_of(monit).replayed_from == 0, why
                assert monit.registry.get("kept").last_id == 5 << ID_SHIFT
            finally:
                await monit.stopService()
        await wait_for(lambda: write(publisher, stream, Checkpoint(4, created)), what="written")
        monit = await jetstream_monit(jetstream_server, stream, LONG)
        try:
            assert feed_of(monit).replayed_from == 3, "a usable one is used"
            assert monit.registry.get("kept").last_id == 5 << ID_SHIFT
        finally:
            await monit.stopService()
    finally:
        publisher.close()


@pytest_twisted.ensureDeferred
async def test_without_a_bucket_it_replays_everything_and_makes_the_bucket(jetstream_server):
    stream = fresh_stream()
    publisher = Publisher(jetstream_server.url)
    try:
        first = await jetstream_monit(jetstream_server, stream, LONG, jetstream_checkpoint=False)
        await first.stopService()
        for n in range(3):
            publisher.publish("monitor.user", job_message("kept", f"k{n}"))
        assert "error" in api(publisher, f"STREAM.INFO.KV_{bucket_for(stream)}")
        monit = await jetstream_monit(jetstream_server, stream, LONG)
        try:
            assert feed_of(monit).replayed_from == 0 and monit.registry.get("kept").last_id == 3 << ID_SHIFT
            bucket = api(publisher, f"STREAM.INFO.KV_{bucket_for(stream)}")["config"]
            assert bucket["max_msgs_per_subject"] == 1 and bucket["num_replicas"] == 1
            assert bucket["subjects"] == [f"$KV.{bucket_for(stream)}.>"] and bucket["allow_rollup_hdrs"]
            await wait_for(
                lambda: stored_checkpoint(publisher, stream, Settings(**LONG)) is not None,
                what="written once caught up",
            )
            assert stored_checkpoint(publisher, stream, Settings(**LONG)).horizon == 1, "kept needs everything"
        finally:
            await monit.stopService()
    finally:
        publisher.close()
