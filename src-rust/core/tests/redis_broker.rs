//! The Redis transport against a real `redis-server` started by each test on a free loopback
//! port (skipped, with a note, when redis-server is not on PATH).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::free_port;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rqueue_core::prefetch::{PrefetchBuffer, ADAPTIVE_WORK};
use rqueue_core::transport::redis::{RedisBroker, RedisConfig, INDEX_KEEPER, PICKLE_CONTENT_TYPE};
use rqueue_core::transport::redis_consumer::{RedisConsumer, RedisConsumerConfig};
use rqueue_core::transport::{NewMessage, ResultRow};
use rqueue_core::Error;
use serde_json::Value;

struct Server {
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start() -> Option<Server> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
        if !found {
            eprintln!("note: redis-server not on PATH; skipping");
            return None;
        }
        // Tests run in parallel, each given a free port by the kernel: two may be given the same
        // one, and the second server then exits. Such a server is started again on another port.
        for _ in 0..5 {
            let port = free_port();
            let mut s = Server { port, child: None };
            if s.try_spawn() {
                return Some(s);
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts it again on its port (after `kill`).
    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server did not start on port {}",
            self.port
        );
    }

    /// Starts redis-server on `self.port`; ready once the server answering there is this child
    /// (another test's may answer on the same port). False when it exited or never answered.
    fn try_spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false; // the port was taken
            }
            if self.serving_pid() == Some(child.id()) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// The process id of the server answering on the port, if one does.
    fn serving_pid(&self) -> Option<u32> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut c = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut c).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn broker(&self, prefix: &str) -> RedisBroker {
        let mut cfg = RedisConfig::new(self.url());
        cfg.global_keyprefix = prefix.to_string();
        RedisBroker::connect(cfg).unwrap()
    }

    fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

macro_rules! server {
    () => {
        match Server::start() {
            Some(s) => s,
            None => return,
        }
    };
}

fn envelope(tag: &str, queue: &str, body: &str) -> Vec<u8> {
    format!(
        r#"{{"body":"{body}","content-encoding":"utf-8","content-type":"application/json","headers":{{"lang":"py","task":"t","id":"{tag}","stamped_headers":[],"stamps":{{}}}},"properties":{{"correlation_id":"{tag}","delivery_mode":2,"delivery_info":{{"exchange":"","routing_key":"{queue}"}},"priority":0,"body_encoding":"base64","delivery_tag":"{tag}"}}}}"#
    )
    .into_bytes()
}

/// Every key is gone but the in-flight index, which keeps only its keeper.
fn assert_nothing_left(raw: &mut redis::Connection, prefix: &str) {
    let index = format!("{prefix}unacked_index");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(raw).unwrap();
    assert!(keys.iter().all(|k| *k == index), "left behind: {keys:?}");
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&index)
        .arg(0)
        .arg(-1)
        .query(raw)
        .unwrap();
    assert!(members.iter().all(|m| m == INDEX_KEEPER), "{members:?}");
}

fn qs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn tags(ds: &[rqueue_core::prefetch::Delivery]) -> Vec<String> {
    ds.iter().map(|d| d.tag.clone()).collect()
}

#[test]
fn test_redis_fifo_and_priority_across_queues() {
    let s = server!();
    let b = s.broker("");
    b.publish("a", &envelope("a1", "a", "x"), 0, None).unwrap();
    b.publish("b", &envelope("b1", "b", "x"), 9, None).unwrap();
    b.publish("b", &envelope("b2", "b", "x"), 4, None).unwrap();
    b.publish("a", &envelope("a2", "a", "x"), 1, None).unwrap();
    b.publish("b", &envelope("b3", "b", "x"), 0, None).unwrap();
    b.publish("a", &envelope("a3", "a", "x"), 7, None).unwrap();
    assert_eq!(b.queue_length("a").unwrap(), 3);
    let got = b.fetch(&qs(&["a", "b"]), 10, "w1").unwrap();
    // priority buckets first; within one, a share from each queue in turn
    assert_eq!(tags(&got), vec!["a1", "a2", "b3", "b2", "a3", "b1"]);
    assert_eq!(got[0].queue, "a");
    assert_eq!(got[3].queue, "b");
    assert_eq!(got[0].payload, envelope("a1", "a", "x"));
    assert!(got.iter().all(|d| d.deliveries == 1));
    assert!(b.fetch(&qs(&["a", "b"]), 10, "w1").unwrap().is_empty());
}

#[test]
fn test_redis_fetch_takes_queues_in_turn() {
    let s = server!();
    let b = s.broker("");
    for i in 0..6 {
        let tag = format!("a{i}");
        b.publish("a", &envelope(&tag, "a", "x"), 0, None).unwrap();
    }
    b.publish("b", &envelope("b0", "b", "x"), 0, None).unwrap();
    b.publish("b", &envelope("b1", "b", "x"), 0, None).unwrap();
    let got = b.fetch(&qs(&["a", "b"]), 5, "w1").unwrap();
    // an equal share (rounded up) from each queue in turn: b is not starved by a
    assert_eq!(tags(&got), vec!["a0", "a1", "a2", "b0", "b1"]);
    let got = b.fetch(&qs(&["b", "a"]), 2, "w1").unwrap();
    assert_eq!(tags(&got), vec!["a3", "a4"]);
}

/// kombu's layout: `", "` and `": "` separators, properties last.
fn kombu_envelope(tag: &str, queue: &str, headers: &str) -> Vec<u8> {
    format!(
        r#"{{"body": "e30=", "content-encoding": "utf-8", "content-type": "application/json", "headers": {{{headers}}}, "properties": {{"correlation_id": "{tag}", "delivery_mode": 2, "delivery_info": {{"exchange": "", "routing_key": "{queue}"}}, "priority": 0, "body_encoding": "base64", "delivery_tag": "{tag}"}}}}"#
    )
    .into_bytes()
}

/// Calls of every command the server ran (scripts' commands included) since the last reset.
fn commands_since_reset(raw: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(raw).unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_config"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn test_redis_delivery_tag_is_read_from_every_layout() {
    let s = server!();
    let b = s.broker("");
    let plain = kombu_envelope("k1", "q", r#""id": "k1""#);
    // a header that names a delivery tag too: ambiguous as text, so the envelope is decoded
    let decoy = kombu_envelope("k2", "q", r#""x": {"delivery_tag": "not-it"}"#);
    // an escaped character in the tag: decoded
    let escaped = kombu_envelope(r"k3", "q", "");
    for m in [&plain, &decoy, &escaped, &envelope("k4", "q", "x")] {
        b.publish("q", m, 0, None).unwrap();
    }
    b.publish("q", b"not json", 0, None).unwrap();
    let got = b.fetch(&qs(&["q"]), 10, "w1").unwrap();
    let got_tags = tags(&got);
    assert_eq!(&got_tags[..4], ["k1", "k2", "k3", "k4"]);
    assert!(got_tags[4].starts_with("rqueue-"), "{got_tags:?}");
    assert_eq!(got[0].payload, plain);
    assert_eq!(b.ack(&got_tags).unwrap(), 5);
    assert_eq!(b.leased_count("w1").unwrap(), 0);
}

#[test]
fn test_redis_bookkeeping_costs_a_few_commands_per_batch() {
    let s = server!();
    let b = s.broker("");
    let mut raw = s.raw();
    // more than a script's chunk (500 records per command), to cover the chunking too
    let n = 1200;
    let messages: Vec<NewMessage> = (0..n)
        .map(|i| NewMessage {
            queue: "q".into(),
            payload: kombu_envelope(&format!("t{i}"), "q", r#""lang": "py""#),
            priority: 0,
            eta_ms: None,
        })
        .collect();
    b.publish_many(&messages).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut raw)
        .unwrap();
    let got = b.fetch(&qs(&["q"]), n, "w1").unwrap();
    assert_eq!(got.len(), n);
    b.extend_leases("w1", &tags(&got)).unwrap();
    for chunk in got.chunks(64) {
        assert_eq!(b.ack(&tags(chunk)).unwrap(), chunk.len());
    }
    let calls = commands_since_reset(&mut raw);
    // fetch ~15, renew ~5, ack 6 per 64: a fraction of a command per message
    assert!(calls * 4 < n as u64, "{calls} commands for {n} messages");
    assert_nothing_left(&mut raw, "");
}

#[test]
fn test_redis_kombu_keys_and_ack_removes_everything() {
    let s = server!();
    let b = s.broker("");
    let mut raw = s.raw();
    b.publish("celery", &envelope("t1", "celery", "x"), 3, None)
        .unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut raw).unwrap();
    assert_eq!(keys, vec![b"celery\x06\x163".to_vec()]);
    let got = b.fetch(&qs(&["celery"]), 1, "w1").unwrap();
    assert_eq!(got[0].tag, "t1");
    let entry: String = redis::cmd("HGET")
        .arg("unacked")
        .arg("t1")
        .query(&mut raw)
        .unwrap();
    let v: Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(v[1], "");
    assert_eq!(v[2], "celery");
    assert_eq!(v[0]["headers"]["stamped_headers"], serde_json::json!([]));
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg("unacked_index")
        .arg("t1")
        .query(&mut raw)
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((score.unwrap() - now).abs() < 5.0);
    assert_eq!(b.leased_count("w1").unwrap(), 1);
    assert_eq!(b.ack(&["t1"]).unwrap(), 1);
    assert_eq!(b.ack(&["t1"]).unwrap(), 0);
    assert_nothing_left(&mut raw, "");
}

#[test]
fn test_redis_requeue_puts_it_next_and_undoes_the_count() {
    let s = server!();
    let b = s.broker("");
    for t in ["m1", "m2", "m3"] {
        b.publish("q", &envelope(t, "q", "x"), 0, None).unwrap();
    }
    let got = b.fetch(&qs(&["q"]), 2, "w1").unwrap();
    assert_eq!(tags(&got), vec!["m1", "m2"]);
    assert_eq!(b.requeue(&tags(&got)).unwrap(), 2);
    let again = b.fetch(&qs(&["q"]), 3, "w1").unwrap();
    assert_eq!(tags(&again), vec!["m1", "m2", "m3"]);
    assert!(again.iter().all(|d| d.deliveries == 1));
    assert_eq!(again[0].payload, envelope("m1", "q", "x"));
}

#[test]
fn test_redis_release_puts_it_next_and_counts() {
    let s = server!();
    let b = s.broker("");
    for t in ["m1", "m2"] {
        b.publish("q", &envelope(t, "q", "x"), 0, None).unwrap();
    }
    let got = b.fetch(&qs(&["q"]), 1, "w1").unwrap();
    assert_eq!(b.release(&tags(&got)).unwrap(), 1);
    let again = b.fetch(&qs(&["q"]), 1, "w1").unwrap();
    assert_eq!(tags(&again), vec!["m1"]);
    assert_eq!(again[0].deliveries, 2, "a rejected delivery counts");
}

#[test]
fn test_redis_requeue_owner_and_dead_letter_at_max_deliveries() {
    let s = server!();
    let b = s.broker("");
    b.publish("q", &envelope("p1", "q", "x"), 0, None).unwrap();
    b.publish("q", &envelope("n1", "q", "x"), 0, None).unwrap();
    for round in 1..=3u32 {
        let got = b.fetch(&qs(&["q"]), 10, "dead-worker").unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|d| d.deliveries == round));
        if round < 3 {
            let (requeued, dead) = b.requeue_owner("dead-worker", 3).unwrap();
            assert_eq!((requeued, dead), (2, 0));
            let next = b.fetch(&qs(&["q"]), 1, "peek").unwrap();
            let v: Value = serde_json::from_slice(&next[0].payload).unwrap();
            assert_eq!(v["headers"]["redelivered"], true);
            assert_eq!(v["properties"]["delivery_info"]["redelivered"], true);
            assert_eq!(v["headers"]["stamped_headers"], serde_json::json!([]));
            b.requeue(&tags(&next)).unwrap();
        }
    }
    assert_eq!(b.requeue_owner("dead-worker", 3).unwrap(), (0, 2));
    assert_eq!(b.queue_length("q").unwrap(), 0);
    assert_eq!(b.leased_count("dead-worker").unwrap(), 0);
    let dl = b.dead_letters(Some("q"), 10).unwrap();
    assert_eq!(dl.len(), 2);
    assert!(dl
        .iter()
        .all(|d| d.reason == "worker_lost" && d.deliveries == 3));
    let v: Value = serde_json::from_slice(&dl[0].payload).unwrap();
    assert_eq!(v["headers"]["stamped_headers"], serde_json::json!([]));
    assert_eq!(b.requeue_dead("q", &[dl[0].id.as_str()]).unwrap(), 1);
    assert_eq!(b.dead_letters(Some("q"), 10).unwrap().len(), 1);
    let back = b.fetch(&qs(&["q"]), 10, "w2").unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].deliveries, 1);
    assert_eq!(b.purge_dead(Some("q")).unwrap(), 1);
}

#[test]
fn test_redis_dead_letter_by_tag_and_garbage() {
    let s = server!();
    let b = s.broker("");
    let mut raw = s.raw();
    b.publish("q", &envelope("g1", "q", "x"), 0, None).unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg("q")
        .arg(&b"\xff\x00not json"[..])
        .query(&mut raw)
        .unwrap();
    let got = b.fetch(&qs(&["q"]), 10, "w").unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].payload, b"\xff\x00not json".to_vec());
    assert!(got[1].tag.starts_with("rqueue-"));
    assert!(b
        .dead_letter(&got[0].tag, "decode_error", Some("bad"))
        .unwrap());
    assert!(!b.dead_letter(&got[0].tag, "decode_error", None).unwrap());
    assert!(b.dead_letter(&got[1].tag, "decode_error", None).unwrap());
    assert!(!b.dead_letter("unknown", "x", None).unwrap());
    let dl = b.dead_letters(Some("q"), 10).unwrap();
    assert_eq!(dl[0].error.as_deref(), Some("bad"));
    assert_eq!(dl[0].payload, envelope("g1", "q", "x"));
    assert_eq!(dl[1].payload, b"\xff\x00not json".to_vec());
    assert_eq!(b.leased_count("w").unwrap(), 0);
}

#[test]
fn test_redis_sweep_returns_expired_lease_to_front_marked_redelivered() {
    let s = server!();
    let b = s.broker("");
    b.publish("q", &envelope("s1", "q", "x"), 0, None).unwrap();
    b.publish("q", &envelope("s2", "q", "x"), 0, None).unwrap();
    let got = b.fetch(&qs(&["q"]), 1, "w").unwrap();
    assert_eq!(got[0].tag, "s1");
    assert_eq!(b.sweep_expired(Duration::from_secs(60), 5).unwrap(), (0, 0));
    std::thread::sleep(Duration::from_millis(300));
    // a renewed lease is not swept
    assert_eq!(
        b.extend_leases("w", &["s1"]).unwrap(),
        vec!["s1".to_string()]
    );
    assert_eq!(
        b.sweep_expired(Duration::from_millis(200), 5).unwrap(),
        (0, 0)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        b.sweep_expired(Duration::from_millis(200), 5).unwrap(),
        (1, 0)
    );
    let again = b.fetch(&qs(&["q"]), 1, "w2").unwrap();
    assert_eq!(again[0].tag, "s1");
    assert_eq!(again[0].deliveries, 2);
    let v: Value = serde_json::from_slice(&again[0].payload).unwrap();
    assert_eq!(v["headers"]["redelivered"], true);
    assert_eq!(v["properties"]["delivery_info"]["redelivered"], true);
    assert_eq!(v["headers"]["stamped_headers"], serde_json::json!([]));
    assert_eq!(v["headers"]["stamps"], serde_json::json!({}));
    assert_eq!(b.leased_count("w").unwrap(), 0);
    // over the limit: dead-lettered
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        b.sweep_expired(Duration::from_millis(200), 2).unwrap(),
        (0, 1)
    );
    assert_eq!(b.dead_letters(Some("q"), 10).unwrap()[0].id, "s1");
}

#[test]
fn test_redis_eta_waits_in_the_broker() {
    let s = server!();
    let b = s.broker("");
    let now = rqueue_core::transport::now_ms();
    b.publish_many(&[
        NewMessage {
            queue: "q".into(),
            payload: envelope("e1", "q", "x"),
            priority: 0,
            eta_ms: Some(now + 400),
        },
        NewMessage {
            queue: "q".into(),
            payload: envelope("n1", "q", "x"),
            priority: 0,
            eta_ms: None,
        },
    ])
    .unwrap();
    assert_eq!(b.queue_length("q").unwrap(), 2);
    let got = b.fetch(&qs(&["q"]), 10, "w").unwrap();
    assert_eq!(tags(&got), vec!["n1"]);
    assert!(b.fetch(&qs(&["q"]), 10, "w").unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    let got = b.fetch(&qs(&["q"]), 10, "w").unwrap();
    assert_eq!(tags(&got), vec!["e1"]);
    assert_eq!(got[0].payload, envelope("e1", "q", "x"));
}

#[test]
fn test_redis_global_keyprefix_on_every_key() {
    let s = server!();
    let b = s.broker("pfx:");
    let mut raw = s.raw();
    let now = rqueue_core::transport::now_ms();
    b.publish("q", &envelope("k1", "q", "x"), 0, None).unwrap();
    b.publish("q", &envelope("k2", "q", "x"), 6, None).unwrap();
    b.publish("q", &envelope("k3", "q", "x"), 0, Some(now + 60_000))
        .unwrap();
    b.declare_bindings(&qs(&["q"]), None).unwrap();
    let got = b.fetch(&qs(&["q"]), 1, "w").unwrap();
    b.dead_letter(&got[0].tag, "x", None).unwrap();
    b.fetch(&qs(&["q"]), 1, "w").unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut raw).unwrap();
    assert!(keys.len() >= 6, "{keys:?}");
    for k in &keys {
        assert!(k.starts_with(b"pfx:"), "{:?}", String::from_utf8_lossy(k));
    }
    let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
        .arg("pfx:_kombu.binding.q")
        .query(&mut raw)
        .unwrap();
    assert_eq!(members, vec![b"q\x06\x16\x06\x16q".to_vec()]);
    assert_eq!(b.purge(&qs(&["q"])).unwrap(), 1);
}

#[test]
fn test_redis_unreachable_is_connection_error_without_password() {
    let port = free_port();
    let mut cfg = RedisConfig::new(format!("redis://u:canary-pw@127.0.0.1:{port}/0"));
    cfg.connect_timeout = Duration::from_millis(500);
    let e = RedisBroker::connect(cfg).unwrap_err();
    assert!(matches!(e, Error::Connection(_)), "{e}");
    assert!(!e.to_string().contains("canary-pw"), "{e}");
}

#[test]
fn test_redis_maxmemory_policy() {
    let s = server!();
    let b = s.broker("");
    assert_eq!(b.check_maxmemory_policy().unwrap(), None);
    let mut raw = s.raw();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut raw)
        .unwrap();
    assert_eq!(
        b.check_maxmemory_policy().unwrap().as_deref(),
        Some("allkeys-lru")
    );
}

fn consumer(s: &Server, buffer: &Arc<PrefetchBuffer>, queues: &[&str]) -> RedisConsumer {
    let mut cfg = RedisConsumerConfig::new(RedisConfig::new(s.url()), qs(queues), "c1");
    cfg.lease = Duration::from_secs(30);
    cfg.poll_max = Duration::from_millis(5);
    RedisConsumer::new(cfg, Arc::clone(buffer)).unwrap()
}

#[test]
fn test_redis_consumer_fills_buffer_and_stop_returns_unstarted() {
    let s = server!();
    let b = s.broker("");
    for i in 0..10 {
        b.publish("q", &envelope(&format!("c{i}"), "q", "x"), 0, None)
            .unwrap();
    }
    let buffer = Arc::new(PrefetchBuffer::new(4));
    let c = consumer(&s, &buffer, &["q"]);
    c.start().unwrap();
    let first = buffer.get(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(first.tag, "c0");
    let deadline = Instant::now() + Duration::from_secs(5);
    while buffer.len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(buffer.len(), 3);
    assert_eq!(b.leased_count("c1").unwrap(), 4);
    let left = c.stop();
    assert!(!c.running());
    assert_eq!(tags(&left), vec!["c1", "c2", "c3"]);
    assert_eq!(b.requeue(&tags(&left)).unwrap(), 3);
    b.ack(&[first.tag.as_str()]).unwrap();
    let next = b.fetch(&qs(&["q"]), 1, "w").unwrap();
    assert_eq!(next[0].tag, "c1");
    assert!(c.last_error().is_none());
}

#[test]
fn test_redis_consumer_hands_back_what_it_prefetched_for_short_tasks_once_one_runs_long() {
    let s = server!();
    let b = s.broker("");
    let n = 300;
    let messages: Vec<NewMessage> = (0..n)
        .map(|i| NewMessage {
            queue: "q".into(),
            payload: envelope(&format!("s{i}"), "q", "x"),
            priority: 0,
            eta_ms: None,
        })
        .collect();
    b.publish_many(&messages).unwrap();
    let buffer = Arc::new(PrefetchBuffer::new(2));
    let c = consumer(&s, &buffer, &["q"]);
    c.start().unwrap();
    let mut done = Vec::new();
    for _ in 0..150 {
        let d = buffer.get(Some(Duration::from_secs(5))).unwrap();
        buffer.done(1);
        done.push(d.tag);
    }
    b.ack(&done).unwrap();
    // one task runs long: the capacity falls back to 2 and the rest goes back to the queue
    let long = buffer.get(Some(Duration::from_secs(5))).unwrap();
    std::thread::sleep(ADAPTIVE_WORK * 4);
    let next = buffer.get(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(buffer.effective_capacity(), 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    // taken out of the buffer, then handed back in a round trip of the consumer thread
    while b.leased_count("c1").unwrap() > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(buffer.is_empty(), "{} still buffered", buffer.len());
    assert_eq!(b.leased_count("c1").unwrap(), 2);
    assert_eq!(b.queue_length("q").unwrap(), n - 152);
    // handed back unchanged and uncounted, in order, next in line
    let again = b.fetch(&qs(&["q"]), 1, "w").unwrap();
    assert_eq!(again[0].tag, format!("s{}", 152));
    assert_eq!(again[0].deliveries, 1);
    c.stop();
    b.ack(&[long.tag, next.tag]).unwrap();
}

#[test]
fn test_redis_consumer_hands_back_a_lease_it_never_received() {
    // A fetch that ran after the consumer gave up on its reply (a broker stall) leaves a message
    // leased to the consumer's owner that the worker never got.
    let s = server!();
    let b = s.broker("");
    b.publish("q", &envelope("orphan", "q", "x"), 0, None)
        .unwrap();
    assert_eq!(b.fetch(&qs(&["q"]), 1, "c1").unwrap()[0].tag, "orphan");
    let buffer = Arc::new(PrefetchBuffer::new(4));
    let mut cfg = RedisConsumerConfig::new(RedisConfig::new(s.url()), qs(&["q"]), "c1");
    cfg.lease = Duration::from_millis(300);
    cfg.poll_max = Duration::from_millis(5);
    let c = RedisConsumer::new(cfg, Arc::clone(&buffer)).unwrap();
    c.start().unwrap();
    // handed back at the first renewal (lease / 3), not renewed; fetched again, count undone
    let got = buffer.get(Some(Duration::from_secs(5))).unwrap();
    assert_eq!((got.tag.as_str(), got.deliveries), ("orphan", 1));
    // now held: renewed, never handed back or swept while the worker has it
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(b.leased_tags("c1").unwrap(), vec!["orphan".to_string()]);
    assert!(buffer.get(Some(Duration::from_millis(1))).is_none());
    c.stop();
}

#[test]
fn test_redis_full_memory_refuses_producers_but_the_worker_scripts_still_drain() {
    let s = server!();
    let b = s.broker("");
    let body = "x".repeat(10_000);
    for i in 0..50 {
        b.publish("q", &envelope(&format!("m{i}"), "q", &body), 0, None)
            .unwrap();
    }
    let mut c = redis::Client::open(s.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // well over the limit, as after results filled it: every command that adds memory is refused
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg((used - 400_000).to_string())
        .query(&mut c)
        .unwrap();
    let refused = b
        .publish("q", &envelope("late", "q", &body), 0, None)
        .unwrap_err();
    assert!(refused.to_string().contains("maxmemory"), "{refused}");
    let mut drained = Vec::new();
    loop {
        let got = b.fetch(&qs(&["q"]), 7, "w").unwrap();
        if got.is_empty() {
            break;
        }
        let tags: Vec<&str> = got.iter().map(|d| d.tag.as_str()).collect();
        // leases are renewed, and results stored with the acks, while memory is full
        assert_eq!(b.extend_leases("w", &tags).unwrap().len(), got.len());
        let (results, acks) = tags.split_at(tags.len() / 2);
        let rows: Vec<ResultRow> = results
            .iter()
            .map(|t| record(t, "SUCCESS", 1, None))
            .collect();
        assert_eq!(b.complete(&rows, results).unwrap(), results.len());
        assert_eq!(b.ack(acks).unwrap(), acks.len());
        drained.extend(got.into_iter().map(|d| d.tag));
    }
    assert!(stored(&mut c, "m0").is_some());
    assert_eq!(drained.len(), 50);
    assert_eq!(b.queue_length("q").unwrap(), 0);
    assert_eq!(b.leased_count("w").unwrap(), 0);
}

#[test]
fn test_redis_stale_lease_left_by_a_kombu_restore_leaves_the_celery_workers_message_alone() {
    let s = server!();
    let b = s.broker("");
    let mut raw = s.raw();
    b.publish("q", &envelope("k1", "q", "x"), 0, None).unwrap();
    assert_eq!(b.fetch(&qs(&["q"]), 1, "dead").unwrap().len(), 1);
    // kombu restores it (its unacked entry and index only) and a Celery worker takes it again,
    // writing its own entry: JSON with ", " separators, the envelope marked redelivered
    let kombu_entry = format!(
        "[{}, \"\", \"q\"]",
        String::from_utf8(envelope("k1", "q", "x"))
            .unwrap()
            .replace(r#""lang":"py""#, r#""lang": "py", "redelivered": true"#)
    );
    let now: (u64, u64) = redis::cmd("TIME").query(&mut raw).unwrap();
    let _: () = redis::pipe()
        .hset("unacked", "k1", &kombu_entry)
        .zadd("unacked_index", "k1", now.0 - 2)
        .query(&mut raw)
        .unwrap();
    // past rqueue's visibility (1 s), not Celery's (kombu's default 3600 s): left to Celery
    assert_eq!(b.sweep_expired(Duration::from_secs(1), 5).unwrap(), (0, 0));
    let still: Option<String> = redis::cmd("HGET")
        .arg("unacked")
        .arg("k1")
        .query(&mut raw)
        .unwrap();
    assert_eq!(still.as_deref(), Some(kombu_entry.as_str()));
    // past Celery's too: restored whole (kombu's envelope), not cut at the old length
    let _: () = redis::cmd("ZADD")
        .arg("unacked_index")
        .arg(now.0 - 4000)
        .arg("k1")
        .query(&mut raw)
        .unwrap();
    assert_eq!(b.sweep_expired(Duration::from_secs(1), 5).unwrap(), (1, 0));
    let again = b.fetch(&qs(&["q"]), 1, "w").unwrap();
    let v: Value = serde_json::from_slice(&again[0].payload).unwrap();
    assert_eq!(v["headers"]["redelivered"], true);
    assert_eq!(v["properties"]["delivery_tag"], "k1");
    assert!(b.dead_letters(Some("q"), 10).unwrap().is_empty());
    // a kombu restore and ack of a dead worker's message: its records are forgotten by a sweep
    b.publish("q", &envelope("k2", "q", "x"), 0, None).unwrap();
    assert_eq!(b.fetch(&qs(&["q"]), 1, "dead2").unwrap().len(), 1);
    let _: () = redis::pipe()
        .hdel("unacked", "k2")
        .zrem("unacked_index", "k2")
        .query(&mut raw)
        .unwrap();
    b.sweep_expired(Duration::from_secs(60), 5).unwrap();
    let lease: bool = redis::cmd("HEXISTS")
        .arg("rqueue.lease")
        .arg("k2")
        .query(&mut raw)
        .unwrap();
    let count: bool = redis::cmd("HEXISTS")
        .arg("rqueue.deliveries")
        .arg("k2")
        .query(&mut raw)
        .unwrap();
    assert!(!lease && !count);
    assert_eq!(b.leased_count("dead2").unwrap(), 0);
    // "w" still holds k1 (in flight): its records stay
    assert_eq!(b.leased_tags("w").unwrap(), vec!["k1".to_string()]);
}

#[test]
fn test_redis_fetch_after_a_wait_is_woken_by_a_message_and_leases_it_in_the_same_round_trip() {
    let s = server!();
    let b = s.broker("");
    let none: &[String] = &[];
    let began = Instant::now();
    let got = b
        .ack_then_fetch(none, &qs(&["q"]), 3, "w", Some(Duration::from_millis(50)))
        .unwrap();
    assert!(got.is_empty());
    assert!(
        began.elapsed() >= Duration::from_millis(45),
        "it did not wait"
    );
    for i in 0..3 {
        b.publish("q", &envelope(&format!("w{i}"), "q", "x"), 0, None)
            .unwrap();
    }
    // messages waiting: no wait, taken in order
    let began = Instant::now();
    let got = b
        .ack_then_fetch(none, &qs(&["q"]), 3, "w", Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(tags(&got), vec!["w0", "w1", "w2"]);
    assert!(began.elapsed() < Duration::from_secs(4));
    // the acks go first, even when the wait then runs out
    let acks = vec!["w0".to_string(), "w1".to_string()];
    b.ack_then_fetch(&acks, &qs(&["q"]), 3, "w", Some(Duration::from_millis(20)))
        .unwrap();
    assert_eq!(b.leased_tags("w").unwrap(), vec!["w2".to_string()]);
    // a waiting consumer is woken by a publish from another connection and leases the message
    let waiter = {
        let b = s.broker("");
        std::thread::spawn(move || {
            let began = Instant::now();
            let got = b
                .ack_then_fetch(none, &qs(&["q"]), 3, "w2", Some(Duration::from_secs(10)))
                .unwrap();
            (tags(&got), began.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    b.publish("q", &envelope("w3", "q", "x"), 0, None).unwrap();
    let (got, waited) = waiter.join().unwrap();
    assert_eq!(got, vec!["w3"]);
    assert!(waited < Duration::from_secs(9), "not woken: {waited:?}");
    assert_eq!(b.queue_length("q").unwrap(), 0);
    assert_eq!(b.leased_tags("w2").unwrap(), vec!["w3".to_string()]);
}

#[test]
fn test_redis_consumer_reconnects_after_restart() {
    let mut s = server!();
    let buffer = Arc::new(PrefetchBuffer::new(8));
    let c = consumer(&s, &buffer, &["q"]);
    c.start().unwrap();
    s.broker("")
        .publish("q", &envelope("r1", "q", "x"), 0, None)
        .unwrap();
    assert_eq!(buffer.get(Some(Duration::from_secs(5))).unwrap().tag, "r1");
    s.kill();
    std::thread::sleep(Duration::from_millis(300));
    s.spawn();
    let restarted = Instant::now();
    s.broker("")
        .publish("q", &envelope("r2", "q", "x"), 0, None)
        .unwrap();
    let got = buffer.get(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(got.tag, "r2");
    assert!(restarted.elapsed() < Duration::from_secs(5));
    assert!(c.last_error().is_some());
    c.stop();
}

#[test]
fn test_redis_reads_and_returns_are_sent_again_on_a_connection_a_restarted_server_dropped() {
    let mut s = server!();
    let b = s.broker("");
    b.publish("q", &envelope("d1", "q", "x"), 0, None).unwrap();
    let got = b.fetch(&qs(&["q"]), 1, "w1").unwrap();
    assert_eq!(b.leased_tags("w1").unwrap(), ["d1"]);
    let restart = |s: &mut Server| {
        s.kill();
        std::thread::sleep(Duration::from_millis(300));
        s.spawn(); // no persistence: an empty server
    };
    restart(&mut s);
    // Each first command meets the dropped connection (end of file) and is sent again.
    assert!(b.leased_tags("w1").unwrap().is_empty());
    restart(&mut s);
    assert_eq!(b.requeue(&tags(&got)).unwrap(), 0);
    restart(&mut s);
    assert_eq!(b.queue_length("q").unwrap(), 0);
    restart(&mut s);
    // A publish is not sent twice behind the caller's back: it says the connection failed.
    let failed = b.publish("q", &envelope("d2", "q", "x"), 0, None);
    assert!(
        matches!(failed, Err(rqueue_core::Error::Connection(_))),
        "{failed:?}"
    );
    b.publish("q", &envelope("d3", "q", "x"), 0, None).unwrap();
    assert_eq!(b.queue_length("q").unwrap(), 1);
}

#[test]
fn test_redis_consumer_sends_acks_handed_to_it_with_its_next_fetch() {
    let s = server!();
    let b = s.broker("");
    for i in 0..6 {
        b.publish("q", &envelope(&format!("a{i}"), "q", "x"), 0, None)
            .unwrap();
    }
    let buffer = Arc::new(PrefetchBuffer::new(2));
    let c = consumer(&s, &buffer, &["q"]);
    c.start().unwrap();
    let mut ran = Vec::new();
    for _ in 0..6 {
        let d = buffer.get(Some(Duration::from_secs(5))).unwrap();
        buffer.done(1);
        c.ack_later(vec![d.tag.clone()]);
        ran.push(d.tag);
    }
    assert!(c.settle_acks(Duration::from_secs(5)));
    assert_eq!(ran, ["a0", "a1", "a2", "a3", "a4", "a5"]);
    assert_eq!(b.leased_count("c1").unwrap(), 0);
    assert_nothing_left(&mut s.raw(), "");
    assert!(
        c.settle_acks(Duration::from_millis(1)),
        "nothing pending: at once"
    );
    c.stop();
}

#[test]
fn test_redis_consumer_keeps_acks_while_redis_is_away_and_sends_them_after() {
    let mut s = server!();
    let b = s.broker("");
    b.publish("q", &envelope("k1", "q", "x"), 0, None).unwrap();
    let buffer = Arc::new(PrefetchBuffer::new(4));
    let c = consumer(&s, &buffer, &["q"]);
    c.start().unwrap();
    let d = buffer.get(Some(Duration::from_secs(5))).unwrap();
    buffer.done(1);
    // The ack handed over while the server is away is kept, and sent once the thread has
    // reconnected (to a new, empty server here: an ack of a tag it does not know does nothing).
    s.kill();
    c.ack_later(vec![d.tag.clone()]);
    assert!(
        !c.settle_acks(Duration::from_millis(300)),
        "Redis is away: not sent yet"
    );
    s.spawn();
    assert!(c.settle_acks(Duration::from_secs(10)));
    c.stop();
}

#[test]
fn test_redis_consumer_sends_the_last_acks_when_stopped() {
    let s = server!();
    let b = s.broker("");
    b.publish("q", &envelope("l1", "q", "x"), 0, None).unwrap();
    let buffer = Arc::new(PrefetchBuffer::new(1));
    let c = consumer(&s, &buffer, &["q"]);
    c.start().unwrap();
    let d = buffer.get(Some(Duration::from_secs(5))).unwrap();
    c.ack_later(vec![d.tag]);
    c.stop();
    assert_eq!(b.leased_count("c1").unwrap(), 0);
    assert_nothing_left(&mut s.raw(), "");
}

// -- complete: results and acks in one round trip ------------------------------------------------

fn record(task_id: &str, status: &str, result: i64, ttl_ms: Option<u64>) -> ResultRow {
    ResultRow {
        task_id: task_id.to_string(),
        status: status.to_string(),
        content_type: "application/json".to_string(),
        payload: format!(r#"{{"status":"{status}","result":{result},"task_id":"{task_id}"}}"#)
            .into_bytes(),
        ttl_ms,
    }
}

fn stored(raw: &mut redis::Connection, task_id: &str) -> Option<Value> {
    let data: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("celery-task-meta-{task_id}"))
        .query(raw)
        .unwrap();
    data.map(|d| serde_json::from_slice(&d).unwrap())
}

fn lease_all(b: &RedisBroker, names: &[&str]) -> Vec<String> {
    for n in names {
        b.publish("q", &envelope(n, "q", "x"), 0, None).unwrap();
    }
    let got = b.fetch(&qs(&["q"]), names.len(), "w").unwrap();
    assert_eq!(got.len(), names.len());
    tags(&got)
}

#[test]
fn test_redis_complete_stores_with_ttl_publishes_and_acks() {
    let s = server!();
    let b = s.broker("pfx:");
    let mut raw = s.raw();
    let leased = lease_all(&b, &["c1", "c2"]);
    let mut sub = s.raw();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("celery-task-meta-t1").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let rows = [
        record("t1", "SUCCESS", 1, Some(60_000)),
        record("t2", "FAILURE", 2, None),
    ];
    assert_eq!(b.complete(&rows, &leased).unwrap(), 2);
    // stored unprefixed (where Celery's backend reads), with and without expiry
    assert_eq!(stored(&mut raw, "t1").unwrap()["result"], 1);
    assert_eq!(stored(&mut raw, "t2").unwrap()["status"], "FAILURE");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("celery-task-meta-t1")
        .query(&mut raw)
        .unwrap();
    assert!((59_000..=60_000).contains(&ttl), "{ttl}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("celery-task-meta-t2")
        .query(&mut raw)
        .unwrap();
    assert_eq!(ttl, -1);
    // published on the key's channel
    let msg = pubsub.get_message().unwrap();
    assert_eq!(msg.get_channel_name(), "celery-task-meta-t1");
    let payload: Vec<u8> = msg.get_payload().unwrap();
    assert_eq!(payload, rows[0].payload);
    drop(pubsub);
    // acked: nothing in flight, and acking again is harmless
    assert_eq!(b.leased_count("w").unwrap(), 0);
    let unacked: usize = redis::cmd("HLEN")
        .arg("pfx:unacked")
        .query(&mut raw)
        .unwrap();
    assert_eq!(unacked, 0);
    assert_eq!(b.complete::<&str>(&[], &["c1"]).unwrap(), 0);
    assert_eq!(b.complete::<&str>(&[], &[]).unwrap(), 0);
    // results only
    assert_eq!(
        b.complete::<&str>(&[record("t3", "SUCCESS", 3, None)], &[])
            .unwrap(),
        0
    );
    assert_eq!(stored(&mut raw, "t3").unwrap()["result"], 3);
}

#[test]
fn test_redis_complete_keeps_success_final() {
    let s = server!();
    let b = s.broker("");
    let mut raw = s.raw();
    b.complete::<&str>(&[record("t1", "STARTED", 0, None)], &[])
        .unwrap();
    b.complete::<&str>(&[record("t1", "SUCCESS", 1, None)], &[])
        .unwrap();
    let leased = lease_all(&b, &["c1"]);
    // a later FAILURE or SUCCESS (a redelivery) leaves the first SUCCESS; the ack still runs
    let rows = [
        record("t1", "FAILURE", 2, None),
        record("t1", "SUCCESS", 3, None),
    ];
    assert_eq!(b.complete(&rows, &leased).unwrap(), 1);
    assert_eq!(stored(&mut raw, "t1").unwrap()["result"], 1);
    // pickle: Lua cannot read the status, the marker key keeps it final
    let pickled = |status: &str, body: &[u8]| ResultRow {
        task_id: "p1".into(),
        status: status.into(),
        content_type: PICKLE_CONTENT_TYPE.into(),
        payload: body.to_vec(),
        ttl_ms: Some(60_000),
    };
    b.complete::<&str>(&[pickled("SUCCESS", b"\x80first")], &[])
        .unwrap();
    b.complete::<&str>(&[pickled("FAILURE", b"\x80second")], &[])
        .unwrap();
    let got: Vec<u8> = redis::cmd("GET")
        .arg("celery-task-meta-p1")
        .query(&mut raw)
        .unwrap();
    assert_eq!(got, b"\x80first");
    let marker_ttl: i64 = redis::cmd("PTTL")
        .arg("rqueue-task-final-p1")
        .query(&mut raw)
        .unwrap();
    assert!(marker_ttl > 0);
}

#[test]
fn test_redis_complete_loads_scripts_after_script_flush() {
    let s = server!();
    let b = s.broker("");
    let mut raw = s.raw();
    // a fresh server has neither script; then the cache is flushed under a running broker
    let leased = lease_all(&b, &["c1"]);
    assert_eq!(
        b.complete(&[record("t1", "SUCCESS", 1, None)], &leased)
            .unwrap(),
        1
    );
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut raw)
        .unwrap();
    let leased = lease_all(&b, &["c2", "c3"]);
    let rows = [
        record("t2", "SUCCESS", 2, Some(5_000)),
        record("t3", "SUCCESS", 3, None),
    ];
    assert_eq!(b.complete(&rows, &leased).unwrap(), 2);
    assert_eq!(stored(&mut raw, "t2").unwrap()["result"], 2);
    assert_eq!(stored(&mut raw, "t3").unwrap()["result"], 3);
    assert_eq!(b.leased_count("w").unwrap(), 0);
    // after a flush the refused commands are resent once: one PUBLISH per record
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(&mut raw)
        .unwrap();
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut raw)
        .unwrap();
    let leased = lease_all(&b, &["c4"]);
    assert_eq!(
        b.complete(&[record("t4", "SUCCESS", 4, None)], &leased)
            .unwrap(),
        1
    );
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut raw)
        .unwrap();
    let publishes = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_publish:"))
        .unwrap();
    assert!(publishes.contains("calls=1,"), "{publishes}");
}

#[test]
fn test_redis_complete_is_one_round_trip() {
    let s = server!();
    let b = s.broker("");
    let mut raw = s.raw();
    let leased = lease_all(&b, &["c1", "c2", "c3"]);
    b.complete::<&str>(&[record("warm", "SUCCESS", 0, None)], &[])
        .unwrap(); // loads the store script
    b.ack(&["none"]).unwrap(); // and the ack script
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(&mut raw)
        .unwrap();
    let rows: Vec<ResultRow> = (0..3)
        .map(|i| record(&format!("r{i}"), "SUCCESS", i, Some(1_000)))
        .collect();
    assert_eq!(b.complete(&rows, &leased).unwrap(), 3);
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut raw)
        .unwrap();
    let evalsha = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .unwrap();
    assert!(evalsha.contains("calls=2,"), "{evalsha}"); // 1 store of all 3 + 1 ack, no SCRIPT LOAD
    assert!(!stats.contains("cmdstat_script"), "{stats}");
}

#[test]
fn test_redis_leased_tags_and_dead_letters_need_a_queue() {
    let s = server!();
    let b = s.broker("");
    b.publish("q", &envelope("t1", "q", "[]"), 0, None).unwrap();
    let got = b.fetch(&qs(&["q"]), 1, "w1").unwrap();
    assert_eq!(b.leased_tags("w1").unwrap(), tags(&got));
    assert!(b.leased_tags("nobody").unwrap().is_empty());
    assert!(matches!(b.dead_letters(None, 10), Err(Error::Config(_))));
    assert!(matches!(b.purge_dead(None), Err(Error::Config(_))));
    b.ack(&tags(&got)).unwrap();
    assert!(b.leased_tags("w1").unwrap().is_empty());
}

#[test]
fn test_redis_beat_lease_and_fenced_send() {
    use rqueue_core::transport::BeatSend;
    let s = server!();
    let b = s.broker("p:");
    let m = NewMessage {
        queue: "q".into(),
        payload: envelope("t1", "q", "x"),
        priority: 0,
        eta_ms: None,
    };
    assert_eq!(
        b.beat_send("app", "a", "e", 1000, &m).unwrap(),
        BeatSend::NotLeader
    );
    assert!(b.beat_lease("app", "a", 150).unwrap());
    assert!(!b.beat_lease("app", "b", 150).unwrap());
    assert_eq!(
        b.beat_send("app", "a", "e", 1000, &m).unwrap(),
        BeatSend::Sent
    );
    assert_eq!(
        b.beat_send("app", "a", "e", 1000, &m).unwrap(),
        BeatSend::AlreadySent
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        b.beat_send("app", "a", "e", 2000, &m).unwrap(),
        BeatSend::NotLeader
    );
    assert!(b.beat_lease("app", "b", 5000).unwrap());
    assert_eq!(
        b.beat_send("app", "b", "e", 2000, &m).unwrap(),
        BeatSend::Sent
    );
    assert_eq!(b.beat_runs("app").unwrap(), vec![("e".to_string(), 2000)]);
    assert_eq!(b.queue_length("q").unwrap(), 2);
    assert_eq!(b.beat_claim("app", "b", "e", 3000).unwrap(), BeatSend::Sent);
    assert_eq!(
        b.beat_claim("app", "b", "e", 3000).unwrap(),
        BeatSend::AlreadySent
    );
    assert_eq!(
        b.beat_claim("app", "a", "e", 4000).unwrap(),
        BeatSend::NotLeader
    );
    assert_eq!(b.queue_length("q").unwrap(), 2);
    assert!(!b.beat_release("app", "a").unwrap());
    assert!(b.beat_release("app", "b").unwrap());
    assert!(b.beat_lease("app", "a", 5000).unwrap());
}
