"""Signatures, chains and links (callbacks, errbacks) through real workers on SQLite and Redis;
groups, chords and the rest of the canvas are in ``test_canvas_workflows.py``."""

from __future__ import annotations

import json
import time

import pytest

from conftest import Project
from rqueue import Signature, chain, signature
from rqueue.exceptions import DecodeError


def _wait_for(project: Project, key: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while project.ledger_count(key) == 0:
        assert time.monotonic() < deadline, f"{key} never recorded"
        time.sleep(0.05)


def test_signature_is_celerys_dict_and_survives_json(project: Project) -> None:
    tasks = project.app()
    sig = tasks.add.s(2, 2).set(countdown=1)
    assert dict(sig) == {
        "task": "tasks.add",
        "args": (2, 2),
        "kwargs": {},
        "options": {"countdown": 1},
        "subtask_type": None,
        "immutable": False,
    }
    again = signature(json.loads(json.dumps(sig)))
    assert again == signature("tasks.add", args=[2, 2], options={"countdown": 1})
    assert repr(tasks.add.si(1, 2)) == "tasks.add(1, 2)!"
    assert tasks.add.s(2)(3) == 5  # called here, with the arguments put first
    assert tasks.add.si(1, 2).clone((9,)).args == (1, 2)  # immutable: partial arguments ignored
    assert tasks.add.s(2).clone((9,)).args == (9, 2)


def test_signature_malformed_is_a_clear_error() -> None:
    with pytest.raises(DecodeError, match="not a signature"):
        Signature.from_wire({"args": [1]})
    with pytest.raises(DecodeError, match="malformed signature"):
        Signature.from_wire({"task": "tasks.add", "args": "12"})


def test_chain_runs_each_step_with_the_previous_result(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    assert tasks.add.s(2, 2).delay().get(timeout=30) == 4
    result = chain(tasks.add.s(4, 4), tasks.mul.s(8))()
    assert result.get(timeout=30) == 64
    piped = (tasks.add.s(1, 1) | tasks.add.s(1) | tasks.mul.si(5, 5) | tasks.add.s(10)).apply_async()
    assert piped.get(timeout=30) == 35


def test_chain_steps_carry_parent_and_root(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    first = tasks.add.s(1, 1).set(task_id="chain-first")
    result = (first | tasks.lineage.si()).apply_async()
    info = result.get(timeout=30)
    assert info["parent_id"] == "chain-first"
    assert info["root_id"] == "chain-first"


def test_link_sends_the_callback_with_the_result(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    parent = tasks.add.apply_async((2, 3), link=tasks.record.si("linked"))
    assert parent.get(timeout=30) == 5
    _wait_for(project, "linked")


def test_link_error_calls_new_and_old_style_errbacks(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    failing = tasks.fail.apply_async(("no",), link_error=[tasks.on_error.s(), tasks.on_error_id.s()])
    with pytest.raises(Exception, match="no"):
        failing.get(timeout=30)
    _wait_for(project, f"errback-id:{failing.id}")
    assert project.ledger_count(f"errback:{failing.id}:CustomError") == 1


def test_malformed_link_in_a_message_is_dead_lettered(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    bad = tasks.app.send_task("tasks.add", (1, 1), headers=None, link={"task": "tasks.add", "args": "x"})
    worker.wait_for_log(f"Message {bad.id} from queue 'celery' dead-lettered (decode_error)")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
