"""``twistd monit``: the command line, its checks, and the service it builds."""

import pytest

from monit.settings import LIFECYCLE_SUBJECTS
from monit.tap import Options, makeService


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults(monkeypatch):
    monkeypatch.delenv("NATS_URI", raising=False)
    monkeypatch.delenv("JWT_SECRET", raising=False)
    settings = parse().settings
    assert settings.nats == ("nats://127.0.0.1:4222",)
    assert settings.listen is None and settings.jwt_secret is None
    assert (settings.grace, settings.heartbeat, settings.history) == (10.0, 15.0, 1000)
    assert tuple(settings.open_subjects) == LIFECYCLE_SUBJECTS
    assert tuple(settings.deliver_subjects) == ("monitor.user",)


def test_numbers():
    settings = parse("--grace", "0.5", "--heartbeat", "2", "--history", "50", "--retry", "100").settings
    assert (settings.grace, settings.heartbeat, settings.history, settings.retry_ms) == (0.5, 2.0, 50, 100)


@pytest.mark.parametrize(
    "args",
    [
        ["--grace", "soon"],
        ["--heartbeat", "0"],
        ["--history", "-1"],
        ["--history", "1.5"],
        ["--listen", "nonsense:1"],
        ["--nats", " , "],
        ["--open-subjects", "service.*"],
        ["--deliver-subjects", "a b"],
    ],
)
def test_bad_options_are_usage_errors(args):
    with pytest.raises(SystemExit, match="^monit: "):
        parse(*args)


def test_subjects():
    settings = parse("--open-subjects", "job.start, job.retry", "--deliver-subjects", "job.log").settings
    assert settings.open_subjects == ("job.start", "job.retry")
    assert settings.deliver_subjects == ("job.log",)


def test_make_service_with_embedded_nats_points_the_client_at_it():
    options = parse("--embedded-nats", "--jwt-secret", "s", "--listen", "tcp:0")
    monit = makeService(options)
    _pace, embedded, nats, *_ = list(monit)
    assert embedded.url.startswith("nats://127.0.0.1:")
    assert nats._endpoint.current.port == embedded.port
