"""Every change to monit/ since the last release brings a news fragment.

The last release is the newest commit on HEAD's first-parent line that changed
NEWS.rst (``towncrier build`` writes it, and removes the fragments it used).
Each commit on that line after it whose changes touch monit/ must add or change
a fragment: a file newsfragments/NAME.TYPE, TYPE one of pyproject.toml's
towncrier types. A merge counts as the change it brings to its first parent,
so a branch may carry its fragment in any of its commits.

Run from the project's folder: ``python admin/check_newsfragments.py``. Exit
status 0 when every change has its news, 1 when some has not (each named), 2
when the history cannot be read (no .git, a shallow clone, no release yet).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

NEWS = "NEWS.rst"
SOURCE = "monit/"
FRAGMENTS = "newsfragments/"
HOW_TO = "newsfragments/README.rst"


class CheckError(Exception):
    """The history cannot be checked; the message says why and what to do."""


@dataclass(frozen=True)
class Commit:
    """One commit on the first-parent line, with the changes it brings to that line."""

    sha: str
    subject: str
    changes: tuple[tuple[str, str], ...]  # (git's status letter: A, M, D or T; the path)

    def touches(self, prefix: str) -> bool:
        return any(path.startswith(prefix) for _, path in self.changes)

    def brings_news(self, types: frozenset[str]) -> bool:
        """A fragment added or changed; one removed is a release's doing, not news."""
        return any(status != "D" and is_fragment(path, types) for status, path in self.changes)


def is_fragment(path: str, types: frozenset[str]) -> bool:
    """newsfragments/NAME.TYPE or NAME.TYPE.N, as towncrier reads a fragment's name."""
    if not path.startswith(FRAGMENTS) or "/" in path[len(FRAGMENTS) :]:
        return False
    name, _, kind = path[len(FRAGMENTS) :].rpartition(".")
    if kind.isdigit():
        name, _, kind = name.rpartition(".")
    return bool(name) and kind in types


def fragment_types(root: Path) -> frozenset[str]:
    """The fragment types pyproject.toml gives towncrier: the one list of them."""
    try:
        config = tomllib.loads((root / "pyproject.toml").read_text())
        return frozenset(kind["directory"] for kind in config["tool"]["towncrier"]["type"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
        raise CheckError(f"pyproject.toml gives no [[tool.towncrier.type]] list ({error!r})") from None


def git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-c", "core.quotePath=off", *args], cwd=root, capture_output=True, text=True)
    except FileNotFoundError:
        raise CheckError("git is not installed; the check reads the history since the last release") from None
    if done.returncode:
        raise CheckError(f"git {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def readable_history(root: Path) -> None:
    """Refuse, saying why, a copy whose history since the last release may be missing."""
    if not (root / ".git").exists():
        raise CheckError(f"{root} is not a git clone (no .git): the check reads the history since the last release")
    if git(root, "rev-parse", "--is-shallow-repository").strip() == "true":
        raise CheckError(
            "this is a shallow clone: the history since the last release may be cut short; "
            "clone in full, or run `git fetch --unshallow`"
        )


def first_parent_line(root: Path) -> Iterator[Commit]:
    """HEAD's first-parent line, newest first; a merge with its changes against its first parent."""
    log = git(
        root,
        "log",
        "--first-parent",
        "--diff-merges=first-parent",
        "--no-renames",
        "--name-status",
        "--format=%x00%H%x1f%s",
        "HEAD",
    )
    for entry in log.split("\0")[1:]:
        head, _, body = entry.partition("\n")
        sha, _, subject = head.partition("\x1f")
        changes = tuple(
            (status[0], path) for status, _, path in (line.partition("\t") for line in body.splitlines() if line)
        )
        yield Commit(sha, subject, changes)


def since_last_release(history: Iterator[Commit]) -> list[Commit]:
    """The commits after the newest one that changed NEWS.rst."""
    unreleased: list[Commit] = []
    for commit in history:
        if any(path == NEWS for _, path in commit.changes):
            return unreleased
        unreleased.append(commit)
    raise CheckError(f"no commit on HEAD's first-parent line changed {NEWS}: there is no release to count from")


def without_news(root: Path) -> tuple[list[Commit], list[Commit]]:
    """The commits since the last release, and those of them that change monit/ with no fragment."""
    readable_history(root)
    types = fragment_types(root)
    unreleased = since_last_release(first_parent_line(root))
    return unreleased, [c for c in unreleased if c.touches(SOURCE) and not c.brings_news(types)]


def main(argv: Sequence[str] = ()) -> int:
    root = Path(argv[0]) if argv else Path.cwd()
    try:
        checked, missing = without_news(root)
    except CheckError as error:
        print(f"news check: {error}", file=sys.stderr)
        return 2
    if missing:
        print(
            f"news check: these commits change {SOURCE} without a news fragment ({HOW_TO} says how):", file=sys.stderr
        )
        for commit in missing:
            print(f"  {commit.sha[:12]} {commit.subject}", file=sys.stderr)
        return 1
    print(f"news check: {len(checked)} commit(s) since the last release; each change to {SOURCE} brings its news")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
