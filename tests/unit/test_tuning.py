"""The collector's settings: the young sweep (one collection of the young generations a turn) and the pace of full ones."""

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


def paced(monkeypatch, clock):
    """A started CollectorPace whose freeze leaves the test process's objects alone."""
    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    gc.collect()  # what earlier tests left: the pace's first full collection finds next to nothing
    pace = tuning.CollectorPace(clock, pace=30)
    pace.startService()
    assert frozen == [True]
    return pace


def test_after_a_full_collection_that_found_next_to_nothing_the_next_waits_for_a_tick(monkeypatch):
    before = gc.get_threshold()
    clock = Clock()
    pace = paced(monkeypatch, clock)
    try:
        assert gc.get_threshold() == (700, 10, tuning.FULL_COLLECTION_EVERY)
        gc.collect(1)
        assert gc.get_threshold()[2] == tuning.FULL_COLLECTION_EVERY, "a young collection holds nothing"
        gc.collect()
        held = gc.get_threshold()[2]
        assert held > 10_000_000, "after a full collection that found next to nothing, the next waits"
        clock.advance(29)
        assert gc.get_threshold()[2] == held
        clock.advance(1)
        assert gc.get_threshold() == (700, 10, tuning.FULL_COLLECTION_EVERY)
    finally:
        pace.stopService()
    assert gc.get_threshold() == before, "the process's own settings are back"


def test_a_stopped_pace_leaves_no_callback_and_nothing_on_the_clock(monkeypatch):
    clock = Clock()
    callbacks = list(gc.callbacks)
    pace = paced(monkeypatch, clock)
    pace.stopService()
    assert gc.callbacks == callbacks and clock.getDelayedCalls() == []


def test_a_full_collection_that_frees_many_cycles_lets_the_next_come_by_pythons_rule(monkeypatch):
    pace = paced(monkeypatch, Clock())
    try:
        cycles: list[list[object]] = [[] for _ in range(tuning.NEXT_TO_NOTHING)]
        for cycle in cycles:
            cycle.append(cycle)
        del cycles, cycle  # garbage all at once, for the full collection alone to find
        assert gc.collect() >= tuning.NEXT_TO_NOTHING
        assert gc.get_threshold()[2] == tuning.FULL_COLLECTION_EVERY
    finally:
        pace.stopService()
