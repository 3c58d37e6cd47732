"""Redis over TLS (``rediss://``): a real redis-server listening only on a TLS port, with a CA and
a server certificate for 127.0.0.1 made by the ``openssl`` CLI for the test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Project, RedisServer, make_test_ca
from rqueue import App, _rqueue
from rqueue.exceptions import BackendError, BrokerConnectionError, ConfigurationError
from rqueue.urls import redis_py_url

pytestmark = pytest.mark.redis


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[RedisServer]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir, tls=True, extra_args=["--requirepass", "s3cret-pw"])
    yield server
    server.stop()


def with_password(url: str) -> str:
    return url.replace("rediss://", "rediss://:s3cret-pw@", 1)


def test_worker_round_trip_over_tls(tmp_path: Path, tls_server: RedisServer) -> None:
    url = with_password(tls_server.url)
    assert url.startswith("rediss://") and "ssl_ca_certs=" in url
    project = Project(tmp_path, "redis", url)
    worker = project.start_worker("-c", "1")
    try:
        tasks = project.app()
        assert tasks.add.delay(2, 2).get(timeout=30) == 4
        app = tasks.app
        # the redis-py side of the broker (revocations) speaks TLS too
        app.broker.revoke(["some-id"], int(time.time() * 1000) + 60_000)
        assert [tid for tid, _ in app.broker.revoked_since(0)] == ["some-id"]
        assert "s3cret-pw" not in repr(app.broker) + repr(app.backend)
    finally:
        assert worker.stop() == 0


def test_wrong_ca_is_a_clear_error_with_the_password_masked(tmp_path: Path, tls_server: RedisServer) -> None:
    other = make_test_ca(tmp_path, "other-ca")
    url = with_password(tls_server.url).replace(str(tls_server.ca_certs), str(other))
    with pytest.raises(BrokerConnectionError) as info:
        _rqueue.RedisBroker(url, connect_timeout_s=3.0)
    text = str(info.value)
    assert "certificate" in text and "ssl_ca_certs" in text
    assert "s3cret-pw" not in text and ":***@" in text
    app = App("tls", broker=url, backend=url)
    with pytest.raises(BackendError) as backend_info:
        app.AsyncResult("no-such-task").state  # noqa: B018 - reading the state reaches the server
    assert "s3cret-pw" not in str(backend_info.value)


def test_cert_reqs_none_skips_verification(tmp_path: Path, tls_server: RedisServer) -> None:
    url = f"rediss://:s3cret-pw@127.0.0.1:{tls_server.port}/0?ssl_cert_reqs=CERT_NONE"
    app = App("tls", broker=url, backend=url)
    app.send_task("tasks.add", [1, 2])
    assert app.broker.queue_length("celery") == 1
    assert app.AsyncResult("no-such-task").state == "PENDING"


def test_redis_py_url_maps_kombu_options(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    assert redis_py_url("redis://h:1/0?db=2") == ("redis://h:1/0?db=2", {})
    assert redis_py_url("rediss://h:1/0") == ("rediss://h:1/0", {"ssl_cert_reqs": "required"})
    url, options = redis_py_url(f"rediss://:pw@h:1/0?ssl_cert_reqs=CERT_OPTIONAL&ssl_ca_certs={ca}&x=1")
    assert (url, options) == ("rediss://:pw@h:1/0?x=1", {"ssl_cert_reqs": "optional", "ssl_ca_certs": str(ca)})
    _, options = redis_py_url("rediss://h/0?ssl_cert_reqs=none&ssl_ca_certs=/missing.pem")
    assert options == {"ssl_cert_reqs": "none"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rediss://:pw@h/0?ssl_cert_reqs=sometimes", "ssl_cert_reqs='sometimes' is not one of required"),
        ("rediss://:pw@h/0?ssl_keyfile=/k.pem", "unknown TLS option ssl_keyfile"),
        ("redis://:pw@h/0?ssl_ca_certs=/ca.pem", "only applies to TLS connections; use a rediss:// URL"),
        ("rediss://:pw@h/0?ssl_ca_certs=/no/such/ca.pem", "cannot read"),
    ],
)
def test_bad_tls_options_are_clear_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        redis_py_url(url)
    assert ":pw@" not in str(info.value)
    with pytest.raises(ConfigurationError) as native:
        _rqueue.RedisBroker(url)
    assert ":pw@" not in str(native.value)
