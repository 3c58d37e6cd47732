//! Zeroed words of memory shared with child processes forked later.
//!
//! On Unix the words live in an anonymous `MAP_SHARED` mapping, so a process and every child it
//! forks afterwards see (and atomically update) the same memory. Elsewhere (no `fork`) they are
//! ordinary heap memory. This module, `doorbell` and `sqlite_log_owner` are the only ones of the
//! core that use `unsafe`.
#![allow(unsafe_code)]

use std::sync::atomic::AtomicU64;

#[cfg(unix)]
use crate::error::Error;
use crate::error::Result;

/// A fixed number of `AtomicU64` words, zero at creation, shared over `fork`.
pub struct SharedWords {
    #[cfg(unix)]
    ptr: std::ptr::NonNull<AtomicU64>,
    #[cfg(not(unix))]
    words: Box<[AtomicU64]>,
    len: usize,
}

// SAFETY: the memory is only ever accessed through `AtomicU64`s, which are Sync.
#[cfg(unix)]
unsafe impl Send for SharedWords {}
#[cfg(unix)]
unsafe impl Sync for SharedWords {}

impl std::fmt::Debug for SharedWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWords")
            .field("len", &self.len)
            .finish()
    }
}

impl SharedWords {
    /// Maps `len` zeroed words (at least 1).
    pub fn new(len: usize) -> Result<Self> {
        let len = len.max(1);
        #[cfg(unix)]
        {
            let bytes = len
                .checked_mul(std::mem::size_of::<AtomicU64>())
                .ok_or_else(|| {
                    Error::Config(format!("shared memory of {len} words is too large"))
                })?;
            // SAFETY: a fresh anonymous mapping; no existing memory is touched.
            let raw = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANON,
                    -1,
                    0,
                )
            };
            if raw == libc::MAP_FAILED {
                return Err(Error::Config(format!(
                    "cannot map {bytes} bytes of shared memory: {}",
                    std::io::Error::last_os_error()
                )));
            }
            // mmap returns page-aligned memory (enough for AtomicU64) filled with zeros (a valid
            // AtomicU64 value).
            let ptr = std::ptr::NonNull::new(raw.cast::<AtomicU64>())
                .ok_or_else(|| Error::Config("mmap returned a null pointer".into()))?;
            Ok(SharedWords { ptr, len })
        }
        #[cfg(not(unix))]
        {
            let words: Box<[AtomicU64]> = (0..len).map(|_| AtomicU64::new(0)).collect();
            Ok(SharedWords { words, len })
        }
    }

    pub fn words(&self) -> &[AtomicU64] {
        #[cfg(unix)]
        {
            // SAFETY: `ptr` points at `len` initialised AtomicU64s that live until `drop`.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }
        #[cfg(not(unix))]
        {
            &self.words
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(unix)]
impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: unmaps this process's view of the mapping made in `new`; other processes keep theirs.
        unsafe {
            libc::munmap(
                self.ptr.as_ptr().cast(),
                self.len * std::mem::size_of::<AtomicU64>(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn test_shared_words_start_zeroed_and_update() {
        let w = SharedWords::new(1000).unwrap();
        assert_eq!(w.len(), 1000);
        assert!(w.words().iter().all(|x| x.load(Ordering::SeqCst) == 0));
        w.words()[999].fetch_add(7, Ordering::SeqCst);
        assert_eq!(w.words()[999].load(Ordering::SeqCst), 7);
    }
}
