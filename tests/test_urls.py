"""AMQP URLs read by kombu's rules: the same host, port, credentials and vhost as a Celery client."""

from __future__ import annotations

from typing import Any

import pytest

from rqueue.exceptions import ConfigurationError
from rqueue.urls import amqp_params, mask_password

URLS = [
    "amqp://",
    "amqp://guest@localhost//",
    "amqp://user:p%40ss@host:5673/vh",
    "amqp://bob@h/",
    "amqp://h",
    "pyamqp://u:p@h//",
    "amqps://u:p@h//",
    "amqps://u:p@h:6000/prod",
    "amqp://h/%2F",
    "amqp://h//x",
    "amqp://u@h?heartbeat=10&connect_timeout=3",
    "amqp://[::1]:5672//",
]


@pytest.mark.parametrize("url", URLS)
def test_amqp_params_match_kombu(url: str) -> None:
    kombu = pytest.importorskip("kombu")
    info = kombu.Connection(url).info()
    params = amqp_params(url, "broker_url")
    assert (params.host, params.port, params.userid, params.password, params.virtual_host) == (
        info["hostname"],
        info["port"],
        info["userid"],
        info["password"],
        info["virtual_host"],
    )
    assert params.tls == bool(info["ssl"])


def test_amqp_params_keep_known_options() -> None:
    params = amqp_params("amqps://h//?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required&heartbeat=30", "broker_url")
    assert params.options == {"ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "required", "heartbeat": "30"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://h:99999//", "is not a valid URL"),
        ("amqp://h//?frame_max=1", "unknown option.*frame_max.*supported: connect_timeout, heartbeat"),
        ("amqp://h//?ssl_ca_certs=/ca.pem", "ssl_\\* options need an amqps:// URL"),
        ("redis://h", "is not an amqp://, pyamqp:// or amqps:// URL"),
    ],
)
def test_bad_amqp_url_is_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        amqp_params(url, "broker_url")


def test_amqp_password_is_masked_in_errors() -> None:
    with pytest.raises(ConfigurationError) as caught:
        amqp_params("amqp://u:s3cr3t@h//?nope=1", "broker_url")
    assert "s3cr3t" not in str(caught.value)
    assert mask_password("amqp://u:s3cr3t@h:5672//") == "amqp://u:***@h:5672//"


def kombu_connection(params: Any) -> Any:
    """A py-amqp connection (through kombu) from parsed parameters."""
    kombu = pytest.importorskip("kombu")
    return kombu.Connection(
        hostname=params.host,
        port=params.port,
        userid=params.userid,
        password=params.password,
        virtual_host=params.virtual_host,
        transport="pyamqp",
        connect_timeout=5,
    )


@pytest.mark.rabbitmq
def test_amqp_params_reach_a_real_rabbitmq(rabbitmq_server: Any) -> None:
    """The parameters read from a URL open a connection to RabbitMQ on its default vhost ``/``."""
    kombu = pytest.importorskip("kombu")
    params = amqp_params(f"amqp://guest@127.0.0.1:{rabbitmq_server.port}//", "broker_url")
    assert (params.userid, params.password, params.virtual_host) == ("guest", "guest", "/")
    with kombu_connection(params) as conn:
        queue = kombu.Queue("rqueue-url-check", exclusive=True)
        with conn.Producer() as producer:
            producer.publish({"n": 1}, routing_key=queue.name, declare=[queue])
        message = queue(conn.default_channel).get(no_ack=True)
        assert message is not None and message.payload == {"n": 1}
    wrong_vhost = amqp_params(f"amqp://guest@127.0.0.1:{rabbitmq_server.port}/nowhere", "broker_url")
    with pytest.raises(Exception, match=r"(?i)vhost|access|not_allowed"), kombu_connection(wrong_vhost) as conn:
        conn.connect()
