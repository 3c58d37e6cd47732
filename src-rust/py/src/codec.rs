//! Codec bindings: `dumps`/`loads` with ``json`` (kombu's ``__type__`` markers, through the
//! one-pass writer and reader) or ``msgpack`` (through `convert`).

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rqueue_core::codec::{self, Codec};
use rqueue_core::Error;

use crate::convert::{to_py, to_value, PyPath};
use crate::errors::IntoPyResult;

/// Serialize with ``json`` (kombu's ``__type__`` markers) or ``msgpack``.
#[pyfunction]
#[pyo3(signature = (obj, serializer = "json"))]
fn dumps<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    serializer: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let codec = Codec::from_name(serializer).map_py(py)?;
    if codec == Codec::Json {
        let mut out = Vec::with_capacity(64);
        crate::writer::write_json(&mut out, obj, &PyPath::root("obj"), 0)?;
        return Ok(PyBytes::new(py, &out));
    }
    let value = to_value(obj, &PyPath::root("obj"), 0, codec.name())?;
    let bytes = codec::dumps(&value, codec).map_py(py)?;
    Ok(PyBytes::new(py, &bytes))
}

/// Deserialize ``application/json`` or ``application/x-msgpack`` bytes.
#[pyfunction]
#[pyo3(signature = (data, content_type = "application/json"))]
fn loads<'py>(py: Python<'py>, data: &[u8], content_type: &str) -> PyResult<Bound<'py, PyAny>> {
    let codec = Codec::from_content_type(content_type)
        .ok_or_else(|| Error::Config(format!("no Rust decoder for content type {content_type:?}")))
        .map_py(py)?;
    if codec == Codec::Json {
        return crate::json::loads(py, data, "");
    }
    let value = codec::loads(data, codec).map_py(py)?;
    to_py(py, &value)
}

/// ``(content_type, content_encoding)`` of a serializer name.
#[pyfunction]
fn content_type_of(py: Python<'_>, serializer: &str) -> PyResult<(&'static str, &'static str)> {
    codec::content_type_of(serializer).map_py(py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dumps, m)?)?;
    m.add_function(wrap_pyfunction!(loads, m)?)?;
    m.add_function(wrap_pyfunction!(content_type_of, m)?)?;
    Ok(())
}
