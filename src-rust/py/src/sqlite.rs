//! `SqliteBroker` and `SqliteConsumer` over `rqueue_core::transport::sqlite`: the shared body of
//! `broker.rs`, plus what only SQLite has (its own fetch, the mailbox, revocations and result
//! rows). Every method that touches the database runs with the GIL released.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use rqueue_core::doorbell::Bell;
use rqueue_core::transport::sqlite::SqliteBroker as CoreBroker;
use rqueue_core::transport::sqlite_consumer::{ConsumerConfig, SqliteConsumer as CoreConsumer};
use rqueue_core::transport::Transport;
use rqueue_core::Error;

use crate::broker::seconds;
use crate::broker::{consumer_class, result_rows, transport_class, ResultTuple};
use crate::errors::IntoPyResult;
use crate::prefetch::{wrap_all, Delivery, PrefetchBuffer};

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

transport_class!(SqliteBroker {
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

    /// The results bell's sequence: read it before reading a result, pass it to `wait_results`.
    fn results_seen(&self) -> u32 {
        self.inner.seen(Bell::Results)
    }

    /// Wait (GIL released) up to `timeout_s` for results to be stored in this file by any
    /// process after `seen` was read; without bells (`has_bells` False) this only sleeps.
    fn wait_results(&self, py: Python<'_>, seen: u32, timeout_s: f64) -> PyResult<()> {
        let timeout = seconds("timeout_s", timeout_s).map_py(py)?;
        py.detach(|| self.inner.wait(Bell::Results, seen, timeout));
        Ok(())
    }

    /// Whether waits are woken by other processes' commits (Linux), or only sleep.
    #[getter]
    fn has_bells(&self) -> bool {
        self.inner.has_bells()
    }

    /// Renew the leases of `held` (tags `owner` holds); returns every tag leased to `owner`.
    fn extend_leases(
        &self,
        py: Python<'_>,
        owner: String,
        lease_ms: i64,
        held: Vec<String>,
    ) -> PyResult<Vec<String>> {
        let lease_ms = non_negative("lease_ms", lease_ms).map_py(py)?;
        py.detach(|| self.inner.extend_leases(&owner, lease_ms, &held))
            .map_py(py)
    }

    /// Return expired leases to their queue; dead-letter those over `max_deliveries`.
    #[pyo3(signature = (max_deliveries = 5))]
    fn sweep_expired(&self, py: Python<'_>, max_deliveries: u32) -> PyResult<(usize, usize)> {
        py.detach(|| self.inner.sweep_expired(max_deliveries))
            .map_py(py)
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

    /// Store `(task_id, status, content_type, payload, ttl_ms)` result records in one
    /// transaction; a stored SUCCESS is never overwritten.
    fn store_results(&self, py: Python<'_>, rows: Vec<ResultTuple>) -> PyResult<()> {
        let rows = result_rows(rows);
        py.detach(|| self.inner.store_results(&rows)).map_py(py)
    }

    /// `(content_type, payload)` of a task's unexpired result, or None.
    fn read_result(&self, py: Python<'_>, task_id: String) -> PyResult<Option<(String, Vec<u8>)>> {
        py.detach(|| self.inner.read_result(&task_id)).map_py(py)
    }

    fn delete_result(&self, py: Python<'_>, task_id: String) -> PyResult<bool> {
        py.detach(|| self.inner.delete_result(&task_id)).map_py(py)
    }

    /// Set the number of header results a chord's body waits for (a new run of the chord).
    #[pyo3(signature = (group_id, size, ttl_ms = None))]
    fn chord_set_size(
        &self,
        py: Python<'_>,
        group_id: String,
        size: i64,
        ttl_ms: Option<u64>,
    ) -> PyResult<()> {
        py.detach(|| self.inner.chord_set_size(&group_id, size, ttl_ms))
            .map_py(py)
    }

    /// Make a chord wait for `n` more header results.
    fn chord_add(&self, py: Python<'_>, group_id: String, n: i64) -> PyResult<()> {
        py.detach(|| self.inner.chord_add(&group_id, n)).map_py(py)
    }

    /// Count one header result (once per member) in one transaction; `(ready, total, claimed)`,
    /// or None once the body was fired.
    #[allow(clippy::too_many_arguments)]
    fn chord_part_return(
        &self,
        py: Python<'_>,
        group_id: String,
        member: String,
        index: f64,
        payload: Vec<u8>,
        ttl_ms: Option<u64>,
        token: String,
        claim_ms: u64,
    ) -> PyResult<Option<(i64, Option<i64>, bool)>> {
        let count = py
            .detach(|| {
                self.inner.chord_part_return(
                    &group_id, &member, index, &payload, ttl_ms, &token, claim_ms,
                )
            })
            .map_py(py)?;
        Ok(count.map(|c| (c.ready, c.total, c.claimed)))
    }

    /// Keep (or take, once lapsed) the right to fire a chord's body.
    fn chord_renew_claim(
        &self,
        py: Python<'_>,
        group_id: String,
        token: String,
        claim_ms: u64,
    ) -> PyResult<bool> {
        py.detach(|| self.inner.chord_renew_claim(&group_id, &token, claim_ms))
            .map_py(py)
    }

    /// The counted header results of a chord, in header order.
    fn chord_parts(&self, py: Python<'_>, group_id: String) -> PyResult<Vec<Vec<u8>>> {
        py.detach(|| self.inner.chord_parts(&group_id)).map_py(py)
    }

    /// The body was fired by the holder of `token`: forget the parts, mark the chord done.
    fn chord_done(
        &self,
        py: Python<'_>,
        group_id: String,
        token: String,
        done_ttl_ms: u64,
    ) -> PyResult<bool> {
        py.detach(|| self.inner.chord_done(&group_id, &token, done_ttl_ms))
            .map_py(py)
    }

    fn __repr__(&self) -> String {
        format!("SqliteBroker({:?})", self.path)
    }
});

/// A Rust thread that leases batches from a SqliteBroker into a PrefetchBuffer.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct SqliteConsumer {
    inner: CoreConsumer,
}

consumer_class!(SqliteConsumer, acks_later {
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
});

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add(
        "SQLITE_WAL_LIMIT_BYTES",
        rqueue_core::transport::sqlite::WAL_LIMIT_BYTES,
    )?;
    m.add_class::<SqliteBroker>()?;
    m.add_class::<SqliteConsumer>()
}
