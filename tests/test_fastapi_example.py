"""``examples/fastapi_app`` under a real ASGI server (uvicorn, a subprocess on a free port) with a
real rqueue worker (the CLI) and a real broker (Redis; SQLite too): 200 concurrent requests, each
sending a task and awaiting its result, all answered correctly, and ``/ping`` answered while they
all wait (the server's event loop is never blocked by a waiting request)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port, rqueue_cmd

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx2")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app"
#: Concurrent requests the test sends at once.
REQUESTS = 200


class Stack:
    """The example's uvicorn server and worker, in a copy of the example directory."""

    def __init__(self, root: Path, broker_url: str, backend_url: str) -> None:
        shutil.copytree(EXAMPLE, root, dirs_exist_ok=True)
        self.root = root
        self.env = dict(
            os.environ,
            RQUEUE_BROKER_URL=broker_url,
            RQUEUE_RESULT_BACKEND=backend_url,
            PYTHONPATH=str(root),
            PYTHONUNBUFFERED="1",
        )
        self.port = free_port()
        self.procs: list[subprocess.Popen[str]] = []
        self.server = self._spawn(
            [sys.executable, "-m", "uvicorn", "web:api", "--host", "127.0.0.1", "--port", str(self.port)],
            "server.log",
        )
        self._wait_for_server()

    def _spawn(self, cmd: list[str], log: str) -> subprocess.Popen[str]:
        out = (self.root / log).open("w")
        proc = subprocess.Popen(
            cmd, cwd=self.root, env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def _wait_for_server(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/ping", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.server.poll() is None, (self.root / "server.log").read_text()
            time.sleep(0.1)
        raise AssertionError(f"uvicorn not answering:\n{(self.root / 'server.log').read_text()}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_worker(self) -> None:
        log = self.root / "worker.log"
        cmd = [*rqueue_cmd(), "-A", "tasks", "worker", "-c", "4", "--loglevel=info", "--logfile", str(log)]
        self._spawn(cmd, "w.out")
        deadline = time.monotonic() + 30
        while "ready." not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, (self.root / "w.out").read_text()
            time.sleep(0.05)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(10)


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "sqlite"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        made = Stack(tmp_path, url, url)
    else:
        made = Stack(tmp_path, f"sqlite:///{tmp_path / 'example.sqlite3'}", "")
    yield made
    made.close()


def test_fastapi_example_answers_200_concurrent_requests_with_ping_while_waiting(stack: Stack) -> None:
    async def main() -> tuple[list[httpx.Response], httpx.Response, float, httpx.Response]:
        limits = httpx.Limits(max_connections=REQUESTS + 10, max_keepalive_connections=REQUESTS + 10)
        async with httpx.AsyncClient(base_url=stack.base, timeout=120, limits=limits) as client:
            # No worker yet: every request sends its task and waits for it inside the server.
            requests = [asyncio.ensure_future(client.get("/add", params={"x": i, "y": i})) for i in range(REQUESTS)]
            await asyncio.sleep(2.0)
            assert not any(r.done() for r in requests), "answered before any worker ran the tasks"
            started = time.monotonic()
            pong = await client.get("/ping")
            ping_s = time.monotonic() - started
            await asyncio.get_running_loop().run_in_executor(None, stack.start_worker)
            answers = await asyncio.gather(*requests)
            failed = await client.get("/divide", params={"x": 1, "y": 0})
        return answers, pong, ping_s, failed

    answers, pong, ping_s, failed = asyncio.run(main())
    assert [a.status_code for a in answers] == [200] * REQUESTS
    assert [a.json()["result"] for a in answers] == [2 * i for i in range(REQUESTS)]
    assert len({a.json()["task_id"] for a in answers}) == REQUESTS
    # A blocked loop would answer /ping only after the tasks ran, and no worker runs them yet.
    assert pong.json() == {"pong": True} and ping_s < 5.0, f"/ping took {ping_s:.2f} s while {REQUESTS} waited"
    assert failed.status_code == 422 and "division by zero" in failed.json()["detail"]
