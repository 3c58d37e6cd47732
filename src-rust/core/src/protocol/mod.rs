//! Celery protocol v2 task messages: the message ([`message`]), kombu's JSON envelope of the
//! Redis and SQLite transports ([`envelope`]) and the ISO-8601 timestamps of its headers
//! ([`iso8601`]). A transport with frames of its own (AMQP) maps the same message to its frame
//! headers, properties and raw body instead of the envelope.

pub mod envelope;
mod envelope_read;
mod envelope_scan;
pub mod iso8601;
pub mod message;

pub use envelope::{
    decode_envelope, decode_headers, decode_task_message, encode_envelope, encode_task_message,
    headers_json, DecodedEnvelope, EnvelopeRef,
};
pub use iso8601::{format_iso8601_ms, now_isoformat_utc, parse_iso8601_ms};
pub use message::{
    clamp_priority, decode_body, encode_body, Accept, BodyParts, TaskMessage, TaskMessageSpec,
    DEFAULT_MAX_SIZE,
};

#[cfg(test)]
mod tests;
