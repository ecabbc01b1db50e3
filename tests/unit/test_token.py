"""monit-token mints tokens that JWTVerifier accepts."""

from typing import Any

import jwt
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from monit.auth.interface import InvalidToken
from monit.auth.jwt_verifier import JWTVerifier
from monit.token import main, mint

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def verified(token: str, secret: str = SECRET, now: float | None = None) -> Any:
    """The identity JWTVerifier gives the token at the given time (default: just after minting)."""
    clock = Clock()
    clock.advance(now if now is not None else jwt.decode(token, options={"verify_signature": False})["iat"])
    results: list = []
    d: Deferred = JWTVerifier.with_secret(secret, clock).verify(token)
    d.addBoth(results.append)
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def no_env_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)


def test_main_prints_an_accepted_token(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--user", "alice", "--secret", SECRET)
    assert (code, err) == (0, "")
    assert out.endswith("\n") and out.count("\n") == 1
    identity = verified(out.strip())
    assert identity.user == "alice"
    assert identity.claims["sub"] == "alice"
    assert identity.expires == identity.claims["iat"] + 3600
    assert "streams" not in identity.claims


def test_streams_and_lifetime(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "--user", "bob", "--secret", SECRET, "--lifetime", "60", "--stream", "s1", "--stream", "s2"
    )
    assert code == 0
    identity = verified(out.strip())
    assert identity.claims["streams"] == ["s1", "s2"]
    assert identity.expires == identity.claims["iat"] + 60


def test_env_secret(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    code, out, _ = run(capsys, "--user", "carol")
    assert code == 0
    assert verified(out.strip()).user == "carol"


def test_flag_wins_over_env(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "the-environment-secret-which-is-long-enough")
    _, out, _ = run(capsys, "--user", "dave", "--secret", SECRET)
    assert verified(out.strip()).user == "dave"


@pytest.mark.parametrize("env", [None, ""])
def test_missing_secret_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: str | None
) -> None:
    if env is not None:
        monkeypatch.setenv("JWT_SECRET", env)
    code, out, err = run(capsys, "--user", "erin")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "JWT_SECRET" in err and "--secret" in err


@pytest.mark.parametrize("argv", [[], ["--user", "x", "--lifetime", "0"], ["--user", "x", "--lifetime", "soon"]])
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--secret", SECRET])
    assert info.value.code == 2
    assert capsys.readouterr().out == ""


def test_mint_claims_and_expiry() -> None:
    token = mint(SECRET, "frank", 120, streams=("a",), now=1_700_000_000.7)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"sub": "frank", "username": "frank", "iat": 1_700_000_000, "exp": 1_700_000_120, "streams": ["a"]}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert verified(token, now=1_700_000_119).user == "frank"
    with pytest.raises(InvalidToken):
        verified(token, now=1_700_000_120)
    with pytest.raises(InvalidToken):
        verified(token, secret="some-other-secret-that-is-long-enough")


def test_mint_accepts_short_secrets_quietly(recwarn: pytest.WarningsRecorder) -> None:
    assert verified(mint("dev", "gina", 60), secret="dev").user == "gina"
    assert len(recwarn) == 0
