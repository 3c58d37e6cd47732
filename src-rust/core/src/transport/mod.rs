//! Broker transports. Each owns its wire layout and its atomic fetch/lease/ack steps.

mod consumer;
pub mod redis;
pub mod redis_consumer;
mod redis_lua;
pub mod redis_tls;
pub mod sqlite;
pub mod sqlite_consumer;

use std::collections::VecDeque;

use crate::error::{Error, Result};

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
