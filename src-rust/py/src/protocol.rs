//! Protocol bindings: `encode_task_message(s)`, `decode_task_message` → `TaskMessage`, and the
//! ISO-8601 helpers.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use rqueue_core::codec::{self, Codec, Value};
use rqueue_core::protocol::{self, Accept, EnvelopeRef};

use crate::convert::{map_to_py, to_py, to_value, unsupported, PyPath, Seg};
use crate::errors::IntoPyResult;
use crate::writer::Embed;
use crate::{repr, writer};

/// Longest `argsrepr`/`kwargsrepr` written, in characters (Celery truncates too).
const REPR_MAX_CHARS: usize = 1024;

/// A decoded task message: typed fields of the headers, properties and body.
///
/// `headers` and `body` are built on first access (and then cached): most consumers only read
/// the typed fields and `args`/`kwargs`/`embed`.
#[pyclass(frozen, module = "rqueue._rqueue")]
pub struct TaskMessage {
    /// `task` and `id` are read many times per message (registry lookup, logs, results): made
    /// into Python strings once, so each read is a reference, not a new string to hash again.
    #[pyo3(get)]
    pub(crate) task: Py<PyString>,
    #[pyo3(get)]
    pub(crate) id: Py<PyString>,
    #[pyo3(get)]
    pub(crate) args: Option<Py<PyList>>,
    #[pyo3(get)]
    kwargs: Option<Py<PyDict>>,
    #[pyo3(get)]
    embed: Option<Py<PyDict>>,
    #[pyo3(get)]
    content_type: String,
    #[pyo3(get)]
    content_encoding: String,
    #[pyo3(get)]
    pub(crate) eta_ms: Option<i64>,
    #[pyo3(get)]
    pub(crate) expires_ms: Option<i64>,
    #[pyo3(get)]
    pub(crate) retries: i64,
    #[pyo3(get)]
    priority: u8,
    #[pyo3(get)]
    time_limit: Option<f64>,
    #[pyo3(get)]
    soft_time_limit: Option<f64>,
    #[pyo3(get)]
    pub(crate) root_id: Option<String>,
    #[pyo3(get)]
    pub(crate) parent_id: Option<String>,
    #[pyo3(get)]
    group_id: Option<String>,
    #[pyo3(get)]
    group_index: Option<i64>,
    #[pyo3(get)]
    shadow: Option<String>,
    #[pyo3(get)]
    origin: Option<String>,
    #[pyo3(get)]
    ignore_result: bool,
    #[pyo3(get)]
    pub(crate) argsrepr: Option<String>,
    #[pyo3(get)]
    pub(crate) kwargsrepr: Option<String>,
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
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<TaskMessage task={:?} id={:?} content_type={:?}>",
            self.task.bind(py).to_string(),
            self.id.bind(py).to_string(),
            self.content_type
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

impl TaskMessage {
    /// The positional and keyword arguments when the worker's fast lane may run this message
    /// (`crate::lane`): a body decoded here, not redelivered, no schedule, no time limits and no
    /// canvas. None for anything else, which takes the Python executor's path (it handles every
    /// case).
    pub(crate) fn plain_arguments<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<(Bound<'py, PyList>, Bound<'py, PyDict>)>> {
        let (Some(args), Some(kwargs)) = (&self.args, &self.kwargs) else {
            return Ok(None);
        };
        if self.redelivered
            || self.eta_ms.is_some()
            || self.expires_ms.is_some()
            || self.time_limit.is_some()
            || self.soft_time_limit.is_some()
        {
            return Ok(None);
        }
        if let Some(embed) = &self.embed {
            for value in embed.bind(py).values() {
                if value.is_truthy()? {
                    return Ok(None);
                }
            }
        }
        Ok(Some((args.bind(py).clone(), kwargs.bind(py).clone())))
    }

    pub(crate) fn embed_ref(&self) -> Option<&Py<PyDict>> {
        self.embed.as_ref()
    }

    pub(crate) fn ignores_result(&self) -> bool {
        self.ignore_result
    }

    /// The name logs show: the sender's shadow name, else the task's.
    pub(crate) fn display_name<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.shadow {
            Some(shadow) => Ok(shadow.into_pyobject(py)?.into_any()),
            None => Ok(self.task.bind(py).clone().into_any()),
        }
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

fn as_dict<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    match obj.cast::<PyDict>() {
        Ok(d) => Ok(d.clone()),
        Err(_) => PyDict::from_sequence(&obj.call_method0("items")?),
    }
}

/// A list of signature dicts (`callbacks`, `errbacks`, `chain`), or None.
fn links<'a, 'py>(
    value: Option<&'a Bound<'py, PyAny>>,
    name: &str,
) -> PyResult<Option<&'a Bound<'py, PyAny>>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() => Ok(Some(v)),
        Some(v) => Err(PyTypeError::new_err(format!(
            "{name} must be a list of signature dicts or None, not {}",
            v.get_type().name()?
        ))),
    }
}

/// The embed as a value for codecs other than JSON (msgpack).
fn embed_value(embed: &Embed<'_, '_>, c: Codec) -> PyResult<rqueue_core::codec::Map> {
    if embed.is_default() {
        return Ok(codec::default_embed());
    }
    embed
        .fields()
        .into_iter()
        .map(|(key, value)| {
            let v = match value {
                Some(v) => to_value(v, &PyPath::root(key), 1, c.name())?,
                None => Value::Null,
            };
            Ok((Value::Str(key.to_owned()), v))
        })
        .collect()
}

/// Extra headers, written by the Python-object JSON writer.
fn extra_headers_json(headers: &Bound<'_, PyDict>) -> PyResult<ExtraHeaders> {
    let root = PyPath::root("headers");
    let mut out = Vec::with_capacity(headers.len());
    for (k, v) in headers.iter() {
        let Ok(name) = k.cast::<PyString>() else {
            let what = format!("header name of type {}", k.get_type().name()?);
            return Err(unsupported(&k, Some(&what), &root, "json"));
        };
        let mut text = Vec::new();
        writer::write_json(&mut text, &v, &root.child(Seg::Key(&k)), 1)?;
        out.push((name.to_str()?.to_owned(), text));
    }
    Ok(out)
}

/// Extra headers as `(name, JSON text)`.
type ExtraHeaders = Vec<(String, Vec<u8>)>;

/// What every message of one send shares: all but the id and the arguments.
struct Fixed<'a, 'py> {
    task: &'a str,
    routing_key: &'a str,
    exchange: &'a str,
    serializer: &'a str,
    body: Option<&'a [u8]>,
    eta_ms: Option<i64>,
    expires_ms: Option<i64>,
    retries: i64,
    time_limit: Option<f64>,
    soft_time_limit: Option<f64>,
    priority: Option<i64>,
    root_id: Option<&'a str>,
    parent_id: Option<&'a str>,
    group_id: Option<&'a str>,
    origin: Option<&'a str>,
    ignore_result: bool,
    reply_to: Option<&'a str>,
    /// Written once for the whole send.
    extra: ExtraHeaders,
    max_size: usize,
    embed: Embed<'a, 'py>,
    group_index: Option<i64>,
    shadow: Option<&'a str>,
}

impl<'a, 'py> Fixed<'a, 'py> {
    /// The per-send values that are Python objects (extra headers, links), checked once.
    fn python_parts(
        extra_headers: Option<&'a Bound<'py, PyAny>>,
        callbacks: Option<&'a Bound<'py, PyAny>>,
        errbacks: Option<&'a Bound<'py, PyAny>>,
        chain: Option<&'a Bound<'py, PyAny>>,
        chord: Option<&'a Bound<'py, PyAny>>,
    ) -> PyResult<(ExtraHeaders, Embed<'a, 'py>)> {
        let embed = Embed {
            callbacks: links(callbacks, "callbacks")?,
            errbacks: links(errbacks, "errbacks")?,
            chain: links(chain, "chain")?,
            chord: match chord {
                Some(c) if !c.is_none() && !c.is_instance_of::<PyDict>() => {
                    return Err(PyTypeError::new_err(format!(
                        "chord must be a signature dict or None, not {}",
                        c.get_type().name()?
                    )))
                }
                other => other.filter(|c| !c.is_none()),
            },
        };
        let extra = match extra_headers {
            None => Vec::new(),
            Some(h) => extra_headers_json(&as_dict(h)?)?,
        };
        Ok((extra, embed))
    }

    /// One message: the envelope of `task_id` called with `args` and `kwargs`.
    fn encode(
        &self,
        py: Python<'py>,
        task_id: &str,
        args: &Bound<'py, PyAny>,
        kwargs: &Bound<'py, PyAny>,
        delivery_tag: Option<&str>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if !(args.is_instance_of::<PyList>() || args.is_instance_of::<PyTuple>()) {
            return Err(PyTypeError::new_err(format!(
                "args must be a list or tuple, not {}",
                args.get_type().name()?
            )));
        }
        let kwargs = as_dict(kwargs)?;
        let embed = &self.embed;
        let serializer = self.serializer;
        let (content_type, content_encoding) = codec::content_type_of(serializer).map_py(py)?;
        let written;
        let body: &[u8] = match (self.body, Codec::from_content_type(content_type)) {
            (Some(raw), _) => raw,
            (None, Some(Codec::Json)) => {
                let mut out = Vec::with_capacity(128);
                writer::write_task_body(&mut out, args, &kwargs, embed)?;
                written = out;
                &written
            }
            (None, Some(c)) => {
                let Value::List(args) = to_value(args, &PyPath::root("args"), 0, c.name())? else {
                    return Err(PyTypeError::new_err("args must be a list or tuple"));
                };
                let Value::Map(kwargs) =
                    to_value(kwargs.as_any(), &PyPath::root("kwargs"), 0, c.name())?
                else {
                    return Err(PyTypeError::new_err("kwargs must be a mapping"));
                };
                let embed = embed_value(embed, c)?;
                let mut out = Vec::with_capacity(128);
                codec::write_task_body(&mut out, c, &args, &kwargs, &embed).map_py(py)?;
                written = out;
                &written
            }
            (None, None) => {
                return Err(rqueue_core::Error::Config(format!(
                    "serializer {serializer:?} needs a body serialized in Python (pass body=...)"
                )))
                .map_py(py)
            }
        };
        let extra = &self.extra;
        let has_extra = |name: &str| extra.iter().any(|(k, _)| k == name);
        let argsrepr = match has_extra("argsrepr") {
            true => None,
            false => Some(repr::short_repr_args(args, REPR_MAX_CHARS)?),
        };
        let kwargsrepr = match has_extra("kwargsrepr") {
            true => None,
            false => Some(repr::short_repr(kwargs.as_any(), REPR_MAX_CHARS)?),
        };
        let extra_refs: Vec<(&str, &[u8])> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let mut tag_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let delivery_tag = match delivery_tag {
            Some(t) => t,
            None => crate::ids::uuid4_text(&mut tag_buf)?,
        };
        let env = EnvelopeRef {
            task: self.task,
            id: task_id,
            routing_key: self.routing_key,
            exchange: self.exchange,
            content_type,
            content_encoding,
            eta_ms: self.eta_ms,
            expires_ms: self.expires_ms,
            retries: self.retries,
            time_limit: self.time_limit,
            soft_time_limit: self.soft_time_limit,
            priority: self.priority,
            root_id: self.root_id,
            parent_id: self.parent_id,
            group_id: self.group_id,
            group_index: self.group_index,
            shadow: self.shadow,
            origin: self.origin,
            ignore_result: self.ignore_result,
            argsrepr: argsrepr.as_deref(),
            kwargsrepr: kwargsrepr.as_deref(),
            reply_to: self.reply_to,
            delivery_tag: Some(delivery_tag),
        };
        let out = protocol::encode_envelope(&env, body, &extra_refs, self.max_size).map_py(py)?;
        Ok(PyBytes::new(py, &out))
    }
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (
    *, task, task_id, args, kwargs, routing_key, exchange = "", serializer = "json", body = None,
    eta_ms = None, expires_ms = None, retries = 0, time_limit = None, soft_time_limit = None,
    priority = None, root_id = None, parent_id = None, group_id = None, origin = None,
    ignore_result = false, reply_to = None, delivery_tag = None, extra_headers = None,
    max_size = 1048576, callbacks = None, errbacks = None, chain = None, chord = None,
    group_index = None, shadow = None
))]
fn encode_task_message<'py>(
    py: Python<'py>,
    task: &str,
    task_id: &str,
    args: &Bound<'py, PyAny>,
    kwargs: &Bound<'py, PyAny>,
    routing_key: &str,
    exchange: &str,
    serializer: &str,
    body: Option<&[u8]>,
    eta_ms: Option<i64>,
    expires_ms: Option<i64>,
    retries: i64,
    time_limit: Option<f64>,
    soft_time_limit: Option<f64>,
    priority: Option<i64>,
    root_id: Option<&str>,
    parent_id: Option<&str>,
    group_id: Option<&str>,
    origin: Option<&str>,
    ignore_result: bool,
    reply_to: Option<&str>,
    delivery_tag: Option<&str>,
    extra_headers: Option<&Bound<'py, PyAny>>,
    max_size: usize,
    callbacks: Option<&Bound<'py, PyAny>>,
    errbacks: Option<&Bound<'py, PyAny>>,
    chain: Option<&Bound<'py, PyAny>>,
    chord: Option<&Bound<'py, PyAny>>,
    group_index: Option<i64>,
    shadow: Option<&str>,
) -> PyResult<Bound<'py, PyBytes>> {
    let (extra, embed) = Fixed::python_parts(extra_headers, callbacks, errbacks, chain, chord)?;
    let fixed = Fixed {
        task,
        routing_key,
        exchange,
        serializer,
        body,
        eta_ms,
        expires_ms,
        retries,
        time_limit,
        soft_time_limit,
        priority,
        root_id,
        parent_id,
        group_id,
        origin,
        ignore_result,
        reply_to,
        extra,
        max_size,
        embed,
        group_index,
        shadow,
    };
    fixed.encode(py, task_id, args, kwargs, delivery_tag)
}

/// Many calls of one task with the same options, each with a fresh task id: `[(task_id,
/// payload), ...]` for `calls`, a list of `(args, kwargs)`. One call across the boundary per
/// batch instead of one per message, and the options checked once.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (
    calls, *, task, routing_key, exchange = "", serializer = "json",
    eta_ms = None, expires_ms = None, retries = 0, time_limit = None, soft_time_limit = None,
    priority = None, root_id = None, parent_id = None, group_id = None, origin = None,
    ignore_result = false, reply_to = None, extra_headers = None,
    max_size = 1048576, callbacks = None, errbacks = None, chain = None, chord = None,
    group_index = None, shadow = None
))]
fn encode_task_messages<'py>(
    py: Python<'py>,
    calls: &Bound<'py, PyList>,
    task: &str,
    routing_key: &str,
    exchange: &str,
    serializer: &str,
    eta_ms: Option<i64>,
    expires_ms: Option<i64>,
    retries: i64,
    time_limit: Option<f64>,
    soft_time_limit: Option<f64>,
    priority: Option<i64>,
    root_id: Option<&str>,
    parent_id: Option<&str>,
    group_id: Option<&str>,
    origin: Option<&str>,
    ignore_result: bool,
    reply_to: Option<&str>,
    extra_headers: Option<&Bound<'py, PyAny>>,
    max_size: usize,
    callbacks: Option<&Bound<'py, PyAny>>,
    errbacks: Option<&Bound<'py, PyAny>>,
    chain: Option<&Bound<'py, PyAny>>,
    chord: Option<&Bound<'py, PyAny>>,
    group_index: Option<i64>,
    shadow: Option<&str>,
) -> PyResult<Bound<'py, PyList>> {
    let (extra, embed) = Fixed::python_parts(extra_headers, callbacks, errbacks, chain, chord)?;
    let fixed = Fixed {
        task,
        routing_key,
        exchange,
        serializer,
        body: None,
        eta_ms,
        expires_ms,
        retries,
        time_limit,
        soft_time_limit,
        priority,
        root_id,
        parent_id,
        group_id,
        origin,
        ignore_result,
        reply_to,
        extra,
        max_size,
        embed,
        group_index,
        shadow,
    };
    let out = PyList::empty(py);
    let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let (no_args, no_kwargs) = (PyTuple::empty(py).into_any(), PyDict::new(py).into_any());
    for (i, call) in calls.iter().enumerate() {
        // An (args, kwargs) pair as callers write it: a tuple or a list; None for no arguments.
        let pair = match call.cast::<PyTuple>() {
            Ok(t) if t.len() == 2 => Some((t.get_item(0)?, t.get_item(1)?)),
            Ok(_) => None,
            Err(_) => match call.cast::<PyList>() {
                Ok(l) if l.len() == 2 => Some((l.get_item(0)?, l.get_item(1)?)),
                _ => None,
            },
        };
        let (args, kwargs) = pair.ok_or_else(|| {
            PyTypeError::new_err(format!("calls[{i}] must be an (args, kwargs) tuple"))
        })?;
        let args = if args.is_none() {
            no_args.clone()
        } else {
            args
        };
        let kwargs = if kwargs.is_none() {
            no_kwargs.clone()
        } else {
            kwargs
        };
        let task_id = crate::ids::uuid4_text(&mut id_buf)?;
        let payload = fixed.encode(py, task_id, &args, &kwargs, None)?;
        out.append((PyString::new(py, task_id), payload))?;
    }
    Ok(out)
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
    decode_message(py, data, &accept, max_size)
}

/// Decodes an envelope into a `TaskMessage` (the body too, when its content type is one the
/// extension reads); `decode_task_message` and the worker's fast lane share it.
pub(crate) fn decode_message(
    py: Python<'_>,
    data: Bound<'_, PyBytes>,
    accept: &Accept,
    max_size: usize,
) -> PyResult<TaskMessage> {
    let env = protocol::decode_envelope(data.as_bytes(), accept, max_size).map_py(py)?;
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
        task: PyString::new(py, &msg.task).unbind(),
        id: PyString::new(py, &msg.id).unbind(),
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
        group_index: msg.group_index,
        shadow: msg.shadow,
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
    m.add_function(wrap_pyfunction!(encode_task_messages, m)?)?;
    m.add_function(wrap_pyfunction!(decode_task_message, m)?)?;
    m.add_function(wrap_pyfunction!(parse_iso8601_ms, m)?)?;
    m.add_function(wrap_pyfunction!(format_iso8601_ms, m)?)?;
    Ok(())
}
