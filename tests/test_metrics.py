"""``rqueue worker --metrics-port``: one Prometheus endpoint per node, the prefork children added up."""

from __future__ import annotations

import socket
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Project, free_port
from rqueue.exceptions import ConfigurationError
from rqueue.worker.metrics import prometheus


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_prefork_node_reports_its_tasks_once_for_all_children(project: Project) -> None:
    port = free_port()
    worker = project.start_worker("-c", "2", "--hostname", "m1@test", "--metrics-port", str(port))
    tasks = project.app()
    ok = [tasks.add.delay(i, i) for i in range(6)]
    bad = [tasks.fail.delay("boom") for _ in range(2)]
    for r in ok:
        assert r.get(timeout=30) is not None
    for r in bad:
        with pytest.raises(Exception, match="boom"):
            r.get(timeout=30)
    node = ("worker", "m1@test")
    deadline = time.monotonic() + 10
    while True:  # the last result is stored a moment before its hook runs in the child
        samples = scrape(port)
        if value(samples, "rqueue_tasks_total", state="failed", task="tasks.fail", worker=node[1]) == 2:
            break
        assert time.monotonic() < deadline, samples
        time.sleep(0.1)
    add = {"task": "tasks.add", "worker": node[1]}
    assert value(samples, "rqueue_tasks_total", state="received", **add) == 6
    assert value(samples, "rqueue_tasks_total", state="succeeded", **add) == 6
    assert value(samples, "rqueue_task_runtime_seconds_count", **add) == 6
    assert value(samples, "rqueue_task_runtime_seconds_count", task="tasks.fail", worker=node[1]) == 2
    assert value(samples, "rqueue_tasks_active", worker=node[1]) == 0
    assert value(samples, "rqueue_worker_up", worker=node[1]) == 1
    assert value(samples, "rqueue_queue_depth", queue="celery") == 0
    assert time.time() - value(samples, "rqueue_worker_heartbeat_timestamp_seconds", worker=node[1]) < 10

    # A running task is active; messages waiting are counted in the queue's depth.
    tasks.sleep.delay(3)
    for _ in range(4):
        tasks.sleep.delay(3)
    deadline = time.monotonic() + 10
    while value(scrape(port), "rqueue_tasks_active", worker=node[1]) != 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # The other three wait in the queue or prefetched (sampled each second): never both, never lost.
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(port)
        waiting = value(samples, "rqueue_queue_depth", queue="celery")
        if waiting + value(samples, "rqueue_tasks_prefetched", worker=node[1]) == 3:
            break
        assert time.monotonic() < deadline, samples
        time.sleep(0.2)
    worker.stop()
    with pytest.raises(OSError):
        scrape(port)


def test_a_port_in_use_stops_the_worker_with_a_clear_error(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = project.start_worker("-P", "solo", "--metrics-port", str(port), wait_ready=False)
        assert worker.proc.wait(30) != 0
        # With --logfile, what the worker says after its banner goes to the log.
        assert f"cannot serve metrics on 127.0.0.1:{port}" in worker.output() + worker.log_text()


def test_without_prometheus_client_metrics_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError, match=r"rqueue\[metrics\]"):
        prometheus()
