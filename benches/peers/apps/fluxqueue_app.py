"""fluxqueue (a Rust worker on Tokio, Redis lists) with its ``fluxqueue-worker`` binary.

fluxqueue has no result store (a task must return None), so a round trip is the task LPUSHing a
reply that the caller BLPOPs, and the drain with results is not measured. Its worker is a separate
binary that embeds Python: ``fluxqueue-cli`` downloads it from the project's GitHub releases, and it
is not on crates.io. The harness looks for it in ``BENCH_FLUXQUEUE_WORKER``, beside this Python, or
on PATH; to build it, ``cargo build -p fluxqueue-worker --release`` in the fluxqueue repository at
the tag ``worker-v<fluxqueue version>`` (it links libpython3.X, shared: a Python built with --enable-shared).
"""

from __future__ import annotations

import os
import shutil
import site
import sys
import sysconfig
import uuid
from pathlib import Path
from typing import Any

import redis
from fluxqueue import FluxQueue  # type: ignore[import-untyped]

from peers.apps.common import ARGS, CONFIG, REDIS_URL, REPLY_PREFIX
from rqueue.bench.counter import count

LIBRARY = "fluxqueue"
#: No result store: the harness measures no drain with results.
RESULT_STORE = False
CONFIGS = {
    "fast": "fluxqueue-worker --concurrency 16 (16 Tokio executors, each a blocking BLMOVE; its docs name no "
    "fastest setting: of 1, 4, 8 and 16 tried here, 16 drained fastest)",
    "default": "defaults: fluxqueue-worker --concurrency 4",
}
#: Executors of the worker per configuration (its default is 4).
CONCURRENCY = {"fast": 16, "default": 4}
BENCHES = Path(__file__).resolve().parents[2]

fluxqueue = FluxQueue(redis_url=REDIS_URL)
client = redis.Redis.from_url(REDIS_URL)


@fluxqueue.task(name="bench_noop", max_retries=0)
def noop(*_payload: str) -> None:
    count()


@fluxqueue.task(name="bench_reply", max_retries=0)
def reply(key: str) -> None:
    count()
    client.lpush(key, b"1")


def worker_binary() -> str:
    found = os.environ.get("BENCH_FLUXQUEUE_WORKER") or shutil.which(
        "fluxqueue-worker", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if not found:
        raise RuntimeError(
            "fluxqueue-worker not found (BENCH_FLUXQUEUE_WORKER, beside this Python, or on PATH): "
            "fluxqueue-cli downloads it from GitHub releases and it is not on crates.io; see this module's docstring"
        )
    return found


def worker_argv(config: str) -> list[str]:
    # The worker imports the tasks module by file path, relative to the nearest ancestor of its
    # working directory that has a tests/ folder (the repository root): start it in benches/.
    # Its embedded Python is this one (LD_LIBRARY_PATH: its libpython before the system's), and
    # finds this virtualenv's packages through PYTHONPATH.
    path = os.pathsep.join([str(BENCHES), *site.getsitepackages()])
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    return [
        "env",
        "-C",
        str(BENCHES),
        f"PYTHONPATH={path}",
        f"LD_LIBRARY_PATH={libdir}",
        worker_binary(),
        "--redis-url",
        REDIS_URL,
        "--tasks-module-path",
        "peers/apps/fluxqueue_app.py",
        "--concurrency",
        str(CONCURRENCY[config]),
    ]


def send_one() -> Any:
    return noop(*ARGS)


def fill(n: int) -> list[str]:
    # No batch enqueue in fluxqueue: one call per task.
    for _ in range(n):
        noop(*ARGS)
    return []


def call(timeout_s: float) -> None:
    key = REPLY_PREFIX + uuid.uuid4().hex
    reply(key)
    if client.blpop([key], timeout=timeout_s) is None:
        raise TimeoutError(f"no reply on {key} within {timeout_s} s")


def stored() -> int:
    return -1  # no result store


assert CONFIG in CONFIGS
