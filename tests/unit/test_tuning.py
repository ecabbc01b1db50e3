"""The young sweep: one collection of the young generations a turn, however many streams let their requests go."""

from __future__ import annotations

import gc

from twisted.internet.task import Clock

from monit import tuning


def test_streams_let_go_in_one_turn_are_swept_once_at_its_end(monkeypatch):
    collected: list[int] = []
    monkeypatch.setattr(gc, "collect", collected.append)
    clock = Clock()
    sweep = tuning.YoungSweep(clock)
    for _ in range(3):
        sweep.soon()
    assert collected == [] and len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert collected == [1], "generations 0 and 1, not a full collection"
    sweep.soon()
    clock.advance(0)
    assert collected == [1, 1]


def test_a_cancelled_sweep_leaves_nothing_on_the_clock(monkeypatch):
    monkeypatch.setattr(gc, "collect", lambda generation: None)
    clock = Clock()
    sweep = tuning.YoungSweep(clock)
    sweep.soon()
    sweep.cancel()
    assert clock.getDelayedCalls() == []
