"""Celery with its Redis (or RabbitMQ) transport and Redis result backend, ``celery -A ... worker``."""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from peers.apps.common import AMQP, ARGS, BROKER_URL, CONFIG, RESULT_URL, RESULTS, count_keys
from rqueue.bench.counter import count

LIBRARY = "celery"
CONFIGS = {
    "fast": "--pool solo --prefetch-multiplier 64 --without-gossip --without-mingle --without-heartbeat",
    "default": "defaults: prefork pool, one child per CPU, prefetch multiplier 4, gossip/mingle/heartbeat on",
}

app = Celery("bench", broker=BROKER_URL, backend=RESULT_URL)
app.conf.update(task_ignore_result=not RESULTS, broker_connection_retry_on_startup=True)
if AMQP:  # publisher confirms, as rqueue always has them on RabbitMQ
    app.conf.broker_transport_options = {"confirm_publish": True}


@app.task(name="bench.noop")
def noop(*_payload: str) -> None:
    count()


def worker_argv(config: str) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", "peers.apps.celery_app", "worker", "--loglevel", "warning"]
    if config == "fast":
        argv += ["--pool", "solo", "--prefetch-multiplier", "64"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return argv


def send_one() -> Any:
    return noop.delay()


def fill(n: int) -> list[str]:
    # Celery has no batch publish: its fastest public way is apply_async on one producer.
    ids = []
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            ids.append(noop.apply_async(ARGS, producer=producer).id)
    return ids if RESULTS else []


def call(timeout_s: float) -> None:
    noop.delay().get(timeout=timeout_s)


def stored() -> int:
    return count_keys(app.backend.client, "celery-task-meta-*")


assert CONFIG in CONFIGS
