"""R15 of docs/reliability.md: a mixed Celery + rqueue fleet on one Redis queue, each side SIGKILLed.

Both kinds of worker keep kombu's in-flight records (``unacked`` hash + ``unacked_index`` sorted
set), so whichever side survives gives back what the dead side held:

- a dead Celery worker's messages carry no rqueue lease; an rqueue worker's sweep (every
  ``SWEEP_S``) restores them once they are older than Celery's
  ``broker_transport_options['visibility_timeout']``, which rqueue reads;
- a dead rqueue worker's messages stop being renewed; kombu's ``restore_visible`` in a live Celery
  worker restores them once older than its own visibility timeout. kombu scans at its event loop's
  start and then every ``unacked_restore_interval * unacked_restore_throttle`` seconds (10 x 10 =
  100 s by default): the fleet here sets both to 1, as an operator with a short visibility timeout
  has to; with kombu's defaults the wait is bounded by ~100 s plus the visibility timeout.

kombu itself pops a message (``BRPOP``) and records it in flight in a second step, from the client:
a Celery worker killed in between loses that message, and no survivor can know of it. The Celery
worker is killed outside that step (``kill_outside_kombus_pop``); rqueue's fetch is one script.

Executions of both sides go to one ledger (``tests/project/tasks.py`` and
``tests/interop/celery_project/tasks.py`` write the same table), the independent record of what ran.
Each round prints sent, lost, duplicated, stranded (still in ``unacked``) and the recovery time:
from the kill until the last message the dead worker held has run on the survivor.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Project
from interop.test_celery_interop import CeleryWorker
from test_reliability import SWEEP_S, cleanup, kill_group, ledger_counts, use_config, wait_for

pytestmark = pytest.mark.redis

pytest.importorskip("celery")
redis = pytest.importorskip("redis")

#: One short visibility timeout for both sides (seconds): rqueue's leases and Celery's in-flight messages.
VISIBILITY_S = 3
N = 300
TASK_S = 0.02
QUEUE = "celery"

#: The Celery side: late acks (rqueue's default; with early acks a SIGKILL loses the running task by
#: design), the same visibility timeout, and kombu's restore scan every second instead of every 100 s.
CELERY_CONF: dict[str, Any] = {
    "task_acks_late": True,
    "broker_transport_options": {
        "visibility_timeout": VISIBILITY_S,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
}
RQUEUE_CONF = (
    f"broker_visibility_timeout = {VISIBILITY_S}\nbroker_transport_options = {{'visibility_timeout': {VISIBILITY_S}}}\n"
)


class Fleet:
    """The rqueue test project on the shared Redis (broker and backend), the Celery workers started
    beside its rqueue workers, and a raw client to look at the in-flight records."""

    def __init__(self, project: Project, redis_url: str) -> None:
        self.project = project
        self.redis_url = redis_url
        self.client = redis.Redis.from_url(redis_url, socket_timeout=10)
        self.celery_workers: list[CeleryWorker] = []

    def start_celery(self, name: str) -> CeleryWorker:
        log = self.project.root / f"{name}.log"
        worker = CeleryWorker(
            self.redis_url, QUEUE, log, conf=CELERY_CONF, ledger=self.project.ledger, pool="prefork", concurrency=2
        )
        self.celery_workers.append(worker)
        worker.wait_ready()
        return worker

    def close(self) -> None:
        for worker in self.celery_workers:
            worker.kill()
        cleanup(self.project)
        self.client.close()


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str) -> Iterator[Fleet]:
    fleet = Fleet(Project(tmp_path, "redis", redis_url), redis_url)
    try:
        yield fleet
    finally:
        fleet.close()


def in_flight(client: Any) -> dict[str, str | None]:
    """Ledger key of every message in kombu's ``unacked`` hash -> the rqueue worker holding it (its
    lease owner), or None for a message without an rqueue lease (held by a Celery worker)."""
    entries = client.hgetall("unacked")
    leases = client.hgetall("rqueue.lease")
    held: dict[str, str | None] = {}
    for tag, entry in entries.items():
        envelope = json.loads(entry)[0]
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        lease = leases.get(tag)
        held[args[1]] = lease.split(b"\n", 1)[0].decode() if lease else None
    return held


def queued(client: Any) -> set[str]:
    """The keys of the messages waiting in the queue."""
    return {json.loads(base64.b64decode(json.loads(raw)["body"]))[0][1] for raw in client.lrange(QUEUE, 0, -1)}


def kill_outside_kombus_pop(worker: CeleryWorker, client: Any, project: Project, keys: list[str]) -> None:
    """SIGKILL the Celery worker at a moment when no message is between kombu's BRPOP and its
    in-flight record, which kombu writes in a second step from the client: a kill in between loses
    that message on any Redis fleet, whoever is to recover it. The consumer (the main process) is
    stopped; a message then in neither the queue, the in-flight records nor the ledger is in that
    step, so it runs on a little and is stopped again. Read in this order, a message the rqueue
    worker moves meanwhile is still seen (its fetch is atomic; it runs before its ack)."""
    for _ in range(200):
        os.kill(worker.proc.pid, signal.SIGSTOP)
        seen = queued(client) | set(in_flight(client)) | set(ledger_counts(project))
        if seen >= set(keys):
            worker.kill()
            return
        os.kill(worker.proc.pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("the Celery worker was always between a pop and its in-flight record")


def ran_by(project: Project, prefix: str, rqueue_pids: set[int], rqueue: bool) -> int:
    """Executions of keys starting with ``prefix`` by the rqueue worker (its pids), or by anything else."""
    return sum(1 for key, pid, _ in project.ledger_rows() if key.startswith(prefix) and (pid in rqueue_pids) == rqueue)


def stale_records(client: Any) -> dict[str, int]:
    """rqueue's bookkeeping left for messages no longer in flight (kombu's restore and ack do not
    know rqueue's keys): lease records, owner-set members, delivery counts."""
    unacked = set(client.hkeys("unacked"))
    owned: set[bytes] = set()
    for key in client.scan_iter(match="rqueue.owned.*"):
        owned |= set(client.smembers(key))
    return {
        "leases": len(set(client.hkeys("rqueue.lease")) - unacked),
        "owned": len(owned - unacked),
        "deliveries": len(set(client.hkeys("rqueue.deliveries")) - unacked),
    }


def last_run_at(project: Project, keys: set[str]) -> float:
    return max(at for key, _, at in project.ledger_rows() if key in keys)


def report(
    project: Project, client: Any, rnd: str, keys: list[str], held: set[str], killed_at: float, drained_s: float
) -> tuple[list[str], Counter[str], int, float]:
    """Print and return the round's figures: lost keys, duplicated keys (count - 1), stranded
    in-flight entries and the recovery time of the dead side's messages."""
    counts = ledger_counts(project)
    lost = [key for key in keys if counts[key] == 0]
    duplicated = Counter({key: counts[key] - 1 for key in keys if counts[key] > 1})
    stranded = len(set(in_flight(client)) & set(keys))
    recovery_s = last_run_at(project, held) - killed_at if held else float("nan")
    print(
        f"\nR15 [{rnd}] sent={len(keys)} lost={len(lost)} duplicated={sum(duplicated.values())} "
        f"stranded={stranded} held-by-the-dead-worker={len(held)} recovery={recovery_s:.1f}s "
        f"(visibility {VISIBILITY_S}s) all-done-after-kill={drained_s:.1f}s stale={stale_records(client)}"
    )
    return lost, duplicated, stranded, recovery_s


@pytest.mark.slow
def test_r15_mixed_celery_and_rqueue_fleet_recovers_each_sides_messages(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, client = fleet.project, fleet.client
    use_config(project, RQUEUE_CONF, monkeypatch)
    tasks = project.app()
    rq = project.start_worker("-c", "2", "-n", "rq@%h")
    celery1 = fleet.start_celery("celery-1")

    # -- round 1: the Celery worker is SIGKILLed mid-drain; the rqueue worker recovers its messages.
    keys1 = [f"r15a-{i}" for i in range(N)]
    results1 = tasks.sleep.delay_many([(TASK_S, key) for key in keys1])
    rq_pids = {rq.proc.pid, *rq.child_pids()}
    wait_for(lambda: ran_by(project, "r15a-", rq_pids, rqueue=False) >= 10, 60, "the Celery worker is draining")
    assert len(ledger_counts(project)) < N // 2, "the queue drained before the kill could test anything"
    kill_outside_kombus_pop(celery1, client, project, keys1)
    killed_at = time.time()
    held1 = {key for key, owner in in_flight(client).items() if owner is None}
    wait_for(lambda: len(ledger_counts(project)) >= N, 60, f"all {N} of round 1 ran", interval=0.1)
    drained1 = time.time() - killed_at
    assert [r.get(timeout=30) for r in results1] == [TASK_S] * N
    lost1, dup1, stranded1, recovery1 = report(project, client, "celery killed", keys1, held1, killed_at, drained1)
    assert held1, "the Celery worker held nothing when it was killed: nothing was tested"
    assert lost1 == []
    assert set(dup1) <= held1 and sum(dup1.values()) <= 2  # -c 2: at most the two running tasks
    assert stranded1 == 0
    assert recovery1 < VISIBILITY_S + SWEEP_S + 10  # not kombu's default hour: the sweep's cadence

    # -- round 2: a Celery worker joins; the rqueue worker is SIGKILLed mid-drain; Celery recovers.
    celery2 = fleet.start_celery("celery-2")
    keys2 = [f"r15b-{i}" for i in range(N)]
    results2 = tasks.sleep.delay_many([(TASK_S, key) for key in keys2])
    wait_for(lambda: ran_by(project, "r15b-", rq_pids, rqueue=True) >= 10, 60, "the rqueue worker is draining")
    assert sum(1 for key in ledger_counts(project) if key.startswith("r15b-")) < N // 2
    kill_group(rq)
    killed_at = time.time()
    held2 = {key for key, owner in in_flight(client).items() if owner is not None}
    wait_for(lambda: len(ledger_counts(project)) >= 2 * N, 60, f"all {N} of round 2 ran", interval=0.1)
    drained2 = time.time() - killed_at
    assert [r.get(timeout=30) for r in results2] == [TASK_S] * N
    lost2, dup2, stranded2, recovery2 = report(project, client, "rqueue killed", keys2, held2, killed_at, drained2)
    assert held2, "the rqueue worker held nothing when it was killed: nothing was tested"
    assert lost2 == []
    assert set(dup2) <= held2 and sum(dup2.values()) <= 2  # -c 2: at most the two running tasks
    assert stranded2 == 0
    assert recovery2 < VISIBILITY_S + 1 + 10  # kombu scans every second here (unacked_restore_* above)
    assert celery2.proc.poll() is None
    assert set(ledger_counts(project)) == set(keys1) | set(keys2)  # nothing unexpected ran


@pytest.mark.slow
def test_r15_a_message_kombu_restored_from_a_dead_rqueue_worker_is_left_to_the_celery_worker_running_it(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rqueue's leases expire after 2 s, Celery's in-flight messages after 15 s. An rqueue worker
    dies holding a 10 s task; a Celery worker restores it after 15 s and runs it; an rqueue worker
    started meanwhile must leave it alone (Celery's 15 s have not passed): it runs once, on Celery,
    and nothing is dead-lettered.

    kombu's restore leaves the dead worker's lease record behind. Before a2aabb7 the second worker's
    sweep trusted it, took the entry after rqueue's 2 s and requeued the first 874 bytes (the original
    envelope's length) of kombu's longer re-serialization: dead-lettered as ``decode_error`` while
    Celery ran it (had Celery died too, that dead letter would have been all that was left of it).
    """
    project = fleet.project
    rqueue_s, celery_s, task_s = 2, 15, 10
    use_config(
        project,
        f"broker_visibility_timeout = {rqueue_s}\nbroker_transport_options = {{'visibility_timeout': {celery_s}}}\n",
        monkeypatch,
    )
    tasks = project.app()
    first = project.start_worker("-c", "1", "-n", "first@%h")
    result = tasks.sleep.delay(task_s, "long")
    first.wait_for_log(f"Task tasks.sleep[{result.id}] received")
    kill_group(first)
    options = {**CELERY_CONF["broker_transport_options"], "visibility_timeout": celery_s}
    celery = CeleryWorker(
        fleet.redis_url,
        QUEUE,
        project.root / "celery.log",
        conf={**CELERY_CONF, "broker_transport_options": options},
        ledger=project.ledger,
    )
    fleet.celery_workers.append(celery)
    celery.wait_ready()
    wait_for(lambda: f"Task tasks.sleep[{result.id}] received" in celery.log_text(), celery_s + 20, "Celery took it")
    leases_left = fleet.client.hlen("rqueue.lease")
    second = project.start_worker("-c", "1", "-n", "second@%h")
    assert result.get(timeout=task_s + 30) == task_s
    time.sleep(SWEEP_S + 1)  # anything the second worker took would have been received by now
    broker = tasks.app.broker
    dead = [(d.reason, d.error) for d in broker.dead_letters(QUEUE)]
    print(
        f"\nR15 [kombu-restored, then run by Celery] runs={project.ledger_count('long')} "
        f"rqueue leases left while Celery ran it={leases_left} dead-lettered={dead}"
    )
    assert project.ledger_count("long") == 1
    assert dead == []
    assert "received" not in second.log_text().split(" ready.", 1)[1]


@pytest.mark.slow
def test_r15_no_rqueue_record_outlives_a_message_kombu_restored_and_celery_acked(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An rqueue worker dies holding messages; a Celery worker restores, runs and acks them. Nothing
    of theirs stays in Redis: kombu removes only its own records, and the dead owner's are never
    visited again through ``unacked_index``, so a live rqueue worker's sweeps tidy them."""
    project, client = fleet.project, fleet.client
    use_config(project, RQUEUE_CONF, monkeypatch)
    tasks = project.app()
    rq = project.start_worker("-c", "1", "--prefetch-multiplier", "4", "-n", "rq@%h")
    results = tasks.sleep.delay_many([(0.5, f"leak-{i}") for i in range(8)])
    wait_for(lambda: len(in_flight(client)) >= 4, 30, "the rqueue worker holds messages")
    kill_group(rq)
    fleet.start_celery("celery")
    assert [r.get(timeout=60) for r in results] == [0.5] * 8
    time.sleep(1)  # Celery acks after it stored the result
    left = stale_records(client)
    project.start_worker("-c", "1", "-n", "rq2@%h")  # its sweeps tidy what nobody else visits
    clean = {"leases": 0, "owned": 0, "deliveries": 0}
    tidied_s = wait_for(lambda: stale_records(client) == clean, 3 * SWEEP_S, "the dead worker's records tidied")
    print(f"\nR15 [rqueue killed, Celery restored and acked] rqueue records left={left}, tidied in {tidied_s:.1f}s")
