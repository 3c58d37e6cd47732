"""Celery's event protocol between rqueue and the real ``celery`` and ``flower`` packages, on a real
redis-server: Celery's receiver reads an rqueue worker's events, rqueue's receiver reads a Celery
worker's, and the real Flower (a subprocess) shows and steers rqueue workers, checked through its
HTTP API and, once, in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, RedisServer, free_port
from interop.test_celery_interop import CeleryWorker, make_celery, wait_for
from rqueue import App
from rqueue.events import EventReceiver

pytestmark = pytest.mark.redis

celery = pytest.importorskip("celery")

#: Flower's app module for the test project: a Celery stand-in for the rqueue app (docs/events.md).
FLOWER_APP = """\
import tasks
from rqueue.events.flower import celery_app

app = celery_app(tasks.app)
"""


# -- Celery <-> rqueue ----------------------------------------------------------------------------------


def test_celery_event_receiver_reads_an_rqueue_workers_events(tmp_path: Path, redis_url: str) -> None:
    project = Project(tmp_path, "redis", redis_url)
    capp = make_celery(redis_url)
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        if event["type"] == "task-succeeded":
            done.set()

    try:
        with capp.connection_for_read() as conn:
            receiver = capp.events.Receiver(conn, handlers={"*": on_event})
            thread = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=15), daemon=True)
            thread.start()
            time.sleep(0.5)  # subscribed
            tasks = project.app()
            project.start_worker("-E", "-P", "solo", "-n", "seen-by-celery@test")
            result = tasks.add.delay(3, 4)
            assert done.wait(15), [e["type"] for e in seen]
            receiver.should_stop = True
        kinds = [e["type"] for e in seen if e.get("uuid") in (None, result.id)]
        assert "worker-online" in kinds
        assert kinds.index("task-received") < kinds.index("task-started") < kinds.index("task-succeeded")
        succeeded = next(e for e in seen if e["type"] == "task-succeeded")
        assert (succeeded["hostname"], succeeded["result"]) == ("seen-by-celery@test", "7")
        # Celery's own state machine (what Flower uses) makes sense of them.
        state = capp.events.State()
        for event in seen:
            state.event(dict(event))
        assert state.tasks[result.id].state == "SUCCESS"
        assert state.tasks[result.id].name == "tasks.add"
        assert state.workers["seen-by-celery@test"].alive
    finally:
        project.close()
        capp.close()


def test_rqueue_receiver_reads_a_celery_workers_events(tmp_path: Path, redis_url: str) -> None:
    worker = CeleryWorker(redis_url, "celery-ev", tmp_path / "celery.log", extra=("-E",))
    app = App("watcher", broker=redis_url, backend=redis_url)
    try:
        worker.wait_ready()
        with EventReceiver(app) as receiver:
            result = app.send_task("tasks.add", (5, 6), queue="celery-ev")
            events: list[dict[str, Any]] = []
            deadline = time.monotonic() + 20
            while not any(e["type"] == "task-succeeded" for e in events):
                assert time.monotonic() < deadline, [e["type"] for e in events]
                events.extend(receiver.poll(0.2))
        assert result.get(timeout=5) == 11
        mine = [e for e in events if e.get("uuid") == result.id]
        assert [e["type"] for e in mine] == ["task-received", "task-started", "task-succeeded"]
        assert mine[2]["result"] == "11"
        assert any(e["type"] == "worker-heartbeat" for e in events)  # the receiver's wakeup asked for it
    finally:
        worker.kill()


@pytest.mark.rabbitmq
def test_celery_event_receiver_reads_an_rqueue_workers_events_on_rabbitmq(
    tmp_path: Path, amqp_url: str, redis_url: str
) -> None:
    """Celery's receiver declares ``celeryev`` first (durable topic), rqueue's worker publishes to
    it: the flags agree, or RabbitMQ would refuse the second declaration."""
    project = Project(tmp_path, "amqp", redis_url, amqp_url)
    capp = make_celery(amqp_url, redis_url)
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        if event["type"] == "task-succeeded":
            done.set()

    try:
        with capp.connection_for_read() as conn:
            receiver = capp.events.Receiver(conn, handlers={"*": on_event})
            thread = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=20), daemon=True)
            thread.start()
            time.sleep(1.0)  # its queue is bound
            tasks = project.app()
            project.start_worker("-E", "-P", "solo", "-n", "rabbit-ev@test")
            result = tasks.add.delay(8, 9)
            assert done.wait(20), [e["type"] for e in seen]
            receiver.should_stop = True
        succeeded = next(e for e in seen if e["type"] == "task-succeeded")
        assert (succeeded["uuid"], succeeded["result"]) == (result.id, "17")
        assert any(e["type"] == "worker-online" and e["hostname"] == "rabbit-ev@test" for e in seen)
    finally:
        project.close()
        capp.close()


# -- the real Flower ----------------------------------------------------------------------------------------


class Flower:
    """``celery -A flower_app flower`` on a free port, against the project's Redis."""

    def __init__(self, project: Project) -> None:
        pytest.importorskip("flower")
        (project.root / "flower_app.py").write_text(FLOWER_APP)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = project.root / "flower.log"
        cmd = [sys.executable, "-m", "celery", "-A", "flower_app", "flower", "--address=127.0.0.1"]
        cmd += [f"--port={self.port}", "--inspect_timeout=3000", "--logging=info"]
        env = {**project.env, "FLOWER_UNAUTHENTICATED_API": "true"}  # a loopback test server
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=project.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._listening, 30, f"Flower listening on {self.port}:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def _listening(self) -> bool:
        assert self.proc.poll() is None, self.log_text()
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=15) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def get_json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, f"{path}: HTTP {status}\n{body}\n{self.log_text()}"
        return json.loads(body)

    def post(self, path: str, **form: str) -> Any:
        data = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path}: HTTP {exc.code}\n{exc.read().decode()}\n{self.log_text()}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def flower_fleet(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Project, Flower]]:
    """An rqueue worker WITHOUT -E (Flower turns task events on itself) and Flower, on their own
    Redis database; a task that succeeds and one that fails ran while Flower watched."""
    import redis

    url = redis_server.url.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(url).flushdb()
    project = Project(tmp_path_factory.mktemp("flower"), "redis", url)
    flower = Flower(project)
    try:
        project.start_worker("-c", "2", "-n", "flowered@test")
        tasks = project.app()
        flower_api = flower
        wait_for(lambda: flower_api.get_json("/api/workers?status=true").get("flowered@test") is True, 20, "online")
        # Flower's enable_events reaches the worker within its interval (about 5 s); then tasks show.
        deadline = time.monotonic() + 20
        while True:
            probe = tasks.add.delay(0, 0)
            probe.get(timeout=10)
            time.sleep(0.3)
            if probe.id in flower.get_json("/api/tasks"):
                break
            assert time.monotonic() < deadline, f"Flower never saw a task:\n{flower.log_text()}"
        project.ok = tasks.add.delay(2, 40)  # type: ignore[attr-defined]
        project.bad = tasks.fail.delay("flower sees this")  # type: ignore[attr-defined]
        project.ok.get(timeout=10)  # type: ignore[attr-defined]
        with pytest.raises(Exception, match="flower sees this"):
            project.bad.get(timeout=10)  # type: ignore[attr-defined]
        yield project, flower
    finally:
        flower.stop()
        project.close()


def test_flower_shows_rqueue_workers_and_tasks(flower_fleet: tuple[Project, Flower]) -> None:
    project, flower = flower_fleet
    ok, bad = project.ok.id, project.bad.id  # type: ignore[attr-defined]
    assert flower.get_json("/api/workers?status=true") == {"flowered@test": True}

    def both_done() -> bool:
        listed = flower.get_json("/api/tasks")
        return listed.get(ok, {}).get("state") == "SUCCESS" and listed.get(bad, {}).get("state") == "FAILURE"

    wait_for(both_done, 10, "Flower lists both tasks finished")
    listed = flower.get_json("/api/tasks")
    assert listed[ok]["name"] == "tasks.add"
    assert listed[ok]["worker"] == "flowered@test"
    assert listed[ok]["result"] == "42"
    assert 0 <= listed[ok]["runtime"] < 5
    assert "flower sees this" in listed[bad]["exception"]
    assert "Traceback" in listed[bad]["traceback"]

    status, page = flower.get(f"/task/{bad}")
    assert status == 200 and "flower sees this" in page, f"{status}\n{flower.log_text()}"
    status, page = flower.get("/worker/flowered@test")
    assert status == 200, f"{page}\n{flower.log_text()}"
    assert "KeyError" not in flower.log_text()
    for shown in ("flowered@test", "Max concurrency", "Prefetch Count", "Processed tasks", "maxrss", "Transport"):
        assert shown in page, shown
    workers = flower.get_json("/api/workers?refresh=1")
    queue = workers["flowered@test"]["active_queues"][0]
    assert {"exclusive", "auto_delete", "no_ack", "alias", "queue_arguments", "binding_arguments"} <= queue.keys()
    pool = workers["flowered@test"]["stats"]["pool"]
    assert pool["max-concurrency"] == 2
    assert {"processes", "max-tasks-per-child", "put-guarded-by-semaphore", "timeouts", "writes"} <= pool.keys()
    assert pool["writes"]["total"] >= 2


def test_flower_rate_limit_and_revoke_act_on_rqueue_workers(flower_fleet: tuple[Project, Flower]) -> None:
    project, flower = flower_fleet
    tasks = project.app()
    reply = flower.post("/api/task/rate-limit/tasks.record", workername="flowered@test", ratelimit="7/m")
    assert reply == {"message": "new rate limit set successfully"}
    conf = tasks.app.control.inspect(destination=["flowered@test"], timeout=5).stats()
    assert conf is not None  # the worker still answers
    project.workers[0].wait_for_log("New rate limit for tasks of type tasks.record: 7/m")

    later = tasks.record.apply_async(("revoked-by-flower",), countdown=3)
    assert flower.post(f"/api/task/revoke/{later.id}") == {"message": f"Revoked '{later.id}'"}
    revoked = tasks.app.control.inspect(destination=["flowered@test"], timeout=5).revoked()
    assert later.id in revoked["flowered@test"]
    with pytest.raises(Exception, match="revoked"):
        later.get(timeout=10)
    assert project.ledger_count("revoked-by-flower") == 0


def test_flower_workers_page_in_headless_chromium(flower_fleet: tuple[Project, Flower], tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    # Debian's chromium (make chromium); a machine that ships Google Chrome and its driver instead
    # (GitHub's Ubuntu runners) runs the test with those.
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    chromium = next((found for name in names if (found := shutil.which(name))), None)
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("no chromium or no chromedriver on PATH (`make chromium` installs Debian's packages)")
    _, flower = flower_fleet
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver_path)
    browser = webdriver.Chrome(options=options, service=service)
    try:
        browser.set_page_load_timeout(30)
        browser.get(flower.url + "/workers")
        deadline = time.monotonic() + 20
        while True:
            shown = browser.find_element("tag name", "body").text
            if "flowered@test" in shown.replace("\n", ""):  # a narrow column wraps the name
                break
            if time.monotonic() > deadline:
                browser.save_screenshot(str(tmp_path / "flower-workers-failed.png"))
                raise AssertionError(f"the worker is not on Flower's workers page:\n{shown}")
            time.sleep(0.2)
        shot = tmp_path / "flower-workers.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 1000
        assert "Online" in shown
    finally:
        browser.quit()
