//! Protocol bindings: `encode_task_message`, `decode_task_message` → `TaskMessage`, and the
//! ISO-8601 helpers.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use rqueue_core::codec::{map_get, Value};
use rqueue_core::protocol::{self, Accept, TaskMessageSpec};

use crate::codec::{map_to_py, to_py, to_value, PyPath};
use crate::errors::IntoPyResult;

/// Longest `argsrepr`/`kwargsrepr` written, in characters (Celery truncates too).
const REPR_MAX_CHARS: usize = 1024;

fn short_repr(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let r = obj.repr()?;
    let s = r.to_str()?;
    Ok(match s.char_indices().nth(REPR_MAX_CHARS) {
        Some((end, _)) => s[..end].to_owned(),
        None => s.to_owned(),
    })
}

/// A decoded task message: typed fields of the headers, properties and body.
#[pyclass(frozen, get_all, module = "rqueue._rqueue")]
pub struct TaskMessage {
    task: String,
    id: String,
    args: Option<Py<PyList>>,
    kwargs: Option<Py<PyDict>>,
    embed: Option<Py<PyDict>>,
    body: Py<PyBytes>,
    content_type: String,
    content_encoding: String,
    eta_ms: Option<i64>,
    expires_ms: Option<i64>,
    retries: i64,
    priority: u8,
    time_limit: Option<f64>,
    soft_time_limit: Option<f64>,
    root_id: Option<String>,
    parent_id: Option<String>,
    group_id: Option<String>,
    origin: Option<String>,
    ignore_result: bool,
    argsrepr: Option<String>,
    kwargsrepr: Option<String>,
    reply_to: Option<String>,
    correlation_id: Option<String>,
    delivery_tag: Option<String>,
    exchange: String,
    routing_key: String,
    redelivered: bool,
    headers: Py<PyDict>,
}

#[pymethods]
impl TaskMessage {
    fn __repr__(&self) -> String {
        format!(
            "<TaskMessage task={:?} id={:?} content_type={:?}>",
            self.task, self.id, self.content_type
        )
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

#[pyfunction]
#[pyo3(signature = (data, *, accept = None, max_size = 1048576))]
fn decode_task_message(
    py: Python<'_>,
    data: &[u8],
    accept: Option<Vec<String>>,
    max_size: usize,
) -> PyResult<TaskMessage> {
    let accept = accept.unwrap_or_else(|| vec!["application/json".to_owned()]);
    let msg = protocol::decode_task_message(data, &Accept::new(&accept), max_size).map_py(py)?;
    let list = |items: &[Value]| -> PyResult<Py<PyList>> {
        let l = PyList::empty(py);
        for item in items {
            l.append(to_py(py, item)?)?;
        }
        Ok(l.unbind())
    };
    Ok(TaskMessage {
        args: msg.args.as_deref().map(list).transpose()?,
        kwargs: msg
            .kwargs
            .as_deref()
            .map(|m| map_to_py(py, m).map(Bound::unbind))
            .transpose()?,
        embed: msg
            .embed
            .as_deref()
            .map(|m| map_to_py(py, m).map(Bound::unbind))
            .transpose()?,
        body: PyBytes::new(py, &msg.body).unbind(),
        headers: map_to_py(py, &msg.headers)?.unbind(),
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
