"""The token cache, on a fake clock, in front of a fake verifier answered by hand."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from monit.auth.cache import CachingVerifier
from monit.auth.interface import AuthUnavailable, Identity, InvalidToken, ITokenVerifier
from monit.auth.jwt_verifier import JWTVerifier

from deferreds import result_of
from verifiers import HandVerifier, RaisingVerifier

TOKEN = "token-that-must-never-be-stored-0123456789"
ALICE = Identity(user="alice", claims={"username": "alice"}, expires=None)
pytestmark = pytest.mark.clock_starts_at(1_000)


def has_fired(d: Deferred) -> bool:
    fired: list[object] = []

    def keep(result: object) -> object:
        fired.append(result)
        return result

    d.addBoth(keep)
    return bool(fired)


@pytest.fixture
def inner() -> HandVerifier:
    return HandVerifier()


@pytest.fixture
def cache(inner: HandVerifier, clock: Clock) -> CachingVerifier:
    return CachingVerifier(inner, clock, ttl=30, negative_ttl=5, max_entries=100)


def verified(cache: CachingVerifier, inner: HandVerifier, token: str, answer: Identity | Exception) -> Any:
    """Verify a token that is not cached: answer the one inner call by hand."""
    d = cache.verify(token)
    inner.answer(answer)
    return result_of(d)


def test_provides_the_interface(cache: CachingVerifier) -> None:
    assert verifyObject(ITokenVerifier, cache)


def test_hit(cache: CachingVerifier, inner: HandVerifier) -> None:
    assert verified(cache, inner, TOKEN, ALICE) is ALICE
    assert result_of(cache.verify(TOKEN)) is ALICE
    assert result_of(cache.verify(TOKEN)) is ALICE
    assert len(inner.calls) == 1
    assert (cache.hits, cache.misses) == (2, 1)


def test_tokens_are_kept_apart(cache: CachingVerifier, inner: HandVerifier) -> None:
    bob = Identity(user="bob", claims={}, expires=None)
    verified(cache, inner, "alice-token", ALICE)
    verified(cache, inner, "bob-token", bob)
    assert result_of(cache.verify("alice-token")) is ALICE
    assert result_of(cache.verify("bob-token")) is bob
    assert [token for token, _ in inner.calls] == ["alice-token", "bob-token"]


def test_expires_after_ttl(cache: CachingVerifier, inner: HandVerifier, clock: Clock) -> None:
    verified(cache, inner, TOKEN, ALICE)
    clock.advance(29.9)
    assert result_of(cache.verify(TOKEN)) is ALICE
    clock.advance(0.1)
    again = cache.verify(TOKEN)
    assert len(inner.calls) == 2
    inner.answer(ALICE)
    assert result_of(again) is ALICE
    assert clock.getDelayedCalls() == []


def test_never_outlives_the_identity(cache: CachingVerifier, inner: HandVerifier, clock: Clock) -> None:
    short = Identity(user="alice", claims={}, expires=clock.seconds() + 10)
    verified(cache, inner, TOKEN, short)
    clock.advance(9.9)
    assert result_of(cache.verify(TOKEN)) is short
    clock.advance(0.1)
    cache.verify(TOKEN)
    assert len(inner.calls) == 2


def test_identity_already_expired_is_not_kept(cache: CachingVerifier, inner: HandVerifier, clock: Clock) -> None:
    stale = Identity(user="alice", claims={}, expires=clock.seconds())
    assert verified(cache, inner, TOKEN, stale) is stale
    cache.verify(TOKEN)
    assert len(inner.calls) == 2


def test_identity_already_expired_evicts_nothing(inner: HandVerifier, clock: Clock) -> None:
    cache = CachingVerifier(inner, clock, ttl=30, max_entries=1)
    verified(cache, inner, "live", ALICE)
    verified(cache, inner, TOKEN, Identity(user="alice", claims={}, expires=clock.seconds()))
    assert result_of(cache.verify("live")) is ALICE
    assert len(inner.calls) == 2


def test_long_lived_identity_still_capped_by_ttl(cache: CachingVerifier, inner: HandVerifier, clock: Clock) -> None:
    verified(cache, inner, TOKEN, Identity(user="alice", claims={}, expires=clock.seconds() + 3600))
    clock.advance(30)
    cache.verify(TOKEN)
    assert len(inner.calls) == 2


@pytest.mark.parametrize(
    "expires, kept_for",
    [
        (float("inf"), 30),
        (10**400, 30),
        (1e308, 30),
        (float("nan"), 0),
        (float("-inf"), 0),
        (-(10**400), 0),
        ("soon", 0),
        (True, 0),
    ],
    ids=["inf", "400-digits", "1e308", "nan", "-inf", "-400-digits", "a-string", "a-bool"],
)
def test_odd_expiries_cannot_break_the_cache(
    cache: CachingVerifier, inner: HandVerifier, clock: Clock, expires: Any, kept_for: float, events: Any
) -> None:
    """A verifier with an odd expiry: its answer still reaches every waiter, later checks
    still work, and it is kept at most ttl (never forever, never past a NaN)."""
    odd = Identity(user="alice", claims={}, expires=expires)
    waiting = [cache.verify(TOKEN) for _ in range(3)]
    inner.answer(odd)
    assert all(result_of(d) is odd for d in waiting)
    assert cache._flights == {}
    if kept_for:
        clock.advance(kept_for - 0.1)
        assert result_of(cache.verify(TOKEN)) is odd
        clock.advance(0.1)
    again = cache.verify(TOKEN)
    assert len(inner.calls) == 2
    inner.answer(ALICE)
    assert result_of(again) is ALICE
    assert not [event for event in events if "log_failure" in event]


def test_a_failure_to_remember_still_answers_every_waiter(
    cache: CachingVerifier, inner: HandVerifier, events: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(key: bytes, result: object) -> None:
        raise TypeError("cannot compare")

    monkeypatch.setattr(cache, "_remember", broken)
    waiting = [cache.verify(TOKEN) for _ in range(3)]
    inner.answer(ALICE)
    assert all(result_of(d) is ALICE for d in waiting)
    assert cache._flights == {}
    assert len([event for event in events if "log_failure" in event]) == 1


def test_refusal_kept_for_negative_ttl(cache: CachingVerifier, inner: HandVerifier, clock: Clock) -> None:
    with pytest.raises(InvalidToken, match="token expired"):
        verified(cache, inner, TOKEN, InvalidToken("token expired"))
    clock.advance(4.9)
    with pytest.raises(InvalidToken, match="token expired"):
        result_of(cache.verify(TOKEN))
    assert len(inner.calls) == 1
    clock.advance(0.1)
    assert verified(cache, inner, TOKEN, ALICE) is ALICE
    assert len(inner.calls) == 2


def test_a_refusal_that_may_change_any_moment_is_not_kept(cache: CachingVerifier, inner: HandVerifier) -> None:
    class ForNow(InvalidToken):
        lasting = False

    with pytest.raises(ForNow, match="unknown signing key"):
        verified(cache, inner, TOKEN, ForNow("unknown signing key"))
    assert verified(cache, inner, TOKEN, ALICE) is ALICE, "asked again: the key may be published now"
    assert len(inner.calls) == 2


def test_unavailable_is_not_kept(cache: CachingVerifier, inner: HandVerifier) -> None:
    with pytest.raises(AuthUnavailable):
        verified(cache, inner, TOKEN, AuthUnavailable("down"))
    assert verified(cache, inner, TOKEN, ALICE) is ALICE
    assert len(inner.calls) == 2


def test_unexpected_errors_pass_through_and_are_not_kept(cache: CachingVerifier, inner: HandVerifier) -> None:
    with pytest.raises(ZeroDivisionError):
        verified(cache, inner, TOKEN, ZeroDivisionError())
    cache.verify(TOKEN)
    assert len(inner.calls) == 2


def test_single_flight(cache: CachingVerifier, inner: HandVerifier) -> None:
    waiting = [cache.verify(TOKEN) for _ in range(1000)]
    assert len(inner.calls) == 1
    assert not any(has_fired(d) for d in waiting)
    inner.answer(ALICE)
    assert all(result_of(d) is ALICE for d in waiting)
    assert len({id(d) for d in waiting}) == 1000
    assert (cache.hits, cache.misses) == (0, 1000)
    assert result_of(cache.verify(TOKEN)) is ALICE
    assert len(inner.calls) == 1


@pytest.mark.parametrize("error", [InvalidToken("bad signature"), AuthUnavailable("down")])
def test_single_flight_failure_is_shared(cache: CachingVerifier, inner: HandVerifier, error: Exception) -> None:
    waiting = [cache.verify(TOKEN) for _ in range(1000)]
    inner.answer(error)
    for d in waiting:
        with pytest.raises(type(error)):
            result_of(d)
    assert len(inner.calls) == 1


def test_cancelling_one_waiter_leaves_the_others(cache: CachingVerifier, inner: HandVerifier) -> None:
    first, second, third = (cache.verify(TOKEN) for _ in range(3))
    second.cancel()
    with pytest.raises(CancelledError):
        result_of(second)
    shared = inner.calls[0][1]
    assert not has_fired(shared)
    inner.answer(ALICE)
    assert result_of(first) is ALICE
    assert result_of(third) is ALICE


def test_the_check_outlives_all_its_waiters(cache: CachingVerifier, inner: HandVerifier) -> None:
    cache.verify(TOKEN).addErrback(lambda f: f.trap(CancelledError)).cancel()
    inner.answer(ALICE)
    assert result_of(cache.verify(TOKEN)) is ALICE
    assert len(inner.calls) == 1


def test_a_synchronous_inner_verifier(clock: Clock) -> None:
    @implementer(ITokenVerifier)
    class Sync:
        calls = 0

        def verify(self, token: str) -> Deferred[Identity]:
            Sync.calls += 1
            d: Deferred[Identity] = Deferred()
            d.callback(ALICE)
            return d

    cache = CachingVerifier(Sync(), clock, ttl=30)
    assert result_of(cache.verify(TOKEN)) is ALICE
    assert result_of(cache.verify(TOKEN)) is ALICE
    assert Sync.calls == 1


def test_an_inner_verifier_raising(clock: Clock) -> None:
    with pytest.raises(AuthUnavailable):
        result_of(CachingVerifier(RaisingVerifier(), clock, ttl=30).verify(TOKEN))


def test_in_front_of_the_jwt_verifier(clock: Clock) -> None:
    inner = JWTVerifier.with_secret("a-test-secret-that-is-long-enough-for-hs256", clock)
    cache = CachingVerifier(inner, clock, ttl=30)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            result_of(cache.verify("not-a-jwt"))
    assert (cache.hits, cache.misses) == (1, 1)


def test_bounded_with_lru_eviction(inner: HandVerifier, clock: Clock) -> None:
    cache = CachingVerifier(inner, clock, ttl=30, max_entries=3)
    for token in ["t1", "t2", "t3"]:
        verified(cache, inner, token, ALICE)
    assert result_of(cache.verify("t1")) is ALICE  # t1 is now the most recently used
    verified(cache, inner, "t4", ALICE)  # evicts t2, the least recently used
    assert len(cache._entries) == 3
    for token in ["t1", "t3", "t4"]:
        assert result_of(cache.verify(token)) is ALICE
    assert len(inner.calls) == 4
    cache.verify("t2")
    assert [token for token, _ in inner.calls][-1] == "t2"


def test_expired_entries_are_dropped_on_lookup(cache: CachingVerifier, inner: HandVerifier, clock: Clock) -> None:
    verified(cache, inner, TOKEN, ALICE)
    clock.advance(31)
    assert len(cache._entries) == 1  # nothing happens until someone asks
    cache.verify(TOKEN)
    assert len(cache._entries) == 0


def test_tokens_are_kept_only_as_hashes(cache: CachingVerifier, inner: HandVerifier) -> None:
    refused = "refused-" + TOKEN
    verified(cache, inner, TOKEN, ALICE)
    with pytest.raises(InvalidToken):
        verified(cache, inner, refused, InvalidToken("bad signature"))
    pending = "pending-" + TOKEN
    cache.verify(pending)
    keys = list(cache._entries) + list(cache._flights)
    assert len(keys) == 3
    assert all(isinstance(key, bytes) and len(key) == 32 for key in keys)
    # everything the cache holds but its inner verifier (which the test made keep tokens)
    own = {name: value for name, value in vars(cache).items() if name != "_inner"}
    stored = repr(own) + repr(list(cache._entries.values())) + repr(list(cache._flights.values()))
    for token in [TOKEN, refused, pending]:
        assert token not in stored
        assert token.encode() not in keys
