"""The rqueue command line: help, version, call/result/purge, and errors without tracebacks."""

from __future__ import annotations

import os
import re

import pytest

from conftest import Project
from rqueue import __version__


def test_cli_help_lists_commands(project: Project) -> None:
    for args in (["--help"], ["help"]):
        result = project.run_cli(*args)
        assert result.returncode == 0
        for command in ("worker", "call", "result", "purge", "status", "report", "shell"):
            assert command in result.stdout


def test_cli_worker_help_lists_every_option(project: Project) -> None:
    result = project.run_cli("worker", "--help")
    assert result.returncode == 0
    for option in (
        "--loglevel",
        "--concurrency",
        "--pool",
        "--queues",
        "--hostname",
        "--pidfile",
        "--logfile",
        "--statedb",
        "--detach",
        "--uid",
        "--gid",
        "--umask",
        "--workdir",
    ):
        assert option in result.stdout


def test_cli_version(project: Project) -> None:
    assert project.run_cli("--version").stdout.strip() == f"rqueue {__version__}"


def test_cli_bad_app_is_one_line_exit_2(project: Project) -> None:
    for spec in ("no_such_module", "tasks:nothing", "json"):
        result = project.run_cli("-A", spec, "worker")
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: cannot load app"), result.stderr
        assert "Traceback" not in result.stderr


def test_cli_app_spec_forms(project: Project) -> None:
    (project.root / "proj").mkdir()
    (project.root / "proj" / "__init__.py").write_text("from tasks import app\n")
    for spec in ("tasks", "tasks:app", "proj"):
        result = project.run_cli("-A", spec, "call", "tasks.add", "--args", "[1, 2]")
        assert result.returncode == 0, result.stderr


def test_cli_call_then_result(project: Project) -> None:
    sent = project.run_cli("-A", "tasks", "call", "tasks.add", "--args", "[4, 4]")
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", task_id)
    assert project.run_cli("-A", "tasks", "result", task_id).stdout.strip() == "PENDING"
    project.start_worker("-c", "1")
    shown = project.run_cli("-A", "tasks", "result", task_id, "--timeout", "30")
    assert shown.stdout.strip() == "8", shown.stderr


def test_cli_result_of_a_failure_shows_type_and_traceback(project: Project) -> None:
    task_id = project.run_cli("-A", "tasks", "call", "tasks.fail", "--args", '["bad"]').stdout.strip()
    project.start_worker("-c", "1")
    shown = project.run_cli("-A", "tasks", "result", task_id, "--timeout", "30", "--traceback")
    assert shown.returncode == 1
    assert "FAILURE: CustomError: bad" in shown.stdout and "Traceback" in shown.stdout


def test_cli_call_bad_json_is_a_clear_error(project: Project) -> None:
    result = project.run_cli("-A", "tasks", "call", "tasks.add", "--args", "[4,")
    assert result.returncode == 2 and result.stderr.startswith("Error: --args: not valid JSON")


def test_cli_purge_deletes_waiting_messages(project: Project) -> None:
    for _ in range(3):
        project.run_cli("-A", "tasks", "call", "tasks.add", "--args", "[1, 1]")
    result = project.run_cli("-A", "tasks", "purge", "-f")
    assert result.stdout.strip() == "Purged 3 messages from 1 known task queue."
    assert project.run_cli("-A", "tasks", "purge", "-f").stdout.startswith("Purged 0 messages")


def test_cli_purge_without_a_terminal_to_confirm_on_refuses(project: Project) -> None:
    project.run_cli("-A", "tasks", "call", "tasks.add", "--args", "[1, 1]")
    for command in (("purge",), ("dlq", "purge")):
        refused = project.run_cli("-A", "tasks", *command)  # stdin is not a terminal here
        assert refused.returncode == 1
        assert "stdin is not a terminal: pass -f to go ahead" in refused.stderr and "Traceback" not in refused.stderr
    assert project.run_cli("-A", "tasks", "purge", "-f").stdout.startswith("Purged 1 message ")


def test_cli_bad_broker_url_is_a_clear_error(project: Project) -> None:
    env = project.env
    env["TEST_BROKER_URL"] = "kafka://localhost"
    result = project.run_cli("-A", "tasks", "call", "tasks.add", env=env)
    assert result.returncode == 1
    assert "unknown URL scheme 'kafka'" in result.stderr and "Traceback" not in result.stderr


def test_worker_on_redis_without_redis_py_says_how_to_install_it(project: Project) -> None:
    if project.kind != "redis":
        pytest.skip("a Redis project only")
    hide = project.root / "hide-redis-py" / "redis"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('redis-py hidden by the test')\n")
    env = project.env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hide.parent), env.get("PYTHONPATH")]))
    result = project.run_cli("-A", "tasks", "worker", "-c", "1", env=env, timeout=60)
    assert result.returncode != 0
    assert "pip install 'rqueue[redis]'" in result.stderr and "Traceback" not in result.stderr


def test_node_name_expansions() -> None:
    import socket

    from rqueue.cli import node_name

    host = socket.gethostname()
    assert node_name("w1@%h") == f"w1@{host}"
    assert node_name("w1@%n") == f"w1@{host.partition('.')[0]}"
    assert node_name("100%%@%n") == f"100%@{host.partition('.')[0]}"
    fqdn = socket.getfqdn()
    assert node_name("x@%d") == f"x@{fqdn.partition('.')[2]}"


def test_top_level_broker_backend_and_config_options(project: Project) -> None:
    from rqueue import App

    other = project.root / "other.db"
    sent = project.run_cli(
        "-A", "tasks", "-b", f"sqlite:///{other}", "--result-backend", f"sqlite:///{other}",
        "call", "tasks.add", "--args", "[1, 1]",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert App("check", broker=f"sqlite:///{other}").broker.queue_length("celery") == 1
    (project.root / "elsewhere_settings.py").write_text("task_default_queue = 'elsewhere'\n")
    routed = project.run_cli(
        "-A", "tasks", "-b", f"sqlite:///{other}", "--config", "elsewhere_settings",
        "call", "tasks.add", "--args", "[2, 2]",
    )  # fmt: skip
    assert routed.returncode == 0, routed.stderr
    assert App("check", broker=f"sqlite:///{other}").broker.queue_length("elsewhere") == 1
    missing = project.run_cli("-A", "tasks", "--config", "no_such_settings", "call", "tasks.add")
    assert missing.returncode == 2 and "--config no_such_settings: cannot import it" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_worker_exclude_queues_fair_and_time_limit_options(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1", "-Q", "celery,spare", "-X", "spare", "-O", "fair", "--time-limit", "1")
    queues = project.run_cli("-A", "tasks", "inspect", "active_queues", "--json")
    assert '"celery"' in queues.stdout and '"spare"' not in queues.stdout
    stats = project.run_cli("-A", "tasks", "inspect", "stats", "--json")
    assert '"prefetch_count": 1' in stats.stdout
    with pytest.raises(Exception, match=r"TimeLimitExceeded|time limit"):
        tasks.sleep.delay(5).get(timeout=30)
    none_left = project.run_cli("-A", "tasks", "worker", "-Q", "celery", "-X", "celery")
    assert none_left.returncode != 0 and "leaves no queue to consume" in none_left.stderr
