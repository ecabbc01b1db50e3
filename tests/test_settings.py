"""Settings: the one table of options, read from the command line, else the environment."""
from pathlib import Path

import attrs
import pytest

from monit import settings as table
from monit.settings import Settings
from monit.tap import Options

README = Path(__file__).resolve().parent.parent / "README.md"


def parse(*args: str) -> Settings:
    options = Options()
    options.parseOptions(list(args))
    return options.settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for option in table.options():
        for name in (option.env, *option.option.legacy_env):
            monkeypatch.delenv(name, raising=False)


def test_the_readme_table_is_made_from_settings():
    readme = README.read_text()
    start = readme.index("<!-- options")
    body = readme[readme.index("\n", start) + 1 : readme.index("<!-- /options -->")]
    assert body == table.readme_table(), "run: python -m monit.settings --update README.md"


def test_every_option_has_help_a_variable_and_a_field_default():
    names = set()
    for option in table.options():
        assert option.option.help and option.env == "MONIT_" + option.name.upper().replace("-", "_")
        assert option.default == attrs.fields_dict(Settings)[option.field].default
        names.add(option.name)
    assert {"nats", "listen", "jwt-secret", "grace", "cors-origin", "no-metrics"} <= names


def test_defaults_come_from_settings():
    assert parse() == Settings()


@pytest.mark.parametrize(
    "variable, value, field, expected",
    [
        ("MONIT_GRACE", "5", "grace", 5.0),
        ("MONIT_HISTORY", "20", "history", 20),
        ("MONIT_RETRY", "100", "retry_ms", 100),
        ("MONIT_CORS_ORIGIN", "https://a.example, https://b.example", "cors_origins",
         frozenset({"https://a.example", "https://b.example"})),
        ("MONIT_NATS", "nats://a:1,nats://b:2", "nats", ("nats://a:1", "nats://b:2")),
        ("NATS_URI", "nats://legacy:4222", "nats", ("nats://legacy:4222",)),
        ("JWT_SECRET", "legacy-secret", "jwt_secret", "legacy-secret"),
        ("MONIT_BASE64", "true", "base64", True),
        ("MONIT_BASE64", "0", "base64", False),
        ("MONIT_NO_METRICS", "yes", "metrics", False),
        ("MONIT_OPEN_SUBJECTS", "job.start", "open_subjects", ("job.start",)),
    ],
)
def test_every_option_can_come_from_the_environment(monkeypatch, variable, value, field, expected):
    monkeypatch.setenv(variable, value)
    assert getattr(parse(), field) == expected


def test_the_command_line_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("MONIT_GRACE", "5")
    monkeypatch.setenv("MONIT_CORS_ORIGIN", "https://env.example")
    monkeypatch.setenv("MONIT_JWT_SECRET", "monit-variable")
    monkeypatch.setenv("JWT_SECRET", "legacy-variable")
    settings = parse("--grace", "7", "--cors-origin", "https://flag.example")
    assert settings.grace == 7.0 and settings.cors_origins == frozenset({"https://flag.example"})
    assert settings.jwt_secret == "monit-variable"  # MONIT_… before the legacy name


@pytest.mark.parametrize(
    "variable, value, named",
    [
        ("MONIT_GRACE", "soon", "MONIT_GRACE must be a number, not 'soon'"),
        ("MONIT_MAX_STREAMS", "0", "MONIT_MAX_STREAMS must be greater than 0"),
        ("MONIT_BASE64", "maybe", "MONIT_BASE64 must be true or false"),
        ("MONIT_AUTH_URL", "ftp://x", "MONIT_AUTH_URL 'ftp://x' must be an http"),
    ],
)
def test_a_bad_variable_is_named_in_the_error(monkeypatch, variable, value, named):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit, match=named):
        parse()


def test_settings_made_in_python_are_checked_too():
    with pytest.raises(ValueError):
        Settings(grace=0)
    assert Settings(nats=["nats://x:1"]).nats == ("nats://x:1",)
    assert "secret" not in repr(Settings(jwt_secret="secret"))
