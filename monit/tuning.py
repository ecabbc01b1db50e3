"""How monit asks CPython for less, each setting with the benchmark that justifies it.

``MonitService`` starts ``CollectorPace``, the collector's settings, with its
other parts, so a program that embeds it gets them as ``twistd monit`` does;
the site presets each connection and request as it is made. The presets that
name Twisted's private fields live behind the wall
(``monit._twisted.key_sharing``), checked at start-up: if they do not fit the
installed Twisted, connections are not preset.
"""

from __future__ import annotations

import gc

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from monit._twisted import key_sharing
from monit._twisted.seam import fits

# Young collections between full ones (Python's default is 10): ten times as few full pauses.
FULL_COLLECTION_EVERY = 100
# After a full collection that found next to nothing (fewer objects than NEXT_TO_NOTHING), no
# other until the next tick of this many seconds, whatever else asks for one.
FULL_COLLECTION_PACE = 30.0
NEXT_TO_NOTHING = 1000
# The oldest generation's threshold while a full collection waits for the pace: not reached in time.
_HELD = 1 << 30


class CollectorPace(Service):
    """The collector's settings for a process that holds many inboxes, from start to stop.

    There is one collector per process: a program that embeds monit gets
    these as ``twistd monit`` does, and its own settings back at stop.

    Python lets a full collection come once a hundred young collections have
    passed (``FULL_COLLECTION_EVERY``) and a quarter of the oldest generation is
    new since the last. A flood of new job ids turns the inboxes over fast
    enough for that every 3 s, and ``YoungSweep``'s collections count as young
    ones: in the soak (20,000 inboxes, 1,000 readers) each full collection took
    30 ms, freed next to nothing, and held every reader, so the control p99
    went from 3.8 ms quiet to 17-28 ms. So a full collection that frees next
    to nothing holds the next one until a tick, every ``FULL_COLLECTION_PACE``
    seconds: cycles are then rare in the oldest generation, and waiting keeps
    little in RSS. One that frees more lets Python's rule go on: a storm of
    new connections leaves thousands of cycles there, and holding them 30 s
    took idle streams from 3.3 to 8.4 KiB each at 10,000. Benchmarks:
    ``make soak`` and ``benchmarks/run.py --scenario idle-memory``
    (benchmarks/README.md).
    """

    def __init__(self, clock: IReactorTime, pace: float = FULL_COLLECTION_PACE) -> None:
        self._pace = pace
        self._before = gc.get_threshold()  # the process's own settings, taken again at start
        self._allow = LoopingCall(_set_oldest_threshold, FULL_COLLECTION_EVERY)
        self._allow.clock = clock

    def startService(self) -> None:
        super().startService()
        self._before = gc.get_threshold()
        # What exists at start (modules, classes, the services) lives as long as the process: out of
        # the collector's way, every full collection (a pause for every reader) is shorter.
        gc.freeze()
        gc.set_threshold(700, 10, FULL_COLLECTION_EVERY)
        gc.callbacks.append(self._collected)
        self._allow.start(self._pace, now=False)

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        # Called inside the collector, at any allocation: it touches the collector's settings only.
        if phase == "stop" and info["generation"] == 2 and info["collected"] < NEXT_TO_NOTHING:
            _set_oldest_threshold(_HELD)

    def stopService(self) -> None:
        if self.running:
            self._allow.stop()
            gc.callbacks.remove(self._collected)
            gc.set_threshold(*self._before)
        super().stopService()


def _set_oldest_threshold(threshold: int) -> None:
    """Set how many young collections a full one waits for, leaving the young generations' thresholds."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, threshold)


def preset_connection(channel: HTTPChannel) -> None:
    """Set at once what Twisted sets on a channel and its transport only later, so their dicts share keys.

    Measured with tracemalloc over 1,000 idle streams (``benchmarks/run.py --scenario idle-memory``
    watches the same in RSS): 10.1 KB to 8.8 KB each.
    """
    if fits(key_sharing):
        key_sharing.preset(channel)


def preset_request(request: Request) -> None:
    """Give a request the attributes a stream sets when it registers as a producer, in the same order.

    Otherwise, if the process's first request was not a stream (a health check), each stream's
    request dict is rebuilt unshared when it registers, at 1.5 KiB a stream. Benchmark:
    ``benchmarks/run.py --scenario idle-memory``, which asks /readyz first: RSS per idle stream at
    10,000 went from 12.1 KiB to 10.8 with this and two other changes made with it.
    """
    request.producer = None
    request.streamingProducer = False


class YoungSweep:
    """One collection of the young generations at the end of a turn in which streams let their requests go.

    A stream over HTTP/1.1 lets its channel and request go once its headers
    are out (``monit.web.lean``), but they hold each other, and Klein's
    Deferreds hold them, in cycles: only the collector frees them, and with
    ``FULL_COLLECTION_EVERY`` the older of them wait minutes, in RSS. They
    are young, so one collection of generations 0 and 1 a turn frees them.
    Benchmark: ``benchmarks/run.py --scenario idle-memory``, RSS per idle
    stream at 10,000: 4.16 KiB without it.
    """

    __slots__ = ("_clock", "_due")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._due: IDelayedCall | None = None

    def soon(self) -> None:
        if self._due is None:
            self._due = self._clock.callLater(0, self._sweep)

    def _sweep(self) -> None:
        self._due = None
        gc.collect(1)

    def cancel(self) -> None:
        """Nothing more to sweep (the site is closing): leave no call behind."""
        if self._due is not None:
            self._due.cancel()
            self._due = None
