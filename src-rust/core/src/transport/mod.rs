//! Broker transports. Each owns its wire layout and its atomic fetch/lease/ack steps.

mod consumer;
pub mod redis;
pub mod redis_consumer;
mod redis_lua;
pub mod redis_tls;
pub mod sqlite;
pub mod sqlite_consumer;

use crate::error::{Error, Result};

/// Priorities are 0 (first) to 9, as on kombu's Redis transport; the same rule for every broker.
pub(crate) fn check_priority(priority: u8) -> Result<()> {
    if priority > 9 {
        return Err(Error::Config(format!(
            "message priority {priority} is out of range; use 0 (highest) to 9"
        )));
    }
    Ok(())
}

pub(crate) fn check_queue(queue: &str) -> Result<()> {
    if queue.is_empty() {
        return Err(Error::Config("queue name must not be empty".into()));
    }
    Ok(())
}
