//! `SqliteBroker` and `SqliteConsumer` over `rqueue_core::transport::sqlite`: the shared body of
//! `broker.rs` with the SQL brokers' part (`transport_class!(.., sql ..)`), plus what only SQLite
//! has (its path, results waited for by the file's bells). Every method that touches the
//! database runs with the GIL released.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use rqueue_core::doorbell::Bell;
use rqueue_core::transport::sqlite::SqliteBroker as CoreBroker;
use rqueue_core::transport::sqlite_consumer::{ConsumerConfig, SqliteConsumer as CoreConsumer};
use rqueue_core::transport::Transport;

use crate::broker::{consumer_class, seconds, transport_class};
use crate::errors::IntoPyResult;
use crate::prefetch::PrefetchBuffer;

/// The embedded SQLite broker: one file, WAL, busy timeout; every step atomic.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct SqliteBroker {
    inner: Arc<CoreBroker>,
    path: String,
}

transport_class!(SqliteBroker, sql {
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
