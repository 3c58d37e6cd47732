//! The raw-client baseline of `benches/bench_rabbitmq.py`: how fast RabbitMQ itself hands out
//! task messages to a consumer that does nothing per message.
//!
//! Publishes N Celery no-op frames (the same bytes rqueue sends: `encode_task_message` mapped to
//! AMQP) with confirms, then drains them with one consumer of prefetch `PREFETCH` that acks with
//! `multiple` every `ACK_EVERY` messages. Timed from the first delivery to the N-th. Prints one
//! JSON line. Run: `cargo run --release --example amqp_raw_drain -- URL N`.

use std::time::Instant;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use rqueue_core::protocol::{encode_task_message, TaskMessageSpec};
use rqueue_core::transport::amqp_frame::from_envelope;

const QUEUE: &str = "raw-baseline";
/// Unacked messages the broker may push ahead (far above any worker's prefetch).
const PREFETCH: u16 = 1000;
/// Messages per `multiple` ack.
const ACK_EVERY: u64 = 100;
/// Publishes in flight before waiting for their confirms.
const CONFIRM_WINDOW: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: amqp_raw_drain URL N")?;
    let n: u64 = args.next().ok_or("usage: amqp_raw_drain URL N")?.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        ch.queue_declare(QUEUE.into(), durable, FieldTable::default())
            .await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let frame = from_envelope(&encode_task_message(&TaskMessageSpec::new(
            "bench.noop",
            "00000000-0000-0000-0000-000000000000",
            QUEUE,
        ))?)?;
        let published = Instant::now();
        let mut pending = Vec::with_capacity(CONFIRM_WINDOW);
        for _ in 0..n {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    &frame.body,
                    frame.properties.clone(),
                )
                .await?;
            pending.push(confirm);
            if pending.len() == CONFIRM_WINDOW {
                for c in pending.drain(..) {
                    c.await?;
                }
            }
        }
        for c in pending.drain(..) {
            c.await?;
        }
        let publish_s = published.elapsed().as_secs_f64();

        let consumer_ch = conn.create_channel().await?;
        consumer_ch
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let mut consumer = consumer_ch
            .basic_consume(
                QUEUE.into(),
                "raw".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut got = 0u64;
        let mut first: Option<Instant> = None;
        while let Some(delivery) = consumer.next().await {
            let d = delivery?;
            first.get_or_insert_with(Instant::now);
            got += 1;
            if got % ACK_EVERY == 0 || got == n {
                consumer_ch
                    .basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                    .await?;
            }
            if got == n {
                break;
            }
        }
        let drain_s = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
        ch.queue_delete(QUEUE.into(), QueueDeleteOptions::default())
            .await?;
        println!(
            "{{\"tasks\": {n}, \"publish_s\": {publish_s:.6}, \"drain_s\": {drain_s:.6}, \"tasks_s\": {:.1}}}",
            n as f64 / drain_s.max(1e-9)
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
