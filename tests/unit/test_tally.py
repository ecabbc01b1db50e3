"""Tally: the first of each kind at once, then counts on a timer that runs only when needed."""

from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher, formatEvent

from monit.tally import Tally

from logged import observer


def make() -> tuple[Clock, Tally, list]:
    said: list = []
    clock = Clock()
    return clock, Tally(clock, Logger(observer=LogPublisher(observer(said.append))), "skipped"), said


def test_stop_says_what_is_held_and_leaves_no_timer():
    clock, tally, said = make()
    tally.add("a", "bad")
    tally.add("a", "bad", 4)
    tally.stop()
    assert [formatEvent(e) for e in said] == ["skipped on a: bad", "skipped: 4 more in the last 10 s (a: 4)"]
    assert not clock.getDelayedCalls()
    tally.stop()  # twice is fine


def test_after_a_quiet_period_the_first_is_said_again():
    clock, tally, said = make()
    tally.add("a", "bad")
    clock.advance(10)
    tally.add("a", "worse")
    assert formatEvent(said[-1]) == "skipped on a: worse"
    tally.stop()
