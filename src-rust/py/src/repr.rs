//! Short reprs for the `argsrepr`/`kwargsrepr` headers: the first `limit` characters of
//! Python's `repr()`, built in Rust while walking the objects and stopping once `limit`
//! characters are written, so large arguments cost no more than small ones.
//!
//! str, int, float, None, bool, list, tuple and dict (exact types) are written here exactly as
//! `repr()` writes them (a container met again inside itself is `[...]`/`(...)`/`{...}`);
//! any other object (subclasses too) is written with its own `repr()`.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PySlice, PyString, PyTuple};
use rqueue_core::pyrepr::{py_quote, ReprBuf};

/// `repr(obj)`, cut to `limit` characters.
pub fn short_repr(obj: &Bound<'_, PyAny>, limit: usize) -> PyResult<String> {
    let mut buf = ReprBuf::new(limit);
    repr_into(&mut buf, obj, &mut Vec::new())?;
    Ok(buf.into_string())
}

/// `repr(tuple(args))` of a list or tuple, cut to `limit` characters (Celery's `argsrepr`).
pub fn short_repr_args(args: &Bound<'_, PyAny>, limit: usize) -> PyResult<String> {
    let mut buf = ReprBuf::new(limit);
    let mut stack = Vec::new();
    if let Ok(t) = args.cast::<PyTuple>() {
        items_into(&mut buf, t.iter(), t.len(), ("(", ")"), true, &mut stack)?;
    } else {
        let l = args.cast::<PyList>()?;
        items_into(&mut buf, l.iter(), l.len(), ("(", ")"), true, &mut stack)?;
    }
    Ok(buf.into_string())
}

/// The containers being written, by identity, to spot a container inside itself.
type Stack = Vec<usize>;

fn repr_into(buf: &mut ReprBuf, obj: &Bound<'_, PyAny>, stack: &mut Stack) -> PyResult<()> {
    if buf.is_full() {
        return Ok(());
    }
    if let Ok(s) = obj.cast_exact::<PyString>() {
        return str_into(buf, s);
    }
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            buf.push_int(i);
            return Ok(());
        }
    } else if let Ok(f) = obj.cast_exact::<PyFloat>() {
        buf.push_float(f.value());
        return Ok(());
    } else if obj.is_none() {
        buf.push_str("None");
        return Ok(());
    } else if let Ok(b) = obj.cast::<PyBool>() {
        buf.push_str(if b.is_true() { "True" } else { "False" });
        return Ok(());
    } else if let Ok(l) = obj.cast_exact::<PyList>() {
        return container_into(buf, obj, stack, ("[", "]"), |buf, stack| {
            items_into(buf, l.iter(), l.len(), ("[", "]"), false, stack)
        });
    } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
        return container_into(buf, obj, stack, ("(", ")"), |buf, stack| {
            items_into(buf, t.iter(), t.len(), ("(", ")"), true, stack)
        });
    } else if let Ok(d) = obj.cast_exact::<PyDict>() {
        return container_into(buf, obj, stack, ("{", "}"), |buf, stack| {
            dict_into(buf, d, stack)
        });
    }
    buf.push_str(obj.repr()?.to_str()?);
    Ok(())
}

/// Writes a container with `write`, or `[...]` (with its brackets) when it is already being
/// written further out.
fn container_into(
    buf: &mut ReprBuf,
    obj: &Bound<'_, PyAny>,
    stack: &mut Stack,
    brackets: (&str, &str),
    write: impl FnOnce(&mut ReprBuf, &mut Stack) -> PyResult<()>,
) -> PyResult<()> {
    let id = obj.as_ptr() as usize;
    if stack.contains(&id) {
        buf.push_str(brackets.0);
        buf.push_str("...");
        buf.push_str(brackets.1);
        return Ok(());
    }
    stack.push(id);
    let got = write(buf, stack);
    stack.pop();
    got
}

fn items_into<'py>(
    buf: &mut ReprBuf,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    len: usize,
    brackets: (&str, &str),
    tuple: bool,
    stack: &mut Stack,
) -> PyResult<()> {
    buf.push_str(brackets.0);
    for (i, item) in items.enumerate() {
        if buf.is_full() {
            return Ok(());
        }
        if i > 0 {
            buf.push_str(", ");
        }
        repr_into(buf, &item, stack)?;
    }
    if tuple && len == 1 {
        buf.push_char(',');
    }
    buf.push_str(brackets.1);
    Ok(())
}

fn dict_into(buf: &mut ReprBuf, d: &Bound<'_, PyDict>, stack: &mut Stack) -> PyResult<()> {
    buf.push_char('{');
    for (i, (k, v)) in d.iter().enumerate() {
        if buf.is_full() {
            return Ok(());
        }
        if i > 0 {
            buf.push_str(", ");
        }
        repr_into(buf, &k, stack)?;
        buf.push_str(": ");
        repr_into(buf, &v, stack)?;
    }
    buf.push_char('}');
    Ok(())
}

fn str_into(buf: &mut ReprBuf, s: &Bound<'_, PyString>) -> PyResult<()> {
    // Not UTF-8 (a lone surrogate): Python's own repr escapes it.
    let Ok(text) = s.to_str() else {
        buf.push_str(s.repr()?.to_str()?);
        return Ok(());
    };
    if text.is_ascii() {
        buf.push_str_repr(text, true);
        return Ok(());
    }
    let printable = s
        .call_method0(pyo3::intern!(s.py(), "isprintable"))?
        .is_truthy()?;
    if buf.push_str_repr(text, printable) {
        return Ok(());
    }
    // Characters that repr() escapes by the Unicode database: let Python write a prefix long
    // enough to fill the buffer, with a tail that makes it pick the same quote as the whole.
    let room = buf.room();
    let n = s.len()?;
    if n <= room + 1 {
        buf.push_str(s.repr()?.to_str()?);
        return Ok(());
    }
    let prefix = s.get_item(PySlice::new(s.py(), 0, (room + 1) as isize, 1))?;
    let tail = match py_quote(text) {
        '"' => "'",
        _ if text.contains('\'') => "'\"",
        _ => "",
    };
    let cut = prefix.add(tail)?;
    buf.push_str(cut.repr()?.to_str()?);
    Ok(())
}
