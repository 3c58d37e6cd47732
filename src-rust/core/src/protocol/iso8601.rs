//! ISO-8601 timestamps as Celery writes them (`eta`, `expires`): parsing to and formatting
//! from epoch milliseconds.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate, Timelike};

use crate::error::{Error, Result};

fn digits(b: &[u8], pos: &mut usize, n: usize) -> Option<u32> {
    let part = b.get(*pos..*pos + n)?;
    let mut v = 0u32;
    for &c in part {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    *pos += n;
    Some(v)
}

fn eat(b: &[u8], pos: &mut usize, c: u8) -> bool {
    if b.get(*pos) == Some(&c) {
        *pos += 1;
        true
    } else {
        false
    }
}

pub(crate) fn parse_iso(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    let mut p = 0;
    let year = digits(b, &mut p, 4)?;
    let dash = eat(b, &mut p, b'-');
    let month = digits(b, &mut p, 2)?;
    if dash && !eat(b, &mut p, b'-') {
        return None;
    }
    let day = digits(b, &mut p, 2)?;
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let (mut h, mut m, mut s, mut ms, mut offset_s) = (0, 0, 0, 0, 0i64);
    if p < b.len() {
        if !matches!(b[p], b'T' | b't' | b' ') {
            return None;
        }
        p += 1;
        h = digits(b, &mut p, 2)?;
        if eat(b, &mut p, b':') {
            m = digits(b, &mut p, 2)?;
            if eat(b, &mut p, b':') {
                s = digits(b, &mut p, 2)?;
                if eat(b, &mut p, b'.') || eat(b, &mut p, b',') {
                    let start = p;
                    while p < b.len() && b[p].is_ascii_digit() {
                        p += 1;
                    }
                    let frac = &b[start..p];
                    if frac.is_empty() {
                        return None;
                    }
                    for (i, &c) in frac.iter().take(3).enumerate() {
                        ms += u32::from(c - b'0') * [100, 10, 1][i];
                    }
                }
            }
        }
        if p < b.len() {
            let sign = match b[p] {
                b'Z' | b'z' => {
                    p += 1;
                    0
                }
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if sign != 0 {
                p += 1;
                let oh = digits(b, &mut p, 2)?;
                let colon = eat(b, &mut p, b':');
                let om = if p < b.len() {
                    digits(b, &mut p, 2)?
                } else {
                    0
                };
                let mut os = 0;
                if colon && eat(b, &mut p, b':') {
                    os = digits(b, &mut p, 2)?;
                    // Python allows microseconds in an offset; they do not change milliseconds much.
                    if eat(b, &mut p, b'.') {
                        while p < b.len() && b[p].is_ascii_digit() {
                            p += 1;
                        }
                    }
                }
                if oh > 23 || om > 59 || os > 59 {
                    return None;
                }
                offset_s = sign * i64::from(oh * 3600 + om * 60 + os);
            }
        }
        if p != b.len() {
            return None;
        }
    }
    let naive = date.and_hms_milli_opt(h, m, s, ms)?;
    Some(naive.and_utc().timestamp_millis() - offset_s * 1000)
}

/// Epoch milliseconds of an ISO-8601 timestamp; naive means UTC, `Z` and `±HH:MM` offsets are
/// honoured, fractions beyond milliseconds are truncated.
pub fn parse_iso8601_ms(text: &str) -> Result<i64> {
    parse_iso(text).ok_or_else(|| {
        Error::Decode(format!(
            "invalid ISO-8601 timestamp {text:?} (expected e.g. 2026-11-24T05:39:33.123456+00:00)"
        ))
    })
}

/// The time now as Python's `datetime.now(timezone.utc).isoformat()` writes it (a result's
/// `date_done`): microseconds, left out when zero, and `+00:00`.
pub fn now_isoformat_utc() -> String {
    utc_text(chrono::Utc::now(), false)
}

/// ISO-8601 UTC text with microseconds and `+00:00`, as Celery writes `eta`/`expires`.
/// Years outside 1..=9999 (Python's range) are an error.
pub fn format_iso8601_ms(epoch_ms: i64) -> Result<String> {
    let out_of_range = || Error::Serialize {
        type_name: format!("timestamp {epoch_ms} ms (outside years 1..=9999)"),
        path: "eta/expires".to_owned(),
        codec: "iso8601".to_owned(),
    };
    let t = chrono::DateTime::from_timestamp_millis(epoch_ms).ok_or_else(out_of_range)?;
    if !(1..=9999).contains(&t.year()) {
        return Err(out_of_range());
    }
    Ok(utc_text(t, true))
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`; the fraction always, or (as Python) unless zero.
fn utc_text(t: chrono::DateTime<chrono::Utc>, always_fraction: bool) -> String {
    let mut s = String::with_capacity(32);
    let _ = write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let micros = t.timestamp_subsec_micros();
    if always_fraction || micros != 0 {
        let _ = write!(s, ".{micros:06}");
    }
    s.push_str("+00:00");
    s
}
