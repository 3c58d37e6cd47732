"""Where one Redis ``delay().get()`` round trip spends its time, step by step, seen from the client.

A worker started through the CLI (``--pool solo --prefetch-multiplier 64`` unless ``--default``)
runs a task that returns ``time.time()``; the client stamps when ``delay()`` returns, when the
result backend sends SUBSCRIBE, reads each pub/sub reply, GETs the stored result and leaves the
channel, and when ``get()`` returns. Printed: the p50 of each step in µs after the call, for the most
common order of steps. ``--idle-ms`` waits before each call (the worker idle meanwhile).

Run: ``python benches/roundtrip_timeline.py redis://127.0.0.1:6479/0 [--roundtrips N] [--idle-ms MS]
[--default]``. It flushes nothing and uses its own queue.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

APP = """
import time
from rqueue import App
app = App("timeline", broker={url!r}, backend={url!r})
app.conf.task_default_queue = {queue!r}
@app.task
def stamp():
    return time.time()
"""


def instrument(backend: Any, marks: list[tuple[str, float]]) -> None:
    """Record when the backend's waiting steps return (on this backend instance only)."""

    def wrap(obj: Any, name: str, label: Any) -> None:
        real = getattr(obj, name)

        def stamped(*args: Any, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            marks.append((label(out) if callable(label) else label, time.time()))
            return out

        setattr(obj, name, stamped)

    wrap(backend, "_join", "SUBSCRIBE sent")
    wrap(backend, "_leave", "UNSUBSCRIBE sent")
    wrap(backend, "_take", lambda meta: "notification taken" if meta else "nothing taken")
    # wait_for GETs through the parent class's get_meta (its own is the public one)
    parent = next(k for k in type(backend).__mro__[1:] if "get_meta" in k.__dict__)
    wrap(parent, "get_meta", "GET returned")
    with backend._lock:  # the pub/sub connection exists from the first subscription on
        backend._join(b"rqueue-timeline-warmup")
        backend._pump(0.1)
    wrap(backend._pubsub, "get_message", lambda m: f"read {m['type']}" if m else "read nothing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="a Redis URL (broker and result backend)")
    parser.add_argument("--roundtrips", type=int, default=3000)
    parser.add_argument("--idle-ms", type=float, default=0.0)
    parser.add_argument("--default", action="store_true", help="the default worker instead of the tuned one")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        queue = f"rqueue-timeline-{uuid.uuid4().hex[:8]}"
        Path(tmp, "timeline.py").write_text(APP.format(url=opts.url, queue=queue))
        sys.path.insert(0, tmp)
        from timeline import app, stamp  # type: ignore[import-not-found]

        tuned = [] if opts.default else ["--pool", "solo", "--prefetch-multiplier", "64"]
        cmd = [sys.executable, "-m", "rqueue", "-A", "timeline", "worker", "--loglevel", "warning", *tuned]
        worker = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            stamp.delay().get(timeout=30)  # the worker is up
            marks: list[tuple[str, float]] = []
            instrument(app.backend, marks)
            rows = []
            for i in range(opts.roundtrips + 50):
                if opts.idle_ms:
                    time.sleep(opts.idle_ms / 1000)
                marks.clear()
                began = time.time()
                result = stamp.apply_async(task_id=str(uuid.uuid4()))
                sent = time.time()
                ran = result.get(timeout=10)
                got = time.time()
                if i >= 50:  # warm-up left out
                    rows.append(
                        ([("delay() returned", sent), *marks, ("task ran", ran), ("get() returned", got)], began)
                    )
        finally:
            worker.terminate()
            worker.wait(30)
    orders = collections.Counter(tuple(name for name, _ in steps) for steps, _ in rows)
    order, count = orders.most_common(1)[0]
    chosen = [(steps, began) for steps, began in rows if tuple(name for name, _ in steps) == order]
    print(f"{len(rows)} round trips, idle {opts.idle_ms:g} ms before each; the most common order ({count}):")
    p50s = []
    for k, name in enumerate(order):
        at = sorted((steps[k][1] - began) * 1e6 for steps, began in chosen)
        p50s.append((at[len(at) // 2], name))
    for at_us, name in sorted(p50s):
        print(f"  {name:<22} p50 {at_us:7.0f} µs after the call")


if __name__ == "__main__":
    main()
