//! The consumer thread shared by the transports: leases batches into a [`PrefetchBuffer`].
//!
//! One loop serves every transport; a transport only says how to open a connection and how to
//! fetch, renew, sweep and give back through it (a [`LeaseSource`]). The thread owns its own
//! connection, opened on the thread. It fetches only as many messages as the buffer has credits
//! (at most [`FETCH_BATCH`]; the buffer's capacity adapts to how long tasks run, and what it
//! holds beyond it after tasks turned long is handed back), polls with exponential backoff when nothing is due (the
//! transport's `poll_min` doubling up to `poll_max`), renews this owner's leases every
//! `lease / 3`, and sweeps expired leases of any owner every `sweep_interval`.
//!
//! It renews only the leases of tags it fetched itself. After a broker stall, a fetch whose reply
//! never arrived (the client gave up; the broker ran it later) leaves messages leased to this
//! owner that nobody will run: renewing the whole owner set would keep them stranded for as long
//! as the worker lives. The broker's answer to a renewal lists the owner's tags, so such orphans
//! are handed back (count undone) at the next renewal, and tags gone from the broker (acked,
//! swept) are forgotten. Fetch and renewal run on this one thread, so a tag is always recorded
//! before the next renewal can see it. With several
//! queues, each fetch starts at the next queue in turn (transports take one message from each
//! queue in turn within a priority), so consuming is fair between queues. Errors are
//! recorded (see `last_error`), the connection is dropped and reopened with backoff (10 ms
//! doubling to 1 s), so consuming resumes within about a second of the broker coming back; the
//! thread only ends when asked to, or when the broker's storage was replaced (`Error::Replaced`,
//! kept as `last_error`). It never takes the GIL and never starts on its own: call
//! `start` after any fork.
//!
//! It also sends the acks the executor hands it (`ack_later`), before its next fetch: the
//! executor goes on with the next task instead of waiting a round trip per batch. Acks that fail
//! are kept and sent again after reconnecting; those still queued when the thread stops are
//! sent before it ends. `settle_acks` waits until everything queued so far is acked (before
//! something that must not race them, e.g. a task that may be killed at its hard time limit).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::prefetch::{Delivery, PrefetchBuffer};

/// Most messages leased per fetch.
pub const FETCH_BATCH: usize = 256;

const ERROR_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest uninterrupted wait, so `stop()` returns promptly.
const TICK: Duration = Duration::from_millis(20);
/// Shortest lease accepted.
const LEASE_MIN: Duration = Duration::from_millis(30);

/// One open connection of the consumer thread, bound to its owner and lease settings.
///
/// Made on the consumer thread by the consumer's `connect` function and dropped after any
/// error (the next step opens a new one).
pub trait LeaseSource: Send + 'static {
    /// Leases up to `limit` messages of `queues` to this owner.
    fn fetch(&mut self, queues: &[String], limit: usize) -> Result<Vec<Delivery>>;
    /// Renews the leases of `held` (tags this owner fetched) and returns every tag the broker
    /// has leased to this owner.
    fn extend_leases(&mut self, held: &[String]) -> Result<Vec<String>>;
    /// Returns expired leases of any owner to their queues (dead-lettering the over-delivered).
    fn sweep(&mut self) -> Result<()>;
    /// Returns leased messages that were never handed out, unchanged and not counted.
    fn give_back(&mut self, tags: &[String]) -> Result<()>;
    /// Acknowledges finished messages (their leases and in-flight records go).
    fn ack(&mut self, tags: &[String]) -> Result<()>;
    /// Acks `acks` (possibly none), then, with `wait` (the last fetch found nothing), waits up to
    /// it for a message ([`idle`](Self::idle)), then leases up to `limit` messages: a transport
    /// that can do all in one round trip does.
    fn ack_then_fetch(
        &mut self,
        acks: &[String],
        queues: &[String],
        limit: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<Delivery>> {
        if !acks.is_empty() {
            self.ack(acks)?;
        }
        if let Some(wait) = wait {
            self.idle(queues, wait)?;
        }
        self.fetch(queues, limit)
    }
    /// Waits up to `wait` before a fetch, the last one having found nothing; a transport that can
    /// be woken by a new message returns early. `wait` is at most the transport's `poll_max`.
    fn idle(&mut self, _queues: &[String], wait: Duration) -> Result<()> {
        std::thread::sleep(wait);
        Ok(())
    }
}

/// Opens a [`LeaseSource`]; called on the consumer thread, again after every error.
pub(crate) type Connect<S> = Arc<dyn Fn() -> Result<S> + Send + Sync>;

/// What differs between transports, besides the [`LeaseSource`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Names the thread (`rqueue-<thread_prefix>-<owner>`).
    pub thread_prefix: &'static str,
    /// Names the transport in errors ("Redis", "SQLite").
    pub transport: &'static str,
    pub queues: Vec<String>,
    pub owner: String,
    pub lease: Duration,
    /// First idle poll interval after a non-empty fetch.
    pub poll_min: Duration,
    /// Longest idle poll interval (never below `poll_min`).
    pub poll_max: Duration,
    pub sweep_interval: Duration,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    queues: Mutex<Vec<String>>,
    last_error: Mutex<Option<String>>,
    /// Tags fetched by this consumer and, at the last renewal, still leased to its owner. Kept
    /// here, not on the thread, so that a restarted thread still renews what the worker runs.
    held: Mutex<HashSet<String>>,
    acks: Mutex<AckQueue>,
    /// Signalled when queued acks were sent (or given up at the end): `settle_acks` waits on it.
    acks_sent: Condvar,
}

/// Acks handed to the thread and not sent yet, and how many were ever queued and sent (a
/// `settle_acks` caller waits for `sent` to reach what `queued` was when it asked).
#[derive(Debug, Default)]
struct AckQueue {
    tags: Vec<String>,
    queued: u64,
    sent: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fetching thread bound to one buffer, generic over the transport: each transport names its
/// own (`PgConsumer`, `RedisConsumer`, `SqliteConsumer`) and adds its constructor, `new`.
pub struct Consumer<S> {
    settings: Settings,
    connect: Connect<S>,
    buffer: Arc<PrefetchBuffer>,
    shared: Arc<Shared>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl<S> fmt::Debug for Consumer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("settings", &self.settings)
            .field("buffer", &self.buffer)
            .field("shared", &self.shared)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<S: LeaseSource> Consumer<S> {
    /// A consumer of `settings` whose thread opens its connections with `connect` (what a
    /// transport's `new` calls).
    pub(crate) fn from_source(
        settings: Settings,
        connect: Connect<S>,
        buffer: Arc<PrefetchBuffer>,
    ) -> Result<Self> {
        check_owner(&settings.owner)?;
        check_lease(settings.lease)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            queues: Mutex::new(settings.queues.clone()),
            last_error: Mutex::new(None),
            held: Mutex::new(HashSet::new()),
            acks: Mutex::new(AckQueue::default()),
            acks_sent: Condvar::new(),
        });
        Ok(Consumer {
            settings,
            connect,
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
            settings: self.settings.clone(),
            connect: Arc::clone(&self.connect),
            buffer: Arc::clone(&self.buffer),
            shared: Arc::clone(&self.shared),
        };
        let h = std::thread::Builder::new()
            .name(format!(
                "rqueue-{}-{}",
                self.settings.thread_prefix, self.settings.owner
            ))
            .spawn(move || worker.run())
            .map_err(|e| {
                Error::Broker(format!(
                    "cannot start the {} consumer thread: {e}",
                    self.settings.transport
                ))
            })?;
        *handle = Some(h);
        Ok(())
    }

    /// Stops fetching, joins the thread, closes the buffer and returns the deliveries never
    /// taken. They are still leased: the caller returns them with `requeue`.
    pub fn stop(&self) -> Vec<Delivery> {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = lock(&self.handle).take() {
            if h.join().is_err() {
                *lock(&self.shared.last_error) = Some("consumer thread panicked".into());
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

    /// Hands `tags` to the thread to ack before its next fetch; returns at once.
    pub fn ack_later(&self, tags: Vec<String>) {
        if tags.is_empty() {
            return;
        }
        let mut q = lock(&self.shared.acks);
        q.queued += tags.len() as u64;
        q.tags.extend(tags);
        drop(q);
        self.buffer.wake_fetcher();
    }

    /// Waits until every ack queued so far was sent: true, or false after `timeout` (the broker
    /// is away) or when the thread is not running (they are sent when it runs again, or lost
    /// with the process, and then delivered again).
    pub fn settle_acks(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = lock(&self.shared.acks);
        let target = q.queued;
        while q.sent < target {
            let now = Instant::now();
            if now >= deadline || !self.running() {
                return false;
            }
            q = self
                .shared
                .acks_sent
                .wait_timeout(q, (deadline - now).min(TICK))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

impl<S> Drop for Consumer<S> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = lock(&self.handle).take() {
            let _ = h.join();
        }
    }
}

/// Refuses an empty owner id: leases are renewed and requeued by owner.
fn check_owner(owner: &str) -> Result<()> {
    if owner.is_empty() {
        return Err(Error::Config("consumer owner id must not be empty".into()));
    }
    Ok(())
}

fn check_lease(lease: Duration) -> Result<()> {
    if lease < LEASE_MIN {
        return Err(Error::Config(format!(
            "lease of {lease:?} is too short; use at least 30 ms"
        )));
    }
    Ok(())
}

struct Worker<S> {
    settings: Settings,
    connect: Connect<S>,
    buffer: Arc<PrefetchBuffer>,
    shared: Arc<Shared>,
}

/// When the periodic steps are next due, whether and how long the next fetch waits for a message
/// first, and how far the queue order is rotated for the next fetch.
struct Timers {
    /// Whether the last fetch found nothing: the next one waits for a message first, up to `poll`.
    idle: bool,
    poll: Duration,
    rotation: usize,
    extend_every: Duration,
    next_extend: Instant,
    next_sweep: Instant,
}

impl Timers {
    /// After the broker stalled this thread (a step failed, or took a renewal interval or more, or
    /// the connection had to be reopened),
    /// it stalled the other workers too, and their leases may have lapsed meanwhile: sweep only
    /// after every live worker has had a renewal interval to renew (each renews first, being
    /// overdue), so no sweep takes messages from workers that are running them.
    fn after_stall(&mut self) {
        self.next_sweep = self.next_sweep.max(Instant::now() + self.extend_every * 2);
    }
}

impl<S: LeaseSource> Worker<S> {
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
        let mut source: Option<S> = None;
        let mut error_backoff = ERROR_BACKOFF_MIN;
        let extend_every = self.settings.lease / 3;
        let mut timers = Timers {
            idle: false,
            poll: self.settings.poll_min,
            rotation: 0,
            extend_every,
            next_extend: Instant::now() + extend_every,
            next_sweep: Instant::now(),
        };
        // Whether the connection was lost since the last successful step.
        let mut lost = false;
        while !self.stopping() {
            let s = match source.as_mut() {
                Some(s) => s,
                None => match (self.connect)() {
                    Ok(s) => {
                        if lost {
                            // Back after an outage (a frozen or restarted broker): the others
                            // may be reconnecting too, their leases lapsed meanwhile.
                            timers.after_stall();
                        }
                        source.insert(s)
                    }
                    Err(e) => {
                        lost = true;
                        self.failed(e, &mut error_backoff);
                        continue;
                    }
                },
            };
            let began = Instant::now();
            let outcome = self.step(s, &mut timers);
            if outcome.is_err() || began.elapsed() >= extend_every {
                timers.after_stall();
            }
            match outcome {
                Ok(()) => {
                    error_backoff = ERROR_BACKOFF_MIN;
                    lost = false;
                }
                Err(e @ Error::Replaced(_)) => {
                    // Reopening would consume another store than the one this worker's
                    // deliveries and acks belong to: stop, and let the process be restarted.
                    *lock(&self.shared.last_error) = Some(e.to_string());
                    return;
                }
                Err(e) => {
                    // Drop the connection and open a new one; each transport's `connect` says
                    // why (a restarted server, a replaced file, a broken connection).
                    source = None;
                    lost = true;
                    self.failed(e, &mut error_backoff);
                }
            }
        }
        self.last_acks(source);
    }

    /// Stopping: one more try at the acks still queued (the executor's last batch), on the open
    /// connection or a new one. Those that still fail are delivered again after their lease.
    fn last_acks(&self, source: Option<S>) {
        if lock(&self.shared.acks).tags.is_empty() {
            return;
        }
        let outcome = match source {
            Some(mut s) => self.send_acks(&mut s),
            None => (self.connect)().and_then(|mut s| self.send_acks(&mut s)),
        };
        if let Err(e) = outcome {
            *lock(&self.shared.last_error) = Some(format!("acks not sent at shutdown: {e}"));
        }
        self.shared.acks_sent.notify_all();
    }

    /// Sends the acks handed over by the executor (`Consumer::ack_later`), alone.
    fn send_acks(&self, s: &mut S) -> Result<()> {
        self.with_acks(
            s,
            |s, tags| if tags.is_empty() { Ok(()) } else { s.ack(tags) },
        )
    }

    /// Runs `op` with the acks handed over so far: they count as sent when it succeeds, and stay
    /// queued, ahead of newer ones, when it fails (acking twice does no harm).
    fn with_acks<T>(
        &self,
        s: &mut S,
        op: impl FnOnce(&mut S, &[String]) -> Result<T>,
    ) -> Result<T> {
        let tags = std::mem::take(&mut lock(&self.shared.acks).tags);
        let outcome = op(s, &tags);
        if tags.is_empty() {
            return outcome;
        }
        if outcome.is_err() {
            let mut q = lock(&self.shared.acks);
            let newer = std::mem::replace(&mut q.tags, tags);
            q.tags.extend(newer);
            return outcome;
        }
        let mut held = lock(&self.shared.held);
        for t in &tags {
            held.remove(t);
        }
        drop(held);
        lock(&self.shared.acks).sent += tags.len() as u64;
        self.shared.acks_sent.notify_all();
        outcome
    }

    /// Records `e` for `last_error` and waits out the backoff, doubling it for next time.
    fn failed(&self, e: Error, backoff: &mut Duration) {
        *lock(&self.shared.last_error) = Some(e.to_string());
        self.nap(*backoff);
        *backoff = (*backoff * 2).min(ERROR_BACKOFF_MAX);
    }

    /// Renews the leases this thread fetched; hands back orphans (see the module docs).
    fn renew(&self, s: &mut S) -> Result<()> {
        let tags: Vec<String> = lock(&self.shared.held).iter().cloned().collect();
        let owned: HashSet<String> = s.extend_leases(&tags)?.into_iter().collect();
        let mut held = lock(&self.shared.held);
        held.retain(|t| owned.contains(t));
        let orphans: Vec<String> = owned.into_iter().filter(|t| !held.contains(t)).collect();
        drop(held);
        if !orphans.is_empty() {
            s.give_back(&orphans)?;
        }
        Ok(())
    }

    fn step(&self, s: &mut S, t: &mut Timers) -> Result<()> {
        let now = Instant::now();
        if now >= t.next_extend {
            self.renew(s)?;
            t.next_extend = now + t.extend_every;
        }
        if now >= t.next_sweep {
            s.sweep()?;
            t.next_sweep = now + self.settings.sweep_interval;
        }
        let excess = self.buffer.take_excess();
        if !excess.is_empty() {
            // Tasks turned long: what was prefetched for short ones goes back for other workers.
            // Forgotten first: should the hand-back fail, the next renewal finds them orphans.
            let tags: Vec<String> = excess.into_iter().map(|d| d.tag).collect();
            let mut held = lock(&self.shared.held);
            for t in &tags {
                held.remove(t);
            }
            drop(held);
            s.give_back(&tags)?;
        }
        let credits = self.buffer.wait_for_credit(TICK);
        if credits == 0 {
            self.send_acks(s)?; // woken for them, or nothing to fetch for: they go alone
            if self.buffer.is_closed() {
                // Nothing will ever fit again; idle (renewing leases) until stopped.
                self.nap(TICK);
            }
            return Ok(());
        }
        let mut queues = lock(&self.shared.queues).clone();
        if queues.len() > 1 {
            // Each fetch starts at the next queue: with small fetches (a prefetch of one) the
            // first queue listed would otherwise always win within a priority.
            t.rotation = (t.rotation + 1) % queues.len();
            queues.rotate_left(t.rotation);
        }
        let limit = credits.min(FETCH_BATCH);
        // After a fetch that found nothing, the next one waits for a message first.
        let wait = t.idle.then(|| t.poll.min(TICK));
        let batch = self.with_acks(s, |s, acks| s.ack_then_fetch(acks, &queues, limit, wait))?;
        if batch.is_empty() {
            if t.idle {
                let ceiling = self.settings.poll_max.max(self.settings.poll_min);
                t.poll = (t.poll * 2).min(ceiling);
            }
            t.idle = true;
            return Ok(());
        }
        t.idle = false;
        t.poll = self.settings.poll_min;
        lock(&self.shared.held).extend(batch.iter().map(|d| d.tag.clone()));
        let rejected = self.buffer.put_many(batch);
        if !rejected.is_empty() {
            // The buffer was closed under us: give these back now rather than at lease expiry.
            let tags: Vec<String> = rejected.into_iter().map(|d| d.tag).collect();
            s.give_back(&tags)?;
        }
        Ok(())
    }
}
