//! The embedded SQLite broker: one database file shared by producer and worker processes.
//!
//! Layout (schema version 1, recorded in `PRAGMA user_version`):
//! - `messages`: every waiting or leased message. A message is *waiting* when `owner IS NULL`
//!   and *due* when also `eta_ms <= now`. Fetching sets `owner`, `lease_until_ms` and
//!   `deliveries + 1` in one IMMEDIATE transaction, so no crash can lose a message between
//!   "taken off the queue" and "recorded as leased". Ids come from `AUTOINCREMENT`, so they are
//!   never reused: FIFO order within a priority is id order, and a late ack cannot hit a newer
//!   message that happened to get a recycled id.
//! - `dead_letters`: messages moved aside with a reason code (`worker_lost`, ...).
//! - `results`: task result records (serialized by the Python result backend), keyed by task id,
//!   with an expiry. They live here, behind the same SQLite library, because two SQLite copies
//!   in one process (Python's `sqlite3` and this bundled one) on one file break each other's
//!   POSIX locks and can corrupt it.
//! - `revoked`: ids of revoked tasks with an expiry, so a worker that was offline still skips them.
//! - `chords` and `chord_parts`: the join of each chord (its size, the header results counted so
//!   far, who fires the body); see [`SqliteBroker::chord_part_return`].
//! - `beat_leases` and `beat_runs`: periodic tasks' leader lease per schedule name, and the last
//!   tick sent per entry; see [`SqliteBroker::beat_send`].
//!
//! The file uses WAL with `synchronous=NORMAL` (a commit survives a process crash; a power loss
//! may drop the last commits) and a busy timeout. SQLITE_BUSY that escapes the busy handler is
//! retried here with backoff, so "database is locked" never reaches the caller unless the file
//! stays locked for the whole retry window. A worker's consumer checkpoints the log behind it
//! ([`super::sqlite_checkpointer`]). Before opening the file a connection makes sure the log at
//! its path is this file's and not that of a file it replaced (`sqlite_log_owner`).

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use crate::doorbell::{Bell, Doorbells};
use crate::error::{Error, Result};
use crate::prefetch::Delivery;
use crate::transport::sqlite_log_owner::{self, FileIdentity};
use crate::transport::{check_priority, check_queue, interleave, transport_by_inherent_methods};
use crate::transport::{now_ms, BeatSend, DeadLetter, NewMessage, ResultRow, REASON_WORKER_LOST};

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i64 = 1;
/// Most expired leases handled by one [`SqliteBroker::sweep_expired`] call.
pub const SWEEP_BATCH: i64 = 500;
/// Most messages leased by one [`SqliteBroker::fetch`] call.
pub const MAX_FETCH: usize = 10_000;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    eta_ms INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL,
    owner TEXT,
    lease_until_ms INTEGER,
    deliveries INTEGER NOT NULL DEFAULT 0,
    published_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_waiting ON messages (queue, priority, id) WHERE owner IS NULL;
CREATE INDEX IF NOT EXISTS messages_owner ON messages (owner) WHERE owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_lease ON messages (lease_until_ms) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    error TEXT,
    deliveries INTEGER NOT NULL,
    dead_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, id);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    content_type TEXT NOT NULL,
    payload BLOB NOT NULL,
    expires_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS results_expiry ON results (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS revoked (
    task_id TEXT PRIMARY KEY,
    revoked_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_at ON revoked (revoked_at_ms);
CREATE TABLE IF NOT EXISTS mailbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    body BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mailbox_channel ON mailbox (channel, id);
CREATE INDEX IF NOT EXISTS mailbox_expiry ON mailbox (expires_at_ms);
CREATE TABLE IF NOT EXISTS chords (
    group_id TEXT PRIMARY KEY,
    size INTEGER,
    added INTEGER NOT NULL DEFAULT 0,
    claim TEXT,
    claim_until_ms INTEGER,
    done INTEGER NOT NULL DEFAULT 0,
    expires_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS chords_expiry ON chords (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS chord_parts (
    group_id TEXT NOT NULL,
    member TEXT NOT NULL,
    idx REAL NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (group_id, member)
);
CREATE TABLE IF NOT EXISTS beat_leases (
    name TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS beat_runs (
    name TEXT NOT NULL,
    entry TEXT NOT NULL,
    tick_ms INTEGER NOT NULL,
    PRIMARY KEY (name, entry)
);
";

/// Where a chord's join stands after a header result was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChordCount {
    /// Header results counted so far (each header member once, however often it ran).
    pub ready: i64,
    /// Results the body waits for; `None` until the sender has set the size.
    pub total: Option<i64>,
    /// True when this call took the right to fire the body (the count is complete).
    pub claimed: bool,
}

fn expiry(ttl_ms: Option<u64>) -> Option<i64> {
    ttl_ms.map(|ttl| now_ms().saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)))
}

/// A result write: a stored SUCCESS is final, so a redelivered duplicate cannot overwrite it.
const UPSERT_RESULT: &str =
    "INSERT INTO results (task_id, status, content_type, payload, expires_at_ms)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (task_id) DO UPDATE SET
         status = excluded.status, content_type = excluded.content_type,
         payload = excluded.payload, expires_at_ms = excluded.expires_at_ms
     WHERE results.status != 'SUCCESS'";

const DEAD_LETTER_ONE: &str =
    "INSERT INTO dead_letters (queue, priority, payload, reason, error, deliveries, dead_at_ms)
     SELECT queue, priority, payload, ?2, ?3, deliveries, ?4 FROM messages WHERE id = ?1";

/// Upserts result records and deletes up to `SWEEP_BATCH` expired ones.
fn write_results(tx: &rusqlite::Transaction<'_>, rows: &[ResultRow]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(UPSERT_RESULT)?;
    let now = now_ms();
    for r in rows {
        let expires_at_ms = r
            .ttl_ms
            .map(|ttl| now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)));
        stmt.execute(params![
            r.task_id,
            r.status,
            r.content_type,
            r.payload,
            expires_at_ms
        ])?;
    }
    tx.prepare_cached(
        "DELETE FROM results WHERE task_id IN (SELECT task_id FROM results
         WHERE expires_at_ms IS NOT NULL AND expires_at_ms < ?1 LIMIT ?2)",
    )?
    .execute(params![now_ms(), SWEEP_BATCH])?;
    Ok(())
}

/// Deletes acked messages by tag; returns how many existed.
fn delete_messages<S: AsRef<str>>(
    tx: &rusqlite::Transaction<'_>,
    tags: &[S],
) -> rusqlite::Result<usize> {
    let mut stmt = tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
    let mut n = 0;
    for id in tags.iter().filter_map(|t| row_id(t.as_ref())) {
        n += stmt.execute([id])?;
    }
    Ok(n)
}

/// SQLite's own busy timeout sleeps 1, 2, 5, 10 ... 100 ms between tries, which costs whole
/// milliseconds per lock conflict between a worker's fetches and acks. Locks here are held for
/// microseconds, so try again after short naps first, then longer ones (about 10 s in all;
/// `with_conn` keeps retrying past that).
fn wait_while_busy(tries: i32) -> bool {
    let nap_us = match tries {
        0..=19 => 50,
        20..=99 => 500,
        100..=5099 => 2_000,
        _ => return false,
    };
    std::thread::sleep(Duration::from_micros(nap_us));
    true
}

/// The row id a delivery tag names; `None` (simply not found) when it is not one of ours.
fn row_id(tag: &str) -> Option<i64> {
    tag.parse().ok()
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
    )
}

/// How a [`SqliteBroker::checkpoint`] treats readers and writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    Passive,
    Restart,
}

/// Longest a RESTART checkpoint waits for readers (holding writers off meanwhile) before it
/// gives up; it takes ~2 ms when only a worker's short transactions read.
const RESTART_WAIT: Duration = Duration::from_millis(50);
/// Every connection checkpoints the log in its commit past this many pages (SQLite's default is
/// 1,000): a worker's [`Checkpointer`](super::sqlite_checkpointer::Checkpointer) restarts the log
/// well before, and with no worker running the producers still bound it.
const AUTOCHECKPOINT_PAGES: i64 = 8_192;
/// The write-ahead log is checkpointed and truncated once it is larger than this.
pub const WAL_LIMIT_BYTES: u64 = 32 * 1024 * 1024;
/// How often a connection that writes or fetches looks at the log's size (a `stat`): at over
/// 100 MB/s of log under heavy load, the log then stays within a few tens of MB of the limit.
const WAL_CHECK_INTERVAL_MS: i64 = 50;

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // create without truncate: harmless when another process created it first.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(|_| ())
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(|_| ())
}

/// The connection of a [`SqliteBroker`]; `None` once closed because its file was replaced.
#[derive(Debug)]
struct Slot(Mutex<Option<Connection>>);

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        // A panic inside a transaction drops (rolls back) it, so the connection stays usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl sqlite_log_owner::Closable for Slot {
    fn close(&self) {
        *self.lock() = None;
    }
}

/// A connection to the broker file. Thread-safe: one connection behind a mutex, with cached
/// prepared statements.
#[derive(Debug)]
pub struct SqliteBroker {
    path: PathBuf,
    /// Which file `conn` opened (see [`file_identity`]): checked before every statement, because
    /// SQLite keeps writing to a deleted or replaced file as if nothing happened.
    identity: Option<FileIdentity>,
    /// When this connection next looks at the write-ahead log's size (epoch ms).
    next_wal_check_ms: AtomicI64,
    /// Rung after commits that make messages or results available; `None` where unsupported.
    bells: Option<Doorbells>,
    /// Shared with this process's list of open connections (see [`sqlite_log_owner`]).
    conn: Arc<Slot>,
    /// How long to keep retrying SQLITE_BUSY after the busy handler gave up.
    retry_window: Duration,
}

impl SqliteBroker {
    /// Opens (creating if missing, mode 0600) the broker file and its schema.
    pub fn open(path: impl AsRef<Path>, busy_timeout_ms: u64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            create_private(&path).map_err(|e| {
                Error::Connection(format!(
                    "cannot create SQLite broker file {}: {e}",
                    path.display()
                ))
            })?;
        }
        let identity = FileIdentity::of(&path);
        #[cfg(unix)]
        if let Some(file) = identity {
            sqlite_log_owner::claim(&path, file)?;
        }
        let conn = Connection::open(&path).map_err(|e| {
            Error::Connection(format!(
                "cannot open SQLite broker file {}: {e}",
                path.display()
            ))
        })?;
        let busy = Duration::from_millis(busy_timeout_ms);
        conn.busy_handler(Some(wait_while_busy))?;
        conn.set_prepared_statement_cache_capacity(64);
        let bells = Doorbells::open(&path);
        let broker = SqliteBroker {
            path,
            identity,
            next_wal_check_ms: AtomicI64::new(0),
            bells,
            conn: Arc::new(Slot(Mutex::new(Some(conn)))),
            retry_window: busy.max(Duration::from_secs(30)),
        };
        if let Some(file) = identity {
            let conn: Arc<dyn sqlite_log_owner::Closable> = broker.conn.clone();
            sqlite_log_owner::register(file, Arc::downgrade(&conn));
        }
        broker.with_conn(|c| {
            // journal_mode returns a row; WAL persists in the file once set by anyone.
            let _mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.pragma_update(None, "temp_store", "MEMORY")?;
            c.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)?;
            Ok(())
        })?;
        broker.migrate()?;
        Ok(broker)
    }

    fn migrate(&self) -> Result<()> {
        let version = self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version == 0 || version == SCHEMA_VERSION {
                // Every statement is IF NOT EXISTS: tables added within a version appear in
                // files that an earlier build of the same version created.
                tx.execute_batch(SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                tx.commit()?;
                return Ok(SCHEMA_VERSION);
            }
            Ok(version)
        })?;
        if version != SCHEMA_VERSION {
            return Err(Error::Broker(format!(
                "{} has schema version {version}, this rqueue understands {SCHEMA_VERSION}; \
                 use a matching rqueue version or a new broker file",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Runs `f` on the connection, retrying SQLITE_BUSY/LOCKED with backoff. `f` must be a
    /// whole transaction (or a single statement) so a retry repeats it from the start.
    fn with_conn<T>(&self, mut f: impl FnMut(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut slot = self.conn.lock();
        let conn = match (self.check_same_file(), slot.as_mut()) {
            (Ok(()), Some(conn)) => conn,
            (check, _) => {
                // Closed at once: the old file's log is removed only once no connection uses
                // it, and until then no process can open the file now at the path.
                *slot = None;
                return Err(check.err().unwrap_or_else(|| self.replaced()));
            }
        };
        let start = Instant::now();
        let mut backoff = Duration::from_millis(1);
        loop {
            match f(conn) {
                Err(e) if is_busy(&e) && start.elapsed() < self.retry_window => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(e) if is_busy(&e) => {
                    return Err(Error::Broker(format!(
                        "{} stayed locked for {:?}: {e}",
                        self.path.display(),
                        start.elapsed()
                    )))
                }
                other => return other.map_err(Error::from),
            }
        }
    }

    /// Keeps the write-ahead log bounded: at most every [`WAL_CHECK_INTERVAL_MS`], checkpoints it
    /// when it is over [`WAL_LIMIT_BYTES`]. Called after the calls that grow it. A checkpoint that
    /// fails (busy) is tried again at the next check; it never fails the call that wrote.
    fn bound_wal(&self) {
        let now = now_ms();
        let next = self.next_wal_check_ms.load(Ordering::Relaxed);
        if now < next
            || self
                .next_wal_check_ms
                .compare_exchange(
                    next,
                    now + WAL_CHECK_INTERVAL_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let _ = self.checkpoint_if_over(WAL_LIMIT_BYTES);
    }

    /// Checkpoints the write-ahead log into the database and truncates it when it has grown past
    /// `limit_bytes`; returns whether it did. SQLite's automatic checkpoint never resets the log
    /// while some reader is using it, and busy workers always are: without this it grows without
    /// bound (3.8 GB within 30 s under 4 producers and 2 workers here). The TRUNCATE checkpoint
    /// waits (busy handler) for the readers of the moment to finish, holding off new writers.
    pub fn checkpoint_if_over(&self, limit_bytes: u64) -> Result<bool> {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size <= limit_bytes {
            return Ok(false);
        }
        self.with_conn(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|busy| busy == 0)
    }

    /// A checkpoint in `mode` (`PASSIVE`: copies what it can of the write-ahead log into the
    /// database without waiting for readers or writers; `RESTART`: copies it all, holding off
    /// writers, and waits for readers so the next writer restarts the log from its beginning;
    /// it gives up after [`RESTART_WAIT`]). Returns the log's size in frames, or `None` when the
    /// checkpoint could not finish (another one running, or readers that stayed).
    pub fn checkpoint(&self, mode: Checkpoint) -> Result<Option<i64>> {
        let sql = match mode {
            Checkpoint::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            Checkpoint::Restart => "PRAGMA wal_checkpoint(RESTART)",
        };
        self.with_conn(|c| {
            if mode == Checkpoint::Restart {
                c.busy_timeout(RESTART_WAIT)?;
            }
            let done = c.query_row(sql, [], |r| {
                let busy: i64 = r.get(0)?;
                Ok((busy == 0).then_some(r.get::<_, i64>(1)?))
            });
            if mode == Checkpoint::Restart {
                c.busy_handler(Some(wait_while_busy))?;
            }
            done
        })
    }

    fn ring(&self, bell: Bell) {
        if let Some(b) = &self.bells {
            b.ring(bell);
        }
    }

    fn ring_if(&self, cond: bool, bell: Bell) {
        if cond {
            self.ring(bell);
        }
    }

    /// The sequence of `bell` to pass to [`SqliteBroker::wait`]: read it before looking for work.
    pub fn seen(&self, bell: Bell) -> u32 {
        self.bells.as_ref().map_or(0, |b| b.seen(bell))
    }

    /// Waits up to `timeout` for `bell` to ring after `seen` was read (any process using this
    /// file rings it); where there are no bells, sleeps `timeout`.
    pub fn wait(&self, bell: Bell, seen: u32, timeout: Duration) {
        match &self.bells {
            Some(b) => b.wait(bell, seen, timeout),
            None => std::thread::sleep(timeout),
        }
    }

    /// Whether waiting is woken by rings (else it only sleeps, and callers poll).
    pub fn has_bells(&self) -> bool {
        self.bells.is_some()
    }

    /// Fails once the path no longer names the file this connection opened.
    fn check_same_file(&self) -> Result<()> {
        if self.identity.is_none() || FileIdentity::of(&self.path) == self.identity {
            return Ok(());
        }
        Err(self.replaced())
    }

    fn replaced(&self) -> Error {
        Error::Replaced(format!(
            "the SQLite broker file {} was deleted or replaced after this process opened it; \
             nothing more is written to the old file (it would be lost). Restart this process, \
             and every producer and worker using the file, to use the file now at that path",
            self.path.display()
        ))
    }

    fn immediate<T>(
        &self,
        mut f: impl FnMut(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Publishes one message.
    pub fn publish(
        &self,
        queue: &str,
        payload: &[u8],
        priority: u8,
        eta_ms: Option<i64>,
    ) -> Result<()> {
        check_queue(queue)?;
        check_priority(priority)?;
        let now = now_ms();
        self.with_conn(|c| {
            c.prepare_cached(
                "INSERT INTO messages (queue, priority, eta_ms, payload, deliveries, published_ms)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            )?
            .execute(params![queue, priority, eta_ms.unwrap_or(0), payload, now])
        })?;
        self.ring(Bell::Messages);
        self.bound_wal();
        Ok(())
    }

    /// Publishes every message in one transaction (all or none).
    pub fn publish_many(&self, messages: &[NewMessage]) -> Result<()> {
        for m in messages {
            check_queue(&m.queue)?;
            check_priority(m.priority)?;
        }
        if messages.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        self.immediate(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO messages (queue, priority, eta_ms, payload, deliveries, published_ms)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            )?;
            for m in messages {
                stmt.execute(params![
                    m.queue,
                    m.priority,
                    m.eta_ms.unwrap_or(0),
                    m.payload,
                    now
                ])?;
            }
            Ok(())
        })?;
        self.ring(Bell::Messages);
        self.bound_wal();
        Ok(())
    }

    /// Leases up to `limit` due, waiting messages of `queues` to `owner` for `lease_ms`:
    /// priority 0 first across all the queues; within one priority, oldest first in each queue,
    /// taking one from each queue in turn (in the order given), so a long queue does not starve
    /// the others. The consumer rotates the order from one fetch to the next.
    pub fn fetch(
        &self,
        queues: &[String],
        limit: usize,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Vec<Delivery>> {
        let limit = limit.min(MAX_FETCH);
        let mut seen = HashSet::new();
        let queues: Vec<&String> = queues.iter().filter(|q| seen.insert(q.as_str())).collect();
        if limit == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        // Workers poll even while only producers write: they keep the log bounded too.
        self.bound_wal();
        let lease = i64::try_from(lease_ms).unwrap_or(i64::MAX);
        self.immediate(|tx| {
            let now = now_ms();
            // Per queue, the head of its index; merged here. This keeps each step an index walk
            // instead of sorting every waiting message of several queues.
            let mut per_queue: Vec<VecDeque<(i64, i64)>> = Vec::with_capacity(queues.len());
            let mut select = tx.prepare_cached(
                "SELECT priority, id FROM messages
                 WHERE queue = ?1 AND owner IS NULL AND eta_ms <= ?2
                 ORDER BY priority, id LIMIT ?3",
            )?;
            for q in &queues {
                let rows = select.query_map(params![q, now, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
                per_queue.push(rows.collect::<rusqlite::Result<_>>()?);
            }
            let candidates = interleave(per_queue, limit);
            let mut update = tx.prepare_cached(
                "UPDATE messages SET owner = ?2, lease_until_ms = ?3, deliveries = deliveries + 1
                 WHERE id = ?1 RETURNING queue, payload, deliveries",
            )?;
            let until = now.saturating_add(lease);
            let mut out = Vec::with_capacity(candidates.len());
            for (_, id) in candidates {
                let (queue, payload, deliveries): (String, Vec<u8>, u32) = update
                    .query_row(params![id, owner, until], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?;
                out.push(Delivery {
                    tag: id.to_string(),
                    queue,
                    payload,
                    deliveries,
                });
            }
            Ok(out)
        })
    }

    /// Deletes finished messages; returns how many existed.
    pub fn ack<S: AsRef<str>>(&self, tags: &[S]) -> Result<usize> {
        if tags.is_empty() {
            return Ok(0);
        }
        self.immediate(|tx| delete_messages(tx, tags))
    }

    /// Stores result records and acks messages in ONE transaction: a task's result and the
    /// removal of its message become visible together (the worker's usual step after a batch).
    pub fn complete<S: AsRef<str>>(&self, rows: &[ResultRow], tags: &[S]) -> Result<usize> {
        if rows.is_empty() && tags.is_empty() {
            return Ok(0);
        }
        let acked = self.immediate(|tx| {
            write_results(tx, rows)?;
            delete_messages(tx, tags)
        })?;
        if !rows.is_empty() {
            self.ring(Bell::Results);
        }
        Ok(acked)
    }

    /// Returns leased messages that were never started to their queue at their original place,
    /// undoing the delivery count of that lease.
    pub fn requeue<S: AsRef<str>>(&self, tags: &[S]) -> Result<usize> {
        self.put_back(tags, 1)
    }

    /// Returns rejected messages to their queue at their original place, keeping the delivery
    /// count of that lease, so a message rejected again and again reaches `max_deliveries`.
    pub fn release<S: AsRef<str>>(&self, tags: &[S]) -> Result<usize> {
        self.put_back(tags, 0)
    }

    fn put_back<S: AsRef<str>>(&self, tags: &[S], undo_count: i64) -> Result<usize> {
        if tags.is_empty() {
            return Ok(0);
        }
        self.immediate(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE messages SET owner = NULL, lease_until_ms = NULL, deliveries = MAX(deliveries - ?2, 0)
                 WHERE id = ?1 AND owner IS NOT NULL",
            )?;
            let mut n = 0;
            for id in tags.iter().filter_map(|t| row_id(t.as_ref())) {
                n += stmt.execute(params![id, undo_count])?;
            }
            Ok(n)
        })
        .inspect(|&n| self.ring_if(n > 0, Bell::Messages))
    }

    /// Returns every message leased by `owner` (a worker that died) to its queue; those already
    /// delivered `max_deliveries` times are dead-lettered as `worker_lost`.
    /// Returns `(requeued, dead_lettered)`.
    pub fn requeue_owner(&self, owner: &str, max_deliveries: u32) -> Result<(usize, usize)> {
        let now = now_ms();
        self.immediate(|tx| {
            let dead = tx.prepare_cached(
                "INSERT INTO dead_letters (queue, priority, payload, reason, error, deliveries, dead_at_ms)
                 SELECT queue, priority, payload, ?3, ?4, deliveries, ?5 FROM messages
                 WHERE owner = ?1 AND deliveries >= ?2 ORDER BY id",
            )?
            .execute(params![
                owner,
                max_deliveries,
                REASON_WORKER_LOST,
                format!("worker {owner} was lost while holding the message"),
                now
            ])?;
            tx.prepare_cached("DELETE FROM messages WHERE owner = ?1 AND deliveries >= ?2")?
                .execute(params![owner, max_deliveries])?;
            let requeued = tx
                .prepare_cached("UPDATE messages SET owner = NULL, lease_until_ms = NULL WHERE owner = ?1")?
                .execute([owner])?;
            Ok((requeued, dead))
        })
        .inspect(|&(requeued, _)| self.ring_if(requeued > 0, Bell::Messages))
    }

    /// Pushes the lease of each message in `held` that `owner` holds to now + `lease_ms`, and
    /// returns the tags of every message leased to `owner` (those not in `held` are orphans, see
    /// [`crate::transport::consumer`]).
    pub fn extend_leases<S: AsRef<str>>(
        &self,
        owner: &str,
        lease_ms: u64,
        held: &[S],
    ) -> Result<Vec<String>> {
        let until = now_ms().saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX));
        self.immediate(|tx| {
            let mut renew = tx.prepare_cached(
                "UPDATE messages SET lease_until_ms = ?3 WHERE id = ?1 AND owner = ?2",
            )?;
            for id in held.iter().filter_map(|t| t.as_ref().parse::<i64>().ok()) {
                renew.execute(params![id, owner, until])?;
            }
            tx.prepare_cached("SELECT id FROM messages WHERE owner = ?1")?
                .query_map([owner], |r| r.get::<_, i64>(0).map(|id| id.to_string()))?
                .collect()
        })
    }

    /// Returns up to [`SWEEP_BATCH`] expired leases (any owner) to their queue; those already
    /// delivered `max_deliveries` times are dead-lettered as `worker_lost`.
    /// Returns `(requeued, dead_lettered)`.
    pub fn sweep_expired(&self, max_deliveries: u32) -> Result<(usize, usize)> {
        let now = now_ms();
        self.immediate(|tx| {
            let expired: Vec<(i64, u32, Option<String>)> = tx
                .prepare_cached(
                    "SELECT id, deliveries, owner FROM messages
                     WHERE owner IS NOT NULL AND lease_until_ms < ?1 ORDER BY lease_until_ms LIMIT ?2",
                )?
                .query_map(params![now, SWEEP_BATCH], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let (mut requeued, mut dead) = (0, 0);
            let mut insert = tx.prepare_cached(DEAD_LETTER_ONE)?;
            let mut delete = tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
            let mut release =
                tx.prepare_cached("UPDATE messages SET owner = NULL, lease_until_ms = NULL WHERE id = ?1")?;
            for (id, deliveries, owner) in expired {
                if deliveries >= max_deliveries {
                    let error = format!(
                        "lease of {} expired after {deliveries} deliveries",
                        owner.as_deref().unwrap_or("?")
                    );
                    insert.execute(params![id, REASON_WORKER_LOST, error, now])?;
                    delete.execute([id])?;
                    dead += 1;
                } else {
                    requeued += release.execute([id])?;
                }
            }
            Ok((requeued, dead))
        })
        .inspect(|&(requeued, _)| self.ring_if(requeued > 0, Bell::Messages))
    }

    /// Moves a message to the dead-letter table; false when it no longer exists.
    pub fn dead_letter(&self, tag: &str, reason: &str, error: Option<&str>) -> Result<bool> {
        let Some(tag) = row_id(tag) else {
            return Ok(false);
        };
        let now = now_ms();
        self.immediate(|tx| {
            let n = tx
                .prepare_cached(DEAD_LETTER_ONE)?
                .execute(params![tag, reason, error, now])?;
            tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?
                .execute([tag])?;
            Ok(n > 0)
        })
    }

    /// Dead letters, oldest first, optionally of one queue.
    pub fn dead_letters(&self, queue: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, queue, reason, error, deliveries, dead_at_ms, payload FROM dead_letters
                 WHERE ?1 IS NULL OR queue = ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![queue, limit], |r| {
                Ok(DeadLetter {
                    id: r.get::<_, i64>(0)?.to_string(),
                    queue: r.get(1)?,
                    reason: r.get(2)?,
                    error: r.get(3)?,
                    deliveries: r.get(4)?,
                    dead_at_ms: r.get(5)?,
                    payload: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Puts dead letters of `queue` back at its end (due now, delivery count reset); ids that
    /// are not numbers, or name another queue's dead letters, match nothing.
    pub fn requeue_dead<S: AsRef<str>>(&self, queue: &str, ids: &[S]) -> Result<usize> {
        let ids: Vec<i64> = ids.iter().filter_map(|i| i.as_ref().parse().ok()).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        self.immediate(|tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (queue, priority, eta_ms, payload, deliveries, published_ms)
                 SELECT queue, priority, 0, payload, 0, ?3 FROM dead_letters WHERE id = ?1 AND queue = ?2",
            )?;
            let mut delete =
                tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1 AND queue = ?2")?;
            let mut n = 0;
            for id in &ids {
                n += insert.execute(params![id, queue, now])?;
                delete.execute(params![id, queue])?;
            }
            Ok(n)
        })
    }

    /// Deletes dead letters (of one queue, or all); returns how many.
    pub fn purge_dead(&self, queue: Option<&str>) -> Result<usize> {
        self.with_conn(|c| {
            c.prepare_cached("DELETE FROM dead_letters WHERE ?1 IS NULL OR queue = ?1")?
                .execute([queue])
        })
    }

    /// Deletes waiting (not leased) messages of `queues`; returns how many.
    pub fn purge(&self, queues: &[String]) -> Result<usize> {
        self.immediate(|tx| {
            let mut stmt =
                tx.prepare_cached("DELETE FROM messages WHERE queue = ?1 AND owner IS NULL")?;
            let mut n = 0;
            for q in queues {
                n += stmt.execute([q])?;
            }
            Ok(n)
        })
    }

    /// Waiting (not leased) messages of `queue`, including those whose ETA is still ahead.
    pub fn queue_length(&self, queue: &str) -> Result<usize> {
        self.with_conn(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM messages WHERE queue = ?1 AND owner IS NULL")?
                .query_row([queue], |r| r.get::<_, i64>(0))
        })
        .map(|n| usize::try_from(n).unwrap_or(0))
    }

    /// Messages currently leased by `owner`.
    /// Records revoked task ids (kept until `expires_at_ms`) and drops expired ones.
    pub fn revoke(&self, task_ids: &[String], expires_at_ms: i64) -> Result<()> {
        let now = now_ms();
        self.immediate(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO revoked (task_id, revoked_at_ms, expires_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (task_id) DO UPDATE SET revoked_at_ms = excluded.revoked_at_ms,
                     expires_at_ms = MAX(revoked.expires_at_ms, excluded.expires_at_ms)",
            )?;
            for id in task_ids {
                stmt.execute(params![id, now, expires_at_ms])?;
            }
            tx.prepare_cached("DELETE FROM revoked WHERE expires_at_ms < ?1")?
                .execute(params![now])?;
            Ok(())
        })
    }

    /// `(task_id, expires_at_ms)` of unexpired revocations made at or after `since_ms`.
    pub fn revoked_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>> {
        let now = now_ms();
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT task_id, expires_at_ms FROM revoked
                 WHERE revoked_at_ms >= ?1 AND expires_at_ms >= ?2",
            )?;
            let rows = stmt.query_map(params![since_ms, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Posts `body` on a mailbox `channel` (remote control: commands and replies), kept until
    /// `expires_at_ms`; returns its id. Expired posts of every channel are deleted on the way.
    pub fn mailbox_post(&self, channel: &str, body: &[u8], expires_at_ms: i64) -> Result<i64> {
        let now = now_ms();
        self.immediate(|tx| {
            tx.prepare_cached("DELETE FROM mailbox WHERE expires_at_ms < ?1")?
                .execute(params![now])?;
            tx.prepare_cached(
                "INSERT INTO mailbox (channel, body, expires_at_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![channel, body, expires_at_ms])?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// `(id, body)` of the unexpired posts on `channel` with an id above `after_id`, oldest first.
    pub fn mailbox_read(&self, channel: &str, after_id: i64) -> Result<Vec<(i64, Vec<u8>)>> {
        let now = now_ms();
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, body FROM mailbox
                 WHERE channel = ?1 AND id > ?2 AND expires_at_ms >= ?3 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![channel, after_id, now], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect()
        })
    }

    /// The id of the newest post on any channel (0 when there is none): a reader that starts
    /// now reads only what is posted after it.
    pub fn mailbox_last_id(&self) -> Result<i64> {
        self.with_conn(|c| {
            c.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM mailbox")?
                .query_row([], |r| r.get(0))
        })
    }

    /// Stores result records in one transaction (a stored SUCCESS is never overwritten) and
    /// deletes up to `SWEEP_BATCH` expired ones.
    pub fn store_results(&self, rows: &[ResultRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.immediate(|tx| write_results(tx, rows))?;
        self.ring(Bell::Results);
        Ok(())
    }

    /// `(content_type, payload)` of a task's unexpired result, if stored.
    pub fn read_result(&self, task_id: &str) -> Result<Option<(String, Vec<u8>)>> {
        let now = now_ms();
        self.with_conn(|c| {
            c.prepare_cached(
                "SELECT content_type, payload FROM results
                 WHERE task_id = ?1 AND (expires_at_ms IS NULL OR expires_at_ms >= ?2)",
            )?
            .query_row(params![task_id, now], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
        })
    }

    /// Deletes a task's result; true when there was one.
    pub fn delete_result(&self, task_id: &str) -> Result<bool> {
        self.with_conn(|c| {
            c.prepare_cached("DELETE FROM results WHERE task_id = ?1")?
                .execute(params![task_id])
        })
        .map(|n| n > 0)
    }

    /// Sets the number of header results a chord's body waits for (a new run of the chord: any
    /// earlier claim and done mark are cleared). The join's rows expire after `ttl_ms`.
    pub fn chord_set_size(&self, group_id: &str, size: i64, ttl_ms: Option<u64>) -> Result<()> {
        let expires = expiry(ttl_ms);
        self.immediate(|tx| {
            tx.prepare_cached(
                "INSERT INTO chords (group_id, size, expires_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (group_id) DO UPDATE SET size = excluded.size, claim = NULL,
                     claim_until_ms = NULL, done = 0, expires_at_ms = excluded.expires_at_ms",
            )?
            .execute(params![group_id, size, expires])?;
            tx.prepare_cached(
                "DELETE FROM chord_parts WHERE group_id IN (SELECT group_id FROM chords
                 WHERE expires_at_ms IS NOT NULL AND expires_at_ms < ?1 LIMIT ?2)",
            )?
            .execute(params![now_ms(), SWEEP_BATCH])?;
            tx.prepare_cached(
                "DELETE FROM chords WHERE group_id IN (SELECT group_id FROM chords
                 WHERE expires_at_ms IS NOT NULL AND expires_at_ms < ?1 LIMIT ?2)",
            )?
            .execute(params![now_ms(), SWEEP_BATCH])?;
            Ok(())
        })
    }

    /// Makes a chord wait for `n` more header results (a header task replaced by a workflow).
    pub fn chord_add(&self, group_id: &str, n: i64) -> Result<()> {
        self.immediate(|tx| {
            tx.prepare_cached(
                "INSERT INTO chords (group_id, added) VALUES (?1, ?2)
                 ON CONFLICT (group_id) DO UPDATE SET added = added + excluded.added",
            )?
            .execute(params![group_id, n])
            .map(drop)
        })
    }

    /// Counts one header result of a chord, in one transaction: the result of `member` at `index`
    /// is kept once (a redelivered member that runs again is not counted twice), and when every
    /// result is in and nobody else holds the right to fire the body, this call takes it (or, for
    /// the holder of `token`, keeps it) for `claim_ms`. `None` once the body was fired (a late
    /// duplicate changes nothing).
    #[allow(clippy::too_many_arguments)]
    pub fn chord_part_return(
        &self,
        group_id: &str,
        member: &str,
        index: f64,
        payload: &[u8],
        ttl_ms: Option<u64>,
        token: &str,
        claim_ms: u64,
    ) -> Result<Option<ChordCount>> {
        let expires = expiry(ttl_ms);
        let claim_ms = i64::try_from(claim_ms).unwrap_or(i64::MAX);
        self.immediate(|tx| {
            tx.prepare_cached(
                "INSERT INTO chords (group_id, expires_at_ms) VALUES (?1, ?2)
                 ON CONFLICT (group_id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
            )?
            .execute(params![group_id, expires])?;
            let (size, added, claim, claim_until, done): (Option<i64>, i64, Option<String>, Option<i64>, i64) = tx
                .prepare_cached(
                    "SELECT size, added, claim, claim_until_ms, done FROM chords WHERE group_id = ?1",
                )?
                .query_row([group_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?;
            if done != 0 {
                return Ok(None);
            }
            tx.prepare_cached(
                "INSERT OR IGNORE INTO chord_parts (group_id, member, idx, payload) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![group_id, member, index, payload])?;
            let ready: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM chord_parts WHERE group_id = ?1")?
                .query_row([group_id], |r| r.get(0))?;
            let total = size.map(|s| s + added);
            let now = now_ms();
            let ours_or_none = match claim.as_deref() {
                None => true,
                Some(holder) => holder == token,
            };
            let free = ours_or_none || claim_until.is_some_and(|until| until < now);
            let claimed = total == Some(ready) && free;
            if claimed {
                tx.prepare_cached(
                    "UPDATE chords SET claim = ?2, claim_until_ms = ?3 WHERE group_id = ?1",
                )?
                .execute(params![group_id, token, now.saturating_add(claim_ms)])?;
            }
            Ok(Some(ChordCount {
                ready,
                total,
                claimed,
            }))
        })
    }

    /// Keeps (or, when it lapsed and the chord is not done, takes) the right to fire a chord's
    /// body for `claim_ms` more; false when another holds it or the body was fired.
    pub fn chord_renew_claim(&self, group_id: &str, token: &str, claim_ms: u64) -> Result<bool> {
        let until = now_ms().saturating_add(i64::try_from(claim_ms).unwrap_or(i64::MAX));
        self.immediate(|tx| {
            tx.prepare_cached(
                "UPDATE chords SET claim = ?2, claim_until_ms = ?3
                 WHERE group_id = ?1 AND done = 0 AND size IS NOT NULL
                   AND (claim = ?2 OR claim IS NULL OR claim_until_ms < ?4)",
            )?
            .execute(params![group_id, token, until, now_ms()])
            .map(|n| n > 0)
        })
    }

    /// The counted header results of a chord, in header order.
    pub fn chord_parts(&self, group_id: &str) -> Result<Vec<Vec<u8>>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT payload FROM chord_parts WHERE group_id = ?1 ORDER BY idx, member",
            )?;
            let rows = stmt.query_map([group_id], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// The body was fired by the holder of `token`: its parts are deleted and the chord is
    /// marked done (kept `done_ttl_ms`, so late duplicates of header tasks change nothing).
    /// False when `token` no longer holds the claim.
    pub fn chord_done(&self, group_id: &str, token: &str, done_ttl_ms: u64) -> Result<bool> {
        let expires = expiry(Some(done_ttl_ms));
        self.immediate(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE chords SET done = 1, claim = NULL, expires_at_ms = ?3
                     WHERE group_id = ?1 AND claim = ?2",
                )?
                .execute(params![group_id, token, expires])?;
            if n > 0 {
                tx.prepare_cached("DELETE FROM chord_parts WHERE group_id = ?1")?
                    .execute([group_id])?;
            }
            Ok(n > 0)
        })
    }

    /// Takes the leader lease of the periodic schedule `name` for `token` (when free or lapsed),
    /// or renews it for its holder, for `ttl_ms` from now; false when another holds it.
    pub fn beat_lease(&self, name: &str, token: &str, ttl_ms: u64) -> Result<bool> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        self.immediate(|tx| {
            tx.prepare_cached(
                "INSERT INTO beat_leases (name, token, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET token = excluded.token, until_ms = excluded.until_ms
                 WHERE beat_leases.token = excluded.token OR beat_leases.until_ms < ?4",
            )?
            .execute(params![name, token, until, now])
            .map(|n| n > 0)
        })
    }

    /// Gives the lease of `name` up if `token` holds it (a leader stopping: the next one need not
    /// wait for it to lapse); true when it did.
    pub fn beat_release(&self, name: &str, token: &str) -> Result<bool> {
        self.with_conn(|c| {
            c.prepare_cached("DELETE FROM beat_leases WHERE name = ?1 AND token = ?2")?
                .execute(params![name, token])
        })
        .map(|n| n > 0)
    }

    /// `(entry, tick_ms)`: the last tick sent of each entry of schedule `name`.
    pub fn beat_runs(&self, name: &str) -> Result<Vec<(String, i64)>> {
        self.with_conn(|c| {
            let mut stmt =
                c.prepare_cached("SELECT entry, tick_ms FROM beat_runs WHERE name = ?1")?;
            let rows = stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Records the tick `tick_ms` of `entry` if `token` holds the unexpired lease of `name` and no
    /// tick at or after it was recorded (in `tx`): what makes a tick once-only.
    fn beat_record(
        tx: &rusqlite::Transaction<'_>,
        name: &str,
        token: &str,
        entry: &str,
        tick_ms: i64,
        now: i64,
    ) -> rusqlite::Result<BeatSend> {
        let leader: Option<i64> = tx
            .prepare_cached(
                "SELECT 1 FROM beat_leases WHERE name = ?1 AND token = ?2 AND until_ms >= ?3",
            )?
            .query_row(params![name, token, now], |r| r.get(0))
            .optional()?;
        if leader.is_none() {
            return Ok(BeatSend::NotLeader);
        }
        let last: Option<i64> = tx
            .prepare_cached("SELECT tick_ms FROM beat_runs WHERE name = ?1 AND entry = ?2")?
            .query_row(params![name, entry], |r| r.get(0))
            .optional()?;
        if last.is_some_and(|last| last >= tick_ms) {
            return Ok(BeatSend::AlreadySent);
        }
        tx.prepare_cached(
            "INSERT INTO beat_runs (name, entry, tick_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name, entry) DO UPDATE SET tick_ms = excluded.tick_ms",
        )?
        .execute(params![name, entry, tick_ms])?;
        Ok(BeatSend::Sent)
    }

    /// Sends the tick `tick_ms` of `entry` in one transaction with the checks that make it
    /// once-only: `token` holds the unexpired lease of `name` (a deposed leader is fenced off), and
    /// no tick at or after `tick_ms` was sent; the tick is recorded and the message published.
    /// [`BeatSend::NotLeader`] or [`BeatSend::AlreadySent`] otherwise, with nothing written.
    pub fn beat_send(
        &self,
        name: &str,
        token: &str,
        entry: &str,
        tick_ms: i64,
        message: &NewMessage,
    ) -> Result<BeatSend> {
        check_queue(&message.queue)?;
        check_priority(message.priority)?;
        let now = now_ms();
        let sent = self.immediate(|tx| {
            let recorded = Self::beat_record(tx, name, token, entry, tick_ms, now)?;
            if recorded == BeatSend::Sent {
                tx.prepare_cached(
                    "INSERT INTO messages (queue, priority, eta_ms, payload, deliveries, published_ms)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                )?
                .execute(params![
                    message.queue,
                    message.priority,
                    message.eta_ms.unwrap_or(0),
                    message.payload,
                    now
                ])?;
            }
            Ok(recorded)
        })?;
        self.ring_if(sent == BeatSend::Sent, Bell::Messages);
        Ok(sent)
    }

    /// Records the tick like [`SqliteBroker::beat_send`] without publishing anything: for a beat
    /// whose messages go to another broker (RabbitMQ), which publishes after this succeeded.
    pub fn beat_claim(
        &self,
        name: &str,
        token: &str,
        entry: &str,
        tick_ms: i64,
    ) -> Result<BeatSend> {
        let now = now_ms();
        self.immediate(|tx| Self::beat_record(tx, name, token, entry, tick_ms, now))
    }

    /// Tags of the messages `owner` holds (a dead worker's, before its leases are returned).
    pub fn leased_tags(&self, owner: &str) -> Result<Vec<String>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached("SELECT id FROM messages WHERE owner = ?1")?;
            let rows = stmt.query_map([owner], |r| r.get::<_, i64>(0))?;
            rows.map(|r| r.map(|id| id.to_string())).collect()
        })
    }

    pub fn leased_count(&self, owner: &str) -> Result<usize> {
        self.with_conn(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM messages WHERE owner = ?1")?
                .query_row([owner], |r| r.get::<_, i64>(0))
        })
        .map(|n| usize::try_from(n).unwrap_or(0))
    }

    /// Lease expiry (epoch ms) and owner of a message, if it exists; for tests and inspection.
    pub fn lease_of(&self, tag: &str) -> Result<Option<(Option<String>, Option<i64>)>> {
        let Some(tag) = row_id(tag) else {
            return Ok(None);
        };
        self.with_conn(|c| {
            c.prepare_cached("SELECT owner, lease_until_ms FROM messages WHERE id = ?1")?
                .query_row([tag], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
    }
}

transport_by_inherent_methods!(SqliteBroker);
