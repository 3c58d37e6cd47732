//! Random (version 4) UUIDs for task ids and delivery tags.
//!
//! The random bytes come from the operating system (`getrandom`), read 64 ids at a time: one
//! system call per id costs as much as the rest of encoding a small message. A forked child
//! must not reuse the bytes its parent still holds, so the module registers an
//! `os.register_at_fork(after_in_child=...)` hook (run by every fork that goes on running
//! Python) that makes the next id in the child read fresh bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

const BATCH_BYTES: usize = 16 * 64;

/// Forks seen in this process's ancestry since import (bumped in the child after each fork).
static FORKS: AtomicU64 = AtomicU64::new(0);

struct Pool {
    forks: u64,
    used: usize,
    bytes: [u8; BATCH_BYTES],
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    forks: 0,
    used: BATCH_BYTES,
    bytes: [0; BATCH_BYTES],
});

/// A new random UUID.
pub fn uuid4() -> PyResult<uuid::Uuid> {
    let forks = FORKS.load(Ordering::Acquire);
    let mut raw = [0u8; 16];
    {
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.forks != forks || pool.used + raw.len() > BATCH_BYTES {
            getrandom::fill(&mut pool.bytes)
                .map_err(|e| PyOSError::new_err(format!("no random bytes from the OS: {e}")))?;
            pool.forks = forks;
            pool.used = 0;
        }
        let at = pool.used;
        raw.copy_from_slice(&pool.bytes[at..at + 16]);
        // Bytes handed out are not kept around.
        pool.bytes[at..at + 16].fill(0);
        pool.used += 16;
    }
    Ok(uuid::Builder::from_random_bytes(raw).into_uuid())
}

/// A new random UUID as hyphenated lowercase text.
pub fn uuid4_text(buf: &mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> PyResult<&str> {
    Ok(uuid4()?.hyphenated().encode_lower(buf))
}

/// A new task id: a random (version 4) UUID as text.
#[pyfunction]
fn new_task_id(py: Python<'_>) -> PyResult<Bound<'_, PyString>> {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Ok(PyString::new(py, uuid4_text(&mut buf)?))
}

/// Run in the child after `os.fork()`: the next id reads fresh bytes.
#[pyfunction]
fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::AcqRel);
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(new_task_id, m)?)?;
    let py = m.py();
    let os = py.import("os")?;
    if os.hasattr("register_at_fork")? {
        let kwargs = PyDict::new(py);
        kwargs.set_item("after_in_child", wrap_pyfunction!(after_fork_in_child, m)?)?;
        os.call_method("register_at_fork", (), Some(&kwargs))?;
    }
    Ok(())
}
