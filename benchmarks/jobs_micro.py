"""CPU per delivered event: one-job streams against many-job streams, in-process.

    .venv/bin/python benchmarks/jobs_micro.py [--jobs 10] [--readers 100] [--turns 2000]

No sockets: each reader's request takes what is written and drops it. Every
turn publishes one event to each job and flushes, as a busy reactor turn
does. One-job readers share each inbox's batch; a many-job reader, live,
gets each turn's batches of its jobs as one, tagged with the jobs and merged
by id once for every reader of the same jobs: the bookkeeping around that is
what this measures (without sockets, the one write each saves costs nothing).
"""

from __future__ import annotations

import argparse
import time

from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from monit.registry import InboxRegistry
from monit.service import registry_options
from monit.settings import Settings
from monit.web.jobs import ManyJobs
from monit.web.stream import EventStream, OneJob, StreamSet

EVENT = '{"body":"Creating network web-env-net","level":"INFO"}'


class Sink(DummyRequest):
    """A response that takes every write and keeps nothing."""

    def __init__(self) -> None:
        super().__init__([b"events"])
        self.transport = None

    def write(self, data: bytes) -> None:
        pass

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass


def run(jobs: int, readers: int, turns: int, many: bool) -> float:
    """CPU µs per event delivered to a reader."""
    clock = Clock()
    registry = InboxRegistry(clock, **registry_options(Settings(history=100)))
    streams = StreamSet(clock, 15, 3000, fast_path=False)
    names = [f"job{n}" for n in range(jobs)]
    for _ in range(readers):
        if many:
            EventStream(Sink(), ManyJobs(registry, names), streams, "bench", clock, 1 << 20).run()
        else:
            for name in names:
                EventStream(Sink(), OneJob(registry, name), streams, "bench", clock, 1 << 20).run()
    started = time.process_time()
    for _ in range(turns):
        for name in names:
            registry.publish(name, EVENT)
        clock.advance(0)
    return (time.process_time() - started) / (turns * jobs * readers) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--readers", type=int, default=100)
    parser.add_argument("--turns", type=int, default=2000)
    args = parser.parse_args()
    one = run(args.jobs, args.readers, args.turns, many=False)
    many = run(args.jobs, args.readers, args.turns, many=True)
    print(f"{args.readers} readers of {args.jobs} jobs, one event per job per turn, {args.turns} turns")
    print(f"  one stream per job: {one:.2f} CPU µs per delivered event")
    print(f"  one many-job stream: {many:.2f} CPU µs per delivered event ({many / one:.1f}×)")


if __name__ == "__main__":
    main()
