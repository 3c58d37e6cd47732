//! `RedisBroker` and `RedisConsumer` over `rqueue_core::transport::redis`: the shared body of
//! `broker.rs`, plus what only Redis has (its fetch, lease renewal and sweep, kombu bindings, the
//! eviction check). Every method that touches the network runs with the GIL released.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use rqueue_core::transport::redis::{RedisBroker as CoreBroker, RedisConfig, STORE_RESULT_LUA};
use rqueue_core::transport::redis_consumer::{RedisConsumer as CoreConsumer, RedisConsumerConfig};
use rqueue_core::transport::Transport;
use rqueue_core::Error;

use crate::broker::seconds;
use crate::broker::{consumer_class, transport_class};
use crate::errors::IntoPyResult;
use crate::prefetch::{wrap_all, Delivery, PrefetchBuffer};

fn config(
    url: String,
    global_keyprefix: String,
    socket_timeout_s: f64,
    connect_timeout_s: f64,
    foreign_visibility_s: f64,
) -> Result<RedisConfig, Error> {
    let mut c = RedisConfig::new(url);
    c.global_keyprefix = global_keyprefix;
    c.socket_timeout = seconds("socket_timeout_s", socket_timeout_s)?;
    c.connect_timeout = seconds("connect_timeout_s", connect_timeout_s)?;
    c.foreign_visibility = seconds("foreign_visibility_s", foreign_visibility_s)?;
    Ok(c)
}

/// A Redis broker in kombu's layout (Celery-compatible); the password is masked in every message.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct RedisBroker {
    inner: Arc<CoreBroker>,
}

transport_class!(RedisBroker {
    #[new]
    #[pyo3(signature = (url, global_keyprefix = "", socket_timeout_s = 10.0, connect_timeout_s = 5.0, foreign_visibility_s = 3600.0))]
    fn new(
        py: Python<'_>,
        url: String,
        global_keyprefix: &str,
        socket_timeout_s: f64,
        connect_timeout_s: f64,
        foreign_visibility_s: f64,
    ) -> PyResult<Self> {
        let cfg = config(
            url,
            global_keyprefix.to_string(),
            socket_timeout_s,
            connect_timeout_s,
            foreign_visibility_s,
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

    /// Renew, with the broker's clock, the leases of `held` (tags `owner` holds); returns every
    /// tag leased to `owner`.
    fn extend_leases(&self, py: Python<'_>, owner: String, held: Vec<String>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.extend_leases(&owner, &held)).map_py(py)
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
});

/// A Rust thread that leases batches from Redis into a PrefetchBuffer.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct RedisConsumer {
    inner: CoreConsumer,
}

consumer_class!(RedisConsumer, acks_later {
    #[new]
    #[pyo3(signature = (url, queues, owner, buffer, lease_ms = 60000, max_deliveries = 5, poll_max_ms = 20, global_keyprefix = "", foreign_visibility_s = 3600.0, socket_timeout_s = 10.0, connect_timeout_s = 5.0))]
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
        foreign_visibility_s: f64,
        socket_timeout_s: f64,
        connect_timeout_s: f64,
    ) -> PyResult<Self> {
        let redis = config(
            url,
            global_keyprefix.to_string(),
            socket_timeout_s,
            connect_timeout_s,
            foreign_visibility_s,
        )
        .map_py(py)?;
        let mut cfg = RedisConsumerConfig::new(redis, queues, owner);
        cfg.lease = Duration::from_millis(lease_ms);
        cfg.max_deliveries = max_deliveries;
        cfg.poll_max = Duration::from_millis(poll_max_ms);
        let inner = CoreConsumer::new(cfg, Arc::clone(&buffer.inner)).map_py(py)?;
        Ok(RedisConsumer { inner })
    }
});

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("REDIS_STORE_RESULT_LUA", STORE_RESULT_LUA)?;
    m.add_class::<RedisBroker>()?;
    m.add_class::<RedisConsumer>()
}
