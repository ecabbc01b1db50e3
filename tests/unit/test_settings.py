"""Settings: the one table of options, read from the command line, else the environment."""

import attrs
import pytest

from monit import settings as table
from monit.redact import redacted_url
from monit.settings import Settings
from monit.tap import Options


def parse(*args: str) -> Settings:
    options = Options()
    options.parseOptions(list(args))
    return options.settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for option in table.options():
        for name in (option.env, *option.option.legacy_env):
            monkeypatch.delenv(name, raising=False)


def test_the_table_of_options_has_a_row_per_option_with_its_variable():
    rows = table.options_table().splitlines()[2:]
    assert len(rows) == len(list(table.options()))
    for row, option in zip(rows, table.options(), strict=True):
        assert row.startswith(f"| `--{option.name}") and f"`{option.env}`" in row


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
        (
            "MONIT_CORS_ORIGIN",
            "https://a.example, https://b.example",
            "cors_origins",
            frozenset({"https://a.example", "https://b.example"}),
        ),
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


@pytest.mark.parametrize(
    "url, shown",
    [
        ("http://auth.example/check", "http://auth.example/check"),
        ("http://admin:pw@auth.example:8000/check", "http://admin:***@auth.example:8000/check"),
        ("http://sekrit-token@auth.example/", "http://***@auth.example/"),
        ("https://auth.example/check?apikey=sekrit&x=1", "https://auth.example/check?apikey=***&x=***"),
        ("https://auth.example/check?sekrit", "https://auth.example/check?***"),
        ("https://auth.example/check?a=1&&b=", "https://auth.example/check?a=***&&b=***"),
        ("https://auth.example/check#sekrit", "https://auth.example/check#***"),
        ("http://[::1/check?apikey=sekrit", "<a URL that does not parse>"),
    ],
)
def test_redacted_url(url, shown):
    assert redacted_url(url) == shown


CREDENTIALED = [
    "http://admin:pw-sekrit@auth.example/check",
    "https://pw-sekrit@auth.example/",
    "http://admin:pw-sekrit@auth.example:8000/check?apikey=key-sekrit",
]


@pytest.mark.parametrize("url", CREDENTIALED)
def test_an_auth_url_with_credentials_is_refused_in_one_line_without_them(monkeypatch, url):
    with pytest.raises(SystemExit) as flag:
        parse("--auth-url", url)
    monkeypatch.setenv("MONIT_AUTH_URL", url)
    with pytest.raises(SystemExit) as variable:
        parse()
    with pytest.raises(ValueError) as python:
        Settings(auth_url=url)
    for error, where in [(flag, "--auth-url"), (variable, "MONIT_AUTH_URL"), (python, "")]:
        message = str(error.value).removeprefix("monit: ")
        assert message.startswith(where) and "must not carry a user or password" in message
        assert "\n" not in message and "sekrit" not in message


def test_the_auth_urls_secrets_are_not_in_the_settings_repr():
    settings = Settings(auth_url="https://auth.example/check?apikey=key-sekrit")
    assert "key-sekrit" not in repr(settings)
    assert "https://auth.example/check?apikey=***" in repr(settings)
    assert "auth_url=None" in repr(Settings())
    with pytest.raises(SystemExit, match=r"'ftp://\*\*\*@x' must be an http") as error:
        parse("--auth-url", "ftp://key-sekrit@x")
    assert "key-sekrit" not in str(error.value)


def test_new_auth_options():
    assert (Settings().auth_concurrency, Settings().auth_recheck, Settings().require_exp) == (100, 300.0, False)
    assert parse("--auth-recheck", "0").auth_recheck == 0
    settings = parse("--auth-concurrency", "7", "--auth-recheck", "2.5", "--require-exp")
    assert (settings.auth_concurrency, settings.auth_recheck, settings.require_exp) == (7, 2.5, True)
    with pytest.raises(SystemExit, match="--auth-concurrency must be greater than 0"):
        parse("--auth-concurrency", "0")
    with pytest.raises(SystemExit, match="--auth-recheck must be at least 0"):
        parse("--auth-recheck", "-1")
    with pytest.raises(ValueError):
        Settings(auth_recheck=-1)


def test_jwt_options_with_only_redis_are_refused():
    with pytest.raises(ValueError, match="with only --auth-redis no JWT is checked here"):
        Settings(auth_redis="redis://127.0.0.1:6379/0", jwt_audience="monit")
