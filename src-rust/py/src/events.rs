//! `TaskEventBuffer`: a worker process's task events, appended as JSON by the executor's hook
//! points (one call each, fields read from the `TaskMessage` itself) and taken as one
//! `task.multi` body by the process's event sender thread.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rqueue_core::events::{Received, TaskEventBatch};

use crate::protocol::TaskMessage;
use crate::repr;

/// Reprs of results and arguments in events are cut to this many characters (Celery's
/// `resultrepr_maxsize` and `argsrepr` limit).
const REPR_MAX: usize = 1024;

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Task events waiting to be published, for node `hostname` (its main process `pid`).
#[pyclass(frozen, module = "rqueue._rqueue")]
pub struct TaskEventBuffer {
    batch: Mutex<TaskEventBatch>,
}

impl TaskEventBuffer {
    fn batch(&self) -> MutexGuard<'_, TaskEventBatch> {
        // Appending cannot leave the batch half-written in a way that matters: take it anyway.
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl TaskEventBuffer {
    #[new]
    fn new(hostname: &str, pid: u32, utcoffset_h: f64) -> Self {
        TaskEventBuffer {
            batch: Mutex::new(TaskEventBatch::new(hostname, pid, utcoffset_h)),
        }
    }

    /// `task-received` from the message's own fields; returns the events now waiting.
    fn received(&self, py: Python<'_>, msg: PyRef<'_, TaskMessage>) -> PyResult<usize> {
        let fallback =
            |have: &Option<String>, make: &dyn Fn() -> PyResult<String>| -> PyResult<String> {
                match have {
                    Some(text) => Ok(text.clone()),
                    None => make(),
                }
            };
        let args = fallback(&msg.argsrepr, &|| match &msg.args {
            Some(list) => repr::short_repr_args(list.bind(py).as_any(), REPR_MAX),
            None => Ok(String::new()),
        })?;
        let kwargs = fallback(&msg.kwargsrepr, &|| Ok(String::new()))?;
        let uuid = msg.id.bind(py).to_str()?;
        let name = msg.task.bind(py).to_str()?;
        let event = Received {
            uuid,
            name,
            args: &args,
            kwargs: &kwargs,
            root_id: msg.root_id.as_deref(),
            parent_id: msg.parent_id.as_deref(),
            retries: msg.retries,
            eta_ms: msg.eta_ms,
            expires_ms: msg.expires_ms,
        };
        let mut batch = self.batch();
        batch.received(&event, now_s());
        Ok(batch.len())
    }

    fn started(&self, task_id: &str) -> usize {
        let mut batch = self.batch();
        batch.started(task_id, now_s());
        batch.len()
    }

    /// `task-succeeded` with the result's repr (cut to 1024 characters; an object whose
    /// `repr()` raises is named instead).
    fn succeeded(&self, task_id: &str, result: &Bound<'_, PyAny>, runtime_s: f64) -> usize {
        let text = repr::short_repr(result, REPR_MAX).unwrap_or_else(|_| {
            let kind = result
                .get_type()
                .name()
                .map_or_else(|_| "object".to_owned(), |n| n.to_string());
            format!("<unrepresentable {kind}>")
        });
        let mut batch = self.batch();
        batch.succeeded(task_id, &text, runtime_s, now_s());
        batch.len()
    }

    fn failed(&self, task_id: &str, exception: &str, traceback: &str) -> usize {
        let mut batch = self.batch();
        batch.failed("task-failed", task_id, exception, traceback, now_s());
        batch.len()
    }

    fn retried(&self, task_id: &str, exception: &str, traceback: &str) -> usize {
        let mut batch = self.batch();
        batch.failed("task-retried", task_id, exception, traceback, now_s());
        batch.len()
    }

    fn revoked(&self, task_id: &str, terminated: bool, expired: bool) -> usize {
        let mut batch = self.batch();
        batch.revoked(task_id, terminated, expired, now_s());
        batch.len()
    }

    fn rejected(&self, task_id: &str, requeue: bool) -> usize {
        let mut batch = self.batch();
        batch.rejected(task_id, requeue, now_s());
        batch.len()
    }

    /// Events appended from now on say this `utcoffset` (hours west of UTC).
    fn set_utcoffset(&self, hours: f64) {
        self.batch().set_utcoffset(hours);
    }

    /// `(JSON list of the waiting events, how many)`, or None when none waits; empties the buffer.
    fn take<'py>(&self, py: Python<'py>) -> Option<(Bound<'py, PyBytes>, usize)> {
        let taken = self.batch().take();
        taken.map(|(body, n)| (PyBytes::new(py, &body), n))
    }

    /// The Lamport clock of the last event appended.
    #[getter]
    fn clock(&self) -> u64 {
        self.batch().clock()
    }

    fn __len__(&self) -> usize {
        self.batch().len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TaskEventBuffer>()?;
    Ok(())
}
