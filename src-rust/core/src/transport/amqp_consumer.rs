//! The consumer of the RabbitMQ transport: a thread that takes pushed deliveries into a
//! [`PrefetchBuffer`], and the settling (ack, requeue, dead letter) of what it delivered.
//!
//! AMQP pushes, so this is not the polling loop of [`consumer`](super::consumer): the broker
//! sends up to `basic.qos` = the buffer's capacity unacked messages per queue, and the thread
//! re-wraps each as kombu's envelope. An ack is only valid on the channel that delivered the
//! message, so tags are `<generation>.<delivery tag>`: after a reconnect the broker redelivers
//! what the lost channel held, and acks of the old generation are dropped, never sent on the
//! new channel. Acks of a batch go out as one `multiple` ack up to the highest tag below which
//! nothing delivered is still unsettled.
//!
//! The broker only flags a redelivery, and redelivers a dead worker's innocent prefetched
//! messages with the one that killed it; so deliveries are counted by the worker node that saw
//! the death (its supervisor knows what was running): `recount` republishes that message with
//! the number of its deliveries that died running (`x-rqueue-delivered`) and acks the original.
//! Past `max_deliveries` a message goes to its dead-letter queue (`worker_lost`). Requeued
//! unstarted messages are republished with their count unchanged, so giving them back is not a
//! delivery. The thread never takes the GIL and never starts on its own: call `start` after any
//! fork.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};

use crate::error::{Error, Result};
use crate::prefetch::{Delivery, PrefetchBuffer};
use crate::transport::amqp::{
    confirmed, connect, dead_letter_queue, declare_dead_letter_queue, declare_queue, runtime,
    with_headers, AmqpConfig, H_DEAD_AT, H_DEAD_DELIVERIES, H_DEAD_ERROR, H_DEAD_ID, H_DEAD_QUEUE,
    H_DEAD_REASON, H_DELIVERED,
};
use crate::transport::amqp_frame::{int_header, to_envelope, Frame};
use crate::transport::{now_ms, REASON_WORKER_LOST};

const ERROR_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest uninterrupted wait, so `stop()` and queue changes are seen promptly.
const TICK: Duration = Duration::from_millis(20);
/// How long a stopping consumer waits for deliveries already on their way.
const DRAIN: Duration = Duration::from_millis(100);

/// Settings of an [`AmqpConsumer`].
#[derive(Debug, Clone)]
pub struct AmqpConsumerConfig {
    pub amqp: AmqpConfig,
    pub queues: Vec<String>,
    /// Names the connection and the consumer tags.
    pub owner: String,
    pub max_deliveries: u32,
}

/// One pushed message, from a queue's forwarding task to the consumer thread.
enum Incoming {
    Message(String, Box<AmqpDelivery>),
    Failed(String),
}

/// A delivered message not yet settled: what is needed to republish it.
#[derive(Clone)]
struct Held {
    queue: String,
    properties: BasicProperties,
    body: Vec<u8>,
    deliveries: u32,
}

/// Which deliveries of a channel are unsettled, and how far every tag has been received.
#[derive(Default)]
struct Ledger {
    held: BTreeMap<u64, Held>,
    /// Every tag up to here has reached the thread (tags of a channel are 1, 2, 3 ...).
    watermark: u64,
    /// Tags received above `watermark + 1` (several queues' deliveries may arrive out of order).
    early: BTreeSet<u64>,
}

impl Ledger {
    fn received(&mut self, tag: u64) {
        self.early.insert(tag);
        while self.early.remove(&(self.watermark + 1)) {
            self.watermark += 1;
        }
    }

    /// Takes `tags` out of the ledger; returns `(multiple-ack up to, how many it covers, single
    /// acks)`. A tag is covered by the multiple ack when every tag below it was received and is
    /// settled; tags not held (settled before, or never delivered here) are left out.
    fn settle(&mut self, tags: &[u64]) -> (Option<u64>, usize, Vec<u64>) {
        let mut mine: Vec<u64> = tags
            .iter()
            .copied()
            .filter(|t| self.held.remove(t).is_some())
            .collect();
        mine.sort_unstable();
        let floor = self
            .held
            .keys()
            .next()
            .copied()
            .unwrap_or(u64::MAX)
            .min(self.watermark + 1);
        let split = mine.partition_point(|t| *t < floor);
        let upto = split.checked_sub(1).map(|i| mine[i]);
        let singles = mine.split_off(split);
        (upto, split, singles)
    }
}

/// One connection of the consumer: the consuming channel, a confirm channel for republishing,
/// and the ledger of what the consuming channel delivered.
struct Session {
    generation: u64,
    conn: Connection,
    channel: Channel,
    publish: Channel,
    ledger: Mutex<Ledger>,
}

impl Session {
    /// Takes `tags` out of the ledger and queues their acks; returns how many were held.
    ///
    /// The ack frames are queued for lapin's I/O thread under the ledger's lock, so they leave
    /// in the order the ledger settled them (a `multiple` ack never overtakes a single ack below
    /// it, which would ack an unknown tag and close the channel). The caller does not wait for
    /// the write: a failed ack means the channel is gone, and the broker redelivers what it held.
    fn settle(&self, tags: &[u64]) -> usize {
        let mut ledger = lock(&self.ledger);
        let (upto, covered, singles) = ledger.settle(tags);
        let writes = upto.map(|t| (t, true)).into_iter();
        for (tag, multiple) in writes.chain(singles.iter().map(|t| (*t, false))) {
            let mut write = Box::pin(self.channel.basic_ack(tag, BasicAckOptions { multiple }));
            // One poll queues the frame; the write's completion is not awaited.
            let _ = futures_lite::future::block_on(futures_lite::future::poll_once(&mut write));
        }
        covered + singles.len()
    }

    /// A copy of a held delivery (it stays held, so no `multiple` ack covers it meanwhile).
    fn held(&self, tag: u64) -> Option<Held> {
        lock(&self.ledger).held.get(&tag).cloned()
    }
}

struct Shared {
    stop: AtomicBool,
    queues: Mutex<Vec<String>>,
    queues_changed: AtomicBool,
    last_error: Mutex<Option<String>>,
    session: Mutex<Option<Arc<Session>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A consuming thread bound to one buffer, and the settling of its deliveries.
pub struct AmqpConsumer {
    cfg: AmqpConsumerConfig,
    buffer: Arc<PrefetchBuffer>,
    shared: Arc<Shared>,
    rt: Mutex<Option<Arc<tokio::runtime::Runtime>>>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AmqpConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AmqpConsumer({}, {:?})",
            self.cfg.amqp.masked_url(),
            self.cfg.queues
        )
    }
}

impl AmqpConsumer {
    pub fn new(cfg: AmqpConsumerConfig, buffer: Arc<PrefetchBuffer>) -> Result<Self> {
        if cfg.owner.is_empty() {
            return Err(Error::Config("consumer owner id must not be empty".into()));
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            queues: Mutex::new(cfg.queues.clone()),
            queues_changed: AtomicBool::new(false),
            last_error: Mutex::new(None),
            session: Mutex::new(None),
        });
        Ok(AmqpConsumer {
            cfg,
            buffer,
            shared,
            rt: Mutex::new(None),
            handle: Mutex::new(None),
        })
    }

    /// The runtime of this process, made on first use (after any fork).
    fn rt(&self) -> Result<Arc<tokio::runtime::Runtime>> {
        let mut slot = lock(&self.rt);
        if let Some(rt) = slot.as_ref() {
            return Ok(Arc::clone(rt));
        }
        let rt = Arc::new(runtime(&self.cfg.amqp)?);
        *slot = Some(Arc::clone(&rt));
        Ok(rt)
    }

    /// Starts the thread; a second call while running does nothing.
    pub fn start(&self) -> Result<()> {
        let mut handle = lock(&self.handle);
        if handle.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        self.shared.stop.store(false, Ordering::SeqCst);
        let worker = Worker {
            cfg: self.cfg.clone(),
            buffer: Arc::clone(&self.buffer),
            shared: Arc::clone(&self.shared),
            rt: self.rt()?,
        };
        let h = std::thread::Builder::new()
            .name(format!("rqueue-amqp-{}", self.cfg.owner))
            .spawn(move || worker.run())
            .map_err(|e| Error::Broker(format!("cannot start the AMQP consumer thread: {e}")))?;
        *handle = Some(h);
        Ok(())
    }

    /// Stops consuming, joins the thread, closes the buffer and returns the deliveries never
    /// taken. They are still unacked on the open channel: the caller returns them with `requeue`.
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

    /// Replaces the queues consumed from (consumers are cancelled and added on the open channel).
    pub fn set_queues(&self, queues: Vec<String>) {
        *lock(&self.shared.queues) = queues;
        self.shared.queues_changed.store(true, Ordering::SeqCst);
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    /// The open session and this consumer's tags of it (`<generation>.<delivery tag>`); tags of
    /// an older generation are dropped: their channel is gone and the broker redelivers them.
    fn current(&self, tags: &[String]) -> Option<(Arc<Session>, Vec<u64>)> {
        let s = lock(&self.shared.session).clone()?;
        let mine = tags
            .iter()
            .filter_map(|t| {
                let (g, d) = t.split_once('.')?;
                (g.parse::<u64>().ok()? == s.generation).then(|| d.parse::<u64>().ok())?
            })
            .collect();
        Some((s, mine))
    }

    /// Acknowledges finished deliveries on their channel; returns how many were in flight. The
    /// acks are queued (in order) for the channel's ack task: this never waits for I/O.
    pub fn ack(&self, tags: &[String]) -> Result<usize> {
        Ok(self.current(tags).map_or(0, |(s, mine)| s.settle(&mine)))
    }

    /// Returns unstarted deliveries to their queue, uncounted (republished with their count,
    /// then acked); returns how many.
    pub fn requeue(&self, tags: &[String]) -> Result<usize> {
        let Some((s, mine)) = self.current(tags) else {
            return Ok(0);
        };
        let rt = self.rt()?;
        let mut n = 0;
        for tag in mine {
            let Some(held) = s.held(tag) else {
                continue;
            };
            let earlier = held.deliveries.saturating_sub(1);
            rt.block_on(republish(&self.cfg.amqp, &s, &held, earlier))?;
            n += s.settle(&[tag]);
        }
        Ok(n)
    }

    /// Puts a delivery back in its queue recording that `died_running` of its deliveries died
    /// with their worker (republished, then acked); false when this consumer does not hold it.
    pub fn recount(&self, tag: &str, died_running: u32) -> Result<bool> {
        let Some((s, mine)) = self.current(&[tag.to_string()]) else {
            return Ok(false);
        };
        let Some((t, held)) = mine.first().and_then(|t| Some((*t, s.held(*t)?))) else {
            return Ok(false);
        };
        self.rt()?
            .block_on(republish(&self.cfg.amqp, &s, &held, died_running))?;
        Ok(s.settle(&[t]) == 1)
    }

    /// Moves a delivery to its queue's dead-letter queue with a reason; false when this
    /// consumer does not hold it (any more).
    pub fn dead_letter(&self, tag: &str, reason: &str, error: Option<&str>) -> Result<bool> {
        let Some((s, mine)) = self.current(&[tag.to_string()]) else {
            return Ok(false);
        };
        let Some((t, held)) = mine.first().and_then(|t| Some((*t, s.held(*t)?))) else {
            return Ok(false);
        };
        self.rt()?
            .block_on(bury(&self.cfg.amqp, &s, &held, reason, error))?;
        Ok(s.settle(&[t]) == 1)
    }
}

impl AmqpConsumer {
    /// Closes the connection after the acks queued on it were written (the close frame follows
    /// them), waiting up to [`CLOSE_TIMEOUT`]; unsettled messages go back to their queues. Call it
    /// after the last settle: a process that exits without it may lose its last acks, and the
    /// broker then delivers finished tasks again.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = lock(&self.handle).take() {
            let _ = h.join();
        }
        let session = lock(&self.shared.session).take();
        if let (Some(s), Some(rt)) = (session, lock(&self.rt).as_ref()) {
            let _ = rt.block_on(async {
                tokio::time::timeout(CLOSE_TIMEOUT, s.conn.close(200, "consumer closed".into()))
                    .await
            });
        }
    }
}

/// How long closing waits for the broker to confirm (the queued acks are written before).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        self.close();
        if let Some(rt) = lock(&self.rt)
            .take()
            .and_then(|rt| Arc::try_unwrap(rt).ok())
        {
            rt.shutdown_background();
        }
    }
}

/// Republishes a held message to its queue with `earlier` deliveries recorded. The caller then
/// settles the original: the copy is confirmed before the original goes, so nothing is lost.
async fn republish(cfg: &AmqpConfig, s: &Session, held: &Held, earlier: u32) -> Result<()> {
    let frame = Frame {
        exchange: String::new(),
        routing_key: String::new(),
        properties: with_headers(
            &held.properties,
            vec![(
                H_DELIVERED,
                AMQPValue::LongInt(i32::try_from(earlier).unwrap_or(i32::MAX)),
            )],
        ),
        body: held.body.clone(),
    };
    confirmed(
        &s.publish,
        "",
        &held.queue,
        &frame,
        Some(cfg.confirm_timeout),
    )
    .await?
    .map_err(|why| cfg.err(why))
}

/// Copies a held message to the dead-letter queue of its queue with why; the caller then
/// settles the original.
async fn bury(
    cfg: &AmqpConfig,
    s: &Session,
    held: &Held,
    reason: &str,
    error: Option<&str>,
) -> Result<()> {
    let dlq = dead_letter_queue(&held.queue);
    let mut extra = vec![
        (
            H_DEAD_ID,
            AMQPValue::LongString(LongString::from(uuid::Uuid::new_v4().to_string())),
        ),
        (
            H_DEAD_QUEUE,
            AMQPValue::LongString(held.queue.as_str().into()),
        ),
        (H_DEAD_REASON, AMQPValue::LongString(reason.into())),
        (H_DEAD_AT, AMQPValue::LongLongInt(now_ms())),
        (
            H_DEAD_DELIVERIES,
            AMQPValue::LongInt(i32::try_from(held.deliveries).unwrap_or(i32::MAX)),
        ),
    ];
    if let Some(e) = error {
        extra.push((H_DEAD_ERROR, AMQPValue::LongString(e.into())));
    }
    let frame = Frame {
        exchange: String::new(),
        routing_key: String::new(),
        properties: with_headers(&held.properties, extra),
        body: held.body.clone(),
    };
    declare_dead_letter_queue(&s.publish, &dlq)
        .await
        .map_err(|e| cfg.err(e))?;
    confirmed(&s.publish, "", &dlq, &frame, Some(cfg.confirm_timeout))
        .await?
        .map_err(|why| cfg.err(why))
}

struct Worker {
    cfg: AmqpConsumerConfig,
    buffer: Arc<PrefetchBuffer>,
    shared: Arc<Shared>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl Worker {
    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    fn nap(&self, d: Duration) {
        let end = std::time::Instant::now() + d;
        while !self.stopping() {
            let now = std::time::Instant::now();
            if now >= end {
                return;
            }
            std::thread::sleep((end - now).min(TICK));
        }
    }

    fn run(self) {
        let mut backoff = ERROR_BACKOFF_MIN;
        let mut generation = lock(&self.shared.session)
            .as_ref()
            .map_or(0, |s| s.generation);
        while !self.stopping() {
            generation += 1;
            let (tx, rx) = mpsc::channel();
            let opened = self.rt.block_on(self.open(generation));
            let (session, subscribed) = match opened {
                Ok(s) => s,
                Err(e) => {
                    self.failed(&e, &mut backoff);
                    continue;
                }
            };
            let mut subscribed = match self.rt.block_on(self.subscribe(&session, subscribed, &tx)) {
                Ok(s) => s,
                Err(e) => {
                    self.failed(&e, &mut backoff);
                    continue;
                }
            };
            backoff = ERROR_BACKOFF_MIN;
            *lock(&self.shared.session) = Some(Arc::clone(&session));
            match self.pump(&session, &rx, &tx, &mut subscribed) {
                Ok(()) => return, // stopped: the session stays open for the caller's requeue
                Err(e) => {
                    // The channel is gone: its unacked messages go back to their queues, and
                    // acks of its tags are dropped from now on.
                    lock(&self.shared.session).take();
                    self.failed(&e, &mut backoff);
                }
            }
        }
    }

    fn failed(&self, e: &Error, backoff: &mut Duration) {
        *lock(&self.shared.last_error) = Some(e.to_string());
        self.nap(*backoff);
        *backoff = (*backoff * 2).min(ERROR_BACKOFF_MAX);
    }

    /// Opens a connection with its channels and `basic.qos`.
    async fn open(&self, generation: u64) -> Result<(Arc<Session>, HashMap<String, ShortString>)> {
        let amqp = &self.cfg.amqp;
        let err = |e: lapin::Error| amqp.err(e);
        let conn = connect(amqp, &format!("rqueue-consumer {}", self.cfg.owner)).await?;
        let channel = conn.create_channel().await.map_err(err)?;
        let publish = conn.create_channel().await.map_err(err)?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(err)?;
        // Per consumer, never global: quorum queues refuse a global limit.
        let prefetch = u16::try_from(self.buffer.capacity()).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await
            .map_err(err)?;
        let session = Arc::new(Session {
            generation,
            conn,
            channel,
            publish,
            ledger: Mutex::new(Ledger::default()),
        });
        Ok((session, HashMap::new()))
    }

    /// Declares and consumes the wanted queues not consumed yet; cancels the others.
    async fn subscribe(
        &self,
        s: &Session,
        mut subscribed: HashMap<String, ShortString>,
        tx: &Sender<Incoming>,
    ) -> Result<HashMap<String, ShortString>> {
        let amqp = &self.cfg.amqp;
        let err = |e: lapin::Error| amqp.err(e);
        let wanted = lock(&self.shared.queues).clone();
        self.shared.queues_changed.store(false, Ordering::SeqCst);
        let gone: Vec<String> = subscribed
            .keys()
            .filter(|q| !wanted.contains(q))
            .cloned()
            .collect();
        for q in gone {
            if let Some(tag) = subscribed.remove(&q) {
                s.channel
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await
                    .map_err(err)?;
            }
        }
        for q in wanted {
            if subscribed.contains_key(&q) {
                continue;
            }
            declare_queue(&s.channel, &amqp.topology.queue(&q))
                .await
                .map_err(|e| amqp.err(format!("cannot declare queue {q:?}: {e}")))?;
            declare_dead_letter_queue(&s.channel, &dead_letter_queue(&q))
                .await
                .map_err(err)?;
            let tag = ShortString::from(format!("{}/{q}", self.cfg.owner));
            let mut consumer = s
                .channel
                .basic_consume(
                    q.as_str().into(),
                    tag.clone(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(err)?;
            let tx = tx.clone();
            let queue = q.clone();
            self.rt.spawn(async move {
                while let Some(item) = consumer.next().await {
                    let sent = match item {
                        Ok(d) => tx.send(Incoming::Message(queue.clone(), Box::new(d))),
                        Err(e) => {
                            let _ = tx.send(Incoming::Failed(e.to_string()));
                            break;
                        }
                    };
                    if sent.is_err() {
                        break;
                    }
                }
            });
            subscribed.insert(q, tag);
        }
        Ok(subscribed)
    }

    /// Moves deliveries into the buffer until stopped (Ok) or the connection fails (Err).
    fn pump(
        &self,
        s: &Arc<Session>,
        rx: &Receiver<Incoming>,
        tx: &Sender<Incoming>,
        subscribed: &mut HashMap<String, ShortString>,
    ) -> Result<()> {
        loop {
            if self.stopping() {
                return self.wind_down(s, rx, subscribed);
            }
            if self.shared.queues_changed.load(Ordering::SeqCst) {
                *subscribed =
                    self.rt
                        .block_on(self.subscribe(s, std::mem::take(subscribed), tx))?;
            }
            match rx.recv_timeout(TICK) {
                Ok(Incoming::Message(queue, d)) => self.admit(s, queue, *d)?,
                Ok(Incoming::Failed(why)) => return Err(self.cfg.amqp.err(why)),
                Err(RecvTimeoutError::Timeout) => {
                    if !s.channel.status().connected() {
                        return Err(self.cfg.amqp.err("the consuming channel closed"));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.cfg.amqp.err("the consumers ended"));
                }
            }
        }
    }

    /// Cancels the consumers and gives back what arrives meanwhile (uncounted).
    fn wind_down(
        &self,
        s: &Arc<Session>,
        rx: &Receiver<Incoming>,
        subscribed: &mut HashMap<String, ShortString>,
    ) -> Result<()> {
        let amqp = &self.cfg.amqp;
        let _ = self.rt.block_on(async {
            for (_, tag) in subscribed.drain() {
                s.channel
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await?;
            }
            Ok::<_, lapin::Error>(())
        });
        while let Ok(Incoming::Message(queue, d)) = rx.recv_timeout(DRAIN) {
            let tag = d.delivery_tag;
            let held = Held {
                queue,
                deliveries: deliveries_of(&d),
                properties: d.properties,
                body: d.data,
            };
            self.hold(s, tag, held.clone());
            self.rt
                .block_on(republish(amqp, s, &held, held.deliveries.saturating_sub(1)))?;
            s.settle(&[tag]);
        }
        Ok(())
    }

    /// Records a delivery in the ledger: received and held in one step, so no `multiple` ack
    /// can cover it before it is held.
    fn hold(&self, s: &Session, tag: u64, held: Held) {
        let mut ledger = lock(&s.ledger);
        ledger.received(tag);
        ledger.held.insert(tag, held);
    }

    /// Dead-letters a delivery counted past `max_deliveries` (a guard: the node that counted it
    /// dead-letters it first), or hands it to the buffer.
    fn admit(&self, s: &Arc<Session>, queue: String, d: AmqpDelivery) -> Result<()> {
        let tag = d.delivery_tag;
        let deliveries = deliveries_of(&d);
        if deliveries <= self.cfg.max_deliveries {
            let wire_tag = format!("{}.{tag}", s.generation);
            let delivery = Delivery {
                payload: to_envelope(
                    d.exchange.as_str(),
                    d.routing_key.as_str(),
                    d.redelivered,
                    &d.properties,
                    &d.data,
                    &wire_tag,
                ),
                tag: wire_tag,
                queue: queue.clone(),
                deliveries,
            };
            let held = Held {
                queue,
                properties: d.properties,
                body: d.data,
                deliveries,
            };
            self.hold(s, tag, held);
            return self.hand_over(s, tag, delivery);
        }
        let held = Held {
            queue,
            properties: d.properties,
            body: d.data,
            deliveries,
        };
        self.hold(s, tag, held.clone());
        let why = format!(
            "delivered {deliveries} times, each time its worker died running it \
             (broker_max_deliveries = {})",
            self.cfg.max_deliveries
        );
        self.rt.block_on(bury(
            &self.cfg.amqp,
            s,
            &held,
            REASON_WORKER_LOST,
            Some(&why),
        ))?;
        s.settle(&[tag]);
        Ok(())
    }

    /// Puts a delivery in the buffer, waiting for room (the broker may push a message just
    /// before the executor reports the previous one done); a closed buffer gives it back.
    fn hand_over(&self, s: &Arc<Session>, tag: u64, mut delivery: Delivery) -> Result<()> {
        loop {
            match self.buffer.put(delivery) {
                Ok(()) => return Ok(()),
                Err(back) => delivery = back,
            }
            if self.buffer.is_closed() || self.stopping() {
                let Some(held) = s.held(tag) else {
                    return Ok(());
                };
                let earlier = held.deliveries.saturating_sub(1);
                self.rt
                    .block_on(republish(&self.cfg.amqp, s, &held, earlier))?;
                s.settle(&[tag]);
                return Ok(());
            }
            self.buffer.wait_for_credit(TICK);
        }
    }
}

/// This delivery's number: the earlier deliveries that died running (as recorded when the
/// message was recounted), plus this one. Neither the redelivery flag nor a quorum queue's
/// `x-delivery-count` is used: both also count the innocent messages a dead worker had
/// prefetched.
fn deliveries_of(d: &AmqpDelivery) -> u32 {
    let recorded = int_header(d.properties.headers().as_ref(), H_DELIVERED).unwrap_or(0);
    u32::try_from(recorded.max(0) + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(received: &[u64], held: &[u64]) -> Ledger {
        let mut l = Ledger::default();
        for t in received {
            l.received(*t);
        }
        for t in held {
            l.held.insert(
                *t,
                Held {
                    queue: "q".into(),
                    properties: BasicProperties::default(),
                    body: Vec::new(),
                    deliveries: 1,
                },
            );
        }
        l
    }

    #[test]
    fn test_contiguous_settled_prefix_is_one_multiple_ack() {
        let mut l = ledger(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5]);
        assert_eq!(l.settle(&[3, 1, 2]), (Some(3), 3, vec![]));
        // 4 is still held: 5 goes alone.
        assert_eq!(l.settle(&[5]), (None, 0, vec![5]));
        assert_eq!(l.settle(&[4]), (Some(4), 1, vec![]));
        // Settled twice: nothing is sent again.
        assert_eq!(l.settle(&[4, 5]), (None, 0, vec![]));
    }

    #[test]
    fn test_an_unreceived_tag_blocks_the_multiple_ack() {
        // Tag 2 (another queue's) has not reached the thread yet: acking 3 with `multiple`
        // would ack it unseen.
        let mut l = ledger(&[1, 3], &[1, 3]);
        assert_eq!(l.watermark, 1);
        assert_eq!(l.settle(&[1, 3]), (Some(1), 1, vec![3]));
        l.received(2);
        assert_eq!(l.watermark, 3);
    }
}
