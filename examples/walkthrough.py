"""The first-steps walkthrough, run end to end on the embedded SQLite default.

It writes ``tasks.py`` into a fresh directory, starts ``rqueue -A tasks worker --loglevel=info`` there
(a real worker process), and then does what a newcomer does in the Python shell: ``add.delay(4, 4)``,
``ready()``, ``get()``, ``state``, ``id``, ``backend``, a failing task, the configuration calls, and
routing to a second worker with ``rqueue control``/``inspect``. Run it with ``make demo``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TASKS_PY = textwrap.dedent("""
    from rqueue import App

    app = App("tasks")

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def divide(x, y):
        return x / y
""")


def step(title: str) -> None:
    print(f"\n== {title}")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rqueue-walkthrough-"))
    (workdir / "tasks.py").write_text(TASKS_PY)
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))
    rqueue = Path(sys.executable).with_name("rqueue")

    def start_worker(log: Path, *args: str) -> subprocess.Popen[str] | None:
        proc = subprocess.Popen(
            [str(rqueue), "-A", "tasks", "worker", "--loglevel=info", "--logfile", str(log), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while "ready." not in (log.read_text() if log.exists() else ""):
            if proc.poll() is not None or time.monotonic() > deadline:
                print(proc.stdout.read() if proc.stdout else "", log.read_text() if log.exists() else "")
                return None
            time.sleep(0.05)
        return proc

    def run(*args: str) -> int:
        print(f"$ rqueue -A tasks {' '.join(args)}")
        done = subprocess.run([str(rqueue), "-A", "tasks", *args], capture_output=True, text=True)
        print(done.stdout + done.stderr, end="")
        return done.returncode

    step(f"4. Run the worker (in {workdir}): rqueue -A tasks worker --loglevel=info")
    log = workdir / "worker.log"
    worker = start_worker(log)
    if worker is None:
        return 1
    try:
        from tasks import add, app, divide  # type: ignore[import-not-found]

        step("5. Call the task: result = add.delay(4, 4)")
        result = add.delay(4, 4)
        print(">>> result.ready()        ", result.ready())
        print(">>> result.get(timeout=1)  ", result.get(timeout=1))
        print(">>> result.state          ", repr(result.state))
        print(">>> result.id             ", repr(result.id))
        print(">>> result.backend        ", result.backend)
        assert result.get(timeout=1) == 8 and result.state == "SUCCESS"

        step("6. A task that raises: divide.delay(1, 0)")
        failed = divide.delay(1, 0)
        try:
            failed.get(timeout=5)
        except ZeroDivisionError as exc:
            print(">>> failed.get() raised    ", repr(exc))
        print(">>> failed.get(propagate=False)", repr(failed.get(propagate=False)))
        print(">>> failed.traceback (last line)", (failed.traceback or "").strip().splitlines()[-1])

        step("7. Configuration")
        app.conf.task_serializer = "json"
        app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            result_serializer="json",
            timezone="Europe/Oslo",
            enable_utc=True,
        )
        print(">>> app.conf.timezone      ", app.conf.timezone)
        try:
            app.conf.task_serializr = "json"
        except Exception as exc:
            print(">>> app.conf.task_serializr = 'json' ->", type(exc).__name__, exc)

        step("8. Routing and rate limits: task_routes = {'tasks.add': 'low-priority'}")
        app.conf.task_routes = {"tasks.add": "low-priority"}
        routed = add.delay(2, 3)
        print("$ rqueue -A tasks worker -Q low-priority -n worker1@%h")
        second = start_worker(workdir / "worker1.log", "-Q", "low-priority", "-n", "worker1@%h", "-c", "1")
        if second is None:
            return 1
        try:
            print(">>> add.delay(2, 3).get(timeout=10)", routed.get(timeout=10))
            assert run("control", "rate_limit", "tasks.add", "10/m") == 0
            assert run("inspect", "ping") == 0
            assert run("inspect", "active_queues", "-d", f"worker1@{socket.gethostname()}") == 0
        finally:
            second.send_signal(signal.SIGINT)
            second.wait(30)
    finally:
        step("Ctrl-C: warm shutdown")
        worker.send_signal(signal.SIGINT)
        code = worker.wait(30)
        print(worker.stdout.read() if worker.stdout else "")
        print("--- worker log ---")
        print(log.read_text())
        print(f"worker exited with {code}")
    step("With no worker alive, control and inspect say so (and exit non-zero)")
    nobody = run("inspect", "ping", "--timeout", "0.5")
    return 0 if code == 0 and nobody != 0 else 1


if __name__ == "__main__":
    sys.exit(main())
