//! The consumer thread of the Redis transport: leases batches into a [`PrefetchBuffer`].
//!
//! The loop is the shared one of [`consumer`](super::consumer); this module only says how it
//! talks to Redis. The thread owns its own connection. It fetches only as many messages as the
//! buffer has credits (one Lua script call per batch), polls with exponential backoff when the
//! queues are empty (0.1 ms doubling up to `poll_max`), renews this owner's leases every
//! `lease / 3`, and sweeps expired leases of any owner (older than `lease`, the visibility
//! timeout) every `sweep_interval`. Connection errors are recorded and retried with backoff
//! (10 ms doubling to 1 s), so consuming resumes within about a second of Redis coming back; the
//! thread only ends when asked to. It never takes the GIL and never starts on its own: call
//! [`RedisConsumer::start`] after any fork.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::prefetch::{Delivery, PrefetchBuffer};
use crate::transport::consumer::{Consumer, LeaseSource, Settings};
use crate::transport::redis::{RedisBroker, RedisConfig};

pub use crate::transport::consumer::FETCH_BATCH;

/// Settings of a [`RedisConsumer`].
#[derive(Debug, Clone)]
pub struct RedisConsumerConfig {
    pub redis: RedisConfig,
    pub queues: Vec<String>,
    pub owner: String,
    pub lease: Duration,
    pub max_deliveries: u32,
    /// Longest idle poll interval; keep it well under 50 ms so new work is seen quickly.
    pub poll_max: Duration,
    pub sweep_interval: Duration,
}

impl RedisConsumerConfig {
    pub fn new(redis: RedisConfig, queues: Vec<String>, owner: impl Into<String>) -> Self {
        RedisConsumerConfig {
            redis,
            queues,
            owner: owner.into(),
            lease: Duration::from_secs(60),
            max_deliveries: 5,
            poll_max: Duration::from_millis(20),
            sweep_interval: Duration::from_secs(5),
        }
    }
}

/// First idle poll interval; it doubles up to `poll_max` while the queues stay empty.
const POLL_MIN: Duration = Duration::from_micros(100);

/// A fetching thread bound to one buffer (the shared loop's [`Consumer`], over Redis).
pub type RedisConsumer = Consumer<Leases>;

impl Consumer<Leases> {
    pub fn new(config: RedisConsumerConfig, buffer: Arc<PrefetchBuffer>) -> Result<Self> {
        // Validate the URL now, so a typo is an error here and not a retry loop.
        RedisBroker::new_lazy(config.redis.clone())?;
        let settings = Settings {
            thread_prefix: "redis",
            transport: "Redis",
            queues: config.queues.clone(),
            owner: config.owner.clone(),
            lease: config.lease,
            poll_min: POLL_MIN,
            poll_max: config.poll_max,
            sweep_interval: config.sweep_interval,
        };
        // Reconnect after any error: the server may have restarted (scripts are reloaded on
        // NOSCRIPT).
        let connect = Arc::new(move || {
            Ok(Leases {
                broker: RedisBroker::connect(config.redis.clone())?,
                owner: config.owner.clone(),
                lease: config.lease,
                max_deliveries: config.max_deliveries,
            })
        });
        Consumer::from_source(settings, connect, buffer)
    }
}

/// The consumer thread's own connection to Redis.
pub struct Leases {
    broker: RedisBroker,
    owner: String,
    /// Also the visibility timeout of the sweep.
    lease: Duration,
    max_deliveries: u32,
}

impl LeaseSource for Leases {
    fn fetch(&mut self, queues: &[String], limit: usize) -> Result<Vec<Delivery>> {
        self.broker.fetch(queues, limit, &self.owner)
    }

    fn extend_leases(&mut self, held: &[String]) -> Result<Vec<String>> {
        self.broker.extend_leases(&self.owner, held)
    }

    fn sweep(&mut self) -> Result<()> {
        self.broker
            .sweep_expired(self.lease, self.max_deliveries)
            .map(drop)
    }

    fn give_back(&mut self, tags: &[String]) -> Result<()> {
        self.broker.requeue(tags).map(drop)
    }

    fn ack(&mut self, tags: &[String]) -> Result<()> {
        self.broker.ack(tags).map(drop)
    }

    fn ack_then_fetch(
        &mut self,
        acks: &[String],
        queues: &[String],
        limit: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<Delivery>> {
        // Woken by a message in the first queue's main list; other queues and priority buckets,
        // and ETA messages falling due, are seen by the fetch after the wait (within `poll_max`).
        self.broker
            .ack_then_fetch(acks, queues, limit, &self.owner, wait)
    }
}
