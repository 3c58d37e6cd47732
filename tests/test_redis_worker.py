"""Worker behaviour specific to the Redis broker: kombu bindings and the eviction guard."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from conftest import Project, RedisServer

pytestmark = pytest.mark.redis


def redis_project(tmp_path: Path, server: RedisServer) -> Project:
    return Project(tmp_path, "redis", server.url)


def test_worker_declares_kombu_bindings_for_its_queues(tmp_path: Path, redis_url: str) -> None:
    project = Project(tmp_path, "redis", redis_url)
    worker = project.start_worker("-c", "1", "-Q", "celery,reports")
    client = redis.Redis.from_url(redis_url)
    assert client.smembers("_kombu.binding.celery") == {b"celery\x06\x16\x06\x16celery"}
    assert client.smembers("_kombu.binding.reports") == {b"reports\x06\x16\x06\x16reports"}
    assert worker.stop() == 0


def test_worker_refuses_a_redis_that_may_evict_messages(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, extra_args=["--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"])
    try:
        project = redis_project(tmp_path, server)
        refused = project.run_cli("-A", "tasks", "worker", "-c", "1")
        assert refused.returncode == 1
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "maxmemory-policy 'allkeys-lru'" in lines[0] and "--allow-eviction" in lines[0]
        worker = project.start_worker("-c", "1", "--allow-eviction")
        tasks = project.app()
        assert tasks.add.delay(2, 2).get(timeout=30) == 4
        assert worker.stop() == 0
    finally:
        server.stop()
