"""``twistd monit`` options: defaults, environment, validation."""
import pytest
from twisted.python.usage import UsageError

from monit.routing import LIFECYCLE_SUBJECTS
from monit.tap import Options, makeService, settings_from


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults(monkeypatch):
    monkeypatch.delenv("NATS_URI", raising=False)
    monkeypatch.delenv("JWT_SECRET", raising=False)
    options = parse()
    settings = settings_from(options, options["nats"])
    assert settings.nats == ("nats://127.0.0.1:4222",)
    assert settings.listen is None and settings.jwt_secret is None
    assert (settings.grace, settings.heartbeat, settings.history) == (10.0, 15.0, 1000)
    assert tuple(settings.open_subjects) == LIFECYCLE_SUBJECTS
    assert tuple(settings.deliver_subjects) == ("monitor.user",)


def test_environment(monkeypatch):
    monkeypatch.setenv("NATS_URI", "nats://a:1, nats://b:2")
    monkeypatch.setenv("JWT_SECRET", "from-env")
    options = parse()
    assert options["nats"] == ["nats://a:1", "nats://b:2"]
    assert options["jwt-secret"] == "from-env"


def test_flags_win_over_environment(monkeypatch):
    monkeypatch.setenv("NATS_URI", "nats://env:1")
    monkeypatch.setenv("JWT_SECRET", "from-env")
    options = parse("--nats", "nats://flag:2", "--jwt-secret", "flag")
    assert options["nats"] == ["nats://flag:2"] and options["jwt-secret"] == "flag"


def test_numbers():
    options = parse("--grace", "0.5", "--heartbeat", "2", "--history", "50", "--retry", "100")
    settings = settings_from(options, options["nats"])
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
    with pytest.raises(UsageError):
        parse(*args)


def test_subjects():
    options = parse("--open-subjects", "job.start, job.retry", "--deliver-subjects", "job.log")
    assert options["open-subjects"] == ("job.start", "job.retry")
    assert options["deliver-subjects"] == ("job.log",)


def test_make_service_with_embedded_nats_points_the_client_at_it():
    options = parse("--embedded-nats", "--jwt-secret", "s", "--listen", "tcp:0")
    top = makeService(options)
    embedded, monit = list(top)
    assert embedded.url.startswith("nats://127.0.0.1:")
    assert monit.settings.nats == (embedded.url,)
