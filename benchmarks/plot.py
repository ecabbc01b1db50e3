"""PNG plots of benchmarks/results/results.json: ``python benchmarks/plot.py [results.json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"monit": "tab:blue", "reference": "tab:gray"}
TARGETS = ("monit", "reference")


def _phases(scenario: dict, target: str) -> list[dict]:
    return scenario.get(target, {}).get("phases", [])


def _bars(ax, labels: list[str], values: dict[str, list], ylabel: str, title: str) -> None:
    """Grouped bars, one group per label, monit beside the reference."""
    width = 0.38
    for k, target in enumerate(TARGETS):
        xs = [i + (k - 0.5) * width for i in range(len(labels))]
        ys = [v if v is not None else 0 for v in values[target]]
        ax.bar(xs, ys, width, label=target, color=COLORS[target])
        for x, v in zip(xs, values[target], strict=True):
            if v is None:
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()


def fanout_latency(scenario: dict, ax_row) -> None:
    """p50 / p99 against the event rate, one panel per reader count."""
    counts = scenario.get("params", {}).get("readers", [])
    for ax, n in zip(ax_row, counts, strict=True):
        for target in TARGETS:
            rows = [p for p in _phases(scenario, target) if p.get("kind") == "rate" and p.get("readers") == n]
            rows = [p for p in rows if not p["invalid"]]
            rates = [p["rate"] for p in rows]
            ax.plot(rates, [p["p50_ms"] for p in rows], "o--", color=COLORS[target], label=f"{target} p50")
            ax.plot(rates, [p["p99_ms"] for p in rows], "s-", color=COLORS[target], label=f"{target} p99")
        ax.axhline(scenario["params"]["knee_p99_ms"], color="tab:red", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("events/s on the stream")
        ax.set_ylabel("publish-to-receive latency (ms)")
        ax.set_title(f"fan-out, {n} readers")
        ax.legend(fontsize=7)


def plot_all(results: dict, outdir: Path) -> list[Path]:
    scenarios = results["scenarios"]
    written = []

    def save(fig, name: str) -> None:
        path = outdir / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    fanout = scenarios.get("fanout")
    if fanout and fanout.get("params", {}).get("readers"):
        counts = fanout["params"]["readers"]
        fig, axes = plt.subplots(1, len(counts), figsize=(5 * len(counts), 4), squeeze=False)
        fanout_latency(fanout, axes[0])
        save(fig, "fanout_latency.png")
        fig, ax = plt.subplots(figsize=(6, 4))
        values = {
            t: [fanout.get(t, {}).get("summary", {}).get(f"burst_deliveries_per_s@{n}") for n in counts]
            for t in TARGETS
        }
        _bars(ax, [f"{n} readers" for n in counts], values, "deliveries/s", "fan-out burst throughput")
        save(fig, "fanout_burst.png")

    memory = scenarios.get("idle-memory")
    if memory:
        fig, ax = plt.subplots(figsize=(6, 4))
        for target in TARGETS:
            levels = memory.get(target, {}).get("levels", [])
            ax.plot(
                [x["streams"] for x in levels],
                [x["rss_per_stream_kb"] for x in levels],
                "o-",
                color=COLORS[target],
                label=target,
            )
        ax.set_xscale("log")
        ax.set_xlabel("open streams")
        ax.set_ylabel("RSS per open stream (kB)")
        ax.set_title("idle memory")
        ax.legend()
        save(fig, "idle_memory.png")

    many = scenarios.get("many-streams")
    if many:
        fig, ax = plt.subplots(figsize=(7, 4))
        keys = ["cold_alone_p99_ms", "cold_p99_ms", "hot_p99_ms"]
        values = {t: [many.get(t, {}).get("summary", {}).get(k) for k in keys] for t in TARGETS}
        _bars(ax, ["cold alone", "cold (with hot)", "hot"], values, "p99 latency (ms)", "many streams: isolation")
        save(fig, "many_streams.png")

    cost = [
        (name, key)
        for name, key in [
            ("cpu-per-delivery", "cpu_us_per_delivery"),
            ("many-streams", "cpu_us_per_delivery"),
            ("ingest", "cpu_us_per_msg"),
        ]
        if name in scenarios
    ]
    if cost:
        fig, ax = plt.subplots(figsize=(7, 4))
        values = {t: [scenarios[name].get(t, {}).get("summary", {}).get(key) for name, key in cost] for t in TARGETS}
        _bars(
            ax, [f"{name}\n{key}" for name, key in cost], values, "server CPU (µs)", "server CPU per delivery / message"
        )
        save(fig, "cpu_cost.png")
    return written


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "results.json"
    for path in plot_all(json.loads(source.read_text()), source.parent):
        print(path)
