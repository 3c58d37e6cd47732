"""PostgreSQL as broker and result store, end to end: real worker subprocesses through the CLI, a
private PostgreSQL cluster, and the URL spellings that map onto it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PostgresServer, Project, free_port, make_client_cert, make_test_ca
from rqueue import App
from rqueue.backends.postgres import PostgresBackend
from rqueue.backends.sqlite import SqliteBackend
from rqueue.brokers.postgres import PostgresBroker
from rqueue.exceptions import BrokerConnectionError, ConfigurationError


@pytest.fixture
def project(tmp_path: Path, postgres_url: str) -> Iterator[Project]:
    proj = Project(tmp_path, "postgres", postgres_url=postgres_url)
    yield proj
    proj.close()


def test_postgres_worker_runs_tasks_and_stores_results_with_the_acks(project: Project) -> None:
    tasks = project.app()
    app = tasks.app
    assert isinstance(app.broker, PostgresBroker) and isinstance(app.backend, PostgresBackend)
    assert app.broker.joint_completer(app.backend) is not None  # results and acks in one transaction
    project.start_worker("-c", "2")
    assert tasks.add.delay(2, 3).get(timeout=30) == 5
    results = tasks.add.delay_many([(i, i) for i in range(50)])
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(50)]
    failed = tasks.fail.delay("boom")
    with pytest.raises(tasks.CustomError, match="boom"):
        failed.get(timeout=30)
    assert app.broker.queue_length("celery") == 0


def test_postgres_countdown_runs_once_and_not_early(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    sent = time.time()
    result = tasks.record.apply_async(("eta",), countdown=1.5)
    assert result.get(timeout=30) == 1
    (_key, _pid, ran_at), *_ = project.ledger_rows()
    assert ran_at >= sent + 1.5
    assert project.ledger_count("eta") == 1


def test_postgres_idle_worker_is_woken_by_notify(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    time.sleep(1.5)  # idle: its consumer now queries only when notified (or at its 1 s fallback)
    assert tasks.add.delay(20, 22).get(timeout=30) == 42


def test_postgres_worker_resumes_after_the_server_restarts(project: Project, postgres_server: PostgresServer) -> None:
    """R4 on PostgreSQL, in small: the server stopped hard and started again under an idle worker."""
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    postgres_server.stop("immediate")
    time.sleep(1.0)
    postgres_server.start()
    back = time.monotonic()
    assert tasks.add.delay(2, 2).get(timeout=30) == 4
    assert time.monotonic() - back < 10
    assert worker.proc.poll() is None


@pytest.mark.slow
def test_r4_postgres_killed_and_restarted_under_load(project: Project, postgres_server: PostgresServer) -> None:
    """R4: the server crashes (immediate stop) while a worker drains 300 tasks, and comes back."""
    n = 300
    tasks = project.app()
    results = tasks.sleep.delay_many([(0.02, f"r4-{i}") for i in range(n)])
    worker = project.start_worker("-c", "2")
    deadline = time.monotonic() + 30
    while project.ledger_count() < 50:
        assert time.monotonic() < deadline, "the worker is not draining"
        time.sleep(0.05)
    postgres_server.stop("immediate")
    time.sleep(2.0)
    assert worker.proc.poll() is None, "the worker must survive the outage"
    ran_before = project.ledger_count()
    postgres_server.start()
    restarted = time.monotonic()
    while project.ledger_count() < ran_before + 20:
        assert time.monotonic() - restarted < 10, "consuming did not resume within 10 s"
        time.sleep(0.05)
    resume_s = time.monotonic() - restarted
    assert [r.get(timeout=60) for r in results] == [0.02] * n
    keys = [key for key, _pid, _at in project.ledger_rows()]
    lost = {f"r4-{i}" for i in range(n)} - set(keys)
    print(f"\nR4 [postgres] resumed-after={resume_s:.2f}s lost={len(lost)} duplicates={len(keys) - len(set(keys))}")
    assert lost == set()
    assert worker.proc.poll() is None and len(project.workers) == 1  # no manual restart


def test_postgres_server_down_is_a_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://rqueue:pw-secret@127.0.0.1:{free_port()}/x?connect_timeout=2"
    app = App("t", broker=url, backend=url)
    with pytest.raises(
        BrokerConnectionError, match=r"postgresql://rqueue:\*\*\*@127\.0\.0\.1.*is PostgreSQL running"
    ) as info:
        app.send_task("t.add", [1, 2])
    assert "pw-secret" not in str(info.value)


def test_result_backend_url_spellings(tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = postgres_server.url()
    for spelling in (url, url.replace("postgresql://", "postgres://"), "db+" + url):
        backend = App("t", broker=url, backend=spelling + "?schema=res").backend
        assert isinstance(backend, PostgresBackend)
        assert backend.shares_store_with(url + "?schema=res")
        assert not backend.shares_store_with(url)  # another schema: another store
    sqlite = App("t", broker=f"sqlite:///{tmp_path / 'b.db'}", backend=f"db+sqlite:///{tmp_path / 'r.db'}").backend
    assert isinstance(sqlite, SqliteBackend) and sqlite.path == str(tmp_path / "r.db")


def test_postgres_results_backend_alone_stores_and_reads(postgres_url: str, tmp_path: Path) -> None:
    app = App("t", broker=f"sqlite:///{tmp_path / 'b.db'}", backend=postgres_url)

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    result = add.apply((3, 4))  # eager: the record goes through the backend
    assert result.get() == 7
    app.backend.store_many([])  # nothing to write is fine
    assert app.backend.get_meta("nope")["status"] == "PENDING"


def test_postgres_tls_verify_full_and_require(tmp_path: Path) -> None:
    server = PostgresServer(tls=True)
    try:
        verified = PostgresBroker(f"{server.url()}?sslmode=verify-full&sslrootcert={server.ca_certs}").native
        verified.publish("q", b"x")
        encrypted = PostgresBroker(f"{server.url()}?sslmode=require").native
        assert encrypted.queue_length("q") == 1
        in_tls = server.psql(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s "
            "JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'rqueue'"
        )
        assert in_tls.strip() == "2|2"  # both connections speak TLS
        stranger = make_test_ca(tmp_path, "stranger")
        with pytest.raises(BrokerConnectionError, match="certificate") as info:
            _ = PostgresBroker(f"{server.url()}?sslmode=verify-full&sslrootcert={stranger}").native
        assert server.PASSWORD not in str(info.value)
    finally:
        server.close()


def test_postgres_client_certificate_for_a_server_that_requires_one(tmp_path: Path) -> None:
    server = PostgresServer(client_certs=True)  # pg_hba.conf: hostssl ... cert
    try:
        tls = f"{server.url()}?sslmode=verify-full&sslrootcert={server.ca_certs}"
        cert, key = make_client_cert(server.dir, PostgresServer.USER)  # signed by the server's CA
        with_cert = f"{tls}&sslcert={cert}&sslkey={key}"
        app = App("t", broker=with_cert, backend=with_cert)

        @app.task(name="t.add")
        def add(x: int, y: int) -> int:
            return x + y

        app.send_task("t.add", [1, 2])
        assert app.broker.queue_length("celery") == 1
        assert add.apply((3, 4)).get() == 7  # the result store on the same connection
        seen = server.psql("SELECT DISTINCT client_dn FROM pg_stat_ssl WHERE client_dn IS NOT NULL")
        assert seen.strip() == f"/CN={PostgresServer.USER}"  # the server verified our certificate

        # No certificate: the server refuses, and the error says what to give.
        with pytest.raises(BrokerConnectionError, match=r"requires a valid client certificate.*sslcert and sslkey"):
            _ = PostgresBroker(tls).native
        # A certificate of a CA the server does not trust: refused in the handshake.
        make_test_ca(tmp_path, "stranger")
        cert2, key2 = make_client_cert(tmp_path, PostgresServer.USER, ca="stranger", name="stranger-client")
        with pytest.raises(BrokerConnectionError, match=r"UnknownCA.*sslcert and sslkey") as info:
            _ = PostgresBroker(f"{tls}&sslcert={cert2}&sslkey={key2}").native
        assert server.PASSWORD not in str(info.value)
        # A certificate of the right CA for another user.
        cert3, key3 = make_client_cert(server.dir, "someone-else", name="other-client")
        with pytest.raises(BrokerConnectionError, match='certificate authentication failed for user "rqueue"'):
            _ = PostgresBroker(f"{tls}&sslcert={cert3}&sslkey={key3}").native

        # Files that cannot serve: a clear error before connecting, naming the option and the file.
        missing = tmp_path / "missing.key"
        with pytest.raises(ConfigurationError, match=f"sslkey={missing}: cannot read"):
            _ = PostgresBroker(f"{tls}&sslcert={cert}&sslkey={missing}").native
        garbage = tmp_path / "garbage.key"
        garbage.write_text("-----BEGIN NOTHING-----\n")
        with pytest.raises(ConfigurationError, match=f"sslkey={garbage}: cannot read a PEM private key"):
            _ = PostgresBroker(f"{tls}&sslcert={cert}&sslkey={garbage}").native
        with pytest.raises(ConfigurationError, match="not a usable client certificate and key"):
            _ = PostgresBroker(f"{tls}&sslcert={cert}&sslkey={key2}").native  # another certificate's key
        with pytest.raises(ConfigurationError, match="sslcert needs sslkey"):
            _ = PostgresBroker(f"{tls}&sslcert={cert}").native
        with pytest.raises(ConfigurationError, match="only apply to TLS connections"):
            _ = PostgresBroker(f"{server.url()}?sslcert={cert}&sslkey={key}").native
    finally:
        server.close()


def test_postgres_through_a_pgbouncer_session_pool(postgres_server: PostgresServer, postgres_url: str) -> None:
    """docs/postgresql.md: a session-mode pool works as a direct connection (transaction mode needs
    PgBouncer 1.21+ with max_prepared_statements: Debian 12's 1.18 fails with 'prepared statement "sN"
    does not exist')."""
    exe = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")  # /usr/sbin: Debian's
    if exe is None:
        pytest.skip("pgbouncer is not on PATH (apt-get install pgbouncer)")
    server = postgres_server
    database = postgres_url.rsplit("/", 1)[1]
    port = free_port()
    conf = server.dir / f"pgbouncer-{port}"
    conf.mkdir()
    (conf / "users.txt").write_text(f'"{server.USER}" "{server.PASSWORD}"\n')
    (conf / "pgbouncer.ini").write_text(
        f"[databases]\n{database} = host=127.0.0.1 port={server.port} dbname={database}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {conf / 'users.txt'}\npool_mode = session\n"
        f"default_pool_size = 4\nlogfile = {conf / 'log'}\n"
    )
    as_user = server.as_user
    if as_user:  # pgbouncer refuses to run as root: as the cluster's owner
        for path in (conf, conf / "users.txt", conf / "pgbouncer.ini"):
            shutil.chown(path, "postgres", "postgres")
    bouncer = subprocess.Popen([*as_user, exe, str(conf / "pgbouncer.ini")], stdout=subprocess.DEVNULL)
    try:
        pooled = f"postgresql://{server.USER}:{server.PASSWORD}@127.0.0.1:{port}/{database}"
        deadline = time.monotonic() + 10
        while True:
            try:
                brokers = [PostgresBroker(pooled).native for _ in range(2)]
                break
            except BrokerConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for i in range(20):
            producer, consumer = brokers[i % 2], brokers[(i + 1) % 2]
            producer.publish("q", b"x")
            (got,) = consumer.fetch(["q"], 10, f"w{i}", 60_000)
            assert consumer.ack([got.tag]) == 1
        assert brokers[0].queue_length("q") == 0
    finally:
        bouncer.terminate()
        bouncer.wait(10)


def test_postgres_reply_timeout_option_is_checked(postgres_url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"reply_timeout=.soon. is not a number of seconds"):
        _ = PostgresBroker(f"{postgres_url}?reply_timeout=soon").native
    broker = PostgresBroker(f"{postgres_url}?reply_timeout=0.5").native
    broker.publish("q", b"x")  # answered well within it
    assert broker.queue_length("q") == 1


# -- the scenarios every store must pass, run here on PostgreSQL ----------------------------------------
# Imported under their own names, they are collected again in this module, where ``project`` is the
# PostgreSQL project above: R2 (a crash at each step), R6 (garbage in a queue), R7, R8, the chord
# joins, and beat's leader election (R16).
from test_bad_messages import test_r6_garbage_is_dead_lettered_with_its_reason_and_the_worker_goes_on  # noqa: E402
from test_beat import (  # noqa: E402
    beat_project,
    test_beat_list_prints_entries_with_next_run,
    test_beat_three_processes_one_leader_survives_a_sigkill,
)
from test_canvas_workflows import (  # noqa: E402
    test_a_header_member_counted_twice_fires_the_body_once,
    test_chord_sends_the_header_values_to_the_body,
)
from test_failpoints import test_r2_crash_at_each_step_loses_nothing_and_keeps_one_result_per_task  # noqa: E402
from test_reliability import (  # noqa: E402
    test_chord_of_200_fires_its_body_once_with_the_right_value_across_a_sigkill,
    test_r7_eta_beyond_visibility_timeout_runs_once_not_early,
    test_r8_task_longer_than_visibility_timeout_runs_once,
)

__all__ = [
    "beat_project",
    "test_a_header_member_counted_twice_fires_the_body_once",
    "test_beat_list_prints_entries_with_next_run",
    "test_beat_three_processes_one_leader_survives_a_sigkill",
    "test_chord_of_200_fires_its_body_once_with_the_right_value_across_a_sigkill",
    "test_chord_sends_the_header_values_to_the_body",
    "test_r2_crash_at_each_step_loses_nothing_and_keeps_one_result_per_task",
    "test_r6_garbage_is_dead_lettered_with_its_reason_and_the_worker_goes_on",
    "test_r7_eta_beyond_visibility_timeout_runs_once_not_early",
    "test_r8_task_longer_than_visibility_timeout_runs_once",
]


def test_r10_postgres_password_appears_in_no_log_banner_output_error_or_result(
    project: Project, postgres_server: PostgresServer
) -> None:
    secret = postgres_server.PASSWORD
    assert secret in project.broker_url
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
    unreachable = f"postgresql://rqueue:{secret}@127.0.0.1:{free_port()}/x"
    env = {**project.env, "TEST_BROKER_URL": unreachable, "TEST_BACKEND_URL": unreachable}
    refused = project.run_cli("-A", "tasks", "worker", "-c", "1", env=env)
    assert refused.returncode != 0
    seen = {
        "worker log": worker.log_text(),
        "banner and stdout": worker.output(),
        "cli call": sent.stdout + sent.stderr,
        "cli result": shown.stdout + shown.stderr,
        "control replies": "".join(done.stdout + done.stderr for done in control),
        "connection error": refused.stdout + refused.stderr,
        "exception": repr(failure.value) + str(failure.value),
        "reprs": repr(tasks.app) + repr(tasks.app.broker) + repr(tasks.app.backend),
        "stored": postgres_server.psql(
            "SELECT string_agg(encode(payload, 'escape'), '') FROM rqueue.results", project.broker_url.rsplit("/", 1)[1]
        ),
    }
    assert "***" in seen["banner and stdout"] and "***" in seen["connection error"]
    assert [where for where, text in seen.items() if secret in text] == []
