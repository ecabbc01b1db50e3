"""A private Twisted name monit uses, checked once a process against the installed Twisted."""

from __future__ import annotations

from typing import Protocol

import twisted
from twisted.logger import Logger

log = Logger()
_found: dict[str, str | None] = {}  # each seam's problem with this Twisted (None: it fits), once checked


class Seam(Protocol):
    """A module of ``monit._twisted``: what it uses, its check, and what monit does without it."""

    @property
    def WHAT(self) -> str: ...  # what monit uses, in words

    @property
    def INSTEAD(self) -> str | None: ...  # what monit does when it does not fit; None: nothing can

    def check(self) -> str | None: ...  # why it does not fit the installed Twisted, or None


class Unfit(RuntimeError):
    """The installed Twisted lacks something monit has no public way around."""


def unfit(problem: str) -> str:
    """A check's problem, naming the Twisted it was found with."""
    return f"Twisted {twisted.__version__}: {problem}"


def fits(seam: Seam) -> bool:
    """Whether the installed Twisted has what ``seam`` uses; a misfit is logged (or raised) once.

    Raises Unfit, every time it is asked, when there is no public way.
    """
    name = getattr(seam, "__name__", seam.WHAT)
    if name not in _found:
        problem = _found[name] = seam.check()
        if problem is not None and seam.INSTEAD is not None:
            log.warn(
                "{what} does not fit {problem}; {instead}",
                what=seam.WHAT,
                problem=unfit(problem),
                instead=seam.INSTEAD,
            )
    problem = _found[name]
    if problem is not None and seam.INSTEAD is None:
        raise Unfit(
            f"{seam.WHAT} does not fit {unfit(problem)}, and monit has no other way: install a Twisted it is tested with"
        )
    return problem is None
