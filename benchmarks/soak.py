"""The soak test: ``python benchmarks/soak.py [--minutes 10] [--smoke]``.

A control job's stream is measured, first alone (baseline), then for
``--minutes`` while an attack mix runs against monit: poison and oversized
NATS messages, slowloris connections, churning readers and a flood of
distinct job ids, with 1,000 other readers connected all along. Reports the
control stream's delivered ratio and latency, monit's RSS over time and the
counts monit's /metrics gives. benchmarks/README.md explains the numbers.

It reuses run.py's process handling: nats-server, monit (twistd, pinned) and
the Node generator (loadgen/main.js, scenario ``soak``, which forks
loadgen/attack.js for the attack). Results go to benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (benchmarks/ is not a package)

# The limits that make the attacks bite within minutes (README, "Soak test");
# --smoke's flood is smaller, and so are its limits, so that it meets them too.
MONIT_LIMITS = {
    "full": [
        "--max-payload",
        "65536",  # the ~100 KB messages are oversized
        "--max-inboxes",
        "20000",  # the flood reaches it in seconds: eviction, not growth
        "--max-inboxes-per-user",
        "200",  # churn on fresh ids meets it
        "--history",
        "20",  # the background jobs' histories fill in the first minutes: then RSS shows what else grows
    ],
    "smoke": ["--max-payload", "65536", "--max-inboxes", "1000", "--max-inboxes-per-user", "20"],
}
GOAL_P99_RATIO = 2.0
RSS_FLAT_MB_PER_MIN = 0.1  # over the second half of the attack; only meaningful for minutes-long runs

# Sizes and rates; every one is also a flag (--flood-rate 5000). Rates are per second.
PARAMS: dict[str, dict] = {
    "full": dict(
        control_readers=5,
        rate=20,  # the control job: its readers, its events/s
        readers=1000,
        bg_jobs=100,
        bg_rate=20,  # the other readers, over bg_jobs jobs sharing bg_rate events/s
        baseline_s=60,
        attack_s=600,
        lead_s=3,
        drain_s=5,
        cooldown_s=15,
        rss_every_s=5,
        window_s=60,  # RSS sampling; control p99 per window of the attack
        poison_rate=5,  # of each of the 7 poison kinds
        oversized_rate=1,
        oversized_kb=100,
        flood_rate=3000,  # service.create with a fresh job id
        slowloris=300,
        slowloris_interval_s=1.5,  # connections; seconds between their bytes
        churn_rate=50,
        churn_hold_ms=500,
        churn_fresh=0.5,  # readers/s; mean stay; share on fresh ids
    ),
    "smoke": dict(
        control_readers=2,
        rate=20,
        readers=50,
        bg_jobs=5,
        bg_rate=10,
        baseline_s=3,
        attack_s=6,
        lead_s=0.5,
        drain_s=2,
        cooldown_s=1,
        rss_every_s=1,
        window_s=2,
        poison_rate=2,
        oversized_rate=1,
        oversized_kb=100,
        flood_rate=500,
        slowloris=20,
        slowloris_interval_s=1.5,
        churn_rate=10,
        churn_hold_ms=200,
        churn_fresh=0.5,
    ),
}

# What /metrics says, as reported (the name prometheus_client gives each figure).
COUNTS = {
    "malformed": "monit_nats_malformed_total",
    "nats_refused": "monit_nats_refused_total",
    "readers_dropped": "monit_readers_dropped_total",
    "inboxes_evicted": "monit_inboxes_evicted_total",
    "history_bytes": "monit_history_bytes",
    "streams_open": "monit_streams_open",
    "events": "monit_events_total",
    "open_inboxes": 'monit_inboxes{state="open"}',
    "unopened_inboxes": 'monit_inboxes{state="unopened"}',
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, help="length of the attack phase (default 10; --smoke: 0.1)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds per phase (what the tests run)")
    parser.add_argument("--results", type=Path, default=run.RESULTS, help=f"output folder (default: {run.RESULTS})")
    parser.add_argument(
        "--monit-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for twistd monit, after the soak's limits (repeatable; "
        "--monit-arg=--max-inboxes=5000 overrides)",
    )
    for key, value in PARAMS["full"].items():
        fractional = isinstance(value, float) or key.endswith(("_s", "_rate", "_ms"))  # counts are whole
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            type=float if fractional else int,
            metavar="N",
            help=f"default {value} ({PARAMS['smoke'][key]} with --smoke)",
        )
    return parser.parse_args(argv)


def params_from(args: argparse.Namespace) -> dict:
    params = dict(PARAMS["smoke" if args.smoke else "full"])
    for key in params:
        given = getattr(args, key)
        if given is not None:
            params[key] = given
    if args.minutes is not None:
        params["attack_s"] = args.minutes * 60
    return params


# ------------------------------------------------------------------ figures


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if not spread:
        return None
    return 60 * sum((t - mean_t) * (y - mean_y) for t, y in points) / spread


def rss_figures(samples: list[dict]) -> dict:
    """Start, end, max over the run; slope over the attack, and over its second half (once the caps are full)."""
    rss = [s for s in samples if s.get("rss_mb") is not None]
    if not rss:
        return {}
    attack = [(s["t_s"], s["rss_mb"]) for s in rss if s["phase"] == "attack"]
    late = attack[len(attack) // 2 :]
    fds = [s["fds"] for s in rss if s.get("fds") is not None]
    during = [s for s in rss if s["phase"] == "attack"]
    rounded = lambda x: None if x is None else round(x, 3)  # noqa: E731
    return {
        "rss_start_mb": rss[0]["rss_mb"],
        "rss_end_attack_mb": during[-1]["rss_mb"] if during else None,
        "rss_end_mb": rss[-1]["rss_mb"],
        "rss_max_mb": max(s["rss_mb"] for s in rss),
        "rss_slope_attack_mb_per_min": rounded(slope_per_minute(attack)),
        "rss_slope_late_mb_per_min": rounded(slope_per_minute(late)),
        "fds_start": fds[0] if fds else None,
        "fds_max": max(fds) if fds else None,
        "fds_end": fds[-1] if fds else None,
    }


def counts(metrics: dict, baseline: dict) -> dict:
    """monit's own counts at the end of the attack, and how much each grew during it."""
    out = {
        "requests_refused": {
            k.split('"')[1]: v for k, v in metrics.items() if k.startswith("monit_requests_refused_total{")
        }
    }
    for name, key in COUNTS.items():
        out[name] = metrics.get(key)
        if name not in ("history_bytes", "streams_open", "open_inboxes", "unopened_inboxes") and None not in (
            metrics.get(key),
            baseline.get(key),
        ):
            out[f"{name}_during_attack"] = metrics[key] - baseline[key]
    return out


def summarize(result: dict) -> dict:
    s = dict(result["summary"])
    s.update(rss_figures(result["samples"]))
    s["monit"] = counts(result["metrics"].get("attack", {}), result["metrics"].get("baseline", {}))
    ratio, slope = s["control_p99_ratio"], s.get("rss_slope_late_mb_per_min")
    s["goals"] = {
        "all_delivered": s["control_delivered_attack"] == 1 and s["control_delivered_baseline"] == 1,
        "p99_within_2x": None if ratio is None else ratio <= GOAL_P99_RATIO,
        "rss_flat": None if slope is None else slope <= RSS_FLAT_MB_PER_MIN,
    }
    s["invalid"] = result.get("invalid", [])
    s["noisy"] = result.get("noisy", [])
    return s


def markdown(s: dict, attack: dict, params: dict) -> str:
    pct = lambda x: "n/a" if x is None else f"{100 * x:.3f} %"  # noqa: E731
    goals = s["goals"]
    mark = lambda ok: {True: "met", False: "**missed**", None: "n/a"}[ok]  # noqa: E731
    m = s["monit"]
    minutes = params["attack_s"] / 60
    rows = [
        "| | baseline | attack | goal |",
        "| --- | --- | --- | --- |",
        f"| control delivered | {pct(s['control_delivered_baseline'])} | {pct(s['control_delivered_attack'])} "
        f"| 100 %: {mark(goals['all_delivered'])} |",
        f"| control p50 (ms) | {s['control_p50_baseline_ms']} | {s['control_p50_attack_ms']} | |",
        f"| control p99 (ms) | {s['control_p99_baseline_ms']} | {s['control_p99_attack_ms']} "
        f"| ≤ 2× (×{s['control_p99_ratio']}): {mark(goals['p99_within_2x'])} |",
        f"| background delivered | {pct(s['background_delivered_baseline'])} "
        f"| {pct(s['background_delivered_attack'])} | |",
        f"| background p99 (ms) | {s['background_p99_baseline_ms']} | {s['background_p99_attack_ms']} | |",
        f"| monit RSS (MB) | start {s.get('rss_start_mb')} | end {s.get('rss_end_attack_mb')}, "
        f"max {s.get('rss_max_mb')}, slope {s.get('rss_slope_attack_mb_per_min')} MB/min "
        f"(2nd half {s.get('rss_slope_late_mb_per_min')}) | flat: {mark(goals['rss_flat'])} |",
        f"| monit descriptors | {s.get('fds_start')} | max {s.get('fds_max')}, after {s.get('fds_end')} | |",
    ]
    lines = [
        f"soak: {minutes:g} min attack, {params['readers']} readers",
        "",
        *rows,
        "",
        f"monit's /metrics during the attack: malformed +{m.get('malformed_during_attack')}, "
        f"NATS refused +{m.get('nats_refused_during_attack')}, readers dropped "
        f"+{m.get('readers_dropped_during_attack')}, inboxes evicted +{m.get('inboxes_evicted_during_attack')}, "
        f"requests refused {m.get('requests_refused')}, history {m.get('history_bytes')} B, "
        f"open inboxes {m.get('open_inboxes')}; control foreign frames {s['control_foreign_frames']}, "
        f"control readers ended {s['control_readers_ended']}",
    ]
    if "error" not in attack:
        slow, churn = attack["slowloris"], attack["churn"]
        lines.append(
            f"attack sent: poison {sum(attack['poison'].values())}, oversized {attack['oversized']}, "
            f"flood {attack['flood']} ({attack['flood_per_s']}/s); slowloris opened {slow['opened']}, "
            f"closed by monit {slow['closed_by_server']}, open at end {slow['open_at_end']}; churn "
            f"{churn['started']} started, statuses {churn['statuses']}, errors {churn['errors']}, "
            f"timeouts {churn['timeouts']}"
        )
    if s["invalid"] or s["noisy"]:
        lines.append(f"invalid phases: {s['invalid']}; noisy phases: {s['noisy']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ running


def check_fd_limit(params: dict, limit: int) -> None:
    """monit holds every reader, slowloris and churning connection at once."""
    needed = params["readers"] + params["control_readers"] + params["slowloris"] + 10 * params["churn_rate"]
    if needed + run.FD_SPARE > limit:
        raise SystemExit(f"open-file limit {limit} < {needed + run.FD_SPARE}: raise it or lower the sizes")


def soak(procs: run.Processes, params: dict, monit_args: list[str], outdir: Path, smoke: bool) -> dict:
    """nats-server, monit and the generator; the generator's result."""
    from monit.token import mint

    _, nats = run.start_nats(procs, run.find_nats_server(), False, outdir)
    port = run.free_port()
    log_path = outdir / "logs" / "soak-monit.log"
    with open(log_path, "wb") as log:
        server = procs.start(
            run.monit_argv(nats["url"], port, *monit_args), core="server_core", stdout=log, stderr=subprocess.STDOUT
        )
        run.wait_for_port(port, server, "monit")
        phases_s = params["baseline_s"] + params["attack_s"] + params["lead_s"] + params["cooldown_s"]
        deadline = phases_s + 2 * params["drain_s"] + (120 if smoke else 300)
        env = run.loadgen_env(
            "soak", "monit", params, port, mint(run.SECRET, "bench", 24 * 3600), nats, server.pid, deadline
        )
        env["churnToken"] = mint(run.SECRET, "churn", 24 * 3600)
        try:
            return run.run_loadgen(procs, env)
        finally:
            procs.stop(server)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = params_from(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally below runs
    outdir = args.results.resolve()
    (outdir / "logs").mkdir(parents=True, exist_ok=True)
    fd_limit = run.raise_fd_limit()
    check_fd_limit(params, fd_limit)
    pins = run.pinning()
    run.ensure_node_modules()
    monit_args = [*MONIT_LIMITS["smoke" if args.smoke else "full"], *args.monit_arg]
    report: dict = {
        "smoke": args.smoke,
        "params": params,
        "monit_flags": ["--heartbeat", "15", *monit_args],
        "machine": run.machine_info(pins, fd_limit, run.find_nats_server()),
    }
    procs = run.Processes(pins)
    started = time.monotonic()
    try:
        result = soak(procs, params, monit_args, outdir, args.smoke)
        report["summary"] = summarize(result)
        report.update({k: result[k] for k in ("phases", "attack", "foreign_samples", "metrics", "samples")})
    except Exception as error:  # noqa: BLE001 - recorded, and the run exits non-zero
        report["error"] = str(error)
        print(f"soak: failed: {error}", file=sys.stderr)
    finally:
        procs.stop_all()
        report["seconds"] = round(time.monotonic() - started, 1)
        path = outdir / "soak.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
    if "error" in report:
        return 1
    print(markdown(report["summary"], report["attack"], params))
    print(f"soak: wrote {path} in {report['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
