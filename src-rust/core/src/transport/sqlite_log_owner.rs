//! Keeps an SQLite broker file from being read through the write-ahead log of the file it replaced.
//!
//! SQLite names a database's log and its index after the path (`<db>-wal`, `<db>-shm`), not after
//! the file. When a broker file is deleted or replaced while processes have it open, its log stays
//! under those names, and the next connection to the file now at the path reads the old file's
//! pages through it: the new file's messages hide behind the old ones, or it reads as corrupt. The
//! last old connection to close cleanly removes the log, but a process that died leaves it behind,
//! and one still running keeps using it (and removes the new file's log by name when it closes).
//!
//! So before a connection opens the file it records which file (device, inode) the log at the path
//! belongs to, in `<db>-wal-owner`. One that finds the log recorded for another file:
//! - closes this process's connections to that file (each would fail at its next call anyway);
//! - refuses to open while another process still uses that log (it holds a lock on `<db>-shm`):
//!   [`Error::Replaced`] names it, to be stopped;
//! - otherwise moves the log aside to `<db>-wal-of-<device>-<inode>` (the old file's last commits,
//!   never deleted), removes its index, and opens the file afresh.
//!
//! The record is judged and written under an exclusive lock on it, so two connections never judge
//! one log at once. This module and `doorbell` and `shm` are the only ones of the core that use
//! `unsafe` (here: `flock` and `fcntl(F_GETLK)`).
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Weak};

use crate::error::{Error, Result};

/// A file's device and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub device: u64,
    pub inode: u64,
}

impl FileIdentity {
    /// The identity of the file at `path`; `None` where it is missing or the platform has none.
    #[cfg(unix)]
    pub fn of(path: &Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileIdentity {
            device: m.dev(),
            inode: m.ino(),
        })
    }

    #[cfg(not(unix))]
    pub fn of(_path: &Path) -> Option<FileIdentity> {
        None
    }

    fn parse(text: &str) -> Option<FileIdentity> {
        let (device, inode) = text.trim().split_once(' ')?;
        Some(FileIdentity {
            device: device.parse().ok()?,
            inode: inode.parse().ok()?,
        })
    }
}

/// A connection that can be closed from outside: when its file was replaced, every call on it
/// would fail anyway, and its file's log is only freed once no connection uses it.
pub trait Closable: Send + Sync {
    fn close(&self);
}

struct Registered {
    file: FileIdentity,
    /// The process that opened it: a forked child inherits its parent's list, but not its
    /// connections (it must never close those).
    pid: u32,
    conn: Weak<dyn Closable>,
}

/// This process's open connections, by file.
static OPEN: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

fn registered() -> MutexGuard<'static, Vec<Registered>> {
    OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lists `conn`, a connection to `file`, as in use by this process (until it is dropped).
pub fn register(file: FileIdentity, conn: Weak<dyn Closable>) {
    let mut open = registered();
    open.retain(|r| r.conn.strong_count() > 0);
    open.push(Registered {
        file,
        pid: std::process::id(),
        conn,
    });
}

/// Closes this process's connections to `file`.
fn close_own(file: FileIdentity) {
    let me = std::process::id();
    // Closed outside the list's lock: a connection may be in a call that holds its own lock.
    let own: Vec<_> = registered()
        .iter()
        .filter(|r| r.file == file && r.pid == me)
        .filter_map(|r| r.conn.upgrade())
        .collect();
    for conn in own {
        conn.close();
    }
}

fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Records that the log at `db`'s path belongs to `file` (the file at that path now), after making
/// sure that no log of another file is there (see the module's comment). Call before opening
/// `db`, then [`register`] the connection.
#[cfg(unix)]
pub fn claim(db: &Path, file: FileIdentity) -> Result<()> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let io = |what: &str, e: std::io::Error| {
        Error::Connection(format!(
            "cannot {what} for SQLite broker file {}: {e}",
            db.display()
        ))
    };
    let record_path = beside(db, "-wal-owner");
    let mut record = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&record_path)
        .map_err(|e| io("open the log's owner record", e))?;
    // Released when `record` is closed, at the end of this function. (std's File::lock is newer
    // than the supported Rust.) A signal may interrupt the wait: wait again.
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(record.as_raw_fd(), libc::LOCK_EX) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io("lock the log's owner record", e));
        }
    }
    let mut text = String::new();
    // Unreadable text counts as no record: the log is then taken to be this file's own.
    let recorded = match record.read_to_string(&mut text) {
        Ok(_) => FileIdentity::parse(&text),
        Err(_) => None,
    };
    if recorded == Some(file) {
        return Ok(());
    }
    if let Some(old) = recorded {
        let log = beside(db, "-wal");
        if log.exists() {
            close_own(old);
            if let Some(pid) = still_used(db) {
                return Err(Error::Replaced(format!(
                    "the write-ahead log {} belongs to the SQLite broker file that was at this \
                     path before it was deleted or replaced, and process {pid} still uses it; \
                     opening the new file now would read it through the old one's log. Stop \
                     every process that used the old file, then start this one again",
                    log.display()
                )));
            }
            let aside = beside(db, &format!("-wal-of-{}-{}", old.device, old.inode));
            // Either may be gone already: closing the last connection can remove them.
            let gone = |r: std::io::Result<()>| match r {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            };
            gone(std::fs::rename(&log, &aside))
                .map_err(|e| io("move the replaced file's log aside", e))?;
            gone(std::fs::remove_file(beside(db, "-shm")))
                .map_err(|e| io("remove the replaced file's log index", e))?;
        }
    }
    record
        .set_len(0)
        .map_err(|e| io("write the log's owner record", e))?;
    record
        .rewind()
        .and_then(|()| writeln!(record, "{} {}", file.device, file.inode))
        .map_err(|e| io("write the log's owner record", e))
}

/// Another process (its pid) that still uses the log at `db`'s path: it holds a lock on the log's
/// index (every SQLite connection in WAL mode holds one while it is open).
#[cfg(unix)]
fn still_used(db: &Path) -> Option<u32> {
    use std::os::unix::io::AsRawFd;
    let index = std::fs::File::open(beside(db, "-shm")).ok()?;
    // SAFETY: `flock` is a plain C struct for which all-zero is a valid value.
    let mut probe: libc::flock = unsafe { std::mem::zeroed() };
    probe.l_type = libc::F_WRLCK as libc::c_short;
    probe.l_whence = libc::SEEK_SET as libc::c_short;
    probe.l_start = 0;
    probe.l_len = 0; // the whole file
                     // SAFETY: F_GETLK on a descriptor we own, writing only into `probe`; it reports a lock of
                     // another process that would conflict with a write lock on the whole file, or F_UNLCK.
    let done = unsafe { libc::fcntl(index.as_raw_fd(), libc::F_GETLK, &mut probe) };
    (done == 0 && probe.l_type != libc::F_UNLCK as libc::c_short).then_some(probe.l_pid as u32)
}
