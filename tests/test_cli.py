"""The rqueue command line: help, version, call/result/purge, and errors without tracebacks."""

from __future__ import annotations

import re

from conftest import Project
from rqueue import __version__


def test_cli_help_lists_commands(project: Project) -> None:
    for args in (["--help"], ["help"]):
        result = project.run_cli(*args)
        assert result.returncode == 0
        for command in ("worker", "call", "result", "purge"):
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


def test_cli_bad_broker_url_is_a_clear_error(project: Project) -> None:
    env = project.env
    env["TEST_BROKER_URL"] = "kafka://localhost"
    result = project.run_cli("-A", "tasks", "call", "tasks.add", env=env)
    assert result.returncode == 1
    assert "unknown URL scheme 'kafka'" in result.stderr and "Traceback" not in result.stderr
