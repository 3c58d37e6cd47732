"""How bench figures are shown: a text table, a JSON file and a PNG chart (matplotlib, optional)."""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rqueue.exceptions import ConfigurationError

#: (heading, row key, format) of the columns of the table.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("scenario", "label", "{}"),
    ("tasks", "tasks", "{:,}"),
    ("timed s", "seconds", "{:.2f}"),
    ("tasks/s", "tasks_s", "{:,.0f}"),
    ("p50 ms", "p50_ms", "{:.3f}"),
    ("p95 ms", "p95_ms", "{:.3f}"),
    ("p99 ms", "p99_ms", "{:.3f}"),
    ("worker CPU %", "worker_cpu_pct", "{:.0f}"),
    ("broker CPU %", "broker_cpu_pct", "{:.0f}"),
    ("worker RSS MiB", "worker_rss_mib", "{:.1f}"),
)


def cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return fmt.format(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    """A plain text table, numbers right-aligned; ``n/a`` where a figure could not be read."""
    head = [c[0] for c in columns]
    body = [[cell(row.get(key), fmt) for _, key, fmt in columns] for row in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = []
    for r in [head, *body]:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table (first column left-aligned, the others right-aligned)."""
    align = [":---"] + ["---:"] * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n")


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or a ConfigurationError saying how to install it."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise ConfigurationError(
            "--plot needs matplotlib, which is not installed: pip install 'rqueue[plot]'"
        ) from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot_bench(report: dict[str, Any], path: str | Path) -> None:
    """A PNG with two panels: tasks/s per scenario, and latency percentiles where measured."""
    plt = pyplot()
    rows = report["scenarios"]
    timed = [r for r in rows if r.get("p50_ms") is not None]
    if timed:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    else:  # only drains: no latency panel
        fig, left = plt.subplots(1, 1, figsize=(7, 3.2))
    labels = [r["label"] for r in rows]
    rates = [r["tasks_s"] or 0 for r in rows]
    bars = left.barh(labels, rates, color="#3b75af")
    left.bar_label(bars, labels=[f"{v:,.0f}" for v in rates], padding=3, fontsize=8)
    left.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _pos: f"{v / 1000:g}k" if v else "0"))
    left.set_xlabel("tasks/s (higher is better)")
    left.invert_yaxis()
    width = 0.25
    for k, (pct, color) in enumerate((("p50", "#3b75af"), ("p95", "#f28e2b"), ("p99", "#c44e52"))):
        if not timed:
            break
        xs = [i + (k - 1) * width for i in range(len(timed))]
        right.bar(xs, [r[f"{pct}_ms"] for r in timed], width, label=pct, color=color)
    if timed:
        right.set_xticks(range(len(timed)), [r["label"] for r in timed], fontsize=8)
        right.set_ylabel("latency, ms (lower is better)")
        right.legend()
    m, o = report["machine"], report["options"]
    fig.suptitle(
        f"rqueue bench {report['rqueue']} on {report['broker_kind']}: {o['workers']} worker(s), "
        f"pool {o['pool']}, {o['tasks']:,} tasks, payload {o['payload_bytes']:,} B\n"
        f"{m['cpus']} CPUs, {m['cpu_model']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
