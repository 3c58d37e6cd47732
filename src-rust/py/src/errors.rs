//! Maps every `rqueue_core::Error` to its class in `rqueue.exceptions`.
//!
//! The classes live in Python (one exception root for the whole package); they are looked
//! up once and cached.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use rqueue_core::Error;

fn exception_class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<Bound<'py, PyType>> {
    cell.import(py, "rqueue.exceptions", name).cloned()
}

macro_rules! class {
    ($py:expr, $name:literal) => {{
        static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        exception_class($py, &CELL, $name)
    }};
}

/// Converts a core error into the matching `rqueue.exceptions` instance.
pub fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let class = match &err {
        Error::Decode(_) => class!(py, "DecodeError"),
        Error::TooLarge { .. } => class!(py, "MessageTooLarge"),
        Error::ContentDisallowed { .. } => class!(py, "ContentDisallowed"),
        Error::Serialize { .. } => class!(py, "SerializationError"),
        Error::Config(_) => class!(py, "ConfigurationError"),
        Error::Broker(_) => class!(py, "BrokerError"),
        Error::Connection(_) => class!(py, "BrokerConnectionError"),
        Error::NoReply(_) => class!(py, "BrokerNoReplyError"),
        Error::Replaced(_) => class!(py, "BrokerReplacedError"),
    };
    match class {
        Ok(cls) => PyErr::from_type(cls, err.to_string()),
        Err(import_err) => import_err,
    }
}

/// Extension for `Result<T, Error>` so bindings can write `core_call().map_py(py)?`.
pub trait IntoPyResult<T> {
    fn map_py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn map_py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}
