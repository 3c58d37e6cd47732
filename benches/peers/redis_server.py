"""A private ``redis-server`` on a free loopback port, without persistence, for benchmarks."""

from __future__ import annotations

import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from rqueue.bench.processes import WorkerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Usage:
    """What a ``redis-server`` has used so far: CPU seconds and commands served."""

    cpu_s: float
    #: None where the server does not count them (RabbitMQ, in benches/bench_rabbitmq.py).
    commands: int | None

    def since(self, start: Usage) -> Usage:
        """The use between ``start`` and this reading, less the INFO command that read ``start``."""
        if self.commands is None or start.commands is None:
            return Usage(self.cpu_s - start.cpu_s, None)
        return Usage(self.cpu_s - start.cpu_s, self.commands - start.commands - 1)


class RedisServer:
    """``redis-server --save "" --appendonly no`` on 127.0.0.1, stopped with ``stop()``."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not on PATH (make redis installs it)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = workdir / "redis.log"
        cmd = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(workdir), "--logfile", str(self.log)]
        self.proc = WorkerProcess(cmd, workdir / "redis.out")
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; log:\n{self.log.read_text()[-2000:]}") from None
                time.sleep(0.02)
        self.version = str(self.client.info("server")["redis_version"])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def usage(self) -> Usage:
        """CPU seconds (user + sys) and commands (``INFO commandstats`` calls) so far, in one INFO."""
        info = self.client.execute_command("INFO", "cpu", "commandstats")
        calls = sum(int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_"))
        return Usage(float(info["used_cpu_sys"]) + float(info["used_cpu_user"]), calls)

    def stop(self) -> None:
        try:
            self.client.close()
        finally:
            self.proc.stop(5)
