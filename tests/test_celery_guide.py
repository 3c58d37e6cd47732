"""Examples from Celery's user guide, ported by changing only the imports (``celery`` → ``rqueue``):
custom task classes (tasks.rst), custom states (tasks.rst), handlers (tasks.rst), signals
(signals.rst) and testing (testing.rst: mocks around a direct call, eager mode, the pytest plugin)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from unittest.mock import patch

import pytest
from pytest import raises

from rqueue import Celery, Task  # was: from celery import Celery, Task
from rqueue.exceptions import Retry  # was: from celery.exceptions import Retry
from rqueue.signals import after_task_publish, task_success  # was: from celery.signals import ...

pytest_plugins = ("rqueue.contrib.pytest",)  # was: ("celery.contrib.pytest",)


@pytest.fixture
def app(tmp_path: Any) -> Celery:
    url = f"sqlite:///{tmp_path / 'guide.sqlite3'}"
    return Celery("proj", broker=url, backend=url)


# -- tasks.rst: "Custom task classes" ---------------------------------------------------------------


class Database:
    connections = 0

    @classmethod
    def connect(cls) -> Database:
        cls.connections += 1
        return cls()

    def rows(self) -> list[int]:
        return [1, 2, 3]


class DatabaseTask(Task):
    _db = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database.connect()
        return self._db


def test_guide_database_task_base_class_keeps_one_connection(app: Celery) -> None:
    @app.task(base=DatabaseTask, bind=True)
    def process_rows(self: DatabaseTask) -> int:
        return sum(self.db.rows())

    before = Database.connections
    assert process_rows.apply().get() == 6
    assert process_rows.apply().get() == 6
    assert Database.connections == before + 1  # the task instance is reused: one connection


# -- tasks.rst: "Custom states" ----------------------------------------------------------------------


def test_guide_upload_files_progress_state_called_directly(app: Celery) -> None:
    seen: list[tuple[str, Any]] = []

    @app.task(bind=True)
    def upload_files(self: Task[Any, Any], filenames: list[str]) -> int:
        for i, _file in enumerate(filenames):
            if not self.request.called_directly:
                self.update_state(state="PROGRESS", meta={"current": i, "total": len(filenames)})
                progress = app.AsyncResult(self.request.id)
                seen.append((progress.state, progress.info))
        return len(filenames)

    assert upload_files(["a"]) == 1  # called directly: no state stored
    assert seen == []


def test_guide_upload_files_progress_state_in_worker(celery_app: Celery, celery_worker: Any) -> None:
    seen: list[tuple[str, Any]] = []

    @celery_app.task(bind=True)
    def upload_files(self: Task[Any, Any], filenames: list[str]) -> int:
        for i, _file in enumerate(filenames):
            if not self.request.called_directly:
                self.update_state(state="PROGRESS", meta={"current": i, "total": len(filenames)})
                progress = celery_app.AsyncResult(self.request.id)
                seen.append((progress.state, progress.info))
        return len(filenames)

    assert upload_files.delay(["a", "b"]).get(timeout=20) == 2
    assert seen == [("PROGRESS", {"current": 0, "total": 2}), ("PROGRESS", {"current": 1, "total": 2})]


# -- tasks.rst: "Handlers" ------------------------------------------------------------------------------


def test_guide_on_failure_handler(app: Celery) -> None:
    failures: list[str] = []

    class MyTask(Task):
        def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            failures.append(f"{task_id!r} failed: {exc!r}")

    @app.task(base=MyTask)
    def fail() -> None:
        raise ValueError("no")

    result = fail.apply(task_id="t-1")
    assert result.failed()
    assert failures == ["'t-1' failed: ValueError('no')"]


# -- signals.rst: "after_task_publish" and "task_success" ---------------------------------------------


def test_guide_after_task_publish_handler(app: Celery) -> None:
    published: list[str] = []

    @app.task(name="proj.tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @after_task_publish.connect(sender="proj.tasks.add")
    def task_sent_handler(sender: Any = None, headers: Any = None, body: Any = None, **kwargs: Any) -> None:
        # information about task are located in headers for task messages
        # using the task protocol version 2.
        info = headers if "task" in headers else body
        published.append("after_task_publish for task id {info[id]}".format(info=info))  # noqa: UP032 - verbatim

    try:
        result = add.delay(2, 2)
    finally:
        after_task_publish.disconnect(task_sent_handler, sender="proj.tasks.add")
    assert published == [f"after_task_publish for task id {result.id}"]


def test_guide_task_success_handler(celery_app: Celery, celery_worker: Any) -> None:
    results: list[Any] = []

    @celery_app.task
    def add(x: int, y: int) -> int:
        return x + y

    @task_success.connect(sender=add)
    def on_success(sender: Any = None, result: Any = None, **kwargs: Any) -> None:
        results.append(result)

    try:
        assert add.delay(4, 4).get(timeout=20) == 8
    finally:
        task_success.disconnect(on_success, sender=add)
    assert results == [8]


# -- testing.rst: "Unit & Integration" (mocks around direct calls) --------------------------------------


class Product:
    def __init__(self, name: str) -> None:
        self.name = name

    def order(self, quantity: int, price: Decimal) -> None:
        raise NotImplementedError


class OperationalError(Exception):
    pass


PRODUCTS: dict[int, Product] = {}


@pytest.fixture
def send_order(app: Celery) -> Task[Any, Any]:
    @app.task(bind=True)
    def send_order(self: Task[Any, Any], product_pk: int, quantity: int, price: Decimal) -> None:
        price = Decimal(price)  # json serializes this to string.
        # models are passed by id, not serialized.
        product = PRODUCTS[product_pk]
        try:
            product.order(quantity, price)
        except OperationalError as exc:
            raise self.retry(exc=exc) from exc

    return send_order


def test_guide_send_order_success(send_order: Task[Any, Any]) -> None:
    PRODUCTS[1] = Product("Foo")
    with patch.object(Product, "order") as product_order:
        send_order(1, 3, Decimal("30.3"))
        product_order.assert_called_with(3, Decimal("30.3"))


def test_guide_send_order_failure(send_order: Task[Any, Any]) -> None:
    PRODUCTS[1] = Product("Foo")
    with patch.object(Product, "order") as product_order, patch.object(send_order, "retry") as send_order_retry:
        send_order_retry.side_effect = Retry()
        product_order.side_effect = OperationalError()
        with raises(Retry):
            send_order(1, 3, Decimal("30.6"))


# -- testing.rst: "pytest" fixtures ----------------------------------------------------------------------


def test_guide_create_task(celery_app: Celery, celery_worker: Any) -> None:
    @celery_app.task
    def mul(x: int, y: int) -> int:
        return x * y

    celery_worker.reload()
    assert mul.delay(4, 4).get(timeout=10) == 16


# -- configuration.rst: task_always_eager for tests --------------------------------------------------------


def test_guide_always_eager(app: Celery) -> None:
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True

    @app.task
    def div(x: int, y: int) -> float:
        return x / y

    assert div.delay(6, 3).get() == 2
    with raises(ZeroDivisionError):
        div.delay(1, 0)
