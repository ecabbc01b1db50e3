"""contrib/'s deployment files, each checked by the tool that will read it, and their MONIT_* names by monit's own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from monit.settings import options

pytestmark = pytest.mark.integration  # systemd-analyze, nginx, kubernetes-validate
ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"
BIN = Path(sys.executable).parent
# A version kubernetes-validate ships the schemas of.
KUBERNETES = "1.31.0"


def known_variables() -> set[str]:
    return {name for field in options() for name in (field.env, *field.option.legacy_env)}


def test_the_systemd_unit_verifies(tmp_path):
    """systemd-analyze verify wants ExecStart's program to exist: the unit's /opt/monit/bin/twistd
    is replaced, in a copy, by the twistd beside the tests' Python (where txmonit is installed)."""
    unit = (CONTRIB / "systemd" / "monit.service").read_text()
    assert "ExecStart=/opt/monit/bin/twistd -n --pidfile= monit\n" in unit
    assert "EnvironmentFile=/etc/monit/monit.env\n" in unit
    for hardening in ("DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure"):
        assert f"\n{hardening}\n" in unit
    copy = tmp_path / "monit.service"
    copy.write_text(unit.replace("/opt/monit/bin/twistd", str(BIN / "twistd")))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_systemd_environment_names_only_monit_variables():
    text = (CONTRIB / "systemd" / "monit.env").read_text()
    names = re.findall(r"^#?(MONIT_\w+)=", text, re.MULTILINE)
    assert "MONIT_JWT_SECRET" in names and "MONIT_NATS" in names
    assert set(names) <= known_variables(), set(names) - known_variables()


def test_the_nginx_file_passes_nginx_t(tmp_path):
    """nginx -t, unprivileged: a wrapper config whose http {} includes the file, with its pid,
    logs and temporary folders in tmp_path."""
    wrapper = tmp_path / "nginx.conf"
    wrapper.write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log;\n"
        "events {}\n"
        "http {\n"
        f"  access_log {tmp_path}/access.log;\n"
        f"  client_body_temp_path {tmp_path}/body;\n"
        f"  proxy_temp_path {tmp_path}/proxy;\n"
        f"  fastcgi_temp_path {tmp_path}/fastcgi;\n"
        f"  uwsgi_temp_path {tmp_path}/uwsgi;\n"
        f"  scgi_temp_path {tmp_path}/scgi;\n"
        f"  include {CONTRIB / 'nginx' / 'monit.conf'};\n"
        "}\n"
    )
    done = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(wrapper)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr and "test is successful" in done.stderr
    conf = (CONTRIB / "nginx" / "monit.conf").read_text()
    for directive in ("proxy_buffering off;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";'):
        assert directive in conf
    assert re.search(r"proxy_read_timeout 1h;", conf)


def test_the_kubernetes_manifests_validate():
    manifests = sorted(str(path) for path in (CONTRIB / "kubernetes").glob("*.yaml"))
    assert len(manifests) == 4
    done = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", KUBERNETES, *manifests], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == 4, done.stdout


def test_the_kubernetes_deployment_probes_and_takes_its_settings_from_the_configmap_and_secret():
    documents = {path.stem: yaml.safe_load(path.read_text()) for path in (CONTRIB / "kubernetes").glob("*.yaml")}
    pod = documents["deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["envFrom"] == [{"configMapRef": {"name": "monit"}}, {"secretRef": {"name": "monit"}}]
    settings = documents["configmap"]["data"]
    secrets = documents["secret"]["stringData"]
    assert set(secrets) == {"MONIT_JWT_SECRET"} and "MONIT_JWT_SECRET" not in settings
    assert set(settings) <= known_variables(), set(settings) - known_variables()
    assert settings["MONIT_JETSTREAM"] == "true" and documents["deployment"]["spec"]["replicas"] > 1
