//! `RedisBroker` and `RedisConsumer` over `rqueue_core::transport::redis`. Every method that
//! touches the network runs with the GIL released.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use rqueue_core::transport::redis::{
    RedisBroker as CoreBroker, RedisConfig, ResultRecord, STORE_RESULT_LUA,
};
use rqueue_core::transport::redis_consumer::{RedisConsumer as CoreConsumer, RedisConsumerConfig};
use rqueue_core::Error;

use crate::broker::{new_messages, priority_of, DeadLetterRow, MessageTuple};
use crate::errors::IntoPyResult;
use crate::prefetch::{wrap_all, Delivery, PrefetchBuffer};

/// `(task_id, status, content_type, payload, ttl_ms)`: one encoded result record for
/// `RedisBroker.complete`; `ttl_ms` None keeps it forever.
type ResultTuple = (String, String, String, Vec<u8>, Option<u64>);

fn seconds(name: &str, value: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Error::Config(format!(
                "{name} must be a positive number of seconds, got {value}"
            ))
        })
}

fn config(
    url: String,
    global_keyprefix: String,
    socket_timeout_s: f64,
    connect_timeout_s: f64,
) -> Result<RedisConfig, Error> {
    let mut c = RedisConfig::new(url);
    c.global_keyprefix = global_keyprefix;
    c.socket_timeout = seconds("socket_timeout_s", socket_timeout_s)?;
    c.connect_timeout = seconds("connect_timeout_s", connect_timeout_s)?;
    Ok(c)
}

/// A Redis broker in kombu's layout (Celery-compatible); the password is masked in every message.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct RedisBroker {
    inner: Arc<CoreBroker>,
}

#[pymethods]
impl RedisBroker {
    #[new]
    #[pyo3(signature = (url, global_keyprefix = "", socket_timeout_s = 10.0, connect_timeout_s = 5.0))]
    fn new(
        py: Python<'_>,
        url: String,
        global_keyprefix: &str,
        socket_timeout_s: f64,
        connect_timeout_s: f64,
    ) -> PyResult<Self> {
        let cfg = config(
            url,
            global_keyprefix.to_string(),
            socket_timeout_s,
            connect_timeout_s,
        )
        .map_py(py)?;
        let inner = py.detach(move || CoreBroker::connect(cfg)).map_py(py)?;
        Ok(RedisBroker {
            inner: Arc::new(inner),
        })
    }

    /// The URL with its password masked.
    #[getter]
    fn url(&self) -> &str {
        self.inner.masked_url()
    }

    #[getter]
    fn global_keyprefix(&self) -> &str {
        self.inner.global_keyprefix()
    }

    #[pyo3(signature = (queue, payload, priority = 0, eta_ms = None))]
    fn publish(
        &self,
        py: Python<'_>,
        queue: String,
        payload: Vec<u8>,
        priority: i64,
        eta_ms: Option<i64>,
    ) -> PyResult<()> {
        let priority = priority_of(priority).map_py(py)?;
        py.detach(|| self.inner.publish(&queue, &payload, priority, eta_ms))
            .map_py(py)
    }

    /// Publish `(queue, payload, priority, eta_ms)` items in one round trip (all or none).
    fn publish_many(&self, py: Python<'_>, messages: Vec<MessageTuple>) -> PyResult<()> {
        let messages = new_messages(messages).map_py(py)?;
        py.detach(|| self.inner.publish_many(&messages)).map_py(py)
    }

    /// Atomically lease up to `limit` messages (one Lua script). GIL released.
    fn fetch(
        &self,
        py: Python<'_>,
        queues: Vec<String>,
        limit: usize,
        owner: String,
    ) -> PyResult<Vec<Delivery>> {
        let got = py
            .detach(|| self.inner.fetch(&queues, limit, &owner))
            .map_py(py)?;
        Ok(wrap_all(got))
    }

    fn ack(&self, py: Python<'_>, tags: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.ack(&tags)).map_py(py)
    }

    /// Store `(task_id, status, content_type, payload, ttl_ms)` result records in Celery's layout
    /// (SET with expiry + PUBLISH; a stored SUCCESS is final) and then ack `tags`, in one round
    /// trip. Returns how many tags were in flight. GIL released.
    fn complete(
        &self,
        py: Python<'_>,
        rows: Vec<ResultTuple>,
        tags: Vec<String>,
    ) -> PyResult<usize> {
        let rows: Vec<ResultRecord> = rows
            .into_iter()
            .map(
                |(task_id, status, content_type, payload, ttl_ms)| ResultRecord {
                    task_id,
                    status,
                    content_type,
                    payload,
                    ttl_ms,
                },
            )
            .collect();
        py.detach(|| self.inner.complete(&rows, &tags)).map_py(py)
    }

    /// Return unstarted deliveries to the front of their queue, unchanged; this delivery is not counted.
    fn requeue(&self, py: Python<'_>, tags: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.requeue(&tags)).map_py(py)
    }

    /// Return every message held by `owner` (a dead worker process) to the front of its queue,
    /// marked redelivered; dead-letter those delivered `max_deliveries` times. Returns how many
    /// were requeued.
    #[pyo3(signature = (owner, max_deliveries = 5))]
    fn requeue_owner(&self, py: Python<'_>, owner: String, max_deliveries: u32) -> PyResult<usize> {
        py.detach(|| self.inner.requeue_owner(&owner, max_deliveries))
            .map_py(py)
            .map(|(requeued, _)| requeued)
    }

    /// Renew every lease of `owner` with the broker's clock; returns how many it holds.
    fn extend_leases(&self, py: Python<'_>, owner: String) -> PyResult<usize> {
        py.detach(|| self.inner.extend_leases(&owner)).map_py(py)
    }

    /// Return leases older than `visibility_timeout_ms` to the front of their queue (redelivered),
    /// dead-lettering those over `max_deliveries`. Returns `(requeued, dead_lettered)`.
    #[pyo3(signature = (visibility_timeout_ms, max_deliveries = 5))]
    fn sweep_expired(
        &self,
        py: Python<'_>,
        visibility_timeout_ms: u64,
        max_deliveries: u32,
    ) -> PyResult<(usize, usize)> {
        let vis = Duration::from_millis(visibility_timeout_ms);
        py.detach(|| self.inner.sweep_expired(vis, max_deliveries))
            .map_py(py)
    }

    /// Move an in-flight message to its queue's dead-letter list.
    #[pyo3(signature = (tag, reason, error = None))]
    fn dead_letter(
        &self,
        py: Python<'_>,
        tag: String,
        reason: String,
        error: Option<String>,
    ) -> PyResult<()> {
        py.detach(|| self.inner.dead_letter(&tag, &reason, error.as_deref()))
            .map_py(py)
            .map(|_| ())
    }

    /// `(id, queue, reason, error, deliveries, dead_at_ms, payload)` rows of a queue, oldest first.
    #[pyo3(signature = (queue, limit = 100))]
    fn dead_letters(
        &self,
        py: Python<'_>,
        queue: String,
        limit: usize,
    ) -> PyResult<Vec<DeadLetterRow<String>>> {
        let rows = py
            .detach(|| self.inner.dead_letters(&queue, limit))
            .map_py(py)?;
        Ok(rows
            .into_iter()
            .map(|d| {
                (
                    d.id,
                    d.queue,
                    d.reason,
                    d.error,
                    d.deliveries,
                    d.dead_at_ms,
                    d.payload,
                )
            })
            .collect())
    }

    fn requeue_dead(&self, py: Python<'_>, queue: String, ids: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.requeue_dead(&queue, &ids))
            .map_py(py)
    }

    fn purge_dead(&self, py: Python<'_>, queue: String) -> PyResult<usize> {
        py.detach(|| self.inner.purge_dead(&queue)).map_py(py)
    }

    /// Delete waiting messages of these queues (every priority bucket and the ETA set).
    fn purge(&self, py: Python<'_>, queues: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.purge(&queues)).map_py(py)
    }

    fn queue_length(&self, py: Python<'_>, queue: String) -> PyResult<usize> {
        py.detach(|| self.inner.queue_length(&queue)).map_py(py)
    }

    /// Declare kombu bindings (`_kombu.binding.<exchange>`) so Celery producers find the queues.
    #[pyo3(signature = (queues, exchange = None))]
    fn declare_bindings(
        &self,
        py: Python<'_>,
        queues: Vec<String>,
        exchange: Option<String>,
    ) -> PyResult<()> {
        py.detach(|| self.inner.declare_bindings(&queues, exchange.as_deref()))
            .map_py(py)
    }

    /// The server's maxmemory-policy when it is not `noeviction`, else None.
    fn check_maxmemory_policy(&self, py: Python<'_>) -> PyResult<Option<String>> {
        py.detach(|| self.inner.check_maxmemory_policy()).map_py(py)
    }

    fn __repr__(&self) -> String {
        format!("RedisBroker({:?})", self.inner.masked_url())
    }
}

/// A Rust thread that leases batches from Redis into a PrefetchBuffer.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct RedisConsumer {
    inner: CoreConsumer,
}

#[pymethods]
impl RedisConsumer {
    #[new]
    #[pyo3(signature = (url, queues, owner, buffer, lease_ms = 60000, max_deliveries = 5, poll_max_ms = 20, global_keyprefix = ""))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: String,
        queues: Vec<String>,
        owner: String,
        buffer: &PrefetchBuffer,
        lease_ms: u64,
        max_deliveries: u32,
        poll_max_ms: u64,
        global_keyprefix: &str,
    ) -> PyResult<Self> {
        let redis = config(url, global_keyprefix.to_string(), 10.0, 5.0).map_py(py)?;
        let mut cfg = RedisConsumerConfig::new(redis, queues, owner);
        cfg.lease = Duration::from_millis(lease_ms);
        cfg.max_deliveries = max_deliveries;
        cfg.poll_max = Duration::from_millis(poll_max_ms);
        let inner = CoreConsumer::new(cfg, Arc::clone(&buffer.inner)).map_py(py)?;
        Ok(RedisConsumer { inner })
    }

    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.start().map_py(py)
    }

    /// Stop fetching, join the thread, close the buffer; returns unstarted deliveries (not requeued).
    fn stop(&self, py: Python<'_>) -> Vec<Delivery> {
        wrap_all(py.detach(|| self.inner.stop()))
    }

    fn set_queues(&self, queues: Vec<String>) {
        self.inner.set_queues(queues);
    }

    #[getter]
    fn running(&self) -> bool {
        self.inner.running()
    }

    /// The last error the thread met and is retrying past, if any.
    #[getter]
    fn last_error(&self) -> Option<String> {
        self.inner.last_error()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("REDIS_STORE_RESULT_LUA", STORE_RESULT_LUA)?;
    m.add_class::<RedisBroker>()?;
    m.add_class::<RedisConsumer>()
}
