//! The rate limits of one worker node: a table of token buckets, keyed by task name, in memory
//! shared by the worker's supervisor and every child process it forks (see [`crate::shm`]).
//!
//! Each bucket is a GCRA ("virtual scheduling") cell: one word holds the theoretical arrival
//! time `tat` of the next task, advanced by one emission interval `T = 1 / rate` per task taken,
//! and a task may start when `tat <= now + (burst - 1) * T`. That is exactly a token bucket of
//! `burst` tokens refilled at `rate` per second, but its whole state is one word updated by
//! compare-and-swap: no lock to be left held by a process killed mid-update, and the bound holds
//! across every thread and process that shares the table. Time is the monotonic clock measured
//! from an origin taken when the table is made; forked children inherit that origin and the
//! clock is system-wide, so every process agrees on `now`.
//!
//! Slots are claimed once per task name and never freed (setting no limit keeps the slot, with a
//! zero interval), so lookups are lock-free: a linear probe that stops at the first empty slot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::ratelimit::{default_burst, Clock, MonotonicClock};
use crate::shm::SharedWords;

/// Longest task name a rate limit can be set for, in bytes.
pub const NAME_MAX: usize = 192;
/// Default number of slots: distinct task names that can ever have a limit in one worker.
pub const DEFAULT_SLOTS: usize = 1024;

const NAME_WORDS: usize = NAME_MAX / 8;
/// Table-wide words before the slots: the generation (bumped by every `set`).
const HEADER_WORDS: usize = 8;
const GENERATION: usize = 0;
const SLOT_WORDS: usize = 32;
// Word offsets inside a slot.
const STATE: usize = 0; // name hash (high 32 bits) | status (low bits)
const NAME_LEN: usize = 1;
const INTERVAL_NS: usize = 2; // 0 = no limit
const TOLERANCE_NS: usize = 3; // (burst - 1) * interval
const TAT_NS: usize = 4; // theoretical arrival time, ns since the origin
const RATE_BITS: usize = 5; // the rate as set (f64 bits), for reporting
const NAME: usize = 6;
const _: () = assert!(NAME + NAME_WORDS <= SLOT_WORDS);

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const READY: u64 = 2;
const STATUS_MASK: u64 = 0xffff_ffff;
/// Spins waiting for a slot being written before treating it as someone else's.
const WRITING_SPINS: u32 = 100_000;
/// Longest interval: a rate below one task per ~31 years is treated as that.
const INTERVAL_MAX_NS: f64 = 1e18;

/// What the table holds for a task with a limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub rate_per_s: f64,
    pub burst: u32,
}

/// A node-wide table of rate limits; share it with children by creating it before `fork`.
#[derive(Debug)]
pub struct RateTable<C: Clock = MonotonicClock> {
    mem: SharedWords,
    slots: usize,
    clock: C,
}

impl RateTable<MonotonicClock> {
    /// A table of `slots` task names on the real monotonic clock.
    pub fn new(slots: usize) -> Result<Self> {
        Self::with_clock(slots, MonotonicClock::new())
    }
}

fn hash32(name: &[u8]) -> u64 {
    // FNV-1a, folded to 32 bits; never 0 so a READY state is never all-zero.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h >> 32) ^ (h & STATUS_MASK)).max(1)
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Config(
            "a rate limit needs a task name; got an empty one".into(),
        ));
    }
    if name.len() > NAME_MAX {
        return Err(Error::Config(format!(
            "task name {:?}... is {} bytes long; rate limits support names of at most {NAME_MAX} bytes",
            name.chars().take(40).collect::<String>(),
            name.len()
        )));
    }
    Ok(())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<C: Clock> RateTable<C> {
    /// A table of `slots` task names (at least 1) driven by `clock`.
    pub fn with_clock(slots: usize, clock: C) -> Result<Self> {
        let slots = slots.max(1);
        let words = slots
            .checked_mul(SLOT_WORDS)
            .and_then(|w| w.checked_add(HEADER_WORDS))
            .ok_or_else(|| {
                Error::Config(format!("a rate limit table of {slots} slots is too large"))
            })?;
        Ok(RateTable {
            mem: SharedWords::new(words)?,
            slots,
            clock,
        })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    fn slot(&self, i: usize) -> &[AtomicU64] {
        let start = HEADER_WORDS + i * SLOT_WORDS;
        &self.mem.words()[start..start + SLOT_WORDS]
    }

    /// A counter bumped by every [`RateTable::set`], in any process: waiters for a token compare
    /// it to see that a limit changed and look again at once.
    pub fn generation(&self) -> u64 {
        self.mem.words()[GENERATION].load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.mem.words()[GENERATION].fetch_add(1, Ordering::AcqRel);
    }

    fn now_ns(&self) -> u64 {
        nanos(self.clock.now())
    }

    /// The state of a slot, waiting briefly while another thread or process writes its name.
    fn settled_state(slot: &[AtomicU64]) -> u64 {
        let mut state = slot[STATE].load(Ordering::Acquire);
        let mut spins = 0;
        while state & STATUS_MASK == WRITING && spins < WRITING_SPINS {
            std::hint::spin_loop();
            if spins % 64 == 63 {
                std::thread::yield_now();
            }
            spins += 1;
            state = slot[STATE].load(Ordering::Acquire);
        }
        state
    }

    fn name_matches(slot: &[AtomicU64], name: &[u8]) -> bool {
        if slot[NAME_LEN].load(Ordering::Relaxed) != name.len() as u64 {
            return false;
        }
        name.chunks(8).enumerate().all(|(i, chunk)| {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            slot[NAME + i].load(Ordering::Relaxed) == u64::from_le_bytes(buf)
        })
    }

    /// The slot holding `name`, if any.
    fn find(&self, name: &[u8]) -> Option<&[AtomicU64]> {
        let hash = hash32(name);
        let start = (hash as usize) % self.slots;
        for k in 0..self.slots {
            let slot = self.slot((start + k) % self.slots);
            let state = Self::settled_state(slot);
            match state & STATUS_MASK {
                EMPTY => return None,
                READY if state >> 32 == hash && Self::name_matches(slot, name) => {
                    return Some(slot)
                }
                _ => {}
            }
        }
        None
    }

    /// The slot of `name`, claimed (with no limit) when it has none yet.
    fn find_or_claim(&self, name: &[u8]) -> Result<&[AtomicU64]> {
        let hash = hash32(name);
        let start = (hash as usize) % self.slots;
        for k in 0..self.slots {
            let slot = self.slot((start + k) % self.slots);
            loop {
                let state = Self::settled_state(slot);
                match state & STATUS_MASK {
                    EMPTY => {
                        let claim = (hash << 32) | WRITING;
                        if slot[STATE]
                            .compare_exchange(EMPTY, claim, Ordering::AcqRel, Ordering::Acquire)
                            .is_err()
                        {
                            continue; // someone else claimed it meanwhile: look again
                        }
                        slot[NAME_LEN].store(name.len() as u64, Ordering::Relaxed);
                        for (i, chunk) in name.chunks(8).enumerate() {
                            let mut buf = [0u8; 8];
                            buf[..chunk.len()].copy_from_slice(chunk);
                            slot[NAME + i].store(u64::from_le_bytes(buf), Ordering::Relaxed);
                        }
                        slot[STATE].store((hash << 32) | READY, Ordering::Release);
                        return Ok(slot);
                    }
                    READY if state >> 32 == hash && Self::name_matches(slot, name) => {
                        return Ok(slot)
                    }
                    _ => break,
                }
            }
        }
        Err(Error::Config(format!(
            "the rate limit table is full ({} task names); cannot add {:?}",
            self.slots,
            String::from_utf8_lossy(name)
        )))
    }

    /// Sets the limit of `name` to `rate_per_s` tasks per second (burst: one second's worth,
    /// at least 1), or removes it with `None`. Takes effect at once in every process and thread
    /// sharing the table. Tokens already spent stay spent (capped at the new burst).
    pub fn set(&self, name: &str, rate_per_s: Option<f64>) -> Result<()> {
        check_name(name)?;
        let rate = rate_per_s.map(crate::ratelimit::check_rate).transpose()?;
        let slot = self.find_or_claim(name.as_bytes())?;
        let now = self.now_ns();
        let Some(rate) = rate else {
            slot[INTERVAL_NS].store(0, Ordering::Release);
            slot[RATE_BITS].store(0, Ordering::Relaxed);
            self.changed();
            return Ok(());
        };
        let interval = (1e9 / rate).clamp(1.0, INTERVAL_MAX_NS) as u64;
        let burst = u64::from(default_burst(rate));
        let tolerance = (burst - 1).saturating_mul(interval);
        // Tokens left under the old limit (all of them when there was none), capped at the new burst.
        let old_interval = slot[INTERVAL_NS].load(Ordering::Acquire);
        let old_tolerance = slot[TOLERANCE_NS].load(Ordering::Relaxed);
        let old_tat = slot[TAT_NS].load(Ordering::Acquire);
        let ahead = now.saturating_add(old_tolerance);
        let tokens = match (ahead - old_tat.min(ahead)).checked_div(old_interval) {
            None => burst, // there was no limit
            Some(_) if old_tat > ahead => 0,
            Some(spare) => (spare + 1).min(burst),
        };
        let tat = now.saturating_add((burst - tokens).saturating_mul(interval));
        slot[TAT_NS].store(tat, Ordering::Release);
        slot[TOLERANCE_NS].store(tolerance, Ordering::Relaxed);
        slot[RATE_BITS].store(rate.to_bits(), Ordering::Relaxed);
        slot[INTERVAL_NS].store(interval, Ordering::Release);
        self.changed();
        Ok(())
    }

    /// The limit of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<Limit> {
        let slot = self.find(name.as_bytes())?;
        if slot[INTERVAL_NS].load(Ordering::Acquire) == 0 {
            return None;
        }
        let rate_per_s = f64::from_bits(slot[RATE_BITS].load(Ordering::Relaxed));
        Some(Limit {
            rate_per_s,
            burst: default_burst(rate_per_s),
        })
    }

    /// Every task with a limit, by name.
    pub fn limits(&self) -> Vec<(String, Limit)> {
        let mut out = Vec::new();
        for i in 0..self.slots {
            let slot = self.slot(i);
            if Self::settled_state(slot) & STATUS_MASK != READY {
                continue;
            }
            let len = usize::try_from(slot[NAME_LEN].load(Ordering::Relaxed))
                .unwrap_or(0)
                .min(NAME_MAX);
            let mut bytes = Vec::with_capacity(NAME_MAX);
            for w in 0..NAME_WORDS {
                bytes.extend_from_slice(&slot[NAME + w].load(Ordering::Relaxed).to_le_bytes());
            }
            bytes.truncate(len);
            let name = String::from_utf8_lossy(&bytes).into_owned();
            if let Some(limit) = self.get(&name) {
                out.push((name, limit));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Takes one token for `name` and returns zero, or, when none is left, takes nothing and
    /// returns how long until one will be. A task without a limit always gets zero.
    pub fn try_acquire(&self, name: &str) -> Duration {
        let Some(slot) = self.find(name.as_bytes()) else {
            return Duration::ZERO;
        };
        loop {
            let interval = slot[INTERVAL_NS].load(Ordering::Acquire);
            if interval == 0 {
                return Duration::ZERO;
            }
            let tolerance = slot[TOLERANCE_NS].load(Ordering::Relaxed);
            let now = self.now_ns();
            let tat = slot[TAT_NS].load(Ordering::Acquire);
            let allowed_at = tat.saturating_sub(tolerance);
            if allowed_at > now {
                return Duration::from_nanos(allowed_at - now);
            }
            let next = tat.max(now).saturating_add(interval);
            if slot[TAT_NS]
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Duration::ZERO;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{parse_rate, ManualClock};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Instant;

    fn table(slots: usize) -> (RateTable<ManualClock>, ManualClock) {
        let c = ManualClock::new();
        (RateTable::with_clock(slots, c.clone()).unwrap(), c)
    }

    #[test]
    fn test_table_generation_counts_changes() {
        let (t, _) = table(8);
        assert_eq!(t.generation(), 0);
        t.set("a", Some(1.0)).unwrap();
        t.set("a", None).unwrap();
        assert_eq!(t.generation(), 2);
        assert!(t.set("a", Some(-1.0)).is_err());
        assert_eq!(t.generation(), 2);
    }

    #[test]
    fn test_table_unlimited_by_default() {
        let (t, _) = table(8);
        assert_eq!(t.try_acquire("tasks.add"), Duration::ZERO);
        assert_eq!(t.get("tasks.add"), None);
        assert!(t.limits().is_empty());
    }

    #[test]
    fn test_table_burst_then_spacing() {
        let (t, c) = table(8);
        t.set("tasks.add", Some(parse_rate("5/s").unwrap()))
            .unwrap();
        for _ in 0..5 {
            assert_eq!(t.try_acquire("tasks.add"), Duration::ZERO);
        }
        let wait = t.try_acquire("tasks.add");
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-6, "{wait:?}");
        c.advance(Duration::from_millis(199));
        assert!(t.try_acquire("tasks.add") > Duration::ZERO);
        c.advance(Duration::from_millis(1));
        assert_eq!(t.try_acquire("tasks.add"), Duration::ZERO);
        assert!(t.try_acquire("tasks.add") > Duration::ZERO);
        // other names are not affected
        assert_eq!(t.try_acquire("tasks.other"), Duration::ZERO);
    }

    #[test]
    fn test_table_slow_rate_spacing() {
        let (t, c) = table(8);
        t.set("slow", Some(parse_rate("10/m").unwrap())).unwrap();
        assert_eq!(t.try_acquire("slow"), Duration::ZERO);
        let wait = t.try_acquire("slow");
        assert!((wait.as_secs_f64() - 6.0).abs() < 1e-6, "{wait:?}");
        c.advance(Duration::from_secs(6));
        assert_eq!(t.try_acquire("slow"), Duration::ZERO);
    }

    #[test]
    fn test_table_set_none_removes_limit_and_reports() {
        let (t, _) = table(8);
        t.set("a", Some(2.0)).unwrap();
        assert_eq!(
            t.get("a"),
            Some(Limit {
                rate_per_s: 2.0,
                burst: 2
            })
        );
        t.set("b", Some(0.5)).unwrap();
        assert_eq!(
            t.limits()
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        t.set("a", None).unwrap();
        assert_eq!(t.get("a"), None);
        for _ in 0..100 {
            assert_eq!(t.try_acquire("a"), Duration::ZERO);
        }
        assert_eq!(t.limits().len(), 1);
    }

    #[test]
    fn test_table_rate_change_keeps_spent_tokens() {
        let (t, c) = table(8);
        t.set("a", Some(100.0)).unwrap();
        for _ in 0..100 {
            assert_eq!(t.try_acquire("a"), Duration::ZERO);
        }
        // the bucket is empty: lowering the rate does not hand out a fresh burst
        t.set("a", Some(1.0)).unwrap();
        let wait = t.try_acquire("a");
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        c.advance(Duration::from_secs(1));
        assert_eq!(t.try_acquire("a"), Duration::ZERO);
        // raising it gives the tokens of the new rate as they accrue, capped at the new burst
        t.set("a", Some(10.0)).unwrap();
        c.advance(Duration::from_secs(5));
        for _ in 0..10 {
            assert_eq!(t.try_acquire("a"), Duration::ZERO);
        }
        assert!(t.try_acquire("a") > Duration::ZERO);
    }

    #[test]
    fn test_table_rejects_bad_input() {
        let (t, _) = table(2);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(t.set("a", Some(bad)), Err(Error::Config(_))),
                "{bad}"
            );
        }
        assert!(matches!(t.set("", Some(1.0)), Err(Error::Config(m)) if m.contains("empty")));
        let long = "x".repeat(NAME_MAX + 1);
        assert!(
            matches!(t.set(&long, Some(1.0)), Err(Error::Config(m)) if m.contains("at most 192"))
        );
        t.set(&"y".repeat(NAME_MAX), Some(1.0)).unwrap();
        t.set("b", Some(1.0)).unwrap();
        let full = t.set("c", Some(1.0)).unwrap_err();
        assert!(full.to_string().contains("full"), "{full}");
        // an existing name can still be changed
        t.set("b", Some(3.0)).unwrap();
        assert_eq!(t.get("b").unwrap().rate_per_s, 3.0);
    }

    #[test]
    fn test_table_many_names_collide_and_stay_apart() {
        let (t, _) = table(64);
        for i in 0..64 {
            t.set(&format!("tasks.t{i}"), Some(f64::from(i + 1)))
                .unwrap();
        }
        for i in 0..64 {
            assert_eq!(
                t.get(&format!("tasks.t{i}")).unwrap().rate_per_s,
                f64::from(i + 1)
            );
        }
        assert_eq!(t.get("tasks.t64"), None);
        assert_eq!(t.try_acquire("tasks.t64"), Duration::ZERO);
    }

    /// Many threads (standing in for a node's processes, which share the same memory) never take
    /// more than the rate allows over the window, burst included.
    #[test]
    fn test_table_node_wide_bound_across_threads() {
        let t = Arc::new(RateTable::new(16).unwrap());
        let rate = 200.0;
        t.set("tasks.limited", Some(rate)).unwrap();
        let granted = Arc::new(AtomicUsize::new(0));
        let other = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let window = Duration::from_millis(600);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (t, granted, other) =
                    (Arc::clone(&t), Arc::clone(&granted), Arc::clone(&other));
                std::thread::spawn(move || {
                    while start.elapsed() < window {
                        if t.try_acquire("tasks.limited").is_zero() {
                            granted.fetch_add(1, Ordering::SeqCst);
                        }
                        if t.try_acquire("tasks.free").is_zero() {
                            other.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let n = granted.load(Ordering::SeqCst) as f64;
        let burst = f64::from(default_burst(rate));
        assert!(
            n <= rate * elapsed + burst + 1.0,
            "{n} granted in {elapsed} s"
        );
        // the limit was reached (the threads spin far faster than 200/s)
        assert!(n >= burst, "{n}");
        assert!(
            other.load(Ordering::SeqCst) as f64 > n,
            "unlimited names are not held back"
        );
    }
}
