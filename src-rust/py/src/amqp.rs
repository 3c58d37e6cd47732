//! `AmqpBroker` and `AmqpConsumer` over `rqueue_core::transport::amqp`: RabbitMQ settles a
//! delivery only on the channel that delivered it, so acks, requeues and dead letters are the
//! consumer's methods here, not the broker's (which publishes and administers). Every method
//! that touches the network runs with the GIL released.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use rqueue_core::transport::amqp::{AmqpBroker as CoreBroker, AmqpConfig, Topology};
use rqueue_core::transport::amqp_consumer::{AmqpConsumer as CoreConsumer, AmqpConsumerConfig};
use rqueue_core::Error;

use crate::broker::consumer_class;
use crate::broker::seconds;
use crate::broker::{dead_letter_rows, new_messages, DeadLetterRow, MessageTuple};
use crate::errors::IntoPyResult;
use crate::prefetch::PrefetchBuffer;

/// `(body, headers JSON, correlation_id, content_type)` of a message pushed to a listened queue.
type PushedTuple = (Vec<u8>, String, Option<String>, Option<String>);

/// A RabbitMQ broker in Celery's layout: publishes with confirms, declares, administers. The
/// password is masked in every message.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct AmqpBroker {
    inner: Arc<CoreBroker>,
}

#[pymethods]
impl AmqpBroker {
    #[new]
    #[pyo3(signature = (host, port, username, password, vhost, tls = false, ca_pem = None, heartbeat_s = 60, connect_timeout_s = 4.0, confirm_timeout_s = 30.0, topology = "{}"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: String,
        port: u16,
        username: String,
        password: String,
        vhost: String,
        tls: bool,
        ca_pem: Option<String>,
        heartbeat_s: u16,
        connect_timeout_s: f64,
        confirm_timeout_s: f64,
        topology: &str,
    ) -> PyResult<Self> {
        let cfg = (|| {
            Ok::<_, Error>(AmqpConfig {
                host,
                port,
                username,
                password,
                vhost,
                tls,
                ca_pem,
                heartbeat_s,
                connect_timeout: seconds("connect_timeout_s", connect_timeout_s)?,
                confirm_timeout: seconds("confirm_timeout_s", confirm_timeout_s)?,
                topology: Topology::from_json(topology)?,
            })
        })()
        .map_py(py)?;
        let inner = CoreBroker::new(cfg).map_py(py)?;
        Ok(AmqpBroker {
            inner: Arc::new(inner),
        })
    }

    /// The URL with its password masked.
    #[getter]
    fn url(&self) -> String {
        self.inner.masked_url()
    }

    /// Publish one task message (a kombu envelope) and wait for the broker's confirm; `eta_ms`
    /// in the future travels through the delay levels. The priority is the message's own.
    #[pyo3(signature = (queue, payload, priority = 0, eta_ms = None))]
    fn publish(
        &self,
        py: Python<'_>,
        queue: String,
        payload: Vec<u8>,
        priority: i64,
        eta_ms: Option<i64>,
    ) -> PyResult<()> {
        crate::broker::priority_of(priority).map_py(py)?;
        py.detach(|| self.inner.publish(&queue, &payload, eta_ms))
            .map_py(py)
    }

    /// Publish `(queue, payload, priority, eta_ms)` items, all or none, in one transaction.
    fn publish_many(&self, py: Python<'_>, messages: Vec<MessageTuple>) -> PyResult<()> {
        let messages = new_messages(messages).map_py(py)?;
        py.detach(|| self.inner.publish_many(&messages)).map_py(py)
    }

    /// Declare the queues a worker consumes, their bindings and the delay levels.
    fn declare(&self, py: Python<'_>, queues: Vec<String>) -> PyResult<()> {
        py.detach(|| self.inner.declare(&queues)).map_py(py)
    }

    fn queue_length(&self, py: Python<'_>, queue: String) -> PyResult<usize> {
        py.detach(|| self.inner.queue_length(&queue)).map_py(py)
    }

    /// Delete waiting messages of these queues; returns how many.
    fn purge(&self, py: Python<'_>, queues: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.purge(&queues)).map_py(py)
    }

    /// Delete queues and their dead-letter queues; returns how many messages went with them.
    fn delete_queues(&self, py: Python<'_>, queues: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.delete_queues(&queues)).map_py(py)
    }

    /// `(id, queue, reason, error, deliveries, dead_at_ms, payload)` rows of a queue's
    /// dead-letter queue, oldest first, left in place.
    #[pyo3(signature = (queue = None, limit = 100))]
    fn dead_letters(
        &self,
        py: Python<'_>,
        queue: Option<String>,
        limit: usize,
    ) -> PyResult<Vec<DeadLetterRow>> {
        py.detach(|| self.inner.dead_letters(queue.as_deref(), limit))
            .map_py(py)
            .map(dead_letter_rows)
    }

    /// Put dead letters of `queue` back in it with a fresh delivery count; returns how many.
    fn requeue_dead(&self, py: Python<'_>, queue: String, ids: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.requeue_dead(&queue, &ids))
            .map_py(py)
    }

    #[pyo3(signature = (queue = None))]
    fn purge_dead(&self, py: Python<'_>, queue: Option<String>) -> PyResult<usize> {
        py.detach(|| self.inner.purge_dead(queue.as_deref()))
            .map_py(py)
    }

    /// Declare an exchange (non-durable unless `durable_exchange`) and a self-deleting queue
    /// bound to it (remote control, events).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (exchange, exchange_type, queue, routing_key, ttl_ms, expires_ms, durable_exchange = false))]
    fn declare_transient(
        &self,
        py: Python<'_>,
        exchange: String,
        exchange_type: String,
        queue: String,
        routing_key: String,
        ttl_ms: i64,
        expires_ms: i64,
        durable_exchange: bool,
    ) -> PyResult<()> {
        py.detach(|| {
            self.inner.declare_transient(
                &exchange,
                &exchange_type,
                durable_exchange,
                &queue,
                &routing_key,
                ttl_ms,
                expires_ms,
            )
        })
        .map_py(py)
    }

    /// Publish a transient JSON message with `headers` (a JSON object's text).
    fn publish_transient(
        &self,
        py: Python<'_>,
        exchange: String,
        routing_key: String,
        body: Vec<u8>,
        headers: String,
    ) -> PyResult<()> {
        py.detach(|| {
            self.inner
                .publish_transient(&exchange, &routing_key, &body, &headers)
        })
        .map_py(py)
    }

    /// Start taking the messages of `queue` (auto-acked).
    fn listen(&self, py: Python<'_>, queue: String) -> PyResult<()> {
        py.detach(|| self.inner.listen(&queue)).map_py(py)
    }

    /// `(body, headers JSON, correlation_id, content_type)` of messages of a listened queue,
    /// waiting up to `timeout_s` for the first (GIL released).
    fn receive(
        &self,
        py: Python<'_>,
        queue: String,
        timeout_s: f64,
        limit: usize,
    ) -> PyResult<Vec<PushedTuple>> {
        let timeout = Duration::try_from_secs_f64(timeout_s.max(0.0)).unwrap_or(Duration::ZERO);
        let got = py
            .detach(|| self.inner.receive(&queue, timeout, limit))
            .map_py(py)?;
        Ok(got
            .into_iter()
            .map(|m| (m.body, m.headers, m.correlation_id, m.content_type))
            .collect())
    }

    /// Declare an `rpc://` client's reply queue (durable, auto-delete, `x-expires`).
    #[pyo3(signature = (queue, expires_ms = None))]
    fn declare_reply_queue(
        &self,
        py: Python<'_>,
        queue: String,
        expires_ms: Option<i64>,
    ) -> PyResult<()> {
        py.detach(|| self.inner.declare_reply_queue(&queue, expires_ms))
            .map_py(py)
    }

    /// Send one `rpc://` state message to a client's reply queue.
    fn publish_reply(
        &self,
        py: Python<'_>,
        reply_to: String,
        correlation_id: String,
        content_type: String,
        body: Vec<u8>,
        persistent: bool,
    ) -> PyResult<()> {
        py.detach(|| {
            self.inner
                .publish_reply(&reply_to, &correlation_id, &content_type, &body, persistent)
        })
        .map_py(py)
    }

    /// Announce each message reaching listened `queue` with a one-byte UDP datagram to
    /// 127.0.0.1:`port` (an event loop's wakeup); `None` stops.
    #[pyo3(signature = (queue, port = None))]
    fn ring_on_push(&self, py: Python<'_>, queue: String, port: Option<u16>) -> PyResult<()> {
        py.detach(|| self.inner.ring_on_push(&queue, port))
            .map_py(py)
    }

    fn unlisten(&self, py: Python<'_>, queue: String) -> PyResult<()> {
        py.detach(|| self.inner.unlisten(&queue)).map_py(py)
    }

    fn __repr__(&self) -> String {
        format!("AmqpBroker({:?})", self.inner.masked_url())
    }
}

/// A Rust thread that takes RabbitMQ's pushed deliveries into a PrefetchBuffer, and settles
/// them on their channel.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct AmqpConsumer {
    inner: CoreConsumer,
}

consumer_class!(AmqpConsumer {
    #[new]
    #[pyo3(signature = (broker, queues, owner, buffer, max_deliveries = 5))]
    fn new(
        py: Python<'_>,
        broker: &AmqpBroker,
        queues: Vec<String>,
        owner: String,
        buffer: &PrefetchBuffer,
        max_deliveries: u32,
    ) -> PyResult<Self> {
        let cfg = AmqpConsumerConfig {
            amqp: broker.inner.config().clone(),
            queues,
            owner,
            max_deliveries,
        };
        let inner = CoreConsumer::new(cfg, Arc::clone(&buffer.inner)).map_py(py)?;
        Ok(AmqpConsumer { inner })
    }

    /// Acknowledge finished deliveries on their channel; returns how many were in flight.
    fn ack(&self, py: Python<'_>, tags: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.ack(&tags)).map_py(py)
    }

    /// Return unstarted deliveries to their queue, uncounted; returns how many.
    fn requeue(&self, py: Python<'_>, tags: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.requeue(&tags)).map_py(py)
    }

    /// Put a delivery back recording that `died_running` of its deliveries died with their
    /// worker; false when not held here (any more).
    fn recount(&self, py: Python<'_>, tag: String, died_running: u32) -> PyResult<bool> {
        py.detach(|| self.inner.recount(&tag, died_running))
            .map_py(py)
    }

    /// Close the connection once the acks queued on it were written (call after the last
    /// settle); unsettled messages go back to their queues. GIL released.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close());
    }

    /// Move a delivery to its queue's dead-letter queue; false when not held here (any more).
    #[pyo3(signature = (tag, reason, error = None))]
    fn dead_letter(
        &self,
        py: Python<'_>,
        tag: String,
        reason: String,
        error: Option<String>,
    ) -> PyResult<bool> {
        py.detach(|| self.inner.dead_letter(&tag, &reason, error.as_deref()))
            .map_py(py)
    }
});

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AmqpBroker>()?;
    m.add_class::<AmqpConsumer>()
}
