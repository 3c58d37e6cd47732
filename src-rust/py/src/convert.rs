//! Python objects ⇄ `rqueue_core::codec::Value`, and where a value sits for errors: the
//! conversions the codec, JSON and protocol bindings share (a leaf: it imports none of them).
//!
//! Supported: dict, list, tuple (→ list), str, int, float, bool, None, bytes/bytearray,
//! datetime.datetime/date/time, decimal.Decimal, uuid.UUID. Anything else raises
//! `SerializationError` naming the type and where it sits (`args[1]["k"]`).

use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use rqueue_core::codec::{Value, MAX_DEPTH};
use rqueue_core::Error;

macro_rules! cached_type {
    ($py:expr, $module:literal, $name:literal) => {{
        static CELL: ::pyo3::sync::PyOnceLock<::pyo3::Py<::pyo3::types::PyType>> =
            ::pyo3::sync::PyOnceLock::new();
        CELL.import($py, $module, $name)
    }};
}
pub(crate) use cached_type;

/// Where a value sits, rendered only when an error needs it.
#[derive(Clone, Copy)]
pub enum Seg<'a, 'py> {
    Root(&'a str),
    Index(usize),
    Key(&'a Bound<'py, PyAny>),
}

#[derive(Clone, Copy)]
pub struct PyPath<'a, 'py> {
    parent: Option<&'a PyPath<'a, 'py>>,
    seg: Seg<'a, 'py>,
}

impl<'a, 'py> PyPath<'a, 'py> {
    pub fn root(name: &'a str) -> Self {
        PyPath {
            parent: None,
            seg: Seg::Root(name),
        }
    }

    pub fn child(&'a self, seg: Seg<'a, 'py>) -> Self {
        PyPath {
            parent: Some(self),
            seg,
        }
    }

    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut cur = Some(self);
        while let Some(p) = cur {
            segs.push(p.seg);
            cur = p.parent;
        }
        let mut out = String::new();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Root(name) => out.push_str(name),
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
                Seg::Key(k) => match k.repr() {
                    Ok(r) => out.push_str(&format!("[{r}]")),
                    Err(_) => out.push_str("[?]"),
                },
            }
        }
        out
    }
}

pub fn unsupported(
    obj: &Bound<'_, PyAny>,
    what: Option<&str>,
    path: &PyPath<'_, '_>,
    codec: &str,
) -> PyErr {
    let type_name = match what {
        Some(w) => w.to_owned(),
        None => obj
            .get_type()
            .fully_qualified_name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "object".to_owned()),
    };
    let err = Error::Serialize {
        type_name,
        path: path.render(),
        codec: codec.to_owned(),
    };
    crate::errors::to_py(obj.py(), err)
}

fn text(obj: &Bound<'_, PyAny>, method: &str) -> PyResult<String> {
    obj.call_method0(method)?.extract::<String>()
}

/// Converts a Python object to a core value; `codec` only names the serializer in errors.
/// The items of a list or tuple, each converted with its index in the path.
fn items_to_value<'py>(
    items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
    path: &PyPath<'_, '_>,
    depth: usize,
    codec: &str,
) -> PyResult<Value> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.enumerate() {
        out.push(to_value(
            &item,
            &path.child(Seg::Index(i)),
            depth + 1,
            codec,
        )?);
    }
    Ok(Value::List(out))
}

pub fn to_value(
    obj: &Bound<'_, PyAny>,
    path: &PyPath<'_, '_>,
    depth: usize,
    codec: &str,
) -> PyResult<Value> {
    let py = obj.py();
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Int(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::UInt(u));
        }
        return Err(unsupported(
            obj,
            Some("int outside the 64-bit range"),
            path,
            codec,
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Str(s.to_str()?.to_owned()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    if depth >= MAX_DEPTH {
        return Err(unsupported(
            obj,
            Some("container nested too deeply"),
            path,
            codec,
        ));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let child = path.child(Seg::Key(&k));
            let key = to_value(&k, &child, depth + 1, codec)?;
            let value = to_value(&v, &child, depth + 1, codec)?;
            map.push((key, value));
        }
        return Ok(Value::Map(map));
    }
    // Lists and tuples both become lists.
    if let Ok(l) = obj.cast::<PyList>() {
        return items_to_value(l.iter(), path, depth, codec);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return items_to_value(t.iter(), path, depth, codec);
    }
    // datetime before date: a datetime is a date too.
    if obj.is_instance(cached_type!(py, "datetime", "datetime")?)? {
        return Ok(Value::DateTime(text(obj, "isoformat")?));
    }
    if obj.is_instance(cached_type!(py, "datetime", "date")?)? {
        return Ok(Value::Date(text(obj, "isoformat")?));
    }
    if obj.is_instance(cached_type!(py, "datetime", "time")?)? {
        return Ok(Value::Time(text(obj, "isoformat")?));
    }
    if obj.is_instance(cached_type!(py, "decimal", "Decimal")?)? {
        return Ok(Value::Decimal(obj.str()?.to_str()?.to_owned()));
    }
    if obj.is_instance(cached_type!(py, "uuid", "UUID")?)? {
        return Ok(Value::Uuid(obj.str()?.to_str()?.to_owned()));
    }
    Err(unsupported(obj, None, path, codec))
}

fn decode_err(py: Python<'_>, what: &str, text: &str, cause: PyErr) -> PyErr {
    crate::errors::to_py(
        py,
        Error::Decode(format!("invalid {what} {text:?}: {cause}")),
    )
}

/// Converts a core value to a Python object.
pub fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::UInt(u) => u.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map(entries) => map_to_py(py, entries)?.into_any(),
        Value::DateTime(t) => cached_type!(py, "datetime", "datetime")?
            .call_method1("fromisoformat", (t.as_str(),))
            .map_err(|e| decode_err(py, "datetime", t, e))?,
        Value::Date(t) => cached_type!(py, "datetime", "datetime")?
            .call_method1("fromisoformat", (t.as_str(),))
            .and_then(|d| d.call_method0("date"))
            .map_err(|e| decode_err(py, "date", t, e))?,
        Value::Time(t) => cached_type!(py, "datetime", "time")?
            .call_method1("fromisoformat", (t.as_str(),))
            .map_err(|e| decode_err(py, "time", t, e))?,
        Value::Decimal(t) => cached_type!(py, "decimal", "Decimal")?
            .call1((t.as_str(),))
            .map_err(|e| decode_err(py, "decimal", t, e))?,
        Value::Uuid(t) => cached_type!(py, "uuid", "UUID")?
            .call1((t.as_str(),))
            .map_err(|e| decode_err(py, "uuid", t, e))?,
    })
}

/// Converts a core map to a Python dict. A msgpack map may have keys Python cannot hash (an array
/// or a map): that is bad input (DecodeError), not a TypeError from deep inside the conversion.
pub fn map_to_py<'py>(py: Python<'py>, entries: &[(Value, Value)]) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in entries {
        if matches!(k, Value::List(_) | Value::Map(_)) {
            let what = format!(
                "a map key is a {}, which cannot be a Python dict key",
                k.type_name()
            );
            return Err(crate::errors::to_py(py, Error::Decode(what)));
        }
        dict.set_item(to_py(py, k)?, to_py(py, v)?)?;
    }
    Ok(dict)
}
