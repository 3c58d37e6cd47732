//! Python objects straight to JSON bytes: one pass over the objects into one buffer, with no
//! intermediate `Value` tree.
//!
//! Writes what the core's JSON codec writes for the same values (`rqueue_core::codec`):
//! dict, list, tuple (→ list), str, int (64-bit), float (finite), bool, None, and kombu's
//! `{"__type__", "__value__"}` markers for bytes/bytearray (`bytes`, or `base64` when not
//! UTF-8), datetime/date/time (`isoformat()`), Decimal (`str()`) and UUID (`{"hex": ...}`).
//! Dict keys may be str, int, float, bool or None (written as JSON's `json.dumps` does).
//! Anything else, a non-finite float, an int outside 64 bits, or nesting deeper than
//! `MAX_DEPTH` is a `SerializationError` naming the type and its path (`args[1]['k']`).

use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use rqueue_core::codec::MAX_DEPTH;
use rqueue_core::{jsonw, pyrepr};

use crate::convert::{cached_type, unsupported, PyPath, Seg};

const CODEC: &str = "json";

/// Appends the JSON of `obj`; `depth` counts the containers above it.
pub fn write_json(
    out: &mut Vec<u8>,
    obj: &Bound<'_, PyAny>,
    path: &PyPath<'_, '_>,
    depth: usize,
) -> PyResult<()> {
    // The common exact types first: one pointer comparison each.
    if let Ok(s) = obj.cast_exact::<PyString>() {
        jsonw::write_str(out, s.to_str()?);
        return Ok(());
    }
    if obj.is_exact_instance_of::<PyInt>() {
        return write_int(out, obj, path);
    }
    if let Ok(d) = obj.cast_exact::<PyDict>() {
        return write_dict(out, d, path, depth);
    }
    if let Ok(l) = obj.cast_exact::<PyList>() {
        return write_list(out, l, path, depth);
    }
    if let Ok(f) = obj.cast_exact::<PyFloat>() {
        return write_float(out, obj, f.value(), path);
    }
    if obj.is_none() {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        jsonw::write_bool(out, b.is_true());
        return Ok(());
    }
    if let Ok(t) = obj.cast_exact::<PyTuple>() {
        return write_tuple(out, t, path, depth);
    }
    // Subclasses, in the order of the `Value` conversion (`codec::to_value`).
    if obj.is_instance_of::<PyInt>() {
        return write_int(out, obj, path);
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return write_float(out, obj, f.value(), path);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        jsonw::write_str(out, s.to_str()?);
        return Ok(());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        write_bytes(out, b.as_bytes());
        return Ok(());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        write_bytes(out, &b.to_vec());
        return Ok(());
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return write_dict(out, d, path, depth);
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return write_list(out, l, path, depth);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return write_tuple(out, t, path, depth);
    }
    let py = obj.py();
    // datetime before date: a datetime is a date too.
    if obj.is_instance(cached_type!(py, "datetime", "datetime")?)? {
        return write_text_marker(out, "datetime", &obj.call_method0("isoformat")?);
    }
    if obj.is_instance(cached_type!(py, "datetime", "date")?)? {
        return write_text_marker(out, "date", &obj.call_method0("isoformat")?);
    }
    if obj.is_instance(cached_type!(py, "datetime", "time")?)? {
        return write_text_marker(out, "time", &obj.call_method0("isoformat")?);
    }
    if obj.is_instance(cached_type!(py, "decimal", "Decimal")?)? {
        return write_text_marker(out, "decimal", obj.str()?.as_any());
    }
    if obj.is_instance(cached_type!(py, "uuid", "UUID")?)? {
        let hex = obj.getattr("hex")?;
        out.extend_from_slice(br#"{"__type__":"uuid","__value__":{"hex":"#);
        jsonw::write_str(out, hex.cast::<PyString>()?.to_str()?);
        out.extend_from_slice(b"}}");
        return Ok(());
    }
    Err(unsupported(obj, None, path, CODEC))
}

fn write_int(out: &mut Vec<u8>, obj: &Bound<'_, PyAny>, path: &PyPath<'_, '_>) -> PyResult<()> {
    if let Ok(i) = obj.extract::<i64>() {
        jsonw::write_i64(out, i);
    } else if let Ok(u) = obj.extract::<u64>() {
        jsonw::write_u64(out, u);
    } else {
        return Err(unsupported(
            obj,
            Some("int outside the 64-bit range"),
            path,
            CODEC,
        ));
    }
    Ok(())
}

fn write_float(
    out: &mut Vec<u8>,
    obj: &Bound<'_, PyAny>,
    f: f64,
    path: &PyPath<'_, '_>,
) -> PyResult<()> {
    if !f.is_finite() {
        return Err(unsupported(obj, Some(&format!("float {f}")), path, CODEC));
    }
    jsonw::write_f64(out, f);
    Ok(())
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(text) => {
            out.extend_from_slice(br#"{"__type__":"bytes","__value__":"#);
            jsonw::write_str(out, text);
        }
        Err(_) => {
            out.extend_from_slice(br#"{"__type__":"base64","__value__":"#);
            jsonw::write_base64_str(out, b);
        }
    }
    out.push(b'}');
}

fn write_text_marker(out: &mut Vec<u8>, ty: &str, text: &Bound<'_, PyAny>) -> PyResult<()> {
    out.extend_from_slice(br#"{"__type__":"#);
    jsonw::write_str(out, ty);
    out.extend_from_slice(br#","__value__":"#);
    jsonw::write_str(out, text.cast::<PyString>()?.to_str()?);
    out.push(b'}');
    Ok(())
}

fn too_deep(obj: &Bound<'_, PyAny>, path: &PyPath<'_, '_>) -> PyErr {
    unsupported(obj, Some("container nested too deeply"), path, CODEC)
}

fn write_list(
    out: &mut Vec<u8>,
    l: &Bound<'_, PyList>,
    path: &PyPath<'_, '_>,
    depth: usize,
) -> PyResult<()> {
    if depth >= MAX_DEPTH {
        return Err(too_deep(l.as_any(), path));
    }
    out.push(b'[');
    for (i, item) in l.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(out, &item, &path.child(Seg::Index(i)), depth + 1)?;
    }
    out.push(b']');
    Ok(())
}

fn write_tuple(
    out: &mut Vec<u8>,
    t: &Bound<'_, PyTuple>,
    path: &PyPath<'_, '_>,
    depth: usize,
) -> PyResult<()> {
    if depth >= MAX_DEPTH {
        return Err(too_deep(t.as_any(), path));
    }
    out.push(b'[');
    for (i, item) in t.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(out, &item, &path.child(Seg::Index(i)), depth + 1)?;
    }
    out.push(b']');
    Ok(())
}

/// Appends a list or tuple as a JSON array (other objects: `SerializationError`).
pub fn write_seq(out: &mut Vec<u8>, seq: &Bound<'_, PyAny>, path: &PyPath<'_, '_>) -> PyResult<()> {
    if let Ok(l) = seq.cast::<PyList>() {
        return write_list(out, l, path, 0);
    }
    if let Ok(t) = seq.cast::<PyTuple>() {
        return write_tuple(out, t, path, 0);
    }
    Err(unsupported(seq, None, path, CODEC))
}

/// Appends a dict as a JSON object; `depth` counts the containers above it.
pub fn write_dict(
    out: &mut Vec<u8>,
    d: &Bound<'_, PyDict>,
    path: &PyPath<'_, '_>,
    depth: usize,
) -> PyResult<()> {
    if depth >= MAX_DEPTH {
        return Err(too_deep(d.as_any(), path));
    }
    out.push(b'{');
    let mut first = true;
    for (k, v) in d.iter() {
        if !first {
            out.push(b',');
        }
        first = false;
        let child = path.child(Seg::Key(&k));
        write_key(out, &k, &child)?;
        out.push(b':');
        write_json(out, &v, &child, depth + 1)?;
    }
    out.push(b'}');
    Ok(())
}

/// A dict key as a JSON string, as `json.dumps` turns str, int, float, bool and None keys.
fn write_key(out: &mut Vec<u8>, k: &Bound<'_, PyAny>, path: &PyPath<'_, '_>) -> PyResult<()> {
    if let Ok(s) = k.cast::<PyString>() {
        jsonw::write_str(out, s.to_str()?);
        return Ok(());
    }
    if let Ok(b) = k.cast::<PyBool>() {
        out.extend_from_slice(if b.is_true() {
            b"\"true\""
        } else {
            b"\"false\""
        });
        return Ok(());
    }
    if k.is_none() {
        out.extend_from_slice(b"\"null\"");
        return Ok(());
    }
    if k.is_instance_of::<PyInt>() {
        out.push(b'"');
        write_int(out, k, path)?;
        out.push(b'"');
        return Ok(());
    }
    if let Ok(f) = k.cast::<PyFloat>() {
        let f = f.value();
        if f.is_finite() {
            let mut text = String::with_capacity(24);
            pyrepr::write_py_float(&mut text, f);
            jsonw::write_str(out, &text);
            return Ok(());
        }
    }
    let what = match k.get_type().fully_qualified_name() {
        Ok(n) => format!("dict key of type {n}"),
        Err(_) => "dict key".to_owned(),
    };
    Err(unsupported(k, Some(&what), path, CODEC))
}

/// The `embed` of a protocol v2 body: the canvas links Celery carries in the message
/// (`callbacks`/`errbacks`/`chain`: lists of signature dicts, `chord`: one), each None when unset.
#[derive(Clone, Copy, Default)]
pub struct Embed<'a, 'py> {
    pub callbacks: Option<&'a Bound<'py, PyAny>>,
    pub errbacks: Option<&'a Bound<'py, PyAny>>,
    pub chain: Option<&'a Bound<'py, PyAny>>,
    pub chord: Option<&'a Bound<'py, PyAny>>,
}

impl<'a, 'py> Embed<'a, 'py> {
    /// `(key, value)` in Celery's order.
    pub fn fields(&self) -> [(&'static str, Option<&'a Bound<'py, PyAny>>); 4] {
        [
            ("callbacks", self.callbacks),
            ("errbacks", self.errbacks),
            ("chain", self.chain),
            ("chord", self.chord),
        ]
    }

    /// True when nothing is set: the body gets Celery's default embed.
    pub fn is_default(&self) -> bool {
        self.fields().iter().all(|(_, v)| v.is_none())
    }
}

/// Appends the protocol v2 body `[args, kwargs, embed]`; error paths start at `args`,
/// `kwargs` or the embed's key.
pub fn write_task_body(
    out: &mut Vec<u8>,
    args: &Bound<'_, PyAny>,
    kwargs: &Bound<'_, PyDict>,
    embed: &Embed<'_, '_>,
) -> PyResult<()> {
    out.push(b'[');
    write_seq(out, args, &PyPath::root("args"))?;
    out.push(b',');
    write_dict(out, kwargs, &PyPath::root("kwargs"), 0)?;
    if embed.is_default() {
        out.extend_from_slice(br#",{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]"#);
        return Ok(());
    }
    out.extend_from_slice(b",{");
    for (i, (key, value)) in embed.fields().into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        jsonw::write_str(out, key);
        out.push(b':');
        match value {
            Some(v) => write_json(out, v, &PyPath::root(key), 1)?,
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"}]");
    Ok(())
}
