"""Celery's events from real rqueue workers (CLI subprocesses), read with rqueue's receiver, on
SQLite, Redis and RabbitMQ; switched by ``-E`` and the control commands; printed by
``rqueue events --dump``; malformed payloads and bad control arguments handled."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest

from conftest import Project
from rqueue import App
from rqueue.events import EventDispatcher, EventReceiver, MalformedEvent, decode_events


def collect(receiver: EventReceiver, until: Any, timeout: float = 20) -> list[dict[str, Any]]:
    """Events received until ``until(events)`` holds (AssertionError with what came otherwise)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not until(events):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s; received: {[e['type'] for e in events]}")
        events.extend(receiver.poll(0.2))
    return events


def of(events: list[dict[str, Any]], kind: str, task_id: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind and (task_id is None or e.get("uuid") == task_id)]


COMMON = {"type", "hostname", "timestamp", "utcoffset", "pid", "clock", "local_received"}


def test_events_worker_and_task_events_on_each_broker(broker_project: Project) -> None:
    tasks = broker_project.app()
    with EventReceiver(tasks.app, wakeup=False) as receiver:
        worker = broker_project.start_worker("-E", "-c", "1", "-n", "ev@test")
        ok, bad = tasks.add.delay(2, 3), tasks.fail.delay("boom")
        events = collect(receiver, lambda ev: of(ev, "task-succeeded", ok.id) and of(ev, "task-failed", bad.id))
        worker.stop()
        events += collect(receiver, lambda ev: of(ev, "worker-offline"), timeout=10)

    online = of(events, "worker-online")[0]
    assert online["hostname"] == "ev@test"
    assert online["pid"] == worker.proc.pid
    assert online["freq"] == 2.0
    assert {"active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"} <= online.keys()
    assert online.keys() >= COMMON

    received = of(events, "task-received", ok.id)[0]
    assert received["name"] == "tasks.add"
    assert received["args"] == "(2, 3)"
    assert received["pid"] == worker.proc.pid  # the node's pid, though a child ran it
    assert of(events, "task-started", ok.id)
    succeeded = of(events, "task-succeeded", ok.id)[0]
    assert succeeded["result"] == "5"
    assert 0 <= succeeded["runtime"] < 5
    failed = of(events, "task-failed", bad.id)[0]
    assert "boom" in failed["exception"]
    assert "Traceback" in failed["traceback"]
    assert failed.keys() >= COMMON
    assert of(events, "worker-offline")[0]["hostname"] == "ev@test"


@pytest.mark.redis
def test_events_heartbeats_without_task_events_and_switched_by_control(tmp_path: Any, redis_url: str) -> None:
    project = Project(tmp_path, "redis", redis_url)
    try:
        tasks = project.app()
        project.start_worker("-P", "threads", "-c", "2", "-n", "quiet@test")
        with EventReceiver(tasks.app) as receiver:  # its wakeup asks for a heartbeat at once
            first = tasks.add.delay(1, 1)
            assert first.get(timeout=10) == 2
            events = collect(receiver, lambda ev: of(ev, "worker-heartbeat"), timeout=5)
            assert not [e for e in events if e["type"].startswith("task-")]

            enabled = project.run_cli("-A", "tasks", "control", "enable_events")
            assert enabled.returncode == 0, enabled.stderr
            assert "task events enabled" in enabled.stdout
            again = tasks.app.control.broadcast("enable_events", reply=True, timeout=5, limit=1)
            assert again == [{"quiet@test": {"ok": "task events already enabled"}}]
            second = tasks.add.delay(2, 2)
            events = collect(receiver, lambda ev: of(ev, "task-succeeded", second.id))
            assert of(events, "task-received", second.id)

            off = tasks.app.control.broadcast("disable_events", reply=True, timeout=5, limit=1)
            assert off == [{"quiet@test": {"ok": "task events disabled"}}]
            third = tasks.add.delay(3, 3)
            assert third.get(timeout=10) == 6
            time.sleep(0.5)
            assert not [e for e in receiver.poll(0.3) if e.get("uuid") == third.id]
    finally:
        project.close()


@pytest.mark.redis
def test_events_control_commands_refuse_unknown_arguments(tmp_path: Any, redis_url: str) -> None:
    project = Project(tmp_path, "redis", redis_url)
    try:
        tasks = project.app()
        project.start_worker("-P", "solo", "-n", "strict@test")
        replies = tasks.app.control.broadcast("enable_events", {"groups": ["task"]}, reply=True, timeout=5, limit=1)
        assert replies == [{"strict@test": {"error": "enable_events takes no arguments, got groups"}}]
        beat = tasks.app.control.broadcast("heartbeat", reply=True, timeout=5, limit=1)
        assert beat == [{"strict@test": {"ok": "heartbeat sent"}}]
        assert tasks.add.delay(1, 2).get(timeout=10) == 3  # the node goes on
    finally:
        project.close()


@pytest.mark.redis
def test_events_dump_prints_one_line_per_event(tmp_path: Any, redis_url: str) -> None:
    project = Project(tmp_path, "redis", redis_url)
    try:
        tasks = project.app()
        project.start_worker("-E", "-P", "solo", "-n", "dump@test")
        import subprocess

        from conftest import rqueue_cmd

        dump = subprocess.Popen(
            [*rqueue_cmd(), "-A", "tasks", "events", "--dump", "--timeout", "4"],
            cwd=project.root,
            env=project.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)  # subscribed by then
        result = tasks.add.delay(20, 22)
        assert result.get(timeout=10) == 42
        out, err = dump.communicate(timeout=20)
        assert dump.returncode == 0, err
        assert "dump@test" in out
        assert "heartbeat: active=" in out
        assert f"task succeeded: tasks.add({result.id}) args=(20, 22) kwargs={{}}" in out
        assert "result=42" in out
    finally:
        project.close()


@pytest.mark.redis
def test_events_task_sent_by_a_producer_with_task_send_sent_event(redis_url: str) -> None:
    app = App("producer", broker=redis_url, backend=redis_url)
    with EventReceiver(app, wakeup=False) as receiver:
        app.conf.task_send_sent_event = True
        result = app.send_task("tasks.add", (1, 2), queue="elsewhere", countdown=60)
        many = app.send_many("tasks.add", [((5, 6), {}), ((7, 8), {"z": 1})])
        app.conf.task_send_sent_event = False
        quiet = app.send_task("tasks.add", (3, 4))
        events = collect(receiver, lambda ev: len(of(ev, "task-sent")) >= 3, timeout=5)
        time.sleep(0.2)
        events += receiver.poll(0.2)
    sent = of(events, "task-sent")
    assert [e["uuid"] for e in sent] == [result.id, *(r.id for r in many)]
    assert [e["args"] for e in sent[1:]] == ["(5, 6)", "(7, 8)"]
    assert sent[2]["kwargs"] == "{'z': 1}"
    assert quiet.id not in {e.get("uuid") for e in events}
    event = sent[0]
    assert event["hostname"] == app.origin
    assert (event["name"], event["args"], event["kwargs"], event["queue"]) == ("tasks.add", "(1, 2)", "{}", "elsewhere")
    assert event["eta"] is not None and event["eta"].endswith(("Z", "+00:00"))
    assert event["retries"] == 0


@pytest.mark.redis
def test_events_receiver_skips_malformed_payloads_and_keeps_the_rest(redis_url: str) -> None:
    app = App("monitor", broker=redis_url)
    seen: list[MalformedEvent] = []
    with EventReceiver(app, wakeup=False, on_malformed=seen.append) as receiver:
        channel = app.broker.fanout_channel("celeryev")  # type: ignore[attr-defined]
        client = app.broker.client  # type: ignore[attr-defined]
        client.publish(f"{channel}/task.multi", b"not json at all")
        good = {"type": "task-started", "uuid": "u1", "hostname": "x@y", "timestamp": 1.0, "clock": 1}
        batch = [good, 42, {"no": "type"}, {**good, "uuid": "u2"}]
        envelope = {
            "body": base64.b64encode(json.dumps(batch).encode()).decode(),
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": {},
            "properties": {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
        }
        client.publish(f"{channel}/task.multi", json.dumps(envelope))
        EventDispatcher(app.broker, "x@y").send("worker-heartbeat", freq=2.0)
        events = collect(receiver, lambda ev: of(ev, "worker-heartbeat"), timeout=5)
    assert [e.get("uuid") for e in of(events, "task-started")] == ["u1", "u2"]
    assert receiver.malformed == 3
    reasons = " | ".join(str(m) for m in seen)
    assert "not a kombu message" in reasons
    assert "must be a JSON object, got int" in reasons
    assert "non-empty string 'type'" in reasons


def test_events_decode_events_reports_each_bad_item() -> None:
    events, bad = decode_events(b'[{"type": "task-sent", "uuid": "a"}, [], {"type": ""}]', received=5.0)
    assert events == [{"type": "task-sent", "uuid": "a", "local_received": 5.0}]
    assert [b.reason for b in bad] == [
        "an event must be a JSON object, got list",
        "an event must have a non-empty string 'type'",
    ]
    events, bad = decode_events(b"\xff\xfe")
    assert events == [] and bad[0].reason.startswith("not JSON")


def test_events_dispatcher_drops_only_unserializable_events(tmp_path: Any) -> None:
    app = App("t", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}")
    with EventReceiver(app, wakeup=False) as receiver:
        dispatcher = EventDispatcher(app.broker, "n@h", background=True)
        dispatcher.send("task-started", uuid="ok-1")
        dispatcher.send("task-started", uuid="bad", result=object())
        dispatcher.send("task-started", uuid="ok-2")
        dispatcher.close()
        events = collect(receiver, lambda ev: len(ev) >= 2, timeout=5)
    assert [e["uuid"] for e in events] == ["ok-1", "ok-2"]
    assert (dispatcher.sent, dispatcher.dropped) == (2, 1)


class _AwayChannel:
    """An event channel whose broker is away: every publish fails, and is counted."""

    def __init__(self) -> None:
        self.tries = 0

    def publish(self, routing_key: str, body: bytes, hostname: str) -> None:
        from rqueue.exceptions import BrokerError

        self.tries += 1
        raise BrokerError("Redis broker redis://example:6379/0: connection refused")

    def close(self) -> None:
        pass


def test_events_a_synchronous_dispatcher_does_not_retry_at_every_event_while_the_broker_is_away() -> None:
    channel = _AwayChannel()

    class Away:
        def events(self) -> _AwayChannel:
            return channel

    dispatcher = EventDispatcher(Away(), "n@h")  # type: ignore[arg-type]
    for _ in range(3):  # a heartbeat every 2 s must not wait on the broker each time
        dispatcher.send("worker-heartbeat", freq=2.0)
    assert channel.tries == 1
    assert (dispatcher.sent, len(dispatcher._pending)) == (0, 3)  # kept for when it is back
