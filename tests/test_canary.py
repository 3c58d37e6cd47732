"""R10: a canary password in the broker and backend URLs never shows up anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from conftest import Project, RedisServer, free_port

pytestmark = pytest.mark.redis

CANARY = "canary-Zq8x-secret"


def test_r10_canary_password_appears_in_no_log_banner_output_error_or_result(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, extra_args=["--requirepass", CANARY])
    try:
        url = f"redis://:{CANARY}@127.0.0.1:{server.port}/0"
        project = Project(tmp_path, "redis", url)
        tasks = project.app()
        worker = project.start_worker("-c", "1")
        assert tasks.add.delay(1, 2).get(timeout=30) == 3
        with pytest.raises(tasks.CustomError) as failure:
            tasks.fail.delay("boom").get(timeout=30)
        sent = project.run_cli("-A", "tasks", "call", "tasks.add", "--args", "[2, 2]")
        shown = project.run_cli("-A", "tasks", "result", sent.stdout.strip(), "--timeout", "30")
        control = [
            project.run_cli("-A", "tasks", *command, "--json")
            for command in (("inspect", "stats"), ("inspect", "conf"), ("control", "rate_limit", "tasks.no", "1/s"))
        ]
        assert all(done.stdout.strip() for done in control)
        assert worker.stop() == 0

        unreachable = f"redis://:{CANARY}@127.0.0.1:{free_port()}/0"
        env = {**project.env, "TEST_BROKER_URL": unreachable, "TEST_BACKEND_URL": unreachable}
        refused = project.run_cli("-A", "tasks", "worker", "-c", "1", env=env)
        assert refused.returncode != 0

        client = redis.Redis.from_url(url)
        stored = b"".join(client.get(key) or b"" for key in client.scan_iter("celery-task-meta-*"))
        seen = {
            "worker log": worker.log_text(),
            "banner and stdout": worker.output(),
            "cli call": sent.stdout + sent.stderr,
            "cli result": shown.stdout + shown.stderr,
            "control replies": "".join(done.stdout + done.stderr for done in control),
            "connection error": refused.stdout + refused.stderr,
            "exception": repr(failure.value) + str(failure.value),
            "reprs": repr(tasks.app) + repr(tasks.app.broker) + repr(tasks.app.backend),
            "stored results": stored.decode(),
        }
        assert "***" in seen["banner and stdout"] and "***" in seen["connection error"]
        assert "***" in seen["control replies"]
        assert [where for where, text in seen.items() if CANARY in text] == []
    finally:
        server.stop()
