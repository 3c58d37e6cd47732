//! `PostgresBroker` and `PostgresConsumer` over `rqueue_core::transport::postgres`: the shared
//! body of `broker.rs` with the SQL brokers' part (`transport_class!(.., sql ..)`), plus what only
//! PostgreSQL has (its URL and schema, lease inspection, results waited for by LISTEN). Every
//! method that touches the database runs with the GIL released.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use rqueue_core::transport::postgres::{PgBroker as CoreBroker, PgConfig};
use rqueue_core::transport::postgres_consumer::{PgConsumer as CoreConsumer, PgConsumerConfig};
use rqueue_core::transport::Transport;

use crate::broker::{consumer_class, seconds, transport_class};
use crate::errors::IntoPyResult;
use crate::prefetch::PrefetchBuffer;

fn config(url: String, schema: String) -> PgConfig {
    let mut c = PgConfig::new(url);
    c.schema = schema;
    c
}

/// A PostgreSQL broker (tables in one schema, created on first use); the password is masked in
/// every message.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct PostgresBroker {
    inner: Arc<CoreBroker>,
}

transport_class!(PostgresBroker, sql {
    #[new]
    #[pyo3(signature = (url, schema = "rqueue"))]
    fn new(py: Python<'_>, url: String, schema: &str) -> PyResult<Self> {
        let cfg = config(url, schema.to_string());
        let inner = py.detach(move || CoreBroker::connect(cfg)).map_py(py)?;
        Ok(PostgresBroker {
            inner: Arc::new(inner),
        })
    }

    /// The URL with its password masked.
    #[getter]
    fn url(&self) -> &str {
        self.inner.masked_url()
    }

    #[getter]
    fn schema(&self) -> &str {
        self.inner.schema()
    }




    /// `(owner, lease_until_ms)` of a message, or None when it does not exist.
    fn lease_of(
        &self,
        py: Python<'_>,
        tag: String,
    ) -> PyResult<Option<(Option<String>, Option<i64>)>> {
        py.detach(|| self.inner.lease_of(&tag)).map_py(py)
    }







    /// The results mark: read it before reading a result, pass it to `wait_results`. The first
    /// call opens this handle's connection listening for stored results.
    fn results_seen(&self, py: Python<'_>) -> PyResult<u32> {
        py.detach(|| self.inner.results_seen()).map_py(py)
    }

    /// Wait (GIL released) up to `timeout_s` for results to be stored in this schema, by any
    /// client, after `seen` was read.
    fn wait_results(&self, py: Python<'_>, seen: u32, timeout_s: f64) -> PyResult<()> {
        let timeout = seconds("timeout_s", timeout_s).map_py(py)?;
        py.detach(|| self.inner.wait_results(seen, timeout))
            .map_py(py)
    }









    fn __repr__(&self) -> String {
        format!("PostgresBroker({:?}, schema={:?})", self.inner.masked_url(), self.inner.schema())
    }
});

/// A Rust thread that leases batches from PostgreSQL into a PrefetchBuffer, woken by NOTIFY.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct PostgresConsumer {
    inner: CoreConsumer,
}

consumer_class!(PostgresConsumer, acks_later {
    #[new]
    #[pyo3(signature = (url, queues, owner, buffer, lease_ms = 60000, max_deliveries = 5, schema = "rqueue"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: String,
        queues: Vec<String>,
        owner: String,
        buffer: &PrefetchBuffer,
        lease_ms: u64,
        max_deliveries: u32,
        schema: &str,
    ) -> PyResult<Self> {
        let mut cfg = PgConsumerConfig::new(config(url, schema.to_string()), queues, owner);
        cfg.lease = Duration::from_millis(lease_ms);
        cfg.max_deliveries = max_deliveries;
        let inner = CoreConsumer::new(cfg, Arc::clone(&buffer.inner)).map_py(py)?;
        Ok(PostgresConsumer { inner })
    }
});

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PostgresBroker>()?;
    m.add_class::<PostgresConsumer>()
}
