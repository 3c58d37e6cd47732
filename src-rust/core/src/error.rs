//! The one error type of the core. Every variant names what was wrong and, where it helps,
//! the offending value; the binding crate maps each variant to one Python exception class.

/// Errors produced by rqueue-core. Input-derived failures are always values of this type,
/// never panics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message or payload could not be decoded (not JSON, bad base64, missing or mistyped field).
    #[error("malformed message: {0}")]
    Decode(String),
    /// A message exceeds the configured maximum size.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes (task_max_message_size)")]
    TooLarge { size: usize, max: usize },
    /// A message's content type is not in the accepted list; raised before any decoding.
    #[error("content type {content_type:?} is not accepted (accept_content allows: {accepted})")]
    ContentDisallowed {
        content_type: String,
        accepted: String,
    },
    /// A value cannot be serialized by the chosen codec; `path` locates it (e.g. `args[1]["k"]`).
    #[error("cannot serialize {type_name} at {path} with {codec}")]
    Serialize {
        type_name: String,
        path: String,
        codec: String,
    },
    /// A configuration value (rate string, route pattern, serializer name) is invalid.
    #[error("{0}")]
    Config(String),
    /// The broker failed (I/O, SQL, protocol).
    #[error("broker error: {0}")]
    Broker(String),
    /// The broker cannot be reached.
    #[error("cannot connect to broker: {0}")]
    Connection(String),
    /// A request was sent but no reply came within the socket timeout: whether it took effect is
    /// unknown (a publish may or may not have stored its message).
    #[error("no reply from the broker: {0}")]
    NoReply(String),
    /// The broker's storage is no longer the one this connection opened (an SQLite file deleted
    /// or replaced): retrying cannot help, and writing on would lose what is written.
    #[error("{0}")]
    Replaced(String),
}

/// Result alias used across the core.
pub type Result<T> = std::result::Result<T, Error>;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Broker(format!("sqlite: {e}"))
    }
}
