"""Put a peer comparison's table and chart into README.md, between its bench-peers markers.

Run: ``python benches/peers/readme.py benches/results/<date>.md [--note "TEXT"]`` after ``make
bench-peers``. The chart is the ``.png`` beside the ``.md``; README.md links it, so commit both.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START = "<!-- bench-peers:start (python benches/peers/readme.py benches/results/<date>.md) -->"
END = "<!-- bench-peers:end -->"


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


USAGE = 'usage: python benches/peers/readme.py benches/results/<date>.md [--note "TEXT"]'


def main(argv: list[str]) -> int:
    note = None
    if len(argv) == 3 and argv[1] == "--note":
        argv, note = argv[:1], argv[2]
    if len(argv) != 1 or not argv[0].endswith(".md"):
        raise SystemExit(USAGE)
    table_md = Path(argv[0])
    if not table_md.exists():
        raise SystemExit(f"{table_md} does not exist: run make bench-peers first")
    path = ROOT / "README.md"
    path.write_text(update(path.read_text(), table_md, note))
    print(f"README.md: peer comparison from {table_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
