//! `rqueue._rqueue`: the thin PyO3 layer over rqueue-core.
//!
//! One file per exported concept; `errors.rs` maps every core error to a class of
//! `rqueue.exceptions`. No threads or runtimes start at import time: prefork workers fork
//! after importing this module (which registers one `os.register_at_fork` hook, for ids).

use pyo3::prelude::*;

mod amqp;
mod broker;
mod codec;
mod convert;
mod errors;
mod events;
mod ids;
mod json;
mod lane;
mod postgres;
mod prefetch;
mod protocol;
mod ratelimit;
mod redis;
mod repr;
mod routing;
mod sqlite;
mod writer;

#[pymodule]
fn _rqueue(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    codec::register(m)?;
    events::register(m)?;
    protocol::register(m)?;
    ids::register(m)?;
    routing::register(m)?;
    ratelimit::register(m)?;
    prefetch::register(m)?;
    lane::register(m)?;
    sqlite::register(m)?;
    redis::register(m)?;
    postgres::register(m)?;
    amqp::register(m)?;
    Ok(())
}
