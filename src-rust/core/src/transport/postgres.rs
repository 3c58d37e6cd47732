//! The PostgreSQL broker: messages, dead letters, results, revocations and the control mailbox
//! in tables of one schema (default `rqueue`) of a database shared by producers and workers.
//!
//! The layout is the SQLite transport's, and so are the semantics:
//! - `messages`: a message is *waiting* when `owner IS NULL` and *due* when also
//!   `eta_ms <= now`. A fetch leases a batch in ONE statement (`UPDATE ... FROM (SELECT ... FOR
//!   UPDATE SKIP LOCKED)`): owner, lease expiry and `deliveries + 1` are written by the statement
//!   that takes the rows, so no crash can lose a message in between, and concurrent fetchers skip
//!   each other's rows instead of waiting. Ids come from a sequence and are never reused: FIFO
//!   within a priority is id order (0 is the highest priority).
//! - `dead_letters`, `results` (a stored SUCCESS is final), `revoked`, `mailbox`, and the joins of
//!   chords (`chords`, `chord_parts`; see [`PgBroker::chord_part_return`]), and periodic tasks'
//!   leader lease and last tick per entry (`beat_leases`, `beat_runs`; see [`PgBroker::beat_send`]).
//! - ETAs, leases and result expiries are compared with the *server's* clock, so workers whose
//!   clocks disagree still agree on which lease has expired. Revocations and mailbox posts keep
//!   the callers' times (callers pass their expiry and ask "since when" on their own clock).
//!
//! Wake-up: a statement that makes messages available also calls `pg_notify` on the schema's
//! channel (`<schema>.messages`, the queue name as payload); the notification is sent when that
//! transaction commits, so a listener never looks before the rows are visible. Consumers `LISTEN`
//! (see `postgres_consumer`) and poll only as a bounded fallback. Likewise a transaction that
//! stores results notifies `<schema>.results`, which clients waiting for a result listen on.
//!
//! Tables are created on first use by versioned migrations recorded in `<schema>.migrations`
//! (applied under an advisory lock, so concurrent first users do not race): an upgrade adds a
//! migration, and no one runs SQL by hand.
//!
//! TLS: `sslmode=require` / `verify-full` and `sslrootcert`, as libpq reads them (see
//! `postgres_tls`).
//!
//! A server that stops answering (frozen, wedged) fails the request waiting on it after the
//! reply timeout (`reply_timeout=` seconds in the URL, default 30) with [`Error::NoReply`], and
//! the connection is reopened by the next call: see `postgres_deadline`. (Connections over a
//! unix socket have no reply timeout.)
//!
//! PgBouncer: every statement names its schema and uses no session state, so the handles of
//! producers and the result backend work through a transaction-mode pool; a consumer's LISTEN
//! needs a session (a direct connection or session-mode pool), else it falls back to polling.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use postgres::config::{Host, SslMode, SslNegotiation};
use postgres::{Client, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};
use crate::prefetch::Delivery;
use crate::transport::postgres_deadline::{
    is_silence, split_reply_timeout, Deadline, PgConnect, REPLY_TIMEOUT,
};
use crate::transport::postgres_tls::{connector, split_tls, TlsMode};
use crate::transport::redis::mask_url;
pub use crate::transport::sqlite::ChordCount;
use crate::transport::{check_priority, check_queue, transport_by_inherent_methods};
use crate::transport::{now_ms, BeatSend, DeadLetter, NewMessage, ResultRow, REASON_WORKER_LOST};

/// The schema used when none is named.
pub const DEFAULT_SCHEMA: &str = "rqueue";
/// Most messages leased by one [`PgBroker::fetch`] call.
pub const MAX_FETCH: usize = 10_000;
/// Most expired leases (and expired result rows) handled by one sweep.
pub const SWEEP_BATCH: i64 = 500;
/// How long connecting may take when the URL does not say (`connect_timeout=` in seconds).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long data sent may stay unacknowledged by the server's host before the connection fails.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest single wait for a results notification while the listener is held.
const RESULTS_WAIT_SLICE: Duration = Duration::from_millis(20);
/// How often a thread whose client's listener is held by another thread looks at the count.
const RESULTS_WATCH_INTERVAL: Duration = Duration::from_micros(200);
/// Expired results are deleted by writers at most this often per handle (one extra statement).
const RESULT_CLEANUP_INTERVAL_MS: i64 = 1_000;
/// Notification payloads longer than this (a very long queue name) are sent empty: every
/// listener wakes (pg_notify refuses payloads of 8000 bytes and more).
const NOTIFY_PAYLOAD_MAX_BYTES: usize = 200;

/// The server's clock in epoch milliseconds, as SQL.
const NOW: &str = "(floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint";

/// The migrations, in order: migration `i` brings the schema to version `i + 1`. `{s}` is the
/// quoted schema. Never edit one that was released; append a new one.
/// 1: messages, dead letters, results, revocations, mailbox. 2: chord joins (`chords`, `chord_parts`).
/// 3: periodic tasks' leader lease and last ticks (`beat_leases`, `beat_runs`).
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE {s}.messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue TEXT NOT NULL,
    priority SMALLINT NOT NULL DEFAULT 0,
    eta_ms BIGINT NOT NULL DEFAULT 0,
    payload BYTEA NOT NULL,
    owner TEXT,
    lease_until_ms BIGINT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    published_ms BIGINT NOT NULL
);
CREATE INDEX messages_waiting ON {s}.messages (queue, priority, id) WHERE owner IS NULL;
CREATE INDEX messages_owner ON {s}.messages (owner) WHERE owner IS NOT NULL;
CREATE INDEX messages_lease ON {s}.messages (lease_until_ms) WHERE owner IS NOT NULL;
CREATE INDEX messages_eta ON {s}.messages (queue, eta_ms) WHERE owner IS NULL AND eta_ms > 0;
CREATE TABLE {s}.dead_letters (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue TEXT NOT NULL,
    priority SMALLINT NOT NULL DEFAULT 0,
    payload BYTEA NOT NULL,
    reason TEXT NOT NULL,
    error TEXT,
    deliveries INTEGER NOT NULL,
    dead_at_ms BIGINT NOT NULL
);
CREATE INDEX dead_letters_queue ON {s}.dead_letters (queue, id);
CREATE TABLE {s}.results (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    content_type TEXT NOT NULL,
    payload BYTEA NOT NULL,
    expires_at_ms BIGINT
);
CREATE INDEX results_expiry ON {s}.results (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
CREATE TABLE {s}.revoked (
    task_id TEXT PRIMARY KEY,
    revoked_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX revoked_at ON {s}.revoked (revoked_at_ms);
CREATE TABLE {s}.mailbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel TEXT NOT NULL,
    body BYTEA NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX mailbox_channel ON {s}.mailbox (channel, id);
CREATE INDEX mailbox_expiry ON {s}.mailbox (expires_at_ms);
",
    "
CREATE TABLE {s}.chords (
    group_id TEXT PRIMARY KEY,
    size BIGINT,
    added BIGINT NOT NULL DEFAULT 0,
    claim TEXT,
    claim_until_ms BIGINT,
    done BOOLEAN NOT NULL DEFAULT false,
    expires_at_ms BIGINT
);
CREATE INDEX chords_expiry ON {s}.chords (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
CREATE TABLE {s}.chord_parts (
    group_id TEXT NOT NULL,
    member TEXT NOT NULL,
    idx DOUBLE PRECISION NOT NULL,
    payload BYTEA NOT NULL,
    PRIMARY KEY (group_id, member)
);
",
    "
CREATE TABLE {s}.beat_leases (
    name TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
CREATE TABLE {s}.beat_runs (
    name TEXT NOT NULL,
    entry TEXT NOT NULL,
    tick_ms BIGINT NOT NULL,
    PRIMARY KEY (name, entry)
);
",
];

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Checks a schema name: lowercase letters, digits and `_`, not starting with a digit, at most 63
/// bytes (PostgreSQL's identifier limit), so it is used quoted without any escaping question.
pub fn check_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit()
        && !schema.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "PostgreSQL schema name {schema:?} is not usable; use 1 to 63 lowercase letters, digits \
             and _, not starting with a digit or pg_ (e.g. rqueue)"
        )))
    }
}

/// The channel notified when messages become available, for a schema.
pub fn channel_of(schema: &str) -> String {
    format!("{schema}.messages")
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgresql://` or `postgres://` URL (libpq's key=value form is refused: it cannot be masked).
    pub url: String,
    pub schema: String,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_string(),
        }
    }
}

/// A statement's SQL with the schema and the server clock filled in.
fn render(template: &str, schema_q: &str) -> String {
    template.replace("{s}", schema_q).replace("{now}", NOW)
}

/// One open connection with its prepared statements (prepared once per connection: one round
/// trip per later call instead of two).
struct Conn {
    client: Client,
    schema_q: String,
    stmts: HashMap<&'static str, Statement>,
}

impl Conn {
    /// The prepared statement of `template` (see [`render`]).
    fn prep(&mut self, template: &'static str) -> std::result::Result<Statement, postgres::Error> {
        if let Some(s) = self.stmts.get(template) {
            return Ok(s.clone());
        }
        let stmt = self.client.prepare(&render(template, &self.schema_q))?;
        self.stmts.insert(template, stmt.clone());
        Ok(stmt)
    }
}

/// Whether `e` means the connection is unusable (it is then dropped and reopened).
fn is_connection_error(e: &postgres::Error) -> bool {
    e.is_closed() || e.as_db_error().is_none()
}

/// A connection to one database and schema. Thread-safe: one connection behind a mutex, reopened
/// on the next call after a connection error.
pub struct PgBroker {
    config: PgConfig,
    pg: postgres::Config,
    masked: String,
    schema_q: String,
    channel: String,
    /// The TLS connector (`sslmode=require`/`verify-full`); None for a plain connection.
    tls: Option<MakeRustlsConnect>,
    /// The reply timeout of this handle's connections (see `postgres_deadline`).
    deadline: Deadline,
    /// Connections over a unix socket: plain, without the reply timeout's stream.
    unix_socket: bool,
    conn: Mutex<Option<Conn>>,
    migrated: AtomicBool,
    next_cleanup_ms: AtomicI64,
    /// Every connection this handle opens `LISTEN`s on [`PgBroker::channel`] (a consumer's).
    listen: bool,
    /// Notified by every transaction that stores results (`<schema>.results`).
    results_channel: String,
    /// A connection listening on `results_channel`, opened by the first `results_seen`.
    results_listener: Mutex<Option<Conn>>,
    /// Results notifications received (and listener reconnections): the mark of `wait_results`.
    results_seen: AtomicU32,
}

impl std::fmt::Debug for PgBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PgBroker({}, schema {})",
            self.masked, self.config.schema
        )
    }
}

impl PgBroker {
    /// Validates the URL and schema and connects (creating or upgrading the tables).
    pub fn connect(config: PgConfig) -> Result<Self> {
        let b = Self::new_lazy(config)?;
        b.with_conn(|_| Ok(()))?;
        Ok(b)
    }

    /// Validates the URL and schema; connects on first use.
    pub fn new_lazy(config: PgConfig) -> Result<Self> {
        let masked = mask_url(&config.url);
        let scheme = config.url.split("://").next().unwrap_or("");
        if !config.url.contains("://") || !matches!(scheme, "postgresql" | "postgres") {
            return Err(Error::Config(format!(
                "{masked}: not a PostgreSQL URL; use postgresql://[user[:password]@]host[:port]/database"
            )));
        }
        check_schema(&config.schema)?;
        let (url, reply_timeout) = split_reply_timeout(&config.url)
            .map_err(|e| Error::Config(format!("{masked}: {e}")))?;
        let (plain_url, tls_mode, client_cert) =
            split_tls(&url).map_err(|e| Error::Config(format!("{masked}: {e}")))?;
        let mut pg = postgres::Config::from_str(&plain_url).map_err(|e| {
            Error::Config(format!(
                "{masked}: not a usable PostgreSQL URL ({e}); use \
                 postgresql://[user[:password]@]host[:port]/database[?connect_timeout=5&sslmode=verify-full]"
            ))
        })?;
        // TLS is negotiated here (see `postgres_tls`), never left to the client's `prefer`. A
        // plain TCP connection goes through `PgConnect` too, as a "TLS" of direct negotiation
        // that adds only the reply deadline (no SSLRequest is sent; the server sees plain text).
        let unix_socket = pg.get_hosts().iter().any(|h| matches!(h, Host::Unix(_)));
        if tls_mode == TlsMode::Off {
            if unix_socket {
                pg.ssl_mode(SslMode::Disable);
            } else {
                pg.ssl_mode(SslMode::Require)
                    .ssl_negotiation(SslNegotiation::Direct);
            }
        } else {
            pg.ssl_mode(SslMode::Require);
        }
        let tls = connector(&tls_mode, client_cert.as_ref())
            .map_err(|e| Error::Config(format!("{masked}: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("rqueue");
        }
        // A dead server (host gone, cable cut) is noticed within about a minute even on an idle
        // connection, instead of after the kernel's two hours; data it never acknowledges fails
        // the connection after TCP_USER_TIMEOUT. (A server that is up but frozen still acknowledges:
        // a statement to it waits until it answers.)
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3);
        if pg.get_tcp_user_timeout().is_none() {
            pg.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        let schema_q = format!("\"{}\"", config.schema);
        let channel = channel_of(&config.schema);
        let results_channel = format!("{}.results", config.schema);
        Ok(PgBroker {
            results_channel,
            config,
            pg,
            masked,
            schema_q,
            channel,
            tls,
            deadline: Deadline::new(reply_timeout.unwrap_or(REPLY_TIMEOUT)),
            unix_socket,
            conn: Mutex::new(None),
            migrated: AtomicBool::new(false),
            next_cleanup_ms: AtomicI64::new(0),
            listen: false,
            results_listener: Mutex::new(None),
            results_seen: AtomicU32::new(0),
        })
    }

    /// Connects a handle whose every connection `LISTEN`s for new messages (see
    /// [`PgBroker::wait_for_notification`]), so a reconnect never loses the subscription.
    pub fn connect_listening(config: PgConfig) -> Result<Self> {
        let mut b = Self::new_lazy(config)?;
        b.listen = true;
        b.with_conn(|_| Ok(()))?;
        Ok(b)
    }

    /// Payloads of the notifications received on this handle's connection: those already
    /// buffered, or (when there are none) the first to arrive within `wait`. Empty when the
    /// connection is not listening or nothing came.
    pub fn notifications(&self, wait: Option<Duration>) -> Result<Vec<String>> {
        if !self.listen {
            return Ok(Vec::new());
        }
        self.with_conn(|c| {
            let mut notes = c.client.notifications();
            let mut got = Vec::new();
            {
                let mut pending = notes.iter();
                while let Some(n) = pending.next()? {
                    got.push(n.payload().to_string());
                }
            }
            if got.is_empty() {
                if let Some(wait) = wait {
                    if let Some(n) = notes.timeout_iter(wait).next()? {
                        got.push(n.payload().to_string());
                    }
                }
            }
            Ok(got)
        })
    }

    /// The URL with its password masked.
    pub fn masked_url(&self) -> &str {
        &self.masked
    }

    pub fn schema(&self) -> &str {
        &self.config.schema
    }

    /// The channel to `LISTEN` on for new messages.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn lock(&self) -> MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a new connection (and, the first time, brings the schema up to date).
    fn open(&self) -> Result<Conn> {
        let connected = if self.unix_socket && self.tls.is_none() {
            self.pg.connect(NoTls)
        } else {
            self.pg.connect(PgConnect {
                tls: self.tls.clone(),
                deadline: self.deadline.clone(),
            })
        };
        let client = connected.map_err(|e| {
            let hint = if self.tls.is_some() {
                "does the server take TLS (ssl=on), does its certificate chain to sslrootcert (or \
                 the system's roots) and name this host, and, where it asks for a client \
                 certificate, do sslcert and sslkey name one it accepts (signed by a CA of its \
                 ssl_ca_file, for this user)?"
            } else {
                "is PostgreSQL running there, and do the user, password and database exist?"
            };
            Error::Connection(format!("{} ({}); {hint}", self.masked, describe(&e)))
        })?;
        let mut conn = Conn {
            client,
            schema_q: self.schema_q.clone(),
            stmts: HashMap::new(),
        };
        if !self.migrated.load(Ordering::Relaxed) {
            self.migrate(&mut conn.client)?;
            self.migrated.store(true, Ordering::Relaxed);
        }
        if self.listen {
            let listen = format!("LISTEN \"{}\"", self.channel);
            conn.client
                .batch_execute(&listen)
                .map_err(|e| self.error(&e))?;
        }
        Ok(conn)
    }

    /// Applies the migrations this database lacks, in one transaction under an advisory lock.
    fn migrate(&self, client: &mut Client) -> Result<()> {
        let schema = self.config.schema.clone();
        let run = |client: &mut Client| -> std::result::Result<i32, postgres::Error> {
            let mut tx = client.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('rqueue.migrate.' || $1::text))",
                &[&schema],
            )?;
            tx.batch_execute(&render(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.migrations (
                     version INTEGER PRIMARY KEY,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                &self.schema_q,
            ))?;
            let version: i32 = tx
                .query_one(
                    &render(
                        "SELECT COALESCE(MAX(version), 0) FROM {s}.migrations",
                        &self.schema_q,
                    ),
                    &[],
                )?
                .get(0);
            for (i, sql) in MIGRATIONS.iter().enumerate() {
                let to = i32::try_from(i + 1).unwrap_or(i32::MAX);
                if to > version {
                    tx.batch_execute(&render(sql, &self.schema_q))?;
                    tx.execute(
                        &render(
                            "INSERT INTO {s}.migrations (version) VALUES ($1)",
                            &self.schema_q,
                        ),
                        &[&to],
                    )?;
                }
            }
            tx.commit()?;
            Ok(version)
        };
        // A migration may build indexes on large tables, and others wait for its lock: no deadline.
        let found = self
            .deadline
            .lifted(|| run(client))
            .map_err(|e| self.error(&e))?;
        if found > SCHEMA_VERSION {
            return Err(Error::Broker(format!(
                "{}: schema {} is at migration {found}, this rqueue knows up to {SCHEMA_VERSION}; \
                 upgrade rqueue (or use another schema)",
                self.masked, self.config.schema
            )));
        }
        Ok(())
    }

    /// The error of a failed statement, naming the server.
    fn error(&self, e: &postgres::Error) -> Error {
        if let Some(limit) = is_silence(e) {
            return Error::NoReply(format!(
                "{}: no answer within {:.1} s (reply_timeout): the server is frozen, overloaded or \
                 cut off; whether the request took effect is unknown (the connection is reopened)",
                self.masked,
                limit.as_secs_f64()
            ));
        }
        if is_connection_error(e) {
            Error::Connection(format!(
                "{}: the connection failed ({}); the request may or may not have been carried out",
                self.masked,
                describe(e)
            ))
        } else {
            Error::Broker(format!("postgresql ({}): {}", self.masked, describe(e)))
        }
    }

    /// Runs `f` on the connection (opened first when there is none); a connection error drops it
    /// so the next call reconnects.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut guard = self.lock();
        let conn = match guard.as_mut() {
            Some(c) if !c.client.is_closed() => c,
            _ => guard.insert(self.open()?),
        };
        f(conn).map_err(|e| {
            if is_connection_error(&e) {
                *guard = None;
            }
            self.error(&e)
        })
    }

    /// Like `with_conn`, for requests that may safely run twice (acks, renewals, reads): one that
    /// failed because the connection had broken (a restarted server) is sent again on a new one.
    fn with_conn_retry<T>(
        &self,
        mut f: impl FnMut(&mut Conn) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        match self.with_conn(&mut f) {
            Err(Error::Connection(_)) => self.with_conn(f),
            other => other,
        }
    }

    /// The notification payload naming `queue` (empty for a very long name: wakes everyone).
    fn payload_of(queue: &str) -> &str {
        if queue.len() <= NOTIFY_PAYLOAD_MAX_BYTES {
            queue
        } else {
            ""
        }
    }

    /// Publishes one message; listeners are notified when it is due now.
    pub fn publish(
        &self,
        queue: &str,
        payload: &[u8],
        priority: u8,
        eta_ms: Option<i64>,
    ) -> Result<()> {
        check_queue(queue)?;
        check_priority(priority)?;
        let priority = i16::from(priority);
        let eta = eta_ms.unwrap_or(0);
        let note = Self::payload_of(queue);
        self.with_conn(|c| {
            let stmt = c.prep(
                "WITH ins AS (
                    INSERT INTO {s}.messages (queue, priority, eta_ms, payload, published_ms)
                    VALUES ($1, $2, $3, $4, {now}) RETURNING eta_ms)
                 SELECT pg_notify($5, $6) FROM ins WHERE ins.eta_ms <= {now}",
            )?;
            c.client
                .execute(
                    &stmt,
                    &[&queue, &priority, &eta, &payload, &self.channel, &note],
                )
                .map(drop)
        })
    }

    /// Publishes every message in one statement (all or none); each queue with a message due now
    /// is notified once.
    pub fn publish_many(&self, messages: &[NewMessage]) -> Result<()> {
        for m in messages {
            check_queue(&m.queue)?;
            check_priority(m.priority)?;
        }
        if messages.is_empty() {
            return Ok(());
        }
        let queues: Vec<&str> = messages.iter().map(|m| m.queue.as_str()).collect();
        let priorities: Vec<i16> = messages.iter().map(|m| i16::from(m.priority)).collect();
        let etas: Vec<i64> = messages.iter().map(|m| m.eta_ms.unwrap_or(0)).collect();
        let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
        self.with_conn(|c| {
            let stmt = c.prep(
                "WITH ins AS (
                    INSERT INTO {s}.messages (queue, priority, eta_ms, payload, published_ms)
                    SELECT q, p, e, b, {now}
                    FROM unnest($1::text[], $2::smallint[], $3::bigint[], $4::bytea[]) WITH ORDINALITY
                         AS m(q, p, e, b, n)
                    ORDER BY n
                    RETURNING queue, eta_ms)
                 SELECT pg_notify($5, CASE WHEN octet_length(q) <= $6 THEN q ELSE '' END)
                 FROM (SELECT DISTINCT queue AS q FROM ins WHERE eta_ms <= {now}) due",
            )?;
            let max = i32::try_from(NOTIFY_PAYLOAD_MAX_BYTES).unwrap_or(i32::MAX);
            c.client
                .execute(
                    &stmt,
                    &[&queues, &priorities, &etas, &payloads, &self.channel, &max],
                )
                .map(drop)
        })
    }

    /// Leases up to `limit` due, waiting messages of `queues` to `owner` for `lease_ms`, in one
    /// statement: priority 0 first across all the queues; within one priority, oldest first in
    /// each queue, one from each queue in turn (in the order given), so a long queue does not
    /// starve the others. Rows another fetcher is taking are skipped, not waited for.
    pub fn fetch(
        &self,
        queues: &[String],
        limit: usize,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Vec<Delivery>> {
        let limit = limit.min(MAX_FETCH);
        let mut seen = std::collections::HashSet::new();
        let queues: Vec<&str> = queues
            .iter()
            .map(String::as_str)
            .filter(|q| seen.insert(*q))
            .collect();
        if limit == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let lease = i64::try_from(lease_ms).unwrap_or(i64::MAX);
        let mut rows = self.with_conn(|c| match queues.as_slice() {
            // One queue (the common case): no ranking across queues to do.
            [queue] => {
                let stmt = c.prep(FETCH_ONE_SQL)?;
                c.client.query(&stmt, &[queue, &limit, &owner, &lease])
            }
            _ => {
                let stmt = c.prep(FETCH_SQL)?;
                c.client.query(&stmt, &[&queues, &limit, &owner, &lease])
            }
        })?;
        // RETURNING keeps no order: put the batch back in the order it was picked (the rank of
        // FETCH_SQL, unique; or the priority of FETCH_ONE_SQL, then the id).
        rows.sort_by_key(|r| (r.get::<_, i64>(4), r.get::<_, i64>(0)));
        rows.iter()
            .map(|r| {
                let deliveries: i32 = r.get(3);
                Ok(Delivery {
                    tag: r.get::<_, i64>(0).to_string(),
                    queue: r.get(1),
                    payload: r.get(2),
                    deliveries: u32::try_from(deliveries).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Milliseconds until the next waiting ETA message of `queues` falls due (server clock), if any.
    pub fn next_eta_in_ms(&self, queues: &[String]) -> Result<Option<i64>> {
        self.with_conn(|c| {
            let stmt = c.prep(
                "SELECT MIN(eta_ms) - {now} FROM {s}.messages
                 WHERE queue = ANY($1) AND owner IS NULL AND eta_ms > 0",
            )?;
            Ok(c.client.query_one(&stmt, &[&queues])?.get(0))
        })
    }

    /// Deletes finished messages; returns how many existed.
    pub fn ack<S: AsRef<str>>(&self, tags: &[S]) -> Result<usize> {
        let ids = row_ids(tags);
        if ids.is_empty() {
            return Ok(0);
        }
        self.with_conn_retry(|c| {
            let stmt = c.prep("DELETE FROM {s}.messages WHERE id = ANY($1)")?;
            c.client.execute(&stmt, &[&ids])
        })
        .map(count)
    }

    /// Stores result records and acks messages in ONE transaction: a task's result and the
    /// removal of its message become visible together (the worker's usual step after a batch).
    pub fn complete<S: AsRef<str>>(&self, rows: &[ResultRow], tags: &[S]) -> Result<usize> {
        if rows.is_empty() && tags.is_empty() {
            return Ok(0);
        }
        let ids = row_ids(tags);
        let r = ResultColumns::of(rows);
        let acked = self.with_conn(|c| {
            let stmt = c.prep(COMPLETE_SQL)?;
            let row = c.client.query_one(
                &stmt,
                &[
                    &r.ids,
                    &r.statuses,
                    &r.content_types,
                    &r.payloads,
                    &r.ttls,
                    &ids,
                    &self.results_channel,
                ],
            )?;
            Ok(count_i64(row.get(0)))
        })?;
        if !rows.is_empty() && self.cleanup_due() {
            // Housekeeping, not part of the completion: a failure here fails nothing stored.
            self.with_conn(|c| {
                let stmt = c.prep(EXPIRE_RESULTS)?;
                c.client.execute(&stmt, &[&SWEEP_BATCH])
            })?;
        }
        Ok(acked)
    }

    /// The results bell's mark: read it before reading a result, pass it to
    /// [`PgBroker::wait_results`]. The first call opens this handle's listening connection.
    pub fn results_seen(&self) -> Result<u32> {
        // While another thread of this client holds the listener, it counts what arrives.
        self.drain_results(None)?;
        Ok(self.results_seen.load(Ordering::SeqCst))
    }

    /// Waits up to `timeout` for results to be stored (by any client, in this schema) after
    /// `seen` was read.
    pub fn wait_results(&self, seen: u32, timeout: Duration) -> Result<()> {
        // One thread at a time waits on the listener, in short slices; the others watch the count
        // it keeps, so a waiting thread never holds up another one's mark.
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let now = std::time::Instant::now();
            if self.results_seen.load(Ordering::SeqCst) != seen || now >= deadline {
                return Ok(());
            }
            if !self.drain_results(Some((deadline - now).min(RESULTS_WAIT_SLICE)))? {
                std::thread::sleep((deadline - now).min(RESULTS_WATCH_INTERVAL));
            }
        }
    }

    /// Counts the results notifications received (the first within `wait` when none is pending)
    /// on the listening connection. A broken one (a restarted server) is replaced once; opening
    /// one counts as a notification, since results may have been stored meanwhile.
    /// Returns false, doing nothing, when another thread holds the listener (it counts).
    fn drain_results(&self, wait: Option<Duration>) -> Result<bool> {
        let mut guard = match self.results_listener.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
        };
        let mut retried = false;
        loop {
            let conn = match guard.as_mut() {
                Some(c) if !c.client.is_closed() => c,
                _ => {
                    let mut conn = self.open()?;
                    let listen = format!("LISTEN \"{}\"", self.results_channel);
                    conn.client
                        .batch_execute(&listen)
                        .map_err(|e| self.error(&e))?;
                    self.results_seen.fetch_add(1, Ordering::SeqCst);
                    guard.insert(conn)
                }
            };
            let got = (|| -> std::result::Result<u32, postgres::Error> {
                let mut notes = conn.client.notifications();
                let mut n = notes.iter().count()?;
                if n == 0 {
                    if let Some(wait) = wait {
                        n = notes.timeout_iter(wait).next()?.map_or(0, |_| 1);
                    }
                }
                Ok(u32::try_from(n).unwrap_or(u32::MAX))
            })();
            match got {
                Ok(n) => {
                    self.results_seen.fetch_add(n, Ordering::SeqCst);
                    return Ok(true);
                }
                Err(e) => {
                    *guard = None;
                    if retried || !is_connection_error(&e) {
                        return Err(self.error(&e));
                    }
                    retried = true;
                }
            }
        }
    }

    /// Whether this handle should delete expired results now (at most every
    /// [`RESULT_CLEANUP_INTERVAL_MS`]).
    fn cleanup_due(&self) -> bool {
        let now = now_ms();
        let next = self.next_cleanup_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_cleanup_ms
                .compare_exchange(
                    next,
                    now + RESULT_CLEANUP_INTERVAL_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
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

    fn put_back<S: AsRef<str>>(&self, tags: &[S], undo_count: i32) -> Result<usize> {
        let ids = row_ids(tags);
        if ids.is_empty() {
            return Ok(0);
        }
        self.with_conn_retry(|c| {
            let stmt = c.prep(
                "WITH back AS (
                    UPDATE {s}.messages SET owner = NULL, lease_until_ms = NULL,
                        deliveries = GREATEST(deliveries - $2, 0)
                    WHERE id = ANY($1) AND owner IS NOT NULL RETURNING queue),
                 woke AS (SELECT pg_notify($3, CASE WHEN octet_length(q) <= $4 THEN q ELSE '' END)
                          FROM (SELECT DISTINCT queue AS q FROM back) d)
                 SELECT (SELECT COUNT(*) FROM back), (SELECT COUNT(*) FROM woke)",
            )?;
            let max = i32::try_from(NOTIFY_PAYLOAD_MAX_BYTES).unwrap_or(i32::MAX);
            let row = c
                .client
                .query_one(&stmt, &[&ids, &undo_count, &self.channel, &max])?;
            Ok(count_i64(row.get(0)))
        })
    }

    /// Returns every message leased by `owner` (a worker that died) to its queue; those already
    /// delivered `max_deliveries` times are dead-lettered as `worker_lost`.
    /// Returns `(requeued, dead_lettered)`.
    pub fn requeue_owner(&self, owner: &str, max_deliveries: u32) -> Result<(usize, usize)> {
        let max = i32::try_from(max_deliveries).unwrap_or(i32::MAX);
        let error = format!("worker {owner} was lost while holding the message");
        self.with_conn(|c| {
            let stmt = c.prep(
                "WITH held AS (
                    SELECT id, deliveries FROM {s}.messages WHERE owner = $1 FOR UPDATE),
                 dead AS (
                    DELETE FROM {s}.messages m USING held h
                    WHERE m.id = h.id AND h.deliveries >= $2 RETURNING m.*),
                 buried AS (
                    INSERT INTO {s}.dead_letters
                        (queue, priority, payload, reason, error, deliveries, dead_at_ms)
                    SELECT queue, priority, payload, $3, $4, deliveries, {now} FROM dead ORDER BY id
                    RETURNING 1),
                 back AS (
                    UPDATE {s}.messages m SET owner = NULL, lease_until_ms = NULL FROM held h
                    WHERE m.id = h.id AND h.deliveries < $2 RETURNING m.queue),
                 woke AS (SELECT pg_notify($5, CASE WHEN octet_length(q) <= $6 THEN q ELSE '' END)
                          FROM (SELECT DISTINCT queue AS q FROM back) d)
                 SELECT (SELECT COUNT(*) FROM back), (SELECT COUNT(*) FROM buried),
                        (SELECT COUNT(*) FROM woke)",
            )?;
            let limit = i32::try_from(NOTIFY_PAYLOAD_MAX_BYTES).unwrap_or(i32::MAX);
            let row = c.client.query_one(
                &stmt,
                &[
                    &owner,
                    &max,
                    &REASON_WORKER_LOST,
                    &error,
                    &self.channel,
                    &limit,
                ],
            )?;
            Ok((count_i64(row.get(0)), count_i64(row.get(1))))
        })
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
        let ids = row_ids(held);
        let lease = i64::try_from(lease_ms).unwrap_or(i64::MAX);
        self.with_conn_retry(|c| {
            let renew = c.prep(
                "UPDATE {s}.messages SET lease_until_ms = {now} + $3 WHERE id = ANY($1) AND owner = $2",
            )?;
            let list = c.prep("SELECT id FROM {s}.messages WHERE owner = $1")?;
            if !ids.is_empty() {
                c.client.execute(&renew, &[&ids, &owner, &lease])?;
            }
            let rows = c.client.query(&list, &[&owner])?;
            Ok(rows
                .iter()
                .map(|r| r.get::<_, i64>(0).to_string())
                .collect())
        })
    }

    /// Returns up to [`SWEEP_BATCH`] expired leases (any owner) to their queue; those already
    /// delivered `max_deliveries` times are dead-lettered as `worker_lost`. Rows another sweeper
    /// holds are skipped. Returns `(requeued, dead_lettered)`.
    pub fn sweep_expired(&self, max_deliveries: u32) -> Result<(usize, usize)> {
        let max = i32::try_from(max_deliveries).unwrap_or(i32::MAX);
        self.with_conn_retry(|c| {
            let stmt = c.prep(
                "WITH expired AS (
                    SELECT id, deliveries, owner FROM {s}.messages
                    WHERE owner IS NOT NULL AND lease_until_ms < {now}
                    ORDER BY lease_until_ms LIMIT $2 FOR UPDATE SKIP LOCKED),
                 dead AS (
                    DELETE FROM {s}.messages m USING expired e
                    WHERE m.id = e.id AND e.deliveries >= $1 RETURNING m.*),
                 buried AS (
                    INSERT INTO {s}.dead_letters
                        (queue, priority, payload, reason, error, deliveries, dead_at_ms)
                    SELECT queue, priority, payload, $3,
                           'lease of ' || COALESCE(owner, '?') || ' expired after '
                               || deliveries || ' deliveries',
                           deliveries, {now}
                    FROM dead ORDER BY id RETURNING 1),
                 back AS (
                    UPDATE {s}.messages m SET owner = NULL, lease_until_ms = NULL FROM expired e
                    WHERE m.id = e.id AND e.deliveries < $1 RETURNING m.queue),
                 woke AS (SELECT pg_notify($4, CASE WHEN octet_length(q) <= $5 THEN q ELSE '' END)
                          FROM (SELECT DISTINCT queue AS q FROM back) d)
                 SELECT (SELECT COUNT(*) FROM back), (SELECT COUNT(*) FROM buried),
                        (SELECT COUNT(*) FROM woke)",
            )?;
            let limit = i32::try_from(NOTIFY_PAYLOAD_MAX_BYTES).unwrap_or(i32::MAX);
            let row = c.client.query_one(
                &stmt,
                &[
                    &max,
                    &SWEEP_BATCH,
                    &REASON_WORKER_LOST,
                    &self.channel,
                    &limit,
                ],
            )?;
            Ok((count_i64(row.get(0)), count_i64(row.get(1))))
        })
    }

    /// Moves a message to the dead-letter table; false when it no longer exists.
    pub fn dead_letter(&self, tag: &str, reason: &str, error: Option<&str>) -> Result<bool> {
        let Some(id) = row_id(tag) else {
            return Ok(false);
        };
        self.with_conn(|c| {
            let stmt = c.prep(
                "WITH gone AS (DELETE FROM {s}.messages WHERE id = $1 RETURNING *)
                 INSERT INTO {s}.dead_letters
                     (queue, priority, payload, reason, error, deliveries, dead_at_ms)
                 SELECT queue, priority, payload, $2, $3, deliveries, {now} FROM gone",
            )?;
            Ok(c.client.execute(&stmt, &[&id, &reason, &error])? > 0)
        })
    }

    /// Dead letters, oldest first, optionally of one queue.
    pub fn dead_letters(&self, queue: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn_retry(|c| {
            let stmt = c.prep(
                "SELECT id, queue, reason, error, deliveries, dead_at_ms, payload
                 FROM {s}.dead_letters WHERE $1::text IS NULL OR queue = $1 ORDER BY id LIMIT $2",
            )?;
            let rows = c.client.query(&stmt, &[&queue, &limit])?;
            Ok(rows
                .iter()
                .map(|r| DeadLetter {
                    id: r.get::<_, i64>(0).to_string(),
                    queue: r.get(1),
                    reason: r.get(2),
                    error: r.get(3),
                    deliveries: u32::try_from(r.get::<_, i32>(4)).unwrap_or(0),
                    dead_at_ms: r.get(5),
                    payload: r.get(6),
                })
                .collect())
        })
    }

    /// Puts dead letters of `queue` back at its end (due now, delivery count reset); ids that
    /// are not numbers, or name another queue's dead letters, match nothing.
    pub fn requeue_dead<S: AsRef<str>>(&self, queue: &str, ids: &[S]) -> Result<usize> {
        let ids = row_ids(ids);
        if ids.is_empty() {
            return Ok(0);
        }
        self.with_conn(|c| {
            let stmt = c.prep(
                "WITH raised AS (
                    DELETE FROM {s}.dead_letters WHERE id = ANY($1) AND queue = $2 RETURNING *),
                 ins AS (
                    INSERT INTO {s}.messages (queue, priority, eta_ms, payload, published_ms)
                    SELECT queue, priority, 0, payload, {now} FROM raised ORDER BY id
                    RETURNING 1)
                 SELECT (SELECT COUNT(*) FROM ins), pg_notify($3, $4)",
            )?;
            let note = Self::payload_of(queue);
            let row = c
                .client
                .query_one(&stmt, &[&ids, &queue, &self.channel, &note])?;
            Ok(count_i64(row.get(0)))
        })
    }

    /// Deletes dead letters (of one queue, or all); returns how many.
    pub fn purge_dead(&self, queue: Option<&str>) -> Result<usize> {
        self.with_conn(|c| {
            let stmt =
                c.prep("DELETE FROM {s}.dead_letters WHERE $1::text IS NULL OR queue = $1")?;
            c.client.execute(&stmt, &[&queue])
        })
        .map(count)
    }

    /// Deletes waiting (not leased) messages of `queues`; returns how many.
    pub fn purge(&self, queues: &[String]) -> Result<usize> {
        self.with_conn(|c| {
            let stmt =
                c.prep("DELETE FROM {s}.messages WHERE queue = ANY($1) AND owner IS NULL")?;
            c.client.execute(&stmt, &[&queues])
        })
        .map(count)
    }

    /// Waiting (not leased) messages of `queue`, including those whose ETA is still ahead.
    pub fn queue_length(&self, queue: &str) -> Result<usize> {
        self.with_conn_retry(|c| {
            let stmt =
                c.prep("SELECT COUNT(*) FROM {s}.messages WHERE queue = $1 AND owner IS NULL")?;
            Ok(count_i64(c.client.query_one(&stmt, &[&queue])?.get(0)))
        })
    }

    /// Tags of the messages `owner` holds (a dead worker's, before its leases are returned).
    pub fn leased_tags(&self, owner: &str) -> Result<Vec<String>> {
        self.with_conn_retry(|c| {
            let stmt = c.prep("SELECT id FROM {s}.messages WHERE owner = $1 ORDER BY id")?;
            let rows = c.client.query(&stmt, &[&owner])?;
            Ok(rows
                .iter()
                .map(|r| r.get::<_, i64>(0).to_string())
                .collect())
        })
    }

    /// Lease expiry (epoch ms, server clock) and owner of a message, if it exists; for tests and
    /// inspection.
    pub fn lease_of(&self, tag: &str) -> Result<Option<(Option<String>, Option<i64>)>> {
        let Some(id) = row_id(tag) else {
            return Ok(None);
        };
        self.with_conn_retry(|c| {
            let stmt = c.prep("SELECT owner, lease_until_ms FROM {s}.messages WHERE id = $1")?;
            Ok(c.client
                .query_opt(&stmt, &[&id])?
                .map(|r| (r.get(0), r.get(1))))
        })
    }

    /// Records revoked task ids (kept until `expires_at_ms`) and drops expired ones. Revocation
    /// and expiry times are the callers' clocks (as they pass `expires_at_ms` and `since_ms`).
    pub fn revoke(&self, task_ids: &[String], expires_at_ms: i64) -> Result<()> {
        let now = now_ms();
        self.with_conn(|c| {
            let upsert = c.prep(
                "INSERT INTO {s}.revoked (task_id, revoked_at_ms, expires_at_ms)
                 SELECT DISTINCT t, $3::bigint, $2::bigint FROM unnest($1::text[]) AS t
                 ON CONFLICT (task_id) DO UPDATE SET revoked_at_ms = excluded.revoked_at_ms,
                     expires_at_ms = GREATEST({s}.revoked.expires_at_ms, excluded.expires_at_ms)",
            )?;
            let expire = c.prep("DELETE FROM {s}.revoked WHERE expires_at_ms < $1")?;
            let mut tx = c.client.transaction()?;
            tx.execute(&upsert, &[&task_ids, &expires_at_ms, &now])?;
            tx.execute(&expire, &[&now])?;
            tx.commit()
        })
    }

    /// `(task_id, expires_at_ms)` of unexpired revocations made at or after `since_ms`.
    pub fn revoked_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>> {
        let now = now_ms();
        self.with_conn_retry(|c| {
            let stmt = c.prep(
                "SELECT task_id, expires_at_ms FROM {s}.revoked
                 WHERE revoked_at_ms >= $1 AND expires_at_ms >= $2",
            )?;
            let rows = c.client.query(&stmt, &[&since_ms, &now])?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Posts `body` on a mailbox `channel` (remote control: commands and replies), kept until
    /// `expires_at_ms` (the caller's clock, as for revocations); returns its id. Expired posts of
    /// every channel are deleted on the way.
    pub fn mailbox_post(&self, channel: &str, body: &[u8], expires_at_ms: i64) -> Result<i64> {
        let now = now_ms();
        self.with_conn(|c| {
            let expire = c.prep("DELETE FROM {s}.mailbox WHERE expires_at_ms < $1")?;
            let post = c.prep(
                "INSERT INTO {s}.mailbox (channel, body, expires_at_ms) VALUES ($1, $2, $3)
                 RETURNING id",
            )?;
            let mut tx = c.client.transaction()?;
            tx.execute(&expire, &[&now])?;
            let id: i64 = tx
                .query_one(&post, &[&channel, &body, &expires_at_ms])?
                .get(0);
            tx.commit()?;
            Ok(id)
        })
    }

    /// `(id, body)` of the unexpired posts on `channel` with an id above `after_id`, oldest first.
    pub fn mailbox_read(&self, channel: &str, after_id: i64) -> Result<Vec<(i64, Vec<u8>)>> {
        let now = now_ms();
        self.with_conn_retry(|c| {
            let stmt = c.prep(
                "SELECT id, body FROM {s}.mailbox
                 WHERE channel = $1 AND id > $2 AND expires_at_ms >= $3 ORDER BY id",
            )?;
            let rows = c.client.query(&stmt, &[&channel, &after_id, &now])?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// The id of the newest post on any channel (0 when there is none): a reader that starts
    /// now reads only what is posted after it.
    pub fn mailbox_last_id(&self) -> Result<i64> {
        self.with_conn_retry(|c| {
            let stmt = c.prep("SELECT COALESCE(MAX(id), 0)::bigint FROM {s}.mailbox")?;
            Ok(c.client.query_one(&stmt, &[])?.get(0))
        })
    }

    /// Stores result records in one transaction (a stored SUCCESS is never overwritten) and,
    /// at most every second, deletes up to [`SWEEP_BATCH`] expired ones.
    pub fn store_results(&self, rows: &[ResultRow]) -> Result<()> {
        self.complete::<String>(rows, &[]).map(drop)
    }

    /// `(content_type, payload)` of a task's unexpired result, if stored.
    pub fn read_result(&self, task_id: &str) -> Result<Option<(String, Vec<u8>)>> {
        self.with_conn_retry(|c| {
            let stmt = c.prep(
                "SELECT content_type, payload FROM {s}.results
                 WHERE task_id = $1 AND (expires_at_ms IS NULL OR expires_at_ms >= {now})",
            )?;
            Ok(c.client
                .query_opt(&stmt, &[&task_id])?
                .map(|r| (r.get(0), r.get(1))))
        })
    }

    /// Deletes a task's result; true when there was one.
    pub fn delete_result(&self, task_id: &str) -> Result<bool> {
        self.with_conn_retry(|c| {
            let stmt = c.prep("DELETE FROM {s}.results WHERE task_id = $1")?;
            Ok(c.client.execute(&stmt, &[&task_id])? > 0)
        })
    }

    /// Sets the number of header results a chord's body waits for (a new run of the chord: any
    /// earlier claim and done mark are cleared). The join's rows expire after `ttl_ms`; expired
    /// joins are deleted on the way.
    pub fn chord_set_size(&self, group_id: &str, size: i64, ttl_ms: Option<u64>) -> Result<()> {
        let now = now_ms();
        let expires = expiry(now, ttl_ms);
        self.with_conn(|c| {
            let set = c.prep(
                "INSERT INTO {s}.chords (group_id, size, expires_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (group_id) DO UPDATE SET size = excluded.size, claim = NULL,
                     claim_until_ms = NULL, done = false, expires_at_ms = excluded.expires_at_ms",
            )?;
            let expire = c.prep(
                "WITH gone AS (
                    DELETE FROM {s}.chords WHERE group_id IN (
                        SELECT group_id FROM {s}.chords
                        WHERE expires_at_ms IS NOT NULL AND expires_at_ms < $1 LIMIT $2)
                    RETURNING group_id)
                 DELETE FROM {s}.chord_parts WHERE group_id IN (SELECT group_id FROM gone)",
            )?;
            let mut tx = c.client.transaction()?;
            tx.execute(&set, &[&group_id, &size, &expires])?;
            tx.execute(&expire, &[&now, &SWEEP_BATCH])?;
            tx.commit()
        })
    }

    /// Makes a chord wait for `n` more header results (a header task replaced by a workflow).
    pub fn chord_add(&self, group_id: &str, n: i64) -> Result<()> {
        self.with_conn(|c| {
            let stmt = c.prep(
                "INSERT INTO {s}.chords (group_id, added) VALUES ($1, $2)
                 ON CONFLICT (group_id) DO UPDATE SET added = {s}.chords.added + excluded.added",
            )?;
            c.client.execute(&stmt, &[&group_id, &n]).map(drop)
        })
    }

    /// Counts one header result of a chord, in one transaction (the chord's row is locked first,
    /// so concurrent members of one chord count one after the other): the result of `member` at
    /// `index` is kept once (a redelivered member that runs again is not counted twice), and when
    /// every result is in and nobody else holds the right to fire the body, this call takes it
    /// (or, for the holder of `token`, keeps it) for `claim_ms`. `None` once the body was fired.
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
        let now = now_ms();
        let expires = expiry(now, ttl_ms);
        let claim_until = now.saturating_add(i64::try_from(claim_ms).unwrap_or(i64::MAX));
        self.with_conn(|c| {
            let touch = c.prep(
                "INSERT INTO {s}.chords (group_id, expires_at_ms) VALUES ($1, $2)
                 ON CONFLICT (group_id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms
                 RETURNING size, added, claim, claim_until_ms, done",
            )?;
            let part = c.prep(
                "INSERT INTO {s}.chord_parts (group_id, member, idx, payload) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (group_id, member) DO NOTHING",
            )?;
            let counted = c.prep("SELECT COUNT(*) FROM {s}.chord_parts WHERE group_id = $1")?;
            let take = c.prep(
                "UPDATE {s}.chords SET claim = $2, claim_until_ms = $3 WHERE group_id = $1",
            )?;
            let mut tx = c.client.transaction()?;
            let row = tx.query_one(&touch, &[&group_id, &expires])?;
            let (size, added, claim, claim_until_ms, done): (
                Option<i64>,
                i64,
                Option<String>,
                Option<i64>,
                bool,
            ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            if done {
                tx.commit()?;
                return Ok(None);
            }
            tx.execute(&part, &[&group_id, &member, &index, &payload])?;
            let ready: i64 = tx.query_one(&counted, &[&group_id])?.get(0);
            let total = size.map(|s| s + added);
            let ours_or_none = match claim.as_deref() {
                None => true,
                Some(holder) => holder == token,
            };
            let free = ours_or_none || claim_until_ms.is_some_and(|until| until < now);
            let claimed = total == Some(ready) && free;
            if claimed {
                tx.execute(&take, &[&group_id, &token, &claim_until])?;
            }
            tx.commit()?;
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
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(claim_ms).unwrap_or(i64::MAX));
        self.with_conn_retry(|c| {
            let stmt = c.prep(
                "UPDATE {s}.chords SET claim = $2, claim_until_ms = $3
                 WHERE group_id = $1 AND NOT done AND size IS NOT NULL
                   AND (claim = $2 OR claim IS NULL OR claim_until_ms < $4)",
            )?;
            Ok(c.client
                .execute(&stmt, &[&group_id, &token, &until, &now])?
                > 0)
        })
    }

    /// The counted header results of a chord, in header order.
    pub fn chord_parts(&self, group_id: &str) -> Result<Vec<Vec<u8>>> {
        self.with_conn_retry(|c| {
            let stmt = c.prep(
                "SELECT payload FROM {s}.chord_parts WHERE group_id = $1 ORDER BY idx, member",
            )?;
            let rows = c.client.query(&stmt, &[&group_id])?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    /// The body was fired by the holder of `token`: its parts are deleted and the chord is
    /// marked done (kept `done_ttl_ms`, so late duplicates of header tasks change nothing).
    /// False when `token` no longer holds the claim.
    pub fn chord_done(&self, group_id: &str, token: &str, done_ttl_ms: u64) -> Result<bool> {
        let expires = expiry(now_ms(), Some(done_ttl_ms));
        self.with_conn(|c| {
            let mark = c.prep(
                "UPDATE {s}.chords SET done = true, claim = NULL, expires_at_ms = $3
                 WHERE group_id = $1 AND claim = $2",
            )?;
            let forget = c.prep("DELETE FROM {s}.chord_parts WHERE group_id = $1")?;
            let mut tx = c.client.transaction()?;
            let n = tx.execute(&mark, &[&group_id, &token, &expires])?;
            if n > 0 {
                tx.execute(&forget, &[&group_id])?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }

    /// Takes the leader lease of the periodic schedule `name` for `token` (when free or lapsed),
    /// or renews it for its holder, for `ttl_ms` from now; false when another holds it.
    pub fn beat_lease(&self, name: &str, token: &str, ttl_ms: u64) -> Result<bool> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        self.with_conn(|c| {
            let stmt = c.prep(
                "INSERT INTO {s}.beat_leases (name, token, until_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET token = excluded.token, until_ms = excluded.until_ms
                 WHERE {s}.beat_leases.token = excluded.token OR {s}.beat_leases.until_ms < $4",
            )?;
            Ok(c.client.execute(&stmt, &[&name, &token, &until, &now])? > 0)
        })
    }

    /// Gives the lease of `name` up if `token` holds it; true when it did.
    pub fn beat_release(&self, name: &str, token: &str) -> Result<bool> {
        self.with_conn_retry(|c| {
            let stmt = c.prep("DELETE FROM {s}.beat_leases WHERE name = $1 AND token = $2")?;
            Ok(c.client.execute(&stmt, &[&name, &token])? > 0)
        })
    }

    /// `(entry, tick_ms)`: the last tick sent of each entry of schedule `name`.
    pub fn beat_runs(&self, name: &str) -> Result<Vec<(String, i64)>> {
        self.with_conn_retry(|c| {
            let stmt = c.prep("SELECT entry, tick_ms FROM {s}.beat_runs WHERE name = $1")?;
            let rows = c.client.query(&stmt, &[&name])?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Sends the tick `tick_ms` of `entry` in one transaction with the checks that make it
    /// once-only (see [`PgBroker::beat_claim`]); the tick is recorded and the message published
    /// (and notified). [`BeatSend::NotLeader`] or [`BeatSend::AlreadySent`] otherwise, with
    /// nothing written.
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
        self.beat_step(name, token, entry, tick_ms, Some(message))
    }

    /// Records the tick like [`PgBroker::beat_send`] without publishing anything (the caller
    /// publishes elsewhere): `token` must hold the unexpired lease of `name`, and no tick at or
    /// after `tick_ms` may have been sent.
    pub fn beat_claim(
        &self,
        name: &str,
        token: &str,
        entry: &str,
        tick_ms: i64,
    ) -> Result<BeatSend> {
        self.beat_step(name, token, entry, tick_ms, None)
    }

    /// The once-only tick, in one transaction: the lease checked, the last tick checked, the tick
    /// recorded and (with `message`) the message published.
    fn beat_step(
        &self,
        name: &str,
        token: &str,
        entry: &str,
        tick_ms: i64,
        message: Option<&NewMessage>,
    ) -> Result<BeatSend> {
        let now = now_ms();
        self.with_conn(|c| {
            // The lease row stays locked to the end of the transaction: no takeover interleaves.
            let leader = c.prep(
                "SELECT 1 FROM {s}.beat_leases WHERE name = $1 AND token = $2 AND until_ms >= $3
                 FOR UPDATE",
            )?;
            let last = c.prep(
                "SELECT tick_ms FROM {s}.beat_runs WHERE name = $1 AND entry = $2 FOR UPDATE",
            )?;
            let record = c.prep(
                "INSERT INTO {s}.beat_runs (name, entry, tick_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (name, entry) DO UPDATE SET tick_ms = excluded.tick_ms",
            )?;
            let publish = c.prep(
                "WITH ins AS (
                    INSERT INTO {s}.messages (queue, priority, eta_ms, payload, published_ms)
                    VALUES ($1, $2, $3, $4, {now}) RETURNING eta_ms)
                 SELECT pg_notify($5, $6) FROM ins WHERE ins.eta_ms <= {now}",
            )?;
            let mut tx = c.client.transaction()?;
            if tx.query_opt(&leader, &[&name, &token, &now])?.is_none() {
                return Ok(BeatSend::NotLeader);
            }
            let sent: Option<i64> = tx.query_opt(&last, &[&name, &entry])?.map(|r| r.get(0));
            if sent.is_some_and(|t| t >= tick_ms) {
                return Ok(BeatSend::AlreadySent);
            }
            tx.execute(&record, &[&name, &entry, &tick_ms])?;
            if let Some(m) = message {
                let priority = i16::from(m.priority);
                let eta = m.eta_ms.unwrap_or(0);
                tx.execute(
                    &publish,
                    &[
                        &m.queue,
                        &priority,
                        &eta,
                        &m.payload,
                        &self.channel,
                        &Self::payload_of(&m.queue),
                    ],
                )?;
            }
            tx.commit()?;
            Ok(BeatSend::Sent)
        })
    }
}

transport_by_inherent_methods!(PgBroker);

/// The fetch: per queue, the head of its waiting index (locked, skipping rows others hold), ranked
/// priority first, then one from each queue in turn; the picked rows are leased by the same
/// statement. `$1` queues, `$2` limit, `$3` owner, `$4` lease in ms. Column 4 is the pick order.
///
/// The lease commits without waiting for its WAL to reach the disk (`synchronous_commit` off for
/// this statement's transaction alone, set by the one-time filter): a lease is a claim that a
/// server crash may forget, and the message is then simply delivered again (at-least-once, its
/// delivery not counted), never lost. It saves a disk flush on the way of every task: the round
/// trip of `delay().get()` has two left, the message's and the result's. Publishing, results and
/// acks stay durable.
const FETCH_SQL: &str = "
UPDATE {s}.messages m
SET owner = $3, lease_until_ms = {now} + $4, deliveries = m.deliveries + 1
FROM (
    SELECT id, row_number() OVER (ORDER BY priority, rn, ord) AS pick
    FROM (
        SELECT c.id, c.priority, q.ord,
               row_number() OVER (PARTITION BY q.ord, c.priority ORDER BY c.id) AS rn
        FROM unnest($1::text[]) WITH ORDINALITY AS q(name, ord)
        CROSS JOIN LATERAL (
            SELECT id, priority FROM {s}.messages
            WHERE queue = q.name AND owner IS NULL AND eta_ms <= {now}
            ORDER BY priority, id
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        ) c
    ) ranked
    ORDER BY priority, rn, ord
    LIMIT $2
) picked
WHERE m.id = picked.id AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
RETURNING m.id, m.queue, m.payload, m.deliveries, picked.pick";

/// [`FETCH_SQL`] for one queue (`$1`): the head of its waiting index, priority first, then FIFO.
/// Column 4 and the id give the pick order.
const FETCH_ONE_SQL: &str = "
UPDATE {s}.messages m
SET owner = $3, lease_until_ms = {now} + $4, deliveries = m.deliveries + 1
FROM (
    SELECT id FROM {s}.messages
    WHERE queue = $1 AND owner IS NULL AND eta_ms <= {now}
    ORDER BY priority, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
) picked
WHERE m.id = picked.id AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
RETURNING m.id, m.queue, m.payload, m.deliveries, m.priority::bigint AS pick";

/// Upserts a batch of results (one row per task id, see [`ResultColumns::of`]; a stored SUCCESS
/// is never overwritten), acks messages and notifies result waiters,
/// in ONE statement (one transaction, one round trip). `$6` the message ids, `$7` the results
/// channel. Returns how many messages were acked.
const COMPLETE_SQL: &str = "
WITH stored AS (
    INSERT INTO {s}.results (task_id, status, content_type, payload, expires_at_ms)
    SELECT t, st, ct, p, CASE WHEN ttl IS NULL THEN NULL ELSE {now} + ttl END
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[])
         AS r(t, st, ct, p, ttl)
    ON CONFLICT (task_id) DO UPDATE SET
        status = excluded.status, content_type = excluded.content_type,
        payload = excluded.payload, expires_at_ms = excluded.expires_at_ms
    WHERE {s}.results.status <> 'SUCCESS'
    RETURNING 1),
acked AS (DELETE FROM {s}.messages WHERE id = ANY($6) RETURNING 1),
rung AS (SELECT pg_notify($7, '') WHERE cardinality($1::text[]) > 0)
SELECT (SELECT COUNT(*) FROM acked), (SELECT COUNT(*) FROM rung), (SELECT COUNT(*) FROM stored)";

const EXPIRE_RESULTS: &str = "
DELETE FROM {s}.results WHERE task_id IN (
    SELECT task_id FROM {s}.results
    WHERE expires_at_ms IS NOT NULL AND expires_at_ms < {now} LIMIT $1)";

/// A batch of result rows as the columns of [`COMPLETE_SQL`].
struct ResultColumns<'a> {
    ids: Vec<&'a str>,
    statuses: Vec<&'a str>,
    content_types: Vec<&'a str>,
    payloads: Vec<&'a [u8]>,
    ttls: Vec<Option<i64>>,
}

impl<'a> ResultColumns<'a> {
    /// One row per task id, the one that written in order would stay: the first SUCCESS (a stored
    /// SUCCESS is final), else the last. One INSERT cannot update a row twice.
    fn of(rows: &'a [ResultRow]) -> Self {
        let mut kept: HashMap<&str, usize> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            match kept.get(r.task_id.as_str()) {
                Some(&j) if rows[j].status == "SUCCESS" => {}
                _ => {
                    kept.insert(r.task_id.as_str(), i);
                }
            }
        }
        let mut order: Vec<usize> = kept.into_values().collect();
        order.sort_unstable();
        let pick = |i: &usize| &rows[*i];
        ResultColumns {
            ids: order.iter().map(|i| pick(i).task_id.as_str()).collect(),
            statuses: order.iter().map(|i| pick(i).status.as_str()).collect(),
            content_types: order
                .iter()
                .map(|i| pick(i).content_type.as_str())
                .collect(),
            payloads: order.iter().map(|i| pick(i).payload.as_slice()).collect(),
            ttls: order
                .iter()
                .map(|i| pick(i).ttl_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
                .collect(),
        }
    }
}

/// When something kept `ttl_ms` from `now` expires (epoch ms); `None` keeps it forever.
fn expiry(now: i64, ttl_ms: Option<u64>) -> Option<i64> {
    ttl_ms.map(|ttl| now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)))
}

/// The row id a delivery tag names; `None` (simply not found) when it is not one of ours.
fn row_id(tag: &str) -> Option<i64> {
    tag.parse().ok()
}

fn row_ids<S: AsRef<str>>(tags: &[S]) -> Vec<i64> {
    tags.iter().filter_map(|t| row_id(t.as_ref())).collect()
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn count_i64(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// A client error as one line: the server's message (and detail) for a database error, else the
/// client's own text. Never contains the password (the client does not echo it).
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.code().code(), db.message()),
            None => format!("{}: {}", db.code().code(), db.message()),
        },
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(task: &str, status: &str, payload: &[u8]) -> ResultRow {
        ResultRow {
            task_id: task.into(),
            status: status.into(),
            content_type: "application/json".into(),
            payload: payload.to_vec(),
            ttl_ms: Some(1000),
        }
    }

    #[test]
    fn test_schema_names_checked() {
        assert!(check_schema("rqueue").is_ok());
        assert!(check_schema("app_2").is_ok());
        for bad in ["", "Rqueue", "2x", "a-b", "a\"b", "pg_x", &"x".repeat(64)] {
            let err = check_schema(bad).unwrap_err().to_string();
            assert!(err.contains("schema name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn test_url_checked_and_masked() {
        let err = PgBroker::new_lazy(PgConfig::new("redis://h/0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a PostgreSQL URL"), "{err}");
        let err = PgBroker::new_lazy(PgConfig::new("postgresql://u:secret@h/db?sslmode=maybe"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sslmode=\"maybe\"") && !err.contains("secret"),
            "{err}"
        );
        assert!(PgBroker::new_lazy(PgConfig::new("postgresql://h/db?sslmode=require")).is_ok());
        let err = PgBroker::new_lazy(PgConfig::new("postgresql://u:secret@h/db?bogus=1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a usable") && !err.contains("secret"),
            "{err}"
        );
        let b = PgBroker::new_lazy(PgConfig::new("postgres://u:secret@h:5433/db")).unwrap();
        assert_eq!(b.masked_url(), "postgres://u:***@h:5433/db");
        assert_eq!(b.channel(), "rqueue.messages");
    }

    #[test]
    fn test_result_batch_keeps_what_sequential_upserts_would() {
        let rows = [
            row("a", "STARTED", b"1"),
            row("b", "SUCCESS", b"2"),
            row("a", "SUCCESS", b"3"),
            row("b", "FAILURE", b"4"),
            row("a", "RETRY", b"5"),
            row("c", "STARTED", b"6"),
            row("c", "RETRY", b"7"),
        ];
        let cols = ResultColumns::of(&rows);
        assert_eq!(cols.ids, ["b", "a", "c"]);
        assert_eq!(cols.statuses, ["SUCCESS", "SUCCESS", "RETRY"]);
        assert_eq!(cols.payloads, [b"2", b"3", b"7"]);
    }

    #[test]
    fn test_render_fills_schema_and_clock() {
        let sql = render("SELECT {now} FROM {s}.messages", "\"app\"");
        assert!(sql.contains("\"app\".messages") && sql.contains("clock_timestamp()"));
        assert!(!sql.contains('{'));
    }
}
