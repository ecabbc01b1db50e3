"""The unit tests on each Python monit supports, at the oldest and at the newest versions it accepts.

``make matrix`` runs every session. The oldest versions are read from setup.cfg's floors at each
run, so what setup.cfg promises is what is tested.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import nox
from packaging.requirements import Requirement

ROOT = Path(__file__).parent
PYTHONS = ["3.11", "3.12", "3.13"]
# The extras a user may install next to the runtime dependencies: their floors are promises too.
RUNTIME_EXTRAS = ["http2"]
REPORTED = ["Twisted", "klein", "treq", "PyJWT", "attrs", "Automat", "prometheus-client", "h2"]

nox.options.error_on_missing_interpreters = True


def declared_requirements() -> list[Requirement]:
    """setup.cfg's runtime requirements and those of the runtime extras."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lines = setup["options"]["install_requires"].splitlines()
    for extra in RUNTIME_EXTRAS:
        lines += setup["options.extras_require"][extra].splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.strip().startswith("#")]


def floor(requirement: Requirement) -> str:
    """``name==X`` for ``name>=X``; a requirement without a floor promises nothing that can be tested."""
    floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    if len(floors) != 1:
        raise ValueError(f"setup.cfg: {requirement} needs one floor (>=) for the oldest versions to be tested")
    return f"{requirement.name}=={floors[0]}"


def write_floors(session: nox.Session) -> Path:
    """A pip constraints file pinning every declared requirement to its floor."""
    constraints = Path(session.create_tmp()) / "floors.txt"
    constraints.write_text("".join(floor(requirement) + "\n" for requirement in declared_requirements()))
    return constraints


def report_versions(session: nox.Session) -> None:
    """Print the versions under test, so a run's log says what it proved."""
    code = (
        "import importlib.metadata as m, platform, sys; "
        "print('Python', platform.python_version() + ':', "
        "', '.join(name + ' ' + m.version(name) for name in sys.argv[1:]))"
    )
    session.run("python", "-c", code, *REPORTED)


@nox.session(python=PYTHONS)
@nox.parametrize("versions", ["oldest", "newest"], ids=["oldest", "newest"])
def unit(session: nox.Session, versions: str) -> None:
    """pytest -m "not integration" against the floors of setup.cfg, or against the newest releases."""
    constraints = ["--constraint", str(write_floors(session))] if versions == "oldest" else []
    session.install(*constraints, f".[test,{','.join(RUNTIME_EXTRAS)}]")
    report_versions(session)
    session.run("python", "-m", "pytest", "-q", "-m", "not integration", *session.posargs)
