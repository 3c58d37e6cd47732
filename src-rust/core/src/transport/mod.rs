//! Broker transports. Each owns its wire layout and its atomic fetch/lease/ack steps.

pub mod sqlite;
pub mod sqlite_consumer;
