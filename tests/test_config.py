"""Settings: names, precedence, validation, legacy names, suggestions."""

from __future__ import annotations

import sys
import types
import warnings

import pytest

from rqueue import App
from rqueue.config import DEFAULTS, Settings
from rqueue.exceptions import ConfigurationError


def test_config_attribute_assignment_is_read_back() -> None:
    app = App("tasks")
    app.conf.task_serializer = "msgpack"
    assert app.conf.task_serializer == "msgpack"
    assert app.conf["task_serializer"] == "msgpack"


def test_config_update_sets_the_walkthrough_settings() -> None:
    app = App("tasks")
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        timezone="Europe/Oslo",
        enable_utc=True,
    )
    assert app.conf.timezone == "Europe/Oslo"
    assert app.conf.accept_content == ["json"]


def test_config_from_object_loads_a_module_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("celeryconfig_test")
    module.broker_url = "sqlite:///x.db"  # type: ignore[attr-defined]
    module.task_serializer = "msgpack"  # type: ignore[attr-defined]
    module.os = sys  # type: ignore[attr-defined]  # an import in a config module is not a setting
    monkeypatch.setitem(sys.modules, "celeryconfig_test", module)
    app = App("tasks")
    app.config_from_object("celeryconfig_test")
    assert app.conf.broker_url == "sqlite:///x.db"
    assert app.conf.task_serializer == "msgpack"


def test_config_app_keyword_settings_apply() -> None:
    app = App("tasks", task_ignore_result=True)
    assert app.conf.task_ignore_result is True


def test_config_legacy_upper_case_name_maps_and_warns_once() -> None:
    settings = Settings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings["CELERY_TASK_SERIALIZER"] = "msgpack"
        settings["CELERY_TASK_SERIALIZER"] = "json"
    assert settings.task_serializer == "json"
    relevant = [w for w in caught if "CELERY_TASK_SERIALIZER" in str(w.message)]
    assert len(relevant) == 1
    assert issubclass(relevant[0].category, DeprecationWarning)
    assert "task_serializer" in str(relevant[0].message)


def test_config_every_legacy_name_of_the_walkthrough_is_accepted() -> None:
    names = {
        "BROKER_URL": "sqlite:///a.db",
        "CELERY_RESULT_BACKEND": "sqlite:///b.db",
        "CELERY_RESULT_SERIALIZER": "json",
        "CELERY_ACCEPT_CONTENT": ["json"],
        "CELERY_TIMEZONE": "UTC",
        "CELERY_ENABLE_UTC": True,
        "CELERY_ROUTES": {"a": "b"},
        "CELERY_ANNOTATIONS": {"a": {"rate_limit": "1/s"}},
        "CELERY_IGNORE_RESULT": False,
    }
    settings = Settings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        settings.update(names)
    assert settings.result_backend == "sqlite:///b.db"
    assert settings.task_routes == {"a": "b"}


def test_config_unknown_name_suggests_the_nearest() -> None:
    app = App("tasks")
    with pytest.raises(ConfigurationError, match="did you mean task_serializer"):
        app.conf.task_serializr = "json"
    with pytest.raises(ConfigurationError, match="did you mean result_backend"):
        App("tasks", result_backnd="sqlite:///x.db")
    with pytest.raises(AttributeError, match="did you mean broker_url"):
        _ = app.conf.broker_ur


def test_config_wrong_type_names_the_setting() -> None:
    app = App("tasks")
    with pytest.raises(ConfigurationError, match="worker_prefetch_multiplier"):
        app.conf.worker_prefetch_multiplier = "four"
    with pytest.raises(ConfigurationError, match="task_acks_late"):
        app.conf.task_acks_late = "yes"
    with pytest.raises(ConfigurationError, match="worker_concurrency"):
        app.conf.worker_concurrency = True  # a bool is not a process count


def test_config_unknown_serializer_names_the_setting() -> None:
    app = App("tasks")
    with pytest.raises(ConfigurationError, match=r"task_serializer.*yaml"):
        app.conf.task_serializer = "yaml"
    with pytest.raises(ConfigurationError, match="accept_content"):
        app.conf.accept_content = ["json", "bson"]


def test_config_update_is_all_or_nothing() -> None:
    app = App("tasks")
    with pytest.raises(ConfigurationError):
        app.conf.update(task_serializer="msgpack", worker_concurrency="x")
    assert app.conf.task_serializer == "json"


def test_config_environment_supplies_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RQUEUE_BROKER_URL", "sqlite:///env.db")
    monkeypatch.setenv("RQUEUE_RESULT_BACKEND", "sqlite:///env-results.db")
    app = App("tasks")
    assert app.conf.broker_url == "sqlite:///env.db"
    assert app.backend_url == "sqlite:///env-results.db"
    assert App("tasks", broker="sqlite:///explicit.db").conf.broker_url == "sqlite:///explicit.db"


def test_config_defaults_table_has_the_walkthrough_names() -> None:
    for name in (
        "broker_url",
        "result_backend",
        "task_serializer",
        "result_serializer",
        "accept_content",
        "timezone",
        "enable_utc",
        "task_routes",
        "task_annotations",
        "task_ignore_result",
        "task_acks_late",
        "task_track_started",
        "worker_prefetch_multiplier",
        "worker_concurrency",
        "result_expires",
    ):
        assert name in DEFAULTS
    assert App("x").conf.task_acks_late is True  # documented default: at-least-once


def test_config_mutable_defaults_are_not_shared() -> None:
    a, b = App("a"), App("b")
    a.conf.accept_content.append("msgpack")
    assert b.conf.accept_content == ["json"]
