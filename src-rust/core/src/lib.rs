//! rqueue-core: the pure-Rust heart of rqueue.
//!
//! Nothing here knows about Python. The `rqueue-py` crate wraps these modules for the
//! `rqueue._rqueue` extension; everything here is tested with `cargo test` alone.

pub mod codec;
pub mod doorbell;
pub mod error;
pub mod events;
pub mod jsonw;
pub mod prefetch;
pub mod protocol;
pub mod pyrepr;
pub mod ratelimit;
pub mod ratetable;
pub mod routing;
pub mod shm;
pub mod transport;

pub use error::{Error, Result};
