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
