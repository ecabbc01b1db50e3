"""The documentation as a reader uses it: its examples run or parse, its options exist, its links lead somewhere.

Every fenced example of README.md and docs/ is checked by its language: Python
compiles (and the in-process example runs against a real nats-server), shell
lines use only options ``twistd monit --help`` offers, JSON parses, SSE frames
are well formed, JavaScript passes ``node --check``; the site builds and its
options page names every option.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred

from monit import settings

from processes import script
from streams import job_message, start_monit
from waiting import within

pytestmark = pytest.mark.integration  # twistd, node and sphinx-build as child processes
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
OPTION = re.compile(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]+)", re.MULTILINE)


@attrs.frozen
class Example:
    """One fenced block of a page: its language and its text."""

    page: Path
    language: str
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}: {self.text[:60]!r}"


def examples(*languages: str) -> Iterator[Example]:
    for page in PAGES:
        for language, text in FENCE.findall(page.read_text()):
            if language.strip() in languages:
                yield Example(page, language.strip(), text)


def offered(*command: str) -> set[str]:
    """The long options a command's --help lists."""
    help_text = subprocess.run([script(command[0]), *command[1:], "--help"], capture_output=True, text=True).stdout
    return set(OPTION.findall(help_text)) - {"--help", "--version"}


def shell_commands(example: Example) -> Iterator[list[str]]:
    """Each command line of a shell example, continuations joined, as words (comments dropped)."""
    for line in example.text.replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            yield shlex.split(line, comments=True)


def options_used(words: list[str], program: str) -> Iterator[tuple[str, str]]:
    """(``twistd`` or ``monit``, option) for each option a twistd command line gives, and those in FLAGS=."""
    for word in words:
        if word.startswith("FLAGS="):
            yield from (("monit", flag.split("=")[0]) for flag in word[len("FLAGS=") :].split())
    if program not in words:
        return
    rest = words[words.index(program) + 1 :]
    target = "twistd"
    for word in rest:
        if word == "monit":
            target = "monit"
        elif word.startswith("--"):
            yield target, word.split("=")[0]


def test_every_shell_example_uses_only_options_that_exist():
    known = {"twistd": offered("twistd"), "monit": offered("twistd", "monit")}
    assert {"--nats", "--listen", "--jwt-secret"} <= known["monit"] and "--logger" in known["twistd"]
    used = [
        (example, program, option)
        for example in examples("sh")
        for words in shell_commands(example)
        for program, option in options_used(words, "twistd")
    ]
    assert len({option for _, _, option in used}) >= 10, "the examples were found"
    unknown = [f"{example}: {program} {option}" for example, program, option in used if option not in known[program]]
    assert not unknown, unknown


def test_every_python_example_compiles():
    found = list(examples("python"))
    assert len(found) >= 2
    for example in found:
        compile(example.text, str(example), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_every_json_example_parses():
    found = [example for example in examples("json") if "…" not in example.text]
    assert found, "the examples were found"
    for example in found:
        json.loads(example.text)


def sse_frames(example: Example) -> list[str]:
    """The lines of an example that is an SSE stream (it starts with a field or a comment), else none."""
    lines = example.text.splitlines()
    return lines if lines and re.match(r"(id|event|retry): |: ", lines[0]) else []


def test_every_sse_example_is_well_formed():
    streams = [(example, sse_frames(example)) for example in examples("text", "") if sse_frames(example)]
    assert len(streams) >= 5
    for example, lines in streams:
        assert lines[-1] == "", f"{example}: a frame ends with a blank line"
        for line in lines:
            field, _, value = line.partition(": ")
            assert line == "" or line.startswith(": ") or field in ("id", "event", "data", "retry"), (example, line)
            if field in ("id", "retry"):
                assert value.isdigit(), (example, line)
            if field == "data" and "…" not in value:
                json.loads(value)


def test_every_javascript_example_passes_node_check(tmp_path):
    found = list(examples("js"))
    assert len(found) >= 3
    for number, example in enumerate(found):
        source = tmp_path / f"example{number}.js"
        source.write_text(example.text)
        checked = subprocess.run(["node", "--check", str(source)], capture_output=True, text=True)
        assert checked.returncode == 0, f"{example}: {checked.stderr}"


def test_every_relative_link_of_the_readme_leads_to_a_file():
    links = re.findall(r"\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    relative = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert len(relative) >= 10
    missing = [link for link in relative if not (ROOT / link.split("#")[0]).is_file()]
    assert not missing, missing


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation built as ``make docs`` builds it, warnings as errors."""
    out = tmp_path_factory.mktemp("html")
    built = subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-n", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    return out


def test_the_options_page_names_every_option_with_its_variable(site):
    page = (site / "reference" / "options.html").read_text()
    for option in settings.options():
        assert f"--{option.name}" in page and option.env in page, option.name


def in_process_example() -> dict:
    """The names the embedding guide's in-process example defines."""
    (example,) = [example for example in examples("python") if "async def print_job" in example.text]
    names: dict = {}
    exec(compile(example.text, str(example), "exec"), names)
    return names


@pytest_twisted.ensureDeferred
async def test_the_in_process_example_prints_a_job_and_counts_events(nats_server, publisher, capsys):
    example = in_process_example()
    monit = await start_monit(nats_server.url)
    counts: dict[str, int] = {}
    try:
        stop = example["count_events"](monit, counts)
        printed = ensureDeferred(example["print_job"](monit, "doc1"))
        publisher.publish("service.create", {"id": "doc1"})
        publisher.publish("monitor.user", job_message("doc1", "one"))
        publisher.publish("service.create.done", {"id": "doc1", "status": "done"})
        await within(printed)
        stop()
    finally:
        await monit.stopService()
    assert capsys.readouterr().out.splitlines() == [
        "first: service.create {'id': 'doc1'}",
        "then: message {'body': 'one', 'level': 'INFO'}",
        "then: service.create.done {'id': 'doc1', 'status': 'done'}",
        "ended: service.create.done",
    ]
    assert counts == {"doc1": 3}
