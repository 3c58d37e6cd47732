"""``rqueue report``: versions, transports and settings, with every secret masked."""

from __future__ import annotations

import platform
from pathlib import Path

from conftest import Project
from rqueue import __version__
from rqueue.report import censor, mask_url

SECRET = "s3cr3t-pw"


def _project(tmp_path: Path, settings: str = "") -> Project:
    project = Project(tmp_path, "sqlite")
    (tmp_path / "report_settings.py").write_text(settings)
    return project


def test_report_shows_versions_platform_and_transports(tmp_path: Path) -> None:
    project = _project(tmp_path)
    done = project.run_cli("-A", "tasks", "report")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"software -> rqueue:{__version__} rqueue._rqueue:{__version__} py:{platform.python_version()}" in out
    assert f"platform -> system:{platform.system()}" in out
    assert f"settings -> transport:SqliteBroker {project.broker_url}" in out
    assert f"broker_url: '{project.broker_url}'" in out


def test_report_never_shows_a_password_in_the_broker_url(tmp_path: Path, redis_url: str) -> None:
    project = _project(tmp_path)
    url = redis_url.replace("redis://", f"redis://user:{SECRET}@")
    done = project.run_cli("-A", "tasks", "-b", url, "--result-backend", url, "report")
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "transport:RedisBroker redis://user:***@127.0.0.1" in done.stdout
    assert "results:redis://user:***@127.0.0.1" in done.stdout


def test_report_masks_settings_named_like_secrets(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        "broker_transport_options = {"
        f"'password': {SECRET!r}, 'sentinel_kwargs': {{'password': {SECRET!r}}}, 'visibility_timeout': 60}}\n",
    )
    done = project.run_cli("-A", "tasks", "--config", "report_settings", "report")
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout
    assert "'password': '********'" in done.stdout
    assert "'visibility_timeout': 60" in done.stdout  # what is not secret is shown


def test_censor_masks_the_keys_celery_masks() -> None:
    names = ["security_key", "CUSTOM_API_TOKEN", "aws_secret", "db_PASSWORD", "signature", "DATABASE_URL"]
    masked = censor({**dict.fromkeys(names, SECRET), "beat_dburi": f"postgresql://u:{SECRET}@db/beat", "x": 1})
    assert masked == {**dict.fromkeys(names, "********"), "beat_dburi": "********", "x": 1}


def test_mask_url_covers_failover_lists_and_secret_query_parameters() -> None:
    masked = mask_url(f"redis://:{SECRET}@a:6379/0;redis://u:{SECRET}@b/0?password={SECRET}&db=1")
    assert SECRET not in masked and masked.count(":***@") == 2 and "password=********&db=1" in masked
    assert censor({"urls": [f"amqp://u:{SECRET}@h//"], "n": 3}) == {"urls": ["amqp://u:***@h//"], "n": 3}


def test_report_without_an_app_is_a_clear_error(tmp_path: Path) -> None:
    done = _project(tmp_path).run_cli("report")
    assert done.returncode == 2 and done.stderr.startswith("Error: no application given")
