"""Fixtures: a project directory with the test app, real worker subprocesses started through the
real CLI, and real SQLite files."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).parent / "project"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _openssl(workdir: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=workdir, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"openssl {' '.join(args)} failed:\n{done.stderr}"


#: ``openssl req`` with a new P-256 key; and what makes it a self-signed CA valid for 2 days.
_NEW_KEY = ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_CA = [
    "-x509",
    "-days",
    "2",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
]


def make_test_ca(workdir: Path, name: str = "ca") -> Path:
    """A self-signed CA ``<name>.pem`` (key ``<name>.key``) made with the ``openssl`` CLI."""
    _openssl(workdir, *_NEW_KEY, *_CA, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=test {name}")
    return workdir / f"{name}.pem"


def make_server_cert(workdir: Path, ca: str = "ca") -> tuple[Path, Path]:
    """``server.pem``/``server.key`` for 127.0.0.1 and localhost, signed by the CA ``ca``."""
    (workdir / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(workdir, *_NEW_KEY, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    sign = f"x509 -req -in server.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -days 2 -extfile server.ext"
    _openssl(workdir, *sign.split(), "-out", "server.pem")
    return workdir / "server.pem", workdir / "server.key"


def make_client_cert(workdir: Path, user: str, ca: str = "ca", name: str = "client") -> tuple[Path, Path]:
    """``<name>.pem``/``<name>.key``: a client certificate for ``user`` (its CN), signed by the CA ``ca``."""
    (workdir / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    )
    _openssl(workdir, *_NEW_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={user}")
    sign = f"x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -days 2 -extfile {name}.ext"
    _openssl(workdir, *sign.split(), "-out", f"{name}.pem")
    return workdir / f"{name}.pem", workdir / f"{name}.key"


class RedisServer:
    """A real ``redis-server`` on a free loopback port, which a test can stop and start again.

    ``persistent=True`` keeps an append-only file with ``appendfsync always`` in ``workdir`` so a
    restart loses nothing that was acknowledged. ``tls=True`` listens only for TLS, with a CA
    (``ca_certs``) and a server certificate for 127.0.0.1 made in ``workdir`` by the ``openssl`` CLI;
    ``url`` is then ``rediss://...?ssl_ca_certs=<ca_certs>``.
    """

    def __init__(
        self, workdir: Path, persistent: bool = False, extra_args: Sequence[str] = (), tls: bool = False
    ) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not on PATH (make redis installs it)")
        self.exe = exe
        self.workdir = workdir
        self.persistent = persistent
        self.extra_args = list(extra_args)
        self.tls = tls
        self.ca_certs: Path | None = None
        if tls:
            if shutil.which("openssl") is None:
                pytest.skip("openssl is not on PATH (make redis installs it)")
            self.ca_certs = make_test_ca(workdir)
            make_server_cert(workdir)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_certs}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            for option, name in (("cert", "server.pem"), ("key", "server.key"), ("ca-cert", "ca.pem")):
                listen += [f"--tls-{option}-file", str(self.workdir / name)]
        else:
            listen = ["--port", str(self.port)]
        args = [self.exe, *listen, "--bind", "127.0.0.1", "--dir", str(self.workdir), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        args += self.extra_args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} not ready within 10 s")
            time.sleep(0.01)

    def _ready(self) -> bool:
        """True once the server answers PING with anything but LOADING (a restarted one says so while
        it reads its file; one with a password answers NOAUTH, which is ready too)."""
        if self.tls:  # a TLS port cannot be PINGed in clear text; accepting connections is enough
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                reply = conn.recv(64)
                return bool(reply) and not reply.startswith(b"-LOADING")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None


#: Debian's RabbitMQ, run as root from here (the /usr/sbin wrapper switches to a user that cannot
#: write a temporary directory).
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class RabbitServer:
    """A real RabbitMQ node on free loopback ports, its data, logs and config in ``workdir``."""

    def __init__(self, workdir: Path, tls: bool = False) -> None:
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            pytest.skip("rabbitmq-server is not installed (make rabbitmq installs it)")
        self.workdir = workdir
        self.port = free_port()
        self.node = f"rqtest{self.port}@localhost"
        self.vhosts = 0
        (workdir / "enabled_plugins").write_text("[].\n")
        conf = f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n"
        #: With ``tls``: an amqps:// listener on ``tls_port`` whose certificate the CA ``ca_certs`` signed.
        self.tls_port = free_port() if tls else None
        if tls:
            self.ca_certs = make_test_ca(workdir)
            cert, key = make_server_cert(workdir)
            conf += (
                f"listeners.ssl.1 = 127.0.0.1:{self.tls_port}\nssl_options.cacertfile = {self.ca_certs}\n"
                f"ssl_options.certfile = {cert}\nssl_options.keyfile = {key}\nssl_options.verify = verify_none\n"
                "ssl_options.fail_if_no_peer_cert = false\n"
            )
        (workdir / "rabbitmq.conf").write_text(conf)
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
        self.start()

    def start(self) -> None:
        """Boot the node (again, on the same data after ``kill``) and wait for its AMQP listener."""
        self.proc = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:  # the AMQP listener opens once the broker has booted
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"RabbitMQ did not start; see {self.workdir / 'log'}") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the node (beam.smp and all): nothing gets to flush or close."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl`` on this node; its output."""
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
        """The URL of a new, empty vhost (guest may do anything in it): one per test isolates queues."""
        self.vhosts += 1
        name = f"t{self.vhosts}"
        self.ctl(
            "eval",
            f'rabbit_vhost:add(<<"{name}">>, <<"test">>), '
            f'rabbit_auth_backend_internal:set_permissions(<<"guest">>, <<"{name}">>, '
            '<<".*">>, <<".*">>, <<".*">>, <<"test">>).',
        )
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            subprocess.run(
                [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, "stop"],
                env=self.env,
                capture_output=True,
                timeout=60,
                check=False,
            )
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL server's bin directory (``initdb``, ``pg_ctl``), if installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


class PostgresServer:
    """A private PostgreSQL cluster: ``initdb`` into a new temporary directory, ``pg_ctl start`` on a
    free loopback port with its socket directory there too, stopped (and the directory removed) by ``stop``.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` system user
    Debian's package creates (its directory is made outside pytest's root-only temporary tree).
    Clients log in as ``rqueue`` with ``PASSWORD`` (scram-sha-256 over TCP), so the client's password
    authentication is exercised too; ``new_database`` gives each test an empty database. ``tls=True``
    also takes TLS connections, with a certificate for 127.0.0.1 signed by the CA ``ca_certs``.
    ``client_certs=True`` (TLS too) takes TCP connections only over TLS with a client certificate
    signed by that CA and naming the user (``pg_hba.conf``: ``hostssl ... cert``; see ``make_client_cert``).
    """

    USER = "rqueue"
    PASSWORD = "pg-test-secret"

    def __init__(self, tls: bool = False, durable: bool = False, client_certs: bool = False) -> None:
        self.durable = durable
        self.client_certs = client_certs
        tls = tls or client_certs
        bindir = postgres_bin()
        if bindir is None:
            pytest.skip("PostgreSQL is not installed (make postgresql installs it)")
        self.bindir = bindir
        self.as_user: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="rqueue-pg-"))
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self.port = free_port()
        self.databases = 0
        pwfile = self.dir / "pw"
        pwfile.write_text(self.PASSWORD + "\n")
        if self.as_user:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", self.USER, f"--pwfile={pwfile}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "--no-sync", "--encoding=UTF8", "--locale=C",
        )  # fmt: skip
        pwfile.unlink()
        self.tls = tls
        self.ca_certs: Path | None = None
        if tls:
            if shutil.which("openssl") is None:
                pytest.skip("openssl is not on PATH (make redis installs it)")
            self.ca_certs = make_test_ca(self.dir)
            make_server_cert(self.dir)
            for name in ("server.pem", "server.key"):  # the server reads them as postgres, key 0600
                os.chmod(self.dir / name, 0o600)
                if self.as_user:
                    os.chown(self.dir / name, pw.pw_uid, pw.pw_gid)
        if client_certs:  # the socket stays trusted (psql); TCP only with a verified client certificate
            (self.data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 cert\n")
        self.start()

    def _run(self, tool: str, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [*self.as_user, str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.dir,
        )
        assert done.returncode == 0, f"{tool} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self) -> None:
        # fsync off: a test cluster need not survive a power loss (commits still reach the OS before
        # they return, so a crash of the server itself, ``stop("immediate")``, loses nothing).
        # ``durable`` keeps PostgreSQL's defaults (for figures that mean something).
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        if self.tls:
            cert, key = self.dir / "server.pem", self.dir / "server.key"
            options += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
            if self.client_certs:
                options += f" -c ssl_ca_file={self.ca_certs}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (``immediate`` is a crash: no checkpoint, connections cut)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` through the socket directory (trusted, no password)."""
        return self._run("psql", "-X", "-q", "-A", "-t", "-h", str(self.dir), "-p", str(self.port),
                         "-U", self.USER, "-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql)  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        self.databases += 1
        name = f"t{self.databases}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL cluster for the session (about a second to create and start)."""
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's PostgreSQL, for this test alone."""
    return postgres_server.new_database()


class MemcachedServer:
    """A real ``memcached`` on a free loopback port (64 MiB, 1 MiB items), stopped by ``stop``."""

    def __init__(self) -> None:
        exe = shutil.which("memcached")
        if exe is None:
            pytest.skip("memcached is not on PATH (make memcached installs it)")
        self.port = free_port()
        user = ["-u", "memcache"] if os.geteuid() == 0 else []  # memcached refuses to run as root
        self.proc = subprocess.Popen(
            [exe, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64", *user],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"memcached on port {self.port} did not start") from None
                time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"cache+memcached://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    server = MemcachedServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    """One RabbitMQ node for the session (about 5 s to start)."""
    server = RabbitServer(tmp_path_factory.mktemp("rabbitmq"))
    yield server
    server.stop()


@pytest.fixture
def amqp_url(rabbitmq_server: RabbitServer) -> str:
    """A fresh vhost on the session's RabbitMQ node, for this test alone."""
    return rabbitmq_server.new_vhost()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests that need their own make a RedisServer."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.config_set("maxmemory-policy", "noeviction")  # a test may have changed it
    client.close()
    return redis_server.url


def rqueue_cmd() -> list[str]:
    """The installed ``rqueue`` script next to this interpreter."""
    script = Path(sys.executable).with_name("rqueue")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rqueue"]


class Project:
    """A directory holding ``tasks.py`` and a ledger, with a broker and backend of one kind.

    ``kind`` is ``sqlite`` (one file for messages and results), ``redis`` (a real server, for
    both), ``amqp`` (RabbitMQ at ``amqp_url`` for messages, Redis for results) or ``postgres`` (one
    database at ``postgres_url`` for both). The ledger is a
    separate SQLite file the test tasks append to: an independent record of executions.
    """

    def __init__(
        self,
        root: Path,
        kind: str = "sqlite",
        redis_url: str | None = None,
        amqp_url: str | None = None,
        postgres_url: str | None = None,
    ) -> None:
        self.root = root
        self.kind = kind
        self.redis_url = redis_url
        self.postgres_url = postgres_url
        self.broker_url = {
            "sqlite": f"sqlite:///{root / 'broker.sqlite3'}",
            "amqp": str(amqp_url),
            "postgres": str(postgres_url),
        }.get(kind, str(redis_url))
        self.backend_url = {"sqlite": "", "postgres": str(postgres_url)}.get(kind, str(redis_url))
        self.ledger = root / "ledger.sqlite3"
        shutil.copy(PROJECT / "tasks.py", root / "tasks.py")
        self.workers: list[WorkerProcess] = []

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TEST_BROKER_URL=self.broker_url,
            TEST_BACKEND_URL=self.backend_url,
            LEDGER=str(self.ledger),
            PYTHONUNBUFFERED="1",
        )
        env["PYTHONPATH"] = str(self.root)
        return env

    def app(self) -> Any:
        """The test app imported in this process, pointing at this project's files."""
        os.environ.update(TEST_BROKER_URL=self.broker_url, TEST_BACKEND_URL=self.backend_url, LEDGER=str(self.ledger))
        sys.modules.pop("tasks", None)
        sys.path.insert(0, str(self.root))
        try:
            import tasks  # type: ignore[import-not-found]
        finally:
            sys.path.remove(str(self.root))
        return tasks

    def switch_to_empty_broker(self) -> None:
        """Point the project at another, empty broker (and backend) of the same kind."""
        if self.kind == "sqlite":
            self.broker_url = f"sqlite:///{self.root / 'other.sqlite3'}"
        elif self.kind == "postgres":
            self.broker_url = self.backend_url = f"{self.postgres_url}?schema=other"
        else:
            self.broker_url = self.backend_url = str(self.redis_url).rsplit("/", 1)[0] + "/1"

    def run_cli(
        self, *args: str, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*rqueue_cmd(), *args],
            cwd=self.root,
            env=env or self.env,
            stdin=subprocess.DEVNULL,  # never a terminal: what a command asks, it must not assume
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    #: What ``-A`` names for this project's workers.
    app_spec = "tasks"

    def start_worker(self, *args: str, wait_ready: bool = True) -> WorkerProcess:
        log = self.root / f"worker-{len(self.workers)}.log"
        cmd = [*rqueue_cmd(), "-A", self.app_spec, "worker", "--loglevel=info", "--logfile", str(log), *args]
        proc = subprocess.Popen(
            cmd,
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        worker = WorkerProcess(proc, log)
        self.workers.append(worker)
        if wait_ready:
            worker.wait_for_log("ready.")
        return worker

    def close(self) -> None:
        """Kill what is left of its workers (process groups) and forget its imported ``tasks``."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGKILL)
                worker.proc.wait(10)
        sys.modules.pop("tasks", None)

    def ledger_rows(self) -> list[tuple[str, int, float]]:
        """``(key, pid, unix time)`` of every recorded execution, in the order recorded."""
        if not self.ledger.exists():
            return []
        conn = sqlite3.connect(self.ledger, timeout=30)
        try:
            rows = conn.execute("SELECT key, pid, at FROM runs ORDER BY rowid").fetchall()
        except sqlite3.OperationalError:  # no task has run yet
            return []
        finally:
            conn.close()
        return [(str(k), int(p), float(t)) for k, p, t in rows]

    def ledger_count(self, key: str | None = None) -> int:
        if not self.ledger.exists():
            return 0
        conn = sqlite3.connect(self.ledger)
        try:
            if key is None:
                return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
            return int(conn.execute("SELECT COUNT(*) FROM runs WHERE key = ?", (key,)).fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()


class WorkerProcess:
    """A worker started through the CLI, with its log file."""

    def __init__(self, proc: subprocess.Popen[str], log: Path) -> None:
        self.proc = proc
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_for_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return
            if self.proc.poll() is not None:
                out = self.proc.stdout.read() if self.proc.stdout else ""
                raise AssertionError(
                    f"worker exited ({self.proc.returncode}) before {needle!r}:\n{out}\n{self.log_text()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged within {timeout} s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise

    def output(self) -> str:
        return self.proc.stdout.read() if self.proc.stdout else ""

    def child_pids(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture(params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """A project on each broker kind: the walkthrough must hold on both."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    proj = Project(tmp_path, request.param, redis_url)
    yield proj
    proj.close()


@pytest.fixture(params=["sqlite", "redis", "amqp", "postgres"])
def broker_project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """A project on every broker, RabbitMQ included (results in Redis there), PostgreSQL too (results
    in the same database): for the scenarios that every transport must pass the same way."""
    kind = request.param
    redis_url = request.getfixturevalue("redis_url") if kind in ("redis", "amqp") else None
    amqp_url = request.getfixturevalue("amqp_url") if kind == "amqp" else None
    postgres_url = request.getfixturevalue("postgres_url") if kind == "postgres" else None
    proj = Project(tmp_path, kind, redis_url, amqp_url, postgres_url)
    yield proj
    proj.close()
