"""The App and Task API in one process: names, sending, routing, URLs and results without a worker."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from rqueue import App, AsyncResult, Task, _rqueue
from rqueue.exceptions import ConfigurationError, ResultIgnoredError, TimeoutError
from rqueue.urls import mask_password


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App("tasks", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}")


def decode_waiting(app: App, queue: str = "celery") -> list[_rqueue.TaskMessage]:
    deliveries = app.broker.native.fetch([queue], 1000, "test", 60_000)  # type: ignore[attr-defined]
    accept = ["json", "msgpack", "pickle"]
    return [_rqueue.decode_task_message(d.payload, accept=accept) for d in deliveries]


def test_task_name_is_module_dot_function(app: App) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add.name == f"{__name__}.add"
    assert app.tasks[add.name] is add


def test_task_name_of_main_module_uses_the_app_main(app: App) -> None:
    def add(x: int, y: int) -> int:
        return x + y

    add.__module__ = "__main__"
    assert app.task(add).name == "tasks.add"


def test_task_call_runs_inline(app: App) -> None:
    @app.task(name="tasks.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    assert mul(3, 4) == 12


def test_task_unknown_option_is_an_error(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option.*retry_backof"):
        app.task(retry_backof=True)(lambda: None)


def test_delay_publishes_a_celery_v2_message(app: App) -> None:
    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(4, 4)
    assert isinstance(result, AsyncResult)
    assert re.fullmatch(r"[0-9a-f-]{36}", result.id)
    (msg,) = decode_waiting(app)
    assert (msg.task, msg.id, msg.args, msg.kwargs) == ("tasks.add", result.id, [4, 4], {})
    assert msg.root_id == result.id
    assert msg.routing_key == "celery"


def test_apply_async_options_reach_the_message(app: App) -> None:
    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    add.apply_async(
        (1,),
        {"y": 2},
        countdown=0,
        expires=60,
        priority=3,
        task_id="fixed-id",
        headers={"trace": "abc"},
        time_limit=30,
        soft_time_limit=20,
        queue="other",
    )
    (msg,) = decode_waiting(app, "other")
    assert msg.id == "fixed-id" and msg.priority == 3
    assert msg.expires_ms is not None and msg.eta_ms is not None
    assert (msg.time_limit, msg.soft_time_limit) == (30, 20)
    assert msg.headers["trace"] == "abc"


def test_countdown_keeps_the_message_out_of_reach_until_due(app: App) -> None:
    app.send_task("tasks.add", [1, 2], countdown=3600)
    assert decode_waiting(app) == []


def test_send_task_by_name_needs_no_registration(app: App) -> None:
    result = app.send_task("elsewhere.task", [1], {"a": 2})
    (msg,) = decode_waiting(app)
    assert msg.task == "elsewhere.task" and msg.id == result.id


def test_task_routes_dict_and_glob_route_messages(app: App) -> None:
    app.conf.task_routes = {"tasks.add": "low-priority", "reports.*": {"queue": "reports", "priority": 6}}
    app.send_task("tasks.add", [1, 2])
    app.send_task("reports.daily")
    assert app.broker.queue_length("low-priority") == 1
    (msg,) = decode_waiting(app, "reports")
    assert msg.priority == 6


def test_task_routes_router_callable(app: App) -> None:
    def router(name: str, args: object, kwargs: object, options: object, task: object) -> str | None:
        return "special" if name.endswith(".special") else None

    app.conf.task_routes = [router, {"tasks.*": "tasksq"}]
    app.send_task("x.special")
    app.send_task("tasks.y")
    app.send_task("z")
    assert [app.broker.queue_length(q) for q in ("special", "tasksq", "celery")] == [1, 1, 1]


def test_explicit_queue_overrides_routes(app: App) -> None:
    app.conf.task_routes = {"tasks.add": "low-priority"}
    app.send_task("tasks.add", queue="urgent")
    assert app.broker.queue_length("urgent") == 1


def test_get_on_an_ignored_result_fails_fast(app: App) -> None:
    @app.task(ignore_result=True)
    def noop() -> None:
        return None

    with pytest.raises(ResultIgnoredError, match="ignore_result"):
        noop.delay().get(timeout=30)


def test_get_times_out_with_rqueue_timeout_error(app: App) -> None:
    result = app.send_task("tasks.add", [1, 1])
    assert result.state == "PENDING" and not result.ready()
    with pytest.raises(TimeoutError, match=result.id):
        result.get(timeout=0.2)


def test_result_backend_is_visible_on_the_result(app: App, tmp_path: Path) -> None:
    result = app.send_task("tasks.add", [1, 1])
    assert "b.sqlite3" in repr(result.backend)
    other = App("tasks", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}", backend=f"sqlite:///{tmp_path / 'r.db'}")
    assert "r.db" in repr(other.backend)


def test_pickle_is_refused_unless_accepted(app: App) -> None:
    with pytest.raises(ConfigurationError, match="accept_content"):
        app.send_task("tasks.add", [1, 2], serializer="pickle")
    app.conf.accept_content = ["json", "pickle"]
    app.send_task("tasks.add", [1, 2], serializer="pickle")
    (msg,) = decode_waiting(app)
    assert msg.content_type == "application/x-python-serialize" and msg.args is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "kafka://localhost",
            "unknown URL scheme 'kafka'.*supported schemes: sqlite://, redis://, rediss://, unix://, amqp://, "
            "pyamqp://, amqps://, postgresql://, postgres://",
        ),
        ("amqp://guest@localhost//?ssl_ca_certs=x", "ssl_\\* options need an amqps:// URL"),
        ("postgresql://localhost/db?schema=Bad", "schema='Bad'.*is not usable"),
        ("postgres://u:secret@localhost/db?schema=pg_x", "postgres://u:\\*\\*\\*@localhost/db.*not usable"),
        ("rediss://localhost?ssl_cert_reqs=maybe", "ssl_cert_reqs='maybe' is not one of required, optional, none"),
        ("localhost:6379", "is not a URL"),
        ("sqlite://", "names no file"),
        ("sqlite:///:memory:", "cannot be shared"),
    ],
)
def test_bad_broker_url_is_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _ = App("tasks", broker=url).broker


def test_urls_are_masked() -> None:
    assert mask_password("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert mask_password("redis://:s3cret@host/0") == "redis://:***@host/0"
    assert mask_password("sqlite:///x.db") == "sqlite:///x.db"
    assert "s3cret" not in repr(App("t", broker="sqlite:///x.db", backend="sqlite:///y.db"))


def test_broker_file_is_private(app: App, tmp_path: Path) -> None:
    app.send_task("tasks.add")
    assert (tmp_path / "b.sqlite3").stat().st_mode & 0o077 == 0


def test_delay_many_publishes_every_call_in_one_batch(app: App) -> None:
    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    results = add.delay_many([(i, i) for i in range(50)])
    messages = decode_waiting(app)
    assert [m.id for m in messages] == [r.id for r in results]
    assert [m.args for m in messages] == [[i, i] for i in range(50)]


def test_delay_many_checks_every_call_before_sending_any(app: App) -> None:
    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match=r"tasks.add\(\) missing a required argument: 'y'"):
        add.delay_many([(1, 2), (3,)])
    assert app.broker.queue_length("celery") == 0


def test_positional_calls_are_checked_against_every_kind_of_signature(app: App) -> None:
    @app.task(name="tasks.varargs")
    def varargs(first: int, *rest: int, scale: int = 1) -> int:
        return first

    @app.task(name="tasks.keyword")
    def keyword(x: int, *, unit: str) -> int:
        return x

    varargs.delay_many([(1,), (1, 2, 3, 4, 5)])
    with pytest.raises(TypeError, match=r"tasks.varargs\(\) missing a required argument: 'first'"):
        varargs.delay()
    with pytest.raises(TypeError, match=r"tasks.keyword\(\) missing a required argument: 'unit'"):
        keyword.delay(1)
    keyword.delay(1, unit="m")
    with pytest.raises(TypeError, match=r"tasks.keyword\(\) too many positional arguments"):
        keyword.delay(1, 2, unit="m")
    assert app.broker.queue_length("celery") == 3


def test_send_many_routes_each_call_when_a_router_reads_the_arguments(app: App) -> None:
    def by_size(name: str, args: list[int], kwargs: object, options: object, task: object) -> str:
        return "big" if args[0] > 10 else "small"

    app.conf.task_routes = [by_size]
    app.send_many("tasks.add", [((1, 2), {}), ((20, 2), {}), ((3, 2), {})])
    assert [app.broker.queue_length(q) for q in ("small", "big")] == [2, 1]
    app.conf.task_routes = {"tasks.*": "named"}  # a name-only route: worked out once per batch
    app.send_many("tasks.add", [((1, 2), {}), ((20, 2), {})])
    assert app.broker.queue_length("named") == 2


def test_send_many_encodes_per_call_what_depends_on_the_call(app: App) -> None:
    class Named(Task):  # type: ignore[type-arg]
        def shadow_name(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: Mapping[str, Any]) -> str:
            return f"add-{args[0]}"

    @app.task(name="tasks.add", base=Named)
    def add(x: int, y: int) -> int:
        return x + y

    add.delay_many([(1, 2), (3, 4)])  # a shadow name per call: encoded one by one
    assert [m.shadow for m in decode_waiting(app)] == ["add-1", "add-3"]
    app.conf.accept_content = ["json", "pickle"]
    sent = app.send_many("tasks.other", [((1,), {}), ((2,), {})], serializer="pickle")  # a body Python serializes
    messages = decode_waiting(app)
    assert [m.id for m in messages] == [r.id for r in sent]
    assert {m.content_type for m in messages} == {"application/x-python-serialize"}


def test_send_many_applies_options_to_every_call(app: App) -> None:
    results = app.send_many("tasks.add", [((1, 2), {}), ((3,), {"y": 4})], queue="batch", priority=6)
    messages = decode_waiting(app, "batch")
    assert [(m.args, m.kwargs, m.priority) for m in messages] == [([1, 2], {}, 6), ([3], {"y": 4}, 6)]
    assert len({r.id for r in results}) == 2


@pytest.mark.parametrize(
    ("broker", "backend", "message"),
    [
        ("rpc://", None, r"broker_url: unknown URL scheme 'rpc'"),
        (None, "amqp://guest@localhost//", r"result_backend: unknown URL scheme 'amqp'.*supported schemes: sqlite://"),
        (None, "kafka://x", r"result_backend: unknown URL scheme 'kafka'"),
        (
            None,
            "mongodb://localhost/results",
            r"result_backend: the mongodb:// scheme \(MongoDB\) is not available.*supported schemes: sqlite://, redis://"
            r".*postgresql://.*db\+sqlite://",
        ),
        (None, "rpc://", r"result_backend rpc:// needs a RabbitMQ broker \(amqp://\), not <SqliteBroker"),
        (None, "rpc://localhost/x", r"result_backend: 'rpc://localhost/x' takes no host or options"),
    ],
)
def test_each_role_has_its_own_schemes(tmp_path: Path, broker: str | None, backend: str | None, message: str) -> None:
    app = App("tasks", broker=broker or f"sqlite:///{tmp_path / 'b.sqlite3'}", backend=backend)
    with pytest.raises(ConfigurationError, match=message):
        app.broker if broker else app.backend  # noqa: B018 - opening is the check


def test_unknown_send_option_is_a_clear_error(app: App) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match=r"unknown send option.*countdwn.*valid: .*countdown"):
        add.apply_async((1, 2), countdwn=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unknown send option"):
        app.send_task("tasks.add", [1, 2], quue="x")  # type: ignore[call-arg]
    assert decode_waiting(app) == []  # nothing was sent
