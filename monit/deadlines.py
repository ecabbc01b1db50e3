"""Deadlines for very many objects, one reactor call per tenth of a second of them.

A ``DelayedCall`` per inbox is half a dozen objects (the call, its
arguments, bound methods) that the garbage collector walks on every full
collection: with 60,000 idle inboxes that walk is a 150 ms pause every
reader feels. Here a deadline is an entry in the bucket of its tick, and
each tick that has any gets one call; an owner's entry costs no object of
its own when its action is a callable made once (a bound method kept in an
attribute), so a flood of new jobs adds no work to the collector but the
inboxes themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

TICKS_PER_SECOND = 10
# A deadline's call may come this much before it (a tick's time is rounded); who checks time allows for it.
EARLY = 1e-6

Owner = TypeVar("Owner", bound=Hashable)


class Deadlines(Generic[Owner]):
    """At most one pending deadline per owner; each calls ``action(owner)`` once, in its tick."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._buckets: dict[int, dict[Owner, Callable[[Owner], object]]] = {}
        self._calls: dict[int, IDelayedCall] = {}
        self._tick_of: dict[Owner, int] = {}

    def __contains__(self, owner: Owner) -> bool:
        return owner in self._tick_of

    def __len__(self) -> int:
        return len(self._tick_of)

    def set(self, owner: Owner, when: float, action: Callable[[Owner], object]) -> None:
        """Call ``action(owner)`` at ``when`` (or at once, if it has passed), instead of any earlier plan."""
        self.cancel(owner)
        tick = math.ceil(when * TICKS_PER_SECOND - EARLY * TICKS_PER_SECOND)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = {}
            delay = max(0.0, tick / TICKS_PER_SECOND - self._clock.seconds())
            self._calls[tick] = self._clock.callLater(delay, self._fire, tick)
        bucket[owner] = action
        self._tick_of[owner] = tick

    def cancel(self, owner: Owner) -> None:
        """Forget the owner's deadline, if it has one."""
        tick = self._tick_of.pop(owner, None)
        if tick is None:
            return
        bucket = self._buckets[tick]
        del bucket[owner]
        if not bucket:
            del self._buckets[tick]
            call = self._calls.pop(tick, None)  # None: the tick is being fired
            if call is not None:
                call.cancel()

    def stop(self) -> None:
        """Forget every deadline (at shutdown)."""
        for call in self._calls.values():
            call.cancel()
        self._calls.clear()
        self._buckets.clear()
        self._tick_of.clear()

    def _fire(self, tick: int) -> None:
        """Run the tick's actions; one may set or cancel others' deadlines, in this tick too."""
        del self._calls[tick]
        bucket = self._buckets[tick]
        while bucket:
            owner, action = bucket.popitem()
            del self._tick_of[owner]
            action(owner)
        if self._buckets.get(tick) is bucket:
            del self._buckets[tick]
