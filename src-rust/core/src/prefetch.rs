//! The prefetch buffer between a transport thread (producer) and the executor (consumer).
//!
//! `credits = capacity - buffered - outstanding`, where outstanding deliveries were taken with
//! [`PrefetchBuffer::get`] but not yet reported [`PrefetchBuffer::done`]. The transport fetches
//! only as many messages as there are credits, so a worker never holds more leases than it can
//! start soon. Closing wakes every waiter and hands back the deliveries never taken, so they can
//! be returned to the broker at once instead of waiting for their lease to expire.
//!
//! The capacity adapts to the tasks: the configured one (Celery's prefetch) is a floor, and while
//! tasks are short the buffer holds about [`ADAPTIVE_WORK`] of them (up to [`ADAPTIVE_CEILING`]),
//! so no-op tasks come in batches large enough to amortize the broker's round trips and
//! bookkeeping. When tasks turn long the capacity falls back at once and the transport hands the
//! excess back to the queue ([`PrefetchBuffer::take_excess`]), so other workers can take it: once
//! a task has run [`RUNNING_LONG`], not only once it ends, so a burst of long tasks arriving after
//! short ones is not held by one process while its siblings idle.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How much work (at the recent pace of taking deliveries) the buffer may hold beyond its
/// configured capacity: little enough that reserving it is no unfairness to other workers.
pub const ADAPTIVE_WORK: Duration = Duration::from_millis(5);
/// The most deliveries an adaptive buffer holds (fetched in halves). It bounds how long one
/// fetch script holds Redis (64 messages: ~0.4 ms). Measured on Redis with no-op tasks, since the
/// executor runs them natively (the fast lane): 64 drained 62-66k/s, 128 drained 76-78k/s, 256
/// drained 79k/s (`-P solo`); prefork's children 61-64k/s, 66-68k/s, 66-68k/s. Before the lane a
/// larger ceiling was slower (the executor's acks waited behind the longer scripts).
pub const ADAPTIVE_CEILING: usize = 128;
/// How long a task may have run since the last take before the pace counts as slow while it
/// still runs: well past [`ADAPTIVE_WORK`], so a short pause of the taker hands nothing back.
pub const RUNNING_LONG: Duration = Duration::from_millis(50);
/// Weight of the newest interval in the running mean of intervals between takes. One that is
/// longer than [`ADAPTIVE_WORK`] (a task that ran long) replaces the mean at once, and the
/// capacity falls back to the configured one.
const GAP_WEIGHT: f64 = 0.1;

/// One fetched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The broker's lease id: the SQLite row id as text, or kombu's `delivery_tag` on Redis.
    pub tag: String,
    pub queue: String,
    /// The raw envelope.
    pub payload: Vec<u8>,
    /// How many times the message was delivered, this one included.
    pub deliveries: u32,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Delivery>,
    outstanding: usize,
    closed: bool,
    /// Threads in `wait_for_credit` (the transport's): `done` wakes one only when it waits and a
    /// fetch became worth it. A wake-up is a system call and often a context switch; one per
    /// finished task cost the executor more than running a no-op task.
    credit_waiters: usize,
    /// The capacity now: at least the configured one (see the module docs).
    effective: usize,
    /// When a delivery was last taken, and the running mean of the intervals between takes
    /// that found a delivery waiting (ns): the time one delivery takes to run.
    last_take: Option<Instant>,
    mean_gap_ns: f64,
    /// Set by `wake_fetcher`: the next (or current) `wait_for_credit` returns at once.
    woken: bool,
    /// Time the taker spent since its last take on something other than running tasks
    /// ([`PrefetchBuffer::discount`]), left out of the next interval.
    discount: Duration,
}

/// A bounded, thread-safe FIFO with credit accounting.
#[derive(Debug)]
pub struct PrefetchBuffer {
    capacity: usize,
    state: Mutex<State>,
    /// Signalled when an item arrives or the buffer closes (consumers wait on it).
    readable: Condvar,
    /// Signalled when credits grow or the buffer closes (the producer waits on it).
    credit: Condvar,
}

impl PrefetchBuffer {
    /// A buffer of `capacity` credits (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        PrefetchBuffer {
            capacity,
            state: Mutex::new(State {
                effective: capacity,
                ..State::default()
            }),
            readable: Condvar::new(),
            credit: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn credits_of(&self, s: &State) -> usize {
        s.effective.saturating_sub(s.items.len() + s.outstanding)
    }

    /// Whether a fetch is worth it: half the capacity is free (so fetches come in batches, not
    /// one message per freed credit), or the buffer ran dry with any credit (so the executor
    /// never idles while work waits).
    fn fetch_worth_it(&self, s: &State) -> bool {
        let c = self.credits_of(s);
        c >= (s.effective / 2).max(1) || (c > 0 && s.items.is_empty())
    }

    /// The configured capacity (the floor of the adaptive one).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The capacity now (see the module docs).
    pub fn effective_capacity(&self) -> usize {
        self.lock().effective
    }

    /// Takes the oldest delivery, if any, and updates the pace of taking (only from takes that
    /// found one waiting: a wait for the broker says nothing about how long tasks run).
    fn take(&self, s: &mut State, waited: bool) -> Option<Delivery> {
        let d = s.items.pop_front()?;
        s.outstanding += 1;
        let now = Instant::now();
        let discount = std::mem::take(&mut s.discount);
        if let (false, Some(prev)) = (waited, s.last_take) {
            let gap = now.duration_since(prev).saturating_sub(discount).as_nanos() as f64;
            s.mean_gap_ns = if gap >= ADAPTIVE_WORK.as_nanos() as f64 || s.mean_gap_ns == 0.0 {
                gap
            } else {
                s.mean_gap_ns * (1.0 - GAP_WEIGHT) + gap * GAP_WEIGHT
            };
            let fits = ADAPTIVE_WORK.as_nanos() as f64 / s.mean_gap_ns.max(1.0);
            let ceiling = ADAPTIVE_CEILING.max(self.capacity);
            s.effective = (fits as usize).clamp(self.capacity, ceiling);
        }
        s.last_take = Some(now);
        Some(d)
    }

    /// Leaves `waited` out of the pace of taking: the taker spent it since its last take waiting on
    /// the broker (writing results and acks), not running a task. A write that waits behind a long
    /// fetch would otherwise look like a long task, and the excess prefetched for short ones would
    /// go back to the queue only to be fetched again.
    pub fn discount(&self, waited: Duration) {
        self.lock().discount += waited;
    }

    /// The newest buffered deliveries beyond the configured capacity once tasks run long (the
    /// capacity fell back to it), taken out for the transport to hand back to the broker. While
    /// tasks stay short nothing is taken: the capacity drifting with their pace is no reason to
    /// send messages back and forth.
    pub fn take_excess(&self) -> Vec<Delivery> {
        let mut s = self.lock();
        self.notice_long_run(&mut s);
        let keep = s.effective.saturating_sub(s.outstanding);
        if s.effective > self.capacity || s.items.len() <= keep {
            return Vec::new();
        }
        s.items.split_off(keep).into()
    }

    /// A task running for [`RUNNING_LONG`] since the last take (its writes discounted) makes the
    /// pace that slow at once, and the capacity falls back to the configured one.
    fn notice_long_run(&self, s: &mut State) {
        if s.outstanding == 0 || s.items.is_empty() || s.effective == self.capacity {
            return;
        }
        let Some(prev) = s.last_take else { return };
        let running = prev.elapsed().saturating_sub(s.discount);
        if running >= RUNNING_LONG {
            s.mean_gap_ns = running.as_nanos() as f64;
            s.effective = self.capacity;
        }
    }

    /// How many more messages the transport may fetch now (0 once closed).
    pub fn credits(&self) -> usize {
        let s = self.lock();
        if s.closed {
            0
        } else {
            self.credits_of(&s)
        }
    }

    /// Deliveries buffered and not yet taken.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Taken deliveries not yet reported done.
    pub fn outstanding(&self) -> usize {
        self.lock().outstanding
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Adds a delivery; gives it back when there is no credit or the buffer is closed.
    pub fn put(&self, delivery: Delivery) -> std::result::Result<(), Delivery> {
        let mut s = self.lock();
        if s.closed || self.credits_of(&s) == 0 {
            return Err(delivery);
        }
        s.items.push_back(delivery);
        drop(s);
        self.readable.notify_one();
        Ok(())
    }

    /// Adds a batch; returns the deliveries that did not fit (all of them once closed).
    pub fn put_many(&self, deliveries: Vec<Delivery>) -> Vec<Delivery> {
        let mut s = self.lock();
        if s.closed {
            return deliveries;
        }
        let room = self.credits_of(&s);
        let mut iter = deliveries.into_iter();
        let mut added = 0;
        for d in iter.by_ref().take(room) {
            s.items.push_back(d);
            added += 1;
        }
        drop(s);
        if added == 1 {
            self.readable.notify_one();
        } else if added > 1 {
            self.readable.notify_all();
        }
        iter.collect()
    }

    /// Takes the oldest delivery, waiting up to `timeout` (`None` = until one arrives or the
    /// buffer closes). Returns `None` on timeout or once closed and empty.
    pub fn get(&self, timeout: Option<Duration>) -> Option<Delivery> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut s = self.lock();
        let mut waited = false;
        loop {
            if let Some(d) = self.take(&mut s, waited) {
                return Some(d);
            }
            waited = true;
            if s.closed {
                return None;
            }
            s = match (timeout, deadline) {
                (None, _) | (Some(_), None) => {
                    self.readable.wait(s).unwrap_or_else(|p| p.into_inner())
                }
                (Some(_), Some(deadline)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    self.readable
                        .wait_timeout(s, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Takes a delivery if one is buffered, without waiting.
    pub fn try_get(&self) -> Option<Delivery> {
        let mut s = self.lock();
        self.take(&mut s, false)
    }

    /// Marks `count` taken deliveries finished, giving their credit back.
    pub fn done(&self, count: usize) {
        let mut s = self.lock();
        s.outstanding = s.outstanding.saturating_sub(count);
        let wake = s.credit_waiters > 0 && self.fetch_worth_it(&s);
        drop(s);
        if wake {
            self.credit.notify_all();
        }
    }

    /// Waits until a fetch is worth it (see `fetch_worth_it`) or the buffer closes, up to
    /// `timeout`. Returns the credits available (0 on timeout or when closed).
    pub fn wait_for_credit(&self, timeout: Duration) -> usize {
        let deadline = Instant::now().checked_add(timeout);
        let mut s = self.lock();
        loop {
            if s.closed {
                return 0;
            }
            if std::mem::take(&mut s.woken) {
                return 0;
            }
            if self.fetch_worth_it(&s) {
                return self.credits_of(&s);
            }
            let now = Instant::now();
            let remaining = match deadline {
                Some(d) if now < d => d - now,
                Some(_) => return 0,
                None => Duration::from_secs(3600),
            };
            s.credit_waiters += 1;
            s = self
                .credit
                .wait_timeout(s, remaining)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            s.credit_waiters -= 1;
        }
    }

    /// Makes the producer's `wait_for_credit` return now (with 0), once: it has other work (acks
    /// to send) that should not wait for a credit.
    pub fn wake_fetcher(&self) {
        self.lock().woken = true;
        self.credit.notify_all();
    }

    /// Copies of the deliveries waiting in the buffer, oldest first (for inspection; they stay).
    pub fn snapshot(&self) -> Vec<Delivery> {
        self.lock().items.iter().cloned().collect()
    }

    /// Closes the buffer, wakes every waiter and returns the deliveries never taken.
    /// Later `put`s are refused; `done` still works for deliveries already taken.
    pub fn close(&self) -> Vec<Delivery> {
        let mut s = self.lock();
        s.closed = true;
        let left: Vec<Delivery> = s.items.drain(..).collect();
        drop(s);
        self.readable.notify_all();
        self.credit.notify_all();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    fn d(tag: i64) -> Delivery {
        Delivery {
            tag: tag.to_string(),
            queue: "q".into(),
            payload: vec![tag as u8],
            deliveries: 1,
        }
    }

    #[test]
    fn test_prefetch_credits_accounting() {
        let b = PrefetchBuffer::new(3);
        assert_eq!(b.credits(), 3);
        b.put(d(1)).unwrap();
        b.put(d(2)).unwrap();
        assert_eq!(b.credits(), 1);
        assert_eq!(b.get(Some(Duration::ZERO)).unwrap().tag, "1");
        assert_eq!(b.credits(), 1);
        assert_eq!(b.outstanding(), 1);
        b.done(1);
        assert_eq!(b.credits(), 2);
        b.put(d(3)).unwrap();
        b.put(d(4)).unwrap();
        assert_eq!(b.put(d(5)).unwrap_err().tag, "5");
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn test_prefetch_snapshot_copies_without_taking() {
        let b = PrefetchBuffer::new(3);
        b.put(d(1)).unwrap();
        b.put(d(2)).unwrap();
        assert_eq!(b.snapshot(), vec![d(1), d(2)]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.credits(), 1);
    }

    #[test]
    fn test_prefetch_put_many_returns_overflow() {
        let b = PrefetchBuffer::new(2);
        let rest = b.put_many(vec![d(1), d(2), d(3)]);
        assert_eq!(rest, vec![d(3)]);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn test_prefetch_get_times_out() {
        let b = PrefetchBuffer::new(1);
        let start = Instant::now();
        assert!(b.get(Some(Duration::from_millis(50))).is_none());
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn test_prefetch_get_wakes_on_put_and_close() {
        let b = Arc::new(PrefetchBuffer::new(2));
        let b2 = Arc::clone(&b);
        let t = thread::spawn(move || b2.get(None).map(|x| x.tag));
        thread::sleep(Duration::from_millis(20));
        b.put(d(7)).unwrap();
        assert_eq!(t.join().unwrap().as_deref(), Some("7"));

        let b3 = Arc::clone(&b);
        let t = thread::spawn(move || b3.get(None));
        thread::sleep(Duration::from_millis(20));
        assert!(b.close().is_empty());
        assert!(t.join().unwrap().is_none());
    }

    #[test]
    fn test_prefetch_close_returns_untaken() {
        let b = PrefetchBuffer::new(4);
        b.put_many(vec![d(1), d(2), d(3)]);
        b.get(None);
        let left = b.close();
        assert_eq!(
            left.iter().map(|x| x.tag.as_str()).collect::<Vec<_>>(),
            vec!["2", "3"]
        );
        assert!(b.put(d(9)).is_err());
        assert_eq!(b.credits(), 0);
        assert!(b.get(Some(Duration::from_millis(1))).is_none());
    }

    #[test]
    fn test_prefetch_wait_for_credit() {
        let b = Arc::new(PrefetchBuffer::new(1));
        b.put(d(1)).unwrap();
        assert_eq!(b.wait_for_credit(Duration::from_millis(10)), 0);
        let b2 = Arc::clone(&b);
        let t = thread::spawn(move || b2.wait_for_credit(Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(20));
        b.get(None).unwrap();
        b.done(1);
        assert_eq!(t.join().unwrap(), 1);
        let b3 = Arc::clone(&b);
        b.put(d(2)).unwrap();
        let t = thread::spawn(move || b3.wait_for_credit(Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(20));
        b.close();
        assert_eq!(t.join().unwrap(), 0);
    }

    /// A buffer of capacity 2 after 2,000 short tasks, each taken with more waiting, kept full;
    /// the largest capacity it had, and the next tag to put.
    fn run_short_tasks() -> (PrefetchBuffer, usize, i64) {
        let b = PrefetchBuffer::new(2);
        let mut seen = 0;
        let mut next = 0;
        for _ in 0..2000 {
            while b.put(d(next)).is_ok() {
                next += 1;
            }
            let _ = b.try_get();
            b.done(1);
            seen = seen.max(b.effective_capacity());
        }
        (b, seen, next)
    }

    #[test]
    fn capacity_grows_while_tasks_are_short_and_falls_back_when_one_runs_long() {
        let (b, seen, mut next) = run_short_tasks();
        // takes that found a delivery waiting, microseconds apart: many fit in ADAPTIVE_WORK
        assert!(seen > 2, "the capacity never grew: {seen}");
        assert!(seen <= ADAPTIVE_CEILING);
        while b.put(d(next)).is_ok() {
            next += 1;
        }
        let held = b.len();
        let _ = b.try_get();
        thread::sleep(ADAPTIVE_WORK * 4); // one task that ran long
        let _ = b.try_get();
        assert_eq!(
            b.effective_capacity(),
            2,
            "falls back to the configured capacity at once"
        );
        let excess = b.take_excess();
        // two taken (outstanding) fill the capacity: everything still buffered is excess
        assert_eq!(excess.len(), held - 2);
        assert!(b.is_empty());
        assert!(b.take_excess().is_empty());
    }

    #[test]
    fn a_task_running_long_hands_the_excess_back_before_it_ends() {
        let (b, _, mut next) = run_short_tasks();
        while b.put(d(next)).is_ok() {
            next += 1;
        }
        let held = b.len();
        assert!(held > 2, "the capacity never grew");
        let _ = b.try_get(); // the first long task starts, and runs on
        assert!(
            b.take_excess().is_empty(),
            "nothing goes back while it may be short"
        );
        thread::sleep(RUNNING_LONG + ADAPTIVE_WORK);
        assert!(b.effective_capacity() > 2, "unchanged until looked at");
        let excess = b.take_excess();
        assert_eq!(
            b.effective_capacity(),
            2,
            "falls back while the task still runs"
        );
        // one taken (outstanding) and one waiting fill the capacity: the rest is excess
        assert_eq!(excess.len(), held - 2);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn time_spent_writing_between_takes_is_not_a_long_task() {
        let (b, _, _) = run_short_tasks();
        assert!(b.effective_capacity() > 2, "the capacity never grew");
        let began = Instant::now();
        thread::sleep(ADAPTIVE_WORK * 4); // the taker waits on the broker, not on a task
        b.discount(began.elapsed());
        let _ = b.try_get();
        assert!(
            b.effective_capacity() > 2,
            "a discounted wait made the capacity fall back"
        );
        assert!(b.take_excess().is_empty());
    }
}
