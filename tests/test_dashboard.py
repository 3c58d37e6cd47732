"""``rqueue dashboard`` end to end: a real worker sending events, the dashboard as a subprocess
through the CLI, its API on every broker, and its page in a real headless Chromium (selenium)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, free_port, rqueue_cmd

TOKEN = "dash-token"
#: How long the page and the API have to show what happened (events, 2 s polls).
SHOWN_WITHIN_S = 20.0


class DashboardProcess:
    def __init__(self, project: Project) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [*rqueue_cmd(), "-A", "tasks", "dashboard", "--port", str(self.port), "--token", TOKEN],
            cwd=project.root,
            env=project.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.banner = self.proc.stdout.readline()
        assert f"http://127.0.0.1:{self.port}/#token={TOKEN}" in self.banner, self.banner + self.proc.stdout.read()
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            body = response.read().decode()
        return json.loads(body) if path.startswith("/api/") else body

    def post(self, path: str, body: dict[str, Any], token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@pytest.fixture
def dashboard_of(request: pytest.FixtureRequest) -> Iterator[Callable[[Project], DashboardProcess]]:
    started: list[DashboardProcess] = []

    def start(project: Project) -> DashboardProcess:
        started.append(DashboardProcess(project))
        return started[-1]

    yield start
    for dash in started:
        dash.close()


def eventually(check: Callable[[], Any], what: str, within_s: float = SHOWN_WITHIN_S) -> Any:
    """``check()`` once it is truthy; what it last raised (an element not there yet) is retried."""
    deadline = time.monotonic() + within_s
    last: Exception | None = None
    while True:
        try:
            got = check()
        except Exception as exc:  # retried, and shown if it never passes
            got, last = None, exc
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {what} (last: {last!r})")
        time.sleep(0.2)


def dead_letter_a_ghost(tasks: Any) -> str:
    """A task no worker knows: the worker dead-letters it. Returns the task id."""
    ghost = tasks.app.send_task("tasks.ghost", [1])
    eventually(lambda: tasks.app.broker.dead_letters("celery"), "the ghost is dead-lettered")
    return str(ghost.id)


def test_the_api_shows_workers_tasks_failures_and_acts_on_every_broker(
    broker_project: Project, dashboard_of: Callable[[Project], DashboardProcess]
) -> None:
    worker = broker_project.start_worker("-c", "1", "-E", "--hostname", "dash1@test")
    dash = dashboard_of(broker_project)
    tasks = broker_project.app()
    assert tasks.add.delay(2, 3).get(timeout=30) == 5
    with pytest.raises(Exception, match="boom"):
        tasks.fail.delay("boom").get(timeout=30)

    def shown() -> dict[str, Any]:
        state = dash.get("/api/state")
        (node,) = [w for w in state["workers"] if w["hostname"] == "dash1@test"]
        assert node["online"] and "rqueue" in node["software"]
        assert state["tasks"]["tasks.add"]["succeeded"] == 1 and state["tasks"]["tasks.fail"]["failed"] == 1
        assert "boom" in state["failures"][0]["exception"] and "Traceback" in state["failures"][0]["traceback"]
        return state

    state = eventually(shown, "the worker online, one task succeeded and one failed")
    assert "celery" in state["queues"]

    # A rate limit set on the page reaches the worker.
    status, reply = dash.post("/api/rate-limit", {"task": "tasks.add", "rate": "100/m"})
    assert status == 200 and [next(iter(r)) for r in reply["replies"]] == ["dash1@test"], reply
    assert dash.post("/api/rate-limit", {"task": "tasks.add", "rate": "1/s"}, token=None)[0] == 401

    metrics = dash.get("/metrics")
    assert re.search(r'rqueue_tasks_total\{state="succeeded",task="tasks.add"\} 1\.0', metrics)
    assert 'rqueue_worker_up{worker="dash1@test"} 1.0' in metrics

    # A dead letter, requeued with the token, is back in its queue (the worker is stopped first,
    # or it would dead-letter the unknown task again at once).
    dead_letter_a_ghost(tasks)
    assert worker.stop() == 0
    (dead,) = dash.get("/api/dead-letters?queue=celery")["dead_letters"]
    assert dead["reason"] == "unregistered" and dead["task"].startswith("tasks.ghost[")
    assert dash.post("/api/dead-letters/requeue", {"queue": "celery", "ids": [dead["id"]]}, token="wrong")[0] == 401
    assert dash.post("/api/dead-letters/requeue", {"queue": "celery", "ids": [dead["id"]]}) == (200, {"requeued": 1})
    assert tasks.app.broker.queue_length("celery") == 1
    assert dash.get("/api/dead-letters?queue=celery")["dead_letters"] == []
    # The worker said goodbye: the dashboard shows it offline.
    eventually(
        lambda: not next(w for w in dash.get("/api/state")["workers"] if w["hostname"] == "dash1@test")["online"],
        "the stopped worker shown offline",
    )


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make chromium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        options.add_argument(arg)
    options.binary_location = str(shutil.which("chromium"))
    driver = webdriver.Chrome(options=options, service=Service(str(shutil.which("chromedriver"))))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_in_chromium_shows_a_live_worker_a_task_completing_and_requeues_a_dead_letter(
    tmp_path: Path,
    redis_url: str,
    browser: Any,
    dashboard_of: Callable[[Project], DashboardProcess],
    request: pytest.FixtureRequest,
) -> None:
    from selenium.webdriver.common.by import By

    project = Project(tmp_path, "redis", redis_url)
    try:
        worker = project.start_worker("-c", "1", "-E", "--hostname", "page1@test")
        dash = dashboard_of(project)
        tasks = project.app()
        browser.get(f"{dash.url}/#token={TOKEN}")
        screenshot = tmp_path / "dashboard.png"
        try:

            def cell(selector: str) -> str:
                return str(browser.find_element(By.CSS_SELECTOR, selector).text)

            eventually(lambda: "online" in cell('#workers tr[data-worker="page1@test"]'), "the worker row, online")
            assert tasks.add.delay(1, 1).get(timeout=30) == 2
            eventually(
                lambda: cell('#tasks tr[data-task="tasks.add"] td:nth-child(4)') == "1", "tasks.add: 1 succeeded"
            )
            assert tasks.add.delay(2, 2).get(timeout=30) == 4
            eventually(
                lambda: cell('#tasks tr[data-task="tasks.add"] td:nth-child(4)') == "2", "tasks.add: 2 succeeded"
            )

            dead_letter_a_ghost(tasks)
            assert worker.stop() == 0
            browser.refresh()  # the dead letters list reloads every 10 s; a reload shows it at once
            button = eventually(
                lambda: browser.find_element(By.CSS_SELECTOR, "#dead-letters tr[data-id] button.requeue"),
                "the dead letter's requeue button",
            )
            button.click()
            eventually(lambda: tasks.app.broker.queue_length("celery") == 1, "the dead letter back in its queue")
            eventually(lambda: "Requeued 1 dead letter" in cell("#message"), "the page saying so")
            browser.save_screenshot(str(screenshot))
        except BaseException:
            browser.save_screenshot(str(screenshot))
            print(f"dashboard screenshot at failure: {screenshot}")
            raise
    finally:
        project.close()
