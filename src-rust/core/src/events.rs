//! Celery's task events written as JSON straight into a batch: what a worker process sends for
//! each task (`task-received`, `-started`, `-succeeded` ...) costs one append here instead of a
//! dict and a serializer pass. A batch is the body of one `task.multi` message: a JSON list of
//! event objects, each with the common fields (`type`, `hostname`, `utcoffset`, `pid`, `clock`,
//! `timestamp`) and Celery's own fields of its type.

use crate::jsonw::{write_bool, write_f64, write_i64, write_opt_str, write_str, write_u64};
use crate::protocol::format_iso8601_ms;

/// The fields of a `task-received` event, read from the task's message.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub uuid: &'a str,
    pub name: &'a str,
    pub args: &'a str,
    pub kwargs: &'a str,
    pub root_id: Option<&'a str>,
    pub parent_id: Option<&'a str>,
    pub retries: i64,
    pub eta_ms: Option<i64>,
    pub expires_ms: Option<i64>,
}

/// Task events queued for one publish, with the node's common fields and the Lamport clock.
#[derive(Debug)]
pub struct TaskEventBatch {
    buf: Vec<u8>,
    count: usize,
    /// `,"hostname":"...","pid":N,"utcoffset":` rendered once (the offset itself may change).
    common: Vec<u8>,
    utcoffset_h: f64,
    clock: u64,
}

impl TaskEventBatch {
    /// A batch for node `hostname`, whose events say `pid` and `utcoffset_h` (hours west of UTC).
    pub fn new(hostname: &str, pid: u32, utcoffset_h: f64) -> Self {
        let mut common = Vec::with_capacity(hostname.len() + 48);
        common.extend_from_slice(b",\"hostname\":");
        write_str(&mut common, hostname);
        common.extend_from_slice(b",\"pid\":");
        write_u64(&mut common, u64::from(pid));
        common.extend_from_slice(b",\"utcoffset\":");
        TaskEventBatch {
            buf: Vec::with_capacity(4096),
            count: 0,
            common,
            utcoffset_h,
            clock: 0,
        }
    }

    /// Change the `utcoffset` of the events appended from now on (daylight saving).
    pub fn set_utcoffset(&mut self, hours: f64) {
        self.utcoffset_h = hours;
    }

    /// Events waiting in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The Lamport clock of the last event appended.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The batch as a JSON list, and how many events it holds; the batch is empty afterwards.
    pub fn take(&mut self) -> Option<(Vec<u8>, usize)> {
        if self.count == 0 {
            return None;
        }
        let mut out = std::mem::replace(&mut self.buf, Vec::with_capacity(4096));
        out.push(b']');
        let count = std::mem::take(&mut self.count);
        Some((out, count))
    }

    /// Opens an event object: the list's separator, then every field but the type's own.
    fn open(&mut self, kind: &str, uuid: &str, timestamp: f64) {
        self.buf.push(if self.count == 0 { b'[' } else { b',' });
        self.count += 1;
        self.clock += 1;
        self.buf.extend_from_slice(b"{\"type\":");
        write_str(&mut self.buf, kind);
        self.buf.extend_from_slice(b",\"uuid\":");
        write_str(&mut self.buf, uuid);
        self.buf.extend_from_slice(&self.common);
        write_f64(&mut self.buf, self.utcoffset_h);
        self.buf.extend_from_slice(b",\"clock\":");
        write_u64(&mut self.buf, self.clock);
        self.buf.extend_from_slice(b",\"timestamp\":");
        write_f64(&mut self.buf, timestamp);
    }

    fn field(&mut self, name: &str) {
        self.buf.push(b',');
        write_str(&mut self.buf, name);
        self.buf.push(b':');
    }

    fn str_field(&mut self, name: &str, value: &str) {
        self.field(name);
        write_str(&mut self.buf, value);
    }

    fn time_field(&mut self, name: &str, epoch_ms: Option<i64>) {
        self.field(name);
        // A time outside Python's years cannot be in a message Python sent: shown as null.
        let text = epoch_ms.and_then(|ms| format_iso8601_ms(ms).ok());
        write_opt_str(&mut self.buf, text.as_deref());
    }

    pub fn received(&mut self, r: &Received<'_>, timestamp: f64) {
        self.open("task-received", r.uuid, timestamp);
        self.str_field("name", r.name);
        self.str_field("args", r.args);
        self.str_field("kwargs", r.kwargs);
        self.field("root_id");
        write_opt_str(&mut self.buf, r.root_id);
        self.field("parent_id");
        write_opt_str(&mut self.buf, r.parent_id);
        self.field("retries");
        write_i64(&mut self.buf, r.retries);
        self.time_field("eta", r.eta_ms);
        self.time_field("expires", r.expires_ms);
        self.buf.push(b'}');
    }

    pub fn started(&mut self, uuid: &str, timestamp: f64) {
        self.open("task-started", uuid, timestamp);
        self.buf.push(b'}');
    }

    pub fn succeeded(&mut self, uuid: &str, result: &str, runtime_s: f64, timestamp: f64) {
        self.open("task-succeeded", uuid, timestamp);
        self.str_field("result", result);
        self.field("runtime");
        write_f64(&mut self.buf, runtime_s);
        self.buf.push(b'}');
    }

    /// `task-failed` or `task-retried` (`kind`): the exception's repr and its traceback.
    pub fn failed(
        &mut self,
        kind: &str,
        uuid: &str,
        exception: &str,
        traceback: &str,
        timestamp: f64,
    ) {
        self.open(kind, uuid, timestamp);
        self.str_field("exception", exception);
        self.str_field("traceback", traceback);
        self.buf.push(b'}');
    }

    pub fn revoked(&mut self, uuid: &str, terminated: bool, expired: bool, timestamp: f64) {
        self.open("task-revoked", uuid, timestamp);
        self.field("terminated");
        write_bool(&mut self.buf, terminated);
        self.buf.extend_from_slice(b",\"signum\":null");
        self.field("expired");
        write_bool(&mut self.buf, expired);
        self.buf.push(b'}');
    }

    pub fn rejected(&mut self, uuid: &str, requeue: bool, timestamp: f64) {
        self.open("task-rejected", uuid, timestamp);
        self.field("requeue");
        write_bool(&mut self.buf, requeue);
        self.buf.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn batch() -> TaskEventBatch {
        TaskEventBatch::new("w1@host \"q\"", 42, -2.0)
    }

    #[test]
    fn events_are_a_json_list_with_the_common_fields() {
        let mut b = batch();
        assert!(b.take().is_none());
        let r = Received {
            uuid: "id-1",
            name: "tasks.add",
            args: "(1, 2)",
            kwargs: "{}",
            root_id: Some("id-1"),
            parent_id: None,
            retries: 0,
            eta_ms: Some(0),
            expires_ms: None,
        };
        b.received(&r, 1.5);
        b.started("id-1", 1.75);
        b.succeeded("id-1", "3", 0.25, 2.0);
        assert_eq!(b.len(), 3);
        assert_eq!(b.clock(), 3);
        let (body, n) = b.take().unwrap();
        assert_eq!(n, 3);
        assert!(b.is_empty());
        let v: Value = serde_json::from_slice(&body).unwrap();
        let common = |kind: &str, clock: u64, ts: f64| {
            json!({"type": kind, "uuid": "id-1", "hostname": "w1@host \"q\"", "pid": 42,
                   "utcoffset": -2.0, "clock": clock, "timestamp": ts})
        };
        let mut received = common("task-received", 1, 1.5);
        let extra = json!({"name": "tasks.add", "args": "(1, 2)", "kwargs": "{}", "root_id": "id-1",
                           "parent_id": null, "retries": 0,
                           "eta": "1970-01-01T00:00:00.000000+00:00", "expires": null});
        received
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let mut succeeded = common("task-succeeded", 3, 2.0);
        succeeded.as_object_mut().unwrap().extend(
            json!({"result": "3", "runtime": 0.25})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(
            v,
            json!([received, common("task-started", 2, 1.75), succeeded])
        );
    }

    #[test]
    fn failure_revoke_and_reject_fields() {
        let mut b = batch();
        b.failed("task-failed", "a", "ValueError('x')", "Traceback...\n", 1.0);
        b.failed("task-retried", "a", "IOError()", "", 1.0);
        b.revoked("b", true, false, 1.0);
        b.rejected("c", true, 1.0);
        b.set_utcoffset(1.0);
        b.started("d", 1.0);
        let (body, n) = b.take().unwrap();
        assert_eq!(n, 5);
        let v: Vec<Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(v[0]["exception"], "ValueError('x')");
        assert_eq!(v[0]["traceback"], "Traceback...\n");
        assert_eq!(v[1]["type"], "task-retried");
        assert_eq!(
            (&v[2]["terminated"], &v[2]["expired"], &v[2]["signum"]),
            (&json!(true), &json!(false), &Value::Null)
        );
        assert_eq!(v[3]["requeue"], true);
        assert_eq!(v[4]["utcoffset"], 1.0);
        assert_eq!(v[4]["clock"], 5);
    }
}
