//! colloquy-segments: append-only segment files of checksummed frames, the
//! durable layer under both embedded logs (the bus's partitions and the
//! store's event log), so that they share one implementation of what must
//! never differ between them: how a frame is laid out and checked, and
//! which damage a reopen may forgive.
//!
//! A log is a directory of segment files `<base, 20 digits>.<ext>`, each
//! holding frames back to back:
//!
//! ```text
//! frame = len: u32 LE | crc32(body): u32 LE | body (len bytes)
//! mark  = 0xC0110C0A: u32 LE | group: u64 LE
//! ```
//!
//! A commit mark ends every write (a group commit) and gives its length in
//! bytes, so that a scan on open can tell a write torn by a crash, which no
//! one was told is durable, from damage to acknowledged ones, and forgive
//! the first without a human. A new segment starts with an empty mark.
//!
//! What a body holds, what a base counts (records or bytes) and which frame
//! belongs where are the caller's to say. This crate frames and unframes
//! ([`begin`], [`seal`], [`frame`], [`Cursor`]), names, lists, creates and
//! reads segment files, scans one on open ([`scan`]) and locks the data
//! directory ([`lock_dir`]). It must not know about dialogue, HTTP, the bus
//! or the store, and it does blocking I/O only: callers run it on their own
//! threads.

mod files;
mod frame;
mod scan;

pub use files::{create, list, lock_dir, read_at_most, segment_path, SEGMENT_START};
pub use frame::{
    begin, commit, frame, frame_len, mark, seal, Cursor, FRAME_HEADER, MARK_LEN, MAX_BODY,
};
pub use scan::{scan, Frames, Scanned};

use std::path::PathBuf;

/// What can go wrong with segment files. Callers map it into their own
/// error type, with their own words for damage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The frame at byte `at` of `path` is incomplete, fails its checksum
    /// or is not the one its place calls for, and the torn-tail rule does
    /// not forgive it: it is not in the last segment, or a whole write
    /// (in a segment from before commit marks, a whole frame) follows it,
    /// at byte `follows` of the same file.
    #[error(
        "{}: the frame at byte {at} is damaged{}",
        path.display(),
        follows.map_or(String::new(), |f| format!(" but a whole one follows at byte {f}"))
    )]
    Damaged {
        path: PathBuf,
        at: u64,
        follows: Option<u64>,
    },
    /// Another open file holds the directory's lock: in practice another
    /// process.
    #[error("directory {} is locked by another process", dir.display())]
    Locked { dir: PathBuf },
}

impl Error {
    fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { context, source }
    }
}
