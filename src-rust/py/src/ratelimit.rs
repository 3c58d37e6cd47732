//! `parse_rate` and `TokenBucket` over `rqueue_core::ratelimit`. Nanosecond operations: the
//! GIL is kept.

use pyo3::prelude::*;
use pyo3::types::PyString;
use rqueue_core::ratelimit::{self, TokenBucket as CoreBucket};
use rqueue_core::Error;

use crate::errors::IntoPyResult;

fn rate_of(rate: &Bound<'_, PyAny>) -> Result<f64, Error> {
    if let Ok(s) = rate.cast::<PyString>() {
        let text = s
            .to_str()
            .map_err(|e| Error::Config(format!("invalid rate limit: {e}")))?;
        return ratelimit::parse_rate(text);
    }
    match rate.extract::<f64>() {
        Ok(v) => ratelimit::check_rate(v),
        Err(_) => Err(Error::Config(format!(
            "invalid rate limit {}; use a string like \"10/s\", \"100/m\", \"1000/h\" or a number per second",
            rate.repr().map(|r| r.to_string()).unwrap_or_else(|_| "?".into())
        ))),
    }
}

/// Tokens per second of `"10/s"`, `"100/m"`, `"1000/h"` or a bare number (per second).
#[pyfunction]
fn parse_rate(py: Python<'_>, rate: &Bound<'_, PyAny>) -> PyResult<f64> {
    rate_of(rate).map_py(py)
}

/// A token bucket; `try_acquire` never blocks.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct TokenBucket {
    inner: CoreBucket,
}

#[pymethods]
impl TokenBucket {
    #[new]
    #[pyo3(signature = (rate, burst = None))]
    fn new(py: Python<'_>, rate: &Bound<'_, PyAny>, burst: Option<i64>) -> PyResult<Self> {
        let rate = rate_of(rate).map_py(py)?;
        let burst = match burst {
            None => None,
            Some(b) => Some(
                u32::try_from(b)
                    .ok()
                    .filter(|b| *b >= 1)
                    .ok_or_else(|| {
                        Error::Config(format!("token bucket burst must be at least 1, got {b}"))
                    })
                    .map_py(py)?,
            ),
        };
        Ok(TokenBucket {
            inner: CoreBucket::new(rate, burst).map_py(py)?,
        })
    }

    #[getter]
    fn rate_per_s(&self) -> f64 {
        self.inner.rate_per_s()
    }

    #[getter]
    fn burst(&self) -> u32 {
        self.inner.burst()
    }

    /// 0.0 when the tokens were taken, else the seconds to wait until they are available.
    #[pyo3(signature = (tokens = 1))]
    fn try_acquire(&self, py: Python<'_>, tokens: i64) -> PyResult<f64> {
        let tokens = u32::try_from(tokens)
            .ok()
            .filter(|t| *t >= 1)
            .ok_or_else(|| Error::Config(format!("tokens must be at least 1, got {tokens}")))
            .map_py(py)?;
        Ok(self.inner.try_acquire(tokens).map_py(py)?.as_secs_f64())
    }

    fn set_rate(&self, py: Python<'_>, rate: &Bound<'_, PyAny>) -> PyResult<()> {
        let rate = rate_of(rate).map_py(py)?;
        self.inner.set_rate(rate).map_py(py)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(parse_rate, m)?)?;
    m.add_class::<TokenBucket>()
}
