"""The dashboard's HTTP API in-process (Starlette's test client) on a real SQLite broker: the token,
bad requests, dead letters, rate limits, metrics, and the command's own errors."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from conftest import rqueue_cmd
from rqueue import App
from rqueue.dashboard import Dashboard
from rqueue.dashboard.web import create_web_app

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app(tmp_path: Path) -> App:
    app = App("dash", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}")

    @app.task(name="dash.add", rate_limit="10/s")
    def add(x: int, y: int) -> int:
        return x + y

    return app


@pytest.fixture
def dashboard(app: App) -> Dashboard:
    events = [
        {"type": "worker-heartbeat", "hostname": "w@h", "freq": 2.0, "active": 0, "processed": 1},
        {"type": "task-received", "uuid": "1", "name": "dash.add", "hostname": "w@h"},
        {"type": "task-succeeded", "uuid": "1", "hostname": "w@h", "runtime": 0.003},
    ]
    dashboard = Dashboard(app)
    for event in events:
        dashboard.state.apply(event)
    dashboard.state.sample_queues({"celery": 0})
    return dashboard


@pytest.fixture
def client(dashboard: Dashboard) -> Iterator[TestClient]:
    with TestClient(create_web_app(dashboard, TOKEN, protect_reads=False)) as client:
        yield client


def dead_letter(app: App, count: int = 2) -> list[str]:
    """Messages dead-lettered the way a worker does it: leased, then moved aside."""
    for _ in range(count):
        app.send_task("dash.ghost")
    native = app.broker.native  # type: ignore[attr-defined]
    for delivery in native.fetch(["celery"], count, "test/1", 60_000):
        native.dead_letter(delivery.tag, "unregistered", "no such task")
    return [d.id for d in app.broker.dead_letters("celery")]  # type: ignore[attr-defined]


def test_the_page_and_state_are_readable_on_loopback_without_the_token(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<title>rqueue dashboard</title>" in page.text
    state = client.get("/api/state").json()
    assert state["workers"][0]["hostname"] == "w@h" and state["tasks"]["dash.add"]["succeeded"] == 1
    assert state["rate_limits"]["dash.add"] == "10/s" and state["dead_letter_queues"] == ["celery"]


def test_reads_need_the_token_beyond_loopback(dashboard: Dashboard) -> None:
    with TestClient(create_web_app(dashboard, TOKEN, protect_reads=True)) as client:
        assert client.get("/").status_code == 200  # the page holds no data
        assert client.get("/api/state").status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/api/state", headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}]
)
def test_actions_refuse_a_missing_or_wrong_token_and_change_nothing(
    client: TestClient, app: App, headers: dict[str, str]
) -> None:
    ids = dead_letter(app)
    for path, body in [
        ("/api/dead-letters/requeue", {"queue": "celery", "all": True}),
        ("/api/dead-letters/purge", {"queue": "celery"}),
        ("/api/rate-limit", {"task": "dash.add", "rate": "1/m"}),
    ]:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 401 and "token" in response.json()["error"]
    assert [d.id for d in app.broker.dead_letters("celery")] == ids  # type: ignore[attr-defined]
    assert client.get("/api/state").json()["rate_limits"]["dash.add"] == "10/s"


def test_dead_letters_are_listed_requeued_one_by_one_or_all_and_purged(client: TestClient, app: App) -> None:
    first, second = dead_letter(app)
    listed = client.get("/api/dead-letters", params={"queue": "celery"}).json()["dead_letters"]
    assert [d["id"] for d in listed] == [first, second]
    assert listed[0]["reason"] == "unregistered" and listed[0]["task"].startswith("dash.ghost[")
    assert client.post("/api/dead-letters/requeue", json={"queue": "celery", "ids": [first]}, headers=AUTH).json() == {
        "requeued": 1
    }
    assert app.broker.queue_length("celery") == 1
    assert client.post("/api/dead-letters/requeue", json={"queue": "celery", "all": True}, headers=AUTH).json() == {
        "requeued": 1
    }
    assert app.broker.queue_length("celery") == 2
    dead_letter(app, 2)
    assert client.post("/api/dead-letters/purge", json={"queue": "celery"}, headers=AUTH).json() == {"purged": 2}
    assert client.get("/api/dead-letters").json()["dead_letters"] == []


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/api/dead-letters/requeue", b"not json", "not JSON"),
        ("/api/dead-letters/requeue", b"[1]", "JSON object"),
        ("/api/dead-letters/requeue", b'{"queue": "celery"}', "'ids' must be"),
        ("/api/dead-letters/requeue", b'{"queue": "celery", "ids": [1]}', "'ids' must be"),
        ("/api/dead-letters/purge", b'{"queue": ""}', "'queue' must be"),
        ("/api/rate-limit", b'{"task": "dash.add", "rate": "5/fortnight"}', 'invalid rate limit "5/fortnight"'),
        ("/api/rate-limit", b'{"task": "dash.nope", "rate": "5/s"}', "unknown task 'dash.nope'"),
        ("/api/rate-limit", b'{"task": "dash.add", "rate": 5}', "'rate' must be a string"),
    ],
)
def test_bad_requests_get_400_with_the_reason(client: TestClient, path: str, body: bytes, error: str) -> None:
    response = client.post(path, content=body, headers=AUTH)
    assert response.status_code == 400 and error in response.json()["error"]


def test_a_rate_limit_set_here_is_shown_and_broadcast(client: TestClient) -> None:
    response = client.post("/api/rate-limit", json={"task": "dash.add", "rate": "2/m"}, headers=AUTH)
    assert response.status_code == 200 and response.json()["replies"] == []  # no worker runs here
    assert client.get("/api/state").json()["rate_limits"]["dash.add"] == "2/m"


def test_metrics_describe_the_cluster(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert 'rqueue_tasks_total{state="succeeded",task="dash.add"} 1.0' in text
    assert 'rqueue_task_runtime_seconds_bucket{le="0.005",task="dash.add"} 1.0' in text
    assert 'rqueue_worker_up{worker="w@h"} 1.0' in text
    assert 'rqueue_queue_depth{queue="celery"} 0.0' in text


def test_the_command_says_when_its_port_is_taken(tmp_path: Path) -> None:
    (tmp_path / "proj.py").write_text(f"from rqueue import App\napp = App('p', broker='sqlite:///{tmp_path}/b.db')\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*rqueue_cmd(), "-A", "proj", "dashboard", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.startswith(f"Error: cannot serve the dashboard on 127.0.0.1:{port}")
