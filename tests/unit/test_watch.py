"""Jobs in process: watch one job with Deferreds, wait for its end, follow every job."""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.internet.task import Clock

from monit.inbox import Event
from monit.registry import InboxRegistry
from monit.service import registry_options
from monit.settings import Settings
from monit.watch import TooSlow, Watch

from deferreds import result_of


def make(**settings) -> tuple[Clock, InboxRegistry, Settings]:
    clock = Clock()
    chosen = Settings(grace=10, **settings)
    return clock, InboxRegistry(clock, **registry_options(chosen)), chosen


def watch(registry: InboxRegistry, settings: Settings, job: str, after: int = 0) -> Watch:
    return Watch(registry, job, after, settings.max_pending, settings.base64)


def test_history_then_live_events_then_none_at_the_end():
    clock, registry, settings = make()
    registry.open("job", '{"id":"job"}', "service.create")
    registry.publish("job", '{"body":"one"}')
    watcher = watch(registry, settings, "job")
    assert result_of(watcher.next()) == Event(1, "service.create", {"id": "job"})
    assert result_of(watcher.next()) == Event(2, "message", {"body": "one"})
    waiting = watcher.next()
    assert not waiting.called
    registry.close("job", '{"id":"job","status":"done"}', "service.create.done")
    clock.advance(0)
    assert result_of(waiting) == Event(3, "service.create.done", {"id": "job", "status": "done"})
    ended = watcher.next()
    clock.advance(10)  # the grace period: then the inbox ends
    assert result_of(ended) is None and result_of(watcher.next()) is None


def test_after_skips_what_was_seen_and_a_gap_is_an_event():
    clock, registry, settings = make(history=2)
    for n in range(5):
        registry.publish("job", f'{{"n":{n}}}')
    watcher = watch(registry, settings, "job", after=1)
    assert result_of(watcher.next()) == Event(None, "gap", {"from": 2, "to": 3})
    assert [result_of(watcher.next()).data for _ in range(2)] == [{"n": 3}, {"n": 4}]


def test_base64_payloads_are_decoded():
    clock, registry, settings = make(base64=True)
    registry.publish("job", '{"body":"héllo"}')
    assert result_of(watch(registry, settings, "job").next()).data == {"body": "héllo"}


def test_cancelling_a_wait_keeps_the_event_for_the_next_one():
    clock, registry, settings = make()
    watcher = watch(registry, settings, "job")
    abandoned = watcher.next()
    abandoned.cancel()
    with pytest.raises(CancelledError):
        result_of(abandoned)
    registry.publish("job", '{"n":1}')
    clock.advance(0)
    assert result_of(watcher.next()).data == {"n": 1}


def test_cancel_unsubscribes():
    clock, registry, settings = make()
    watcher = watch(registry, settings, "job")
    waiting = watcher.next()
    watcher.cancel()
    assert result_of(waiting) is None
    assert not registry.get("job").subscribers
    registry.publish("job", '{"n":1}')
    clock.advance(0)
    assert result_of(watcher.next()) is None


def test_a_consumer_that_does_not_keep_up_is_dropped_like_a_slow_reader():
    clock, registry, settings = make(max_pending=1000)
    for _ in range(50):  # history is not counted: joining a long job is fine
        registry.publish("job", '{"pad":"' + "x" * 100 + '"}')
    watcher = watch(registry, settings, "job")
    for _ in range(8):
        registry.publish("job", '{"pad":"' + "x" * 100 + '"}')
        clock.advance(0)
    assert registry.get("job").subscribers
    registry.publish("job", '{"pad":"' + "x" * 100 + '"}')
    clock.advance(0)
    assert not registry.get("job").subscribers
    with pytest.raises(TooSlow):
        result_of(watcher.next())


def test_async_for_reads_until_the_end():
    clock, registry, settings = make()
    registry.publish("job", '{"n":1}')
    registry.close("job", '{"id":"job"}', "build.create.done")

    async def collect() -> list[Event]:
        return [event async for event in watch(registry, settings, "job")]

    collected = ensureDeferred(collect())
    clock.advance(10)
    assert [event.type for event in result_of(collected)] == ["message", "build.create.done"]


def test_when_closed_fires_with_the_close_event_now_or_later():
    clock, registry, settings = make()
    later = registry.when_closed("job")
    registry.publish("job", '{"n":1}')
    assert not later.called
    registry.close("job", '{"id":"job","status":"error"}', "service.create.error")
    closing = Event(2, "service.create.error", {"id": "job", "status": "error"})
    assert result_of(later) == closing
    assert result_of(registry.when_closed("job")) == closing


def test_follow_sees_every_job_and_one_failing_follower_does_not_stop_it(events):
    clock, registry, settings = make()
    seen: list[tuple[str, Event]] = []

    def picky(job: str, event: Event) -> None:
        if event.data.get("n") == 1:
            raise ValueError("picky")
        seen.append((job, event))

    stop = registry.follow(picky)
    for job, n in (("a", 1), ("b", 2), ("a", 3)):
        registry.publish(job, f'{{"n":{n}}}')
    stop()
    registry.publish("a", '{"n":4}')
    assert seen == [("b", Event(2, "message", {"n": 2})), ("a", Event(3, "message", {"n": 3}))]
    assert len([e for e in events if "log_failure" in e]) == 1
