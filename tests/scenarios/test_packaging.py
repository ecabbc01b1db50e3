"""Packaging: an editable install, as a developer makes one, keeps ``twistd monit``."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TWISTD_HELP = "import sys; sys.argv = ['twistd', '--help']; from twisted.scripts.twistd import run; run()"


@pytest.mark.integration
def test_an_editable_install_lists_monit_in_twistd_help(tmp_path):
    """``pip install -e .`` from a copy of the project, into a new virtual environment.

    The dependencies (pip and setuptools too) come from this environment, by a
    .pth file, so nothing is downloaded; what is tested is where the editable
    install puts the plugin.
    """
    project = tmp_path / "project"
    project.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    for folder in ("monit", "twisted"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", "*.cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-e",
            str(project),
        ],
        check=True,
        cwd=tmp_path,
    )
    listing = subprocess.run([python, "-c", TWISTD_HELP], capture_output=True, text=True, cwd=tmp_path)
    assert "Gather NATS job progress" in listing.stdout, listing.stdout + listing.stderr
    found = subprocess.run(
        [python, "-c", "import monit; print(monit.__file__)"], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout
    assert found.startswith(str(project)), found
