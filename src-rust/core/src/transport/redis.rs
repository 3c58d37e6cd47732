//! The Redis broker, in kombu's layout so Celery producers and workers interoperate
//! (see `redis_lua` for the keys of in-flight messages).
//!
//! - Waiting messages: a list per queue and priority bucket, `LPUSH`ed by producers and popped
//!   from the right (FIFO). Bucket 0 (priorities 0–2) is the plain queue key; 3, 6 and 9 use
//!   `queue\x06\x16<step>`. 0 is the highest priority.
//! - ETA messages wait in `rqueue.eta.<queue>` (sorted set scored by due epoch ms, member
//!   `<step>:<nonce>|<envelope>`) and are moved to their list by the fetch script once due.
//! - Fetch is one Lua script: pop plus every lease record, with the broker's clock.
//! - Dead letters: a list `rqueue.dlq.<queue>` of JSON records (newest at the left).
//!
//! Every key carries the optional `global_keyprefix`, as kombu does.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::{Connection, ConnectionLike, RedisError};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::prefetch::Delivery;
use crate::transport::redis_lua::Scripts;
pub use crate::transport::redis_lua::{
    INDEX_KEEPER, RESULT_FINAL_PREFIX, RESULT_KEY_PREFIX, STORE_RESULT_LUA,
};
use crate::transport::redis_tls::{client_for, tls_connect_hint};
use crate::transport::{
    check_priority, check_queue, named_queue, now_ms, transport_by_inherent_methods, BeatSend,
    DeadLetter, NewMessage, ResultRow, REASON_WORKER_LOST,
};

/// kombu's separator in bucket list names and binding members.
pub const SEP: &str = "\x06\x16";
/// Most messages leased by one fetch.
pub const MAX_FETCH: usize = 10_000;
/// Most due ETA messages moved per queue by one fetch.
pub const ETA_BATCH: usize = 100;
/// Most expired leases handled by one sweep.
pub const SWEEP_BATCH: usize = 500;
/// Most index entries one sweep looks at.
const SWEEP_SCAN: usize = 2_000;
/// In-flight entries written by other clients (kombu workers), which do not renew their leases,
/// are swept after kombu's visibility timeout: its default unless configured
/// ([`RedisConfig::foreign_visibility`], from `broker_transport_options['visibility_timeout']`).
pub const FOREIGN_VISIBILITY: Duration = Duration::from_secs(3600);
/// Most dead letters read at once.
const DEAD_SCAN: isize = 10_000;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    pub global_keyprefix: String,
    pub connect_timeout: Duration,
    pub socket_timeout: Duration,
    /// How old another client's in-flight entry (no rqueue lease) must be before it is restored:
    /// the visibility timeout those clients (Celery workers) use.
    pub foreign_visibility: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            global_keyprefix: String::new(),
            connect_timeout: Duration::from_secs(5),
            socket_timeout: Duration::from_secs(10),
            foreign_visibility: FOREIGN_VISIBILITY,
        }
    }
}

/// The content type of pickled records: Lua cannot read their status, so a stored SUCCESS is
/// also marked under [`RESULT_FINAL_PREFIX`].
pub const PICKLE_CONTENT_TYPE: &str = "application/x-python-serialize";

/// How often a batch is sent again after Redis refused a script it no longer has (NOSCRIPT).
const NOSCRIPT_RETRIES: usize = 3;

/// The URL with any password replaced by `***` (for every message and `repr`).
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let mut out = url[..rest_start].to_string();
    let authority = &rest[..auth_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None if userinfo.is_empty() => {}
                // `redis://secret@host` is a password for redis-py
                None => out.push_str("***"),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[auth_end..];
    match tail.find('?') {
        Some(q) => {
            out.push_str(&tail[..=q]);
            let params: Vec<String> = tail[q + 1..]
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") || k == "pass" => {
                        format!("{k}=***")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// The priority bucket (`0`, `3`, `6`, `9`) of a priority 0..=9.
pub fn bucket_of(priority: u8) -> u8 {
    match priority {
        0..=2 => 0,
        3..=5 => 3,
        6..=8 => 6,
        _ => 9,
    }
}

/// How often an idempotent command is sent again after its reply was interrupted by a signal.
const INTERRUPTED_RETRIES: usize = 3;

fn is_interrupted(e: &RedisError) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped()
}

/// Sets `headers.redelivered` and `properties.delivery_info.redelivered` (kombu's restore) on a
/// JSON envelope; anything else is returned unchanged. serde_json keeps empty arrays and key order.
pub fn mark_redelivered(envelope: &[u8]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(envelope) else {
        return envelope.to_vec();
    };
    let Some(obj) = v.as_object_mut() else {
        return envelope.to_vec();
    };
    if let Some(h) = obj.get_mut("headers").and_then(Value::as_object_mut) {
        h.insert("redelivered".into(), Value::Bool(true));
    }
    if let Some(di) = obj
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .and_then(|p| p.get_mut("delivery_info"))
        .and_then(Value::as_object_mut)
    {
        di.insert("redelivered".into(), Value::Bool(true));
    }
    serde_json::to_vec(&v).unwrap_or_else(|_| envelope.to_vec())
}

/// The outcome of the beat send script's reply.
fn beat_outcome(code: i64) -> BeatSend {
    match code {
        1 => BeatSend::Sent,
        -1 => BeatSend::AlreadySent,
        _ => BeatSend::NotLeader,
    }
}

/// One in-flight entry as read by the inspect script.
#[derive(Debug)]
struct InFlight {
    tag: String,
    /// The payload as published.
    envelope: Vec<u8>,
    /// The list key (with prefix) it came from; `None` when unknown.
    list_key: Option<String>,
    queue: String,
    step: u8,
    deliveries: u32,
    owner: Option<String>,
}

/// A connection to one Redis database. Thread-safe (one connection behind a mutex, reopened
/// after a connection error on the next call).
pub struct RedisBroker {
    config: RedisConfig,
    masked: String,
    client: redis::Client,
    /// `rediss://`: connection errors get TLS hints.
    tls: bool,
    conn: Mutex<Option<Connection>>,
    /// Plain scripts, and the same flagged `allow-oom` (Redis 7 or later).
    scripts: [Scripts; 2],
    /// The server's version as `major * 1000 + minor`, read by each new connection; 0 until the
    /// first one (an unreadable version counts as the oldest).
    version: AtomicU32,
    /// Where the next `tidy` page of the lease records starts (an HSCAN cursor).
    tidy_cursor: AtomicU64,
}

/// The first Redis version whose scripts may carry flags (`#!lua flags=...`).
const SCRIPT_FLAGS_SINCE: u32 = 7_000;
/// The first Redis version with `BLMOVE` (an idle consumer's wait, see `wait_cmd`).
const BLMOVE_SINCE: u32 = 6_002;
/// `RPOP key count` (one command for a batch) since Redis 6.2.
const MULTI_POP_SINCE: u32 = 6_002;
/// Lease records looked at per `tidy` (one per sweep).
const TIDY_PAGE: usize = 100;
/// The shortest wait `wait_cmd` asks the server for, in seconds (its resolution).
const WAIT_MIN_S: f64 = 0.001;

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisBroker({})", self.masked)
    }
}

impl RedisBroker {
    /// Validates the URL and connects (failing with `Error::Connection` when unreachable).
    pub fn connect(config: RedisConfig) -> Result<Self> {
        let b = Self::new_lazy(config)?;
        b.with_conn(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(b)
    }

    /// Validates the URL; connects on first use.
    pub fn new_lazy(config: RedisConfig) -> Result<Self> {
        let masked = mask_url(&config.url);
        let scheme = config.url.split("://").next().unwrap_or("");
        if !matches!(scheme, "redis" | "rediss" | "unix" | "redis+unix") {
            return Err(Error::Config(format!(
                "{masked}: not a Redis URL; use redis://[user[:password]@]host[:port][/db], \
                 rediss://... (TLS) or unix:///path?db=N"
            )));
        }
        if config.connect_timeout.is_zero() || config.socket_timeout.is_zero() {
            return Err(Error::Config(
                "Redis connect and socket timeouts must be positive".into(),
            ));
        }
        let (client, tls) = client_for(&config.url, &masked)?;
        Ok(RedisBroker {
            config,
            masked,
            client,
            tls,
            conn: Mutex::new(None),
            scripts: [Scripts::new(false), Scripts::new(true)],
            version: AtomicU32::new(0),
            tidy_cursor: AtomicU64::new(0),
        })
    }

    /// The URL with its password masked.
    pub fn masked_url(&self) -> &str {
        &self.masked
    }

    pub fn global_keyprefix(&self) -> &str {
        &self.config.global_keyprefix
    }

    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self) -> Result<Connection> {
        let map = |e: RedisError| {
            let hint = if self.tls {
                tls_connect_hint(&e.to_string())
            } else {
                "is Redis running there?"
            };
            Error::Connection(format!("{} ({e}); {hint}", self.masked))
        };
        let mut c = self
            .client
            .get_connection_with_timeout(self.config.connect_timeout)
            .map_err(map)?;
        c.set_read_timeout(Some(self.config.socket_timeout))
            .map_err(map)?;
        c.set_write_timeout(Some(self.config.socket_timeout))
            .map_err(map)?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut c)
            .map_err(map)?;
        let version = server_version(&info).unwrap_or(1);
        self.version.store(version, Ordering::Relaxed);
        Ok(c)
    }

    /// The server's version (`major * 1000 + minor`), connecting first if no connection was ever
    /// made.
    fn server_version(&self) -> Result<u32> {
        if self.version.load(Ordering::Relaxed) == 0 {
            self.with_conn(|_| Ok(()))?;
        }
        Ok(self.version.load(Ordering::Relaxed))
    }

    /// The scripts this server takes.
    fn scripts(&self) -> Result<&Scripts> {
        let flags = self.server_version()? >= SCRIPT_FLAGS_SINCE;
        Ok(&self.scripts[usize::from(flags)])
    }

    /// Runs `f` on the connection; a connection error drops it so the next call reconnects.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> std::result::Result<T, RedisError>,
    ) -> Result<T> {
        let mut guard = self.lock();
        let conn = match guard.as_mut() {
            Some(c) => c,
            None => guard.insert(self.open()?),
        };
        f(conn).map_err(|e| self.failed(&mut guard, e))
    }

    /// The error of a failed command; a connection error drops the connection so the next call
    /// reconnects.
    fn failed(&self, conn: &mut Option<Connection>, e: RedisError) -> Error {
        if e.is_timeout() {
            // The request may have been carried out: say so. The connection is out of step with
            // its replies now; drop it.
            *conn = None;
            Error::NoReply(format!(
                "{} did not answer within {:?} (socket timeout); the request may or may not \
                 have been carried out",
                self.masked, self.config.socket_timeout
            ))
        } else if e.code() == Some("OOM") {
            Error::Broker(format!(
                "{} is out of memory (used memory > maxmemory, policy noeviction): it refuses new \
                 messages until memory is freed; workers keep draining it ({e})",
                self.masked
            ))
        } else if is_connection_error(&e) {
            *conn = None;
            Error::Connection(format!("{}: {e}", self.masked))
        } else {
            Error::Broker(format!("redis ({}): {e}", self.masked))
        }
    }

    /// Like `with_conn`, for commands that may safely run twice (reads, acks, lease renewals and
    /// returns, which act only on what is still leased): they are sent again on a fresh
    /// connection when a signal interrupted the reply (sockets with a read timeout are never
    /// restarted after a signal handler (EINTR), and a worker gets SIGTERM at every warm
    /// shutdown), or when the connection turns out dropped (the server restarted since it was
    /// last used: its first command fails with end of file).
    fn with_conn_idempotent<T>(
        &self,
        mut f: impl FnMut(&mut Connection) -> std::result::Result<T, RedisError>,
    ) -> Result<T> {
        for _ in 0..INTERRUPTED_RETRIES {
            let mut guard = self.lock();
            let conn = match guard.as_mut() {
                Some(c) => c,
                None => guard.insert(self.open()?),
            };
            match f(conn) {
                Err(e) if is_interrupted(&e) || e.is_connection_dropped() => *guard = None,
                other => return other.map_err(|e| self.failed(&mut guard, e)),
            }
        }
        self.with_conn(f)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.global_keyprefix)
    }

    /// The list key (with prefix) of a queue's priority bucket.
    pub fn list_key(&self, queue: &str, step: u8) -> String {
        if step == 0 {
            self.key(queue)
        } else {
            self.key(&format!("{queue}{SEP}{step}"))
        }
    }

    fn eta_key(&self, queue: &str) -> String {
        self.key(&format!("rqueue.eta.{queue}"))
    }

    fn dlq_key(&self, queue: &str) -> String {
        self.key(&format!("rqueue.dlq.{queue}"))
    }

    fn add_publish(&self, pipe: &mut redis::Pipeline, m: &NewMessage, now: i64) {
        let step = bucket_of(m.priority);
        match m.eta_ms {
            Some(eta) if eta > now => {
                let mut member = format!("{step}:{}|", uuid::Uuid::new_v4().simple()).into_bytes();
                member.extend_from_slice(&m.payload);
                pipe.zadd(self.eta_key(&m.queue), member, eta).ignore();
            }
            _ => {
                pipe.lpush(self.list_key(&m.queue, step), &m.payload[..])
                    .ignore();
            }
        }
    }

    /// Publishes one message (`LPUSH`, or the ETA set when `eta_ms` is in the future).
    pub fn publish(
        &self,
        queue: &str,
        payload: &[u8],
        priority: u8,
        eta_ms: Option<i64>,
    ) -> Result<()> {
        self.publish_many(&[NewMessage {
            queue: queue.to_string(),
            payload: payload.to_vec(),
            priority,
            eta_ms,
        }])
    }

    /// Publishes every message in one round trip (a MULTI/EXEC pipeline: all or none; a single
    /// message is one command, atomic by itself, so it goes without the transaction's two).
    pub fn publish_many(&self, messages: &[NewMessage]) -> Result<()> {
        for m in messages {
            check_queue(&m.queue)?;
            check_priority(m.priority)?;
        }
        if messages.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut pipe = redis::pipe();
        if messages.len() > 1 {
            pipe.atomic();
        }
        for m in messages {
            self.add_publish(&mut pipe, m, now);
        }
        self.with_conn(|c| pipe.query::<()>(c))
    }

    /// Leases up to `limit` messages of `queues` to `owner` in one atomic script: due ETA
    /// messages first go back to their list, then every queue's bucket 0 before any bucket 3.
    pub fn fetch(&self, queues: &[String], limit: usize, owner: &str) -> Result<Vec<Delivery>> {
        self.ack_then_fetch(&[] as &[String], queues, limit, owner, None)
    }

    /// Acks `acks` (see [`ack`](Self::ack)), then fetches (see [`fetch`](Self::fetch)), in ONE
    /// round trip: a consumer thread that sends the executor's acks pays no extra wait for them.
    /// With `wait` (an idle consumer), the same pipeline first waits up to it for a message (see
    /// [`wait_cmd`](Self::wait_cmd); before Redis 6.2 it sleeps): Redis runs the fetch as soon as
    /// the wait ends, so the message that wakes the consumer is leased without another round trip.
    pub fn ack_then_fetch<S: AsRef<str>>(
        &self,
        acks: &[S],
        queues: &[String],
        limit: usize,
        owner: &str,
        wait: Option<Duration>,
    ) -> Result<Vec<Delivery>> {
        check_owner(owner)?;
        let limit = limit.min(MAX_FETCH);
        let mut seen = std::collections::HashSet::new();
        let queues: Vec<&String> = queues.iter().filter(|q| seen.insert(q.as_str())).collect();
        if limit == 0 || queues.is_empty() {
            self.ack(acks)?;
            if let Some(wait) = wait {
                std::thread::sleep(wait);
            }
            return Ok(Vec::new());
        }
        let version = self.server_version()?;
        let scripts = self.scripts()?;
        let mut cmds: Vec<redis::Cmd> = Vec::with_capacity(3);
        if !acks.is_empty() {
            let mut ack = redis::cmd("EVALSHA");
            ack.arg(scripts.ack.get_hash())
                .arg(0)
                .arg(&self.config.global_keyprefix);
            for t in acks {
                ack.arg(t.as_ref());
            }
            cmds.push(ack);
        }
        match wait {
            Some(wait) if version >= BLMOVE_SINCE => cmds.push(self.wait_cmd(queues[0], wait)),
            Some(wait) => std::thread::sleep(wait),
            None => {}
        }
        let multi_pop = version >= MULTI_POP_SINCE;
        let mut fetch = redis::cmd("EVALSHA");
        fetch
            .arg(scripts.fetch.get_hash())
            .arg(0)
            .arg(&self.config.global_keyprefix)
            .arg(owner)
            .arg(limit)
            .arg(ETA_BATCH)
            .arg(if multi_pop { "1" } else { "0" })
            .arg(queues.len());
        for q in &queues {
            fetch.arg(q.as_str());
        }
        cmds.push(fetch);
        let flat: Vec<Vec<u8>> = self.with_conn(|c| {
            let replies = run_scripts(c, &cmds, |c| {
                scripts.ack.load(c)?;
                scripts.fetch.load(c).map(|_| ())
            })?;
            match replies.last() {
                Some(v) => redis::from_redis_value(v),
                None => Ok(Vec::new()),
            }
        })?;
        let mut out = Vec::with_capacity(flat.len() / 4);
        let mut it = flat.into_iter();
        while let (Some(tag), Some(queue), Some(payload), Some(n)) =
            (it.next(), it.next(), it.next(), it.next())
        {
            out.push(Delivery {
                tag: String::from_utf8_lossy(&tag).into_owned(),
                queue: String::from_utf8_lossy(&queue).into_owned(),
                payload,
                deliveries: std::str::from_utf8(&n)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1),
            });
        }
        Ok(out)
    }

    /// Waits up to `wait` for a message in `queue`'s main list (priority bucket 0, where every
    /// message without a priority goes), without taking it: `BLMOVE` from the list's tail to its
    /// tail leaves the list as it was and returns once it holds a message. So an idle consumer
    /// answers a new message at once instead of at its next poll, and producers, Celery's
    /// included, need do nothing. Redis 6.2+.
    fn wait_cmd(&self, queue: &str, wait: Duration) -> redis::Cmd {
        // BLMOVE's timeout 0 means forever; its resolution is 1 ms.
        let wait_s = wait.as_secs_f64().max(WAIT_MIN_S);
        let key = self.list_key(queue, 0);
        let mut cmd = redis::cmd("BLMOVE");
        cmd.arg(&key)
            .arg(&key)
            .arg("RIGHT")
            .arg("RIGHT")
            .arg(wait_s);
        cmd
    }

    /// Acknowledges finished messages (removes every lease record); returns how many were in flight.
    pub fn ack<S: AsRef<str>>(&self, tags: &[S]) -> Result<usize> {
        if tags.is_empty() {
            return Ok(0);
        }
        let mut inv = self.scripts()?.ack.prepare_invoke();
        inv.arg(&self.config.global_keyprefix);
        for t in tags {
            inv.arg(t.as_ref());
        }
        self.with_conn_idempotent(|c| inv.invoke(c))
    }

    /// Stores result records (one store script call per run of records stored alike: `SET` with
    /// expiry and `PUBLISH` on the key's channel, unless a SUCCESS is already stored) and then
    /// acks `tags`, in ONE pipeline: one round trip. Redis runs the pipeline in order, so results
    /// are stored before their messages are acked; a crash in between re-runs tasks
    /// (at-least-once), never loses results.
    /// Result keys carry no `global_keyprefix` (Celery's backend does not read one). A script
    /// cache flushed meanwhile is refilled and the refused commands sent again, in order (only a
    /// flush racing with another client's reload mid-pipeline could let the ack run first).
    /// Returns how many tags were in flight.
    pub fn complete<S: AsRef<str>>(&self, rows: &[ResultRow], tags: &[S]) -> Result<usize> {
        if rows.is_empty() && tags.is_empty() {
            return Ok(0);
        }
        let store = &self.scripts()?.store_result;
        let ack = &self.scripts()?.ack;
        let mut cmds: Vec<redis::Cmd> = Vec::new();
        // One script call per run of rows stored alike (in order: a task's records stay in theirs).
        let alike = |r: &ResultRow| (r.content_type == PICKLE_CONTENT_TYPE, r.ttl_ms);
        for run in rows.chunk_by(|a, b| alike(a) == alike(b)) {
            let (marked, ttl_ms) = alike(&run[0]);
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(store.get_hash())
                .arg(if marked { run.len() * 2 } else { run.len() });
            for r in run {
                cmd.arg(format!("{RESULT_KEY_PREFIX}{}", r.task_id));
            }
            if marked {
                for r in run {
                    cmd.arg(format!("{RESULT_FINAL_PREFIX}{}", r.task_id));
                }
            }
            match ttl_ms {
                Some(ms) => cmd.arg(ms.max(1)),
                None => cmd.arg(""),
            };
            for r in run {
                cmd.arg(&r.payload[..]).arg(r.status.as_str());
            }
            cmds.push(cmd);
        }
        if !tags.is_empty() {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(ack.get_hash())
                .arg(0)
                .arg(&self.config.global_keyprefix);
            for t in tags {
                cmd.arg(t.as_ref());
            }
            cmds.push(cmd);
        }
        let acked = !tags.is_empty();
        self.with_conn_idempotent(|c| {
            let replies = run_scripts(c, &cmds, |c| {
                store.load(c)?;
                ack.load(c).map(|_| ())
            })?;
            match replies.last() {
                Some(v) if acked => redis::from_redis_value(v),
                _ => Ok(0),
            }
        })
    }

    fn beat_key(&self, name: &str, what: &str) -> String {
        self.key(&format!("rqueue.beat.{name}.{what}"))
    }

    /// Takes the leader lease of the periodic schedule `name` for `token` (when free: an expired
    /// key is gone), or renews it for its holder, for `ttl_ms` of the server's clock; false when
    /// another holds it.
    pub fn beat_lease(&self, name: &str, token: &str, ttl_ms: u64) -> Result<bool> {
        let script = &self.scripts()?.beat_lease;
        let mut inv = script.key(self.beat_key(name, "lease"));
        inv.arg(token).arg(ttl_ms.max(1));
        self.with_conn_idempotent(|c| inv.invoke::<i64>(c))
            .map(|n| n == 1)
    }

    /// Gives the lease of `name` up if `token` holds it; true when it did.
    pub fn beat_release(&self, name: &str, token: &str) -> Result<bool> {
        let script = &self.scripts()?.beat_release;
        let mut inv = script.key(self.beat_key(name, "lease"));
        inv.arg(token);
        self.with_conn_idempotent(|c| inv.invoke::<i64>(c))
            .map(|n| n == 1)
    }

    /// `(entry, tick_ms)`: the last tick sent of each entry of schedule `name`.
    pub fn beat_runs(&self, name: &str) -> Result<Vec<(String, i64)>> {
        let key = self.beat_key(name, "runs");
        let raw: Vec<(String, String)> =
            self.with_conn_idempotent(|c| redis::cmd("HGETALL").arg(&key).query(c))?;
        Ok(raw
            .into_iter()
            .filter_map(|(entry, tick)| Some((entry, tick.parse().ok()?)))
            .collect())
    }

    /// Sends the tick `tick_ms` of `entry` in one script with the checks that make it once-only:
    /// `token` holds the lease of `name` (a deposed leader is fenced off), and no tick at or after
    /// `tick_ms` was sent; the tick is recorded and the message pushed (or put in the ETA set).
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
        let step = bucket_of(message.priority);
        let script = &self.scripts()?.beat_send;
        let mut inv = script.key(self.beat_key(name, "lease"));
        inv.key(self.beat_key(name, "runs"));
        match message.eta_ms {
            Some(eta) if eta > now_ms() => {
                inv.key(self.eta_key(&message.queue))
                    .arg(token)
                    .arg(entry)
                    .arg(tick_ms)
                    .arg(&message.payload[..])
                    .arg(eta)
                    .arg(format!("{step}:{}|", uuid::Uuid::new_v4().simple()));
            }
            _ => {
                inv.key(self.list_key(&message.queue, step))
                    .arg(token)
                    .arg(entry)
                    .arg(tick_ms)
                    .arg(&message.payload[..])
                    .arg("")
                    .arg("");
            }
        }
        // Not retried on a lost reply: the script may have run, and the caller must not send the
        // tick again blindly (a retry would be refused as AlreadySent anyway, but say so).
        let code: i64 = self.with_conn(|c| inv.invoke(c))?;
        Ok(beat_outcome(code))
    }

    /// Records the tick like [`RedisBroker::beat_send`] without publishing anything: for a beat
    /// whose messages go to another broker (RabbitMQ), which publishes after this succeeded.
    pub fn beat_claim(
        &self,
        name: &str,
        token: &str,
        entry: &str,
        tick_ms: i64,
    ) -> Result<BeatSend> {
        let script = &self.scripts()?.beat_send;
        let mut inv = script.key(self.beat_key(name, "lease"));
        inv.key(self.beat_key(name, "runs"))
            .arg(token)
            .arg(entry)
            .arg(tick_ms);
        let code: i64 = self.with_conn(|c| inv.invoke(c))?;
        Ok(beat_outcome(code))
    }

    /// Returns unstarted deliveries to the front of their queue (next to be consumed, in their
    /// original order), unchanged, undoing this delivery's count.
    pub fn requeue<S: AsRef<str>>(&self, tags: &[S]) -> Result<usize> {
        self.put_back(tags, true)
    }

    /// Returns rejected deliveries to the front of their queue keeping this delivery's count, so
    /// a message rejected again and again reaches `max_deliveries`.
    pub fn release<S: AsRef<str>>(&self, tags: &[S]) -> Result<usize> {
        self.put_back(tags, false)
    }

    fn put_back<S: AsRef<str>>(&self, tags: &[S], undo_count: bool) -> Result<usize> {
        if tags.is_empty() {
            return Ok(0);
        }
        let mut inv = self.scripts()?.requeue.prepare_invoke();
        inv.arg(&self.config.global_keyprefix)
            .arg(if undo_count { "1" } else { "0" });
        for t in tags {
            inv.arg(t.as_ref());
        }
        self.with_conn_idempotent(|c| inv.invoke(c))
    }

    /// Renews the leases of the tags in `held` that `owner` holds, with the broker's clock, and
    /// returns every tag the broker has leased to `owner` (those not in `held` are orphans, see
    /// [`crate::transport::consumer`]).
    pub fn extend_leases<S: AsRef<str>>(&self, owner: &str, held: &[S]) -> Result<Vec<String>> {
        let mut inv = self.scripts()?.extend.prepare_invoke();
        inv.arg(&self.config.global_keyprefix).arg(owner);
        for t in held {
            inv.arg(t.as_ref());
        }
        self.with_conn_idempotent(|c| inv.invoke(c))
    }

    fn inspect(&self, inv: &redis::ScriptInvocation<'_>) -> Result<(String, Vec<InFlight>)> {
        let flat: Vec<Vec<u8>> = self.with_conn_idempotent(|c| inv.invoke(c))?;
        let mut it = flat.into_iter();
        let ceil = String::from_utf8_lossy(&it.next().unwrap_or_default()).into_owned();
        let mut out = Vec::new();
        while let (Some(tag), Some(entry), Some(meta), Some(n)) =
            (it.next(), it.next(), it.next(), it.next())
        {
            let tag = String::from_utf8_lossy(&tag).into_owned();
            let deliveries = std::str::from_utf8(&n)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if entry.is_empty() {
                // gone already (acked, or restored by another client): only clean up
                out.push(InFlight {
                    tag,
                    envelope: Vec::new(),
                    list_key: None,
                    queue: String::new(),
                    step: 0,
                    deliveries,
                    owner: None,
                });
                continue;
            }
            out.push(self.parse_in_flight(tag, &entry, &meta, deliveries));
        }
        Ok((ceil, out))
    }

    fn parse_in_flight(&self, tag: String, entry: &[u8], meta: &[u8], deliveries: u32) -> InFlight {
        let meta = String::from_utf8_lossy(meta);
        let mut parts = meta.splitn(4, '\n');
        if let (Some(owner), Some(step), Some(len), Some(queue)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            let step: u8 = step.parse().unwrap_or(0);
            let len: i64 = len.parse().unwrap_or(-1);
            // Only a record that still describes the entry (see `lease_holds` in the scripts);
            // a stale one, left behind by kombu's restore, is ignored: the entry is kombu's.
            let envelope = match usize::try_from(len) {
                Ok(len) if entry.starts_with(b"[{") && entry.get(len..len + 3) == Some(b"},\"") => {
                    Some(entry[1..=len].to_vec())
                }
                Ok(_) => None,
                Err(_) if entry.starts_with(b"[\"") => lua_json_string(entry),
                Err(_) => None,
            };
            if let Some(envelope) = envelope {
                return InFlight {
                    tag,
                    envelope,
                    list_key: Some(self.list_key(queue, step)),
                    queue: queue.to_string(),
                    step,
                    deliveries,
                    owner: Some(owner.to_string()),
                };
            }
        }
        // Written by another client (kombu): `[envelope, exchange, routing_key]`.
        let (envelope, queue, step) = match serde_json::from_slice::<Value>(entry) {
            Ok(Value::Array(a)) if a.len() >= 3 => {
                let priority = a[0]
                    .pointer("/properties/priority")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .min(9) as u8;
                let rk = a[2].as_str().unwrap_or("").to_string();
                (
                    serde_json::to_vec(&a[0]).unwrap_or_default(),
                    rk,
                    bucket_of(priority),
                )
            }
            _ => (entry.to_vec(), String::new(), 0),
        };
        InFlight {
            tag,
            envelope,
            list_key: (!queue.is_empty()).then(|| self.list_key(&queue, step)),
            queue,
            step,
            deliveries,
            owner: None,
        }
    }

    fn dead_record(&self, m: &InFlight, reason: &str, error: Option<&str>) -> Vec<u8> {
        let head = serde_json::json!({
            "id": m.tag,
            "queue": m.queue,
            "priority": m.step,
            "reason": reason,
            "error": error,
            "deliveries": m.deliveries,
            "dead_at_ms": now_ms(),
        });
        let mut out = serde_json::to_vec(&head).unwrap_or_else(|_| b"{}".to_vec());
        out.pop(); // the closing brace
                   // The envelope is kept as a JSON string, byte for byte: embedded as raw JSON, an envelope
                   // nested deeper than the parser's limit would make the whole record unreadable.
        if let Ok(s) = std::str::from_utf8(&m.envelope) {
            out.extend_from_slice(b",\"envelope\":");
            out.extend(serde_json::to_vec(s).unwrap_or_default());
        } else {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD.encode(&m.envelope);
            out.extend_from_slice(b",\"envelope_b64\":");
            out.extend(serde_json::to_vec(&b).unwrap_or_default());
        }
        out.push(b'}');
        out
    }

    /// Runs the restore script over `(tag, kind, key, data)` items.
    fn restore(
        &self,
        ceil: &str,
        owner: &str,
        items: &[(String, &'static str, String, Vec<u8>)],
    ) -> Result<(usize, usize)> {
        if items.is_empty() {
            return Ok((0, 0));
        }
        let mut inv = self.scripts()?.restore.prepare_invoke();
        inv.arg(&self.config.global_keyprefix).arg(ceil).arg(owner);
        for (tag, kind, key, data) in items {
            inv.arg(tag.as_str())
                .arg(*kind)
                .arg(key.as_str())
                .arg(&data[..]);
        }
        let (moved, dead): (usize, usize) = self.with_conn_idempotent(|c| inv.invoke(c))?;
        Ok((moved, dead))
    }

    fn decide(
        &self,
        found: Vec<InFlight>,
        max_deliveries: u32,
        error_of: impl Fn(&InFlight) -> String,
    ) -> Vec<(String, &'static str, String, Vec<u8>)> {
        found
            .into_iter()
            .map(|m| match &m.list_key {
                None => (m.tag.clone(), "x", String::new(), Vec::new()),
                Some(_) if m.deliveries >= max_deliveries && m.owner.is_some() => {
                    let rec = self.dead_record(&m, REASON_WORKER_LOST, Some(&error_of(&m)));
                    (m.tag.clone(), "d", self.dlq_key(&m.queue), rec)
                }
                Some(key) => (
                    m.tag.clone(),
                    "q",
                    key.clone(),
                    mark_redelivered(&m.envelope),
                ),
            })
            .collect()
    }

    /// Returns every message held by `owner` (a worker that died) to the front of its queue,
    /// marked redelivered; those delivered `max_deliveries` times are dead-lettered as
    /// `worker_lost`. Returns `(requeued, dead_lettered)`.
    pub fn requeue_owner(&self, owner: &str, max_deliveries: u32) -> Result<(usize, usize)> {
        check_owner(owner)?;
        let mut inv = self.scripts()?.inspect.prepare_invoke();
        inv.arg(&self.config.global_keyprefix)
            .arg("owner")
            .arg(owner);
        let (_, found) = self.inspect(&inv)?;
        let items = self.decide(found, max_deliveries, |m| {
            format!(
                "worker {owner} was lost while holding the message ({} deliveries)",
                m.deliveries
            )
        });
        self.restore("", owner, &items)
    }

    /// Returns up to [`SWEEP_BATCH`] leases older than `visibility` to the front of their queue
    /// (marked redelivered), or dead-letters them at `max_deliveries`. Entries of other clients
    /// are only taken after [`RedisConfig::foreign_visibility`]. Returns `(requeued, dead_lettered)`.
    pub fn sweep_expired(
        &self,
        visibility: Duration,
        max_deliveries: u32,
    ) -> Result<(usize, usize)> {
        let mut inv = self.scripts()?.inspect.prepare_invoke();
        inv.arg(&self.config.global_keyprefix)
            .arg("expired")
            .arg(visibility.as_secs_f64())
            .arg(self.config.foreign_visibility.as_secs_f64())
            .arg(SWEEP_BATCH)
            .arg(SWEEP_SCAN);
        let (ceil, found) = self.inspect(&inv)?;
        let items = self.decide(found, max_deliveries, |m| {
            format!(
                "lease of {} expired after {} deliveries",
                m.owner.as_deref().unwrap_or("another client"),
                m.deliveries
            )
        });
        // Each entry is checked again against its own ceiling (leased or another client's).
        let out = self.restore(&ceil, "", &items)?;
        self.tidy()?;
        Ok(out)
    }

    /// Forgets, a page per call, the lease records that kombu's restore and ack left behind
    /// (see the tidy script); returns how many.
    pub fn tidy(&self) -> Result<usize> {
        let cursor = self.tidy_cursor.load(Ordering::Relaxed);
        let mut inv = self.scripts()?.tidy.prepare_invoke();
        inv.arg(&self.config.global_keyprefix)
            .arg(cursor)
            .arg(TIDY_PAGE);
        let (next, forgotten): (String, usize) = self.with_conn_idempotent(|c| inv.invoke(c))?;
        self.tidy_cursor
            .store(next.parse().unwrap_or(0), Ordering::Relaxed);
        Ok(forgotten)
    }

    /// Moves an in-flight message to its queue's dead-letter list; false when it is not in flight.
    pub fn dead_letter(&self, tag: &str, reason: &str, error: Option<&str>) -> Result<bool> {
        let mut inv = self.scripts()?.inspect.prepare_invoke();
        inv.arg(&self.config.global_keyprefix).arg("tags").arg(tag);
        let (_, found) = self.inspect(&inv)?;
        let Some(m) = found.into_iter().next() else {
            return Ok(false);
        };
        if m.envelope.is_empty() && m.list_key.is_none() {
            return Ok(false);
        }
        let rec = self.dead_record(&m, reason, error);
        let (_, dead) =
            self.restore("", "", &[(m.tag.clone(), "d", self.dlq_key(&m.queue), rec)])?;
        Ok(dead > 0)
    }

    fn read_dead(&self, queue: &str, limit: isize) -> Result<Vec<(Vec<u8>, DeadLetter, u8)>> {
        let raw: Vec<Vec<u8>> = self.with_conn(|c| {
            redis::cmd("LRANGE")
                .arg(self.dlq_key(queue))
                .arg(-limit)
                .arg(-1)
                .query(c)
        })?;
        // newest at the left: oldest first is the reverse
        Ok(raw
            .into_iter()
            .rev()
            .filter_map(|r| {
                let (d, step) = parse_dead(&r)?;
                Some((r, d, step))
            })
            .collect())
    }

    /// Dead letters of `queue`, oldest first (Redis keeps them per queue: `None` is an error).
    pub fn dead_letters(&self, queue: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let queue = named_queue(queue, "listing dead letters")?;
        let limit = isize::try_from(limit.max(1))
            .unwrap_or(DEAD_SCAN)
            .min(DEAD_SCAN);
        Ok(self
            .read_dead(queue, limit)?
            .into_iter()
            .map(|(_, d, _)| d)
            .collect())
    }

    /// Puts dead letters (by id) back at the end of their queue with a fresh delivery count.
    pub fn requeue_dead<S: AsRef<str>>(&self, queue: &str, ids: &[S]) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let wanted: std::collections::HashSet<&str> = ids.iter().map(|s| s.as_ref()).collect();
        let mut n = 0;
        for (raw, d, step) in self.read_dead(queue, DEAD_SCAN)? {
            if !wanted.contains(d.id.as_str()) {
                continue;
            }
            let mut inv = self.scripts()?.requeue_dead.prepare_invoke();
            inv.arg(&self.config.global_keyprefix)
                .arg(self.dlq_key(queue))
                .arg(&raw[..])
                .arg(self.list_key(queue, step))
                .arg(&d.payload[..])
                .arg(&d.id);
            let moved: usize = self.with_conn(|c| inv.invoke(c))?;
            n += moved;
        }
        Ok(n)
    }

    /// Deletes the dead letters of `queue` (`None` is an error); returns how many.
    pub fn purge_dead(&self, queue: Option<&str>) -> Result<usize> {
        let key = self.dlq_key(named_queue(queue, "purging dead letters")?);
        let (n, _): (usize, ()) =
            self.with_conn(|c| redis::pipe().atomic().llen(&key).del(&key).query(c))?;
        Ok(n)
    }

    /// Deletes waiting messages of `queues` (every bucket and the ETA set); returns how many.
    pub fn purge(&self, queues: &[String]) -> Result<usize> {
        let mut total = 0;
        for q in queues {
            let keys = self.waiting_keys(q);
            let mut pipe = redis::pipe();
            pipe.atomic();
            for k in &keys[..4] {
                pipe.llen(k);
            }
            pipe.zcard(&keys[4]);
            pipe.del(&keys).ignore();
            let counts: Vec<usize> = self.with_conn(|c| pipe.query(c))?;
            total += counts.iter().sum::<usize>();
        }
        Ok(total)
    }

    fn waiting_keys(&self, queue: &str) -> Vec<String> {
        let mut keys: Vec<String> = [0, 3, 6, 9]
            .iter()
            .map(|s| self.list_key(queue, *s))
            .collect();
        keys.push(self.eta_key(queue));
        keys
    }

    /// Waiting messages of `queue`: every bucket plus those whose ETA is still ahead.
    pub fn queue_length(&self, queue: &str) -> Result<usize> {
        let keys = self.waiting_keys(queue);
        let mut pipe = redis::pipe();
        for k in &keys[..4] {
            pipe.llen(k);
        }
        pipe.zcard(&keys[4]);
        let counts: Vec<usize> = self.with_conn_idempotent(|c| pipe.query(c))?;
        Ok(counts.iter().sum())
    }

    /// Declares kombu bindings so Celery producers sending to an exchange find the queues:
    /// `SADD _kombu.binding.<exchange> "<routing_key>\x06\x16\x06\x16<queue>"`, with the routing
    /// key and (when `exchange` is `None`) the exchange named after the queue, as Celery's
    /// default direct exchanges are.
    pub fn declare_bindings(&self, queues: &[String], exchange: Option<&str>) -> Result<()> {
        if queues.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for q in queues {
            check_queue(q)?;
            let ex = exchange.unwrap_or(q);
            pipe.sadd(
                self.key(&format!("_kombu.binding.{ex}")),
                format!("{q}{SEP}{SEP}{q}"),
            )
            .ignore();
        }
        self.with_conn(|c| pipe.query::<()>(c))
    }

    /// The server's `maxmemory-policy` when it is not `noeviction` (Redis may then evict queued
    /// messages); `None` when it is, or when the server does not tell (CONFIG disabled).
    pub fn check_maxmemory_policy(&self) -> Result<Option<String>> {
        let got: std::result::Result<Vec<String>, Error> = self.with_conn(|c| {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query(c)
        });
        let v = match got {
            Ok(v) => v,
            Err(Error::Broker(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(v.get(1).filter(|p| p.as_str() != "noeviction").cloned())
    }

    /// Tags of the messages `owner` holds (its owner set, kept by the transport's scripts).
    pub fn leased_tags(&self, owner: &str) -> Result<Vec<String>> {
        let key = self.key(&format!("rqueue.owned.{owner}"));
        self.with_conn_idempotent(|c| redis::cmd("SMEMBERS").arg(&key).query(c))
    }

    /// Messages currently held by `owner`.
    pub fn leased_count(&self, owner: &str) -> Result<usize> {
        let key = self.key(&format!("rqueue.owned.{owner}"));
        self.with_conn_idempotent(|c| redis::cmd("SCARD").arg(&key).query(c))
    }
}

/// Sends `cmds` (EVALSHA calls) in one pipeline and returns their replies, in order. Commands
/// refused with NOSCRIPT (a new server, or SCRIPT FLUSH) are sent again, in their order, after
/// `load` has loaded the scripts; any other error reply fails the call.
fn run_scripts(
    c: &mut Connection,
    cmds: &[redis::Cmd],
    load: impl Fn(&mut Connection) -> std::result::Result<(), RedisError>,
) -> std::result::Result<Vec<redis::Value>, RedisError> {
    let mut replies: Vec<Option<redis::Value>> = vec![None; cmds.len()];
    let mut todo: Vec<usize> = (0..cmds.len()).collect();
    for attempt in 0..=NOSCRIPT_RETRIES {
        if attempt > 0 {
            load(c)?;
        }
        let mut pipe = redis::pipe();
        for &i in &todo {
            pipe.add_command(cmds[i].clone());
        }
        let got = c.req_packed_commands(&pipe.get_packed_pipeline(), 0, todo.len())?;
        let mut missing = Vec::new();
        for (i, value) in todo.iter().copied().zip(got) {
            match value.extract_error() {
                Ok(v) => replies[i] = Some(v),
                Err(e) if e.kind() == redis::ErrorKind::NoScriptError => missing.push(i),
                Err(e) => return Err(e),
            }
        }
        if missing.is_empty() {
            return Ok(replies
                .into_iter()
                .map(|v| v.unwrap_or(redis::Value::Nil))
                .collect());
        }
        todo = missing;
    }
    Err(RedisError::from((
        redis::ErrorKind::NoScriptError,
        "Redis keeps refusing the result and ack scripts (SCRIPT FLUSH in a loop?)",
    )))
}

/// Decodes the leading JSON string of `["...", ...]` as Lua's cjson wrote it: bytes are passed
/// through as they are (not necessarily UTF-8), control characters escaped.
fn lua_json_string(entry: &[u8]) -> Option<Vec<u8>> {
    let rest = entry.strip_prefix(b"[\"")?;
    let mut out = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'"' => return Some(out),
            b'\\' => {
                let c = *rest.get(i + 1)?;
                i += 2;
                match c {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'u' => {
                        let hex = std::str::from_utf8(rest.get(i..i + 4)?).ok()?;
                        let code = u32::from_str_radix(hex, 16).ok()?;
                        let ch = char::from_u32(code)?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        i += 4;
                    }
                    other => out.push(other),
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

/// `major * 1000 + minor` of `INFO server`'s `redis_version:7.0.15` (Valkey reports its Redis
/// version there too).
fn server_version(info: &str) -> Option<u32> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?;
    let mut parts = version.trim().split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next().unwrap_or("0").parse().ok()?;
    Some(major * 1000 + minor.min(999))
}

fn check_owner(owner: &str) -> Result<()> {
    if owner.is_empty() || owner.contains('\n') {
        return Err(Error::Config(format!(
            "consumer owner id {owner:?} must be non-empty and on one line"
        )));
    }
    Ok(())
}

fn parse_dead(raw: &[u8]) -> Option<(DeadLetter, u8)> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let payload = match (v.get("envelope"), v.get("envelope_b64")) {
        (Some(Value::String(s)), _) => s.clone().into_bytes(),
        (Some(other), _) => serde_json::to_vec(other).ok()?,
        (None, Some(Value::String(b))) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b).ok()?
        }
        _ => Vec::new(),
    };
    let step = v
        .get("priority")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(9) as u8;
    Some((
        DeadLetter {
            id: s("id")?,
            queue: s("queue").unwrap_or_default(),
            reason: s("reason").unwrap_or_default(),
            error: s("error"),
            deliveries: v
                .get("deliveries")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            dead_at_ms: v.get("dead_at_ms").and_then(Value::as_i64).unwrap_or(0),
            payload,
        },
        bucket_of(step),
    ))
}

transport_by_inherent_methods!(RedisBroker);

#[cfg(test)]
mod tests {
    #[test]
    fn test_server_version_reads_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(super::server_version(info), Some(7_000));
        assert_eq!(super::server_version("redis_version:6.2.14\n"), Some(6_002));
        assert_eq!(super::server_version("# Server\n"), None);
    }

    use super::*;

    #[test]
    fn test_mask_url_hides_passwords() {
        assert_eq!(
            mask_url("redis://user:s3cret@h:6379/0"),
            "redis://user:***@h:6379/0"
        );
        assert_eq!(mask_url("redis://:s3cret@h"), "redis://:***@h");
        assert_eq!(mask_url("redis://s3cret@h/1"), "redis://***@h/1");
        assert_eq!(mask_url("redis://h:1/2"), "redis://h:1/2");
        assert_eq!(
            mask_url("unix:///tmp/r.sock?db=2&password=s3cret"),
            "unix:///tmp/r.sock?db=2&password=***"
        );
    }

    #[test]
    fn test_lua_json_string_passes_bytes_through() {
        let entry = b"[\"a\xff\\u0001b\\\"\\/\\n\",\"\",\"q\"]";
        assert_eq!(lua_json_string(entry).unwrap(), b"a\xff\x01b\"/\n".to_vec());
        assert!(lua_json_string(b"[\"open").is_none());
    }

    #[test]
    fn test_bucket_of_steps() {
        let got: Vec<u8> = (0..=9).map(bucket_of).collect();
        assert_eq!(got, vec![0, 0, 0, 3, 3, 3, 6, 6, 6, 9]);
    }

    #[test]
    fn test_mark_redelivered_keeps_empty_arrays() {
        let env = br#"{"body":"W10=","headers":{"stamped_headers":[],"x":{}},"properties":{"delivery_info":{"exchange":"","routing_key":"q"},"delivery_tag":"t"}}"#;
        let out: Value = serde_json::from_slice(&mark_redelivered(env)).unwrap();
        assert_eq!(out["headers"]["stamped_headers"], serde_json::json!([]));
        assert_eq!(out["headers"]["redelivered"], Value::Bool(true));
        assert_eq!(
            out["properties"]["delivery_info"]["redelivered"],
            Value::Bool(true)
        );
        assert_eq!(mark_redelivered(b"\xff garbage"), b"\xff garbage".to_vec());
    }

    #[test]
    fn test_rediss_options_are_checked_with_the_password_masked() {
        let e = RedisBroker::new_lazy(RedisConfig::new(
            "rediss://u:pw@h:6380/0?ssl_cert_reqs=sometimes",
        ))
        .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::Config(_)));
        assert!(
            text.contains("ssl_cert_reqs") && !text.contains("pw@"),
            "{text}"
        );
        RedisBroker::new_lazy(RedisConfig::new("rediss://u:pw@h:6380/0")).unwrap();
    }
}
