"""Worker defaults an operator relies on: concurrency is the CPU count, and
``worker_hijack_root_logger=False`` leaves the app's own logging alone."""

from __future__ import annotations

import os
import subprocess
import time

from conftest import Project, rqueue_cmd


def test_concurrency_defaults_to_the_cpu_count(project: Project) -> None:
    worker = project.start_worker()  # no -c
    stats = project.run_cli("-A", "tasks", "inspect", "stats", "--json")
    worker.stop()
    cpus = os.cpu_count()
    assert f"concurrency: {cpus} (prefork)" in worker.output()
    assert f'"max-concurrency": {cpus}' in stats.stdout


def test_hijack_root_logger_false_keeps_the_apps_root_handlers(project: Project) -> None:
    app_log = project.root / "app.log"
    (project.root / "keep_logging.py").write_text(
        "import logging\n"
        f"logging.basicConfig(filename={str(app_log)!r}, format='APP %(message)s', level=logging.INFO)\n"
        "worker_hijack_root_logger = False\n"
    )
    env = {**project.env, "TEST_CONFIG_MODULE": "keep_logging"}
    proc = subprocess.Popen(
        [*rqueue_cmd(), "-A", "tasks", "worker", "-c", "1", "-l", "info", "-n", "keep@test"],
        cwd=project.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "APP keep@test ready." not in (app_log.read_text() if app_log.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, "not logged through the app's handler"
            time.sleep(0.05)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "ready." not in err  # the worker added no handler of its own
