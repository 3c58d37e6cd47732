"""The peer comparison's README tables: written from a run's report, and put into README.md.

``markdown(report)`` renders a ``benches/peers/run.py`` report (its ``.json``) as the tables that
run writes beside it (``.md``): speed, what a task costs Redis and the worker, payload scaling,
worker scaling, and what could not be measured. Run: ``python benches/peers/readme.py
benches/results/<date>.md [--note "TEXT"]`` after ``make bench-peers`` to put that ``.md`` between
README.md's bench-peers markers (a ``.json`` instead re-renders the tables from the report first).
The chart is the ``.png`` beside it; README.md links it, so commit both.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from rqueue.bench.report import markdown_table

ROOT = Path(__file__).resolve().parents[2]
START = "<!-- bench-peers:start (python benches/peers/readme.py benches/results/<date>.md) -->"
END = "<!-- bench-peers:end -->"
TIMES = "\N{MULTIPLICATION SIGN}"
#: Decimals per column (rates and anything not listed: none, with thousands separators).
DECIMALS = {
    "rt_p50": 2,
    "rt_p99": 2,
    "rt_idle_p50": 2,
    "rt_idle_p99": 2,
    "redis_cmds": 2,
    "redis_cpu_us": 1,
    "worker_cpu_us": 1,
}


def fmt(column: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    decimals = DECIMALS.get(column)
    return f"{value:,.0f}" if decimals is None else f"{value:,.{decimals}f}"


def _comparison(report: dict[str, Any], columns: list[str]) -> str:
    headings = report["headings"]
    rows = []
    for row in report["comparison"]:
        cells = [f"{row['library']} ({row['config']})"]
        for c in columns:
            cell = row["cells"][c]
            text = fmt(c, cell["median"])
            if row["library"] != "rqueue" and cell["ratio"] is not None and not math.isnan(cell["ratio"]):
                text += f" ({cell['ratio']:.1f}{TIMES})"
            cells.append(text)
        rows.append(cells)
    return markdown_table(["library (config)", *[headings[c] for c in columns]], rows)


def markdown(report: dict[str, Any]) -> str:
    """The README's tables: medians, ratios to rqueue and the machine line, from one run."""
    m = report["machine"]
    load = report.get("load_average_1_5_15", {}).get("before")
    lines = [
        f"Measured {report['date']} with `{report['command']}` on {m['cpus']} CPUs ({m['cpu_model']}, load average "
        f"{load} at the start), Python {report['python']}, redis-server {report['redis']}, one private Redis for "
        f"all; medians of {report['reps']} repetition(s). Ratios in parentheses: rqueue over the peer in the same "
        f"configuration (for latency and costs, the peer over rqueue; the raw floor against rqueue fast): "
        f"> 1{TIMES} means rqueue is better. Round trips after idle: the worker had nothing to do for "
        f"{report['idle_ms']} ms before each call.",
        "",
        _comparison(report, list(report["speed_columns"])),
        "",
        "What each task costs during the drain without results (Redis: `INFO commandstats` calls and "
        "`used_cpu_user + used_cpu_sys` of the redis-server; worker: user + sys CPU of its process tree):",
        "",
        _comparison(report, list(report["cost_columns"])),
        "",
        "Configurations: "
        + "; ".join(f"**{r['library']}** {r['config']}: {r['config_note']}" for r in report["libraries"])
        + ".",
    ]
    missing = {**report.get("cannot_run", {}), **report.get("failed", {})}
    if missing:
        lines += ["", "Not measured: " + "; ".join(f"**{k}**: {v[:300]}" for k, v in missing.items()) + "."]
    if report.get("payloads"):
        rows = [
            [
                f"{p['library']}, {p['payload_bytes']:,} B",
                fmt("drain", p["tasks_s"]),
                fmt("redis_cmds", p["redis_cmds"]),
                fmt("redis_cpu_us", p["redis_cpu_us"]),
                fmt("worker_cpu_us", p["worker_cpu_us"]),
            ]
            for p in report["payloads"]
        ]
        head = ["library, payload", "drain /s", "Redis cmds/task", "Redis CPU µs/task", "worker CPU µs/task"]
        lines += ["", "Payload scaling (drain, no results, fast configuration):", "", markdown_table(head, rows)]
    if report.get("scaling"):
        rows = [
            [
                f"{s['workers']} {TIMES} solo",
                f"{s['summary']['median']:,.0f}",
                f"{s['redis_cpu_pct']:.0f} %",
                fmt("redis_cpu_us", s["redis_cpu_us"]),
                fmt("worker_cpu_us", s["worker_cpu_us"]),
            ]
            for s in report["scaling"]
        ]
        head = ["workers", "tasks/s", "Redis CPU (of a core)", "Redis CPU µs/task", "worker CPU µs/task"]
        lines += ["", "rqueue drain (no results), worker scaling:", "", markdown_table(head, rows)]
    return "\n".join(lines) + "\n"


def update(readme: str, table_md: Path, note: str | None = None) -> str:
    """``readme`` with the text between the markers replaced by the chart and the table of ``table_md``
    (and ``note``, in bold, above them)."""
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    chart = table_md.with_suffix(".png")
    rel = table_md.resolve().relative_to(ROOT).with_suffix(".png").as_posix()
    block = [START, ""]
    if note:
        block += [f"**{note}**", ""]
    if chart.exists():
        block += [f"![rqueue vs peers on one Redis]({rel})", ""]
    block += [table_md.read_text().strip(), "", END]
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return head + "\n".join(block) + tail


USAGE = 'usage: python benches/peers/readme.py benches/results/<date>.md|.json [--note "TEXT"]'


def main(argv: list[str]) -> int:
    note = None
    if len(argv) == 3 and argv[1] == "--note":
        argv, note = argv[:1], argv[2]
    if len(argv) != 1 or not argv[0].endswith((".md", ".json")):
        raise SystemExit(USAGE)
    source = Path(argv[0])
    if not source.exists():
        raise SystemExit(f"{source} does not exist: run make bench-peers first")
    table_md = source.with_suffix(".md")
    if source.suffix == ".json":
        table_md.write_text(markdown(json.loads(source.read_text())))
    path = ROOT / "README.md"
    path.write_text(update(path.read_text(), table_md, note))
    print(f"README.md: peer comparison from {table_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
