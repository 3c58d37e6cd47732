"""Result records: Celery's format, final SUCCESS, safe exception rebuilding."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rqueue import App
from rqueue.backends import ResultRecord
from rqueue.exceptions import RemoteError, SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded
from rqueue.serialization import exception_from_meta, exception_to_meta


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App("tasks", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}")


def test_result_record_has_celery_fields(app: App) -> None:
    record = json.loads(app.backend.encode(ResultRecord("id-1", "SUCCESS", 8)))
    assert record["status"] == "SUCCESS" and record["result"] == 8 and record["task_id"] == "id-1"
    assert record["traceback"] is None and record["children"] == [] and record["date_done"].endswith("+00:00")


def test_success_is_final(app: App) -> None:
    app.backend.store(ResultRecord("id-2", "SUCCESS", 1))
    app.backend.store(ResultRecord("id-2", "FAILURE", exception_to_meta(ValueError("late"))))
    assert app.AsyncResult("id-2").get(timeout=1) == 1


def test_failure_reraises_same_type_and_message(app: App) -> None:
    app.backend.store(ResultRecord("id-3", "FAILURE", exception_to_meta(KeyError("missing")), "Traceback ..."))
    result = app.AsyncResult("id-3")
    with pytest.raises(KeyError, match="missing"):
        result.get(timeout=1)
    assert isinstance(result.get(propagate=False), KeyError)
    assert result.traceback == "Traceback ..." and result.failed() and result.ready()


def test_exception_rebuild_never_imports_a_module() -> None:
    exc = exception_from_meta({"exc_type": "Evil", "exc_module": "os.path.evil_module", "exc_message": ["x"]})
    assert isinstance(exc, RemoteError) and exc.exc_type == "Evil" and "x" in str(exc)


def test_exception_rebuild_refuses_non_exception_classes() -> None:
    exc = exception_from_meta({"exc_type": "dict", "exc_module": "builtins", "exc_message": ["x"]})
    assert isinstance(exc, RemoteError)


def test_forget_returns_to_pending(app: App) -> None:
    app.backend.store(ResultRecord("id-4", "SUCCESS", 1))
    result = app.AsyncResult("id-4")
    result.forget()
    assert result.state == "PENDING"


@pytest.mark.parametrize(
    ("module", "name", "expected"),
    [
        ("billiard.exceptions", "TimeLimitExceeded", TimeLimitExceeded),
        ("celery.exceptions", "SoftTimeLimitExceeded", SoftTimeLimitExceeded),
        ("celery.exceptions", "TaskRevokedError", TaskRevokedError),
    ],
)
def test_celery_time_limit_and_revoke_exceptions_read_back_as_rqueue_classes(
    monkeypatch: pytest.MonkeyPatch, module: str, name: str, expected: type[BaseException]
) -> None:
    monkeypatch.delitem(sys.modules, module, raising=False)  # Celery not imported in this process
    exc = exception_from_meta({"exc_type": name, "exc_module": module, "exc_message": [300]})
    assert type(exc) is expected and exc.args == (300,)
