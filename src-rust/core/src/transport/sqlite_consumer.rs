//! The consumer thread of the SQLite transport: leases batches into a [`PrefetchBuffer`].
//!
//! The loop is the shared one of [`consumer`](super::consumer); this module only says how it
//! talks to SQLite. The thread owns its own connection (opened from `path`). It fetches only as
//! many messages as the buffer has credits, polls with exponential backoff when nothing is due
//! (0.5 ms doubling up to `poll_max`), extends this owner's leases every `lease / 3`, and sweeps
//! expired leases of any owner every `sweep_interval`; a second thread checkpoints the file's
//! write-ahead log meanwhile ([`Checkpointer`]). Errors are recorded and retried with
//! backoff; the thread only ends when asked to, or when the file was replaced. It never starts
//! on its own: call
//! [`SqliteConsumer::start`] after any fork.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::doorbell::Bell;
use crate::error::Result;
use crate::prefetch::{Delivery, PrefetchBuffer};
use crate::transport::consumer::{Consumer, LeaseSource, Settings};
use crate::transport::sqlite::SqliteBroker;
use crate::transport::sqlite_checkpointer::Checkpointer;

pub use crate::transport::consumer::FETCH_BATCH;

/// Settings of a [`SqliteConsumer`].
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub path: PathBuf,
    pub queues: Vec<String>,
    pub owner: String,
    pub lease: Duration,
    pub max_deliveries: u32,
    /// Longest idle poll interval; keep it well under 50 ms so new work is seen quickly.
    pub poll_max: Duration,
    pub sweep_interval: Duration,
    pub busy_timeout_ms: u64,
}

impl ConsumerConfig {
    pub fn new(path: impl Into<PathBuf>, queues: Vec<String>, owner: impl Into<String>) -> Self {
        ConsumerConfig {
            path: path.into(),
            queues,
            owner: owner.into(),
            lease: Duration::from_secs(60),
            max_deliveries: 5,
            poll_max: Duration::from_millis(40),
            sweep_interval: Duration::from_secs(5),
            busy_timeout_ms: 10_000,
        }
    }
}

/// First idle poll interval; it doubles up to `poll_max` while nothing is due.
const POLL_MIN: Duration = Duration::from_micros(500);

/// A fetching thread bound to one buffer (the shared loop's [`Consumer`], over an SQLite file).
pub type SqliteConsumer = Consumer<Leases>;

impl Consumer<Leases> {
    pub fn new(config: ConsumerConfig, buffer: Arc<PrefetchBuffer>) -> Result<Self> {
        let settings = Settings {
            thread_prefix: "sqlite",
            transport: "SQLite",
            queues: config.queues.clone(),
            owner: config.owner.clone(),
            lease: config.lease,
            poll_min: POLL_MIN,
            poll_max: config.poll_max,
            sweep_interval: config.sweep_interval,
        };
        // Reopen after any error: the file may have been replaced or the connection broken.
        let connect = Arc::new(move || {
            Ok(Leases {
                broker: SqliteBroker::open(&config.path, config.busy_timeout_ms)?,
                _checkpointer: Checkpointer::start(SqliteBroker::open(
                    &config.path,
                    config.busy_timeout_ms,
                )?),
                owner: config.owner.clone(),
                lease_ms: lease_ms(config.lease),
                max_deliveries: config.max_deliveries,
                seen: 0,
            })
        });
        Consumer::from_source(settings, connect, buffer)
    }
}

/// The consumer thread's own connection to the database file.
pub struct Leases {
    broker: SqliteBroker,
    owner: String,
    lease_ms: u64,
    max_deliveries: u32,
    /// The messages bell's sequence read before the last fetch (see [`crate::doorbell`]).
    seen: u32,
    /// Checkpoints the file while this connection is open.
    _checkpointer: Checkpointer,
}

impl LeaseSource for Leases {
    fn fetch(&mut self, queues: &[String], limit: usize) -> Result<Vec<Delivery>> {
        self.seen = self.broker.seen(Bell::Messages);
        self.broker.fetch(queues, limit, &self.owner, self.lease_ms)
    }

    fn extend_leases(&mut self, held: &[String]) -> Result<Vec<String>> {
        self.broker.extend_leases(&self.owner, self.lease_ms, held)
    }

    fn sweep(&mut self) -> Result<()> {
        self.broker.sweep_expired(self.max_deliveries).map(drop)
    }

    fn give_back(&mut self, tags: &[String]) -> Result<()> {
        self.broker.requeue(tags).map(drop)
    }

    fn ack(&mut self, tags: &[String]) -> Result<()> {
        self.broker.ack(tags).map(drop)
    }

    /// Woken by any process that makes messages available in this file (where doorbells exist);
    /// ETA messages falling due are seen at the next fetch (within `poll_max`).
    fn idle(&mut self, _queues: &[String], wait: Duration) -> Result<()> {
        self.broker.wait(Bell::Messages, self.seen, wait);
        Ok(())
    }
}

fn lease_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
