"""Run every benchmark of rqueue itself with this interpreter and print what each one measured.

Run: ``python benches/run_all.py`` (``make bench``). Extra arguments are not passed on; run a script
directly for its options (``--seconds``, ``--tasks``, ``--json`` ...). Always exits 0: benchmarks
report figures and targets, they do not fail a build. The comparison with other task queues needs
their packages and has its own virtualenv: ``make bench-peers`` (``benches/peers/run.py``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_protocol.py", "bench_executor.py", "bench_sqlite.py", "bench_redis.py", "bench_events.py"]
#: Each script is bounded well below this; the limit only guards against a hung worker.
TIMEOUT_S = 300


def main() -> int:
    for name in SCRIPTS:
        print(f"=== {name} ===", flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, str(HERE / name)], timeout=TIMEOUT_S, check=False)
            status = f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {TIMEOUT_S} s"
        print(f"=== {name}: {status}, {time.perf_counter() - start:.1f} s ===\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
