"""The dashboard's bookkeeping (``rqueue.dashboard.state``) with a clock the test moves."""

from __future__ import annotations

from typing import Any

import pytest

from rqueue.dashboard.state import BUCKET_S, FAILURES_KEPT, WINDOW_S, ClusterState


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> ClusterState:
    return ClusterState(clock)


def heartbeat(hostname: str = "w1@h", **fields: Any) -> dict[str, Any]:
    return {"type": "worker-heartbeat", "hostname": hostname, "freq": 2.0, "active": 1, "processed": 5, **fields}


def worker(state: ClusterState, hostname: str = "w1@h") -> dict[str, Any]:
    (view,) = [w for w in state.snapshot()["workers"] if w["hostname"] == hostname]
    return view


def test_a_worker_is_online_while_heartbeats_come_and_offline_after_two_missed(
    state: ClusterState, clock: Clock
) -> None:
    state.apply(heartbeat(loadavg=[0.5, 0.25, 0.1], pid=42, sw_ident="rqueue", sw_ver="1.0"))
    view = worker(state)
    assert view["online"] and view["active"] == 1 and view["processed"] == 5
    assert view["loadavg"] == [0.5, 0.25, 0.1] and view["pid"] == 42 and view["software"] == "rqueue 1.0"
    clock.now += 4.5  # two intervals and the allowance
    assert worker(state)["online"]
    clock.now += 1.0
    assert not worker(state)["online"] and worker(state)["heartbeat_age_s"] == 5.5
    state.apply(heartbeat())
    assert worker(state)["online"]
    state.apply({"type": "worker-offline", "hostname": "w1@h"})
    assert not worker(state)["online"]


def test_task_events_are_counted_by_the_name_only_task_received_carries(state: ClusterState) -> None:
    state.apply(heartbeat())
    state.apply({"type": "task-received", "uuid": "a", "name": "tasks.add", "hostname": "w1@h"})
    assert worker(state)["prefetched"] == 1
    state.apply({"type": "task-started", "uuid": "a", "hostname": "w1@h"})
    assert worker(state)["prefetched"] == 0
    state.apply({"type": "task-succeeded", "uuid": "a", "hostname": "w1@h", "runtime": 0.02, "result": "4"})
    state.apply({"type": "task-received", "uuid": "b", "name": "tasks.fail", "hostname": "w1@h"})
    state.apply({"type": "task-failed", "uuid": "b", "hostname": "w1@h", "exception": "KeyError('x')",
                 "traceback": "Traceback ...", "timestamp": 1.5, "runtime": 0.5})  # fmt: skip
    state.apply({"type": "task-succeeded", "uuid": "never-received"})
    snap = state.snapshot()
    assert snap["tasks"] == {
        "tasks.add": {"received": 1, "started": 1, "succeeded": 1},
        "tasks.fail": {"received": 1, "failed": 1},
        "(unknown)": {"succeeded": 1},
    }
    assert snap["runtimes"]["tasks.add"]["total"] == 1 and snap["runtimes"]["tasks.fail"]["sum_s"] == 0.5
    (failure,) = snap["failures"]
    assert failure == {
        "uuid": "b",
        "name": "tasks.fail",
        "hostname": "w1@h",
        "timestamp": 1.5,
        "exception": "KeyError('x')",
        "traceback": "Traceback ...",
    }


def test_throughput_is_per_second_in_buckets_over_the_window(state: ClusterState, clock: Clock) -> None:
    clock.now = 1_800_000_000.0  # a bucket boundary
    for i in range(30):
        state.apply({"type": "task-succeeded", "uuid": str(i)})
    for i in range(10):
        state.apply({"type": "task-failed", "uuid": f"f{i}"})
    clock.now += BUCKET_S
    series = state.snapshot()["throughput"]
    assert len(series) == WINDOW_S // BUCKET_S
    assert series[-2] == [1_800_000_000, 3.0, 1.0] and series[-1][1:] == [0.0, 0.0]
    clock.now += WINDOW_S
    state.apply({"type": "task-succeeded", "uuid": "late"})
    assert all(point[1] == 0 for point in state.snapshot()["throughput"][:-1])
    assert 1_800_000_000 not in state.throughput  # old buckets are dropped, not kept forever


def test_queue_depths_chart_and_net_rate(state: ClusterState, clock: Clock) -> None:
    state.sample_queues({"celery": 100})
    clock.now += 10
    state.sample_queues({"celery": 80, "other": 3})
    queues = state.snapshot(extra_queues=["empty"])["queues"]
    assert queues["celery"]["depth"] == 80 and queues["celery"]["net_per_s"] == -2.0
    assert len(queues["celery"]["samples"]) == 2
    assert queues["other"]["net_per_s"] is None and queues["empty"] == {"depth": None, "samples": [], "net_per_s": None}
    clock.now += WINDOW_S + 1
    state.sample_queues({"celery": 0})
    assert len(state.snapshot()["queues"]["celery"]["samples"]) == 1


def test_memory_comes_from_inspect_stats_of_rqueue_and_celery_workers(state: ClusterState) -> None:
    state.apply(heartbeat("r@h"))
    state.apply(heartbeat("c@h"))
    state.worker_stats(
        {
            "r@h": {"rss_kib": {"1": 1000, "2": 2000}},
            "c@h": {"rusage": {"maxrss": 4096}},
            "unknown@h": {"rss_kib": {"1": 1}},
            "bad@h": "not a dict",
        }
    )
    assert worker(state, "r@h")["rss_kib"] == 3000 and worker(state, "c@h")["rss_kib"] == 4096


@pytest.mark.parametrize(
    "event",
    [
        {"no": "type"},
        {"type": 7},
        {"type": "worker-heartbeat"},  # no hostname
        {"type": "worker-heartbeat", "hostname": "x", "active": "many"},
        {"type": "task-succeeded", "uuid": "a", "runtime": "slow"},
    ],
)
def test_a_malformed_event_is_counted_and_changes_nothing_else(state: ClusterState, event: dict[str, Any]) -> None:
    state.apply({"type": "task-received", "uuid": "a", "name": "t"})
    state.apply(event)
    snap = state.snapshot()
    assert snap["malformed_events"] == 1
    assert snap["tasks"] == {"t": {"received": 1}} and not snap["failures"] and not snap["workers"]


def test_failures_keep_the_newest(state: ClusterState) -> None:
    for i in range(FAILURES_KEPT + 5):
        state.apply({"type": "task-failed", "uuid": str(i), "exception": "E"})
    failures = state.snapshot()["failures"]
    assert len(failures) == FAILURES_KEPT and failures[0]["uuid"] == str(FAILURES_KEPT + 4)
