"""``rqueue shell``: the app, rqueue and the tasks preloaded; fed on stdin, without a terminal."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import Project, rqueue_cmd


def _shell(project: Project, stdin: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*rqueue_cmd(), "-A", "tasks", "shell", *options],
        cwd=project.root,
        env=project.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_shell_preloads_the_app_rqueue_and_every_task(tmp_path: Path) -> None:
    project = Project(tmp_path, "sqlite")
    code = "print(add.name, mul.name, app.main, celery is app, rqueue.__name__, group is rqueue.group)\n"
    done = _shell(project, code, "--python")
    assert done.returncode == 0, done.stderr
    assert "tasks.add tasks.mul tasks True rqueue True" in done.stdout
    assert "Tasks: add, always_down," in done.stderr  # the banner


def test_shell_sends_tasks(tmp_path: Path) -> None:
    project = Project(tmp_path, "sqlite")
    done = _shell(project, "print(add.delay(1, 2).id)\n", "--python")
    assert done.returncode == 0, done.stderr
    assert project.app().app.broker.queue_length("celery") == 1


def test_shell_without_tasks_preloads_none(tmp_path: Path) -> None:
    project = Project(tmp_path, "sqlite")
    done = _shell(project, "print('add' in dir(), app.main)\n", "--python", "--without-tasks")
    assert done.returncode == 0, done.stderr
    assert "False tasks" in done.stdout


def test_shell_ipython_when_not_installed_is_a_clear_error(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("IPython") is not None:
        import pytest

        pytest.skip("IPython is installed here")
    project = Project(tmp_path, "sqlite")
    done = _shell(project, "", "--ipython")
    assert done.returncode == 2 and "--ipython: IPython is not installed" in done.stderr
    both = _shell(project, "", "--ipython", "--python")
    assert both.returncode == 2 and "exclude each other" in both.stderr


def test_shell_falls_back_to_the_plain_console_without_ipython(tmp_path: Path) -> None:
    import importlib.util

    project = Project(tmp_path, "sqlite")
    done = _shell(project, "print(add.name)\n")
    assert done.returncode == 0, done.stderr
    assert "tasks.add" in done.stdout
    if importlib.util.find_spec("IPython") is None:
        assert ">>> " in done.stdout  # code.interact's prompt


def test_shell_uses_ipython_when_installed(tmp_path: Path) -> None:
    import importlib.util

    import pytest

    if importlib.util.find_spec("IPython") is None:
        pytest.skip("IPython is not installed (pip install ipython)")
    project = Project(tmp_path, "sqlite")
    done = _shell(project, "print(add.name, celery is app)\n")
    assert done.returncode == 0, done.stderr
    assert "IPython" in done.stdout and "tasks.add True" in done.stdout
    plain = _shell(project, "print(add.name)\n", "--python")
    assert "IPython" not in plain.stdout and ">>> " in plain.stdout
