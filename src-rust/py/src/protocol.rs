//! Protocol bindings: `encode_task_message`, `decode_task_message` → `TaskMessage`, and the
//! ISO-8601 helpers.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use rqueue_core::codec::{map_get, Codec, Value};
use rqueue_core::protocol::{self, Accept, TaskMessageSpec};

use crate::codec::{map_to_py, to_py, to_value, PyPath};
use crate::errors::IntoPyResult;

/// Longest `argsrepr`/`kwargsrepr` written, in characters (Celery truncates too).
const REPR_MAX_CHARS: usize = 1024;

fn short_repr(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let r = obj.repr()?;
    let s = r.to_str()?;
    if s.len() <= REPR_MAX_CHARS {
        // At most as many characters as bytes: nothing to cut.
        return Ok(s.to_owned());
    }
    Ok(match s.char_indices().nth(REPR_MAX_CHARS) {
        Some((end, _)) => s[..end].to_owned(),
        None => s.to_owned(),
    })
}

/// A decoded task message: typed fields of the headers, properties and body.
///
/// `headers` and `body` are built on first access (and then cached): most consumers only read
/// the typed fields and `args`/`kwargs`/`embed`.
#[pyclass(frozen, module = "rqueue._rqueue")]
pub struct TaskMessage {
    #[pyo3(get)]
    task: String,
    #[pyo3(get)]
    id: String,
    #[pyo3(get)]
    args: Option<Py<PyList>>,
    #[pyo3(get)]
    kwargs: Option<Py<PyDict>>,
    #[pyo3(get)]
    embed: Option<Py<PyDict>>,
    #[pyo3(get)]
    content_type: String,
    #[pyo3(get)]
    content_encoding: String,
    #[pyo3(get)]
    eta_ms: Option<i64>,
    #[pyo3(get)]
    expires_ms: Option<i64>,
    #[pyo3(get)]
    retries: i64,
    #[pyo3(get)]
    priority: u8,
    #[pyo3(get)]
    time_limit: Option<f64>,
    #[pyo3(get)]
    soft_time_limit: Option<f64>,
    #[pyo3(get)]
    root_id: Option<String>,
    #[pyo3(get)]
    parent_id: Option<String>,
    #[pyo3(get)]
    group_id: Option<String>,
    #[pyo3(get)]
    origin: Option<String>,
    #[pyo3(get)]
    ignore_result: bool,
    #[pyo3(get)]
    argsrepr: Option<String>,
    #[pyo3(get)]
    kwargsrepr: Option<String>,
    #[pyo3(get)]
    reply_to: Option<String>,
    #[pyo3(get)]
    correlation_id: Option<String>,
    #[pyo3(get)]
    delivery_tag: Option<String>,
    #[pyo3(get)]
    exchange: String,
    #[pyo3(get)]
    routing_key: String,
    #[pyo3(get)]
    redelivered: bool,
    /// The raw body after base64 decoding; `bytes` built on first access.
    body: Vec<u8>,
    body_obj: PyOnceLock<Py<PyBytes>>,
    /// The envelope as received; the headers dict is built from it on first access.
    envelope: Py<PyBytes>,
    headers_obj: PyOnceLock<Py<PyDict>>,
}

#[pymethods]
impl TaskMessage {
    fn __repr__(&self) -> String {
        format!(
            "<TaskMessage task={:?} id={:?} content_type={:?}>",
            self.task, self.id, self.content_type
        )
    }

    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body_obj
            .get_or_init(py, || PyBytes::new(py, &self.body).unbind())
            .clone_ref(py)
    }

    #[getter]
    fn headers(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        self.headers_obj
            .get_or_try_init(py, || {
                let data = self.envelope.bind(py).as_bytes();
                headers_dict(py, protocol::headers_json(data).map_py(py)?)
            })
            .map(|d| d.clone_ref(py))
    }
}

/// Every header as a dict, decoded like the body (kombu markers become native values).
fn headers_dict(py: Python<'_>, headers_json: &str) -> PyResult<Py<PyDict>> {
    if headers_json.is_empty() {
        return Ok(PyDict::new(py).unbind());
    }
    let obj = crate::json::loads(py, headers_json.as_bytes(), "headers: ")?;
    match obj.cast_into::<PyDict>() {
        Ok(d) => Ok(d.unbind()),
        Err(e) => Err(crate::errors::to_py(
            py,
            rqueue_core::Error::Decode(format!("headers must be an object: {e}")),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (
    *, task, task_id, args, kwargs, routing_key, exchange = "", serializer = "json", body = None,
    eta_ms = None, expires_ms = None, retries = 0, time_limit = None, soft_time_limit = None,
    priority = None, root_id = None, parent_id = None, group_id = None, origin = None,
    ignore_result = false, reply_to = None, delivery_tag = None, extra_headers = None,
    max_size = 1048576
))]
fn encode_task_message<'py>(
    py: Python<'py>,
    task: String,
    task_id: String,
    args: &Bound<'py, PyAny>,
    kwargs: &Bound<'py, PyAny>,
    routing_key: String,
    exchange: &str,
    serializer: &str,
    body: Option<Vec<u8>>,
    eta_ms: Option<i64>,
    expires_ms: Option<i64>,
    retries: i64,
    time_limit: Option<f64>,
    soft_time_limit: Option<f64>,
    priority: Option<i64>,
    root_id: Option<String>,
    parent_id: Option<String>,
    group_id: Option<String>,
    origin: Option<String>,
    ignore_result: bool,
    reply_to: Option<String>,
    delivery_tag: Option<String>,
    extra_headers: Option<&Bound<'py, PyAny>>,
    max_size: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let codec_name = serializer;
    let args_value = if args.is_instance_of::<PyList>() || args.is_instance_of::<PyTuple>() {
        to_value(args, &PyPath::root("args"), 0, codec_name)?
    } else {
        return Err(PyTypeError::new_err(format!(
            "args must be a list or tuple, not {}",
            args.get_type().name()?
        )));
    };
    let kwargs_dict = match kwargs.cast::<PyDict>() {
        Ok(d) => d.clone(),
        Err(_) => PyDict::from_sequence(&kwargs.call_method0("items")?)?,
    };
    let kwargs_value = to_value(kwargs_dict.as_any(), &PyPath::root("kwargs"), 0, codec_name)?;
    let extra = match extra_headers {
        None => Vec::new(),
        Some(h) => {
            let d = match h.cast::<PyDict>() {
                Ok(d) => d.clone(),
                Err(_) => PyDict::from_sequence(&h.call_method0("items")?)?,
            };
            match to_value(d.as_any(), &PyPath::root("headers"), 0, "json")? {
                Value::Map(m) => m,
                _ => Vec::new(),
            }
        }
    };
    let argsrepr = match map_get(&extra, "argsrepr") {
        Some(_) => None,
        None => Some(short_repr(
            &PyTuple::new(py, args.try_iter()?.collect::<PyResult<Vec<_>>>()?)?.into_any(),
        )?),
    };
    let kwargsrepr = match map_get(&extra, "kwargsrepr") {
        Some(_) => None,
        None => Some(short_repr(kwargs_dict.as_any())?),
    };
    let (Value::List(args_list), Value::Map(kwargs_map)) = (args_value, kwargs_value) else {
        return Err(PyTypeError::new_err(
            "args must be a sequence and kwargs a mapping",
        ));
    };
    let mut spec = TaskMessageSpec::new(task, task_id, routing_key);
    spec.args = args_list;
    spec.kwargs = kwargs_map;
    spec.exchange = exchange.to_owned();
    spec.serializer = serializer.to_owned();
    spec.body = body;
    spec.eta_ms = eta_ms;
    spec.expires_ms = expires_ms;
    spec.retries = retries;
    spec.time_limit = time_limit;
    spec.soft_time_limit = soft_time_limit;
    spec.priority = priority;
    spec.root_id = root_id;
    spec.parent_id = parent_id;
    spec.group_id = group_id;
    spec.origin = origin;
    spec.ignore_result = ignore_result;
    spec.argsrepr = argsrepr;
    spec.kwargsrepr = kwargsrepr;
    spec.reply_to = reply_to;
    spec.delivery_tag = delivery_tag;
    spec.extra_headers = extra;
    spec.max_size = max_size;
    let out = protocol::encode_task_message(&spec).map_py(py)?;
    Ok(PyBytes::new(py, &out))
}

fn body_error(py: Python<'_>, field: &str, expected: &str, got: &Bound<'_, PyAny>) -> PyErr {
    let type_name = match got.get_type().name() {
        Ok(n) => n.to_string(),
        Err(_) => "object".to_owned(),
    };
    crate::errors::to_py(
        py,
        rqueue_core::Error::Decode(format!("{field} must be {expected}, got {type_name}")),
    )
}

type PyBodyParts = (Py<PyList>, Py<PyDict>, Option<Py<PyDict>>);

/// `(args, kwargs, embed)` of a JSON body, decoded straight into Python objects.
fn json_body(py: Python<'_>, body: &[u8]) -> PyResult<PyBodyParts> {
    let decoded = crate::json::loads(py, body, "body: ")?;
    let parts = match decoded.cast::<PyList>() {
        Ok(l) if l.len() == 3 => l,
        _ => {
            return Err(body_error(
                py,
                "body",
                "a [args, kwargs, embed] list",
                &decoded,
            ))
        }
    };
    let args = parts.get_item(0)?;
    let args = match args.cast_into::<PyList>() {
        Ok(a) => a.unbind(),
        Err(e) => return Err(body_error(py, "body[0] (args)", "a list", &e.into_inner())),
    };
    let kwargs = parts.get_item(1)?;
    let kwargs = match kwargs.cast_into::<PyDict>() {
        Ok(k) => k.unbind(),
        Err(e) => {
            return Err(body_error(
                py,
                "body[1] (kwargs)",
                "an object",
                &e.into_inner(),
            ))
        }
    };
    let embed = parts.get_item(2)?;
    let embed = if embed.is_none() {
        None
    } else {
        match embed.cast_into::<PyDict>() {
            Ok(e) => Some(e.unbind()),
            Err(e) => {
                return Err(body_error(
                    py,
                    "body[2] (embed)",
                    "an object or null",
                    &e.into_inner(),
                ))
            }
        }
    };
    Ok((args, kwargs, embed))
}

/// `(args, kwargs, embed)` of a body in another Rust codec (msgpack), through the core.
fn core_body(py: Python<'_>, body: &[u8], codec: Codec) -> PyResult<PyBodyParts> {
    let (args, kwargs, embed) = protocol::decode_body(body, codec).map_py(py)?;
    let list = PyList::empty(py);
    for item in &args {
        list.append(to_py(py, item)?)?;
    }
    Ok((
        list.unbind(),
        map_to_py(py, &kwargs)?.unbind(),
        embed
            .as_deref()
            .map(|m| map_to_py(py, m).map(Bound::unbind))
            .transpose()?,
    ))
}

#[pyfunction]
#[pyo3(signature = (data, *, accept = None, max_size = 1048576))]
fn decode_task_message(
    py: Python<'_>,
    data: Bound<'_, PyBytes>,
    accept: Option<Vec<String>>,
    max_size: usize,
) -> PyResult<TaskMessage> {
    let accept = match accept {
        Some(names) => Accept::new(&names),
        None => Accept::default(),
    };
    let env = protocol::decode_envelope(data.as_bytes(), &accept, max_size).map_py(py)?;
    let msg = env.message;
    let (args, kwargs, embed) = match env.codec {
        None => (None, None, None),
        Some(codec) => {
            let (a, k, e) = match codec {
                Codec::Json => json_body(py, &msg.body)?,
                other => core_body(py, &msg.body, other)?,
            };
            (Some(a), Some(k), e)
        }
    };
    Ok(TaskMessage {
        args,
        kwargs,
        embed,
        body: msg.body,
        body_obj: PyOnceLock::new(),
        envelope: data.unbind(),
        headers_obj: PyOnceLock::new(),
        task: msg.task,
        id: msg.id,
        content_type: msg.content_type,
        content_encoding: msg.content_encoding,
        eta_ms: msg.eta_ms,
        expires_ms: msg.expires_ms,
        retries: msg.retries,
        priority: msg.priority,
        time_limit: msg.time_limit,
        soft_time_limit: msg.soft_time_limit,
        root_id: msg.root_id,
        parent_id: msg.parent_id,
        group_id: msg.group_id,
        origin: msg.origin,
        ignore_result: msg.ignore_result,
        argsrepr: msg.argsrepr,
        kwargsrepr: msg.kwargsrepr,
        reply_to: msg.reply_to,
        correlation_id: msg.correlation_id,
        delivery_tag: msg.delivery_tag,
        exchange: msg.exchange,
        routing_key: msg.routing_key,
        redelivered: msg.redelivered,
    })
}

#[pyfunction]
fn parse_iso8601_ms(py: Python<'_>, value: &str) -> PyResult<i64> {
    protocol::parse_iso8601_ms(value).map_py(py)
}

#[pyfunction]
fn format_iso8601_ms(py: Python<'_>, epoch_ms: i64) -> PyResult<String> {
    protocol::format_iso8601_ms(epoch_ms).map_py(py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TaskMessage>()?;
    m.add_function(wrap_pyfunction!(encode_task_message, m)?)?;
    m.add_function(wrap_pyfunction!(decode_task_message, m)?)?;
    m.add_function(wrap_pyfunction!(parse_iso8601_ms, m)?)?;
    m.add_function(wrap_pyfunction!(format_iso8601_ms, m)?)?;
    Ok(())
}
