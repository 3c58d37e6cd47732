//! `parse_rate`, `TokenBucket` and `RateLimitTable` over `rqueue_core::ratelimit` and
//! `rqueue_core::ratetable`. Nanosecond operations: the GIL is kept.

use pyo3::prelude::*;
use pyo3::types::PyString;
use rqueue_core::ratelimit::{self, TokenBucket as CoreBucket};
use rqueue_core::ratetable::{RateTable, DEFAULT_SLOTS};
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

/// A rate given as a string, a number of tasks per second, or None; zero and None mean no limit.
fn rate_or_off(rate: Option<&Bound<'_, PyAny>>) -> Result<Option<f64>, Error> {
    let Some(rate) = rate.filter(|r| !r.is_none()) else {
        return Ok(None);
    };
    if let Ok(s) = rate.cast::<PyString>() {
        let text = s
            .to_str()
            .map_err(|e| Error::Config(format!("invalid rate limit: {e}")))?;
        return ratelimit::parse_rate_or_off(text);
    }
    if rate.extract::<f64>().is_ok_and(|v| v == 0.0) {
        return Ok(None);
    }
    rate_of(rate).map(Some)
}

const _: () = assert!(DEFAULT_SLOTS == 1024);

/// The rate limits of a worker node, in memory shared with the processes it forks later.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct RateLimitTable {
    inner: RateTable,
}

#[pymethods]
impl RateLimitTable {
    #[new]
    #[pyo3(signature = (slots = 1024))] // a literal, so that Python sees the default (= DEFAULT_SLOTS)
    fn new(py: Python<'_>, slots: usize) -> PyResult<Self> {
        Ok(RateLimitTable {
            inner: RateTable::new(slots).map_py(py)?,
        })
    }

    #[getter]
    fn slots(&self) -> usize {
        self.inner.slots()
    }

    /// The rate in tasks per second, or None for "no limit" (None, "0", 0); raises for a bad rate.
    #[staticmethod]
    fn check(py: Python<'_>, rate: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
        rate_or_off(rate).map_py(py)
    }

    /// Set (or with None, "0" or 0, remove) the limit of a task, for every sharing process at once.
    #[pyo3(signature = (task_name, rate))]
    fn set(
        &self,
        py: Python<'_>,
        task_name: &str,
        rate: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let rate = rate_or_off(rate).map_py(py)?;
        self.inner.set(task_name, rate).map_py(py)
    }

    /// A counter bumped by every `set`, in any sharing process.
    #[getter]
    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    /// Tasks per second allowed for a task, or None when it has no limit.
    fn rate(&self, task_name: &str) -> Option<f64> {
        self.inner.get(task_name).map(|l| l.rate_per_s)
    }

    /// Every limited task and its rate (tasks per second).
    fn limits(&self) -> Vec<(String, f64)> {
        self.inner
            .limits()
            .into_iter()
            .map(|(name, l)| (name, l.rate_per_s))
            .collect()
    }

    /// 0.0 when the task may start now (a token was taken), else the seconds until it may.
    fn try_acquire(&self, task_name: &str) -> f64 {
        self.inner.try_acquire(task_name).as_secs_f64()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(parse_rate, m)?)?;
    m.add_class::<TokenBucket>()?;
    m.add_class::<RateLimitTable>()
}
