"""A private RabbitMQ node on free loopback ports, its data in a work directory, for benchmarks.

Runs Debian's ``/usr/lib/rabbitmq/bin/rabbitmq-server`` (as the current user, with ``HOME`` and
every path in the work directory). ``new_vhost()`` gives each measurement an empty vhost;
``cpu_seconds()`` is the node's CPU time (beam.smp and its helpers), read from ``/proc``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from peers.redis_server import free_port
from rqueue.bench import procstat
from rqueue.bench.processes import WorkerProcess

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class RabbitServer:
    def __init__(self, workdir: Path) -> None:
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise SystemExit("rabbitmq-server is not installed (make rabbitmq installs it)")
        self.port = free_port()
        self.node = f"rqbench{self.port}@localhost"
        self.vhosts = 0
        (workdir / "enabled_plugins").write_text("[].\n")
        (workdir / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n")
        self.env = {
            **os.environ,
            "HOME": str(workdir),
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        }
        self.proc = WorkerProcess([str(RABBITMQ_BIN / "rabbitmq-server")], workdir / "rabbitmq.out", self.env)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.proc.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"RabbitMQ did not start; see {workdir / 'log'}") from None
                time.sleep(0.1)
        self.version = self.ctl("eval", "rabbit_misc:version().").strip().strip('"')

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    def new_vhost(self) -> str:
        """The URL of a new, empty vhost."""
        self.vhosts += 1
        name = f"b{self.vhosts}"
        self.ctl(
            "eval",
            f'rabbit_vhost:add(<<"{name}">>, <<"bench">>), '
            f'rabbit_auth_backend_internal:set_permissions(<<"guest">>, <<"{name}">>, '
            '<<".*">>, <<".*">>, <<".*">>, <<"bench">>).',
        )
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{name}"

    def cpu_seconds(self) -> float:
        return sum(procstat.cpu_seconds(p) or 0.0 for p in procstat.tree(self.proc.pid))

    def stop(self) -> None:
        subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, "stop"],
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        self.proc.stop(30)
