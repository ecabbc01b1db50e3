"""Deadlines: many owners share a reactor call per tick, and each deadline fires once, on time."""

from __future__ import annotations

from twisted.internet.task import Clock

from monit.deadlines import Deadlines


def make() -> tuple[Clock, Deadlines[str], list[tuple[str, float]]]:
    clock = Clock()
    clock.advance(1000.0)
    return clock, Deadlines(clock), []


def test_owners_in_one_tick_share_one_call_and_fire_no_earlier_than_their_tick() -> None:
    clock, deadlines, fired = make()
    for n in range(1000):
        deadlines.set(f"inbox{n}", 1000.25 + n / 100_000, lambda owner: fired.append((owner, clock.seconds())))
    assert len(clock.getDelayedCalls()) == 1 and len(deadlines) == 1000
    clock.advance(0.29)
    assert fired == []
    clock.advance(0.01)
    assert len(fired) == 1000 and {when for _, when in fired} == {1000.3}
    assert len(deadlines) == 0 and clock.getDelayedCalls() == []


def test_a_deadline_set_again_replaces_the_first_and_cancel_forgets_it() -> None:
    clock, deadlines, fired = make()
    deadlines.set("a", 1005.0, lambda owner: fired.append((owner, clock.seconds())))
    deadlines.set("a", 1002.0, lambda owner: fired.append((owner, clock.seconds())))
    deadlines.set("b", 1003.0, lambda owner: fired.append((owner, clock.seconds())))
    deadlines.cancel("b")
    deadlines.cancel("b")
    assert "a" in deadlines and "b" not in deadlines
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(1.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == [("a", 1002.0)]
    clock.advance(10)
    assert len(fired) == 1


def test_a_deadline_in_the_past_fires_at_once() -> None:
    clock, deadlines, fired = make()
    deadlines.set("old", 10.0, lambda owner: fired.append((owner, clock.seconds())))
    clock.advance(0)
    assert fired == [("old", 1000.0)]


def test_an_action_may_set_and_cancel_deadlines_of_its_own_tick() -> None:
    clock, deadlines, fired = make()

    def first(owner: str) -> None:
        fired.append((owner, clock.seconds()))
        deadlines.cancel("b" if owner == "a" else "a")
        deadlines.set("c", 1000.0, lambda again: fired.append((again, clock.seconds())))

    deadlines.set("a", 1001.0, first)
    deadlines.set("b", 1001.0, first)
    clock.advance(1)
    assert len(fired) == 2 and fired[0][0] in "ab" and fired[1] == ("c", 1001.0)
    assert len(deadlines) == 0 and clock.getDelayedCalls() == []


def test_stop_forgets_everything() -> None:
    clock, deadlines, fired = make()
    for n in range(10):
        deadlines.set(str(n), 1000.0 + n, lambda owner: fired.append((owner, 0.0)))
    deadlines.stop()
    assert clock.getDelayedCalls() == [] and len(deadlines) == 0
    clock.advance(20)
    assert fired == []
