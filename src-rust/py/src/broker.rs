//! Argument checks and row shapes shared by the broker bindings (`sqlite.rs`, `redis.rs`).

use rqueue_core::transport::sqlite::NewMessage;
use rqueue_core::Error;

/// `(id, queue, reason, error, deliveries, dead_at_ms, payload)` of a dead letter, as Python
/// sees it; the id is a row id (SQLite) or a delivery tag (Redis).
pub type DeadLetterRow<Id> = (Id, String, String, Option<String>, u32, i64, Vec<u8>);

/// A `(queue, payload, priority, eta_ms)` item of `publish_many`.
pub type MessageTuple = (String, Vec<u8>, i64, Option<i64>);

/// Checks a message priority: 0 (highest) to 9.
pub fn priority_of(priority: i64) -> Result<u8, Error> {
    u8::try_from(priority)
        .ok()
        .filter(|p| *p <= 9)
        .ok_or_else(|| {
            Error::Config(format!(
                "message priority {priority} is out of range; use 0 (highest) to 9"
            ))
        })
}

/// The messages of a `publish_many` call, or the first bad priority (nothing is published).
pub fn new_messages(messages: Vec<MessageTuple>) -> Result<Vec<NewMessage>, Error> {
    messages
        .into_iter()
        .map(|(queue, payload, priority, eta_ms)| {
            Ok(NewMessage {
                queue,
                payload,
                priority: priority_of(priority)?,
                eta_ms,
            })
        })
        .collect()
}
