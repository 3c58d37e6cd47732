//! The one binding body of every transport: `transport_class!` writes a broker class's shared
//! methods over `rqueue_core::transport::Transport` and `consumer_class!` a consumer thread's, so
//! a new transport adds its constructor and its own extras only.

use std::time::Duration;

use rqueue_core::transport::{DeadLetter, NewMessage, ResultRow};
use rqueue_core::Error;

/// A positive duration given in seconds, for every binding that takes one.
pub(crate) fn seconds(name: &str, value: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Error::Config(format!(
                "{name} must be a positive number of seconds, got {value}"
            ))
        })
}

/// `(id, queue, reason, error, deliveries, dead_at_ms, payload)` of a dead letter, as Python
/// sees it; the id is a row id (SQLite) or a delivery tag (Redis).
pub type DeadLetterRow = (String, String, String, Option<String>, u32, i64, Vec<u8>);

/// A `(queue, payload, priority, eta_ms)` item of `publish_many`.
pub type MessageTuple = (String, Vec<u8>, i64, Option<i64>);

/// `(task_id, status, content_type, payload, ttl_ms)`: one encoded result record for `complete`
/// and `store_results`; `ttl_ms` None keeps it forever.
pub type ResultTuple = (String, String, String, Vec<u8>, Option<u64>);

/// Checks a message priority: 0 (highest) to 9.
pub fn priority_of(priority: i64) -> Result<u8, Error> {
    u8::try_from(priority)
        .ok()
        .filter(|p| *p <= 9)
        .ok_or_else(|| {
            Error::Config(format!(
                "message priority {priority} is out of range; use 0 (highest) to 9"
            ))
        })
}

/// The messages of a `publish_many` call, or the first bad priority (nothing is published).
pub fn new_messages(messages: Vec<MessageTuple>) -> Result<Vec<NewMessage>, Error> {
    messages
        .into_iter()
        .map(|(queue, payload, priority, eta_ms)| {
            Ok(NewMessage {
                queue,
                payload,
                priority: priority_of(priority)?,
                eta_ms,
            })
        })
        .collect()
}

/// Result records from their Python tuples.
pub fn result_rows(rows: Vec<ResultTuple>) -> Vec<ResultRow> {
    rows.into_iter()
        .map(
            |(task_id, status, content_type, payload, ttl_ms)| ResultRow {
                task_id,
                status,
                content_type,
                payload,
                ttl_ms,
            },
        )
        .collect()
}

/// Dead letters as Python tuples.
pub fn dead_letter_rows(rows: Vec<DeadLetter>) -> Vec<DeadLetterRow> {
    rows.into_iter()
        .map(|d| {
            (
                d.id,
                d.queue,
                d.reason,
                d.error,
                d.deliveries,
                d.dead_at_ms,
                d.payload,
            )
        })
        .collect()
}

/// A count of milliseconds from Python that must not be negative.
pub(crate) fn non_negative(name: &str, value: i64) -> Result<u64, Error> {
    u64::try_from(value)
        .map_err(|_| Error::Config(format!("{name} must not be negative, got {value}")))
}

/// The `#[pymethods]` of a broker class (a struct with `inner: Arc<T: Transport>`): the methods
/// every transport has, then the `{ ... }` extras of this one. Every call that touches the
/// broker runs with the GIL released. `sql` adds what the SQL brokers (SQLite, PostgreSQL) have
/// beyond `Transport`, by the same names on their core types: their own fetch with a lease,
/// lease renewal and sweep, revocations, the remote-control mailbox, result rows and chord joins.
macro_rules! transport_class {
    ($class:ident, sql { $($extra:tt)* }) => {
        $crate::broker::transport_class!($class {
            /// Atomically lease up to `limit` due messages (priority 0 first, then FIFO). GIL released.
            fn fetch(
                &self,
                py: Python<'_>,
                queues: Vec<String>,
                limit: usize,
                owner: String,
                lease_ms: i64,
            ) -> PyResult<Vec<$crate::prefetch::Delivery>> {
                let lease_ms = $crate::broker::non_negative("lease_ms", lease_ms).map_py(py)?;
                let got = py
                    .detach(|| self.inner.fetch(&queues, limit, &owner, lease_ms))
                    .map_py(py)?;
                Ok($crate::prefetch::wrap_all(got))
            }

            /// Renew the leases of `held` (tags `owner` holds); returns every tag leased to `owner`.
            fn extend_leases(
                &self,
                py: Python<'_>,
                owner: String,
                lease_ms: i64,
                held: Vec<String>,
            ) -> PyResult<Vec<String>> {
                let lease_ms = $crate::broker::non_negative("lease_ms", lease_ms).map_py(py)?;
                py.detach(|| self.inner.extend_leases(&owner, lease_ms, &held))
                    .map_py(py)
            }

            /// Return expired leases to their queue; dead-letter those over `max_deliveries`.
            #[pyo3(signature = (max_deliveries = 5))]
            fn sweep_expired(&self, py: Python<'_>, max_deliveries: u32) -> PyResult<(usize, usize)> {
                py.detach(|| self.inner.sweep_expired(max_deliveries))
                    .map_py(py)
            }

            /// Record revoked task ids, kept until `expires_at_ms`.
            fn revoke(&self, py: Python<'_>, task_ids: Vec<String>, expires_at_ms: i64) -> PyResult<()> {
                py.detach(|| self.inner.revoke(&task_ids, expires_at_ms))
                    .map_py(py)
            }

            /// `(task_id, expires_at_ms)` of unexpired revocations made at or after `since_ms`.
            fn revoked_since(&self, py: Python<'_>, since_ms: i64) -> PyResult<Vec<(String, i64)>> {
                py.detach(|| self.inner.revoked_since(since_ms)).map_py(py)
            }

            /// Post `body` on a mailbox channel (remote control), kept until `expires_at_ms`; returns its id.
            fn mailbox_post(
                &self,
                py: Python<'_>,
                channel: String,
                body: Vec<u8>,
                expires_at_ms: i64,
            ) -> PyResult<i64> {
                py.detach(|| self.inner.mailbox_post(&channel, &body, expires_at_ms))
                    .map_py(py)
            }

            /// `(id, body)` of the unexpired posts on `channel` after `after_id`, oldest first.
            fn mailbox_read(
                &self,
                py: Python<'_>,
                channel: String,
                after_id: i64,
            ) -> PyResult<Vec<(i64, Vec<u8>)>> {
                py.detach(|| self.inner.mailbox_read(&channel, after_id))
                    .map_py(py)
            }

            /// The id of the newest mailbox post (0 when none).
            fn mailbox_last_id(&self, py: Python<'_>) -> PyResult<i64> {
                py.detach(|| self.inner.mailbox_last_id()).map_py(py)
            }

            /// Store `(task_id, status, content_type, payload, ttl_ms)` result records in one
            /// transaction; a stored SUCCESS is never overwritten.
            fn store_results(&self, py: Python<'_>, rows: Vec<$crate::broker::ResultTuple>) -> PyResult<()> {
                let rows = $crate::broker::result_rows(rows);
                py.detach(|| self.inner.store_results(&rows)).map_py(py)
            }

            /// `(content_type, payload)` of a task's unexpired result, or None.
            fn read_result(&self, py: Python<'_>, task_id: String) -> PyResult<Option<(String, Vec<u8>)>> {
                py.detach(|| self.inner.read_result(&task_id)).map_py(py)
            }

            fn delete_result(&self, py: Python<'_>, task_id: String) -> PyResult<bool> {
                py.detach(|| self.inner.delete_result(&task_id)).map_py(py)
            }

            /// Set the number of header results a chord's body waits for (a new run of the chord).
            #[pyo3(signature = (group_id, size, ttl_ms = None))]
            fn chord_set_size(
                &self,
                py: Python<'_>,
                group_id: String,
                size: i64,
                ttl_ms: Option<u64>,
            ) -> PyResult<()> {
                py.detach(|| self.inner.chord_set_size(&group_id, size, ttl_ms))
                    .map_py(py)
            }

            /// Make a chord wait for `n` more header results.
            fn chord_add(&self, py: Python<'_>, group_id: String, n: i64) -> PyResult<()> {
                py.detach(|| self.inner.chord_add(&group_id, n)).map_py(py)
            }

            /// Count one header result (once per member) in one transaction; `(ready, total, claimed)`,
            /// or None once the body was fired.
            #[allow(clippy::too_many_arguments)]
            fn chord_part_return(
                &self,
                py: Python<'_>,
                group_id: String,
                member: String,
                index: f64,
                payload: Vec<u8>,
                ttl_ms: Option<u64>,
                token: String,
                claim_ms: u64,
            ) -> PyResult<Option<(i64, Option<i64>, bool)>> {
                let count = py
                    .detach(|| {
                        self.inner.chord_part_return(
                            &group_id, &member, index, &payload, ttl_ms, &token, claim_ms,
                        )
                    })
                    .map_py(py)?;
                Ok(count.map(|c| (c.ready, c.total, c.claimed)))
            }

            /// Keep (or take, once lapsed) the right to fire a chord's body.
            fn chord_renew_claim(
                &self,
                py: Python<'_>,
                group_id: String,
                token: String,
                claim_ms: u64,
            ) -> PyResult<bool> {
                py.detach(|| self.inner.chord_renew_claim(&group_id, &token, claim_ms))
                    .map_py(py)
            }

            /// The counted header results of a chord, in header order.
            fn chord_parts(&self, py: Python<'_>, group_id: String) -> PyResult<Vec<Vec<u8>>> {
                py.detach(|| self.inner.chord_parts(&group_id)).map_py(py)
            }

            /// The body was fired by the holder of `token`: forget the parts, mark the chord done.
            fn chord_done(
                &self,
                py: Python<'_>,
                group_id: String,
                token: String,
                done_ttl_ms: u64,
            ) -> PyResult<bool> {
                py.detach(|| self.inner.chord_done(&group_id, &token, done_ttl_ms))
                    .map_py(py)
            }

            $($extra)*
        });
    };
    ($class:ident { $($extra:tt)* }) => {
        #[pymethods]
        impl $class {
            #[pyo3(signature = (queue, payload, priority = 0, eta_ms = None))]
            fn publish(
                &self,
                py: Python<'_>,
                queue: String,
                payload: Vec<u8>,
                priority: i64,
                eta_ms: Option<i64>,
            ) -> PyResult<()> {
                let priority = $crate::broker::priority_of(priority).map_py(py)?;
                py.detach(|| Transport::publish(&*self.inner, &queue, &payload, priority, eta_ms))
                    .map_py(py)
            }

            /// Publish `(queue, payload, priority, eta_ms)` items, all or none, in one
            /// transaction or round trip.
            fn publish_many(
                &self,
                py: Python<'_>,
                messages: Vec<$crate::broker::MessageTuple>,
            ) -> PyResult<()> {
                let messages = $crate::broker::new_messages(messages).map_py(py)?;
                py.detach(|| Transport::publish_many(&*self.inner, &messages))
                    .map_py(py)
            }

            /// Acknowledge finished deliveries; returns how many were in flight.
            fn ack(&self, py: Python<'_>, tags: Vec<String>) -> PyResult<usize> {
                py.detach(|| Transport::ack(&*self.inner, &tags)).map_py(py)
            }

            /// Store `(task_id, status, content_type, payload, ttl_ms)` result records (a stored
            /// SUCCESS is final), then ack `tags`, in one transaction or round trip. Returns how
            /// many tags were in flight.
            fn complete(
                &self,
                py: Python<'_>,
                rows: Vec<$crate::broker::ResultTuple>,
                tags: Vec<String>,
            ) -> PyResult<usize> {
                let rows = $crate::broker::result_rows(rows);
                py.detach(|| Transport::complete(&*self.inner, &rows, &tags))
                    .map_py(py)
            }

            /// Return unstarted deliveries to their queue, unchanged; this delivery is not counted.
            fn requeue(&self, py: Python<'_>, tags: Vec<String>) -> PyResult<usize> {
                py.detach(|| Transport::requeue(&*self.inner, &tags)).map_py(py)
            }

            /// Return rejected deliveries to their queue; this delivery counts towards
            /// `broker_max_deliveries`.
            fn release(&self, py: Python<'_>, tags: Vec<String>) -> PyResult<usize> {
                py.detach(|| Transport::release(&*self.inner, &tags)).map_py(py)
            }

            /// Return every message held by `owner` (a worker process that died); those
            /// delivered `max_deliveries` times are dead-lettered as `worker_lost`. Returns how
            /// many were requeued.
            #[pyo3(signature = (owner, max_deliveries = 5))]
            fn requeue_owner(
                &self,
                py: Python<'_>,
                owner: String,
                max_deliveries: u32,
            ) -> PyResult<usize> {
                py.detach(|| Transport::requeue_owner(&*self.inner, &owner, max_deliveries))
                    .map_py(py)
                    .map(|(requeued, _)| requeued)
            }

            /// Tags of the messages `owner` holds.
            fn leased_tags(&self, py: Python<'_>, owner: String) -> PyResult<Vec<String>> {
                py.detach(|| Transport::leased_tags(&*self.inner, &owner)).map_py(py)
            }

            /// Move a leased message aside with a reason code and error text.
            #[pyo3(signature = (tag, reason, error = None))]
            fn dead_letter(
                &self,
                py: Python<'_>,
                tag: String,
                reason: String,
                error: Option<String>,
            ) -> PyResult<()> {
                py.detach(|| Transport::dead_letter(&*self.inner, &tag, &reason, error.as_deref()))
                    .map_py(py)
                    .map(|_| ())
            }

            /// `(id, queue, reason, error, deliveries, dead_at_ms, payload)` rows, oldest first;
            /// of every queue with None where the broker can list them.
            #[pyo3(signature = (queue = None, limit = 100))]
            fn dead_letters(
                &self,
                py: Python<'_>,
                queue: Option<String>,
                limit: usize,
            ) -> PyResult<Vec<$crate::broker::DeadLetterRow>> {
                py.detach(|| Transport::dead_letters(&*self.inner, queue.as_deref(), limit))
                    .map_py(py)
                    .map($crate::broker::dead_letter_rows)
            }

            /// Put dead letters of `queue` back in it with a fresh delivery count; returns how many.
            fn requeue_dead(
                &self,
                py: Python<'_>,
                queue: String,
                ids: Vec<String>,
            ) -> PyResult<usize> {
                py.detach(|| Transport::requeue_dead(&*self.inner, &queue, &ids))
                    .map_py(py)
            }

            /// Delete the dead letters of `queue` (of every queue with None where the broker can).
            #[pyo3(signature = (queue = None))]
            fn purge_dead(&self, py: Python<'_>, queue: Option<String>) -> PyResult<usize> {
                py.detach(|| Transport::purge_dead(&*self.inner, queue.as_deref()))
                    .map_py(py)
            }

            /// Delete waiting messages of these queues; returns how many.
            fn purge(&self, py: Python<'_>, queues: Vec<String>) -> PyResult<usize> {
                py.detach(|| Transport::purge(&*self.inner, &queues)).map_py(py)
            }

            fn queue_length(&self, py: Python<'_>, queue: String) -> PyResult<usize> {
                py.detach(|| Transport::queue_length(&*self.inner, &queue)).map_py(py)
            }

            /// Take (when free or lapsed) or renew the leader lease of the periodic schedule
            /// `name` for `token`, for `ttl_ms`; false when another process holds it.
            fn beat_lease(
                &self,
                py: Python<'_>,
                name: String,
                token: String,
                ttl_ms: u64,
            ) -> PyResult<bool> {
                py.detach(|| Transport::beat_lease(&*self.inner, &name, &token, ttl_ms))
                    .map_py(py)
            }

            /// Give the lease of `name` up if `token` holds it; true when it did.
            fn beat_release(&self, py: Python<'_>, name: String, token: String) -> PyResult<bool> {
                py.detach(|| Transport::beat_release(&*self.inner, &name, &token))
                    .map_py(py)
            }

            /// `(entry, tick_ms)`: the last tick sent of each entry of the schedule `name`.
            fn beat_runs(&self, py: Python<'_>, name: String) -> PyResult<Vec<(String, i64)>> {
                py.detach(|| Transport::beat_runs(&*self.inner, &name)).map_py(py)
            }

            /// Record the tick `tick_ms` of `entry` and publish `(queue, payload, priority,
            /// eta_ms)` in one atomic step, only if `token` holds the lease of `name` and no tick
            /// at or after `tick_ms` was sent. 1 sent, 0 not the leader, -1 already sent.
            #[allow(clippy::too_many_arguments)]
            #[pyo3(signature = (name, token, entry, tick_ms, queue, payload, priority = 0, eta_ms = None))]
            fn beat_send(
                &self,
                py: Python<'_>,
                name: String,
                token: String,
                entry: String,
                tick_ms: i64,
                queue: String,
                payload: Vec<u8>,
                priority: i64,
                eta_ms: Option<i64>,
            ) -> PyResult<i8> {
                let message = rqueue_core::transport::NewMessage {
                    queue,
                    payload,
                    priority: $crate::broker::priority_of(priority).map_py(py)?,
                    eta_ms,
                };
                py.detach(|| {
                    Transport::beat_send(&*self.inner, &name, &token, &entry, tick_ms, &message)
                })
                .map_py(py)
                .map(|sent| sent.code())
            }

            /// Record the tick like `beat_send` without publishing anything (the caller publishes
            /// to another broker once this returned 1).
            fn beat_claim(
                &self,
                py: Python<'_>,
                name: String,
                token: String,
                entry: String,
                tick_ms: i64,
            ) -> PyResult<i8> {
                py.detach(|| Transport::beat_claim(&*self.inner, &name, &token, &entry, tick_ms))
                    .map_py(py)
                    .map(|sent| sent.code())
            }

            $($extra)*
        }
    };
}

/// The `#[pymethods]` of a consumer-thread class (a struct with `inner` of a core consumer):
/// start, stop, set_queues, running and last_error, then the `{ ... }` extras (the constructor).
/// `acks_later` adds `ack_later` and `settle_acks`: the thread of the shared consumer loop sends
/// the executor's acks (see `rqueue_core::transport::consumer`).
macro_rules! consumer_class {
    ($class:ident, acks_later { $($extra:tt)* }) => {
        $crate::broker::consumer_class!($class {
            /// Hand `tags` to the thread to ack before its next fetch; returns at once.
            fn ack_later(&self, tags: Vec<String>) {
                self.inner.ack_later(tags);
            }

            /// Wait (GIL released) until every ack handed over so far was sent: True, or False
            /// after `timeout_s` or when the thread is not running.
            fn settle_acks(&self, py: Python<'_>, timeout_s: f64) -> PyResult<bool> {
                let timeout = $crate::broker::seconds("timeout_s", timeout_s).map_py(py)?;
                Ok(py.detach(|| self.inner.settle_acks(timeout)))
            }

            $($extra)*
        });
    };
    ($class:ident { $($extra:tt)* }) => {
        #[pymethods]
        impl $class {
            fn start(&self, py: Python<'_>) -> PyResult<()> {
                self.inner.start().map_py(py)
            }

            /// Stop fetching, join the thread, close the buffer; returns unstarted deliveries
            /// (still leased: the caller returns them).
            fn stop(&self, py: Python<'_>) -> Vec<$crate::prefetch::Delivery> {
                $crate::prefetch::wrap_all(py.detach(|| self.inner.stop()))
            }

            fn set_queues(&self, queues: Vec<String>) {
                self.inner.set_queues(queues);
            }

            #[getter]
            fn running(&self) -> bool {
                self.inner.running()
            }

            /// The last error the thread met and is retrying past, if any.
            #[getter]
            fn last_error(&self) -> Option<String> {
                self.inner.last_error()
            }

            $($extra)*
        }
    };
}

pub(crate) use {consumer_class, transport_class};
