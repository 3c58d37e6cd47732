//! `FastLane`: a worker's common case run natively, a batch at a time (decode, admit, call the
//! task, store its result, ack), with anything unusual handed back to the Python executor
//! (`rqueue.worker.executor`), so the rules of every other case live in one place.
//!
//! The executor decides per batch which tasks may take the lane (its *plan*: no hooks, signals,
//! time or rate limits, or INFO logging in the way); the lane decides per message (a plain
//! message: see `TaskMessage::plain_arguments`) and per outcome (a plain return value). A task that
//! raised, returned a coroutine, or whose message needs more than the lane does, is handed back:
//! before its run (`ran` empty) or after it (what the call gave).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use rqueue_core::prefetch::{Delivery as CoreDelivery, PrefetchBuffer as CoreBuffer};
use rqueue_core::protocol::{self, Accept};

use crate::convert::PyPath;
use crate::prefetch::{Delivery, PrefetchBuffer};
use crate::protocol::{decode_message, TaskMessage};
use crate::writer;

/// The Python objects one executor thread lends the lane, each called only where the executor
/// itself would call it.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct FastLane {
    buffer: Arc<CoreBuffer>,
    accept: Accept,
    max_size: usize,
    hostname: Py<PyString>,
    /// `rqueue.request.MessageRequest`, and the context variable holding the request stack.
    request_type: Py<PyAny>,
    stack: Py<PyAny>,
    /// The executor: its `current` (what `inspect active` shows) and `processed` counter.
    executor: Py<PyAny>,
    processed: Py<PyDict>,
    /// The executor's `TaskGuard` (revoke with terminate raises only inside it).
    guard: Py<PyAny>,
    /// The worker's revoked ids (`__contains__` refreshes them from the broker when due).
    revoked: Py<PyAny>,
    /// The transport that delivered the messages (early acks).
    consumer: Py<PyAny>,
    /// A prefork child's `RunningSlot`, which its supervisor reads.
    slot: Option<Py<PyAny>>,
    /// `executor.store_success(msg, request, value)`: records a result in the batch.
    store: Py<PyAny>,
    /// `reprlib.repr`, for the slot's arguments when the message carries no `argsrepr`.
    args_repr: Py<PyAny>,
    /// `types.CoroutineType`: what an `async def` task returns.
    coroutine_type: Py<PyAny>,
    /// The executor's INFO lines: `(logger.info, received line, succeeded line, short_repr)`.
    log: (Py<PyAny>, Py<PyString>, Py<PyString>, Py<PyAny>),
    /// Whether the backend's records are Celery's plain JSON meta, which the lane encodes itself
    /// (else `store` encodes each one).
    json_results: bool,
}

/// What became of one delivery.
enum Step<'py> {
    /// Run and settled here.
    Done,
    /// For the executor: `(delivery, message or None, request, seconds since the call, value,
    /// exception)`; the last four are None when the task has not run.
    Handback(Bound<'py, PyTuple>),
}

#[pymethods]
impl FastLane {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (buffer, accept, max_size, hostname, request_type, stack, executor, guard, revoked, consumer, slot, store, args_repr, log, json_results))]
    fn new(
        py: Python<'_>,
        buffer: &PrefetchBuffer,
        accept: Vec<String>,
        max_size: usize,
        hostname: Py<PyString>,
        request_type: Py<PyAny>,
        stack: Py<PyAny>,
        executor: Bound<'_, PyAny>,
        guard: Py<PyAny>,
        revoked: Py<PyAny>,
        consumer: Py<PyAny>,
        slot: Option<Py<PyAny>>,
        store: Py<PyAny>,
        args_repr: Py<PyAny>,
        log: (Py<PyAny>, Py<PyString>, Py<PyString>, Py<PyAny>),
        json_results: bool,
    ) -> PyResult<Self> {
        let processed = executor
            .getattr(intern!(py, "processed"))?
            .cast_into::<PyDict>()?
            .unbind();
        Ok(FastLane {
            buffer: Arc::clone(&buffer.inner),
            accept: Accept::new(&accept),
            max_size,
            hostname,
            request_type,
            stack,
            executor: executor.unbind(),
            processed,
            guard,
            revoked,
            consumer,
            slot,
            store,
            args_repr,
            coroutine_type: py.import("types")?.getattr("CoroutineType")?.unbind(),
            log,
            json_results,
        })
    }

    /// Runs `first` (already taken from the buffer), then the deliveries waiting behind it,
    /// while they take the common path, for up to `budget_s` or until `acks` (the executor's
    /// batch, appended to, as `results` is) holds `max_acks`; `logged` when the executor logs each task at INFO
    /// (its lines, said the same way). Returns None when all it took were settled, or the
    /// first delivery that needs the executor (see `Step::Handback`).
    ///
    /// The lane gives back the credit of every delivery it settled; the one handed back keeps
    /// its credit for the executor. When a call into Python fails the error propagates, and
    /// that delivery's credit is given back first (it stays leased: the broker delivers it
    /// again).
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &self,
        py: Python<'py>,
        first: &Delivery,
        plan: &Bound<'py, PyDict>,
        results: &Bound<'py, PyList>,
        acks: &Bound<'py, PyList>,
        budget_s: f64,
        max_acks: usize,
        logged: bool,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let until = Instant::now() + Duration::try_from_secs_f64(budget_s).unwrap_or_default();
        let mut next = Some(first.inner.clone());
        loop {
            let delivery = match next.take() {
                Some(d) => d,
                None => {
                    if acks.len() >= max_acks || Instant::now() >= until {
                        return Ok(None);
                    }
                    match self.buffer.try_get() {
                        Some(d) => d,
                        None => return Ok(None),
                    }
                }
            };
            match self.one(py, delivery, plan, (results, acks), logged) {
                Ok(Step::Done) => self.buffer.done(1),
                Ok(Step::Handback(t)) => return Ok(Some(t)),
                Err(e) => {
                    self.buffer.done(1);
                    return Err(e);
                }
            }
        }
    }
}

impl FastLane {
    fn one<'py>(
        &self,
        py: Python<'py>,
        delivery: CoreDelivery,
        plan: &Bound<'py, PyDict>,
        (results, acks): (&Bound<'py, PyList>, &Bound<'py, PyList>),
        logged: bool,
    ) -> PyResult<Step<'py>> {
        let slot = self.slot.as_ref().map(|s| s.bind(py));
        if let Some(slot) = slot {
            // What a child holds is known before it is decoded (a message that kills the child
            // while decoding counts as delivered).
            slot.call_method1(intern!(py, "set"), (delivery.tag.as_str(),))?;
        }
        let payload = PyBytes::new(py, &delivery.payload);
        let Ok(msg) = decode_message(py, payload, &self.accept, self.max_size) else {
            return handback(py, delivery, None); // the executor refuses it, with why
        };
        let msg = Bound::new(py, msg)?;
        if delivery.deliveries > 1 {
            // Delivered before and never acked: its worker may have died running it. The
            // executor writes what it finished first, so a second death re-runs nothing else.
            return handback(py, delivery, Some(msg));
        }
        let m = msg.get();
        let task = m.task.bind(py);
        let (Some(how), Some((args, kwargs))) = (plan.get_item(task)?, m.plain_arguments(py)?)
        else {
            return handback(py, delivery, Some(msg));
        };
        let (entry, store, early_ack) = how.extract::<(Bound<'py, PyAny>, bool, bool)>()?;
        if self.revoked.bind(py).contains(m.id.bind(py))? {
            return handback(py, delivery, Some(msg));
        }
        let embed = m.embed_ref().map(|e| e.clone_ref(py));
        let request = self.request_type.bind(py).call1((
            &msg,
            &args,
            &kwargs,
            self.hostname.bind(py),
            embed,
        ))?;
        let tag = delivery.tag.as_str();
        if early_ack {
            self.consumer
                .bind(py)
                .call_method1(intern!(py, "ack"), (vec![tag],))?;
        }
        let (info, received, succeeded, short_repr) = &self.log;
        if logged {
            let name = m.display_name(py)?;
            info.bind(py).call1((received, name, m.id.bind(py)))?;
        }
        if let Some(slot) = slot {
            let args_repr = match &m.argsrepr {
                Some(r) => r.into_pyobject(py)?.into_any(),
                None => self.args_repr.bind(py).call1((&args,))?,
            };
            let ignore = m.ignores_result() || !store;
            slot.call_method1(
                intern!(py, "task_started"),
                (
                    m.id.bind(py),
                    task,
                    args_repr,
                    None::<f64>,
                    None::<f64>,
                    ignore,
                ),
            )?;
        }
        let Called(outcome, elapsed) = self.call(py, &entry, &request, m, &args, &kwargs)?;
        let value = match outcome {
            Ok(value) if !value.get_type().is(self.coroutine_type.bind(py)) => value,
            // A coroutine runs on the executor thread's event loop; an exception is settled
            // by the executor's rules (retry, reject, failure...).
            Ok(value) => {
                return handback_ran(py, delivery, msg, request, elapsed, Some(value), None)
            }
            Err(e) => {
                let exc = e.into_value(py).into_bound(py).into_any();
                return handback_ran(py, delivery, msg, request, elapsed, None, Some(exc));
            }
        };
        if logged {
            let shown = short_repr.bind(py).call1((&value,))?;
            let name = m.display_name(py)?;
            info.bind(py)
                .call1((succeeded, name, m.id.bind(py), elapsed, shown))?;
        }
        if store && !m.ignores_result() {
            match self.encode_success(py, m, &request, &value)? {
                Some(record) => results.append(record)?,
                None => drop(self.store.bind(py).call1((&msg, &request, value))?),
            }
        }
        if !early_ack {
            acks.append(tag)?;
        }
        if let Some(slot) = slot {
            slot.call_method0(intern!(py, "clear"))?;
        }
        Ok(Step::Done)
    }

    /// Calls the task as the executor's run step does: its request pushed and shown as
    /// current, inside the guard; counted as processed. `Err` is an exception that is not an
    /// `Exception` (a signal handler's), raised after the bookkeeping is undone.
    #[allow(clippy::too_many_arguments)]
    fn call<'py>(
        &self,
        py: Python<'py>,
        entry: &Bound<'py, PyAny>,
        request: &Bound<'py, PyAny>,
        m: &TaskMessage,
        args: &Bound<'py, PyList>,
        kwargs: &Bound<'py, PyDict>,
    ) -> PyResult<Called<'py>> {
        let stack = self.stack.bind(py);
        let before = stack
            .call_method0(intern!(py, "get"))?
            .cast_into::<PyTuple>()?;
        let mut items: Vec<Bound<'py, PyAny>> = before.iter().collect();
        items.push(request.clone());
        let pushed = PyTuple::new(py, items)?;
        stack.call_method1(intern!(py, "set"), (pushed,))?;
        let executor = self.executor.bind(py);
        let guard = self.guard.bind(py);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let entered = executor
            .setattr(intern!(py, "current"), (request, now))
            .and_then(|()| {
                guard.call_method1(
                    intern!(py, "enter"),
                    (m.id.bind(py), m.task.bind(py), None::<f64>),
                )
            });
        let started = Instant::now();
        let result = entered.and_then(|_| {
            let args = PyTuple::new(py, args.iter())?;
            let called = if kwargs.is_empty() {
                entry.call1(args)
            } else {
                entry.call(args, Some(kwargs))
            };
            let left = guard.call_method0(intern!(py, "leave"));
            let value = called?; // the task's exception wins over a failure to leave
            left.map(|_| value)
        });
        let elapsed = started.elapsed().as_secs_f64();
        // Undone whatever happened, as the executor's `finally` does.
        let restored = stack
            .call_method1(intern!(py, "set"), (before,))
            .and_then(|_| executor.setattr(intern!(py, "current"), py.None()))
            .and_then(|()| self.count(py, m.task.bind(py)));
        match result {
            Ok(value) => restored.map(|()| Called(Ok(value), elapsed)),
            Err(e) if e.is_instance_of::<PyException>(py) => {
                restored.map(|()| Called(Err(e), elapsed))
            }
            Err(e) => Err(e),
        }
    }

    /// `(task id, "SUCCESS", Celery's meta as JSON)` for the batch's results, as the backend's
    /// `encode` makes it; None when the backend encodes otherwise, the task sent tasks of its
    /// own (`children`), or the value does not serialize (`store` then records why).
    fn encode_success<'py>(
        &self,
        py: Python<'py>,
        m: &TaskMessage,
        request: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        if !self.json_results || !request.getattr(intern!(py, "children"))?.is_none() {
            return Ok(None);
        }
        let meta = PyDict::new(py);
        meta.set_item(intern!(py, "status"), intern!(py, "SUCCESS"))?;
        meta.set_item(intern!(py, "result"), value)?;
        meta.set_item(intern!(py, "traceback"), py.None())?;
        meta.set_item(intern!(py, "children"), PyList::empty(py))?;
        meta.set_item(intern!(py, "date_done"), protocol::now_isoformat_utc())?;
        meta.set_item(intern!(py, "task_id"), m.id.bind(py))?;
        let mut out = Vec::with_capacity(128);
        if writer::write_json(&mut out, &meta, &PyPath::root("obj"), 0).is_err() {
            return Ok(None);
        }
        let record = (
            m.id.bind(py),
            intern!(py, "SUCCESS"),
            PyBytes::new(py, &out),
        );
        Ok(Some(record.into_pyobject(py)?))
    }

    fn count(&self, py: Python<'_>, task: &Bound<'_, PyString>) -> PyResult<()> {
        let processed = self.processed.bind(py);
        let n = match processed.get_item(task)? {
            Some(n) => n.extract::<u64>()?,
            None => 0,
        };
        processed.set_item(task, n + 1)
    }
}

/// What a call gave (its value, or the `Exception` it raised) and how long it ran, in seconds.
struct Called<'py>(PyResult<Bound<'py, PyAny>>, f64);

fn handback<'py>(
    py: Python<'py>,
    delivery: CoreDelivery,
    msg: Option<Bound<'py, TaskMessage>>,
) -> PyResult<Step<'py>> {
    let delivery = Bound::new(py, Delivery { inner: delivery })?;
    let none = py.None().into_bound(py);
    let msg = msg.map_or_else(|| none.clone(), Bound::into_any);
    Ok(Step::Handback(PyTuple::new(
        py,
        [
            delivery.into_any(),
            msg,
            none.clone(),
            none.clone(),
            none.clone(),
            none,
        ],
    )?))
}

fn handback_ran<'py>(
    py: Python<'py>,
    delivery: CoreDelivery,
    msg: Bound<'py, TaskMessage>,
    request: Bound<'py, PyAny>,
    elapsed_s: f64,
    value: Option<Bound<'py, PyAny>>,
    exc: Option<Bound<'py, PyAny>>,
) -> PyResult<Step<'py>> {
    let delivery = Bound::new(py, Delivery { inner: delivery })?;
    let none = py.None().into_bound(py);
    Ok(Step::Handback(PyTuple::new(
        py,
        [
            delivery.into_any(),
            msg.into_any(),
            request,
            elapsed_s.into_pyobject(py)?.into_any(),
            value.unwrap_or_else(|| none.clone()),
            exc.unwrap_or(none),
        ],
    )?))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FastLane>()
}
