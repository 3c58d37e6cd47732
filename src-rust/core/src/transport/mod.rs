//! Broker transports. Each owns its wire layout and its atomic fetch/lease/ack steps.

mod consumer;
pub mod redis;
pub mod redis_consumer;
mod redis_lua;
pub mod redis_tls;
pub mod sqlite;
pub mod sqlite_consumer;
