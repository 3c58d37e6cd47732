"""Celery's programming model, in process: names, settings, task classes and options, eager mode,
signals' rules, the pytest plugin's worker in a thread, and finding the app like Celery."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

import rqueue
from rqueue import App, Celery, Task, shared_task, signals, states
from rqueue.config import IneffectiveSettingWarning, Settings
from rqueue.contrib.pytest import running_worker
from rqueue.exceptions import (
    CeleryError,
    ConfigurationError,
    ImproperlyConfigured,
    MaxRetriesExceededError,
    Reject,
    Retry,
    TaskPredicate,
)
from rqueue.result import EagerResult

pytest_plugins = ("rqueue.contrib.pytest",)

try:
    import pydantic
except ImportError:  # the test that needs it is skipped
    Order: Any = None
else:

    class Order(pydantic.BaseModel):  # type: ignore[no-redef]
        """A model for ``@app.task(pydantic=True)``."""

        id: int
        qty: int


@pytest.fixture
def app(tmp_path: Path) -> App:
    url = f"sqlite:///{tmp_path / 'b.sqlite3'}"
    return Celery("api", broker=url, backend=url)


# -- names -------------------------------------------------------------------------------------------


def test_celery_names_are_where_celery_users_look() -> None:
    assert rqueue.Celery is rqueue.App
    assert CeleryError is rqueue.exceptions.RQueueError
    assert issubclass(ImproperlyConfigured, ValueError)
    assert issubclass(Retry, TaskPredicate) and issubclass(Reject, TaskPredicate)
    for name in ("TaskRevokedError", "SoftTimeLimitExceeded", "TimeLimitExceeded", "WorkerLostError", "ChordError"):
        assert hasattr(rqueue.exceptions, name)
    for name in ("task_prerun", "task_postrun", "task_success", "worker_process_init", "setup_logging"):
        assert isinstance(getattr(signals, name), signals.Signal)
    assert states.SUCCESS == "SUCCESS" and "PENDING" in states.UNREADY_STATES


# -- settings ----------------------------------------------------------------------------------------


def test_settings_a_celery_setting_rqueue_lacks_loads_with_one_warning() -> None:
    settings = Settings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings.update(worker_pool_restarts=True, CELERYD_POOL_RESTARTS=True)
    ineffective = [w for w in caught if issubclass(w.category, IneffectiveSettingWarning)]
    assert len(ineffective) <= 1  # once per process: an earlier test may have warned already
    assert settings.get("worker_pool_restarts") is True
    assert settings["worker_pool_restarts"] is True
    assert settings.get("worker_disable_prefetch", "unset") == "unset"


def test_settings_warning_points_at_the_users_line(tmp_path: Path) -> None:
    script = tmp_path / "conf.py"
    script.write_text("from rqueue import Celery\napp = Celery('x', worker_lost_wait=5)\n")
    out = subprocess.run(
        [sys.executable, "-W", "always", str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert f"{script}:2: IneffectiveSettingWarning: setting worker_lost_wait is a Celery setting" in out.stderr


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("worker_max_task_per_child", "worker_max_tasks_per_child"),
        ("broker_ulr", "broker_url"),
        ("task_serialiser", "task_serializer"),
        ("resutl_backend", "result_backend"),
        ("max_tasks_per_child", "worker_max_tasks_per_child"),
    ],
)
def test_settings_unknown_names_suggest_the_close_one(typo: str, suggestion: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"unknown setting '{typo}'; did you mean {suggestion}\?"):
        Settings().update({typo: 1})


def test_settings_nothing_close_gives_no_wrong_suggestion() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown setting 'frobnicate'; see rqueue.config.DEFAULTS"):
        Settings().update(frobnicate=1)


def test_settings_django_namespace_reads_only_prefixed_names(app: App) -> None:
    class DjangoSettings:
        DEBUG = True
        INSTALLED_APPS = ("x",)
        CELERY_TASK_SERIALIZER = "msgpack"
        CELERY_RESULT_EXPIRES = 60
        CELERY_TASK_ALWAYS_EAGER = True

    app.config_from_object(DjangoSettings, namespace="CELERY")
    assert app.conf.task_serializer == "msgpack"
    assert app.conf.result_expires == 60
    assert app.conf.task_always_eager is True
    with pytest.raises(ConfigurationError, match="unknown setting 'debug'"):
        app.config_from_object(type("S", (), {"CELERY_DEBUG": 1}), namespace="CELERY")


def test_settings_from_envvar_and_celery_environment(app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "envconf.py").write_text("task_default_queue = 'from-env'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MY_CONFIG", "envconf")
    app.config_from_envvar("MY_CONFIG")
    assert app.conf.task_default_queue == "from-env"
    monkeypatch.delenv("MY_CONFIG")
    with pytest.raises(ConfigurationError, match="MY_CONFIG is not set"):
        app.config_from_envvar("MY_CONFIG")
    app.config_from_envvar("MY_CONFIG", silent=True)
    monkeypatch.delenv("RQUEUE_BROKER_URL", raising=False)
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://example:6379/3")
    assert Celery("envapp").broker_url == "redis://example:6379/3"


def test_settings_dict_style_access(app: App) -> None:
    assert app.conf["task_default_queue"] == "celery"
    assert app.conf.get("task_default_queue") == "celery"
    assert app.conf.get("not_a_setting", 7) == 7
    assert "broker_url" in app.conf
    app.conf.setdefault("task_default_queue", "other")
    assert app.conf.task_default_queue == "celery"


def test_include_imports_and_autodiscover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "shop"
    (pkg / "orders").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "orders" / "__init__.py").write_text("")
    (pkg / "orders" / "tasks.py").write_text(
        "from rqueue import shared_task\n@shared_task\ndef ship(n):\n    return n\n"
    )
    (pkg / "extra.py").write_text("from rqueue import shared_task\n@shared_task\ndef extra():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    app = Celery("shop", broker=url, include=["shop.extra"])
    app.autodiscover_tasks(["shop.orders", "shop"])  # "shop" has no tasks module: skipped
    assert "shop.orders.tasks.ship" not in app.tasks  # lazily, at finalize (worker start)
    app.finalize()
    assert {"shop.orders.tasks.ship", "shop.extra.extra"} <= set(app.tasks)
    broken = Celery("broken", broker=url, include=["shop.missing"])
    with pytest.raises(ConfigurationError, match=r"cannot import module 'shop\.missing'"):
        broken.finalize()


# -- task classes and options ------------------------------------------------------------------------


def test_task_base_class_attributes_are_option_defaults(app: App) -> None:
    class Patient(Task):
        max_retries = 7
        acks_late = False

    @app.task(base=Patient, max_retries=9)
    def overridden() -> None: ...

    @app.task(base=Patient)
    def inherited() -> None: ...

    assert overridden.max_retries == 9
    assert inherited.max_retries == 7
    assert inherited.acks_late is False
    assert inherited.option("max_retries") == 7
    assert isinstance(inherited, Patient)


def test_task_app_task_subclass_and_register_task(app: App) -> None:
    class Doubler(app.Task):  # type: ignore[name-defined,misc]
        name = "api.doubler"

        def run(self, x: int) -> int:
            return 2 * x

    task = app.register_task(Doubler)
    assert app.tasks["api.doubler"] is task
    assert task(4) == 8
    assert task.apply((5,)).get() == 10


def test_task_unknown_option_that_looks_misspelt_is_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option 'autoretry_fro'; did you mean 'autoretry_for'\?"):

        @app.task(autoretry_fro=(ValueError,))
        def f() -> None: ...

    @app.task(my_custom_flag=True)  # Celery sets any other keyword as an attribute
    def g() -> None: ...

    assert g.my_custom_flag is True  # type: ignore[attr-defined]


def test_task_compression_is_refused_clearly(app: App) -> None:
    @app.task
    def f() -> None: ...

    with pytest.raises(ConfigurationError, match="rqueue does not compress"):
        f.apply_async(compression="zlib")


def test_task_pydantic_without_pydantic_is_a_clear_error(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)  # as if it were not installed: import fails
    with pytest.raises(ConfigurationError, match="pydantic=True needs pydantic"):

        @app.task(pydantic=True)
        def f(x: int) -> int:
            return x


@pytest.mark.skipif(Order is None, reason="pydantic is not installed")
def test_task_pydantic_validates_and_dumps(app: App) -> None:
    @app.task(pydantic=True)
    def double(order: Order) -> Order:
        return Order(id=order.id, qty=order.qty * 2)

    assert double.apply(({"id": 1, "qty": "3"},)).get() == {"id": 1, "qty": 6}
    with pytest.raises(Exception, match="validation error"):
        double.apply(({"id": "x", "qty": 1},), throw=True)


# -- eager mode ----------------------------------------------------------------------------------------


def test_eager_apply_round_trips_arguments_and_runs_retries(app: App) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=3, default_retry_delay=60)
    def flaky(self: Task[Any, Any], values: list[int]) -> int:
        attempts.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(exc=OSError("try again"))
        return sum(values) + self.request.retries

    result = flaky.apply(((1, 2),))  # a tuple arrives as a list, as from a worker
    assert isinstance(result, EagerResult)
    assert result.get() == 5
    assert attempts == [0, 1, 2]
    assert result.state == states.SUCCESS and result.ready()


def test_eager_failure_and_propagation(app: App) -> None:
    @app.task(max_retries=0)
    def boom() -> None:
        raise ValueError("boom")

    result = boom.apply()
    assert result.state == states.FAILURE
    assert isinstance(result.result, ValueError)
    assert "Traceback" in (result.traceback or "")
    with pytest.raises(ValueError):
        result.get()
    with pytest.raises(ValueError):
        boom.apply(throw=True)


def test_eager_always_and_propagates_settings(app: App) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def bad() -> None:
        raise KeyError("k")

    app.conf.task_always_eager = True
    assert add.delay(2, 2).get() == 4
    assert bad.delay().state == states.FAILURE
    app.conf.task_eager_propagates = True
    with pytest.raises(KeyError):
        bad.delay()


def test_eager_unserializable_argument_fails_like_a_send(app: App) -> None:
    @app.task
    def f(x: object) -> None: ...

    with pytest.raises(Exception, match=r"(?i)serializ"):
        f.apply((object(),))


def test_eager_autoretry_with_retry_kwargs(app: App) -> None:
    calls: list[int] = []

    @app.task(bind=True, autoretry_for=(OSError,), retry_kwargs={"max_retries": 2}, retry_backoff=False)
    def net(self: Task[Any, Any]) -> None:
        calls.append(self.request.retries)
        raise OSError("down")

    result = net.apply()
    assert calls == [0, 1, 2]
    assert isinstance(result.result, OSError)


def test_retry_outside_a_worker_is_an_error(app: App) -> None:
    @app.task(bind=True)
    def f(self: Task[Any, Any]) -> None:
        raise self.retry()

    with pytest.raises(RuntimeError, match="outside a worker"):
        f()
    with pytest.raises(MaxRetriesExceededError):
        f.apply(throw=True, retries=5)


def test_direct_call_has_called_directly_request(app: App) -> None:
    @app.task(bind=True)
    def who(self: Task[Any, Any]) -> tuple[bool, bool]:
        return self.request.called_directly, self.request.is_eager

    assert who() == (True, False)
    assert who.apply().get() == (False, True)


# -- signals -------------------------------------------------------------------------------------------


def test_signal_sender_filter_dispatch_uid_and_raising_receiver(app: App, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Any] = []

    @app.task
    def one() -> int:
        return 1

    @app.task
    def two() -> int:
        return 2

    def only_one(sender: Any = None, result: Any = None, **_: Any) -> None:
        seen.append((sender.name, result))

    def broken(**_: Any) -> None:
        raise RuntimeError("receiver broke")

    signals.task_success.connect(only_one, sender=one)
    signals.task_success.connect(only_one, sender=one)  # the same receiver once
    signals.task_success.connect(broken, dispatch_uid="broken")
    try:
        assert one.apply().get() == 1
        assert two.apply().get() == 2
    finally:
        assert signals.task_success.disconnect(only_one, sender=one)
        assert signals.task_success.disconnect(dispatch_uid="broken")
    assert seen == [(one.name, 1)]
    assert "receiver broke" in caplog.text


def test_publish_signals_name_the_task(app: App) -> None:
    @app.task
    def sent() -> None: ...

    got: list[tuple[str, str]] = []

    def before(sender: Any = None, headers: Any = None, **_: Any) -> None:
        got.append(("before", sender))

    def after(sender: Any = None, **_: Any) -> None:
        got.append(("after", sender))

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after, sender=sent.name)
    try:
        sent.delay()
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after, sender=sent.name)
    assert got == [("before", sent.name), ("after", sent.name)]


# -- the pytest plugin: a real worker in a thread of this process --------------------------------------


def test_plugin_worker_runs_tasks_registered_on_the_app(celery_app: App, celery_worker: Any) -> None:
    @celery_app.task(bind=True)
    def mul(self: Task[Any, Any], x: int, y: int) -> tuple[int, str | None]:
        return x * y, self.request.hostname

    value, hostname = mul.delay(6, 7).get(timeout=20)
    assert value == 42
    assert hostname == celery_worker.hostname


def test_plugin_running_worker_stops_cleanly(app: App) -> None:
    @app.task
    def ping() -> str:
        return "pong"

    with running_worker(app, concurrency=2) as worker:
        assert ping.delay().get(timeout=20) == "pong"
        assert worker.ready.is_set()


# -- shared tasks and the current app -------------------------------------------------------------------


def test_shared_task_binds_to_every_app(tmp_path: Path) -> None:
    @shared_task(name="api.shared_echo")
    def echo(x: int) -> int:
        return x

    first = Celery("first", broker=f"sqlite:///{tmp_path / 'a.sqlite3'}")
    second = Celery("second", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}")
    assert "api.shared_echo" in first.tasks and "api.shared_echo" in second.tasks
    assert echo.task is second.tasks["api.shared_echo"]  # the current app's
    assert echo(3) == 3


# -- finding the app ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "spec"),
    [
        ({"proj/__init__.py": "", "proj/celery.py": "from rqueue import Celery\napp = Celery('proj')\n"}, "proj"),
        (
            {
                "proj/__init__.py": "from .celery import app\n",
                "proj/celery.py": "from rqueue import Celery\napp = Celery('proj')\n",
            },
            "proj",
        ),
        ({"tasks.py": "from rqueue import Celery\ncelery = Celery('t')\n"}, "tasks"),
        ({"tasks.py": "from rqueue import Celery\nmine = Celery('t')\n"}, "tasks"),
        ({"tasks.py": "from rqueue import Celery\nmine = Celery('t')\n"}, "tasks.mine"),
        ({"tasks.py": "from rqueue import Celery\nmine = Celery('t')\n"}, "tasks:mine"),
    ],
)
def test_cli_finds_the_app_like_celery(tmp_path: Path, files: dict[str, str], spec: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "rqueue", "-A", spec, "purge", "-f"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "RQUEUE_BROKER_URL": f"sqlite:///{tmp_path / 'b.sqlite3'}"},
    )
    assert out.returncode == 0, out.stderr


def test_cli_no_app_found_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    out = subprocess.run(
        [sys.executable, "-m", "rqueue", "-A", "empty", "purge", "-f"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "Error: cannot load app 'empty': no App found in module empty (use module:attribute)"


def test_worker_main_runs_the_cli_for_the_app(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(
        textwrap.dedent(f"""
        from rqueue import Celery
        app = Celery("m", broker="sqlite:///{tmp_path / "b.sqlite3"}")
        if __name__ == "__main__":
            app.start(["purge", "-f"])
        """)
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "urged" in out.stdout, out.stdout


# -- logging signals and publish retries ------------------------------------------------------------------


def test_setup_logging_receiver_replaces_rqueue_logging() -> None:
    import logging

    from rqueue.worker import setup_logging

    root = logging.getLogger()
    before = list(root.handlers)
    calls: list[Any] = []

    def mine(**kwargs: Any) -> None:
        calls.append(kwargs["loglevel"])

    signals.setup_logging.connect(mine)
    try:
        setup_logging("info", None)
    finally:
        signals.setup_logging.disconnect(mine)
    assert calls == [logging.INFO]
    assert root.handlers == before  # untouched: the receiver owns logging

    adjusted: list[str] = []

    def after(logger: Any = None, **_: Any) -> None:
        adjusted.append(logger.name)

    signals.after_setup_logger.connect(after)
    signals.after_setup_task_logger.connect(after)
    try:
        setup_logging("warning", None)
    finally:
        signals.after_setup_logger.disconnect(after)
        signals.after_setup_task_logger.disconnect(after)
        root.handlers[:] = before
    assert adjusted == ["root", "rqueue.task"]


def test_publish_retries_while_the_broker_is_away_then_raises(caplog: pytest.LogCaptureFixture) -> None:
    from conftest import free_port
    from rqueue.exceptions import BrokerConnectionError

    app = Celery(
        "away",
        broker=f"redis://127.0.0.1:{free_port()}/0",
        backend=None,
        broker_connection_timeout=0.5,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.05, "interval_max": 0.1},
    )
    with pytest.raises(BrokerConnectionError):
        app.send_task("tasks.add", (1, 1))
    assert caplog.text.count("retrying in") == 2
    with pytest.raises(BrokerConnectionError):
        app.send_task("tasks.add", (1, 1), retry=False)
    assert caplog.text.count("retrying in") == 2


def test_apply_async_exchange_and_routing_key_pick_the_queue(app: App) -> None:
    @app.task
    def routed() -> None: ...

    routed.apply_async(exchange="", routing_key="reports")
    routed.apply_async(routing_key="reports")
    assert app.broker.queue_length("reports") == 2
    assert app.broker.queue_length("celery") == 0


def test_worker_main_passes_its_arguments_to_the_worker_command(tmp_path: Path) -> None:
    script = tmp_path / "wm.py"
    script.write_text(
        "from rqueue import Celery\n"
        f"app = Celery('wm', broker='sqlite:///{tmp_path / 'b.sqlite3'}')\n"
        "app.worker_main(['--help'])\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Start a worker that runs the app's tasks." in out.stdout


def test_custom_call_keeps_the_worker_request_and_direct_calls_get_their_own(app: App) -> None:
    class Traced(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return ("traced", super().__call__(*args, **kwargs))

    @app.task(bind=True)
    def inner(self: Task[Any, Any]) -> tuple[str, bool]:
        return self.request.id, self.request.called_directly

    @app.task(base=Traced, bind=True)
    def outer(self: Task[Any, Any]) -> tuple[str, bool, Any]:
        return self.request.id, self.request.called_directly, inner()

    result = outer.apply(task_id="outer-1").get()
    assert result == ("traced", ("outer-1", False, ("", True)))


def test_eager_chain_and_links(app: App) -> None:
    from rqueue import chain

    seen: list[Any] = []

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def note(value: Any) -> None:
        seen.append(value)

    @app.task
    def boom() -> None:
        raise ValueError("boom")

    @app.task
    def on_error(request: Any, exc: BaseException, traceback: str) -> None:
        seen.append(("errback", request.id, type(exc).__name__))

    app.conf.task_always_eager = True
    assert chain(add.s(1, 1), add.s(2), add.s(3))().get() == 7
    assert (add.s(2, 2) | add.s(4)).apply().get() == 8
    add.apply_async((5, 5), link=note.s())
    boom.apply_async(task_id="b-1", link_error=on_error.s())
    assert seen == [10, ("errback", "b-1", "ValueError")]
