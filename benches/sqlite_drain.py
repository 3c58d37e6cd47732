"""Drain throughput of the SQLite broker through the extension: publish_many, fetch(100), ack.

Run: ``python benches/sqlite_drain.py [N]`` after ``maturin develop --profile dev-release``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from rqueue._rqueue import SqliteBroker


def main(n: int = 100_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = SqliteBroker(str(Path(tmp) / "bench.sqlite3"))
        payload = b"x" * 200
        start = time.perf_counter()
        for _ in range(n // 1000):
            broker.publish_many([("q", payload, 0, None)] * 1000)
        published = time.perf_counter()
        drained = 0
        while drained < n:
            got = broker.fetch(["q"], 100, "bench", 60_000)
            broker.ack([d.tag for d in got])
            drained += len(got)
        end = time.perf_counter()
        print(
            f"{n} msgs: publish_many {n / (published - start):,.0f}/s, "
            f"fetch+ack {n / (end - published):,.0f}/s, end to end {n / (end - start):,.0f}/s"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
