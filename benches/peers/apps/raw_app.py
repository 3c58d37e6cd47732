"""The floor: raw redis-py, no task queue. ``python -m peers.apps.raw_app`` is its worker.

Producer: one ``LPUSH`` per message (``send_one``), or pipelined batches of ``CHUNK`` (``fill``).
Consumer, one process: ``RPOP queue 100``, a JSON decode and a call of the no-op function per
message; when the list is empty, one blocking ``BRPOP`` (so an idle worker wakes at once). With
results on, one pipelined ``SET ... EX`` per message, sent once per batch. What any Redis task
queue in Python must at least do, with none of the guarantees (a crash loses the batch in hand).
"""

from __future__ import annotations

import json
import signal
import sys
import uuid
from typing import Any

import redis

from peers.apps.common import ARGS, CHUNK, CONFIG, REDIS_URL, REPLY_PREFIX, RESULTS, count_keys
from rqueue.bench.counter import count

LIBRARY = "redis"  # the distribution measured: redis-py
CONFIGS = {
    "fast": "producer LPUSH per message / pipelined batches; consumer RPOP count 100 + a no-op call per "
    "message, BRPOP when empty; one process",
}
QUEUE = "bench-raw"
RESULT_PREFIX = "bench-raw-result:"
#: Messages per RPOP (the consumer's batch).
BATCH = 100
#: How long one blocking BRPOP of an idle worker waits before it looks again, in seconds.
IDLE_WAIT_S = 1.0
RESULT_TTL_S = 3600

client = redis.Redis.from_url(REDIS_URL)


def noop(*_payload: str) -> None:
    count()


def message(reply: str | None = None) -> bytes:
    return json.dumps({"id": uuid.uuid4().hex, "args": ARGS, "reply": reply}).encode()


def worker_argv(config: str) -> list[str]:
    return [sys.executable, "-m", "peers.apps.raw_app"]


def send_one() -> Any:
    return client.lpush(QUEUE, message())


def fill(n: int) -> list[str]:
    while n > 0:
        k = min(n, CHUNK)
        pipe = client.pipeline(transaction=False)
        for _ in range(k):
            pipe.lpush(QUEUE, message())
        pipe.execute()
        n -= k
    return []


def call(timeout_s: float) -> None:
    reply = REPLY_PREFIX + uuid.uuid4().hex
    client.lpush(QUEUE, message(reply))
    if client.blpop([reply], timeout=timeout_s) is None:
        raise TimeoutError(f"no reply on {reply} within {timeout_s} s")


def stored() -> int:
    return count_keys(client, RESULT_PREFIX + "*")


def consume() -> None:
    """The worker loop: until SIGTERM, take up to ``BATCH`` messages at a time and run them."""
    running = True

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    while running:
        batch = client.rpop(QUEUE, BATCH)
        if not batch:
            item = client.brpop([QUEUE], timeout=IDLE_WAIT_S)
            if item is None:
                continue
            batch = [item[1]]
        pipe = client.pipeline(transaction=False)
        for raw in batch:
            msg = json.loads(raw)
            noop(*msg["args"])
            if msg["reply"]:
                pipe.lpush(msg["reply"], b"1")
            elif RESULTS:
                pipe.set(RESULT_PREFIX + msg["id"], b"null", ex=RESULT_TTL_S)
        if len(pipe):
            pipe.execute()


assert CONFIG in CONFIGS

if __name__ == "__main__":
    consume()
