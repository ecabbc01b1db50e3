"""The round trip of /readyz?deep=1 (monit.probe), with a NATS stand-in and a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from monit.probe import RoundTrip

from fakenats import LoopbackNATS


def started(nats: LoopbackNATS, clock: Clock) -> RoundTrip:
    probe = RoundTrip(nats, clock)  # type: ignore[arg-type]  # the stand-in has what RoundTrip uses
    probe.startService()
    return probe


def outcomes(probe: RoundTrip, n: int) -> list[list[bool]]:
    seen: list[list[bool]] = []
    for _ in range(n):
        box: list[bool] = []
        probe.check().addCallback(box.append)
        seen.append(box)
    return seen


def test_a_probe_heard_back_is_true_and_checks_while_it_is_out_share_it() -> None:
    nats, clock = LoopbackNATS(), Clock()
    probe = started(nats, clock)
    seen = outcomes(probe, 3)
    assert len(nats.published) == 1 and nats.published[0][0] == probe.subject, "one probe for three checks"
    nats.deliver_all()
    assert seen == [[True]] * 3
    assert clock.getDelayedCalls() == [], "its timer is cancelled"


def test_a_probe_not_heard_within_a_second_is_false() -> None:
    nats, clock = LoopbackNATS(), Clock()
    nats.echo = False
    probe = started(nats, clock)
    [seen] = outcomes(probe, 1)
    clock.advance(0.99)
    assert seen == []
    clock.advance(0.01)
    assert seen == [False]


def test_an_earlier_probe_heard_late_does_not_answer_a_later_one() -> None:
    nats, clock = LoopbackNATS(), Clock()
    nats.echo = False
    probe = started(nats, clock)
    outcomes(probe, 1)
    clock.advance(1.0)
    late = list(nats.published)
    nats.echo = True
    [seen] = outcomes(probe, 1)
    nats.published = late  # only the first probe comes back
    nats.deliver_all()
    assert seen == []


def test_not_connected_is_false_at_once_and_stopping_answers_what_waits() -> None:
    nats, clock = LoopbackNATS(), Clock()
    probe = started(nats, clock)
    nats.connected = False
    assert outcomes(probe, 1) == [[False]]
    nats.connected, nats.echo = True, False
    [seen] = outcomes(probe, 1)
    probe.stopService()
    assert seen == [False] and clock.getDelayedCalls() == [] and nats.callbacks == {}
