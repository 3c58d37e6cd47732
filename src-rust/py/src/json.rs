//! JSON straight to Python objects: a serde `DeserializeSeed` that builds lists, dicts, str,
//! int, float, bool and None as it parses, with no intermediate `Value` tree.
//!
//! It follows `rqueue_core::codec::from_json` exactly: kombu's `{"__type__", "__value__"}`
//! markers become native values (through the core's marker rules), a repeated key keeps its
//! first place and its last value, and nesting deeper than `MAX_DEPTH` is a `DecodeError`.

use std::cell::RefCell;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString};
use rqueue_core::codec::{self, MAX_DEPTH};
use rqueue_core::Error;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::convert::{to_py, to_value, PyPath};

/// Holds a Python exception raised while building objects (serde's errors are strings).
struct Ctx<'py> {
    py: Python<'py>,
    err: RefCell<Option<PyErr>>,
}

impl Ctx<'_> {
    fn fail<E: de::Error>(&self, err: PyErr) -> E {
        let msg = err.to_string();
        *self.err.borrow_mut() = Some(err);
        E::custom(msg)
    }
}

struct Node<'c, 'py> {
    ctx: &'c Ctx<'py>,
    depth: usize,
}

impl<'de, 'py> DeserializeSeed<'de> for Node<'_, 'py> {
    type Value = Bound<'py, PyAny>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn too_deep<E: de::Error>() -> E {
    E::custom(format_args!("nesting deeper than {MAX_DEPTH} levels"))
}

impl<'de, 'py> Visitor<'de> for Node<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.ctx.py.None().into_bound(self.ctx.py))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(self.ctx.py.None().into_bound(self.ctx.py))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.ctx.py, b).to_owned().into_any())
    }
    fn visit_i64<E>(self, i: i64) -> Result<Self::Value, E> {
        Ok(i.into_pyobject(self.ctx.py)
            .unwrap_or_else(|never| match never {})
            .into_any())
    }
    fn visit_u64<E>(self, u: u64) -> Result<Self::Value, E> {
        Ok(u.into_pyobject(self.ctx.py)
            .unwrap_or_else(|never| match never {})
            .into_any())
    }
    fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.ctx.py, f).into_any())
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.ctx.py, s).into_any())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(Node {
            ctx: self.ctx,
            depth: self.depth + 1,
        })? {
            items.push(v);
        }
        PyList::new(self.ctx.py, items)
            .map(Bound::into_any)
            .map_err(|e| self.ctx.fail(e))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let py = self.ctx.py;
        let dict = PyDict::new(py);
        let (mut has_type, mut has_value) = (false, false);
        while let Some((key, marker)) = access.next_key_seed(Key(py))? {
            has_type |= marker == Marker::Type;
            has_value |= marker == Marker::Value;
            let value = access.next_value_seed(Node {
                ctx: self.ctx,
                depth: self.depth + 1,
            })?;
            dict.set_item(key, value).map_err(|e| self.ctx.fail(e))?;
        }
        if has_type && has_value && dict.len() == 2 {
            return from_marker(self.ctx, &dict);
        }
        Ok(dict.into_any())
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Marker {
    No,
    Type,
    Value,
}

/// An object key as a Python str, telling whether it is one of the marker keys.
struct Key<'py>(Python<'py>);

impl<'de, 'py> DeserializeSeed<'de> for Key<'py> {
    type Value = (Bound<'py, PyString>, Marker);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'py> Visitor<'de> for Key<'py> {
    type Value = (Bound<'py, PyString>, Marker);
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        let marker = match s {
            "__type__" => Marker::Type,
            "__value__" => Marker::Value,
            _ => Marker::No,
        };
        Ok((PyString::new(self.0, s), marker))
    }
}

/// The native value of a marker object, by the core's rules (rare: dates, decimals, uuids,
/// bytes).
fn from_marker<'py, E: de::Error>(
    ctx: &Ctx<'py>,
    dict: &Bound<'py, PyDict>,
) -> Result<Bound<'py, PyAny>, E> {
    let get = |k: &str| dict.get_item(k).map_err(|e| ctx.fail::<E>(e));
    let (Some(ty), Some(value)) = (get("__type__")?, get("__value__")?) else {
        return Ok(dict.clone().into_any());
    };
    let ty = match ty.cast::<PyString>() {
        Ok(t) => t.to_str().map_err(|e| ctx.fail::<E>(e))?.to_owned(),
        Err(_) => {
            let name = match ty.get_type().name() {
                Ok(n) => n.to_string(),
                Err(_) => "object".to_owned(),
            };
            return Err(E::custom(format_args!(
                "__type__ must be a string, not {name}"
            )));
        }
    };
    let value = to_value(&value, &PyPath::root("__value__"), 0, "json").map_err(|e| ctx.fail(e))?;
    let native = codec::decode_json_marker(&ty, value).map_err(E::custom)?;
    to_py(ctx.py, &native).map_err(|e| ctx.fail(e))
}

/// Deserializes JSON into Python objects; a malformed document is a `DecodeError` whose
/// message starts with `what`.
pub fn loads<'py>(py: Python<'py>, data: &[u8], what: &str) -> PyResult<Bound<'py, PyAny>> {
    let ctx = Ctx {
        py,
        err: RefCell::new(None),
    };
    // Validating UTF-8 once up front is much cheaper than per string (`from_slice` does).
    let text = std::str::from_utf8(data).map_err(|e| {
        crate::errors::to_py(
            py,
            Error::Decode(format!("{what}invalid JSON: not UTF-8: {e}")),
        )
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let got = Node {
        ctx: &ctx,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match got {
        Ok(v) => Ok(v),
        Err(e) => Err(match ctx.err.into_inner() {
            Some(py_err) => py_err,
            None => crate::errors::to_py(py, Error::Decode(format!("{what}invalid JSON: {e}"))),
        }),
    }
}
