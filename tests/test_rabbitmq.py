"""RabbitMQ through a real node and real worker processes: Celery's frames and topology, delays kept
in the broker, priorities, confirms and clear errors, raw garbage (R6), remote control, a killed and
restarted broker (R4) and the canary (R10). R1, R3, R5 and ``rqueue dlq`` run on every broker
(``broker_project``); interop with the real Celery is in ``interop/test_celery_amqp.py``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, RabbitServer, free_port
from rqueue import App, _rqueue
from rqueue.exceptions import (
    BrokerConnectionError,
    BrokerError,
    ConfigurationError,
    DecodeError,
    TaskRevokedError,
    TimeLimitExceeded,
)
from rqueue.urls import amqp_params

amqp = pytest.importorskip("amqp")  # py-amqp (kombu's client): an independent view of the broker

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis]


@pytest.fixture
def aproject(tmp_path: Path, amqp_url: str, redis_url: str) -> Iterator[Project]:
    proj = Project(tmp_path, "amqp", redis_url, amqp_url)
    yield proj
    proj.close()


@contextlib.contextmanager
def raw_channel(url: str) -> Iterator[Any]:
    """A py-amqp channel on ``url``'s vhost."""
    p = amqp_params(url, "test")
    conn = amqp.Connection(host=f"{p.host}:{p.port}", userid=p.userid, password=p.password, virtual_host=p.virtual_host)
    conn.connect()
    try:
        yield conn.channel()
    finally:
        conn.close()


def use_config(project: Project, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"amqpcfg_{uuid.uuid4().hex[:8]}"
    (project.root / f"{name}.py").write_text(text)
    monkeypatch.setenv("TEST_CONFIG_MODULE", name)


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


# -- the walkthrough and the frames ------------------------------------------------------------------


def test_walkthrough_runs_on_amqp_with_redis_results(aproject: Project) -> None:
    tasks = aproject.app()
    worker = aproject.start_worker()  # the default: prefork
    assert tasks.add.delay(4, 4).get(timeout=30) == 4 + 4
    with pytest.raises(tasks.CustomError, match="boom"):
        tasks.fail.delay("boom").get(timeout=30)
    assert [r.get(timeout=30) for r in tasks.add.delay_many([(i, i) for i in range(50)])] == [2 * i for i in range(50)]
    assert worker.stop() == 0
    waiting = tasks.add.delay_many([(1, 1)] * 3)
    assert tasks.app.broker.queue_length("celery") == len(waiting)
    purged = aproject.run_cli("-A", "tasks", "purge", "-f")
    assert purged.returncode == 0, purged.stderr
    assert tasks.app.broker.queue_length("celery") == 0


def test_a_message_is_celery_s_amqp_frame(amqp_url: str) -> None:
    app = App("producer", broker=amqp_url)
    sent = app.send_task("tasks.add", (4, 4), priority=3)
    with raw_channel(amqp_url) as ch:
        message = ch.basic_get("celery", no_ack=True)
    assert json.loads(message.body) == [[4, 4], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    props = message.properties
    assert props["content_type"] == "application/json" and props["content_encoding"] == "utf-8"
    assert props["correlation_id"] == sent.id and props["delivery_mode"] == 2 and props["priority"] == 3
    headers = props["application_headers"]
    assert headers["task"] == "tasks.add" and headers["id"] == sent.id and headers["root_id"] == sent.id
    assert headers["retries"] == 0 and headers["eta"] is None and headers["lang"] == "py"
    assert message.delivery_info["exchange"] == "celery" and message.delivery_info["routing_key"] == "celery"


@pytest.mark.parametrize(
    "settings",
    [
        {"task_queue_max_priority": 10},
        {"task_default_queue_type": "quorum"},
        {"task_queues": [{"name": "feed", "exchange": "feeds", "exchange_type": "topic", "routing_key": "feed.#"}]},
    ],
    ids=["max-priority", "quorum", "topic"],
)
def test_celery_declares_the_same_queues_after_rqueue(rabbitmq_server: RabbitServer, settings: dict[str, Any]) -> None:
    """Declarations must be argument-identical, or the second declarer gets PRECONDITION_FAILED."""
    celery = pytest.importorskip("celery")
    from kombu import Exchange, Queue
    from kombu.transport.native_delayed_delivery import declare_native_delayed_delivery_exchanges_and_queues

    url = rabbitmq_server.new_vhost()
    app = App("rq", broker=url)
    app.conf.update(**settings)
    queues = [q if isinstance(q, str) else q["name"] for q in settings.get("task_queues", ["celery"])]
    app.broker.prepare_consumer(queues, False)
    celery_settings = dict(settings)
    if "task_queues" in settings:
        celery_settings["task_queues"] = [
            Queue(q["name"], Exchange(q["exchange"], type=q["exchange_type"]), routing_key=q["routing_key"])
            for q in settings["task_queues"]
        ]
    capp = celery.Celery("c", broker=url)
    capp.conf.update(**celery_settings)
    with capp.connection_for_write() as conn:
        channel = conn.default_channel
        for name in queues:
            capp.amqp.queues[name](channel).declare()  # raises on any argument mismatch
        declare_native_delayed_delivery_exchanges_and_queues(conn, "quorum")
    capp.send_task("tasks.add", (1, 1), queue=queues[0], routing_key="feed.x" if "task_queues" in settings else None)
    # Celery publishes without confirms: a quorum queue counts the message a moment later.
    wait_for(lambda: app.broker.queue_length(queues[0]) == 1, 10, "Celery's message in the queue")
    capp.close()


def test_priorities_mean_what_rabbitmq_means(aproject: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(aproject, "task_queue_max_priority = 10\n", monkeypatch)
    tasks = aproject.app()
    low = [tasks.record.apply_async((f"p0-{i}",), priority=0) for i in range(3)]
    high = [tasks.record.apply_async((f"p9-{i}",), priority=9) for i in range(3)]
    aproject.start_worker("-c", "1", "--prefetch-multiplier", "1")
    assert [r.get(timeout=30) for r in high + low] == [1] * 6
    assert [key for key, _, _ in aproject.ledger_rows()] == ["p9-0", "p9-1", "p9-2", "p0-0", "p0-1", "p0-2"]


def test_a_countdown_waits_in_the_broker_not_in_the_worker(aproject: Project) -> None:
    tasks = aproject.app()
    worker = aproject.start_worker("-c", "1")
    sent_at = time.time()
    later = tasks.record.apply_async(("later",), countdown=3)
    time.sleep(1.0)
    broker = tasks.app.broker
    waiting = {n: broker.queue_length(f"celery_delayed_{n}") for n in range(28)}
    assert sum(waiting.values()) == 1 and aproject.ledger_count() == 0
    assert f"Task tasks.record[{later.id}] received" not in worker.log_text()  # not held unacked
    assert later.get(timeout=30) == 1
    (row,) = aproject.ledger_rows()
    level = max(waiting, key=lambda n: waiting[n])
    print(f"\ncountdown=3 ran {row[2] - sent_at:.2f} s after it was sent (waited in delay level {level})")
    assert row[2] - sent_at >= 2.9


# -- confirms and clear errors ------------------------------------------------------------------------------


def test_publish_errors_are_clear_and_lose_nothing(rabbitmq_server: RabbitServer) -> None:
    url = rabbitmq_server.new_vhost()
    app = App(
        "rq",
        broker=url,
        task_routes={"tasks.nobody": {"queue": "celery", "exchange": "celery", "routing_key": "nobody"}},
    )
    with pytest.raises(BrokerError, match=r"returned.*no queue is bound"):
        app.send_task("tasks.nobody")  # the exchange exists, nothing is bound under that key
    app.conf.task_routes = {"tasks.x": {"queue": "celery", "exchange": "missing-exchange", "routing_key": "x"}}
    with pytest.raises(BrokerError, match="missing-exchange"):
        app.send_task("tasks.x")
    assert app.send_task("tasks.add", (1, 1)).id  # the broker handle recovers from the closed channel
    assert app.broker.queue_length("celery") == 1

    good = _rqueue.encode_task_message(task="tasks.add", task_id="good", args=[1, 1], kwargs={}, routing_key="celery")
    bad = _rqueue.encode_task_message(
        task="tasks.add", task_id="bad", args=[1, 1], kwargs={}, routing_key="x", exchange="missing-exchange"
    )
    with pytest.raises(BrokerError, match="nothing published"):
        app.broker.publish_many([("celery", good, 0, None), ("celery", bad, 0, None)])
    assert app.broker.queue_length("celery") == 1  # all or none
    with pytest.raises(DecodeError, match="envelope"):
        app.broker.publish("celery", b"not an envelope")


def test_bad_urls_and_unreachable_brokers_are_one_clear_error(rabbitmq_server: RabbitServer) -> None:
    secret = "canary-Wrong-pass"
    for url, error, needle in [
        (f"amqp://guest:{secret}@127.0.0.1:{rabbitmq_server.port}//", BrokerConnectionError, "ACCESS_REFUSED"),
        (f"amqp://guest:{secret}@127.0.0.1:{free_port()}//", BrokerConnectionError, "Connection refused"),
        (f"amqp://guest:{secret}@127.0.0.1:{rabbitmq_server.port}/no-such-vhost", BrokerConnectionError, "vhost"),
        ("amqp://localhost//?frobnicate=1", ConfigurationError, "unknown option(s) frobnicate"),
        ("amqps://localhost//?ssl_cert_reqs=none", ConfigurationError, "always verified"),
        ("amqps://localhost//?ssl_ca_certs=/nonexistent/ca.pem", ConfigurationError, "cannot read ssl_ca_certs"),
    ]:
        app = App("rq", broker=url)
        with pytest.raises(error) as raised:
            app.send_task("tasks.add", (1, 1))
        assert needle.lower() in str(raised.value).lower(), str(raised.value)
        assert secret not in str(raised.value)
    app = App("rq", broker=rabbitmq_server.url)
    with pytest.raises(ConfigurationError, match="classic' or 'quorum'"):
        app.conf.update(task_default_queue_type="stream")


def test_amqps_verifies_the_server_certificate(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "rabbit").mkdir()
    (tmp_path / "project").mkdir()
    server = RabbitServer(tmp_path / "rabbit", tls=True)
    try:
        base = f"amqps://guest:guest@localhost:{server.tls_port}//"
        project = Project(tmp_path / "project", "amqp", redis_url, f"{base}?ssl_ca_certs={server.ca_certs}")
        tasks = project.app()
        project.start_worker("-c", "1")
        assert tasks.add.delay(2, 2).get(timeout=30) == 4
        inspect = project.run_cli("-A", "tasks", "inspect", "ping")
        assert inspect.returncode == 0 and "1 node online" in inspect.stdout, inspect.stdout + inspect.stderr
        # Not signed by a CA the system trusts: refused, with why.
        with pytest.raises(BrokerConnectionError, match=r"(?i)certificate|UnknownIssuer"):
            App("rq", broker=base).send_task("tasks.add", (1, 1))
        project.close()
    finally:
        server.stop()


# -- R6: garbage frames ------------------------------------------------------------------------------------


def test_r6_garbage_frames_are_dead_lettered_with_their_reason(aproject: Project) -> None:
    tasks = aproject.app()
    broker = tasks.app.broker
    broker.prepare_consumer(["celery"], False)
    good_headers = {"task": "tasks.add", "id": "x", "lang": "py", "retries": 0, "root_id": "x"}
    frames = {
        "content_disallowed:yaml": (
            b"- 1\n",
            {"content_type": "application/x-yaml", "application_headers": good_headers},
        ),
        "content_disallowed:none": (b"[[1, 2], {}, {}]", {"application_headers": good_headers}),
        "decode_error:body": (
            b"\xff\xfe not json",
            {"content_type": "application/json", "application_headers": good_headers},
        ),
        "decode_error:headers": (
            b"[[1, 2], {}, {}]",
            {"content_type": "application/json", "application_headers": {**good_headers, "retries": "many"}},
        ),
        "decode_error:no-headers": (b"[[1, 2], {}, {}]", {"content_type": "application/json"}),
        "unregistered:ghost": (
            b"[[1, 2], {}, {}]",
            {"content_type": "application/json", "application_headers": {**good_headers, "task": "tasks.ghost"}},
        ),
    }
    with raw_channel(aproject.broker_url) as ch:
        for body, props in frames.values():
            ch.basic_publish(amqp.Message(body, **props), exchange="celery", routing_key="celery")
    worker = aproject.start_worker("-c", "1")
    assert tasks.add.delay(20, 22).get(timeout=60) == 42
    wait_for(lambda: len(broker.dead_letters("celery")) >= len(frames), 30, "every frame dead-lettered")
    assert sorted(d.reason for d in broker.dead_letters("celery")) == sorted(k.split(":")[0] for k in frames)
    assert worker.proc.poll() is None
    assert tasks.add.delay(1, 1).get(timeout=30) == 2


# -- a dead child's messages ------------------------------------------------------------------------------


def test_a_hard_time_limit_kills_once_and_its_message_is_not_run_again(aproject: Project) -> None:
    """RabbitMQ returns the killed child's message itself; the supervisor's verdict settles it."""
    tasks = aproject.app()
    worker = aproject.start_worker("-c", "2")
    limited = tasks.hard_limited.delay(30, "hard")
    neighbours = tasks.record.delay_many([(f"n-{i}",) for i in range(20)])
    with pytest.raises(TimeLimitExceeded):
        limited.get(timeout=30)
    assert [r.get(timeout=30) for r in neighbours] == [1] * 20
    worker.wait_for_log(f"Task tasks.hard_limited[{limited.id}] was stopped and its outcome stored")
    time.sleep(1.0)  # a second run, if any, would show up here
    assert aproject.ledger_count("hard") == 1 and tasks.app.broker.queue_length("celery") == 0
    assert tasks.app.broker.dead_letters("celery") == []


def test_revoke_reaches_a_task_still_waiting_in_the_queue(aproject: Project) -> None:
    """No broker-side store on RabbitMQ: the revocation is broadcast to live workers, as in Celery."""
    tasks = aproject.app()
    aproject.start_worker("-c", "1", "--prefetch-multiplier", "1")
    busy = tasks.sleep.delay(2.0)
    time.sleep(0.5)  # the worker's one slot is taken; the next message waits in the queue
    waiting = tasks.record.delay("revoked")
    waiting.revoke()
    assert busy.get(timeout=30) == 2.0
    with pytest.raises(TaskRevokedError):
        waiting.get(timeout=30)
    assert aproject.ledger_count("revoked") == 0


# -- remote control --------------------------------------------------------------------------------------


def test_inspect_and_control_over_amqp(aproject: Project, rabbitmq_server: RabbitServer) -> None:
    tasks = aproject.app()
    aproject.start_worker("-c", "2", "-n", "w1@test")
    ping = aproject.run_cli("-A", "tasks", "inspect", "ping")
    assert ping.returncode == 0 and "-> w1@test: OK" in ping.stdout, ping.stdout + ping.stderr
    queues = json.loads(aproject.run_cli("-A", "tasks", "inspect", "active_queues", "--json").stdout)
    assert [q["name"] for q in queues["w1@test"]] == ["celery"]
    added = aproject.run_cli("-A", "tasks", "control", "add_consumer", "reports")
    assert added.returncode == 0, added.stderr
    assert tasks.add.apply_async((2, 3), queue="reports").get(timeout=30) == 5
    rate = aproject.run_cli("-A", "tasks", "control", "rate_limit", "tasks.add", "10/m")
    assert rate.returncode == 0, rate.stdout + rate.stderr
    assert "-> w1@test: OK\n    new rate limit set successfully" in rate.stdout  # the walkthrough's words
    vhost = aproject.broker_url.rsplit("/", 1)[1]
    listed = rabbitmq_server.ctl("list_queues", "-p", vhost, "name", "--quiet", "--no-table-headers").split()
    # Each call's reply queue went with its client; only the worker's own command queue is left.
    assert [q for q in listed if "pidbox" in q and "reply" in q] == []
    assert len([q for q in listed if q.endswith(".celery.pidbox")]) == 1


# -- R4: the broker killed and restarted -----------------------------------------------------------------


@pytest.mark.slow
def test_r4_worker_resumes_after_rabbitmq_is_killed_and_restarted(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "rabbit").mkdir()
    (tmp_path / "project").mkdir()
    server = RabbitServer(tmp_path / "rabbit")
    project = Project(tmp_path / "project", "amqp", redis_url, server.url)
    try:
        n = 400
        tasks = project.app()
        results = tasks.sleep.delay_many([(0.01, f"r4-{i}") for i in range(n)])  # confirmed: on disk
        worker = project.start_worker("-c", "2")
        wait_for(lambda: project.ledger_count() >= 50, 60, "some tasks done")
        server.kill()
        killed = time.monotonic()
        time.sleep(1.0)
        server.start()
        back = time.monotonic()
        done_before = project.ledger_count()
        resumed_s = wait_for(lambda: project.ledger_count() > done_before, 30, "the same worker resumes")
        wait_for(lambda: len({k for k, _, _ in project.ledger_rows()}) >= n, 120, f"all {n} tasks ran")
        counts: dict[str, int] = {}
        for key, _, _ in project.ledger_rows():
            counts[key] = counts.get(key, 0) + 1
        lost = [i for i in range(n) if f"r4-{i}" not in counts]
        duplicates = sum(c - 1 for c in counts.values())
        print(
            f"\nR4 [amqp] tasks={n} done-before-kill~{done_before} lost={len(lost)} duplicates={duplicates} "
            f"broker-down={back - killed:.1f}s worker-resumed-after-return={resumed_s:.1f}s"
        )
        assert lost == [] and worker.proc.poll() is None
        assert resumed_s < 10
        assert [r.get(timeout=30) for r in results[-5:]] == [0.01] * 5
        assert tasks.add.delay(2, 3).get(timeout=30) == 5  # this producer reconnected too
        assert worker.stop() == 0
    finally:
        project.close()
        server.stop()


# -- R10: the canary --------------------------------------------------------------------------------------


def test_r10_canary_password_appears_nowhere(rabbitmq_server: RabbitServer, tmp_path: Path, redis_url: str) -> None:
    canary = "canary-Amqp-s3cret"
    rabbitmq_server.ctl("add_user", "canary", canary)
    url = rabbitmq_server.new_vhost()
    vhost = url.rsplit("/", 1)[1]
    rabbitmq_server.ctl("set_permissions", "-p", vhost, "canary", ".*", ".*", ".*")
    project = Project(tmp_path, "amqp", redis_url, url.replace("guest:guest", f"canary:{canary}"))
    try:
        tasks = project.app()
        worker = project.start_worker("-c", "1")
        assert tasks.add.delay(1, 2).get(timeout=30) == 3
        stats = project.run_cli("-A", "tasks", "inspect", "conf", "--json")
        assert worker.stop() == 0
        bad = {**project.env, "TEST_BROKER_URL": f"amqp://canary:{canary}@127.0.0.1:{free_port()}/{vhost}"}
        refused = project.run_cli("-A", "tasks", "worker", "-c", "1", env=bad)
        assert refused.returncode != 0
        seen = {
            "worker log": worker.log_text(),
            "banner": worker.output(),
            "inspect conf": stats.stdout + stats.stderr,
            "connection error": refused.stdout + refused.stderr,
            "reprs": repr(tasks.app) + repr(tasks.app.broker),
        }
        assert "**" in seen["connection error"] and "**" in seen["inspect conf"]
        assert [where for where, text in seen.items() if canary in text] == []
    finally:
        project.close()
