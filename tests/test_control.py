"""Remote control and inspect against real workers, on SQLite (mailbox table), Redis and RabbitMQ (pidbox)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import Project, RedisServer
from rqueue.exceptions import TaskRevokedError


def _json(done: object) -> dict[str, object]:
    out = getattr(done, "stdout", "")
    assert getattr(done, "returncode", None) == 0, f"{out}\n{getattr(done, 'stderr', '')}"
    result: dict[str, object] = json.loads(out)
    return result


def test_inspect_ping_registered_stats_and_conf(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "2", "-n", "w1@test")
    assert [tasks.add.delay(i, i).get(timeout=30) for i in range(3)] == [0, 2, 4]

    ping = project.run_cli("-A", "tasks", "inspect", "ping")
    assert ping.returncode == 0, ping.stderr
    assert "-> w1@test: OK\n    pong\n" in ping.stdout
    assert "1 node online." in ping.stdout

    registered = _json(project.run_cli("-A", "tasks", "inspect", "registered", "--json"))
    assert "tasks.add" in registered["w1@test"]  # type: ignore[operator]

    stats = _json(project.run_cli("-A", "tasks", "inspect", "stats", "--json"))["w1@test"]
    assert isinstance(stats, dict)
    assert stats["pid"] == worker.proc.pid
    assert stats["total"] == {"tasks.add": 3}
    assert stats["pool"]["max-concurrency"] == 2
    assert sorted(stats["pool"]["processes"]) == sorted(worker.child_pids())
    assert stats["prefetch_count"] == 8
    assert stats["uptime"] > 0
    assert set(stats["rss_kib"]) == {str(p) for p in [worker.proc.pid, *worker.child_pids()]}
    assert stats["broker"]["transport"].startswith(project.broker_url.split(":")[0])

    conf = _json(project.run_cli("-A", "tasks", "inspect", "conf", "--json"))["w1@test"]
    assert isinstance(conf, dict)
    assert conf["broker_url"] == project.broker_url

    queues = _json(project.run_cli("-A", "tasks", "inspect", "active_queues", "--json"))["w1@test"]
    assert [q["name"] for q in queues] == ["celery"]  # type: ignore[union-attr, index]


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_inspect_active_and_reserved_from_python(project: Project, pool: str) -> None:
    tasks = project.app()
    project.start_worker("-c", "1", "-P", pool, "--prefetch-multiplier", "4", "-n", "w1@test")
    running = tasks.sleep.delay(4, "slow")
    waiting = [tasks.add.delay(i, 1) for i in range(2)]
    inspect = tasks.app.control.inspect(destination=["w1@test"], timeout=5.0)  # returns at its reply
    deadline = time.monotonic() + 20
    active: dict[str, list[dict[str, object]]] | None = None
    while time.monotonic() < deadline:
        active = inspect.active()
        if active and active["w1@test"]:
            break
        time.sleep(0.1)
    assert active is not None
    [task] = active["w1@test"]
    assert task["id"] == running.id
    assert task["name"] == "tasks.sleep"
    assert task["args"] == "[4, 'slow']"
    assert isinstance(task["time_start"], float) and task["time_start"] <= time.time()
    assert task["worker_pid"] != 0
    reserved = inspect.reserved()
    while time.monotonic() < deadline and reserved is not None and len(reserved["w1@test"]) < len(waiting):
        time.sleep(0.1)  # prefetching is asynchronous: the transport fetches while the task runs
        reserved = inspect.reserved()
    assert reserved is not None
    assert sorted(r["id"] for r in reserved["w1@test"]) == sorted(r.id for r in waiting)
    assert all(r["name"] == "tasks.add" for r in reserved["w1@test"])
    assert [r.get(timeout=30) for r in waiting] == [1, 2]


def test_destination_addresses_one_of_two_workers(broker_project: Project) -> None:
    broker_project.start_worker("-c", "1", "-n", "w1@test")
    broker_project.start_worker("-c", "1", "-P", "threads", "-n", "w2@test")
    both = broker_project.run_cli("-A", "tasks", "inspect", "ping")
    assert "-> w1@test: OK" in both.stdout and "-> w2@test: OK" in both.stdout
    assert "2 nodes online." in both.stdout

    one = broker_project.run_cli("-A", "tasks", "inspect", "ping", "--destination", "w2@test")
    assert one.returncode == 0, one.stderr
    assert "-> w2@test: OK" in one.stdout and "w1@test" not in one.stdout

    tasks = broker_project.app()
    replies = tasks.app.control.ping(destination=["w1@test"])
    assert replies == [{"w1@test": {"ok": "pong"}}]


def test_no_worker_replied_is_an_error(broker_project: Project) -> None:
    done = broker_project.run_cli("-A", "tasks", "inspect", "ping", "--timeout", "0.3")
    assert done.returncode == 1
    assert "No workers replied within 0.3 s" in done.stderr
    done = broker_project.run_cli("-A", "tasks", "control", "rate_limit", "tasks.add", "10/m", "-t", "0.3")
    assert done.returncode == 1
    assert "No workers replied within 0.3 s" in done.stderr
    tasks = broker_project.app()
    assert tasks.app.control.inspect(timeout=0.2).ping() is None


def test_add_and_cancel_consumer(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1", "-n", "w1@test")
    elsewhere = tasks.add.apply_async((20, 1), queue="extra")
    time.sleep(0.5)
    assert elsewhere.state == "PENDING"

    added = project.run_cli("-A", "tasks", "control", "add_consumer", "extra")
    assert added.returncode == 0, added.stderr
    assert "-> w1@test: OK\n    add consumer extra" in added.stdout
    assert elsewhere.get(timeout=30) == 21
    queues = _json(project.run_cli("-A", "tasks", "inspect", "active_queues", "--json"))["w1@test"]
    assert sorted(q["name"] for q in queues) == ["celery", "extra"]  # type: ignore[union-attr, index]

    cancelled = project.run_cli("-A", "tasks", "control", "cancel_consumer", "extra")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "no longer consuming from extra" in cancelled.stdout
    later = tasks.add.apply_async((30, 1), queue="extra")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    time.sleep(0.5)
    assert later.state == "PENDING"

    last = project.run_cli("-A", "tasks", "control", "cancel_consumer", "celery")
    assert last.returncode == 1
    assert "-> w1@test: ERROR" in last.stdout and "only queue" in last.stdout
    unknown = project.run_cli("-A", "tasks", "control", "cancel_consumer", "nope")
    assert unknown.returncode == 1 and "not consuming from 'nope'" in unknown.stdout


def test_revoke_broadcast_reaches_workers_at_once(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1", "-n", "w1@test")
    busy = tasks.sleep.delay(1.5)
    doomed = tasks.record.delay("doomed")
    done = project.run_cli("-A", "tasks", "control", "revoke", doomed.id)
    assert done.returncode == 0, done.stderr
    assert f"tasks {doomed.id} flagged as revoked" in done.stdout
    with pytest.raises(TaskRevokedError):
        doomed.get(timeout=30)
    assert busy.get(timeout=30) == 1.5
    assert project.ledger_count("doomed") == 0
    revoked = _json(project.run_cli("-A", "tasks", "inspect", "revoked", "--json"))["w1@test"]
    assert doomed.id in revoked  # type: ignore[operator]


def test_terminate_in_a_threads_pool_is_an_error_reply(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1", "-P", "threads", "-n", "w1@test")
    running = tasks.sleep.delay(2)
    time.sleep(0.5)
    done = project.run_cli("-A", "tasks", "control", "revoke", running.id, "--terminate")
    assert done.returncode == 1
    assert "-> w1@test: ERROR" in done.stdout and "cannot terminate" in done.stdout
    assert running.get(timeout=30) == 2  # it could not be stopped; it was flagged (not run again)


def test_control_errors_are_replies_and_the_worker_lives_on(broker_project: Project) -> None:
    broker_project.start_worker("-c", "1", "-n", "w1@test")
    unknown = broker_project.run_cli("-A", "tasks", "control", "rate_limit", "tasks.nope", "1/s")
    assert unknown.returncode == 1
    assert "-> w1@test: ERROR\n    unknown task 'tasks.nope'" in unknown.stdout
    bad_limit = broker_project.run_cli("-A", "tasks", "control", "time_limit", "tasks.add", "5", "2")
    assert bad_limit.returncode == 1 and "must be below the hard one" in bad_limit.stdout

    tasks = broker_project.app()
    mailbox = tasks.app.broker.mailbox()
    mailbox.broadcast({"method": "no_such_command", "arguments": {}}, 1.0)  # type: ignore[arg-type]
    replies = tasks.app.control.broadcast("no_such_command", reply=True)
    assert replies == [{"w1@test": {"error": "unknown command 'no_such_command'"}}]
    _post_garbage(broker_project, tasks.app)
    for odd in ({"method": "ping", "pattern": "(", "matcher": "pcre"}, {"method": "ping", "destination": 5}):
        mailbox.broadcast(odd, 1.0)  # a bad regex, a destination that is not a list
    assert tasks.app.control.ping() == [{"w1@test": {"ok": "pong"}}]
    assert tasks.add.delay(2, 2).get(timeout=30) == 4


def _post_garbage(project: Project, app: object) -> None:
    """What someone else may post where commands arrive: not JSON, JSON of the wrong shape."""
    broker = app.broker  # type: ignore[attr-defined]
    if project.kind in ("sqlite", "postgres"):
        for body in (b"\xff not json", b"[1, 2]", b'{"method": 5}'):
            broker.native.mailbox_post("pidbox", body, int(time.time() * 1000) + 10_000)
    elif project.kind == "amqp":
        for body in (b"\xff not json", b"[1, 2]", b'{"method": 5}'):
            broker.native.publish_transient("celery.pidbox", "", body, "{}")
    else:
        channel = broker.mailbox()._channel
        for body in (b"\xff not json", b'{"body": "!!", "properties": {"body_encoding": "base64"}}', b"[1]"):
            broker.client.publish(channel, body)


def test_shutdown_stops_the_worker_warmly(broker_project: Project) -> None:
    tasks = broker_project.app()
    worker = broker_project.start_worker("-c", "1", "-n", "w1@test")
    running = tasks.sleep.delay(1)
    time.sleep(0.3)
    done = broker_project.run_cli("-A", "tasks", "control", "shutdown")
    assert done.returncode == 0, done.stderr
    assert "-> w1@test: OK\n    shutdown signal sent" in done.stdout
    assert worker.proc.wait(30) == 0
    assert running.get(timeout=5) == 1


def _wait_for_ledger(project: Project, key: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while project.ledger_count(key) == 0:
        assert time.monotonic() < deadline, f"{key} never started"
        time.sleep(0.05)


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_revoke_terminate_stops_a_running_task(project: Project, signal_name: str) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1", "-n", "w1@test")
    running = tasks.slow.delay(60, "victim")
    _wait_for_ledger(project, "victim")
    done = project.run_cli("-A", "tasks", "control", "revoke", running.id, "--terminate", "--signal", signal_name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"terminated: {running.id}" in done.stdout
    with pytest.raises(TaskRevokedError, match="terminated"):
        running.get(timeout=30)
    assert running.state == "REVOKED"
    assert tasks.add.delay(1, 1).get(timeout=30) == 2  # the node goes on (a new child after SIGKILL)
    assert project.ledger_count("victim") == 1  # acked: never run again
    assert f"Terminating task tasks.slow[{running.id}]" in worker.log_text()
    idle = project.run_cli("-A", "tasks", "control", "revoke", "no-such-task", "--terminate")
    assert "terminated: none running" in idle.stdout


def test_control_time_limit_applies_to_the_next_tasks(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1", "-n", "w1@test")
    done = project.run_cli("-A", "tasks", "control", "time_limit", "tasks.stubborn", "0.3", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "-> w1@test: OK\n    time limits set successfully" in done.stdout
    limited = tasks.stubborn.delay(30, "limited")  # swallows the soft limit: the hard one kills it
    with pytest.raises(Exception) as raised:
        limited.get(timeout=30)
    assert type(raised.value).__name__ == "TimeLimitExceeded"
    worker.wait_for_log(f"Hard time limit (1s) exceeded for tasks.stubborn[{limited.id}]")
    assert tasks.add.delay(2, 2).get(timeout=30) == 4


@pytest.mark.redis
def test_a_broker_outage_is_logged_once_when_it_starts_and_once_when_it_ends(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    (tmp_path / "project").mkdir()
    server = RedisServer(tmp_path / "redis")
    project = Project(tmp_path / "project", "redis", server.url)
    try:
        worker = project.start_worker("-c", "1", "-n", "w1@test")
        server.stop()
        time.sleep(3.5)  # remote control tries to listen again every second meanwhile
        server.start()
        worker.wait_for_log("Remote control is listening again", timeout=30)
        log = worker.log_text()
        assert log.count("Remote control lost the broker") == 1, log
        assert "still unreachable" not in log, log  # said again only after a minute
        assert project.app().app.control.ping(destination=["w1@test"]) == [{"w1@test": {"ok": "pong"}}]
        # Its connections the old server dropped are reopened, e.g. to return the child's leases.
        assert worker.stop() == 0
        assert "ERROR" not in worker.log_text(), worker.log_text()
    finally:
        project.close()
        server.stop()
