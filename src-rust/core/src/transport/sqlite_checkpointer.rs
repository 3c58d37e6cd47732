//! Checkpoints an SQLite broker file's write-ahead log behind a worker, so that few commits on a
//! task's way (a `delay()`, a fetch, a result) wait for a checkpoint, and hardly any runs one.
//!
//! SQLite checkpoints on its own in the commit that takes the log past its threshold (1,000 pages
//! by default): that commit copies the log into the database and syncs both files, ~2.5 ms here.
//! A log is only restarted from its beginning by a writer that finds it all copied, which under
//! steady traffic rarely happens, so once past the threshold commit after commit checkpointed:
//! 1.5% of `delay().get()` round trips took ~3 ms instead of 0.35 (each writes ~12 pages).
//!
//! This thread, started with a worker's consumer on its own connection, instead checkpoints every
//! [`CHECKPOINT_EVERY`] while the log is written, PASSIVE (waiting for no reader or writer). Once
//! the log is [`RESTART_FRAMES`] long it restarts it (a RESTART checkpoint right after a PASSIVE
//! one, so writers are held off only while the last few frames are copied). Every connection's
//! own threshold is raised above that (`AUTOCHECKPOINT_PAGES` in [`super::sqlite`]), so commits
//! checkpoint only when no worker runs, or when writers outpace the thread (a heavy drain). With
//! nothing written, the thread sleeps until a message is published (the file's doorbell), or for
//! [`IDLE_CHECK`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::doorbell::Bell;
use crate::error::{Error, Result};
use crate::transport::sqlite::{Checkpoint, SqliteBroker};

/// Pause between two checkpoints while the log is written.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);
/// Log size (in 4 KiB pages, 16 MiB) from which the next checkpoint restarts the log.
pub const RESTART_FRAMES: i64 = 4_096;
/// Longest sleep while the log does not change (and after an error); also how long the thread
/// may outlive its [`Checkpointer`].
pub const IDLE_CHECK: Duration = Duration::from_millis(250);

/// The checkpointing thread of one file; it ends (within [`IDLE_CHECK`]) when this is dropped.
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Starts the thread on `broker`, a connection of its own. It never opens another: when the
    /// file was replaced, the thread ends with its consumer.
    pub fn start(broker: SqliteBroker) -> Checkpointer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        // Without the thread (none could be spawned) nothing is lost: commits checkpoint again.
        let _ = std::thread::Builder::new()
            .name("rqueue-sqlckpt".into())
            .spawn(move || run(&broker, &flag));
        Checkpointer { stop }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Not joined: the thread may be waiting on the doorbell for up to IDLE_CHECK.
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn run(b: &SqliteBroker, stop: &AtomicBool) {
    // The log's size in frames at the last round; it changes when written or restarted.
    let mut last_frames = -1;
    while !stop.load(Ordering::SeqCst) {
        let seen = b.seen(Bell::Messages);
        match checkpoint(b, last_frames) {
            Ok(frames) if frames == last_frames => b.wait(Bell::Messages, seen, IDLE_CHECK),
            Ok(frames) => {
                last_frames = frames;
                std::thread::sleep(CHECKPOINT_EVERY);
            }
            // The consumer reports the file's errors, and stops when it was replaced.
            Err(Error::Replaced(_)) => return,
            Err(_) => std::thread::sleep(IDLE_CHECK),
        }
    }
}

/// One round: a PASSIVE checkpoint and, once the log is [`RESTART_FRAMES`] long and still being
/// written, a RESTART right after it, which then holds writers off only while it copies the last
/// few frames (~2 ms here, against ~4 ms alone). Returns the log's size in frames
/// (`last_frames` when another checkpoint was running).
fn checkpoint(b: &SqliteBroker, last_frames: i64) -> Result<i64> {
    let frames = b.checkpoint(Checkpoint::Passive)?.unwrap_or(last_frames);
    if frames >= RESTART_FRAMES && frames != last_frames {
        b.checkpoint(Checkpoint::Restart)?;
    }
    Ok(frames)
}
