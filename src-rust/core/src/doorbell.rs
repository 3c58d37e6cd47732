//! Cross-process doorbells beside an SQLite file: a process that committed new messages (or
//! results) rings; processes waiting for them wake at once instead of at their next poll.
//!
//! A bell is a pair of 32-bit words in a small file (`<database>-wake`, mode 0600) that every
//! process maps shared: a sequence number, bumped by each ring, and how many processes wait. A
//! waiter reads the sequence *before* it looks for work, then sleeps in `futex(FUTEX_WAIT)` only
//! while the sequence is still what it read, so a ring in between is never lost. A ring costs an
//! atomic add, plus a `FUTEX_WAKE` system call only when someone waits. Linux only: elsewhere
//! `Doorbells::open` gives `None` and callers poll as before. Like `shm` and `sqlite_log_owner`,
//! this module is allowed `unsafe` (mmap and futex).
#![allow(unsafe_code)]

use std::path::Path;
use std::time::Duration;

/// What a bell announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bell {
    /// Messages became available (published, returned, restored).
    Messages = 0,
    /// Results were stored.
    Results = 1,
}

/// The bells of one SQLite file, mapped into this process.
pub struct Doorbells {
    #[cfg(target_os = "linux")]
    words: std::ptr::NonNull<std::sync::atomic::AtomicU32>,
}

// SAFETY: the mapping is only accessed through AtomicU32s, which are Sync.
#[cfg(target_os = "linux")]
unsafe impl Send for Doorbells {}
#[cfg(target_os = "linux")]
unsafe impl Sync for Doorbells {}

impl std::fmt::Debug for Doorbells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Doorbells")
    }
}

/// Size of the file and the mapping: one page.
#[cfg(target_os = "linux")]
const MAP_BYTES: usize = 4096;

#[cfg(target_os = "linux")]
impl Doorbells {
    /// Maps (creating if needed) the bells of the database at `db`; `None` when that fails (a
    /// read-only directory, say): the caller then polls.
    pub fn open(db: &Path) -> Option<Doorbells> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        let mut path = db.as_os_str().to_owned();
        path.push("-wake");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .ok()?;
        // Growing a file with set_len fills it with zeros: valid words. Never shrink it.
        if file.metadata().ok()?.len() < MAP_BYTES as u64 {
            file.set_len(MAP_BYTES as u64).ok()?;
        }
        // SAFETY: a new shared mapping of a file we opened read-write and sized to MAP_BYTES; no
        // memory of this process is touched. The mapping outlives the descriptor (closed on drop).
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        // mmap returns page-aligned memory, aligned for AtomicU32.
        let words = std::ptr::NonNull::new(raw.cast::<std::sync::atomic::AtomicU32>())?;
        Some(Doorbells { words })
    }

    fn word(&self, index: usize) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: index < 4 words of a MAP_BYTES mapping that lives until drop.
        unsafe { &*self.words.as_ptr().add(index) }
    }

    fn sequence(&self, bell: Bell) -> &std::sync::atomic::AtomicU32 {
        self.word(bell as usize * 2)
    }

    fn waiters(&self, bell: Bell) -> &std::sync::atomic::AtomicU32 {
        self.word(bell as usize * 2 + 1)
    }

    /// The bell's sequence number: read it before looking for work, pass it to `wait`.
    pub fn seen(&self, bell: Bell) -> u32 {
        self.sequence(bell)
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wakes every process waiting on `bell`.
    pub fn ring(&self, bell: Bell) {
        use std::sync::atomic::Ordering::SeqCst;
        self.sequence(bell).fetch_add(1, SeqCst);
        if self.waiters(bell).load(SeqCst) > 0 {
            // SAFETY: FUTEX_WAKE on a word of our shared mapping; it only reads the address.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.sequence(bell).as_ptr(),
                    libc::FUTEX_WAKE,
                    i32::MAX,
                );
            }
        }
    }

    /// Sleeps until `bell` rings after `seen` was read, or `timeout` passes (a signal may end
    /// it early too; callers look for work again either way).
    pub fn wait(&self, bell: Bell, seen: u32, timeout: Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        self.waiters(bell).fetch_add(1, SeqCst);
        if self.sequence(bell).load(SeqCst) == seen {
            let ts = libc::timespec {
                tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
            };
            // SAFETY: FUTEX_WAIT on a word of our shared mapping with a valid relative timeout;
            // the kernel re-checks the word's value against `seen` before sleeping.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.sequence(bell).as_ptr(),
                    libc::FUTEX_WAIT,
                    seen,
                    &ts as *const libc::timespec,
                );
            }
        }
        self.waiters(bell).fetch_sub(1, SeqCst);
    }
}

#[cfg(target_os = "linux")]
impl Drop for Doorbells {
    fn drop(&mut self) {
        // SAFETY: unmaps this process's view of the mapping made in `open`.
        unsafe {
            libc::munmap(self.words.as_ptr().cast(), MAP_BYTES);
        }
    }
}

#[cfg(not(target_os = "linux"))]
impl Doorbells {
    pub fn open(_db: &Path) -> Option<Doorbells> {
        None
    }
    pub fn seen(&self, _bell: Bell) -> u32 {
        0
    }
    pub fn ring(&self, _bell: Bell) {}
    pub fn wait(&self, _bell: Bell, _seen: u32, timeout: Duration) {
        std::thread::sleep(timeout);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn test_a_ring_wakes_a_waiter_of_another_mapping_and_none_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("b.sqlite3");
        let a = Doorbells::open(&db).unwrap();
        let b = Doorbells::open(&db).unwrap();
        // a ring between reading the sequence and waiting is not lost
        let seen = b.seen(Bell::Messages);
        a.ring(Bell::Messages);
        let began = Instant::now();
        b.wait(Bell::Messages, seen, Duration::from_secs(10));
        assert!(began.elapsed() < Duration::from_secs(5));
        // a waiter is woken by a ring from elsewhere; the other bell does not wake it
        let seen = b.seen(Bell::Messages);
        let waiter = std::thread::spawn(move || {
            b.wait(Bell::Messages, seen, Duration::from_secs(10));
            b.seen(Bell::Messages)
        });
        std::thread::sleep(Duration::from_millis(100));
        a.ring(Bell::Results);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished());
        a.ring(Bell::Messages);
        assert_eq!(waiter.join().unwrap(), seen.wrapping_add(1));
        // nobody rings: the timeout ends the wait
        let c = Doorbells::open(&db).unwrap();
        let began = Instant::now();
        c.wait(
            Bell::Results,
            c.seen(Bell::Results),
            Duration::from_millis(50),
        );
        assert!(began.elapsed() >= Duration::from_millis(40));
    }
}
