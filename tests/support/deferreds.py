"""Reading Deferreds that have already fired, for deterministic unit tests."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


def result_of(d: Deferred) -> Any:
    """The result a Deferred has already fired with; raise its failure if it failed."""
    results: list = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def answered(asked: Deferred[Any]) -> list[Any]:
    """What the request has been answered with so far (nothing while it is held)."""
    seen: list[Any] = []

    def keep(result: object) -> object:
        seen.append(result)
        return result

    asked.addBoth(keep)
    return seen
