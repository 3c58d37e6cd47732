//! The consumer thread of the PostgreSQL transport: leases batches into a [`PrefetchBuffer`].
//!
//! The loop is the shared one of [`consumer`](super::consumer); this module says how it talks to
//! PostgreSQL. The thread owns its own connection, which `LISTEN`s on the schema's channel, so an
//! idle worker waits for a notification instead of querying: after a fetch found nothing, the next
//! query runs only when a notification for one of its queues arrived, when the earliest waiting
//! ETA message falls due, or after [`FALLBACK_POLL`] at the latest (the bound on anything a
//! notification could not tell, e.g. a LISTEN lost through a session-less pooler). Leases are
//! renewed every `lease / 3` and expired leases of any owner swept every `sweep_interval`.
//! Errors are recorded and retried with backoff (a new connection LISTENs again and fetches at
//! once), so consuming resumes within about a second of the server coming back. It never takes
//! the GIL and never starts on its own: call [`PgConsumer::start`] after any fork.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::prefetch::{Delivery, PrefetchBuffer};
use crate::transport::consumer::{Consumer, LeaseSource, Settings};
use crate::transport::postgres::{PgBroker, PgConfig};

pub use crate::transport::consumer::FETCH_BATCH;

/// Longest time an idle consumer goes without querying, notifications or not.
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// First idle wait after a non-empty fetch (waits return early on a notification).
const POLL_MIN: Duration = Duration::from_micros(500);
/// Longest single idle wait: the shared loop checks for `stop` between waits.
const POLL_MAX: Duration = Duration::from_millis(20);

/// Settings of a [`PgConsumer`].
#[derive(Debug, Clone)]
pub struct PgConsumerConfig {
    pub pg: PgConfig,
    pub queues: Vec<String>,
    pub owner: String,
    pub lease: Duration,
    pub max_deliveries: u32,
    pub sweep_interval: Duration,
}

impl PgConsumerConfig {
    pub fn new(pg: PgConfig, queues: Vec<String>, owner: impl Into<String>) -> Self {
        PgConsumerConfig {
            pg,
            queues,
            owner: owner.into(),
            lease: Duration::from_secs(60),
            max_deliveries: 5,
            sweep_interval: Duration::from_secs(5),
        }
    }
}

/// A fetching thread bound to one buffer (the shared loop's [`Consumer`], over PostgreSQL).
/// Acks handed over with `ack_later` while the thread idles waiting for a notification are
/// sent within its wait slice (20 ms at most).
pub type PgConsumer = Consumer<Leases>;

impl Consumer<Leases> {
    pub fn new(config: PgConsumerConfig, buffer: Arc<PrefetchBuffer>) -> Result<Self> {
        // Validate the URL and schema now, so a typo is an error here and not a retry loop.
        PgBroker::new_lazy(config.pg.clone())?;
        let settings = Settings {
            thread_prefix: "pg",
            transport: "PostgreSQL",
            queues: config.queues.clone(),
            owner: config.owner.clone(),
            lease: config.lease,
            poll_min: POLL_MIN,
            poll_max: POLL_MAX,
            sweep_interval: config.sweep_interval,
        };
        let connect = Arc::new(move || Leases::open(&config));
        Consumer::from_source(settings, connect, buffer)
    }
}

/// The consumer thread's own connection, listening for new messages.
pub struct Leases {
    broker: PgBroker,
    owner: String,
    lease_ms: u64,
    max_deliveries: u32,
    /// True when a query may find something the last one did not (see the module docs).
    dirty: bool,
    /// The queues of the last fetch: new ones are looked at at once.
    last_queues: Vec<String>,
    last_query: Instant,
    /// When the earliest waiting ETA message seen after the last empty fetch falls due.
    next_eta: Option<Instant>,
}

impl Leases {
    fn open(config: &PgConsumerConfig) -> Result<Self> {
        Ok(Leases {
            broker: PgBroker::connect_listening(config.pg.clone())?,
            owner: config.owner.clone(),
            lease_ms: u64::try_from(config.lease.as_millis()).unwrap_or(u64::MAX),
            max_deliveries: config.max_deliveries,
            dirty: true,
            last_queues: Vec::new(),
            last_query: Instant::now(),
            next_eta: None,
        })
    }

    /// Marks `dirty` when a notification names one of `queues` (or every queue): those already
    /// received, or the first within `wait`.
    fn drain(&mut self, queues: &[String], wait: Option<Duration>) -> Result<()> {
        let notes = self.broker.notifications(wait)?;
        self.dirty |= notes.iter().any(|n| wakes(n, queues));
        Ok(())
    }

    /// Whether a fetch should query now.
    fn should_query(&self, queues: &[String]) -> bool {
        self.dirty
            || queues != self.last_queues.as_slice()
            || self.last_query.elapsed() >= FALLBACK_POLL
            || self.next_eta.is_some_and(|due| Instant::now() >= due)
    }
}

fn wakes(payload: &str, queues: &[String]) -> bool {
    payload.is_empty() || queues.iter().any(|q| q == payload)
}

impl LeaseSource for Leases {
    fn fetch(&mut self, queues: &[String], limit: usize) -> Result<Vec<Delivery>> {
        self.drain(queues, None)?;
        if !self.should_query(queues) {
            return Ok(Vec::new());
        }
        // Cleared before the query: a notification arriving while it runs marks it again.
        self.dirty = false;
        self.last_query = Instant::now();
        if queues != self.last_queues.as_slice() {
            self.last_queues = queues.to_vec();
        }
        let batch = self
            .broker
            .fetch(queues, limit, &self.owner, self.lease_ms)?;
        if batch.is_empty() {
            // Nothing due: ask when the next ETA message is, so it is not left to the fallback.
            self.next_eta = self.broker.next_eta_in_ms(queues)?.map(|ms| {
                Instant::now() + Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0))
            });
        } else {
            // A full batch may have left more behind; look again at the next fetch.
            self.dirty = true;
        }
        Ok(batch)
    }

    fn extend_leases(&mut self, held: &[String]) -> Result<Vec<String>> {
        self.broker.extend_leases(&self.owner, self.lease_ms, held)
    }

    fn sweep(&mut self) -> Result<()> {
        let (requeued, _) = self.broker.sweep_expired(self.max_deliveries)?;
        // Swept messages are notified to this connection too; looking at once costs nothing more.
        self.dirty |= requeued > 0;
        Ok(())
    }

    fn ack(&mut self, tags: &[String]) -> Result<()> {
        self.broker.ack(tags).map(drop)
    }

    fn give_back(&mut self, tags: &[String]) -> Result<()> {
        self.broker.requeue(tags).map(drop)
    }

    /// Returns when a notification for one of `queues` arrives, or after `wait`.
    fn idle(&mut self, queues: &[String], wait: Duration) -> Result<()> {
        self.drain(queues, Some(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_notification_wakes_its_queues_only() {
        let queues = vec!["a".to_string(), "b".to_string()];
        assert!(wakes("a", &queues));
        assert!(wakes("", &queues));
        assert!(!wakes("c", &queues));
    }
}
