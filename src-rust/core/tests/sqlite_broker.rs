//! Integration tests of the SQLite broker and its consumer thread, on temp files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rqueue_core::prefetch::{PrefetchBuffer, ADAPTIVE_WORK};
use rqueue_core::transport::sqlite::{Checkpoint, SqliteBroker};
use rqueue_core::transport::sqlite_checkpointer::{Checkpointer, CHECKPOINT_EVERY, RESTART_FRAMES};
use rqueue_core::transport::sqlite_consumer::{ConsumerConfig, SqliteConsumer};
use rqueue_core::transport::{now_ms, NewMessage};
use rqueue_core::Error;

fn temp_broker() -> (tempfile::TempDir, SqliteBroker) {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBroker::open(dir.path().join("broker.sqlite3"), 10_000).unwrap();
    (dir, b)
}

fn qs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn msg(queue: &str, payload: &str, priority: u8) -> NewMessage {
    NewMessage {
        queue: queue.into(),
        payload: payload.as_bytes().to_vec(),
        priority,
        eta_ms: None,
    }
}

#[test]
fn test_sqlite_publish_fetch_ack() {
    let (_d, b) = temp_broker();
    b.publish("q", b"one", 0, None).unwrap();
    b.publish("q", b"two", 0, None).unwrap();
    assert_eq!(b.queue_length("q").unwrap(), 2);
    let got = b.fetch(&qs(&["q"]), 10, "w1", 60_000).unwrap();
    assert_eq!(
        got.iter().map(|d| d.payload.as_slice()).collect::<Vec<_>>(),
        vec![b"one", b"two"]
    );
    assert!(got.iter().all(|d| d.deliveries == 1 && d.queue == "q"));
    assert_eq!(b.queue_length("q").unwrap(), 0);
    assert!(b.fetch(&qs(&["q"]), 10, "w2", 60_000).unwrap().is_empty());
    assert_eq!(
        b.ack(&got.iter().map(|d| d.tag.clone()).collect::<Vec<_>>())
            .unwrap(),
        2
    );
    assert_eq!(b.ack(&[got[0].tag.as_str()]).unwrap(), 0);
    assert_eq!(b.leased_count("w1").unwrap(), 0);
}

#[test]
fn test_sqlite_foreign_tags_are_not_found() {
    let (_dir, b) = temp_broker();
    b.publish("q", b"one", 0, None).unwrap();
    let got = b.fetch(&qs(&["q"]), 1, "w", 60_000).unwrap();
    let foreign = ["not-a-row-id", "", "9f1c0e5e-1111-4b2a-9c3d-000000000000"];
    assert_eq!(b.ack(&foreign).unwrap(), 0);
    assert_eq!(b.requeue(&foreign).unwrap(), 0);
    assert!(!b.dead_letter("nope", "x", None).unwrap());
    assert!(b.lease_of("nope").unwrap().is_none());
    assert_eq!(b.ack(&[got[0].tag.as_str()]).unwrap(), 1);
}

#[cfg(unix)]
#[test]
fn test_sqlite_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.sqlite3");
    let _b = SqliteBroker::open(&path, 1000).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn test_sqlite_priority_then_fifo_across_queues() {
    let (_d, b) = temp_broker();
    b.publish_many(&[
        msg("a", "a-p5", 5),
        msg("b", "b-p0", 0),
        msg("a", "a-p0", 0),
        msg("b", "b-p9", 9),
        msg("a", "a-p5-2", 5),
    ])
    .unwrap();
    let got = b.fetch(&qs(&["a", "b", "a"]), 4, "w", 60_000).unwrap();
    let order: Vec<_> = got
        .iter()
        .map(|d| String::from_utf8(d.payload.clone()).unwrap())
        .collect();
    // priority first across queues; within one, a message from each queue in turn
    assert_eq!(order, vec!["a-p0", "b-p0", "a-p5", "a-p5-2"]);
    assert_eq!(b.queue_length("b").unwrap(), 1);
}

#[test]
fn test_sqlite_fetch_takes_queues_in_turn() {
    let (_d, b) = temp_broker();
    let mut msgs: Vec<NewMessage> = (0..6).map(|i| msg("a", &format!("a{i}"), 0)).collect();
    msgs.push(msg("b", "b0", 0));
    msgs.push(msg("b", "b1", 0));
    b.publish_many(&msgs).unwrap();
    let payloads = |ds: Vec<rqueue_core::prefetch::Delivery>| -> Vec<String> {
        ds.into_iter()
            .map(|d| String::from_utf8(d.payload).unwrap())
            .collect()
    };
    assert_eq!(
        payloads(b.fetch(&qs(&["b", "a"]), 5, "w", 60_000).unwrap()),
        vec!["b0", "a0", "b1", "a1", "a2"]
    );
    assert_eq!(
        payloads(b.fetch(&qs(&["a", "b"]), 5, "w", 60_000).unwrap()),
        vec!["a3", "a4", "a5"]
    );
}

#[test]
fn test_sqlite_consumer_alternates_queues_with_a_prefetch_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let b = SqliteBroker::open(&path, 10_000).unwrap();
    let mut msgs: Vec<NewMessage> = (0..10).map(|i| msg("a", &format!("a{i}"), 0)).collect();
    msgs.extend((0..3).map(|i| msg("b", &format!("b{i}"), 0)));
    b.publish_many(&msgs).unwrap();
    let buffer = Arc::new(PrefetchBuffer::new(1));
    let consumer = SqliteConsumer::new(
        ConsumerConfig::new(&path, qs(&["a", "b"]), "w1"),
        Arc::clone(&buffer),
    )
    .unwrap();
    consumer.start().unwrap();
    let mut order = Vec::new();
    for _ in 0..6 {
        let d = buffer.get(Some(Duration::from_secs(5))).unwrap();
        b.ack(&[d.tag.as_str()]).unwrap();
        buffer.done(1);
        order.push(String::from_utf8(d.payload).unwrap());
    }
    consumer.stop();
    // one message per fetch, each fetch starting at the next queue: b is not left until a drains
    let from_b = order.iter().filter(|p| p.starts_with('b')).count();
    assert_eq!(from_b, 3, "{order:?}");
}

#[test]
fn test_sqlite_consumer_sends_acks_handed_to_it_and_the_last_ones_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let b = SqliteBroker::open(&path, 10_000).unwrap();
    let msgs: Vec<NewMessage> = (0..5).map(|i| msg("q", &format!("m{i}"), 0)).collect();
    b.publish_many(&msgs).unwrap();
    let buffer = Arc::new(PrefetchBuffer::new(2));
    let consumer = SqliteConsumer::new(
        ConsumerConfig::new(&path, qs(&["q"]), "w1"),
        Arc::clone(&buffer),
    )
    .unwrap();
    consumer.start().unwrap();
    for _ in 0..4 {
        let d = buffer.get(Some(Duration::from_secs(5))).unwrap();
        buffer.done(1);
        consumer.ack_later(vec![d.tag]);
    }
    assert!(consumer.settle_acks(Duration::from_secs(5)));
    let last = buffer.get(Some(Duration::from_secs(5))).unwrap();
    consumer.ack_later(vec![last.tag]);
    consumer.stop();
    assert!(b.leased_tags("w1").unwrap().is_empty());
    assert_eq!(b.queue_length("q").unwrap(), 0);
}

#[test]
fn test_sqlite_bad_priority_rejected() {
    let (_d, b) = temp_broker();
    assert!(matches!(
        b.publish("q", b"x", 10, None),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        b.publish_many(&[msg("q", "ok", 0), msg("q", "bad", 12)]),
        Err(Error::Config(_))
    ));
    assert_eq!(b.queue_length("q").unwrap(), 0);
}

#[test]
fn test_sqlite_eta_not_delivered_early() {
    let (_d, b) = temp_broker();
    b.publish("q", b"later", 0, Some(now_ms() + 300)).unwrap();
    b.publish("q", b"now", 5, None).unwrap();
    let got = b.fetch(&qs(&["q"]), 10, "w", 60_000).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"now");
    thread::sleep(Duration::from_millis(350));
    let got = b.fetch(&qs(&["q"]), 10, "w", 60_000).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"later");
}

#[test]
fn test_sqlite_requeue_keeps_place_and_count() {
    let (_d, b) = temp_broker();
    b.publish_many(&[msg("q", "1", 0), msg("q", "2", 0)])
        .unwrap();
    let got = b.fetch(&qs(&["q"]), 1, "w", 60_000).unwrap();
    assert_eq!(b.requeue(&[got[0].tag.as_str()]).unwrap(), 1);
    let again = b.fetch(&qs(&["q"]), 1, "w", 60_000).unwrap();
    assert_eq!(again[0].tag, got[0].tag);
    assert_eq!(
        again[0].deliveries, 1,
        "an unstarted delivery does not count"
    );
}

#[test]
fn test_sqlite_release_keeps_place_and_counts() {
    let (_d, b) = temp_broker();
    b.publish_many(&[msg("q", "1", 0), msg("q", "2", 0)])
        .unwrap();
    let got = b.fetch(&qs(&["q"]), 1, "w", 60_000).unwrap();
    assert_eq!(b.release(&[got[0].tag.as_str()]).unwrap(), 1);
    let again = b.fetch(&qs(&["q"]), 1, "w", 60_000).unwrap();
    assert_eq!(again[0].tag, got[0].tag);
    assert_eq!(again[0].deliveries, 2, "a rejected delivery counts");
}

#[test]
fn test_sqlite_lease_expiry_returns_message() {
    let (_d, b) = temp_broker();
    b.publish("q", b"x", 0, None).unwrap();
    let got = b.fetch(&qs(&["q"]), 1, "dead-worker", 50).unwrap();
    assert_eq!(b.sweep_expired(5).unwrap(), (0, 0));
    thread::sleep(Duration::from_millis(80));
    assert_eq!(b.sweep_expired(5).unwrap(), (1, 0));
    let again = b.fetch(&qs(&["q"]), 1, "w2", 60_000).unwrap();
    assert_eq!(again[0].tag, got[0].tag);
    assert_eq!(again[0].deliveries, 2);
}

#[test]
fn test_sqlite_extend_leases_prevents_expiry() {
    let (_d, b) = temp_broker();
    b.publish("q", b"x", 0, None).unwrap();
    let got = b.fetch(&qs(&["q"]), 1, "w", 50).unwrap();
    assert_eq!(
        b.extend_leases("w", 60_000, &[&got[0].tag]).unwrap(),
        vec![got[0].tag.clone()]
    );
    thread::sleep(Duration::from_millis(80));
    assert_eq!(b.sweep_expired(5).unwrap(), (0, 0));
    let (owner, until) = b.lease_of(&got[0].tag).unwrap().unwrap();
    assert_eq!(owner.as_deref(), Some("w"));
    assert!(until.unwrap() > now_ms() + 50_000);
}

#[test]
fn test_sqlite_extend_leases_renews_only_held_tags_and_reports_the_rest() {
    let (_d, b) = temp_broker();
    b.publish("q", b"a", 0, None).unwrap();
    b.publish("q", b"b", 0, None).unwrap();
    let got = b.fetch(&qs(&["q"]), 2, "w", 50).unwrap();
    let (held, orphan) = (&got[0].tag, &got[1].tag);
    let mut owned = b.extend_leases("w", 60_000, &[held]).unwrap();
    owned.sort();
    assert_eq!(owned, vec![held.clone(), orphan.clone()]);
    thread::sleep(Duration::from_millis(80));
    // the orphan's lease was not renewed: it expires and goes back
    assert_eq!(b.sweep_expired(5).unwrap(), (1, 0));
    assert_eq!(b.lease_of(orphan).unwrap().unwrap().0, None);
    assert_eq!(b.lease_of(held).unwrap().unwrap().0.as_deref(), Some("w"));
}

#[test]
fn test_sqlite_expired_over_limit_is_dead_lettered() {
    let (_d, b) = temp_broker();
    b.publish("q", b"poison", 0, None).unwrap();
    for round in 1..=3 {
        let got = b.fetch(&qs(&["q"]), 1, "w", 1).unwrap();
        assert_eq!(got[0].deliveries, round);
        thread::sleep(Duration::from_millis(5));
        let expected = if round < 3 { (1, 0) } else { (0, 1) };
        assert_eq!(b.sweep_expired(3).unwrap(), expected);
    }
    assert_eq!(b.queue_length("q").unwrap(), 0);
    let dead = b.dead_letters(Some("q"), 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "worker_lost");
    assert_eq!(dead[0].deliveries, 3);
    assert_eq!(dead[0].payload, b"poison");
}

#[test]
fn test_sqlite_requeue_owner() {
    let (_d, b) = temp_broker();
    b.publish_many(&[msg("q", "a", 0), msg("q", "b", 0), msg("q", "c", 0)])
        .unwrap();
    let mine = b.fetch(&qs(&["q"]), 2, "dead", 60_000).unwrap();
    let other = b.fetch(&qs(&["q"]), 1, "alive", 60_000).unwrap();
    assert_eq!(b.requeue_owner("dead", 5).unwrap(), (2, 0));
    assert_eq!(b.leased_count("alive").unwrap(), 1);
    let again = b.fetch(&qs(&["q"]), 10, "w", 60_000).unwrap();
    assert_eq!(
        again.iter().map(|d| d.tag.clone()).collect::<Vec<_>>(),
        mine.iter().map(|d| d.tag.clone()).collect::<Vec<_>>()
    );
    assert!(again.iter().all(|d| d.deliveries == 2));
    assert_ne!(other[0].tag, again[0].tag);
    // At the limit, a lost owner's message is dead-lettered instead.
    assert_eq!(b.requeue_owner("w", 2).unwrap(), (0, 2));
    assert_eq!(b.dead_letters(None, 10).unwrap().len(), 2);
}

#[test]
fn test_sqlite_dead_letter_and_requeue_dead() {
    let (_d, b) = temp_broker();
    b.publish("q", b"bad", 3, None).unwrap();
    let got = b.fetch(&qs(&["q"]), 1, "w", 60_000).unwrap();
    assert!(b
        .dead_letter(&got[0].tag, "decode_error", Some("not json"))
        .unwrap());
    assert!(!b.dead_letter(&got[0].tag, "decode_error", None).unwrap());
    let dead = b.dead_letters(None, 10).unwrap();
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].error.as_deref()),
        ("decode_error", Some("not json"))
    );
    assert!(b.dead_letters(Some("other"), 10).unwrap().is_empty());
    assert_eq!(b.requeue_dead("other", &[dead[0].id.as_str()]).unwrap(), 0);
    assert_eq!(b.requeue_dead("q", &["not-a-row-id"]).unwrap(), 0);
    assert_eq!(b.requeue_dead("q", &[dead[0].id.as_str()]).unwrap(), 1);
    assert!(b.dead_letters(None, 10).unwrap().is_empty());
    let again = b.fetch(&qs(&["q"]), 1, "w", 60_000).unwrap();
    assert_eq!(
        (again[0].payload.as_slice(), again[0].deliveries),
        (b"bad".as_slice(), 1)
    );
    b.dead_letter(&again[0].tag, "x", None).unwrap();
    assert_eq!(b.purge_dead(Some("other")).unwrap(), 0);
    assert_eq!(b.purge_dead(None).unwrap(), 1);
}

#[test]
fn test_sqlite_purge_only_waiting() {
    let (_d, b) = temp_broker();
    b.publish_many(&[msg("q", "1", 0), msg("q", "2", 0), msg("r", "3", 0)])
        .unwrap();
    let leased = b.fetch(&qs(&["q"]), 1, "w", 60_000).unwrap();
    assert_eq!(b.purge(&qs(&["q"])).unwrap(), 1);
    assert_eq!(b.queue_length("r").unwrap(), 1);
    assert_eq!(b.ack(&[leased[0].tag.as_str()]).unwrap(), 1);
}

#[test]
fn test_sqlite_ids_never_reused() {
    let (_d, b) = temp_broker();
    b.publish("q", b"1", 0, None).unwrap();
    let first = b.fetch(&qs(&["q"]), 1, "w", 60_000).unwrap();
    b.ack(&[first[0].tag.as_str()]).unwrap();
    b.publish("q", b"2", 0, None).unwrap();
    let second = b.fetch(&qs(&["q"]), 1, "w", 60_000).unwrap();
    assert!(second[0].tag.parse::<i64>().unwrap() > first[0].tag.parse::<i64>().unwrap());
}

#[test]
fn test_sqlite_concurrent_open_of_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.sqlite3");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let path = path.clone();
            thread::spawn(move || {
                let b = SqliteBroker::open(&path, 5_000).unwrap();
                b.publish("q", format!("{i}").as_bytes(), 0, None).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let b = SqliteBroker::open(&path, 5_000).unwrap();
    assert_eq!(b.queue_length("q").unwrap(), 8);
}

#[test]
fn test_sqlite_consumer_idles_after_buffer_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let b = SqliteBroker::open(&path, 10_000).unwrap();
    b.publish("q", b"x", 0, None).unwrap();
    let buffer = Arc::new(PrefetchBuffer::new(2));
    buffer.close();
    let consumer = SqliteConsumer::new(
        ConsumerConfig::new(&path, qs(&["q"]), "w"),
        Arc::clone(&buffer),
    )
    .unwrap();
    consumer.start().unwrap();
    thread::sleep(Duration::from_millis(60));
    assert_eq!(
        b.queue_length("q").unwrap(),
        1,
        "nothing leased into a closed buffer"
    );
    let start = Instant::now();
    assert!(consumer.stop().is_empty());
    assert!(start.elapsed() < Duration::from_millis(500));
}

#[test]
fn test_sqlite_concurrent_publishers_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    SqliteBroker::open(&path, 10_000).unwrap();
    const PRODUCERS: usize = 4;
    const PER: usize = 500;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let path = path.clone();
            thread::spawn(move || {
                let b = SqliteBroker::open(&path, 10_000).unwrap();
                for i in 0..PER {
                    let payload = format!("{p}-{i}");
                    if i % 2 == 0 {
                        b.publish("q", payload.as_bytes(), (i % 10) as u8, None)
                            .unwrap();
                    } else {
                        b.publish_many(&[msg("q", &payload, 0)]).unwrap();
                    }
                }
            })
        })
        .collect();
    // Two consumers with their own connections drain concurrently.
    let taken = Arc::new(AtomicUsize::new(0));
    let consumers: Vec<_> = (0..2)
        .map(|c| {
            let path = path.clone();
            let taken = Arc::clone(&taken);
            thread::spawn(move || {
                let b = SqliteBroker::open(&path, 10_000).unwrap();
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while taken.load(Ordering::SeqCst) < PRODUCERS * PER && Instant::now() < deadline {
                    let got = b.fetch(&qs(&["q"]), 50, &format!("c{c}"), 60_000).unwrap();
                    if got.is_empty() {
                        thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    b.ack(&got.iter().map(|d| d.tag.clone()).collect::<Vec<_>>())
                        .unwrap();
                    taken.fetch_add(got.len(), Ordering::SeqCst);
                    seen.extend(
                        got.into_iter()
                            .map(|d| String::from_utf8(d.payload).unwrap()),
                    );
                }
                seen
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut total = Vec::new();
    for c in consumers {
        total.extend(c.join().unwrap());
    }
    let unique: HashSet<_> = total.iter().cloned().collect();
    assert_eq!(total.len(), PRODUCERS * PER, "duplicates or losses");
    assert_eq!(unique.len(), PRODUCERS * PER);
}

#[test]
fn test_sqlite_consumer_thread_fills_buffer_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let b = SqliteBroker::open(&path, 10_000).unwrap();
    b.publish_many(
        &(0..20)
            .map(|i| msg("q", &i.to_string(), 0))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let buffer = Arc::new(PrefetchBuffer::new(5));
    let consumer = SqliteConsumer::new(
        ConsumerConfig::new(&path, qs(&["q"]), "w1"),
        Arc::clone(&buffer),
    )
    .unwrap();
    assert!(!consumer.running());
    consumer.start().unwrap();
    assert!(consumer.running());
    let first = buffer.get(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(first.payload, b"0");
    // Refills come in batches: one freed credit of five is not worth a fetch, two are. The first
    // "task" runs 10 ms: the capacity stays the configured 5 (it grows only for shorter tasks).
    thread::sleep(ADAPTIVE_WORK * 2);
    let second = buffer.get(Some(Duration::from_secs(5))).unwrap();
    b.ack(&[first.tag.as_str(), second.tag.as_str()]).unwrap();
    buffer.done(2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while buffer.len() < 5 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(buffer.len(), 5);
    assert_eq!(
        b.leased_count("w1").unwrap(),
        5,
        "never more leases than credits"
    );
    let left = consumer.stop();
    assert!(!consumer.running());
    assert_eq!(left.len(), 5);
    assert_eq!(
        b.requeue(&left.iter().map(|d| d.tag.clone()).collect::<Vec<_>>())
            .unwrap(),
        5
    );
    assert_eq!(b.queue_length("q").unwrap(), 18);
    assert_eq!(consumer.last_error(), None);
}

#[test]
fn test_sqlite_consumer_picks_up_new_work_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let b = SqliteBroker::open(&path, 10_000).unwrap();
    let buffer = Arc::new(PrefetchBuffer::new(10));
    let consumer = SqliteConsumer::new(
        ConsumerConfig::new(&path, qs(&["q"]), "w"),
        Arc::clone(&buffer),
    )
    .unwrap();
    consumer.start().unwrap();
    thread::sleep(Duration::from_millis(300)); // let the poll back off to its maximum
    let start = Instant::now();
    b.publish("q", b"hello", 0, None).unwrap();
    let d = buffer.get(Some(Duration::from_secs(5))).unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(d.payload, b"hello");
    consumer.stop();
}

#[test]
fn test_sqlite_consumer_renews_and_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let b = SqliteBroker::open(&path, 10_000).unwrap();
    b.publish_many(&[msg("q", "orphan", 0), msg("q", "long", 0)])
        .unwrap();
    // A dead worker holds "orphan" on a short lease; the sweep must hand it back.
    let orphan = b.fetch(&qs(&["q"]), 1, "dead", 30).unwrap();
    assert_eq!(orphan[0].payload, b"orphan");
    let buffer = Arc::new(PrefetchBuffer::new(1));
    let mut cfg = ConsumerConfig::new(&path, qs(&["q"]), "live");
    cfg.lease = Duration::from_millis(150);
    cfg.sweep_interval = Duration::from_millis(50);
    let consumer = SqliteConsumer::new(cfg, Arc::clone(&buffer)).unwrap();
    consumer.start().unwrap();
    let first = buffer.get(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(first.payload, b"long");
    // Hold it (a long task) for several lease periods: it must stay ours.
    thread::sleep(Duration::from_millis(500));
    let (owner, _) = b.lease_of(&first.tag).unwrap().unwrap();
    assert_eq!(owner.as_deref(), Some("live"));
    b.ack(&[first.tag.as_str()]).unwrap();
    buffer.done(1);
    // The swept message comes to us next.
    let second = buffer.get(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(second.tag, orphan[0].tag);
    assert_eq!(second.deliveries, 2);
    let left = consumer.stop();
    assert!(left.is_empty());
}

#[test]
fn test_sqlite_consumer_survives_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("broker.sqlite3");
    let buffer = Arc::new(PrefetchBuffer::new(2));
    let consumer = SqliteConsumer::new(
        ConsumerConfig::new(&path, qs(&["q"]), "w"),
        Arc::clone(&buffer),
    )
    .unwrap();
    consumer.start().unwrap();
    thread::sleep(Duration::from_millis(50));
    assert!(consumer.running());
    assert!(consumer.last_error().is_some());
    std::fs::create_dir(path.parent().unwrap()).unwrap();
    let b = SqliteBroker::open(&path, 10_000).unwrap();
    b.publish("q", b"x", 0, None).unwrap();
    assert!(buffer.get(Some(Duration::from_secs(5))).is_some());
    consumer.stop();
}

/// Throughput of publish_many + fetch(100) + ack(batch). Run with
/// `cargo test -p rqueue-core --profile dev-release --test sqlite_broker -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_sqlite_drain() {
    let (_d, b) = temp_broker();
    const N: usize = 100_000;
    let payload = vec![b'x'; 200];
    let start = Instant::now();
    for chunk in 0..(N / 1000) {
        let batch: Vec<NewMessage> = (0..1000)
            .map(|_| NewMessage {
                queue: "q".into(),
                payload: payload.clone(),
                priority: (chunk % 3) as u8,
                eta_ms: None,
            })
            .collect();
        b.publish_many(&batch).unwrap();
    }
    let published = start.elapsed();
    let mut drained = 0;
    let q = qs(&["q"]);
    while drained < N {
        let got = b.fetch(&q, 100, "bench", 60_000).unwrap();
        assert!(!got.is_empty());
        drained += got.len();
        b.ack(&got.iter().map(|d| d.tag.clone()).collect::<Vec<_>>())
            .unwrap();
    }
    let total = start.elapsed();
    println!(
        "publish_many: {:.0} msg/s; fetch+ack: {:.0} msg/s; end to end: {:.0} msg/s",
        N as f64 / published.as_secs_f64(),
        N as f64 / (total - published).as_secs_f64(),
        N as f64 / total.as_secs_f64()
    );
}

#[test]
fn test_sqlite_revoked_ids_are_listed_until_they_expire() {
    let (_dir, b) = temp_broker();
    let before = now_ms();
    b.revoke(&qs(&["a", "b"]), now_ms() + 60_000).unwrap();
    b.revoke(&qs(&["gone"]), now_ms() - 1).unwrap();
    let mut ids: Vec<String> = b
        .revoked_since(before)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["a".to_string(), "b".to_string()]);
    assert!(b.revoked_since(now_ms() + 1_000).unwrap().is_empty());
}

#[test]
fn test_sqlite_results_success_is_final_and_expired_is_gone() {
    use rqueue_core::transport::ResultRow;
    let (_dir, b) = temp_broker();
    let row = |id: &str, status: &str, payload: &str, ttl_ms: Option<u64>| ResultRow {
        task_id: id.into(),
        status: status.into(),
        content_type: "application/json".into(),
        payload: payload.as_bytes().to_vec(),
        ttl_ms,
    };
    b.store_results(&[
        row("t1", "SUCCESS", "1", None),
        row("t2", "SUCCESS", "2", Some(0)),
        row("t3", "SUCCESS", "3", Some(60_000)),
    ])
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2)); // t2's time to live runs out
    b.store_results(&[row("t1", "FAILURE", "late", None)])
        .unwrap();
    let (ct, payload) = b.read_result("t1").unwrap().unwrap();
    assert_eq!(
        (ct.as_str(), payload.as_slice()),
        ("application/json", b"1".as_slice())
    );
    assert!(b.read_result("t2").unwrap().is_none());
    assert!(b.read_result("t3").unwrap().is_some());
    assert!(b.delete_result("t1").unwrap());
    assert!(b.read_result("t1").unwrap().is_none());
}

#[test]
fn test_sqlite_mailbox_reads_posts_after_an_id_per_channel_until_they_expire() {
    let (_dir, b) = temp_broker();
    assert_eq!(b.mailbox_last_id().unwrap(), 0);
    let first = b.mailbox_post("pidbox", b"one", now_ms() + 60_000).unwrap();
    let start = b.mailbox_last_id().unwrap();
    assert_eq!(start, first);
    let second = b.mailbox_post("pidbox", b"two", now_ms() + 60_000).unwrap();
    b.mailbox_post("reply.t1", b"r1", now_ms() + 60_000)
        .unwrap();
    b.mailbox_post("pidbox", b"stale", now_ms() - 1).unwrap();

    let read = b.mailbox_read("pidbox", start).unwrap();
    assert_eq!(read, vec![(second, b"two".to_vec())]);
    assert_eq!(b.mailbox_read("pidbox", 0).unwrap().len(), 2);
    assert_eq!(b.mailbox_read("reply.t1", 0).unwrap()[0].1, b"r1".to_vec());
    assert!(b.mailbox_read("reply.other", 0).unwrap().is_empty());
}

#[test]
fn test_sqlite_chord_counts_each_member_once_and_claims_once() {
    let (_d, b) = temp_broker();
    // A member that finishes before the sender set the size is counted, but nobody claims yet.
    let early = b
        .chord_part_return("g", "t0:0", 0.0, b"r0", Some(60_000), "w1", 10_000)
        .unwrap()
        .unwrap();
    assert_eq!((early.ready, early.total, early.claimed), (1, None, false));
    b.chord_set_size("g", 3, Some(60_000)).unwrap();
    // A redelivered member that ran again: still one result.
    let dup = b
        .chord_part_return("g", "t0:0", 0.0, b"r0-again", Some(60_000), "w1", 10_000)
        .unwrap()
        .unwrap();
    assert_eq!((dup.ready, dup.total, dup.claimed), (1, Some(3), false));
    b.chord_part_return("g", "t2:2", 2.0, b"r2", Some(60_000), "w2", 10_000)
        .unwrap();
    let last = b
        .chord_part_return("g", "t1:1", 1.0, b"r1", Some(60_000), "w3", 10_000)
        .unwrap()
        .unwrap();
    assert!(last.claimed);
    assert_eq!(
        b.chord_parts("g").unwrap(),
        vec![b"r0".to_vec(), b"r1".to_vec(), b"r2".to_vec()]
    );
    // A late duplicate while the claim is held: complete, but not claimed again.
    let held = b
        .chord_part_return("g", "t1:1", 1.0, b"r1", Some(60_000), "w4", 10_000)
        .unwrap()
        .unwrap();
    assert!(!held.claimed);
    assert!(!b.chord_renew_claim("g", "w4", 10_000).unwrap());
    assert!(b.chord_renew_claim("g", "w3", 10_000).unwrap());
    assert!(!b.chord_done("g", "w4", 60_000).unwrap());
    assert!(b.chord_done("g", "w3", 60_000).unwrap());
    assert!(b.chord_parts("g").unwrap().is_empty());
    // Done: a late duplicate changes nothing.
    assert_eq!(
        b.chord_part_return("g", "t1:1", 1.0, b"r1", Some(60_000), "w5", 10_000)
            .unwrap(),
        None
    );
}

#[test]
fn test_sqlite_chord_claim_lapses_for_a_crashed_claimer() {
    let (_d, b) = temp_broker();
    b.chord_set_size("g", 1, None).unwrap();
    let first = b
        .chord_part_return("g", "t0:0", 0.0, b"r0", None, "dead", 0)
        .unwrap()
        .unwrap();
    assert!(first.claimed);
    thread::sleep(Duration::from_millis(5));
    // The member is delivered again (its worker died before firing the body): it may claim now.
    let again = b
        .chord_part_return("g", "t0:0", 0.0, b"r0", None, "alive", 10_000)
        .unwrap()
        .unwrap();
    assert!(again.claimed);
    b.chord_add("g", 1).unwrap();
    assert!(b.chord_renew_claim("g", "alive", 10_000).unwrap());
}

#[test]
fn test_sqlite_chord_claim_is_kept_by_its_holder() {
    let (_d, b) = temp_broker();
    b.chord_set_size("g", 1, None).unwrap();
    let first = b
        .chord_part_return("g", "t0:0", 0.0, b"r0", None, "me", 10_000)
        .unwrap()
        .unwrap();
    assert!(first.claimed);
    // The same process counting again (its flush was retried) still holds the claim; others do not.
    let again = b
        .chord_part_return("g", "t0:0", 0.0, b"r0", None, "me", 10_000)
        .unwrap()
        .unwrap();
    assert!(again.claimed);
    let other = b
        .chord_part_return("g", "t0:0", 0.0, b"r0", None, "other", 10_000)
        .unwrap()
        .unwrap();
    assert!(!other.claimed);
}

#[test]
fn test_sqlite_file_deleted_or_replaced_fails_loudly_and_the_consumer_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.sqlite3");
    let b = SqliteBroker::open(&path, 5_000).unwrap();
    b.publish("q", b"before", 0, None).unwrap();
    let buffer = Arc::new(PrefetchBuffer::new(4));
    let mut cfg = ConsumerConfig::new(&path, qs(&["q"]), "c1");
    cfg.poll_max = Duration::from_millis(5);
    let c = SqliteConsumer::new(cfg, Arc::clone(&buffer)).unwrap();
    c.start().unwrap();
    assert!(buffer.get(Some(Duration::from_secs(5))).is_some());
    // replaced: another file renamed over the path (as a restore from backup does)
    let other = dir.path().join("other.sqlite3");
    drop(SqliteBroker::open(&other, 5_000).unwrap());
    std::fs::rename(&other, &path).unwrap();
    let err = b.publish("q", b"lost?", 0, None).unwrap_err();
    assert!(matches!(err, Error::Replaced(_)), "{err}");
    assert!(err.to_string().contains("deleted or replaced"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.running() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !c.running(),
        "the consumer must stop, not consume another file"
    );
    assert!(c.last_error().unwrap().contains("deleted or replaced"));
    // deleted: also refused
    let b2 = SqliteBroker::open(&path, 5_000).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(b2.queue_length("q"), Err(Error::Replaced(_))));
}

#[test]
fn test_sqlite_file_at_a_replaced_path_is_never_read_through_the_old_files_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.sqlite3");
    let old = SqliteBroker::open(&path, 5_000).unwrap();
    for _ in 0..50 {
        old.publish("old", &[b'x'; 2_000], 0, None).unwrap(); // in the old file's log
    }
    let other = dir.path().join("other.sqlite3");
    let restored = SqliteBroker::open(&other, 5_000).unwrap();
    restored.publish("q", b"restored", 0, None).unwrap();
    drop(restored); // the last connection: its log is folded in and removed
    std::fs::rename(&other, &path).unwrap();
    // opening the new file closes this process's connection to the old one (which has not noticed
    // yet), then reads the new file as it is, not through the old file's log
    let new = SqliteBroker::open(&path, 5_000).unwrap();
    assert!(matches!(old.queue_length("old"), Err(Error::Replaced(_))));
    assert_eq!(new.queue_length("old").unwrap(), 0);
    let got = new.fetch(&qs(&["q"]), 10, "w", 60_000).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"restored");
    // and it stays so for the next connection (the log now at the path is the new file's)
    let next = SqliteBroker::open(&path, 5_000).unwrap();
    assert_eq!(next.leased_count("w").unwrap(), 1);
}

#[test]
fn test_sqlite_beat_lease_is_held_by_one_token_until_it_lapses() {
    let (_d, b) = temp_broker();
    assert!(b.beat_lease("app", "a", 200).unwrap());
    assert!(!b.beat_lease("app", "b", 200).unwrap());
    assert!(b.beat_lease("app", "a", 200).unwrap()); // renewed by its holder
    assert!(b.beat_lease("other", "b", 200).unwrap()); // schedules are independent
    thread::sleep(Duration::from_millis(250));
    assert!(b.beat_lease("app", "b", 200).unwrap()); // lapsed: taken over
    assert!(!b.beat_release("app", "a").unwrap());
    assert!(b.beat_release("app", "b").unwrap());
    assert!(b.beat_lease("app", "a", 200).unwrap()); // released: free at once
}

#[test]
fn test_sqlite_beat_send_is_fenced_by_the_lease_and_the_last_tick() {
    use rqueue_core::transport::BeatSend;
    let (_d, b) = temp_broker();
    let m = msg("q", "tick", 0);
    assert_eq!(
        b.beat_send("app", "a", "e", 1000, &m).unwrap(),
        BeatSend::NotLeader
    );
    assert!(b.beat_lease("app", "a", 150).unwrap());
    assert_eq!(
        b.beat_send("app", "a", "e", 1000, &m).unwrap(),
        BeatSend::Sent
    );
    assert_eq!(
        b.beat_send("app", "a", "e", 1000, &m).unwrap(),
        BeatSend::AlreadySent
    );
    assert_eq!(
        b.beat_send("app", "a", "e", 999, &m).unwrap(),
        BeatSend::AlreadySent
    );
    assert_eq!(
        b.beat_send("app", "a", "f", 1000, &m).unwrap(),
        BeatSend::Sent
    );
    thread::sleep(Duration::from_millis(200));
    // The lease lapsed: the old holder is refused even before anyone else takes it.
    assert_eq!(
        b.beat_send("app", "a", "e", 2000, &m).unwrap(),
        BeatSend::NotLeader
    );
    assert!(b.beat_lease("app", "b", 5000).unwrap());
    assert_eq!(
        b.beat_send("app", "a", "e", 2000, &m).unwrap(),
        BeatSend::NotLeader
    );
    assert_eq!(
        b.beat_send("app", "b", "e", 2000, &m).unwrap(),
        BeatSend::Sent
    );
    let mut runs = b.beat_runs("app").unwrap();
    runs.sort();
    assert_eq!(runs, vec![("e".to_string(), 2000), ("f".to_string(), 1000)]);
    assert_eq!(b.queue_length("q").unwrap(), 3);
    // A claim records the tick under the same checks, and publishes nothing.
    assert_eq!(b.beat_claim("app", "b", "e", 3000).unwrap(), BeatSend::Sent);
    assert_eq!(
        b.beat_claim("app", "b", "e", 3000).unwrap(),
        BeatSend::AlreadySent
    );
    assert_eq!(
        b.beat_claim("app", "a", "e", 4000).unwrap(),
        BeatSend::NotLeader
    );
    assert_eq!(b.queue_length("q").unwrap(), 3);
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Publishes, fetches and acks `n` messages one transaction each (a few log frames apiece).
fn churn(b: &SqliteBroker, n: usize) {
    for i in 0..n {
        b.publish("q", format!("message {i}").as_bytes(), 0, None)
            .unwrap();
        let got = b.fetch(&qs(&["q"]), 1, "w", 60_000).unwrap();
        assert_eq!(b.ack(&[got[0].tag.as_str()]).unwrap(), 1);
    }
}

#[test]
fn test_sqlite_checkpointer_copies_the_log_into_the_database_behind_the_writers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let b = SqliteBroker::open(&path, 10_000).unwrap();
    let big = vec![b'x'; 64 * 1024];
    for _ in 0..20 {
        b.publish("q", &big, 0, None).unwrap(); // ~1.3 MB of log: commits do not checkpoint it
    }
    let before = file_len(&path);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(file_len(&path), before, "nothing else checkpoints");
    let _checkpointer = Checkpointer::start(SqliteBroker::open(&path, 10_000).unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while file_len(&path) < before + 20 * big.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the log was not copied into the database"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(b.queue_length("q").unwrap(), 20);
}

#[test]
fn test_sqlite_checkpointer_restarts_a_long_log_before_commits_would_checkpoint_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let b = SqliteBroker::open(&path, 10_000).unwrap();
    let _checkpointer = Checkpointer::start(SqliteBroker::open(&path, 10_000).unwrap());
    let wal = dir.path().join("broker.sqlite3-wal");
    let restart_bytes = RESTART_FRAMES as u64 * 4096;
    let mut longest = 0;
    // ~40 MiB of log in all (~0.4 MiB a slice), in slices the thread follows.
    for _ in 0..100 {
        churn(&b, 10);
        longest = longest.max(file_len(&wal));
        thread::sleep(CHECKPOINT_EVERY);
    }
    // Without the thread the log reaches 8,192 pages (32 MiB), where commits checkpoint it.
    assert!(
        longest < restart_bytes * 5 / 4,
        "the log grew to {longest} bytes"
    );
}

#[test]
fn test_sqlite_restart_checkpoint_gives_up_on_a_reader_that_stays_instead_of_holding_writers_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let b = SqliteBroker::open(&path, 10_000).unwrap();
    churn(&b, 20);
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    let started = Instant::now();
    assert_eq!(b.checkpoint(Checkpoint::Restart).unwrap(), None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it waited {:?}",
        started.elapsed()
    );
    churn(&b, 1); // writers go on
    reader.execute_batch("COMMIT").unwrap();
    assert!(b.checkpoint(Checkpoint::Restart).unwrap().is_some());
}
