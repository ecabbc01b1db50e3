"""How monit asks CPython for less, each setting with the benchmark that justifies it.

``MonitService`` applies the collector's settings when it starts, so a
program that embeds it gets them as ``twistd monit`` does; the site presets
each connection and request as it is made. The presets that name Twisted's
private fields live behind the wall (``monit._twisted.key_sharing``), checked
at start-up: if they do not fit the installed Twisted, connections are not
preset.
"""

from __future__ import annotations

import gc

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from monit._twisted import key_sharing
from monit._twisted.seam import fits

# Young collections between full ones (Python's default is 10): ten times as few full pauses.
FULL_COLLECTION_EVERY = 100


def apply() -> None:
    """Tune the collector for a process that holds many inboxes (the whole process: it has one collector).

    Benchmark: the soak (``benchmarks/soak.py``, benchmarks/README.md "What changed since the first
    run"): under a flood of new job ids, a control stream's p99 fell ×2.5 with the freeze, ×1.7 with
    both settings.
    """
    # What exists at start (modules, classes, the services) lives as long as the process: out of the
    # collector's way, every full collection (a pause for every reader) is shorter.
    gc.freeze()
    # And there are fewer: a flood of new jobs keeps inboxes long enough to reach the oldest
    # generation, which Python would otherwise walk whole every few seconds.
    gc.set_threshold(700, 10, FULL_COLLECTION_EVERY)


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
