"""A built wheel, installed as a user installs it, works: ``make dist`` runs this after twine's check.

The wheel goes into a new virtual environment in a temporary folder (its
dependencies from the package index, through pip's cache), and there, away
from the checkout so nothing is imported from it: ``twistd monit --version``
must name the wheel's version, ``twistd monit --help`` must answer,
``import monit`` must find the installed package, and the files that are not
Python (the web pages, their script, py.typed) must be in it.

    python admin/check_wheel.py dist/txmonit-X.Y.Z-py3-none-any.whl
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

# Each package's files that are not Python, as setup.cfg's package_data lists them.
DATA_FILES = {"monit": ["py.typed"], "monit.web": ["watch.html", "jobs.html", "signin.js"]}
FIND_DATA = """
import json, sys
from importlib.resources import files
wanted = json.loads(sys.argv[1])
print(json.dumps([f"{package}/{name}" for package, names in wanted.items()
                  for name in names if not files(package).joinpath(name).is_file()]))
"""


class WheelError(Exception):
    """The installed wheel is not what users should get; the message says how."""


def run(command: list[str], where: Path) -> str:
    """Run a command of the new environment; its output, or WheelError with all it said."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(command, cwd=where, env=env, capture_output=True, text=True)
    if done.returncode:
        raise WheelError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def install(wheel: Path, folder: Path) -> Path:
    """A new virtual environment holding the wheel and its dependencies; its bin folder."""
    environment = folder / "venv"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)], folder)
    return environment / "bin"


def check_installed(bin_folder: Path, version: str, folder: Path) -> None:
    said = run([str(bin_folder / "twistd"), "monit", "--version"], folder)
    if not said.startswith(f"monit {version} "):
        raise WheelError(f"twistd monit --version says {said.strip()!r}, not monit {version}")
    if "--listen" not in run([str(bin_folder / "twistd"), "monit", "--help"], folder):
        raise WheelError("twistd monit --help does not list --listen")
    python = str(bin_folder / "python")
    where = run([python, "-c", "import monit; print(monit.__file__)"], folder).strip()
    if not where.startswith(str(bin_folder.parent)):
        raise WheelError(f"import monit found {where}, not the installed package")
    missing = json.loads(run([python, "-c", FIND_DATA, json.dumps(DATA_FILES)], folder))
    if missing:
        raise WheelError(f"the wheel does not install {', '.join(missing)}")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].endswith(".whl"):
        print("usage: python admin/check_wheel.py dist/NAME-VERSION-….whl (one wheel)", file=sys.stderr)
        return 2
    wheel = Path(argv[0]).resolve()
    version = wheel.name.split("-")[1]
    with tempfile.TemporaryDirectory(prefix="monit-wheel-") as folder:
        try:
            check_installed(install(wheel, Path(folder)), version, Path(folder))
        except WheelError as error:
            print(f"wheel check: {error}", file=sys.stderr)
            return 1
    print(f"wheel check: {wheel.name} installs into a new environment; twistd monit {version} runs there")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
