"""A minute of chaos for ``--jetstream``: whatever dies, every reader gets exactly what the stream stored.

Real parts only: three nats-servers routed on loopback (JetStream, file store,
the stream with 3 replicas), two ``twistd monit --jetstream`` instances, an
engine publishing jobs with nats-py over plain NATS as the real one does, and
readers (httpx with httpx-sse, sending what an EventSource sends) that bounce
between the instances with ``Last-Event-ID``, whether or not the instance they
reach is ready: most read one job, and a few read several on one response. For a minute, an instance is killed with SIGKILL every few
seconds (and started again), and now and then a NATS node: the stream's leader
first, then the leader or another. Then every reader must have had exactly the
events the stream stored for its job (read back from the stream with nats-py),
once each, in order, then the end: the close event, and ``204`` when it comes
back after it.

The schedule is random but seeded. The seed is printed and named in every
failure; ``CHAOS_SEED=N`` replays that schedule (``make chaos CHAOS_SEED=N``),
and ``CHAOS_SECONDS`` changes the minute.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from functools import partial
from itertools import zip_longest
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import nats
import nats.errors
import pytest
from httpx_sse import SSEError, aconnect_sse
from nats.js.errors import NotFoundError

from monit.token import mint

from instances import SECRET, MonitInstance, jetstream_ready
from natsserver import NATSCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECONDS = float(os.environ.get("CHAOS_SECONDS") or 60)
SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
STREAM = "MONIT"
JOBS = 8
READERS_PER_JOB = 3
MANY_JOB_READERS = 3  # each reads several jobs on one response
# Once the chaos is over: how long everything may take to settle, each step.
SETTLE_SECONDS = 90.0
TOKEN = mint(SECRET, "chaos", 3600 + 4 * int(SECONDS))
OPEN_SUBJECTS = ("service.create", "build.create", "environment.sync")
MARKS_OF_TROUBLE = ("#error]", "#critical]", "Traceback", "Unhandled")
T = TypeVar("T")


# The plan: jobs, readers and kills, all drawn from the seed before anything starts.


@attrs.frozen
class Job:
    id: str
    opens: str  # the subject that opens it; that subject + ".done" closes it
    start: float  # seconds after the chaos began
    steps: int
    interval: float

    @property
    def closes(self) -> str:
        return self.opens + ".done"


@attrs.frozen
class Kill:
    at: float  # seconds after the chaos began
    target: str  # "monit0", "monit1", "leader" (the stream's leader node) or "follower"
    down: float  # seconds until it is started again
    pick: int  # which follower, when there is a choice


def plan_jobs(rng: random.Random, seconds: float) -> list[Job]:
    """Jobs that start over the first half of the chaos and end before it does."""
    jobs = []
    for n in range(JOBS):
        start = n * seconds * 0.5 / JOBS + rng.uniform(0, 1)
        duration = min(rng.uniform(0.2, 0.4) * seconds, 0.9 * seconds - start)
        interval = rng.uniform(0.08, 0.2)
        jobs.append(Job(f"chaos{n}", rng.choice(OPEN_SUBJECTS), start, max(5, int(duration / interval)), interval))
    return jobs


def plan_kills(rng: random.Random, seconds: float) -> list[Kill]:
    """An instance every 2 to 5 s, down for up to 1.5 s; a node every 14 to 20 s, down 2 to 6 s."""
    kills = []
    at = rng.uniform(1, 4)
    while at < seconds:
        kills.append(Kill(at, f"monit{rng.randrange(2)}", rng.uniform(0, 1.5), 0))
        at += rng.uniform(2, 5)
    at, target = rng.uniform(6, 12), "leader"
    while at < seconds - 5:
        kills.append(Kill(at, target, rng.uniform(2, 6), rng.randrange(2)))
        at += rng.uniform(14, 20)
        target = rng.choice(["leader", "follower"])
    return sorted(kills, key=lambda kill: kill.at)


# The asyncio side: the engine and the readers share one loop, in a thread of its own.


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos-loop", daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        return self.submit(coroutine).result(timeout=timeout)

    def close(self) -> None:
        """Cancel whatever still runs there, then stop the loop."""

        async def cancel_all() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_all(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


@attrs.frozen
class Stored:
    """One message as the stream holds it."""

    seq: int
    subject: str
    document: dict[str, Any]


async def retrying(attempt: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
    """The first answer of a JetStream request that elections may make fail for a while."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except NotFoundError:
            raise  # an answer
        except (TimeoutError, nats.errors.Error):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


class Engine:
    """The workflow engine: each job's messages over plain NATS, as the real engine sends them."""

    def __init__(self, urls: list[str]) -> None:
        self._urls = urls
        self._nc: Any = None
        self.not_sent = 0
        self.published: Counter[str] = Counter()
        self.sent: list[tuple[float, str, str]] = []  # when, subject, payload: to say what the stream lost when

    async def connect(self) -> None:
        self._nc = await nats.connect(
            servers=self._urls,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,
            ping_interval=1,
            max_outstanding_pings=2,
            connect_timeout=2,
        )
        self._js = self._nc.jetstream(timeout=2.0)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def publish(self, subject: str, document: dict[str, Any]) -> None:
        """Send; whether the stream stored it is read back from the stream at the end."""
        payload = json.dumps(document)
        try:
            await self._nc.publish(subject, payload.encode())
        except nats.errors.Error:
            self.not_sent += 1
        else:
            self.published[document["id"]] += 1
            self.sent.append((time.monotonic(), subject, payload))

    async def run(self, jobs: list[Job], began: float) -> None:
        await asyncio.gather(*(self._job(job, began) for job in jobs))
        await self.flushed()

    async def flushed(self) -> None:
        """Once the server has everything published so far."""
        await retrying(lambda: self._nc.flush(timeout=2), timeout=SETTLE_SECONDS)

    async def _job(self, job: Job, began: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, began + job.start - loop.time()))
        await self.publish(job.opens, {"id": job.id})
        n = 0
        for step in range(job.steps):
            await asyncio.sleep(job.interval)
            lines = [{"n": n + k, "level": "info", "text": f"{job.id} step {step}"} for k in range(1 + step % 3)]
            n += len(lines)
            await self.publish("monitor.user", {"id": job.id, "messages": lines})
        await self.publish(job.closes, {"id": job.id, "status": "done"})

    async def stream_health(self) -> tuple[str | None, bool]:
        """The stream's leader, and whether every replica is current (no node down or behind)."""
        try:
            info = await self._js.stream_info(STREAM)
        except (TimeoutError, nats.errors.Error):
            return None, False
        cluster = info.cluster
        if cluster is None or not cluster.leader:
            return None, False
        replicas = cluster.replicas or []
        current = len(replicas) == 2 and all(peer.current and not peer.offline for peer in replicas)
        return cluster.leader, current

    async def last_seq(self) -> int:
        info = await retrying(lambda: self._js.stream_info(STREAM), timeout=SETTLE_SECONDS)
        return int(info.state.last_seq)

    async def stored(self) -> list[Stored]:
        """Every message the stream holds, in order, read back one by one."""
        info = await retrying(lambda: self._js.stream_info(STREAM), timeout=SETTLE_SECONDS)
        messages = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                raw = await retrying(partial(self._js.get_msg, STREAM, seq), timeout=SETTLE_SECONDS)
            except NotFoundError:
                continue
            messages.append(Stored(seq, raw.subject, json.loads(raw.data)))
        return messages


@attrs.define
class Visit:
    """One connection of a reader: where, resuming after what, and how it went."""

    at: float  # seconds after the chaos began
    port: int
    after: str | None
    first: int  # the index in ``received`` of its first event
    events: int = 0
    outcome: str = ""

    def __str__(self) -> str:
        return (
            f"{self.at:7.2f}s :{self.port} after {self.after}: "
            f"events #{self.first}..#{self.first + self.events - 1} ({self.events}), {self.outcome}"
        )


@attrs.define
class Reader:
    """Reads its jobs, reconnecting to a random instance whenever its response ends or fails.

    With several jobs, each event's data is ``{"stream": job, "data": payload}``.
    """

    jobs: tuple[str, ...]
    name: str
    start: float  # seconds after the chaos began
    received: list[tuple[Any, str, Any]] = attrs.Factory(list)
    visits: list[Visit] = attrs.Factory(list)
    ended: bool = False  # a reconnection after the close event was answered 204

    async def run(
        self, client: httpx.AsyncClient, instances: list[MonitInstance], began: float, deadline: float
    ) -> None:
        rng = random.Random(f"{SEED} {self.name}")
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, began + self.start - loop.time()))
        last: str | None = None
        while not self.ended and loop.time() < deadline:
            instance = rng.choice(instances)
            visit = Visit(loop.time() - began, instance.port, last, len(self.received))
            self.visits.append(visit)
            try:
                async with asyncio.timeout(rng.uniform(0.3, 6.0)):
                    await self._visit(client, instance, last, visit, rng.randint(1, 80))
            except TimeoutError:
                visit.outcome = "left after its time"
            except (httpx.HTTPError, SSEError) as error:
                visit.outcome = f"failed: {type(error).__name__} {error}"
            if self.received:
                last = str(self.received[-1][0])
            if not self.ended:
                await asyncio.sleep(rng.uniform(0.05, 0.3))  # an EventSource's retry, shortened

    async def _visit(
        self, client: httpx.AsyncClient, instance: MonitInstance, last: str | None, visit: Visit, leave_after: int
    ) -> None:
        """One response, read until it ends or fails, or for ``leave_after`` events.

        The id to resume after is the last one received (an SSE client keeps
        it across events that carry none)."""
        headers = {"X-Auth-Token": TOKEN}
        if last is not None:
            headers["Last-Event-ID"] = last
        url = f"{instance.base_url}/events"
        params = [("stream", job) for job in self.jobs]
        async with aconnect_sse(client, "GET", url, params=params, headers=headers) as source:
            status = source.response.status_code
            if status == 204:
                self.ended = True
                visit.outcome = "204"
                return
            if status != 200:
                visit.outcome = f"{status} {(await source.response.aread())[:200]!r}"
                return
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue  # the retry: hint alone (the spec dispatches no event without data)
                self.received.append((int(sse.id) if sse.id.isdigit() else sse.id, sse.event, _data(sse.data)))
                visit.events += 1
                if visit.events >= leave_after:
                    visit.outcome = "left"
                    return
            visit.outcome = "ended by monit"


def _data(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def read_all(readers: list[Reader], instances: list[MonitInstance], began: float, deadline: float) -> None:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=None), limits=limits, trust_env=False) as client:
        await asyncio.gather(*(reader.run(client, instances, began, deadline) for reader in readers))


# What the stream stored, as the events a reader of each job must get.


def expected_events(stored: list[Stored]) -> dict[str, list[tuple[Any, str, Any]]]:
    """Each job's events: a message's at ``seq << 20`` plus its place in it (a lifecycle event's at 0)."""
    jobs: dict[str, list[tuple[Any, str, Any]]] = {}
    for message in stored:
        events = jobs.setdefault(message.document["id"], [])
        if message.subject == "monitor.user":
            for index, line in enumerate(message.document["messages"]):
                events.append(((message.seq << 20) + index, "message", line))
        else:
            events.append((message.seq << 20, message.subject, message.document))
    return jobs


def expected_by(reader: Reader, expected: dict[str, list[tuple[Any, str, Any]]]) -> list[tuple[Any, str, Any]]:
    """What a reader of its jobs must get: one job's events, or several jobs' in id order, each naming its job."""
    if len(reader.jobs) == 1:
        return expected.get(reader.jobs[0], [])
    tagged = [
        (event_id, name, {"stream": job, "data": data})
        for job in reader.jobs
        for event_id, name, data in expected.get(job, [])
    ]
    return sorted(tagged, key=lambda event: event[0])


def difference(reader: Reader, expected: list[tuple[Any, str, Any]], closes: set[str]) -> str | None:
    """What is wrong with what a reader got, in a few lines, or None.

    Its last event must be a job's close (``closes``), and a reconnection after it a 204.
    """
    got = reader.received
    if got == expected and reader.ended and expected and expected[-1][1] in closes:
        return None
    ids = [event[0] for event in got]
    stored_ids = {event[0] for event in expected}
    lines = [
        f"{reader.name} (jobs {', '.join(reader.jobs)}): {len(got)} events for {len(expected)} stored; "
        f"{len(ids) - len(set(ids))} repeated, {len(stored_ids - set(ids))} missing, "
        f"{sum(1 for i in ids if i not in stored_ids)} never stored; "
        f"{'204 at the end' if reader.ended else 'no 204 at the end'}",
    ]
    if _rising(got) == expected and got != expected:
        lines.append("  without its repeats (events whose id is not above the last one's) it is what was stored")
    first = next((i for i, (a, b) in enumerate(zip_longest(expected, got)) if a != b), None)
    if first is not None:
        lines.append(f"  first difference at #{first}: stored {_short(expected, first)}, got {_short(got, first)}")
        at = next((n for n, v in enumerate(reader.visits) if v.first <= first < v.first + v.events), None)
        if at is not None:
            lines.extend(f"  {'->' if n == at else '  '} {reader.visits[n]}" for n in range(max(0, at - 2), at + 1))
    lines.append(f"  last visit: {reader.visits[-1]}")
    return "\n".join(lines)


def _rising(events: list[tuple[Any, str, Any]]) -> list[tuple[Any, str, Any]]:
    """The events whose id is above every id before them."""
    rising: list[tuple[Any, str, Any]] = []
    for event in events:
        if isinstance(event[0], int) and (not rising or event[0] > rising[-1][0]):
            rising.append(event)
    return rising


def _short(events: list[tuple[Any, str, Any]], index: int) -> str:
    if index >= len(events):
        return "nothing"
    event_id, name, data = events[index]
    return f"{event_id} ({event_id >> 20 if isinstance(event_id, int) else '?'}:{name}) {json.dumps(data)[:80]}"


# The chaos itself, driven from the test's thread.


class Chaos:
    """Carries out the kills on time; every start and kill goes in the timeline."""

    def __init__(
        self, cluster: NATSCluster, instances: list[MonitInstance], engine: Engine, loop: LoopThread, began: float
    ) -> None:
        self._cluster = cluster
        self._instances = instances
        self._engine = engine
        self._loop = loop
        self._began = began
        self.timeline: list[str] = []
        self._restarts: list[tuple[float, Callable[[], object], str]] = []

    def say(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self._began:7.2f}s {what}")

    def run(self, kills: list[Kill], seconds: float) -> None:
        for kill in kills:
            self._restart_due(until=self._began + kill.at)
            if kill.target.startswith("monit"):
                self._kill_instance(self._instances[int(kill.target[-1])], kill.down)
            else:
                self._kill_node(kill)
        self._restart_due(until=self._began + seconds)
        self._restart_due(until=float("inf"))

    def _restart_due(self, until: float) -> None:
        """Start again what is due before ``until``, in time order; then wait for ``until``."""
        while True:
            due = sorted((r for r in self._restarts if r[0] < until), key=lambda r: r[0])
            if not due:
                break
            at, start, what = due[0]
            self._restarts.remove(due[0])
            _pause_until(at)
            start()
            self.say(f"started {what} again")
        if until != float("inf"):
            _pause_until(until)

    def _kill_instance(self, instance: MonitInstance, down: float) -> None:
        if not instance.running and instance.process is not None:
            self.say(f"monit :{instance.port} had exited by itself, status {instance.process.returncode}")
        instance.kill()
        self.say(f"killed monit :{instance.port} (start {instance.starts}), down {down:.2f}s")
        self._restarts.append((time.monotonic() + down, lambda: instance.start(wait=False), f"monit :{instance.port}"))

    def _kill_node(self, kill: Kill) -> None:
        leader = self._healthy_leader()
        if leader is None:
            self.say(f"did not kill a node ({kill.target}): the stream has not been whole for {SETTLE_SECONDS:g}s")
            return
        if kill.target == "leader":
            name = leader
        else:
            name = [node for node in ("node0", "node1", "node2") if node != leader][kill.pick]
        node = self._cluster.node(name)
        node.kill()
        self.say(
            f"killed NATS {name} ({'the stream leader' if name == leader else 'a follower'}), down {kill.down:.2f}s"
        )
        self._restarts.append((time.monotonic() + kill.down, node.start, f"NATS {name}"))

    def wait_until_whole(self) -> None:
        if self._healthy_leader() is None:
            raise AssertionError(f"chaos seed {SEED}: the stream was not whole again within {SETTLE_SECONDS:g}s")

    def _healthy_leader(self) -> str | None:
        """The stream's leader once every replica is current (one node lost at a time, never two)."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            leader, whole = self._loop.run(self._engine.stream_health(), timeout=10)
            if leader is not None and whole:
                return leader
            self._restart_due(until=time.monotonic())
            time.sleep(0.2)
        return None


def _pause_until(moment: float) -> None:
    """Keep to the schedule: the next kill or start is due at ``moment``."""
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# The test.


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NATSCluster]:
    cluster = NATSCluster(str(tmp_path / "cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def instances(tmp_path: Path, cluster: NATSCluster) -> Iterator[list[MonitInstance]]:
    made = [MonitInstance(tmp_path, cluster.urls), MonitInstance(tmp_path, cluster.urls[::-1])]
    try:
        yield made
    finally:
        for instance in made:
            instance.stop()


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


def test_readers_get_exactly_what_the_stream_stored_while_instances_and_nodes_die(
    tmp_path: Path, cluster: NATSCluster, instances: list[MonitInstance], loop: LoopThread
) -> None:
    print(f"chaos seed {SEED}: CHAOS_SEED={SEED} replays this schedule")
    rng = random.Random(SEED)
    jobs = plan_jobs(rng, SECONDS)
    kills = plan_kills(rng, SECONDS)
    readers = [
        Reader(
            (job.id,), f"{job.id}-reader{n}", max(0.0, job.start + rng.uniform(-1.0, 0.8 * job.steps * job.interval))
        )
        for job in jobs
        for n in range(READERS_PER_JOB)
    ]
    for n in range(MANY_JOB_READERS):
        some = sorted(rng.sample(jobs, rng.randint(2, JOBS)), key=lambda job: job.id)
        readers.append(Reader(tuple(job.id for job in some), f"many-job-reader{n}", rng.uniform(0, SECONDS / 2)))

    jetstream_ready(cluster.urls[0])
    for instance in instances:
        instance.start()
    engine = Engine(cluster.urls[1:] + cluster.urls[:1])
    loop.run(engine.connect(), timeout=10)
    try:
        began = time.monotonic()
        publishing = loop.submit(engine.run(jobs, began))
        reading = loop.submit(read_all(readers, instances, began, began + SECONDS + 3 * SETTLE_SECONDS))
        chaos = Chaos(cluster, instances, engine, loop, began)
        chaos.say(f"the chaos begins: {datetime.now(UTC):%H:%M:%S.%f} UTC, as the monit logs tell time")
        chaos.run(kills, SECONDS)
        publishing.result(timeout=SETTLE_SECONDS)
        chaos.say("the engine has published every job")
        stored = close_every_job(engine, loop, jobs, chaos)
        reading.result(timeout=3 * SETTLE_SECONDS + 10)  # the readers give up by themselves before
        chaos.say("every reader has stopped")
    finally:
        loop.run(engine.close(), timeout=10)

    expected = expected_events(stored)
    held = Counter(message.document["id"] for message in stored)
    for job in jobs:
        chaos.say(f"{job.id}: {engine.published[job.id]} messages published, {held[job.id]} stored")
    chaos.say(f"{engine.not_sent} messages the engine could not send at all")
    for first, last, count in losses(engine.sent, stored):
        chaos.say(f"the stream did not store {count} messages sent from {first - began:.2f}s to {last - began:.2f}s")
    closes = {job.closes for job in jobs}
    problems = [p for p in (difference(r, expected_by(r, expected), closes) for r in readers) if p]
    assert not problems, (
        f"chaos seed {SEED} (CHAOS_SEED={SEED} replays it); {len(problems)} of {len(readers)} readers got "
        f"other than the stream stored; monit logs in {tmp_path}\n"
        + "\n".join(problems[:8])
        + "\ntimeline:\n"
        + "\n".join(chaos.timeline)
        + "\n"
        + troubles(instances)
    )
    assert sum(len(events) for events in expected.values()) > JOBS * 20, "the chaos had something to lose"


def losses(sent: list[tuple[float, str, str]], stored: list[Stored]) -> list[tuple[float, float, int]]:
    """The messages sent but never stored, as spells of time: (first sent, last sent, how many)."""
    kept = {(message.subject, json.dumps(message.document)) for message in stored}
    spells: list[tuple[float, float, int]] = []
    for at, subject, payload in sent:
        if (subject, payload) in kept:
            continue
        if spells and at - spells[-1][1] < 1.0:
            first, _, count = spells[-1]
            spells[-1] = (first, at, count + 1)
        else:
            spells.append((at, at, 1))
    return spells


def troubles(instances: list[MonitInstance]) -> str:
    """What the instances logged as errors or worse, each kind once with its count."""
    seen: Counter[str] = Counter()
    for instance in instances:
        for line in instance.log_path.read_text(errors="replace").splitlines():
            if line.startswith("monit: ") or any(mark in line for mark in MARKS_OF_TROUBLE):
                seen[line.partition(" [")[2][:200]] += 1
    if not seen:
        return "no errors in the monit logs"
    return "errors in the monit logs:\n" + "\n".join(f"  {count} x {line}" for line, count in seen.most_common(10))


def close_every_job(engine: Engine, loop: LoopThread, jobs: list[Job], chaos: Chaos) -> list[Stored]:
    """What the stream stored, once it holds every job's close.

    A close the stream lost (published while it had no leader) is published
    again, once the stream is whole and has had time to store the first one:
    its readers wait for the end, and a close stored twice is another job.
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        chaos.wait_until_whole()
        stored = loop.run(stored_once_settled(engine), timeout=SETTLE_SECONDS)
        open_jobs = [job for job in jobs if job.id not in closed(stored)]
        if not open_jobs:
            return stored
        assert time.monotonic() < deadline, f"chaos seed {SEED}: the stream never stored the close of {open_jobs}"
        for job in open_jobs:
            chaos.say(f"the stream lost the close of {job.id}: published again")
            loop.run(engine.publish(job.closes, {"id": job.id, "status": "done"}), timeout=10)
        loop.run(engine.flushed(), timeout=SETTLE_SECONDS)


def closed(stored: list[Stored]) -> set[str]:
    return {message.document["id"] for message in stored if message.subject.endswith(".done")}


async def stored_once_settled(engine: Engine, settle: float = 3.0) -> list[Stored]:
    """The stream's messages, once it has stored nothing more for ``settle`` seconds."""
    last = await engine.last_seq()
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < settle:
        await asyncio.sleep(0.2)
        seq = await engine.last_seq()
        if seq != last:
            last, quiet_since = seq, time.monotonic()
    return await engine.stored()
