//! `Delivery` and `PrefetchBuffer` over `rqueue_core::prefetch`. Waiting releases the GIL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rqueue_core::prefetch::{Delivery as CoreDelivery, PrefetchBuffer as CoreBuffer};

/// How long `get()` waits without the GIL before checking for signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// One fetched message: its lease id, its queue, the raw envelope and how often it was delivered.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct Delivery {
    pub inner: CoreDelivery,
}

#[pymethods]
impl Delivery {
    #[new]
    #[pyo3(signature = (tag, queue, payload, deliveries = 1))]
    fn new(tag: String, queue: String, payload: Vec<u8>, deliveries: u32) -> Self {
        Delivery {
            inner: CoreDelivery {
                tag,
                queue,
                payload,
                deliveries,
            },
        }
    }

    #[getter]
    fn tag(&self) -> &str {
        &self.inner.tag
    }

    #[getter]
    fn queue(&self) -> &str {
        &self.inner.queue
    }

    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.payload)
    }

    #[getter]
    fn deliveries(&self) -> u32 {
        self.inner.deliveries
    }

    fn __repr__(&self) -> String {
        format!(
            "Delivery(tag={:?}, queue={:?}, payload=<{} bytes>, deliveries={})",
            self.inner.tag,
            self.inner.queue,
            self.inner.payload.len(),
            self.inner.deliveries
        )
    }
}

/// Wraps core deliveries for Python.
pub fn wrap_all(deliveries: Vec<CoreDelivery>) -> Vec<Delivery> {
    deliveries
        .into_iter()
        .map(|inner| Delivery { inner })
        .collect()
}

/// Bounded, thread-safe buffer between a transport thread and the Python executor.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct PrefetchBuffer {
    pub inner: Arc<CoreBuffer>,
}

#[pymethods]
impl PrefetchBuffer {
    #[new]
    fn new(capacity: usize) -> Self {
        PrefetchBuffer {
            inner: Arc::new(CoreBuffer::new(capacity)),
        }
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    fn credits(&self) -> usize {
        self.inner.credits()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Add a delivery; False when the buffer is full or closed.
    fn put(&self, delivery: &Delivery) -> bool {
        self.inner.put(delivery.inner.clone()).is_ok()
    }

    /// Block (GIL released) until a delivery is there, the timeout runs out, or the buffer closes.
    #[pyo3(signature = (timeout_s = None))]
    fn get(&self, py: Python<'_>, timeout_s: Option<f64>) -> PyResult<Option<Delivery>> {
        if let Some(d) = self.inner.try_get() {
            return Ok(Some(Delivery { inner: d }));
        }
        let deadline = timeout_s.map(|t| {
            Instant::now()
                .checked_add(Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX))
        });
        loop {
            let slice = match deadline {
                None | Some(None) => SIGNAL_CHECK,
                Some(Some(end)) => end
                    .saturating_duration_since(Instant::now())
                    .min(SIGNAL_CHECK),
            };
            let buffer = Arc::clone(&self.inner);
            if let Some(d) = py.detach(move || buffer.get(Some(slice))) {
                return Ok(Some(Delivery { inner: d }));
            }
            if self.inner.is_closed() {
                return Ok(None);
            }
            if let Some(Some(end)) = deadline {
                if Instant::now() >= end {
                    return Ok(None);
                }
            }
            py.check_signals()?;
        }
    }

    /// Mark taken deliveries finished (acked or returned), giving their credit back.
    #[pyo3(signature = (count = 1))]
    fn done(&self, count: usize) {
        self.inner.done(count);
    }

    /// Leave `waited_s` out of the pace of taking: the taker spent it since its last take waiting
    /// on the broker (writing results and acks), not running a task.
    fn discount(&self, waited_s: f64) {
        self.inner
            .discount(Duration::from_secs_f64(waited_s.max(0.0)));
    }

    /// Copies of the deliveries waiting in the buffer, oldest first; they stay in it.
    fn snapshot(&self) -> Vec<Delivery> {
        wrap_all(self.inner.snapshot())
    }

    /// Close the buffer, wake waiters and return the deliveries never taken.
    fn close(&self) -> Vec<Delivery> {
        wrap_all(self.inner.close())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Delivery>()?;
    m.add_class::<PrefetchBuffer>()
}
