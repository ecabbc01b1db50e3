"""admin/check_newsfragments.py on throw-away git repositories: what counts as news, and from where."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "admin" / "check_newsfragments.py"
# The repositories' commits, whoever runs the tests, and no configuration of theirs (hooks, signing).
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


class Repository:
    """A git repository in a folder, with the project's pyproject.toml (its towncrier types)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        self.git("init", "-q", "-b", "main")
        shutil.copy(ROOT / "pyproject.toml", path / "pyproject.toml")

    def git(self, *args: str) -> str:
        env = {**os.environ, **GIT_ENV}
        return subprocess.run(["git", *args], cwd=self.path, env=env, check=True, capture_output=True, text=True).stdout

    def commit(self, subject: str, files: dict[str, str | None] | None = None) -> None:
        """Write each file (or, for None, remove it) and commit everything."""
        for name, text in (files or {}).items():
            path = self.path / name
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", subject)

    def released(self) -> None:
        """A history whose last commit is a release: NEWS.rst written, after code without news."""
        self.commit("code before any release", {"monit/service.py": "1"})
        self.commit("monit 0.1.0", {"NEWS.rst": "monit 0.1.0\n"})

    def merged(self, branch: str, *commits: tuple[str, dict[str, str | None]]) -> None:
        """The commits made on a branch while main gets a docs commit, then the branch merged into main."""
        self.git("switch", "-q", "-c", branch)
        for subject, files in commits:
            self.commit(subject, files)
        self.git("switch", "-q", "main")
        self.commit("docs on main", {"README.md": "more"})
        self.git("merge", "-q", "--no-ff", "-m", f"merge {branch}", branch)

    def check(self) -> subprocess.CompletedProcess[str]:
        return check_in(self.path)


def check_in(folder: Path) -> subprocess.CompletedProcess[str]:
    """The check as make test runs it: from the project's folder."""
    env = {**os.environ, **GIT_ENV}
    return subprocess.run([sys.executable, SCRIPT], cwd=folder, env=env, capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path):
    return Repository(tmp_path / "repo")


def test_a_change_to_monit_without_a_fragment_is_named_and_fails(repo):
    repo.released()
    repo.commit("a change to the code alone", {"monit/service.py": "2"})
    done = repo.check()
    assert done.returncode == 1, done
    assert "a change to the code alone" in done.stderr
    assert "newsfragments/README.rst" in done.stderr
    assert "code before any release" not in done.stderr


def test_a_change_to_monit_with_its_fragment_passes(repo):
    repo.released()
    repo.commit("a fix", {"monit/service.py": "2", "newsfragments/+fix.bugfix": "Fixed.\n"})
    done = repo.check()
    assert done.returncode == 0, done
    assert "1 commit(s) since the last release" in done.stdout


@pytest.mark.parametrize(
    "name",
    ["+fix.feature", "+fix.removal.2", "123.doc", "+tidy.misc"],
)
def test_each_towncrier_type_counts_as_news(repo, name):
    repo.released()
    (repo.path / "newsfragments").mkdir()
    (repo.path / "newsfragments" / name).write_text("News.\n")
    repo.commit("code and news", {"monit/service.py": "2"})
    assert repo.check().returncode == 0


@pytest.mark.parametrize(
    "name",
    ["README.rst", "+fix.txt", "+fix.bugfixes", ".feature", "sub/+fix.feature"],
)
def test_a_file_that_is_not_a_fragment_is_not_news(repo, name):
    repo.released()
    (repo.path / "newsfragments" / name).parent.mkdir(parents=True)
    (repo.path / "newsfragments" / name).write_text("News?\n")
    repo.commit("code and something else", {"monit/service.py": "2"})
    assert repo.check().returncode == 1


def test_a_removed_fragment_is_not_news(repo):
    repo.released()
    repo.commit("news alone", {"newsfragments/a.feature": "A.\n"})
    repo.commit("code, news taken away", {"monit/service.py": "2", "newsfragments/a.feature": None})
    done = repo.check()
    assert done.returncode == 1
    assert "code, news taken away" in done.stderr and "news alone" not in done.stderr


def test_changes_outside_monit_need_no_news(repo):
    repo.released()
    repo.commit("tests and docs", {"tests/test_a.py": "1", "README.md": "more"})
    assert repo.check().returncode == 0


def test_moving_a_file_out_of_monit_is_a_change_to_monit(repo):
    repo.released()
    repo.git("mv", "monit/service.py", "service.py")
    repo.commit("moved out")
    done = repo.check()
    assert done.returncode == 1 and "moved out" in done.stderr


def test_the_release_is_the_newest_change_to_news(repo):
    repo.released()
    repo.commit("code after 0.1.0", {"monit/service.py": "2"})
    repo.commit("monit 0.2.0", {"NEWS.rst": "monit 0.2.0\nmonit 0.1.0\n"})
    done = repo.check()
    assert done.returncode == 0, done
    assert "0 commit(s) since the last release" in done.stdout


def test_a_merge_brings_its_branch_news_from_any_of_its_commits(repo):
    repo.released()
    repo.merged(
        "topic",
        ("code on the branch", {"monit/service.py": "2"}),
        ("its news on the branch", {"newsfragments/topic.feature": "Topic.\n"}),
    )
    done = repo.check()
    assert done.returncode == 0, done
    assert "2 commit(s) since the last release" in done.stdout


def test_a_merge_without_news_is_named(repo):
    repo.released()
    repo.merged("topic", ("code on the branch", {"monit/service.py": "2"}))
    done = repo.check()
    assert done.returncode == 1
    assert "merge topic" in done.stderr


def test_a_merged_release_is_the_release(repo):
    """A release made on a branch: its fragments came and went there, and the merge brings NEWS.rst."""
    repo.commit("code before any release", {"monit/service.py": "1"})
    repo.merged(
        "release",
        ("news", {"newsfragments/a.feature": "A.\n", "monit/service.py": "2"}),
        ("monit 0.1.0", {"NEWS.rst": "monit 0.1.0\n", "newsfragments/a.feature": None}),
    )
    done = repo.check()
    assert done.returncode == 0, done
    assert "0 commit(s) since the last release" in done.stdout


def test_a_history_without_a_release_says_so(repo):
    repo.commit("code", {"monit/service.py": "1"})
    done = repo.check()
    assert done.returncode == 2
    assert "no commit on HEAD's first-parent line changed NEWS.rst" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_shallow_clone_says_so(repo, tmp_path):
    repo.released()
    repo.commit("code", {"monit/service.py": "2", "newsfragments/a.feature": "A.\n"})
    shallow = tmp_path / "shallow"
    repo.git("clone", "-q", "--depth", "1", f"file://{repo.path}", str(shallow))
    done = check_in(shallow)
    assert done.returncode == 2
    assert "shallow clone" in done.stderr and "git fetch --unshallow" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_copy_without_git_says_so(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    done = check_in(tmp_path)
    assert done.returncode == 2
    assert "is not a git clone (no .git)" in done.stderr
    assert "Traceback" not in done.stderr
