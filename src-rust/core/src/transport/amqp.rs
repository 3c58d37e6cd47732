//! The RabbitMQ transport (AMQP 0-9-1, by lapin): Celery's topology, frames and native delayed
//! delivery, publisher confirms, dead-letter queues. Settling deliveries belongs to the channel
//! that delivered them, so it lives in [`amqp_consumer`](super::amqp_consumer); this side
//! publishes and administers.
//!
//! Every handle runs a private tokio runtime (one worker thread) created in the process that
//! uses it: a handle is never carried over a fork. Callers block on it with the GIL released.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    DefaultConnectionBuilder, ErrorKind, ExchangeKind,
};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::transport::amqp_frame::{self, from_envelope, int_header, short, text_header, Frame};
use crate::transport::{check_queue, named_queue, now_ms, DeadLetter, NewMessage};

/// Celery 5.5's native delayed delivery: 28 levels of TTL queues, level `n` holding 2^n s.
pub const DELAY_LEVELS: u32 = 28;
/// Where a delayed message finally arrives, to be routed to its queue by `#.<routing key>`.
pub const DELAYED_DELIVERY_EXCHANGE: &str = "celery_delayed_delivery";
/// Longest delay the levels can express, in seconds (about 8.5 years).
pub const MAX_DELAY_S: u64 = (1 << DELAY_LEVELS) - 1;

/// Headers rqueue adds: how many earlier deliveries of a message died running (the broker only
/// flags a redelivery, and also redelivers the innocent messages a dead worker had prefetched, so
/// the worker node that saw the death republishes the message with its count), and why and when
/// a dead letter was moved aside.
pub const H_DELIVERED: &str = "x-rqueue-delivered";
pub const H_DEAD_ID: &str = "x-rqueue-dead-id";
pub const H_DEAD_QUEUE: &str = "x-rqueue-queue";
pub const H_DEAD_REASON: &str = "x-rqueue-reason";
pub const H_DEAD_ERROR: &str = "x-rqueue-error";
pub const H_DEAD_AT: &str = "x-rqueue-dead-at-ms";
pub const H_DEAD_DELIVERIES: &str = "x-rqueue-deliveries";

/// The dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.rqueue.dead")
}

/// How one queue is declared and bound: argument-identical to Celery's declaration of it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub name: String,
    /// `""` binds nothing: the queue is reached through the default exchange by its name.
    pub exchange: String,
    /// direct, topic, fanout or headers.
    pub exchange_type: String,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// The queues a project declares (`task_queues`), and how undeclared ones are made: as Celery's
/// `task_create_missing_queues` makes them (exchange and routing key named after the queue).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Topology {
    pub queues: HashMap<String, QueueSpec>,
    /// Arguments of queues that name none (`x-max-priority`, `x-queue-type`).
    pub default_arguments: FieldTable,
    /// `quorum` (Celery's default) or `classic`: the type of the delay-level queues.
    pub delayed_queue_type: String,
}

impl Topology {
    /// Parses `{"queues": [{name, exchange, exchange_type, routing_key, arguments}],
    /// "default_arguments": {...}, "delayed_queue_type": "quorum"}`.
    pub fn from_json(text: &str) -> Result<Topology> {
        let bad = |what: &str| Error::Config(format!("AMQP topology: {what}"));
        let v: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        let args = |v: Option<&Value>| match v {
            Some(Value::Object(m)) => Ok(amqp_frame::table_from_json(m)),
            None | Some(Value::Null) => Ok(FieldTable::default()),
            Some(_) => Err(bad("arguments must be an object")),
        };
        let text = |q: &Value, k: &str| q.get(k).and_then(Value::as_str).map(str::to_string);
        let mut queues = HashMap::new();
        for q in v
            .get("queues")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = text(q, "name").ok_or_else(|| bad("a queue without a name"))?;
            check_queue(&name)?;
            let exchange_type = text(q, "exchange_type").unwrap_or_else(|| "direct".into());
            exchange_kind(&exchange_type)?;
            let spec = QueueSpec {
                exchange: text(q, "exchange").unwrap_or_else(|| name.clone()),
                routing_key: text(q, "routing_key").unwrap_or_else(|| name.clone()),
                exchange_type,
                arguments: args(q.get("arguments"))?,
                name: name.clone(),
            };
            queues.insert(name, spec);
        }
        let delayed_queue_type = text(&v, "delayed_queue_type").unwrap_or_else(|| "quorum".into());
        if !matches!(delayed_queue_type.as_str(), "quorum" | "classic") {
            return Err(bad(&format!(
                "delayed queue type {delayed_queue_type:?} is not quorum or classic"
            )));
        }
        Ok(Topology {
            queues,
            default_arguments: args(v.get("default_arguments"))?,
            delayed_queue_type,
        })
    }

    /// How `name` is declared.
    pub fn queue(&self, name: &str) -> QueueSpec {
        self.queues.get(name).cloned().unwrap_or_else(|| QueueSpec {
            name: name.to_string(),
            exchange: name.to_string(),
            exchange_type: "direct".into(),
            routing_key: name.to_string(),
            arguments: self.default_arguments.clone(),
        })
    }
}

fn exchange_kind(kind: &str) -> Result<ExchangeKind> {
    Ok(match kind {
        "direct" => ExchangeKind::Direct,
        "topic" => ExchangeKind::Topic,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        other => {
            return Err(Error::Config(format!(
                "exchange type {other:?} is not direct, topic, fanout or headers"
            )))
        }
    })
}

/// Where and how to reach RabbitMQ.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub vhost: String,
    pub tls: bool,
    /// PEM text of the CA that signs the server's certificate (else the system's roots).
    pub ca_pem: Option<String>,
    /// Heartbeat interval asked of the server; 0 turns heartbeats off.
    pub heartbeat_s: u16,
    pub connect_timeout: Duration,
    /// How long `publish` waits for the broker's confirm before failing.
    pub confirm_timeout: Duration,
    pub topology: Topology,
}

impl AmqpConfig {
    /// The URL with the password masked, for every message.
    pub fn masked_url(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        let vhost: String = form_urlencoded::byte_serialize(self.vhost.as_bytes()).collect();
        format!(
            "{scheme}://{}:**@{}:{}/{vhost}",
            self.username, self.host, self.port
        )
    }

    fn uri(&self) -> AMQPUri {
        AMQPUri {
            scheme: if self.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.username.clone(),
                    password: self.password.clone(),
                },
                host: self.host.clone(),
                port: self.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: Some(self.heartbeat_s),
                ..AMQPQueryString::default()
            },
        }
    }

    /// A broker error naming this server (never its password).
    pub(crate) fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Broker(format!("RabbitMQ {}: {e}", self.masked_url()))
    }

    /// A publish that got no answer within `confirm_timeout`: it may or may not have been queued.
    fn no_reply(&self, what: &str) -> Error {
        Error::NoReply(format!(
            "RabbitMQ {}: no {what} within {:?}; the message may or may not be queued",
            self.masked_url(),
            self.confirm_timeout
        ))
    }
}

/// A private runtime for one handle: lapin's I/O runs on its worker thread.
pub(crate) fn runtime(cfg: &AmqpConfig) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("rqueue-amqp-io")
        .enable_all()
        .build()
        .map_err(|e| cfg.err(format!("cannot start the AMQP I/O thread: {e}")))
}

/// Opens a connection named `name` (shown by `rabbitmqctl list_connections`).
pub(crate) async fn connect(cfg: &AmqpConfig, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: cfg.ca_pem.clone(),
    };
    let builder = DefaultConnectionBuilder::new()
        .map_err(|e| cfg.err(e))?
        .with_uri(cfg.uri())
        .with_properties(props)
        .with_tls_config(tls);
    match tokio::time::timeout(cfg.connect_timeout, builder.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(Error::Connection(format!(
            "RabbitMQ {}: {e}",
            cfg.masked_url()
        ))),
        Err(_) => Err(Error::Connection(format!(
            "RabbitMQ {}: no answer within {:?}",
            cfg.masked_url(),
            cfg.connect_timeout
        ))),
    }
}

/// True for the broker's `NOT_FOUND` (a queue or exchange that does not exist).
pub(crate) fn not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(p) if *p.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares a queue, its exchange and binding as Celery does, plus the binding that brings its
/// delayed messages back (`celery_delayed_delivery`, `#.<routing key>`): bound to the queue
/// itself, so delays work whatever the queue's own exchange type.
pub(crate) async fn declare_queue(ch: &Channel, spec: &QueueSpec) -> lapin::Result<()> {
    let name = ShortString::from(spec.name.as_str());
    if !spec.exchange.is_empty() {
        let kind = exchange_kind(&spec.exchange_type).unwrap_or(ExchangeKind::Direct);
        ch.exchange_declare(
            spec.exchange.as_str().into(),
            kind,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.queue_declare(name.clone(), durable_queue(), spec.arguments.clone())
        .await?;
    if !spec.exchange.is_empty() {
        ch.queue_bind(
            name.clone(),
            spec.exchange.as_str().into(),
            spec.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.exchange_declare(
        DELAYED_DELIVERY_EXCHANGE.into(),
        ExchangeKind::Topic,
        durable_exchange(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        name,
        DELAYED_DELIVERY_EXCHANGE.into(),
        format!("#.{}", spec.routing_key).into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

fn level_name(level: u32) -> String {
    format!("celery_delayed_{level}")
}

/// Declares the 28 delay levels exactly as kombu's `native_delayed_delivery` does, so Celery and
/// rqueue share them: level `n` is a topic exchange and a queue of TTL 2^n s whose expired
/// messages fall to level `n - 1` (level 0 to `celery_delayed_delivery`).
pub(crate) async fn declare_delay_levels(ch: &Channel, queue_type: &str) -> lapin::Result<()> {
    let mut routing_key = String::from("1.#");
    for level in (0..DELAY_LEVELS).rev() {
        let name = level_name(level);
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
        let next = if level > 0 {
            level_name(level - 1)
        } else {
            DELAYED_DELIVERY_EXCHANGE.to_string()
        };
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(queue_type.into()),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        args.insert("x-message-ttl".into(), ttl_value(level));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(next.as_str().into()),
        );
        if queue_type == "quorum" {
            args.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString("at-least-once".into()),
            );
        }
        ch.queue_declare(name.as_str().into(), durable_queue(), args)
            .await?;
        ch.queue_bind(
            name.as_str().into(),
            name.as_str().into(),
            routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        routing_key = format!("*.{routing_key}");
    }
    let mut routing_key = String::from("0.#");
    for level in (1..DELAY_LEVELS).rev() {
        let next = level_name(level - 1);
        ch.exchange_declare(
            next.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
        ch.exchange_bind(
            next.as_str().into(),
            level_name(level).as_str().into(),
            routing_key.as_str().into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        routing_key = format!("*.{routing_key}");
    }
    ch.exchange_declare(
        DELAYED_DELIVERY_EXCHANGE.into(),
        ExchangeKind::Topic,
        durable_exchange(),
        FieldTable::default(),
    )
    .await?;
    ch.exchange_bind(
        DELAYED_DELIVERY_EXCHANGE.into(),
        level_name(0).as_str().into(),
        routing_key.as_str().into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// A level's TTL as py-amqp types it (32-bit when it fits), so the declaration matches Celery's.
fn ttl_value(level: u32) -> AMQPValue {
    int_value((1i64 << level) * 1000)
}

/// kombu's `calculate_routing_key`: the delay in 28 binary digits, one word each, then the
/// destination's routing key (with any earlier delay prefix removed).
pub fn delayed_routing_key(delay_s: u64, routing_key: &str) -> String {
    let delay = delay_s.clamp(1, MAX_DELAY_S);
    let mut base = routing_key;
    // A retried message may carry an earlier prefix: 28 words of 0/1.
    let prefix_len = 2 * DELAY_LEVELS as usize;
    if base.len() > prefix_len
        && base.as_bytes()[..prefix_len]
            .chunks(2)
            .all(|w| matches!(w, [b'0' | b'1', b'.']))
    {
        base = &base[prefix_len..];
    }
    let mut out = String::with_capacity(prefix_len + base.len());
    for bit in (0..DELAY_LEVELS).rev() {
        out.push(if delay >> bit & 1 == 1 { '1' } else { '0' });
        out.push('.');
    }
    out.push_str(base);
    out
}

/// Whole seconds until `eta_ms`, rounded up so a message never arrives early; `None` when due.
pub fn delay_seconds(eta_ms: Option<i64>, now_ms: i64) -> Option<u64> {
    let wait = eta_ms? - now_ms;
    (wait > 0).then(|| u64::try_from(wait).unwrap_or(0).div_ceil(1000))
}

/// What a publish waits for: the broker's confirm, within `timeout` (`None`: the caller bounds it).
pub(crate) async fn confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    frame: &Frame,
    timeout: Option<Duration>,
) -> Result<std::result::Result<(), String>> {
    let broker = |e: lapin::Error| Error::Broker(e.to_string());
    let send = async {
        let confirm = ch
            .basic_publish(
                short(exchange.to_string())?,
                short(routing_key.to_string())?,
                BasicPublishOptions {
                    // A message no queue takes is returned (an error), never dropped.
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &frame.body,
                frame.properties.clone(),
            )
            .await
            .map_err(broker)?;
        confirm.await.map_err(broker)
    };
    let waited = match timeout {
        Some(t) => tokio::time::timeout(t, send).await,
        None => Ok(send.await),
    };
    let outcome = match waited {
        Ok(c) => c?,
        Err(_) => {
            return Ok(Err(format!(
                "no publisher confirm within {timeout:?}: the message may or may not be queued"
            )))
        }
    };
    Ok(match outcome {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(format!(
            "the message to exchange {exchange:?} with routing key {routing_key:?} was returned: \
             {} (no queue is bound to take it)",
            returned.reply_text
        )),
        Confirmation::Nack(_) => Err(format!(
            "the broker refused the message to exchange {exchange:?} (nack)"
        )),
    })
}

/// One open connection of the publishing side, with its confirm channel and what it declared.
struct Link {
    conn: Connection,
    confirm: Channel,
    declared: Mutex<HashSet<String>>,
    delay_levels: Mutex<bool>,
}

impl Link {
    fn usable(&self) -> bool {
        self.conn.status().connected() && self.confirm.status().connected()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A message pushed to a listened queue (remote control, `rpc://` replies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub body: Vec<u8>,
    /// The headers as a JSON object's text.
    pub headers: String,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
}

/// A listened queue: its channel and what was pushed to it.
struct Listener {
    channel: Channel,
    rx: Mutex<std::sync::mpsc::Receiver<std::result::Result<Pushed, String>>>,
    /// Where a message's arrival is announced, when someone asked (`ring_on_push`).
    bell: Arc<Mutex<Option<Bell>>>,
}

/// A one-byte UDP datagram to a loopback port per pushed message: an event loop waits for it
/// like for any socket (asyncio's `add_reader`) and then takes the messages with a zero-timeout
/// `receive`, so no thread of the client is blocked waiting. A lost or spurious datagram is
/// harmless: the reader always takes everything the queue holds.
struct Bell {
    socket: std::net::UdpSocket,
    to: std::net::SocketAddr,
}

impl Bell {
    fn ring(bell: &Mutex<Option<Bell>>) {
        if let Some(b) = lock(bell).as_ref() {
            // Non-blocking: a full socket buffer means unread datagrams, which wake the reader anyway.
            let _ = b.socket.send_to(&[1], b.to);
        }
    }
}

/// The publishing and administering side of a RabbitMQ broker, one per process.
pub struct AmqpBroker {
    cfg: AmqpConfig,
    rt: tokio::runtime::Runtime,
    link: Mutex<Option<Arc<Link>>>,
    listeners: Mutex<HashMap<String, Arc<Listener>>>,
}

impl std::fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AmqpBroker({})", self.cfg.masked_url())
    }
}

impl AmqpBroker {
    /// A handle that connects on first use (and again after any failure).
    pub fn new(cfg: AmqpConfig) -> Result<Self> {
        let rt = runtime(&cfg)?;
        Ok(AmqpBroker {
            cfg,
            rt,
            link: Mutex::new(None),
            listeners: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &AmqpConfig {
        &self.cfg
    }

    pub fn masked_url(&self) -> String {
        self.cfg.masked_url()
    }

    /// The open link, or a new one when there is none or it broke.
    fn link(&self) -> Result<Arc<Link>> {
        let mut slot = lock(&self.link);
        if let Some(l) = slot.as_ref().filter(|l| l.usable()) {
            return Ok(Arc::clone(l));
        }
        let cfg = &self.cfg;
        let link = self.rt.block_on(async {
            let conn = connect(cfg, "rqueue-publisher").await?;
            let confirm = conn.create_channel().await.map_err(|e| cfg.err(e))?;
            confirm
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| cfg.err(e))?;
            Ok::<_, Error>(Link {
                conn,
                confirm,
                declared: Mutex::new(HashSet::new()),
                delay_levels: Mutex::new(false),
            })
        })?;
        let link = Arc::new(link);
        *slot = Some(Arc::clone(&link));
        Ok(link)
    }

    /// Runs `f` on the open link; a failure drops the link so the next call reconnects.
    fn on_link<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Link>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let link = self.link()?;
        let out = self.rt.block_on(f(Arc::clone(&link)));
        if out.is_err() && !link.usable() {
            let mut slot = lock(&self.link);
            if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, &link)) {
                *slot = None;
            }
        }
        out
    }

    /// Runs `f` on a fresh channel (administrative steps: a refused one closes its channel).
    fn on_channel<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cfg = &self.cfg;
        self.on_link(|link| async move {
            let ch = link.conn.create_channel().await.map_err(|e| cfg.err(e))?;
            let out = f(ch.clone()).await;
            if ch.status().connected() {
                let _ = ch.close(200, "done".into()).await;
            }
            out
        })
    }

    async fn ensure_queue(&self, link: &Link, ch: &Channel, spec: &QueueSpec) -> Result<()> {
        if lock(&link.declared).contains(&spec.name) {
            return Ok(());
        }
        declare_queue(ch, spec).await.map_err(|e| {
            self.cfg
                .err(format!("cannot declare queue {:?}: {e}", spec.name))
        })?;
        lock(&link.declared).insert(spec.name.clone());
        Ok(())
    }

    async fn ensure_delay_levels(&self, link: &Link, ch: &Channel) -> Result<()> {
        if *lock(&link.delay_levels) {
            return Ok(());
        }
        declare_delay_levels(ch, &self.cfg.topology.delayed_queue_type)
            .await
            .map_err(|e| {
                self.cfg
                    .err(format!("cannot declare the delay levels: {e}"))
            })?;
        *lock(&link.delay_levels) = true;
        Ok(())
    }

    /// Declares what a worker consuming `queues` needs (the delay levels included), at start.
    pub fn declare(&self, queues: &[String]) -> Result<()> {
        self.on_link(|link| async move {
            for q in queues {
                check_queue(q)?;
                let spec = self.cfg.topology.queue(q);
                self.ensure_queue(&link, &link.confirm, &spec).await?;
            }
            self.ensure_delay_levels(&link, &link.confirm).await
        })
    }

    /// Where a message for `queue` goes: the route's exchange when it names one, else the
    /// queue's own; through the delay levels when it is due later.
    async fn target(
        &self,
        link: &Link,
        queue: &str,
        frame: &Frame,
        eta_ms: Option<i64>,
    ) -> Result<(String, String)> {
        check_queue(queue)?;
        let spec = self.cfg.topology.queue(queue);
        self.ensure_queue(link, &link.confirm, &spec).await?;
        if let Some(delay) = delay_seconds(eta_ms, now_ms()) {
            self.ensure_delay_levels(link, &link.confirm).await?;
            let rk = delayed_routing_key(delay, &spec.routing_key);
            return Ok((level_name(DELAY_LEVELS - 1), rk));
        }
        Ok(if frame.exchange.is_empty() {
            (spec.exchange, spec.routing_key)
        } else {
            (frame.exchange.clone(), frame.routing_key.clone())
        })
    }

    /// Publishes one task message (a kombu envelope) and waits for the broker's confirm. The
    /// priority travels in the message (RabbitMQ's meaning: 9 highest); `eta_ms` in the future
    /// goes through the delay levels.
    /// The whole publish (declaring its route on first use, then the confirm) is bounded by
    /// `confirm_timeout`: a frozen node fails it with [`Error::NoReply`], not after minutes.
    pub fn publish(&self, queue: &str, payload: &[u8], eta_ms: Option<i64>) -> Result<()> {
        let frame = from_envelope(payload)?;
        let cfg = &self.cfg;
        self.on_link(|link| async move {
            let publish = async {
                let (exchange, rk) = self.target(&link, queue, &frame, eta_ms).await?;
                confirmed(&link.confirm, &exchange, &rk, &frame, None)
                    .await
                    .map_err(|e| cfg.err(e))?
                    .map_err(|why| cfg.err(why))
            };
            match tokio::time::timeout(cfg.confirm_timeout, publish).await {
                Ok(out) => out,
                // RabbitMQ stops reading from publishers during a memory or disk alarm (and
                // queues what they sent once it clears): say so.
                Err(_) if link.conn.status().blocked() => Err(cfg.no_reply(
                    "publisher confirm (the node blocks publishers: a memory or disk alarm)",
                )),
                Err(_) => Err(cfg.no_reply("publisher confirm")),
            }
        })
    }

    /// Publishes messages all or none, in one AMQP transaction.
    pub fn publish_many(&self, messages: &[NewMessage]) -> Result<()> {
        let frames = messages
            .iter()
            .map(|m| from_envelope(&m.payload))
            .collect::<Result<Vec<_>>>()?;
        let cfg = &self.cfg;
        self.on_link(|link| async move {
            let mut targets = Vec::with_capacity(frames.len());
            for (m, f) in messages.iter().zip(&frames) {
                targets.push(self.target(&link, &m.queue, f, m.eta_ms).await?);
            }
            let ch = link.conn.create_channel().await.map_err(|e| cfg.err(e))?;
            let run = async {
                ch.tx_select().await?;
                for (f, (exchange, rk)) in frames.iter().zip(&targets) {
                    ch.basic_publish(
                        exchange.as_str().into(),
                        rk.as_str().into(),
                        BasicPublishOptions::default(),
                        &f.body,
                        f.properties.clone(),
                    )
                    .await?;
                }
                ch.tx_commit().await
            };
            let out = tokio::time::timeout(cfg.confirm_timeout, run).await;
            let _ = ch.close(200, "done".into()).await;
            match out {
                Ok(r) => {
                    r.map_err(|e| cfg.err(format!("transaction failed, nothing published: {e}")))
                }
                Err(_) => Err(cfg.no_reply("commit")),
            }
        })
    }

    /// Waiting messages of `queue` (0 when it does not exist).
    pub fn queue_length(&self, queue: &str) -> Result<usize> {
        let cfg = &self.cfg;
        self.on_channel(|ch| async move {
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            match ch
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await
            {
                Ok(q) => Ok(q.message_count() as usize),
                Err(e) if not_found(&e) => Ok(0),
                Err(e) => Err(cfg.err(e)),
            }
        })
    }

    /// Deletes waiting messages of `queues`; returns how many.
    pub fn purge(&self, queues: &[String]) -> Result<usize> {
        queues.iter().try_fold(0, |n, q| Ok(n + self.purge_one(q)?))
    }

    fn purge_one(&self, queue: &str) -> Result<usize> {
        let cfg = &self.cfg;
        self.on_channel(|ch| async move {
            match ch
                .queue_purge(queue.into(), QueuePurgeOptions::default())
                .await
            {
                Ok(n) => Ok(n as usize),
                Err(e) if not_found(&e) => Ok(0),
                Err(e) => Err(cfg.err(e)),
            }
        })
    }

    /// Deletes queues and their dead-letter queues, with their messages; returns how many
    /// messages went with them.
    pub fn delete_queues(&self, queues: &[String]) -> Result<usize> {
        let cfg = &self.cfg;
        let all = queues
            .iter()
            .flat_map(|q| [q.clone(), dead_letter_queue(q)]);
        all.into_iter().try_fold(0, |n, q| {
            let name = q.as_str();
            let gone = self.on_channel(|ch| async move {
                let options = lapin::options::QueueDeleteOptions::default();
                match ch.queue_delete(name.into(), options).await {
                    Ok(count) => Ok(count as usize),
                    Err(e) if not_found(&e) => Ok(0),
                    Err(e) => Err(cfg.err(e)),
                }
            })?;
            lock(&self.link)
                .as_ref()
                .map(|l| lock(&l.declared).remove(&q));
            Ok(n + gone)
        })
    }

    /// Dead letters of `queue`, oldest first: read and left in place (the channel closes
    /// without acking, so RabbitMQ puts them back in order).
    pub fn dead_letters(&self, queue: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let queue = named_queue(queue, "listing dead letters")?;
        let dlq = dead_letter_queue(queue);
        let cfg = &self.cfg;
        self.on_channel(|ch| async move {
            declare_dead_letter_queue(&ch, &dlq)
                .await
                .map_err(|e| cfg.err(e))?;
            let mut out = Vec::new();
            while out.len() < limit {
                let got = ch
                    .basic_get(dlq.as_str().into(), BasicGetOptions::default())
                    .await
                    .map_err(|e| cfg.err(e))?;
                let Some(m) = got else { break };
                out.push(dead_letter_of(queue, &m.delivery));
            }
            Ok(out)
        })
    }

    /// Puts dead letters of `queue` named by `ids` back in it with a fresh delivery count.
    pub fn requeue_dead(&self, queue: &str, ids: &[String]) -> Result<usize> {
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let dlq = dead_letter_queue(queue);
        let spec = self.cfg.topology.queue(queue);
        let cfg = &self.cfg;
        self.on_channel(|ch| async move {
            declare_dead_letter_queue(&ch, &dlq)
                .await
                .map_err(|e| cfg.err(e))?;
            declare_queue(&ch, &spec).await.map_err(|e| cfg.err(e))?;
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| cfg.err(e))?;
            let mut moved = 0;
            while moved < wanted.len() {
                let got = ch
                    .basic_get(dlq.as_str().into(), BasicGetOptions::default())
                    .await
                    .map_err(|e| cfg.err(e))?;
                let Some(m) = got else { break };
                let d = &m.delivery;
                let id =
                    text_header(d.properties.headers().as_ref(), H_DEAD_ID).unwrap_or_default();
                if !wanted.contains(id.as_str()) {
                    continue; // left unacked: back in place when the channel closes
                }
                let frame = Frame {
                    exchange: String::new(),
                    routing_key: String::new(),
                    properties: without_rqueue_headers(&d.properties),
                    body: d.data.clone(),
                };
                confirmed(
                    &ch,
                    &spec.exchange,
                    &spec.routing_key,
                    &frame,
                    Some(cfg.confirm_timeout),
                )
                .await?
                .map_err(|why| cfg.err(why))?;
                d.acker
                    .ack(lapin::options::BasicAckOptions::default())
                    .await
                    .map_err(|e| cfg.err(e))?;
                moved += 1;
            }
            Ok(moved)
        })
    }

    /// Deletes the dead letters of `queue`.
    pub fn purge_dead(&self, queue: Option<&str>) -> Result<usize> {
        let queue = named_queue(queue, "purging dead letters")?;
        self.purge_one(&dead_letter_queue(queue))
    }
}

/// Remote control (kombu's pidbox): transient queues and JSON messages outside the task path.
impl AmqpBroker {
    /// Declares an exchange (durable when `exchange_durable`: it must match the other
    /// declarers' flags, e.g. Celery's durable `celeryev`), and (unless `queue` is empty) a queue
    /// bound to it, exclusive to this connection, that goes with it (or `expires_ms` after its
    /// last consumer left) and drops messages older than `ttl_ms`.
    #[allow(clippy::too_many_arguments)]
    pub fn declare_transient(
        &self,
        exchange: &str,
        exchange_type: &str,
        exchange_durable: bool,
        queue: &str,
        routing_key: &str,
        ttl_ms: i64,
        expires_ms: i64,
    ) -> Result<()> {
        let kind = exchange_kind(exchange_type)?;
        let exchange_options = ExchangeDeclareOptions {
            durable: exchange_durable,
            ..ExchangeDeclareOptions::default()
        };
        let cfg = &self.cfg;
        self.on_channel(|ch| async move {
            let mut args = FieldTable::default();
            args.insert("x-message-ttl".into(), int_value(ttl_ms));
            args.insert("x-expires".into(), int_value(expires_ms));
            // Exclusive to this connection: RabbitMQ 4 deprecates transient queues that are not.
            let queue_options = QueueDeclareOptions {
                auto_delete: true,
                exclusive: true,
                ..QueueDeclareOptions::default()
            };
            let run = async {
                ch.exchange_declare(
                    exchange.into(),
                    kind,
                    exchange_options,
                    FieldTable::default(),
                )
                .await?;
                if queue.is_empty() {
                    return Ok(());
                }
                ch.queue_declare(queue.into(), queue_options, args).await?;
                ch.queue_bind(
                    queue.into(),
                    exchange.into(),
                    routing_key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
            };
            run.await.map_err(|e| cfg.err(e))
        })
    }

    /// Publishes a transient JSON message (kombu's pidbox messages); nobody bound is no error.
    pub fn publish_transient(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers_json: &str,
    ) -> Result<()> {
        let headers: serde_json::Map<String, Value> = serde_json::from_str(headers_json)
            .map_err(|e| Error::Config(format!("headers must be a JSON object: {e}")))?;
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(1)
            .with_priority(0)
            .with_headers(amqp_frame::table_from_json(&headers));
        self.publish_unmandatory(exchange, routing_key, body, properties)
    }

    /// Publishes on the confirm channel, without `mandatory` (a message nobody is bound to take
    /// is no error here: a client or listener that went away), and waits for the confirm.
    fn publish_unmandatory(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<()> {
        let cfg = &self.cfg;
        self.on_link(|link| async move {
            let confirm = link
                .confirm
                .basic_publish(
                    short(exchange.to_string())?,
                    short(routing_key.to_string())?,
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await
                .map_err(|e| cfg.err(e))?;
            match tokio::time::timeout(cfg.confirm_timeout, confirm).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(cfg.err(e)),
                Err(_) => Err(cfg.err(format!(
                    "no publisher confirm within {:?}",
                    cfg.confirm_timeout
                ))),
            }
        })
    }

    /// Declares an `rpc://` client's reply queue as Celery does: durable, deleted with its last
    /// consumer, and after `expires_ms` unused; reached through the default exchange by name.
    pub fn declare_reply_queue(&self, queue: &str, expires_ms: Option<i64>) -> Result<()> {
        let cfg = &self.cfg;
        self.on_channel(|ch| async move {
            let mut args = FieldTable::default();
            if let Some(ms) = expires_ms {
                args.insert("x-expires".into(), int_value(ms));
            }
            let options = QueueDeclareOptions {
                durable: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            };
            ch.queue_declare(queue.into(), options, args)
                .await
                .map(drop)
                .map_err(|e| cfg.err(e))
        })
    }

    /// Sends one `rpc://` state message to a client's reply queue (through the default
    /// exchange), with the task id as `correlation_id`; a client gone meanwhile is no error.
    pub fn publish_reply(
        &self,
        reply_to: &str,
        correlation_id: &str,
        content_type: &str,
        body: &[u8],
        persistent: bool,
    ) -> Result<()> {
        let properties = BasicProperties::default()
            .with_content_type(short(content_type.to_string())?)
            .with_content_encoding("utf-8".into())
            .with_correlation_id(short(correlation_id.to_string())?)
            .with_delivery_mode(if persistent { 2 } else { 1 })
            .with_priority(0);
        self.publish_unmandatory("", reply_to, body, properties)
    }

    /// Starts taking the messages of `queue` (auto-acked: control messages are not tasks).
    pub fn listen(&self, queue: &str) -> Result<()> {
        let cfg = &self.cfg;
        let (tx, rx) = std::sync::mpsc::channel();
        let bell: Arc<Mutex<Option<Bell>>> = Arc::new(Mutex::new(None));
        let ringing = Arc::clone(&bell);
        let channel = self.on_link(|link| async move {
            let ch = link.conn.create_channel().await.map_err(|e| cfg.err(e))?;
            let options = lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..lapin::options::BasicConsumeOptions::default()
            };
            let mut consumer = ch
                .basic_consume(queue.into(), "".into(), options, FieldTable::default())
                .await
                .map_err(|e| cfg.err(e))?;
            self.rt.spawn(async move {
                use futures_lite::StreamExt;
                while let Some(item) = consumer.next().await {
                    let msg = item.map(|d| {
                        let p = &d.properties;
                        let h = p.headers().as_ref().map(amqp_frame::table_to_json);
                        Pushed {
                            headers: Value::Object(h.unwrap_or_default()).to_string(),
                            correlation_id: p.correlation_id().as_ref().map(|s| s.to_string()),
                            content_type: p.content_type().as_ref().map(|s| s.to_string()),
                            body: d.data,
                        }
                    });
                    let failed = msg.is_err();
                    if tx.send(msg.map_err(|e| e.to_string())).is_err() {
                        break;
                    }
                    Bell::ring(&ringing);
                    if failed {
                        break;
                    }
                }
            });
            Ok(ch)
        })?;
        let listener = Arc::new(Listener {
            channel,
            rx: Mutex::new(rx),
            bell,
        });
        lock(&self.listeners).insert(queue.to_string(), listener);
        Ok(())
    }

    /// Announces each message reaching listened `queue` with a one-byte UDP datagram to
    /// 127.0.0.1:`port` (see `Bell`); `None` stops announcing.
    pub fn ring_on_push(&self, queue: &str, port: Option<u16>) -> Result<()> {
        let listener = self.listener(queue)?;
        let bell = match port {
            None => None,
            Some(port) => {
                let socket = std::net::UdpSocket::bind(("127.0.0.1", 0))
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .map_err(|e| self.cfg.err(format!("a bell for {queue:?}: {e}")))?;
                let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                Some(Bell { socket, to })
            }
        };
        *lock(&listener.bell) = bell;
        Ok(())
    }

    fn listener(&self, queue: &str) -> Result<Arc<Listener>> {
        lock(&self.listeners)
            .get(queue)
            .cloned()
            .ok_or_else(|| Error::Config(format!("queue {queue:?} is not listened to")))
    }

    /// Messages of a listened queue: waits up to `timeout` for the first, then takes what
    /// has arrived, at most `limit`. A zero `timeout` never waits, not even for another
    /// thread's `receive` of the same queue (it then takes nothing).
    pub fn receive(&self, queue: &str, timeout: Duration, limit: usize) -> Result<Vec<Pushed>> {
        let listener = self.listener(queue)?;
        let rx = if timeout.is_zero() {
            match listener.rx.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(Vec::new()),
            }
        } else {
            lock(&listener.rx)
        };
        let mut out = Vec::new();
        let mut wait = timeout;
        while out.len() < limit {
            match rx.recv_timeout(wait) {
                Ok(Ok(m)) => out.push(m),
                Ok(Err(e)) => {
                    return Err(self.cfg.err(format!("listening to {queue:?} failed: {e}")))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(self.cfg.err(format!("listening to {queue:?} ended")))
                }
            }
            wait = Duration::ZERO;
        }
        if out.is_empty() && !listener.channel.status().connected() {
            return Err(self
                .cfg
                .err(format!("the channel listening to {queue:?} closed")));
        }
        Ok(out)
    }

    /// Stops listening to `queue` (its messages stay for the queue's TTL).
    pub fn unlisten(&self, queue: &str) -> Result<()> {
        let Some(listener) = lock(&self.listeners).remove(queue) else {
            return Ok(());
        };
        if listener.channel.status().connected() {
            let _ = self.rt.block_on(listener.channel.close(200, "done".into()));
        }
        Ok(())
    }
}

fn int_value(v: i64) -> AMQPValue {
    match i32::try_from(v) {
        Ok(small) => AMQPValue::LongInt(small),
        Err(_) => AMQPValue::LongLongInt(v),
    }
}

/// Declares `queue.rqueue.dead`: durable, reached through the default exchange by its name.
pub(crate) async fn declare_dead_letter_queue(ch: &Channel, dlq: &str) -> lapin::Result<()> {
    ch.queue_declare(dlq.into(), durable_queue(), FieldTable::default())
        .await
        .map(drop)
}

/// The properties of a message with rqueue's own headers removed (a requeued dead letter
/// starts counting afresh).
pub(crate) fn without_rqueue_headers(p: &BasicProperties) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(h) = p.headers() {
        for (k, v) in h.inner() {
            if !k.as_str().starts_with("x-rqueue-") {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    p.clone().with_headers(headers)
}

/// The properties of a message with `extra` headers set.
pub(crate) fn with_headers(p: &BasicProperties, extra: Vec<(&str, AMQPValue)>) -> BasicProperties {
    let mut headers = p.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        headers.insert(k.into(), v);
    }
    p.clone().with_headers(headers)
}

fn dead_letter_of(queue: &str, d: &lapin::message::Delivery) -> DeadLetter {
    let h = d.properties.headers().as_ref();
    let id = text_header(h, H_DEAD_ID).unwrap_or_default();
    DeadLetter {
        queue: queue.to_string(),
        reason: text_header(h, H_DEAD_REASON).unwrap_or_default(),
        error: text_header(h, H_DEAD_ERROR),
        deliveries: int_header(h, H_DEAD_DELIVERIES)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        dead_at_ms: int_header(h, H_DEAD_AT).unwrap_or(0),
        payload: amqp_frame::to_envelope(
            "",
            queue,
            false,
            &without_rqueue_headers(&d.properties),
            &d.data,
            &id,
        ),
        id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bell_rings_the_port_once_per_push_and_silent_when_unset() {
        let listener = std::net::UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let bell: Mutex<Option<Bell>> = Mutex::new(None);
        Bell::ring(&bell); // nobody asked: nothing sent, nothing fails
        let socket = std::net::UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        socket.set_nonblocking(true).unwrap();
        let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        *lock(&bell) = Some(Bell { socket, to });
        Bell::ring(&bell);
        Bell::ring(&bell);
        let mut buf = [0u8; 8];
        for _ in 0..2 {
            let (n, _) = listener.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[1]);
        }
        listener.set_nonblocking(true).unwrap();
        assert!(listener.recv_from(&mut buf).is_err()); // exactly one datagram per ring
    }

    #[test]
    fn test_delayed_routing_key_matches_kombu() {
        // kombu: '.'.join(f'{5:028b}') + '.celery'
        let rk = delayed_routing_key(5, "celery");
        assert_eq!(rk, format!("{}1.0.1.celery", "0.".repeat(25)));
        // An earlier prefix is replaced, not stacked.
        assert_eq!(
            delayed_routing_key(5, &delayed_routing_key(9, "celery")),
            rk
        );
        assert!(delayed_routing_key(MAX_DELAY_S + 10, "q").starts_with(&"1.".repeat(28)));
    }

    #[test]
    fn test_delay_seconds_rounds_up_and_skips_due_messages() {
        assert_eq!(delay_seconds(None, 1000), None);
        assert_eq!(delay_seconds(Some(1000), 1000), None);
        assert_eq!(delay_seconds(Some(1001), 1000), Some(1));
        assert_eq!(delay_seconds(Some(3500), 1000), Some(3));
    }

    #[test]
    fn test_topology_defaults_and_declared_queues() {
        let t = Topology::from_json(
            r#"{"queues": [{"name": "feed", "exchange": "feeds", "exchange_type": "topic",
                "routing_key": "feed.#", "arguments": {"x-max-priority": 10}}],
                "default_arguments": {"x-queue-type": "quorum"}}"#,
        )
        .unwrap();
        let feed = t.queue("feed");
        assert_eq!(
            (feed.exchange.as_str(), feed.routing_key.as_str()),
            ("feeds", "feed.#")
        );
        assert_eq!(
            feed.arguments.inner().get("x-max-priority"),
            Some(&AMQPValue::LongInt(10))
        );
        let other = t.queue("celery");
        assert_eq!(
            (other.exchange.as_str(), other.exchange_type.as_str()),
            ("celery", "direct")
        );
        assert!(other.arguments.contains_key("x-queue-type"));
        assert_eq!(t.delayed_queue_type, "quorum");
        for bad in [
            r#"{"queues": [{"exchange": "x"}]}"#,
            r#"{"queues": [{"name": "q", "exchange_type": "weird"}]}"#,
            r#"{"delayed_queue_type": "stream"}"#,
            "nope",
        ] {
            assert!(
                matches!(Topology::from_json(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn test_masked_url_hides_the_password() {
        let cfg = AmqpConfig {
            host: "h".into(),
            port: 5672,
            username: "u".into(),
            password: "canary-secret".into(),
            vhost: "/".into(),
            tls: false,
            ca_pem: None,
            heartbeat_s: 60,
            connect_timeout: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(1),
            topology: Topology::default(),
        };
        assert_eq!(cfg.masked_url(), "amqp://u:**@h:5672/%2F");
        assert!(!cfg.err("x").to_string().contains("canary"));
    }
}
