//! Broker transports, and what they share: the [`Transport`] contract, the message and
//! result-row types, the clock. Each transport owns its wire layout and its atomic
//! fetch/lease/ack steps.

pub mod amqp;
pub mod amqp_consumer;
pub mod amqp_frame;
pub mod consumer;
pub mod postgres;
pub mod postgres_consumer;
pub mod postgres_deadline;
pub mod postgres_tls;
pub mod redis;
pub mod redis_consumer;
mod redis_lua;
pub mod redis_tls;
pub mod sqlite;
pub mod sqlite_checkpointer;
pub mod sqlite_consumer;
mod sqlite_log_owner;

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Reason code of messages whose worker died too often while holding them.
pub const REASON_WORKER_LOST: &str = "worker_lost";

/// Milliseconds since the Unix epoch: the clock of ETAs, leases and expiries on every transport.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub queue: String,
    pub payload: Vec<u8>,
    /// 0 (highest) to 9.
    pub priority: u8,
    /// Due time in epoch ms; `None` = due now.
    pub eta_ms: Option<i64>,
}

/// What a fenced periodic send ([`sqlite::SqliteBroker::beat_send`], and Redis's) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatSend {
    /// The tick was recorded and its message published, in one atomic step.
    Sent,
    /// The caller's token does not hold the schedule's lease (any more): nothing was written.
    NotLeader,
    /// This tick (or a later one) of the entry was sent already: nothing was written.
    AlreadySent,
}

impl BeatSend {
    /// The code the Python layer sees: 1 sent, 0 not the leader, -1 already sent.
    pub fn code(self) -> i8 {
        match self {
            BeatSend::Sent => 1,
            BeatSend::NotLeader => 0,
            BeatSend::AlreadySent => -1,
        }
    }
}

/// A message moved aside for good, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// What names it for `requeue_dead`: a row id (SQLite) or the delivery tag (Redis).
    pub id: String,
    pub queue: String,
    /// A reason code (`unregistered`, `decode_error`, `worker_lost` ...).
    pub reason: String,
    pub error: Option<String>,
    pub deliveries: u32,
    pub dead_at_ms: i64,
    pub payload: Vec<u8>,
}

/// One encoded result record, stored by a transport that shares its store with the result backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    pub task_id: String,
    /// The record's state (`SUCCESS`, `FAILURE` ...): a stored SUCCESS is final.
    pub status: String,
    /// The content type of `payload` (`application/json`, msgpack or pickle).
    pub content_type: String,
    /// The serialized Celery meta.
    pub payload: Vec<u8>,
    /// How long the record is kept, in milliseconds; `None` keeps it forever.
    pub ttl_ms: Option<u64>,
}

/// What every broker transport does, whatever its store: the operations the Python side calls
/// through one generic binding. Transport-specific steps (fetching with its own lease rules,
/// renewing, sweeping, declaring) stay inherent methods.
pub trait Transport: Send + Sync {
    /// Publishes one message (due at `eta_ms`, or now).
    fn publish(&self, queue: &str, payload: &[u8], priority: u8, eta_ms: Option<i64>)
        -> Result<()>;
    /// Publishes messages all or none, in one transaction or round trip.
    fn publish_many(&self, messages: &[NewMessage]) -> Result<()>;
    /// Acknowledges finished deliveries; returns how many were in flight.
    fn ack(&self, tags: &[String]) -> Result<usize>;
    /// Stores results, then acks, in one transaction or round trip; returns how many tags were in flight.
    fn complete(&self, rows: &[ResultRow], tags: &[String]) -> Result<usize>;
    /// Returns unstarted deliveries to their queue, uncounted.
    fn requeue(&self, tags: &[String]) -> Result<usize>;
    /// Returns rejected deliveries to their queue, counted (towards `max_deliveries`).
    fn release(&self, tags: &[String]) -> Result<usize>;
    /// Returns every message `owner` holds; those delivered `max_deliveries` times are
    /// dead-lettered. Returns `(requeued, dead_lettered)`.
    fn requeue_owner(&self, owner: &str, max_deliveries: u32) -> Result<(usize, usize)>;
    /// Tags of the messages `owner` holds.
    fn leased_tags(&self, owner: &str) -> Result<Vec<String>>;
    /// Moves a leased message aside with a reason; false when it was not leased.
    fn dead_letter(&self, tag: &str, reason: &str, error: Option<&str>) -> Result<bool>;
    /// Dead letters of `queue` (every queue with `None`, where the store can), oldest first.
    fn dead_letters(&self, queue: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>>;
    /// Puts dead letters of `queue` back in it with a fresh delivery count; returns how many.
    fn requeue_dead(&self, queue: &str, ids: &[String]) -> Result<usize>;
    /// Deletes the dead letters of `queue` (of every queue with `None`, where the store can).
    fn purge_dead(&self, queue: Option<&str>) -> Result<usize>;
    /// Deletes waiting messages of `queues`; returns how many.
    fn purge(&self, queues: &[String]) -> Result<usize>;
    /// Waiting messages of `queue`.
    fn queue_length(&self, queue: &str) -> Result<usize>;
    /// Takes (when free or lapsed) or renews the leader lease of the periodic schedule `name` for
    /// `token`, for `ttl_ms`; false when another process holds it.
    fn beat_lease(&self, name: &str, token: &str, ttl_ms: u64) -> Result<bool>;
    /// Gives the lease of `name` up if `token` holds it; true when it did.
    fn beat_release(&self, name: &str, token: &str) -> Result<bool>;
    /// `(entry, tick_ms)`: the last tick sent of each entry of the schedule `name`.
    fn beat_runs(&self, name: &str) -> Result<Vec<(String, i64)>>;
    /// Records the tick `tick_ms` of `entry` and publishes `message`, in one atomic step, only if
    /// `token` holds the lease of `name` and no tick at or after `tick_ms` was sent.
    fn beat_send(
        &self,
        name: &str,
        token: &str,
        entry: &str,
        tick_ms: i64,
        message: &NewMessage,
    ) -> Result<BeatSend>;
    /// Records the tick like `beat_send`, publishing nothing (the caller publishes elsewhere).
    fn beat_claim(&self, name: &str, token: &str, entry: &str, tick_ms: i64) -> Result<BeatSend>;
}

/// Implements [`Transport`] for a broker by its inherent methods of the same names and shapes.
macro_rules! transport_by_inherent_methods {
    ($broker:ty) => {
        impl $crate::transport::Transport for $broker {
            fn publish(
                &self,
                queue: &str,
                payload: &[u8],
                priority: u8,
                eta_ms: Option<i64>,
            ) -> Result<()> {
                <$broker>::publish(self, queue, payload, priority, eta_ms)
            }
            fn publish_many(&self, messages: &[$crate::transport::NewMessage]) -> Result<()> {
                <$broker>::publish_many(self, messages)
            }
            fn ack(&self, tags: &[String]) -> Result<usize> {
                <$broker>::ack(self, tags)
            }
            fn complete(
                &self,
                rows: &[$crate::transport::ResultRow],
                tags: &[String],
            ) -> Result<usize> {
                <$broker>::complete(self, rows, tags)
            }
            fn requeue(&self, tags: &[String]) -> Result<usize> {
                <$broker>::requeue(self, tags)
            }
            fn release(&self, tags: &[String]) -> Result<usize> {
                <$broker>::release(self, tags)
            }
            fn requeue_owner(&self, owner: &str, max_deliveries: u32) -> Result<(usize, usize)> {
                <$broker>::requeue_owner(self, owner, max_deliveries)
            }
            fn leased_tags(&self, owner: &str) -> Result<Vec<String>> {
                <$broker>::leased_tags(self, owner)
            }
            fn dead_letter(&self, tag: &str, reason: &str, error: Option<&str>) -> Result<bool> {
                <$broker>::dead_letter(self, tag, reason, error)
            }
            fn dead_letters(
                &self,
                queue: Option<&str>,
                limit: usize,
            ) -> Result<Vec<$crate::transport::DeadLetter>> {
                <$broker>::dead_letters(self, queue, limit)
            }
            fn requeue_dead(&self, queue: &str, ids: &[String]) -> Result<usize> {
                <$broker>::requeue_dead(self, queue, ids)
            }
            fn purge_dead(&self, queue: Option<&str>) -> Result<usize> {
                <$broker>::purge_dead(self, queue)
            }
            fn purge(&self, queues: &[String]) -> Result<usize> {
                <$broker>::purge(self, queues)
            }
            fn queue_length(&self, queue: &str) -> Result<usize> {
                <$broker>::queue_length(self, queue)
            }
            fn beat_lease(&self, name: &str, token: &str, ttl_ms: u64) -> Result<bool> {
                <$broker>::beat_lease(self, name, token, ttl_ms)
            }
            fn beat_release(&self, name: &str, token: &str) -> Result<bool> {
                <$broker>::beat_release(self, name, token)
            }
            fn beat_runs(&self, name: &str) -> Result<Vec<(String, i64)>> {
                <$broker>::beat_runs(self, name)
            }
            fn beat_send(
                &self,
                name: &str,
                token: &str,
                entry: &str,
                tick_ms: i64,
                message: &$crate::transport::NewMessage,
            ) -> Result<$crate::transport::BeatSend> {
                <$broker>::beat_send(self, name, token, entry, tick_ms, message)
            }
            fn beat_claim(
                &self,
                name: &str,
                token: &str,
                entry: &str,
                tick_ms: i64,
            ) -> Result<$crate::transport::BeatSend> {
                <$broker>::beat_claim(self, name, token, entry, tick_ms)
            }
        }
    };
}
pub(crate) use transport_by_inherent_methods;

/// The queue name a transport needs where its store cannot list every queue.
pub(crate) fn named_queue<'a>(queue: Option<&'a str>, what: &str) -> Result<&'a str> {
    queue.ok_or_else(|| Error::Config(format!("{what} needs a queue name on this broker")))
}

/// Priorities are 0 (first) to 9, as on kombu's Redis transport; the same rule for every broker.
pub(crate) fn check_priority(priority: u8) -> Result<()> {
    if priority > 9 {
        return Err(Error::Config(format!(
            "message priority {priority} is out of range; use 0 (highest) to 9"
        )));
    }
    Ok(())
}

pub(crate) fn check_queue(queue: &str) -> Result<()> {
    if queue.is_empty() {
        return Err(Error::Config("queue name must not be empty".into()));
    }
    Ok(())
}

/// Merges per-queue candidates `(priority, id)`, each queue's already in its own order, into at
/// most `limit`: the lowest priority present first across all queues, and within one priority one
/// from each queue in turn (in the order of `per_queue`), so no queue waits for another to drain.
pub(crate) fn interleave(
    mut per_queue: Vec<VecDeque<(i64, i64)>>,
    limit: usize,
) -> Vec<(i64, i64)> {
    let mut out = Vec::with_capacity(limit.min(per_queue.iter().map(VecDeque::len).sum()));
    while out.len() < limit {
        let Some(level) = per_queue
            .iter()
            .filter_map(|q| q.front().map(|c| c.0))
            .min()
        else {
            break;
        };
        for q in per_queue.iter_mut() {
            if out.len() >= limit {
                break;
            }
            if q.front().is_some_and(|c| c.0 == level) {
                out.extend(q.pop_front());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(items: &[(i64, i64)]) -> VecDeque<(i64, i64)> {
        items.iter().copied().collect()
    }

    #[test]
    fn test_interleave_round_robin_within_a_priority() {
        let a = q(&[(0, 1), (0, 2), (0, 3), (0, 4)]);
        let b = q(&[(0, 10), (0, 11)]);
        assert_eq!(
            interleave(vec![a.clone(), b.clone()], 10),
            vec![(0, 1), (0, 10), (0, 2), (0, 11), (0, 3), (0, 4)]
        );
        assert_eq!(interleave(vec![b, a], 3), vec![(0, 10), (0, 1), (0, 11)]);
    }

    #[test]
    fn test_interleave_priority_first_across_queues() {
        let a = q(&[(0, 5), (9, 1), (9, 2)]);
        let b = q(&[(3, 7), (9, 8)]);
        let c = q(&[]);
        assert_eq!(
            interleave(vec![a, c, b], 4),
            vec![(0, 5), (3, 7), (9, 1), (9, 8)]
        );
        assert!(interleave(vec![q(&[]), q(&[])], 5).is_empty());
        assert!(interleave(vec![q(&[(0, 1)])], 0).is_empty());
    }
}
