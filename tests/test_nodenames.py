"""Celery's ``%`` expansions in ``-n``, ``--logfile`` and ``--pidfile`` (``rqueue.nodenames``)."""

from __future__ import annotations

import socket

import pytest

from conftest import Project
from rqueue.exceptions import ConfigurationError
from rqueue.nodenames import current_process_index, has_process_index, host_format, node_format


def test_node_format_expands_node_name_host_and_process_index() -> None:
    assert node_format("%p.pid", "w1@box.example.com") == "w1@box.example.com.pid"
    assert node_format("%n-%h-%d.log", "w1@box.example.com") == "w1-box.example.com-example.com.log"
    assert node_format("%n%I.log", "w1@box", index=0) == "w1.log"
    assert node_format("%n%I.log", "w1@box", index=2) == "w1-2.log"
    assert node_format("%n-%i.log", "w1@box", index=0) == "w1-0.log"
    assert node_format("%n-%i.log", "w1@box", index=3) == "w1-3.log"
    assert node_format("100%%-%%i.log", "w1@box") == "100%-%i.log"


def test_process_index_is_zero_outside_a_prefork_child() -> None:
    assert current_process_index() == 0
    assert node_format("%i", "w1@box") == "0"


def test_has_process_index() -> None:
    assert has_process_index("w%i.log") and has_process_index("w%I.log")
    assert not has_process_index("w%%i.log") and not has_process_index("%n.log")


def test_host_format_keeps_celerys_node_name_expansions() -> None:
    host = socket.gethostname()
    assert host_format("w1@%h") == f"w1@{host}"
    assert host_format("w%i@%n") == f"w0@{host.partition('.')[0]}"  # the main process, as Celery


def test_unknown_expansion_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"--pidfile 'w%x\.pid': unknown expansion %x \(known: "):
        node_format("w%x.pid", "w1@box", what="--pidfile")
    with pytest.raises(ConfigurationError, match="unknown expansion %p"):
        host_format("%p@box")  # the node name cannot name itself


def test_bad_node_name_expansion_is_a_usage_error(project: Project) -> None:
    done = project.run_cli("-A", "tasks", "worker", "-n", "w%z@%h")
    assert done.returncode == 2 and "Error: -n 'w%z@%h': unknown expansion %z" in done.stderr


def test_logfile_with_process_index_gives_each_prefork_child_its_own(project: Project) -> None:
    tasks = project.app()
    root = project.root
    worker = project.start_worker(
        "-c", "2", "-n", "ix@test", "--logfile", str(root / "%n%I.log"), "--pidfile", str(root / "%p-%i.pid"),
        wait_ready=False,
    )  # fmt: skip
    worker.log = root / "ix.log"  # the main process's (index 0: no suffix with %I)
    worker.wait_for_log("ix@test ready.")
    assert (root / "ix@test-0.pid").read_text().strip() == str(worker.proc.pid)
    results = [tasks.add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]
    children = [(root / f"ix-{index}.log") for index in (1, 2)]
    assert all(path.exists() for path in children)
    ran = "".join(path.read_text() for path in children)
    assert ran.count("succeeded in") == 20 and "ForkPoolWorker" in ran
    assert "succeeded in" not in worker.log_text()
    worker.stop()
    assert not (root / "ix@test-0.pid").exists()
