"""OneShotObserver: a fresh Deferred per caller, one outcome for all, cancels that only stop waiting."""

import pytest
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

from monit.oneshot import OneShotObserver

from deferreds import result_of


def test_every_waiter_gets_the_outcome_and_later_callers_get_it_at_once():
    observer: OneShotObserver[str] = OneShotObserver()
    first, second = observer.when_fired(), observer.when_fired()
    assert first is not second and not first.called
    first.addCallback(str.upper)  # one caller's callbacks do not change what the others see
    observer.fire("done")
    assert result_of(first) == "DONE" and result_of(second) == "done"
    assert result_of(observer.when_fired()) == "done" and observer.fired


def test_a_failure_reaches_every_waiter():
    observer: OneShotObserver[str] = OneShotObserver()
    waiters = [observer.when_fired() for _ in range(2)]
    observer.fire(Failure(ValueError("no")))
    for waiter in [*waiters, observer.when_fired()]:
        with pytest.raises(ValueError):
            result_of(waiter)


def test_only_the_first_outcome_counts():
    observer: OneShotObserver[int] = OneShotObserver()
    observer.fire(1)
    observer.fire(2)
    assert result_of(observer.when_fired()) == 1


def test_cancelling_a_waiter_only_stops_that_one():
    observer: OneShotObserver[int] = OneShotObserver()
    cancelled, kept = observer.when_fired(), observer.when_fired()
    cancelled.cancel()
    with pytest.raises(CancelledError):
        result_of(cancelled)
    observer.fire(7)
    assert result_of(kept) == 7
