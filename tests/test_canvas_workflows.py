"""Groups, chords, chunks, map/starmap, replace and result links through real workers, on SQLite
and Redis; random workflow trees checked against the same tree evaluated in plain Python."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Project
from rqueue import GroupResult, ResultSet, Signature, chain, chord, group, signature
from rqueue.exceptions import ChordError, ConfigurationError, DecodeError


def test_next_steps_examples_as_written(project: Project) -> None:
    """The walkthrough's "Next Steps" snippet, line for line."""
    tasks = project.app()
    add, mul, xsum = tasks.add, tasks.mul, tasks.xsum
    project.start_worker("-c", "2")
    assert add.s(2, 2).delay().get(timeout=30) == 4
    assert chain(add.s(4, 4) | mul.s(8))().get(timeout=30) == 64
    assert group(add.s(i, i) for i in range(10))().get(timeout=30) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert chord((add.s(i, i) for i in range(10)), xsum.s())().get(timeout=30) == 90


def test_group_runs_every_member_and_lists_their_values_in_order(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "2")
    result = group(tasks.add.s(i, i) for i in range(10))()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=30) == [i + i for i in range(10)]
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 10
    assert len(result) == 10 and all(r.get(timeout=1) == i + i for i, r in enumerate(result))


def test_group_with_partial_arguments_nested_groups_and_chains(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "2")
    # Applied with an argument: it goes before each mutable member's own; nested groups flatten.
    nested = group(tasks.add.s(1), group(tasks.add.s(2), tasks.mul.s(3)), tasks.add.si(0, 0))
    assert nested.apply_async((10,)).get(timeout=30) == [11, 12, 30, 0]
    chains = group(tasks.add.s(i, i) | tasks.mul.s(10) for i in range(4))()
    assert chains.get(timeout=30) == [0, 20, 40, 60]


def test_group_failure_propagates_or_is_returned(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "2")
    result = group(tasks.add.s(1, 1), tasks.fail.s("member"), tasks.add.s(2, 2))()
    with pytest.raises(Exception, match="member"):
        result.get(timeout=30)
    values = result.get(timeout=30, propagate=False)
    assert values[0] == 2 and values[2] == 4 and isinstance(values[1], Exception)
    assert result.failed() and not result.successful() and result.completed_count() == 2


def test_group_result_save_restore_and_celery_tuples(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    result = group(tasks.add.s(i, 1) for i in range(3))()
    result.save()
    restored = GroupResult.restore(result.id, app=tasks.app)
    assert restored is not None and restored.id == result.id
    assert [r.id for r in restored] == [r.id for r in result]
    assert restored.get(timeout=30) == [1, 2, 3]
    assert json.loads(json.dumps(result.as_tuple())) == json.loads(json.dumps(restored.as_tuple()))
    restored.delete()
    assert GroupResult.restore(result.id, app=tasks.app) is None
    assert isinstance(ResultSet([tasks.add.delay(1, 1)]).get(timeout=30), list)


def test_chord_sends_the_header_values_to_the_body(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "2")
    assert chord((tasks.add.s(i, i) for i in range(10)), tasks.xsum.s())().get(timeout=30) == 90
    # Celery's other spelling, and a chord whose header holds chains and a nested chord.
    header = [tasks.add.s(1, 1) | tasks.mul.s(10), chord([tasks.add.s(1, 2), tasks.add.s(3, 4)], tasks.xsum.s())]
    result = chord(header)(tasks.xsum.s())
    assert result.get(timeout=30) == 20 + 10
    assert isinstance(result.parent, GroupResult) and result.parent.get(timeout=30) == [20, 10]


def test_chain_with_a_group_becomes_a_chord_and_continues(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "2")
    flow = tasks.add.s(4, 4) | group(tasks.add.s(1), tasks.add.s(2)) | tasks.xsum.s() | tasks.mul.s(10)
    result = flow()
    assert result.get(timeout=30) == 190
    assert result.parent is not None and result.parent.get(timeout=30) == 19
    ending = (tasks.add.s(1, 1) | group(tasks.mul.s(i) for i in range(3)))()
    assert isinstance(ending, GroupResult) and ending.get(timeout=30) == [0, 2, 4]


def test_empty_chord_header_runs_the_body_with_an_empty_list(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    assert chord([], tasks.xsum.s())().get(timeout=30) == 0


def test_chord_member_failure_fails_the_body_with_a_chord_error_and_calls_its_errback(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "2")
    body = tasks.xsum.s()
    body.link_error(tasks.on_error_id.s())
    bad = tasks.fail.s("header member")
    result = chord([tasks.add.s(1, 1), bad], body)()
    with pytest.raises(ChordError, match=r"Dependency .* raised .*header member"):
        result.get(timeout=30)
    assert result.state == "FAILURE"
    worker.wait_for_log(f"Chord {result.parent.id} failed")
    deadline = time.monotonic() + 30
    while project.ledger_count(f"errback-id:{result.id}") == 0:
        assert time.monotonic() < deadline, "the body's errback never ran"
        time.sleep(0.05)


def test_failing_chain_step_fails_the_rest_instead_of_leaving_it_pending(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    result = (tasks.add.s(1, 1) | tasks.fail.si("step two") | tasks.add.s(1) | tasks.mul.s(2))()
    with pytest.raises(Exception, match="step two"):
        result.get(timeout=30)
    assert result.parent is not None and result.parent.state == "FAILURE"


def test_workflows_travel_in_msgpack(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from rqueue import serialization

    msgpack = "application/x-msgpack"
    (project.root / "msgpack_settings.py").write_text("accept_content = ['json', 'msgpack']\n")
    monkeypatch.setenv("TEST_CONFIG_MODULE", "msgpack_settings")
    tasks = project.app()
    made = chord([tasks.add.s(1, 1), tasks.add.s(2, 2) | tasks.mul.s(3)], tasks.xsum.s())
    again = Signature.from_wire(serialization.loads(serialization.dumps(made, "msgpack"), msgpack, [msgpack]))
    assert isinstance(again, chord) and json.loads(json.dumps(again)) == json.loads(json.dumps(made))
    project.start_worker("-c", "2")
    assert made.apply_async(serializer="msgpack").get(timeout=30) == 14


def test_chunks_map_and_starmap(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "2")
    assert tasks.add.chunks(zip(range(10), range(10), strict=True), 4)().get(timeout=30) == [
        [0, 2, 4, 6],
        [8, 10, 12, 14],
        [16, 18],
    ]
    assert tasks.xsum.map([[1, 2], [3, 4]]).delay().get(timeout=30) == [3, 7]
    assert tasks.add.starmap([(1, 2), (3, 4)]).apply_async().get(timeout=30) == [3, 7]
    with pytest.raises(ValueError, match="at least 1"):
        tasks.add.chunks([(1, 2)], 0)


@pytest.mark.parametrize(("kind", "expected"), [("task", 6), ("chain", 12), ("group", [5, 6, 7])])
def test_replace_keeps_the_tasks_place(project: Project, kind: str, expected: Any) -> None:
    tasks = project.app()
    project.start_worker("-c", "2")
    direct = tasks.replaced_by.delay(kind, 5)
    assert direct.get(timeout=30) == expected
    # In a chain: the replacement's value goes on to the next step; in a chord: it is counted.
    in_chain = (tasks.replaced_by.s(kind, 5) | tasks.lineage.si())()
    assert in_chain.get(timeout=30)["parent_id"] is not None
    in_chord = chord([tasks.replaced_by.s(kind, 5), tasks.add.s(1, 1)], tasks.identity.s())()
    assert in_chord.get(timeout=30) == [expected, 2]


def test_children_parent_and_collect(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "2")
    parent = tasks.spawn.delay(3)
    ids = parent.get(timeout=30)
    assert [child.id for child in parent.children] == ids
    collected = list(parent.collect(timeout=30))
    assert [value for _, value in collected] == [ids, 0, 2, 4]
    last = (tasks.add.s(1, 1) | tasks.add.s(1))()
    assert last.get(timeout=30) == 3 and last.parent is not None and last.parent.get(timeout=30) == 2


def test_malformed_chord_in_a_message_is_dead_lettered(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    bad = tasks.app.send_task("tasks.add", (1, 1), chain=[{"task": "celery.chord", "subtask_type": "chord"}])
    worker.wait_for_log(f"Message {bad.id} from queue 'celery' dead-lettered (decode_error)")
    body = {"task": "tasks.xsum", "args": "not a list"}
    bad_body = tasks.app.send_task("tasks.add", (1, 1), chord=body, group_id="g-bad")
    worker.wait_for_log(f"Message {bad_body.id} from queue 'celery' dead-lettered (decode_error)")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2


def test_workflow_signatures_are_celerys_dicts() -> None:
    add = signature("tasks.add")
    made = chord([add.clone((1, 1)), group(add.clone((2, 2)))], add.clone((3,)))
    wire = json.loads(json.dumps(made))
    assert wire["subtask_type"] == "chord" and wire["task"] == "celery.chord"
    assert set(wire["kwargs"]) == {"header", "body", "kwargs"}
    again = Signature.from_wire(wire)
    assert isinstance(again, chord) and again.body is not None and again.body.task == "tasks.add"
    assert isinstance(Signature.from_wire(json.loads(json.dumps(group(add, add)))), group)
    assert isinstance(Signature.from_wire(json.loads(json.dumps(add | add))), chain)
    with pytest.raises(DecodeError, match="unknown subtask_type"):
        Signature.from_wire({"task": "x", "subtask_type": "nonsense"})
    with pytest.raises(DecodeError, match="malformed chord"):
        Signature.from_wire({"task": "celery.chord", "subtask_type": "chord", "kwargs": {}})
    with pytest.raises(TypeError, match="no link"):
        group(add).apply_async(link=add)


def test_chord_on_a_backend_that_cannot_count_is_a_clear_error() -> None:
    from rqueue import App

    app = App("nobackend", broker="redis://127.0.0.1:1/0")  # no result backend; nothing is sent
    add = app.signature("tasks.add")
    with pytest.raises(ConfigurationError, match="chords need a result backend"):
        chord([add.clone((1, 1))], add.clone((2,)))()


# -- random workflow trees ------------------------------------------------------------------------------

LEAF = st.tuples(st.sampled_from(["add", "mul"]), st.integers(0, 5))


def _trees(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return LEAF
    sub = _trees(depth - 1)
    return st.one_of(
        LEAF,
        st.tuples(st.just("chain"), st.lists(sub, min_size=1, max_size=3)),
        st.tuples(st.just("group"), st.lists(sub, min_size=1, max_size=3)),
        st.tuples(st.just("chord"), st.lists(sub, min_size=1, max_size=3)),
    )


def _build(tasks: Any, tree: Any) -> Signature:
    """A workflow taking one input value (leaves are mutable signatures of one more argument)."""
    kind = tree[0]
    if kind in ("add", "mul"):
        return getattr(tasks, kind).s(tree[1])
    parts = [_build(tasks, t) for t in tree[1]]
    if kind == "chain":
        return chain(*parts)
    if kind == "group":
        return group(parts) | tasks.xsum.s()  # one value out, as every node gives
    return chord(parts, tasks.xsum.s())


def _evaluate(tree: Any, value: int) -> int:
    """The same tree in plain Python: what each workflow means."""
    kind = tree[0]
    if kind == "add":
        return value + tree[1]
    if kind == "mul":
        return value * tree[1]
    if kind == "chain":
        for step in tree[1]:
            value = _evaluate(step, value)
        return value
    return sum(_evaluate(member, value) for member in tree[1])


@pytest.mark.slow
def test_random_workflow_trees_give_the_plain_python_value(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "2")

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(tree=_trees(3), start=st.integers(0, 3))
    def check(tree: Any, start: int) -> None:
        workflow = tasks.add.si(start, 0) | _build(tasks, tree)
        assert workflow.apply_async().get(timeout=60) == _evaluate(tree, start), tree

    check()


# -- the join itself: duplicates and a worker that died while firing the body ---------------------------


def _member(group_id: str, index: int, body: Signature) -> Any:
    from rqueue import Request

    return Request(id=f"{group_id}-m{index}", task="tasks.add", group=group_id, group_index=index, chord=dict(body))


def test_a_header_member_counted_twice_fires_the_body_once(project: Project) -> None:
    from rqueue.chord_join import Part, count_parts

    tasks = project.app()
    app = tasks.app
    body = tasks.record_sum.s()
    result = body.freeze()
    group_id = f"dup-{project.kind}"
    app.backend.set_chord_size(group_id, 2)
    first, second = _member(group_id, 0, body), _member(group_id, 1, body)
    count_parts(app, [Part(first, "SUCCESS", 10)], "worker-a")
    count_parts(app, [Part(first, "SUCCESS", 99, redelivered=True)], "worker-b")  # ran again: not counted
    # The last member, twice in one batch (and again later): the body is sent once.
    count_parts(app, [Part(second, "SUCCESS", 5), Part(second, "SUCCESS", 5)], "worker-a")
    count_parts(app, [Part(second, "SUCCESS", 5, redelivered=True)], "worker-c")
    project.start_worker("-c", "1")
    assert result.get(timeout=30) == 15
    time.sleep(1)
    assert project.ledger_count("sum:15") == 1


@pytest.mark.slow
def test_a_body_whose_firing_worker_died_is_fired_by_the_redelivered_member(project: Project) -> None:
    from rqueue.chord_join import CLAIM_S, Part, count_parts

    tasks = project.app()
    app = tasks.app
    body = tasks.record_sum.s()
    result = body.freeze()
    group_id = f"claimed-{project.kind}"
    app.backend.set_chord_size(group_id, 1)
    member = _member(group_id, 0, body)
    # The first run counted the member and took the right to fire, then died before sending.
    part = app.backend.encode_chord_part(member.id, "SUCCESS", 7)
    [count] = app.backend.count_chord_parts([(group_id, member.id, 0.0, part)], "dead-worker", CLAIM_S, [])
    assert count is not None and count.claimed
    started = time.monotonic()
    count_parts(app, [Part(member, "SUCCESS", 7, redelivered=True)], "new-worker")  # waits for the claim to lapse
    assert time.monotonic() - started < CLAIM_S + 2
    project.start_worker("-c", "1")
    assert result.get(timeout=30) == 7
