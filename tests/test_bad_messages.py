"""R6: garbage pushed straight into a queue is dead-lettered with its reason; the worker keeps going."""

from __future__ import annotations

import base64
import json
import os
import pickle
import time
import uuid

import pytest

from conftest import Project
from rqueue import _rqueue
from rqueue.exceptions import MessageTooLarge


def envelope(task: str = "tasks.add", **changes: object) -> dict[str, object]:
    """A valid add(1, 2) envelope as JSON, to be spoiled one way or another."""
    raw = _rqueue.encode_task_message(
        task=task, task_id=str(uuid.uuid4()), args=[1, 2], kwargs={}, routing_key="celery"
    )
    data: dict[str, object] = json.loads(raw)
    data.update(changes)
    return data


def garbage() -> dict[str, bytes]:
    """Each bad message, named by the reason it must be dead-lettered with."""
    wrong_type = envelope()
    wrong_type["content-type"] = "application/x-yaml"
    pickled = envelope()
    pickled["content-type"] = "application/x-python-serialize"
    pickled["body"] = base64.b64encode(pickle.dumps([[1, 2], {}, {}])).decode()
    bad_headers = envelope()
    bad_headers["headers"] = {**bad_headers["headers"], "retries": "many"}  # type: ignore[dict-item]
    deep = "[" * 100_000 + "]" * 100_000
    return {
        "decode_error:random": os.urandom(256),
        "decode_error:truncated": json.dumps(envelope()).encode()[:100],
        "content_disallowed:yaml": json.dumps(wrong_type).encode(),
        "content_disallowed:pickle": json.dumps(pickled).encode(),
        "unregistered:ghost": json.dumps(envelope("tasks.ghost")).encode(),
        "too_large:10MiB": json.dumps(envelope(padding="x" * (10 << 20))).encode(),
        "decode_error:deep": deep.encode(),
        "decode_error:headers": json.dumps(bad_headers).encode(),
    }


@pytest.mark.slow
def test_r6_garbage_is_dead_lettered_with_its_reason_and_the_worker_goes_on(project: Project) -> None:
    tasks = project.app()
    broker = tasks.app.broker
    bad = garbage()
    for payload in bad.values():
        broker.publish("celery", payload)
    worker = project.start_worker("-c", "1")
    good = tasks.add.delay(20, 22)
    assert good.get(timeout=60) == 42
    deadline = time.monotonic() + 30
    while len(broker.dead_letters("celery")) < len(bad) and time.monotonic() < deadline:
        time.sleep(0.05)
    reasons = sorted(d.reason for d in broker.dead_letters("celery"))
    assert reasons == sorted(name.split(":")[0] for name in bad)
    assert worker.proc.poll() is None  # alive
    assert tasks.add.delay(1, 1).get(timeout=30) == 2


def test_producer_refuses_a_message_over_the_size_limit_before_any_io(project: Project) -> None:
    tasks = project.app()
    tasks.app.conf.task_max_message_size = 10_000
    with pytest.raises(MessageTooLarge, match="exceeds the maximum of 10000 bytes"):
        tasks.add.delay("x" * 20_000, "y")
    assert tasks.app.broker.queue_length("celery") == 0


def test_msgpack_map_key_python_cannot_hash_is_dead_lettered_and_the_child_lives(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by R9 (tests/native/test_malformed.py): it used to raise TypeError and kill the child."""
    (project.root / "withmsgpack.py").write_text("accept_content = ['json', 'msgpack']\n")
    monkeypatch.setenv("TEST_CONFIG_MODULE", "withmsgpack")
    tasks = project.app()
    broker = tasks.app.broker
    envelope = json.loads(
        _rqueue.encode_task_message(
            task="tasks.add", task_id=str(uuid.uuid4()), args=[1], kwargs={}, routing_key="celery", serializer="msgpack"
        )
    )
    envelope["body"] = base64.b64encode(b"\x93\x90\x81\x90\x00\x80").decode()  # [[], {[]: 0}, {}]
    worker = project.start_worker("-c", "1")
    (child,) = worker.child_pids()
    broker.publish("celery", json.dumps(envelope).encode())
    assert tasks.add.delay(2, 3).get(timeout=30) == 5
    deadline = time.monotonic() + 30
    while not broker.dead_letters("celery") and time.monotonic() < deadline:
        time.sleep(0.05)
    (dead,) = broker.dead_letters("celery")
    assert dead.reason == "decode_error" and "cannot be a Python dict key" in (dead.error or "")
    assert worker.child_pids() == [child]


def test_newlines_and_escapes_in_a_message_cannot_forge_log_or_cli_lines(project: Project) -> None:
    """A task id and name are the sender's text: a newline or an ANSI escape in them is written
    escaped, on one line, in the worker log and in ``rqueue dlq list``/``show``."""
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    forged = "\n[2026-01-01 00:00:00,000: INFO/MainProcess] Task tasks.add[x] succeeded in 0.1s: 3"
    evil_id = f"id{forged}\x1b[2J"
    tasks.app.send_task(f"no.such{forged}", (1, 2), task_id=evil_id)
    worker.wait_for_log("Received unregistered task no.such")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    log = worker.log_text()
    assert "\x1b" not in log
    assert not any(line.startswith("[2026-01-01") for line in log.splitlines())
    assert "id\\n[2026-01-01 00:00:00,000: INFO/MainProcess]" in log  # still there, escaped
    listed = project.run_cli("-A", "tasks", "dlq", "list")
    assert listed.returncode == 0 and "\x1b" not in listed.stdout
    rows = [line for line in listed.stdout.splitlines() if line.strip()]
    assert len(rows) == 1 and "\\n[2026-01-01" in rows[0]
    shown = project.run_cli("-A", "tasks", "dlq", "show", rows[0].split("\t")[0])
    assert shown.returncode == 0 and "\x1b" not in shown.stdout
    assert not any(line.startswith("[2026-01-01") for line in shown.stdout.splitlines())
