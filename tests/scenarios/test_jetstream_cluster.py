"""--jetstream on a 3-node nats-server cluster, with two monit processes: kill what you like, lose nothing.

Real parts only: three nats-servers routed on loopback with JetStream, monit as
``twistd monit`` processes, curl as the reader, nats-py as the engine.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import nats
import pytest

from monit.token import mint

from instances import SECRET, MonitInstance, jetstream_ready
from natsserver import NATSCluster, wait_for_port
from processes import read_until, stop
from publisher import Publisher

pytestmark = pytest.mark.integration  # a nats-server cluster, twistd, curl
TOKEN = mint(SECRET, "carol", 3600)


@pytest.fixture
def cluster(tmp_path):
    cluster = NATSCluster(str(tmp_path / "cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


class Monit(MonitInstance):
    """An instance started at once, and ready."""

    def __init__(self, tmp_path: Path, nats_urls: list[str]) -> None:
        super().__init__(tmp_path, nats_urls)
        self.start()

    def read_as_reader(self, stream: str, last_event_id: str | None = None) -> subprocess.Popen[bytes]:
        """``read`` with the test's token."""
        return self.read(stream, TOKEN, last_event_id)


def frames(output: bytes) -> list[tuple[str, dict]]:
    """(id, data) of each event frame."""
    found = []
    for frame in output.split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line)
        if b"id" in lines:
            found.append((lines[b"id"].decode(), json.loads(lines[b"data"])))
    return found


def step(publisher: Publisher, job: str, n: int) -> None:
    publisher.publish("monitor.user", {"id": job, "messages": [{"n": n}]})


def test_a_reader_on_a_killed_instance_resumes_on_the_other_with_exactly_the_rest(tmp_path, cluster):
    jetstream_ready(cluster.urls[0])
    one, two = Monit(tmp_path, cluster.urls), Monit(tmp_path, cluster.urls[::-1])
    publisher = Publisher(cluster.urls[1])
    try:
        reader = one.read_as_reader("k1")
        read_until(reader, b"retry: ")
        for n in range(5):
            step(publisher, "k1", n)
        seen = read_until(reader, b'data: {"n":4}\n\n')
        one.kill()
        stop(reader)
        for n in range(5, 10):
            step(publisher, "k1", n)
        last_id = frames(seen)[-1][0]
        resumed = two.read_as_reader("k1", last_id)
        rest = read_until(resumed, b'data: {"n":9}\n\n', timeout=30)
        stop(resumed)
        assert [data["n"] for _, data in frames(seen) + frames(rest)] == list(range(10))
    finally:
        publisher.close()
        one.stop()
        two.stop()


def stream_leader(publisher: Publisher) -> str:
    leader: str = json.loads(publisher.request("$JS.API.STREAM.INFO.MONIT", b""))["cluster"]["leader"]
    return leader


def test_every_instance_restarted_mid_job_and_a_node_lost_lose_nothing(tmp_path, cluster):
    """The node killed is the one monit is connected to, not the stream's leader.

    (Losing the leader's node leaves the stream without one for a few seconds,
    and what is published with plain NATS meanwhile is not stored: see
    docs/howto/jetstream.md.)
    """
    jetstream_ready(cluster.urls[0])
    monit = Monit(tmp_path, cluster.urls)
    publisher = Publisher(cluster.urls[2])
    try:
        publisher.publish("service.create", {"id": "r1"})
        for n in range(3):
            step(publisher, "r1", n)
        monit.stop()  # every instance down: the engine goes on
        for n in range(3, 6):
            step(publisher, "r1", n)
        leader = stream_leader(publisher)
        lost = next(node for n, node in enumerate(cluster.nodes) if f"node{n}" != leader)
        monit = Monit(tmp_path, [lost.url, *(url for url in cluster.urls if url != lost.url)])
        if lost.url == cluster.urls[2]:
            publisher.close()
            publisher = Publisher(next(url for url in cluster.urls if url != lost.url))
        lost.kill()  # the node monit is connected to
        for n in range(6, 9):
            step(publisher, "r1", n)
        publisher.publish("service.create.done", {"id": "r1"})
        reader = monit.read_as_reader("r1")
        try:
            output = read_until(reader, b"event: service.create.done\n", timeout=60) + read_until(reader, b"\n\n")
        except TimeoutError as error:
            raise AssertionError(monit.log_tail()) from error
        stop(reader)
        events = frames(output)
        assert [data.get("n") for _, data in events] == [None, *range(9), None]
        ids = [int(event_id) for event_id, _ in events]
        assert ids == sorted(set(ids)), "increasing, none twice"
    finally:
        publisher.close()
        monit.stop()


def publish_many(url: str, count: int, jobs: int) -> None:
    """Other jobs' traffic, as fast as nats-py sends it."""

    async def run() -> None:
        client = await nats.connect(url)
        for n in range(count):
            await client.publish("monitor.user", json.dumps({"id": f"busy{n % jobs}", "messages": [{"n": n}]}).encode())
        await client.flush()
        await client.close()

    asyncio.run(run())


def test_a_reader_that_follows_its_job_across_instances_killed_and_restarted_gets_each_event_once(tmp_path, cluster):
    """kill -9, restart, and the reader comes back to the restarted instance at once, while it replays."""
    jetstream_ready(cluster.urls[0])
    instances = [Monit(tmp_path, cluster.urls), Monit(tmp_path, cluster.urls[::-1])]
    publisher = Publisher(cluster.urls[1])
    got: list[tuple[str, dict]] = []
    last_id: str | None = None
    step_no = 0
    try:
        publisher.publish("service.create", {"id": "bounce"})
        for round_no in range(4):
            where = round_no % 2
            reader = instances[where].read_as_reader("bounce", last_id)
            for _ in range(5):
                step(publisher, "bounce", step_no)
                step_no += 1
            try:
                output = read_until(reader, b'data: {"n":%d}\n\n' % (step_no - 1), timeout=60)
            except TimeoutError as error:
                raise AssertionError(instances[where].log_tail()) from error
            got += frames(output)
            last_id = got[-1][0]
            instances[where].kill()
            stop(reader)
            publish_many(cluster.urls[1], 20_000, 500)  # the job goes on among others while the instance is down
            for _ in range(5):
                step(publisher, "bounce", step_no)
                step_no += 1
            instances[where].start(wait=False)  # on its port again; the reader comes back while it replays
            wait_for_port(instances[where].port, up=True, deadline=60)
        reader = instances[0].read_as_reader("bounce", last_id)
        output = read_until(reader, b'data: {"n":%d}\n\n' % (step_no - 1), timeout=60)
        stop(reader)
        got += frames(output)
        assert [data.get("n") for _, data in got] == [None, *range(step_no)], "every event once, in order"
        ids = [int(event_id) for event_id, _ in got]
        assert ids == sorted(set(ids))
    finally:
        publisher.close()
        for instance in instances:
            instance.stop()
