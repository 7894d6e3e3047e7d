"""Plots latency over throughput from the CSV that scripts/bench.sh writes.

Usage: plot_bench.py RESULTS.csv OUT_DIR

The CSV has a header line and the columns
system,scenario,concurrency,rps,p50_ms,p95_ms,p99_ms,ok,errors
(one row per system, scenario and concurrency level). For each scenario this
writes OUT_DIR/<scenario>.png: one curve per system through its concurrency
levels, p50 solid and p99 dashed, throughput on x and latency on y, so a
system further right and lower is faster. Prints the files it wrote.
"""

import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

TITLES = {
    "gateway": "Nested query across four subgraphs",
    "overhead": "Single-subgraph query: direct vs. through the gateway",
}


def read_rows(path):
    """The CSV rows grouped by scenario, then system, sorted by concurrency."""
    grouped = defaultdict(lambda: defaultdict(list))
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            grouped[row["scenario"]][row["system"]].append(
                (
                    int(row["concurrency"]),
                    float(row["rps"]),
                    float(row["p50_ms"]),
                    float(row["p99_ms"]),
                )
            )
    for systems in grouped.values():
        for points in systems.values():
            points.sort()
    return grouped


def plot(scenario, systems, out_dir):
    """Writes one scenario's chart and answers its path."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=90)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (system, points) in enumerate(sorted(systems.items())):
        color = colors[index % len(colors)]
        rps = [p[1] for p in points]
        ax.plot(rps, [p[2] for p in points], "o-", color=color, label=f"{system} p50")
        ax.plot(rps, [p[3] for p in points], "s--", color=color, label=f"{system} p99")
        for concurrency, x, _, p99 in points:
            ax.annotate(
                f"c={concurrency}",
                (x, p99),
                textcoords="offset points",
                xytext=(3, 3),
                fontsize=7,
                color=color,
            )
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_yscale("log")
    ax.set_title(TITLES.get(scenario, scenario))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out_dir) / f"{scenario}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    out_dir = Path(argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    for scenario, systems in sorted(read_rows(argv[1]).items()):
        print(plot(scenario, systems, out_dir))


if __name__ == "__main__":
    main(sys.argv)
