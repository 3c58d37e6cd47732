//! The consumer thread of the Redis transport: leases batches into a [`PrefetchBuffer`].
//!
//! The thread owns its own connection. It fetches only as many messages as the buffer has
//! credits (one Lua script call per batch), polls with exponential backoff when the queues are
//! empty (0.1 ms doubling up to `poll_max`), renews this owner's leases every `lease / 3`, and
//! sweeps expired leases of any owner every `sweep_interval`. Connection errors are recorded and
//! retried with backoff (10 ms doubling to 1 s), so consuming resumes within about a second of
//! Redis coming back; the thread only ends when asked to. It never takes the GIL and never
//! starts on its own: call [`RedisConsumer::start`] after any fork.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::prefetch::{Delivery, PrefetchBuffer};
use crate::transport::redis::{RedisBroker, RedisConfig};

/// Most messages leased per fetch.
pub const FETCH_BATCH: usize = 256;

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

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    queues: Mutex<Vec<String>>,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fetching thread bound to one buffer.
#[derive(Debug)]
pub struct RedisConsumer {
    config: RedisConsumerConfig,
    buffer: Arc<PrefetchBuffer>,
    shared: Arc<Shared>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl RedisConsumer {
    pub fn new(config: RedisConsumerConfig, buffer: Arc<PrefetchBuffer>) -> Result<Self> {
        if config.owner.is_empty() {
            return Err(Error::Config("consumer owner id must not be empty".into()));
        }
        // Validate the URL now, so a typo is an error here and not a retry loop.
        RedisBroker::new_lazy(config.redis.clone())?;
        if config.lease < Duration::from_millis(30) {
            return Err(Error::Config(format!(
                "lease of {:?} is too short; use at least 30 ms",
                config.lease
            )));
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            queues: Mutex::new(config.queues.clone()),
            last_error: Mutex::new(None),
        });
        Ok(RedisConsumer {
            config,
            buffer,
            shared,
            handle: Mutex::new(None),
        })
    }

    /// Starts the thread; a second call while running does nothing.
    pub fn start(&self) -> Result<()> {
        let mut handle = lock(&self.handle);
        if handle.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        self.shared.stop.store(false, Ordering::SeqCst);
        let worker = Worker {
            config: self.config.clone(),
            buffer: Arc::clone(&self.buffer),
            shared: Arc::clone(&self.shared),
        };
        let h = std::thread::Builder::new()
            .name(format!("rqueue-redis-{}", self.config.owner))
            .spawn(move || worker.run())
            .map_err(|e| Error::Broker(format!("cannot start the Redis consumer thread: {e}")))?;
        *handle = Some(h);
        Ok(())
    }

    /// Stops fetching, joins the thread, closes the buffer and returns the deliveries never
    /// taken. They are still leased: the caller returns them with `requeue`.
    pub fn stop(&self) -> Vec<Delivery> {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = lock(&self.handle).take() {
            if h.join().is_err() {
                self.set_error("consumer thread panicked".into());
            }
        }
        self.buffer.close()
    }

    pub fn running(&self) -> bool {
        lock(&self.handle)
            .as_ref()
            .is_some_and(|h| !h.is_finished())
    }

    /// Replaces the queues consumed from, effective at the next fetch.
    pub fn set_queues(&self, queues: Vec<String>) {
        *lock(&self.shared.queues) = queues;
    }

    /// The last error the thread met (it keeps retrying), if any.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    fn set_error(&self, e: String) {
        *lock(&self.shared.last_error) = Some(e);
    }
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = lock(&self.handle).take() {
            let _ = h.join();
        }
    }
}

struct Worker {
    config: RedisConsumerConfig,
    buffer: Arc<PrefetchBuffer>,
    shared: Arc<Shared>,
}

const POLL_MIN: Duration = Duration::from_micros(100);
const ERROR_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest uninterrupted wait, so `stop()` returns promptly.
const TICK: Duration = Duration::from_millis(20);

impl Worker {
    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    /// Sleeps up to `d` in short ticks, returning early when asked to stop.
    fn nap(&self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= end || self.stopping() {
                return;
            }
            std::thread::sleep((end - now).min(TICK));
        }
    }

    fn run(self) {
        let mut broker: Option<RedisBroker> = None;
        let mut error_backoff = ERROR_BACKOFF_MIN;
        let mut poll = POLL_MIN;
        let extend_every = self.config.lease / 3;
        let mut next_extend = Instant::now() + extend_every;
        let mut next_sweep = Instant::now();
        while !self.stopping() {
            let b = match broker.as_ref() {
                Some(b) => b,
                None => match RedisBroker::connect(self.config.redis.clone()) {
                    Ok(b) => broker.insert(b),
                    Err(e) => {
                        self.record(e);
                        self.nap(error_backoff);
                        error_backoff = (error_backoff * 2).min(ERROR_BACKOFF_MAX);
                        continue;
                    }
                },
            };
            match self.step(
                b,
                &mut poll,
                &mut next_extend,
                &mut next_sweep,
                extend_every,
            ) {
                Ok(()) => error_backoff = ERROR_BACKOFF_MIN,
                Err(e) => {
                    self.record(e);
                    // Reconnect: the server may have restarted (scripts are reloaded on NOSCRIPT).
                    broker = None;
                    self.nap(error_backoff);
                    error_backoff = (error_backoff * 2).min(ERROR_BACKOFF_MAX);
                }
            }
        }
    }

    fn record(&self, e: Error) {
        *lock(&self.shared.last_error) = Some(e.to_string());
    }

    fn step(
        &self,
        b: &RedisBroker,
        poll: &mut Duration,
        next_extend: &mut Instant,
        next_sweep: &mut Instant,
        extend_every: Duration,
    ) -> Result<()> {
        let now = Instant::now();
        if now >= *next_extend {
            b.extend_leases(&self.config.owner)?;
            *next_extend = now + extend_every;
        }
        if now >= *next_sweep {
            b.sweep_expired(self.config.lease, self.config.max_deliveries)?;
            *next_sweep = now + self.config.sweep_interval;
        }
        let credits = self.buffer.wait_for_credit(TICK);
        if credits == 0 {
            if self.buffer.is_closed() {
                // Nothing will ever fit again; idle (renewing leases) until stopped.
                self.nap(TICK);
            }
            return Ok(());
        }
        let queues = lock(&self.shared.queues).clone();
        let batch = b.fetch(&queues, credits.min(FETCH_BATCH), &self.config.owner)?;
        if batch.is_empty() {
            self.nap(*poll);
            *poll = (*poll * 2).min(self.config.poll_max.max(POLL_MIN));
            return Ok(());
        }
        *poll = POLL_MIN;
        let rejected = self.buffer.put_many(batch);
        if !rejected.is_empty() {
            // The buffer was closed under us: give these back now rather than at lease expiry.
            let tags: Vec<&str> = rejected.iter().map(|d| d.tag.as_str()).collect();
            b.requeue(&tags)?;
        }
        Ok(())
    }
}
