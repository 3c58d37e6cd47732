"""The Redis broker: kombu's key layout, driven by ``_rqueue.RedisBroker`` (Rust, GIL released).

Messages, leases, ETA sets and dead letters are handled in Rust. Revocations (read about once a
second, not on the hot path) use redis-py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rqueue import _rqueue
from rqueue.brokers.base import (
    EVENT_EXCHANGE,
    EventChannel,
    Mailbox,
    Malformed,
    NativeBroker,
    NativeConsumer,
    RevocationStore,
)
from rqueue.exceptions import BrokerError, ConfigurationError
from rqueue.urls import mask_password, redis_py_url

#: Revocations: a sorted set of task ids scored by when they were revoked, and their expiries.
REVOKED_KEY = "rqueue.revoked"
REVOKED_EXPIRES_KEY = "rqueue.revoked.expires"

#: kombu's pidbox: commands fan out on this exchange (a PUB/SUB channel), replies go to a list
#: named ``<oid>.reply.celery.pidbox`` bound to the reply exchange under the routing key ``<oid>``.
PIDBOX_EXCHANGE = "celery.pidbox"
REPLY_EXCHANGE = "reply.celery.pidbox"
BINDING_PREFIX = "_kombu.binding."
#: kombu's separator inside binding entries.
SEP = "\x06\x16"
#: A reply list outlives its client by this much at most (a client that died leaves nothing).
REPLY_KEEP_S = 60
#: The longest an event publish waits for Redis (connect or reply) before it counts as failed.
EVENTS_TIMEOUT_S = 1.0

_INHERITED: list[Any] = []

logger = logging.getLogger(__name__)

#: How the transport's errors say that Redis refused a write because its memory is full.
OUT_OF_MEMORY = "is out of memory"


#: kombu's default ``visibility_timeout`` (seconds): how long a Celery worker's unacked message
#: is left alone unless ``broker_transport_options['visibility_timeout']`` says otherwise.
KOMBU_VISIBILITY_S = 3600.0


def redis_py() -> Any:
    """The redis-py module (remote control and admin go through it), or a ConfigurationError
    saying how to install it: it is optional (``rqueue[redis]``)."""
    try:
        import redis  # noqa: PLC0415 - optional
    except ImportError:
        raise ConfigurationError(
            "the Redis broker needs redis-py, which is not installed: pip install 'rqueue[redis]'"
        ) from None
    return redis


class RedisBroker(NativeBroker, RevocationStore):
    """Messages in Redis lists, exactly where Celery's kombu transport puts them."""

    def __init__(
        self,
        url: str,
        *,
        global_keyprefix: str = "",
        connect_timeout_s: float = 4.0,
        socket_timeout_s: float = 10.0,
        foreign_visibility_s: float = KOMBU_VISIBILITY_S,
    ) -> None:
        redis_py_url(url)  # a bad TLS option fails at configuration, not at first use
        self.url = url
        self.global_keyprefix = global_keyprefix
        #: When another client's (a Celery worker's) in-flight message, which has no rqueue lease,
        #: counts as abandoned and is restored: that client's visibility timeout.
        self.foreign_visibility_s = foreign_visibility_s
        self.connect_timeout_s = connect_timeout_s
        self.socket_timeout_s = socket_timeout_s
        self._native: _rqueue.RedisBroker | None = None
        self._client: Any = None
        self._events_client: Any = None
        self._pid = -1

    def _fresh(self) -> bool:
        """True when the handles were made in this process (a fork makes them stale)."""
        if self._pid != os.getpid():
            # Never close sockets inherited over fork: the parent still uses them.
            _INHERITED.extend(h for h in (self._native, self._client, self._events_client) if h is not None)
            self._native = self._client = self._events_client = None
            self._pid = os.getpid()
        return True

    @property
    def native(self) -> _rqueue.RedisBroker:
        self._fresh()
        if self._native is None:
            self._native = _rqueue.RedisBroker(
                self.url,
                global_keyprefix=self.global_keyprefix,
                socket_timeout_s=self.socket_timeout_s,
                connect_timeout_s=self.connect_timeout_s,
                foreign_visibility_s=self.foreign_visibility_s,
            )
        return self._native

    @property
    def client(self) -> Any:
        """A redis-py client for the broker's database (control data, not messages)."""
        self._fresh()
        if self._client is None:
            redis = redis_py()
            url, tls = redis_py_url(self.url)
            self._client = redis.Redis.from_url(
                url,
                **tls,
                socket_timeout=self.socket_timeout_s,
                socket_connect_timeout=self.connect_timeout_s,
                health_check_interval=30,
            )
        return self._client

    @property
    def events_client(self) -> Any:
        """A redis-py client for publishing events, with a short reply timeout: a worker's main
        process sends heartbeats between its other duties, and a frozen server must not hold it."""
        self._fresh()
        if self._events_client is None:
            redis = redis_py()
            url, tls = redis_py_url(self.url)
            self._events_client = redis.Redis.from_url(
                url,
                **tls,
                socket_timeout=min(self.socket_timeout_s, EVENTS_TIMEOUT_S),
                socket_connect_timeout=min(self.connect_timeout_s, EVENTS_TIMEOUT_S),
                health_check_interval=30,
            )
        return self._events_client

    # -- messages ------------------------------------------------------------------------------------

    def consumer(
        self,
        queues: Sequence[str],
        owner: str,
        buffer: _rqueue.PrefetchBuffer,
        lease_s: float,
        max_deliveries: int,
        poll_max_ms: int,
    ) -> NativeConsumer:
        thread = _rqueue.RedisConsumer(
            self.url,
            list(queues),
            owner,
            buffer,
            lease_ms=int(lease_s * 1000),
            max_deliveries=max_deliveries,
            poll_max_ms=min(poll_max_ms, 20),
            global_keyprefix=self.global_keyprefix,
            foreign_visibility_s=self.foreign_visibility_s,
            socket_timeout_s=self.socket_timeout_s,
            connect_timeout_s=self.connect_timeout_s,
        )
        return self.native_consumer(thread)

    def prepare_consumer(self, queues: Sequence[str], allow_eviction: bool) -> None:
        """Declare kombu bindings for the queues, and refuse a server that may evict messages."""
        redis_py()  # a worker needs it (remote control): say so now, not at the first command
        policy = self.native.check_maxmemory_policy()
        if policy is not None and not allow_eviction:
            raise ConfigurationError(
                f"Redis at {mask_password(self.url)} has maxmemory-policy {policy!r}: it may evict queued "
                "messages under memory pressure. Set it to noeviction (CONFIG SET maxmemory-policy noeviction), "
                "or start the worker with --allow-eviction to accept the risk"
            )
        try:
            self.native.declare_bindings(list(queues))
        except BrokerError as exc:
            if OUT_OF_MEMORY not in str(exc):
                raise
            # The bindings only route Celery producers' messages (and are there after any earlier
            # start): a full Redis must not keep the worker that would drain it from starting.
            logger.warning("%s; could not declare the queues' bindings for Celery producers", exc)

    # -- revocations -----------------------------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], expires_at_ms: int) -> None:
        now_ms = int(time.time() * 1000)
        prefix = self.global_keyprefix
        with self._as_broker_error():
            pipe = self.client.pipeline(transaction=True)
            pipe.zadd(prefix + REVOKED_KEY, dict.fromkeys(task_ids, now_ms))
            pipe.hset(prefix + REVOKED_EXPIRES_KEY, mapping=dict.fromkeys(task_ids, expires_at_ms))
            pipe.execute()

    def revoked_since(self, since_ms: int) -> list[tuple[str, int]]:
        prefix = self.global_keyprefix
        with self._as_broker_error():
            ids = [i.decode() for i in self.client.zrangebyscore(prefix + REVOKED_KEY, since_ms, "+inf")]
            expiries = self.client.hmget(prefix + REVOKED_EXPIRES_KEY, ids) if ids else []
        return [(i, int(e)) for i, e in zip(ids, expiries, strict=True) if e is not None]

    # -- remote control ------------------------------------------------------------------------------

    def mailbox(self) -> RedisMailbox:
        return RedisMailbox(self)

    def events(self) -> RedisEvents:
        return RedisEvents(self)

    def fanout_channel(self, exchange: str) -> str:
        """kombu's PUB/SUB channel of a fanout exchange (``fanout_prefix``: ``/<db>.<exchange>``)."""
        db = self.client.connection_pool.connection_kwargs.get("db", 0)
        return f"{self.global_keyprefix}/{db}.{exchange}"

    @contextmanager
    def _as_broker_error(self) -> Iterator[None]:
        """redis-py's errors leave as BrokerError, like the extension's, with the password masked."""
        redis = redis_py()
        try:
            yield
        except redis.RedisError as exc:
            raise BrokerError(f"Redis broker {mask_password(self.url)}: {exc}") from exc

    def __repr__(self) -> str:
        return f"<RedisBroker {mask_password(self.url)}>"


class RedisMailbox(Mailbox):
    """kombu's pidbox on Redis, so that Celery's ``inspect``/``control`` and rqueue's reach each
    other's workers: commands are kombu envelopes PUBLISHed on ``/<db>.celery.pidbox``; replies
    are kombu envelopes LPUSHed to the client's reply list."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._pubsub: Any = None

    @property
    def _channel(self) -> str:
        return self.broker.fanout_channel(PIDBOX_EXCHANGE)

    def reply_address(self) -> dict[str, str]:
        oid = str(uuid.uuid4())
        prefix = self.broker.global_keyprefix
        # The binding lets a Celery worker's reply (routed by kombu through the exchange) reach us.
        with self.broker._as_broker_error():
            self.broker.client.sadd(f"{prefix}{BINDING_PREFIX}{REPLY_EXCHANGE}", _binding(oid))
        return {"exchange": REPLY_EXCHANGE, "routing_key": oid}

    def broadcast(self, command: dict[str, Any], timeout_s: float) -> None:
        headers = {"clock": 1, "expires": time.time() + timeout_s}
        envelope = _envelope(command, headers, PIDBOX_EXCHANGE, "")
        with self.broker._as_broker_error():
            self.broker.client.publish(self._channel, envelope)

    def replies(self, reply_to: dict[str, str], ticket: str, timeout_s: float, limit: int | None) -> list[Any]:
        key = self._reply_key(reply_to)
        deadline = time.monotonic() + timeout_s
        found: list[Any] = []
        with self.broker._as_broker_error():
            while limit is None or len(found) < limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                # BRPOP's timeout has a resolution of 1 ms on Redis >= 6; never pass 0 (= forever),
                # nor more than the socket's read timeout (the loop waits again).
                wait = min(max(left, 0.001), self.broker.socket_timeout_s / 2)
                popped = self.broker.client.brpop([key], timeout=wait)
                if popped is None:
                    continue  # the deadline is checked at the top
                envelope = _open_envelope(popped[1])
                if envelope is not None and envelope[1].get("ticket") == ticket:
                    found.append(envelope[0])
        return found

    def close_replies(self, reply_to: dict[str, str]) -> None:
        prefix = self.broker.global_keyprefix
        with self.broker._as_broker_error():
            pipe = self.broker.client.pipeline(transaction=False)
            pipe.srem(f"{prefix}{BINDING_PREFIX}{REPLY_EXCHANGE}", _binding(reply_to["routing_key"]))
            pipe.delete(self._reply_key(reply_to))
            pipe.execute()

    def listen(self) -> None:
        with self.broker._as_broker_error():
            self._pubsub = self.broker.client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(self._channel)

    def commands(self, timeout_s: float) -> list[Any]:
        if self._pubsub is None:
            self.listen()
        found: list[Any] = []
        with self.broker._as_broker_error():
            message = self._pubsub.get_message(timeout=timeout_s)
            while message is not None:
                if message.get("type") == "message":
                    envelope = _open_envelope(message["data"])
                    if envelope is None:
                        found.append(None)
                    elif _unexpired(envelope[1]):
                        found.append(envelope[0])
                message = self._pubsub.get_message(timeout=0)
        return found

    def reply(self, reply_to: dict[str, str], ticket: str, body: dict[str, Any]) -> None:
        key = self._reply_key(reply_to)
        envelope = _envelope(body, {"ticket": ticket, "clock": 1}, reply_to["exchange"], reply_to["routing_key"])
        with self.broker._as_broker_error():
            pipe = self.broker.client.pipeline(transaction=False)
            pipe.lpush(key, envelope)
            pipe.expire(key, REPLY_KEEP_S)
            pipe.execute()

    def _reply_key(self, reply_to: dict[str, str]) -> str:
        return f"{self.broker.global_keyprefix}{reply_to['routing_key']}.{reply_to['exchange']}"


class RedisEvents(EventChannel):
    """Celery's events on Redis, as kombu's fanout exchange with ``fanout_patterns`` sends them: each
    message (a kombu envelope) is PUBLISHed on ``/<db>.celeryev/<routing key>``; receivers
    PSUBSCRIBE to ``/<db>.celeryev/*``."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._pubsub: Any = None
        self._prefix = ""
        #: The envelope's JSON around the body, by (routing key, hostname): made once, joined per
        #: publish (a large ``task.multi`` body is not scanned again by ``json.dumps``).
        self._frames: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    def publish(self, routing_key: str, body: bytes, hostname: str) -> None:
        if not self._prefix:
            self._prefix = self.broker.fanout_channel(EVENT_EXCHANGE) + "/"
        frame = self._frames.get((routing_key, hostname))
        if frame is None:
            frame = self._frames[(routing_key, hostname)] = _event_frame(routing_key, hostname)
        # base64 and a uuid need no JSON escaping: the pieces join into valid JSON as they are.
        envelope = b"".join((frame[0], base64.b64encode(body), frame[1], str(uuid.uuid4()).encode(), b'"}}'))
        with self.broker._as_broker_error():
            self.broker.events_client.publish(self._prefix + routing_key, envelope)

    def subscribe(self) -> None:
        with self.broker._as_broker_error():
            self._pubsub = self.broker.client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.psubscribe(self.broker.fanout_channel(EVENT_EXCHANGE) + "/*")

    def receive(self, timeout_s: float) -> list[bytes | Malformed]:
        if self._pubsub is None:
            self.subscribe()
        found: list[bytes | Malformed] = []
        with self.broker._as_broker_error():
            message = self._pubsub.get_message(timeout=timeout_s)
            while message is not None:
                if message.get("type") in ("pmessage", "message"):
                    found.append(_envelope_body(message["data"]))
                message = self._pubsub.get_message(timeout=0)
        return found

    def close(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):  # closing: a broken connection has nothing to release
                self._pubsub.close()
            self._pubsub = None


def _event_frame(routing_key: str, hostname: str) -> tuple[bytes, bytes]:
    """The JSON of an event's kombu envelope before its base64 body, and from after it up to its
    delivery tag's value (``_envelope_bytes``'s layout, for a body and tag joined in per publish)."""
    headers = json.dumps({"hostname": hostname})
    info = json.dumps({"exchange": EVENT_EXCHANGE, "routing_key": routing_key})
    tail = (
        f'", "content-encoding": "utf-8", "content-type": "application/json", "headers": {headers}, '
        f'"properties": {{"delivery_mode": 1, "delivery_info": {info}, "priority": 0, '
        f'"body_encoding": "base64", "delivery_tag": "'
    )
    return b'{"body": "', tail.encode()


def _envelope_body(data: bytes) -> bytes | Malformed:
    """The body of a kombu envelope as bytes (JSON bodies only), or why it is not one."""
    try:
        message = json.loads(data)
        body = message["body"]
        if message.get("content-type", "application/json") != "application/json":
            return Malformed(f"content type {message.get('content-type')!r} is not JSON", data)
        if message.get("properties", {}).get("body_encoding") == "base64":
            return base64.b64decode(body)
        return body.encode() if isinstance(body, str) else json.dumps(body).encode()
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return Malformed(f"not a kombu message ({type(exc).__name__}: {exc})", data)


def _binding(oid: str) -> str:
    return f"{oid}{SEP}{SEP}{oid}.{REPLY_EXCHANGE}"


def _envelope(body: Any, headers: dict[str, Any], exchange: str, routing_key: str) -> bytes:
    """A kombu message as its Redis transport stores it: the JSON body base64-encoded inside."""
    return _envelope_bytes(json.dumps(body).encode(), headers, exchange, routing_key)


def _envelope_bytes(body: bytes, headers: dict[str, Any], exchange: str, routing_key: str) -> bytes:
    """``_envelope`` of a body already encoded as JSON."""
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "delivery_mode": 1,
                "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def _open_envelope(data: bytes) -> tuple[Any, dict[str, Any]] | None:
    """``(body, headers)`` of a kombu message, or None when it is not one (JSON bodies only)."""
    try:
        message = json.loads(data)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        headers = message.get("headers") or {}
        if message.get("content-type", "application/json") != "application/json" or not isinstance(headers, dict):
            return None
        return json.loads(body), headers
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _unexpired(headers: dict[str, Any]) -> bool:
    expires = headers.get("expires")
    return not isinstance(expires, (int, float)) or not expires or expires >= time.time()
