//! `SqliteBroker` and `SqliteConsumer` over `rqueue_core::transport`. Every method that touches
//! the database runs with the GIL released.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use rqueue_core::transport::sqlite::{ResultRow, SqliteBroker as CoreBroker};
use rqueue_core::transport::sqlite_consumer::{ConsumerConfig, SqliteConsumer as CoreConsumer};
use rqueue_core::Error;

use crate::broker::{new_messages, priority_of, DeadLetterRow, MessageTuple};
use crate::errors::IntoPyResult;
use crate::prefetch::{wrap_all, Delivery, PrefetchBuffer};

type ResultTuple = (String, String, String, Vec<u8>, Option<i64>);
fn to_rows(rows: Vec<ResultTuple>) -> Vec<ResultRow> {
    rows.into_iter()
        .map(
            |(task_id, status, content_type, payload, expires_at_ms)| ResultRow {
                task_id,
                status,
                content_type,
                payload,
                expires_at_ms,
            },
        )
        .collect()
}

fn non_negative(name: &str, value: i64) -> Result<u64, Error> {
    u64::try_from(value)
        .map_err(|_| Error::Config(format!("{name} must not be negative, got {value}")))
}

/// The embedded SQLite broker: one file, WAL, busy timeout; every step atomic.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct SqliteBroker {
    inner: Arc<CoreBroker>,
    path: String,
}

#[pymethods]
impl SqliteBroker {
    #[new]
    #[pyo3(signature = (path, busy_timeout_ms = 10000))]
    fn new(py: Python<'_>, path: String, busy_timeout_ms: u64) -> PyResult<Self> {
        let p = path.clone();
        let inner = py
            .detach(move || CoreBroker::open(p, busy_timeout_ms))
            .map_py(py)?;
        Ok(SqliteBroker {
            inner: Arc::new(inner),
            path,
        })
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
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

    /// Publish `(queue, payload, priority, eta_ms)` items in one transaction.
    fn publish_many(&self, py: Python<'_>, messages: Vec<MessageTuple>) -> PyResult<()> {
        let messages = new_messages(messages).map_py(py)?;
        py.detach(|| self.inner.publish_many(&messages)).map_py(py)
    }

    /// Atomically lease up to `limit` due messages (priority 0 first, then FIFO). GIL released.
    fn fetch(
        &self,
        py: Python<'_>,
        queues: Vec<String>,
        limit: usize,
        owner: String,
        lease_ms: i64,
    ) -> PyResult<Vec<Delivery>> {
        let lease_ms = non_negative("lease_ms", lease_ms).map_py(py)?;
        let got = py
            .detach(|| self.inner.fetch(&queues, limit, &owner, lease_ms))
            .map_py(py)?;
        Ok(wrap_all(got))
    }

    fn ack(&self, py: Python<'_>, tags: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.ack(&tags)).map_py(py)
    }

    /// Return unstarted leased messages to their queue now (their original place; this
    /// delivery is not counted).
    fn requeue(&self, py: Python<'_>, tags: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.requeue(&tags)).map_py(py)
    }

    /// Return every message leased by `owner` (a worker process that died); those already
    /// delivered `max_deliveries` times are dead-lettered as `worker_lost`. Returns how many
    /// were requeued.
    #[pyo3(signature = (owner, max_deliveries = 5))]
    fn requeue_owner(&self, py: Python<'_>, owner: String, max_deliveries: u32) -> PyResult<usize> {
        py.detach(|| self.inner.requeue_owner(&owner, max_deliveries))
            .map_py(py)
            .map(|(requeued, _)| requeued)
    }

    /// Tags of the messages `owner` holds.
    fn leased_tags(&self, py: Python<'_>, owner: String) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.leased_tags(&owner)).map_py(py)
    }

    fn extend_leases(&self, py: Python<'_>, owner: String, lease_ms: i64) -> PyResult<usize> {
        let lease_ms = non_negative("lease_ms", lease_ms).map_py(py)?;
        py.detach(|| self.inner.extend_leases(&owner, lease_ms))
            .map_py(py)
    }

    /// Return expired leases to their queue; dead-letter those over `max_deliveries`.
    #[pyo3(signature = (max_deliveries = 5))]
    fn sweep_expired(&self, py: Python<'_>, max_deliveries: u32) -> PyResult<(usize, usize)> {
        py.detach(|| self.inner.sweep_expired(max_deliveries))
            .map_py(py)
    }

    /// Move a leased message to the dead-letter table with a reason code and error text.
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

    /// `(id, queue, reason, error, deliveries, dead_at_ms, payload)` rows, oldest first.
    #[pyo3(signature = (queue = None, limit = 100))]
    fn dead_letters(
        &self,
        py: Python<'_>,
        queue: Option<String>,
        limit: usize,
    ) -> PyResult<Vec<DeadLetterRow<i64>>> {
        let rows = py
            .detach(|| self.inner.dead_letters(queue.as_deref(), limit))
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

    fn requeue_dead(&self, py: Python<'_>, ids: Vec<i64>) -> PyResult<usize> {
        py.detach(|| self.inner.requeue_dead(&ids)).map_py(py)
    }

    #[pyo3(signature = (queue = None))]
    fn purge_dead(&self, py: Python<'_>, queue: Option<String>) -> PyResult<usize> {
        py.detach(|| self.inner.purge_dead(queue.as_deref()))
            .map_py(py)
    }

    /// Delete waiting (not leased) messages of these queues; returns how many.
    fn purge(&self, py: Python<'_>, queues: Vec<String>) -> PyResult<usize> {
        py.detach(|| self.inner.purge(&queues)).map_py(py)
    }

    fn queue_length(&self, py: Python<'_>, queue: String) -> PyResult<usize> {
        py.detach(|| self.inner.queue_length(&queue)).map_py(py)
    }

    /// Record revoked task ids, kept until `expires_at_ms`.
    fn revoke(&self, py: Python<'_>, task_ids: Vec<String>, expires_at_ms: i64) -> PyResult<()> {
        py.detach(|| self.inner.revoke(&task_ids, expires_at_ms))
            .map_py(py)
    }

    /// `(task_id, expires_at_ms)` of unexpired revocations made at or after `since_ms`.
    fn revoked_since(&self, py: Python<'_>, since_ms: i64) -> PyResult<Vec<(String, i64)>> {
        py.detach(|| self.inner.revoked_since(since_ms)).map_py(py)
    }

    /// Post `body` on a mailbox channel (remote control), kept until `expires_at_ms`; returns its id.
    fn mailbox_post(
        &self,
        py: Python<'_>,
        channel: String,
        body: Vec<u8>,
        expires_at_ms: i64,
    ) -> PyResult<i64> {
        py.detach(|| self.inner.mailbox_post(&channel, &body, expires_at_ms))
            .map_py(py)
    }

    /// `(id, body)` of the unexpired posts on `channel` after `after_id`, oldest first.
    fn mailbox_read(
        &self,
        py: Python<'_>,
        channel: String,
        after_id: i64,
    ) -> PyResult<Vec<(i64, Vec<u8>)>> {
        py.detach(|| self.inner.mailbox_read(&channel, after_id))
            .map_py(py)
    }

    /// The id of the newest mailbox post (0 when none).
    fn mailbox_last_id(&self, py: Python<'_>) -> PyResult<i64> {
        py.detach(|| self.inner.mailbox_last_id()).map_py(py)
    }

    /// Store `(task_id, status, content_type, payload, expires_at_ms)` result records in one
    /// transaction; a stored SUCCESS is never overwritten.
    fn store_results(&self, py: Python<'_>, rows: Vec<ResultTuple>) -> PyResult<()> {
        let rows = to_rows(rows);
        py.detach(|| self.inner.store_results(&rows)).map_py(py)
    }

    /// Store result records and ack messages in one transaction.
    fn complete(
        &self,
        py: Python<'_>,
        rows: Vec<ResultTuple>,
        tags: Vec<String>,
    ) -> PyResult<usize> {
        let rows = to_rows(rows);
        py.detach(|| self.inner.complete(&rows, &tags)).map_py(py)
    }

    /// `(content_type, payload)` of a task's unexpired result, or None.
    fn read_result(&self, py: Python<'_>, task_id: String) -> PyResult<Option<(String, Vec<u8>)>> {
        py.detach(|| self.inner.read_result(&task_id)).map_py(py)
    }

    fn delete_result(&self, py: Python<'_>, task_id: String) -> PyResult<bool> {
        py.detach(|| self.inner.delete_result(&task_id)).map_py(py)
    }

    fn __repr__(&self) -> String {
        format!("SqliteBroker({:?})", self.path)
    }
}

/// A Rust thread that leases batches from a SqliteBroker into a PrefetchBuffer.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct SqliteConsumer {
    inner: CoreConsumer,
}

#[pymethods]
impl SqliteConsumer {
    #[new]
    #[pyo3(signature = (path, queues, owner, buffer, lease_ms = 60000, max_deliveries = 5, poll_max_ms = 40))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: String,
        queues: Vec<String>,
        owner: String,
        buffer: &PrefetchBuffer,
        lease_ms: u64,
        max_deliveries: u32,
        poll_max_ms: u64,
    ) -> PyResult<Self> {
        let mut config = ConsumerConfig::new(path, queues, owner);
        config.lease = Duration::from_millis(lease_ms);
        config.max_deliveries = max_deliveries;
        config.poll_max = Duration::from_millis(poll_max_ms);
        let inner = CoreConsumer::new(config, Arc::clone(&buffer.inner)).map_py(py)?;
        Ok(SqliteConsumer { inner })
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
    m.add_class::<SqliteBroker>()?;
    m.add_class::<SqliteConsumer>()
}
