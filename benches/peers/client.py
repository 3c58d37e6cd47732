"""The producer's side of one measurement, in a fresh process: ``python -m peers.client LIBRARY MODE N [...]``.

Modes: ``describe`` (the library's version, configurations and worker commands; fails when the
library cannot run here), ``enqueue`` (N delay()-equivalents one by one), ``fill`` (N messages,
batched where the library can), ``roundtrip N [IDLE_N IDLE_MS]`` (wait for a worker, warm up, then
N send-and-wait calls back to back, then IDLE_N more each after a pause of IDLE_MS), ``stored``
(results stored). Prints one JSON object. The app module reads its settings from the environment.
It runs in the library's own interpreter (mayu needs a newer Python than the others).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
import time

WARMUP = 10
READY_TIMEOUT_S = 60.0


def main() -> None:
    library, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = importlib.import_module(f"peers.apps.{library}_app")
    perf = time.perf_counter
    out: dict[str, object] = {}
    if mode == "describe":
        out["version"] = importlib.metadata.version(app.LIBRARY)
        out["configs"] = app.CONFIGS
        out["argv"] = {config: app.worker_argv(config) for config in app.CONFIGS}
        out["result_store"] = getattr(app, "RESULT_STORE", True)
    elif mode == "enqueue":
        send_one = app.send_one
        for _ in range(WARMUP):  # connect, and import what the first call imports lazily
            send_one()
        start = perf()
        for _ in range(n):
            send_one()
        out["seconds"] = perf() - start
    elif mode == "fill":
        start = perf()
        app.fill(n)
        out["seconds"] = perf() - start
    elif mode == "roundtrip":
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:  # the worker may still be starting
            try:
                app.call(1.0)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        for _ in range(WARMUP):
            app.call(10.0)
        samples = []
        for _ in range(n):
            t0 = perf()
            app.call(10.0)
            samples.append(perf() - t0)
        out["samples"] = samples
        idle_n, idle_s = (int(sys.argv[4]), int(sys.argv[5]) / 1000) if len(sys.argv) > 5 else (0, 0.0)
        idle_samples = []
        for _ in range(idle_n):
            time.sleep(idle_s)  # the worker has nothing to do meanwhile
            t0 = perf()
            app.call(10.0)
            idle_samples.append(perf() - t0)
        out["idle_samples"] = idle_samples
    elif mode == "stored":
        out["stored"] = app.stored()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
