"""The RabbitMQ broker: Celery's AMQP topology and frames, driven by ``_rqueue.AmqpBroker`` (Rust, GIL released).

Messages travel as Celery sends them to RabbitMQ (properties, v2 headers, raw body), with publisher
confirms, persistent delivery and durable queues declared argument-identical to Celery's. A delivery
is settled on the channel that delivered it, so acks go through the consumer (``AmqpConsumer``).
Messages due later go through Celery 5.5's native delayed-delivery levels. Revocations have no
broker-side store here: they are broadcast, and workers keep them with ``--statedb``, as Celery does.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rqueue import _rqueue
from rqueue.brokers.base import (
    EVENT_EXCHANGE,
    Broker,
    Completer,
    DeadLetter,
    DeadLetterAdmin,
    EventChannel,
    Mailbox,
    Malformed,
)
from rqueue.exceptions import ConfigurationError
from rqueue.urls import amqp_params, mask_password

if TYPE_CHECKING:
    from rqueue.backends.base import ResultBackend
    from rqueue.config import Settings

#: kombu's pidbox on AMQP: commands fan out on this exchange to one queue per listener; replies go
#: through the reply exchange to the client's queue, bound under its id.
PIDBOX_EXCHANGE = "celery.pidbox"
REPLY_EXCHANGE = "reply.celery.pidbox"

_INHERITED: list[Any] = []


def topology(conf: Settings) -> str:
    """The queues' declarations as Celery makes them, as JSON for the transport.

    Queues named in ``task_queues`` as dicts (``name``, ``exchange``, ``exchange_type``,
    ``routing_key``, ``queue_arguments``) or kombu ``Queue`` objects keep their own; any other
    queue gets Celery's automatic declaration (exchange and routing key named after it).
    ``task_queue_max_priority`` adds ``x-max-priority`` and ``task_default_queue_type = 'quorum'``
    ``x-queue-type`` to queues that name none.
    """
    defaults: dict[str, Any] = {}
    if conf.task_default_queue_type == "quorum":
        defaults["x-queue-type"] = "quorum"
    if conf.task_queue_max_priority is not None:
        defaults["x-max-priority"] = conf.task_queue_max_priority
    specs: list[dict[str, Any]] = []
    if conf.task_default_exchange:
        queue = conf.task_default_queue
        specs.append(
            {"name": queue, "exchange": conf.task_default_exchange, "routing_key": queue, "arguments": defaults}
        )
    for entry in conf.task_queues or ():
        spec = _queue_spec(entry, defaults)
        if spec is not None:
            specs.append(spec)
    return json.dumps(
        {
            "queues": specs,
            "default_arguments": defaults,
            "delayed_queue_type": conf.broker_native_delayed_delivery_queue_type,
        }
    )


def _queue_spec(entry: Any, defaults: dict[str, Any]) -> dict[str, Any] | None:
    """The declaration of one ``task_queues`` entry (None for a bare name: declared by default)."""
    if isinstance(entry, str):
        return None
    if isinstance(entry, dict):
        get = entry.get
    else:  # a kombu Queue, or anything shaped like one

        def get(key: str, default: Any = None) -> Any:
            return getattr(entry, key, default)

    name = get("name")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"task_queues: an entry without a name: {entry!r}")
    exchange = get("exchange")
    exchange_type = get("exchange_type")
    if exchange is not None and not isinstance(exchange, str):  # a kombu Exchange
        exchange_type = exchange_type or getattr(exchange, "type", None)
        exchange = getattr(exchange, "name", None)
    arguments = dict(defaults)
    arguments.update(get("queue_arguments") or {})
    return {
        "name": name,
        "exchange": name if exchange is None else exchange,
        "exchange_type": exchange_type or "direct",
        "routing_key": get("routing_key") or name,
        "arguments": arguments,
    }


class AmqpBroker(Broker, DeadLetterAdmin):
    """Messages in RabbitMQ, declared and framed exactly as Celery's AMQP transport does."""

    def __init__(self, url: str, conf: Settings) -> None:
        params = amqp_params(url, "broker_url")
        options = {**conf.broker_transport_options, **params.options}
        self.url = url
        self._kwargs: dict[str, Any] = {
            "host": params.host,
            "port": params.port,
            "username": params.userid,
            "password": params.password,
            "vhost": params.virtual_host,
            "tls": params.tls,
            "ca_pem": _ca_pem(params.options),
            "heartbeat_s": int(float(options.get("heartbeat", conf.broker_heartbeat))),
            "connect_timeout_s": float(options.get("connect_timeout", conf.broker_connection_timeout)),
            # A publish (and its confirm) fails within this, with its outcome unknown: a frozen
            # node must not hold delay() for long.
            "confirm_timeout_s": float(options.get("confirm_timeout", conf.broker_connection_timeout)),
            "topology": topology(conf),
        }
        self.control_ttl_ms = int(conf.control_queue_ttl * 1000)
        self.control_expires_ms = int(conf.control_queue_expires * 1000)
        self.event_ttl_ms = int(conf.event_queue_ttl * 1000)
        self.event_expires_ms = int(conf.event_queue_expires * 1000)
        self._native: _rqueue.AmqpBroker | None = None
        self._pid = -1
        self.native  # noqa: B018 - a bad option fails at configuration, not at first use

    @property
    def native(self) -> _rqueue.AmqpBroker:
        """This process's handle (a fork makes a new one: its I/O thread did not survive)."""
        if self._pid != os.getpid():
            if self._native is not None:
                _INHERITED.append(self._native)  # never close what the parent still uses
            self._native = _rqueue.AmqpBroker(**self._kwargs)
            self._pid = os.getpid()
        assert self._native is not None
        return self._native

    def publish(self, queue: str, payload: bytes, priority: int = 0, eta_ms: int | None = None) -> None:
        self.native.publish(queue, payload, priority, eta_ms)

    def publish_many(self, messages: Sequence[tuple[str, bytes, int, int | None]]) -> None:
        self.native.publish_many(list(messages))

    def consumer(
        self,
        queues: Sequence[str],
        owner: str,
        buffer: _rqueue.PrefetchBuffer,
        lease_s: float,
        max_deliveries: int,
        poll_max_ms: int,
    ) -> AmqpConsumer:
        # RabbitMQ pushes and holds unacked messages for the consumer's connection: no lease to
        # renew and no polling, so lease_s and poll_max_ms do not apply.
        thread = _rqueue.AmqpConsumer(self.native, list(queues), owner, buffer, max_deliveries=max_deliveries)
        return AmqpConsumer(thread)

    def prepare_consumer(self, queues: Sequence[str], allow_eviction: bool) -> None:
        """Declare the queues, their bindings and the delay levels before consuming."""
        self.native.declare(list(queues))

    def purge(self, queues: Sequence[str]) -> int:
        return self.native.purge(list(queues))

    def queue_length(self, queue: str) -> int:
        return self.native.queue_length(queue)

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        return [DeadLetter(*row) for row in self.native.dead_letters(queue, limit)]

    def requeue_dead(self, queue: str, ids: Sequence[str]) -> int:
        return self.native.requeue_dead(queue, list(ids))

    def purge_dead(self, queue: str) -> int:
        return self.native.purge_dead(queue)

    def mailbox(self) -> AmqpMailbox:
        return AmqpMailbox(self)

    def events(self) -> AmqpEvents:
        return AmqpEvents(self)

    def __repr__(self) -> str:
        return f"<AmqpBroker {mask_password(self.url)}>"


def _ca_pem(options: dict[str, str]) -> str | None:
    """The PEM text of ``ssl_ca_certs``; ``ssl_cert_reqs`` other than ``required`` is refused."""
    reqs = options.get("ssl_cert_reqs", "required").lower().replace("cert_", "")
    if reqs != "required":
        raise ConfigurationError(
            f"broker_url: ssl_cert_reqs={options['ssl_cert_reqs']} is not supported on amqps://: the server's "
            "certificate is always verified (give ssl_ca_certs=/path/ca.pem for a private CA)"
        )
    path = options.get("ssl_ca_certs")
    if not path:
        return None
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigurationError(f"broker_url: cannot read ssl_ca_certs {path!r}: {exc}") from None


class AmqpConsumer:
    """The ``BrokerConsumer`` of RabbitMQ: the extension's thread takes pushed deliveries; they are
    settled on the channel that delivered them (the thread's)."""

    def __init__(self, thread: _rqueue.AmqpConsumer) -> None:
        self.thread = thread

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> list[_rqueue.Delivery]:
        return self.thread.stop()

    def set_queues(self, queues: Sequence[str]) -> None:
        self.thread.set_queues(list(queues))

    def failure(self) -> str | None:
        return None if self.thread.running else self.thread.last_error

    def ack(self, tags: Sequence[str]) -> None:
        self.thread.ack(list(tags))

    def ack_later(self, tags: Sequence[str]) -> None:
        self.ack(tags)  # an AMQP ack is one frame, with no reply to wait for

    def settle_acks(self, timeout_s: float) -> bool:
        return True

    def joint_completer(self, backend: ResultBackend) -> Completer | None:
        return None  # results never live in RabbitMQ's queues with the acks

    def requeue(self, tags: Sequence[str]) -> None:
        self.thread.requeue(list(tags))

    def release(self, delivery: _rqueue.Delivery) -> None:
        # RabbitMQ counts nothing itself: the message goes back carrying its count.
        self.thread.recount(delivery.tag, delivery.deliveries)

    def dead_letter(self, tag: str, reason: str, error: str | None = None) -> None:
        self.thread.dead_letter(tag, reason, error)

    def close(self) -> None:
        self.thread.close()

    def recount(self, tag: str, died_running: int) -> None:
        self.thread.recount(tag, died_running)


class AmqpMailbox(Mailbox):
    """kombu's pidbox on RabbitMQ, so Celery's ``inspect``/``control`` and rqueue's reach each other's
    workers: commands fan out on ``celery.pidbox`` to one self-deleting queue per listener; replies go
    through ``reply.celery.pidbox`` to the client's queue, bound under its id."""

    def __init__(self, broker: AmqpBroker) -> None:
        self.broker = broker
        self._queue: str | None = None

    def _declare(self, exchange: str, kind: str, queue: str = "", routing_key: str = "") -> None:
        b = self.broker
        b.native.declare_transient(exchange, kind, queue, routing_key, b.control_ttl_ms, b.control_expires_ms)

    def reply_address(self) -> dict[str, str]:
        oid = str(uuid.uuid4())
        queue = f"{oid}.{REPLY_EXCHANGE}"
        self._declare(REPLY_EXCHANGE, "direct", queue, oid)
        self.broker.native.listen(queue)
        return {"exchange": REPLY_EXCHANGE, "routing_key": oid}

    def broadcast(self, command: dict[str, Any], timeout_s: float) -> None:
        self._declare(PIDBOX_EXCHANGE, "fanout")
        headers = {"clock": 1, "expires": time.time() + timeout_s}
        self.broker.native.publish_transient(PIDBOX_EXCHANGE, "", json.dumps(command).encode(), json.dumps(headers))

    def replies(self, reply_to: dict[str, str], ticket: str, timeout_s: float, limit: int | None) -> list[Any]:
        queue = f"{reply_to['routing_key']}.{REPLY_EXCHANGE}"
        deadline = time.monotonic() + timeout_s
        found: list[Any] = []
        while limit is None or len(found) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for body, headers, _, _ in self.broker.native.receive(queue, left, 100):
                opened = _open(body, headers)
                if opened is not None and opened[1].get("ticket") == ticket:
                    found.append(opened[0])
        return found

    def close_replies(self, reply_to: dict[str, str]) -> None:
        self.broker.native.unlisten(f"{reply_to['routing_key']}.{REPLY_EXCHANGE}")

    def listen(self) -> None:
        self._queue = f"{uuid.uuid4()}.{PIDBOX_EXCHANGE}"
        self._declare(PIDBOX_EXCHANGE, "fanout", self._queue, "")
        self.broker.native.listen(self._queue)

    def commands(self, timeout_s: float) -> list[Any]:
        if self._queue is None:
            self.listen()
        assert self._queue is not None
        found: list[Any] = []
        for body, headers, _, _ in self.broker.native.receive(self._queue, timeout_s, 100):
            opened = _open(body, headers)
            if opened is None:
                found.append(None)
            elif _unexpired(opened[1]):
                found.append(opened[0])
        return found

    def reply(self, reply_to: dict[str, str], ticket: str, body: dict[str, Any]) -> None:
        headers = json.dumps({"ticket": ticket, "clock": 1})
        self.broker.native.publish_transient(
            reply_to["exchange"], reply_to["routing_key"], json.dumps(body).encode(), headers
        )


class AmqpEvents(EventChannel):
    """Celery's events on RabbitMQ: the durable topic exchange ``celeryev`` (declared with Celery's
    flags, so either side may declare it first), routing key = the event type with ``.`` for ``-``;
    each receiver has its own queue ``celeryev.<uuid>`` bound with ``#`` (exclusive, self-deleting,
    messages dropped after ``event_queue_ttl``)."""

    def __init__(self, broker: AmqpBroker) -> None:
        self.broker = broker
        self._declared = False
        self._queue: str | None = None

    def _declare(self, queue: str = "", routing_key: str = "") -> None:
        b = self.broker
        b.native.declare_transient(
            EVENT_EXCHANGE, "topic", queue, routing_key, b.event_ttl_ms, b.event_expires_ms, durable_exchange=True
        )

    def publish(self, routing_key: str, body: bytes, hostname: str) -> None:
        if not self._declared:
            self._declare()
            self._declared = True
        headers = json.dumps({"hostname": hostname})
        self.broker.native.publish_transient(EVENT_EXCHANGE, routing_key, body, headers)

    def subscribe(self) -> None:
        queue = f"{EVENT_EXCHANGE}.{uuid.uuid4()}"
        self._declare(queue, "#")
        self.broker.native.listen(queue)
        self._queue = queue

    def receive(self, timeout_s: float) -> list[bytes | Malformed]:
        if self._queue is None:
            self.subscribe()
        assert self._queue is not None
        found: list[bytes | Malformed] = []
        for body, _headers, _, content_type in self.broker.native.receive(self._queue, timeout_s, 1000):
            if content_type not in (None, "application/json"):
                found.append(Malformed(f"content type {content_type!r} is not JSON", body))
            else:
                found.append(body)
        return found

    def close(self) -> None:
        if self._queue is not None:
            self.broker.native.unlisten(self._queue)
            self._queue = None


def _open(body: bytes, headers_json: str) -> tuple[Any, dict[str, Any]] | None:
    """``(body, headers)`` of a control message, or None when its body is not JSON."""
    try:
        headers = json.loads(headers_json)
        return json.loads(body), headers if isinstance(headers, dict) else {}
    except ValueError:
        return None


def _unexpired(headers: dict[str, Any]) -> bool:
    expires = headers.get("expires")
    return not isinstance(expires, (int, float)) or not expires or expires >= time.time()
