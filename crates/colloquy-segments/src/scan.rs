//! The scan of a segment on open, and the torn-tail rule.

use crate::frame::{crc, frame, frame_len, mark, put_mark, FRAME_HEADER, MARK_LEN};
use crate::Error;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What a scan asks its caller about the frames it finds.
pub trait Frames {
    type Error: From<Error>;

    /// The whole, checksummed frame at byte `at` of the segment. `Ok(true)`
    /// takes it and the scan goes on; `Ok(false)` says it is not the frame
    /// that belongs here, which the scan treats like a damaged one; an
    /// error stops the scan.
    fn visit(&mut self, at: u64, body: &[u8]) -> Result<bool, Self::Error>;

    /// Whether a whole frame found past damage in the last segment, with
    /// this body, is a record the log could hold there. If one is, the
    /// damage is not a torn tail. Asked before the frame's checksum is
    /// checked (a frame counts only if both hold), so that a cheap refusal
    /// spares checksumming most of the bytes of a damaged tail.
    fn follows(&mut self, body: &[u8]) -> bool;
}

/// What a scan found in one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes of whole frames and marks: where the next write goes.
    pub len: u64,
    /// Bytes of a torn tail cut off the file (0 if none), for the caller
    /// to report in its own terms.
    pub dropped: u64,
}

/// Bytes read per step of a scan: memory stays bounded whatever the size
/// of the segment (plus one frame, if it is larger).
const SCAN_CHUNK: usize = 8 << 20;

/// Visit every frame of the segment at `path` in order and return where
/// it ends.
///
/// Each write a writer makes ends with a commit mark ([`crate::commit`])
/// and is acknowledged only once synced, one at a time, so a crash can tear
/// only the last write, and anywhere inside it: a frame in its middle may
/// be lost while a later one reached the disk. A scan therefore forgives
/// damage only in the last segment (`last`) and only when no whole write
/// (a mark closing frames that are all whole and that
/// [`Frames::follows`] accepts) comes after it; it cuts the damage off and
/// closes what stays with a mark, durably, before it returns. A segment
/// written before commit marks existed has none until its first write; up
/// to there, as before, damage is forgiven only when no whole frame at all
/// follows it. Anything else is damage to acknowledged frames:
/// [`Error::Damaged`].
///
/// The last segment always ends with a mark once scanned, so the first
/// write after an open starts a group of its own.
pub fn scan<F: Frames>(
    path: &Path,
    min_body: usize,
    last: bool,
    frames: &mut F,
) -> Result<Scanned, F::Error> {
    let reading = || Error::io(format!("reading {}", path.display()));
    let file = File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    let size = file.metadata().map_err(reading())?.len();
    let mut window = Window::new(&file, size);
    let mut at = 0;
    // Where the frames no mark has closed yet begin, and whether any mark
    // has been seen (a segment that has none is from before marks).
    let (mut group, mut marked) = (0, false);
    let clean = loop {
        let head = window.from(at, MARK_LEN).map_err(reading())?;
        if head.is_empty() {
            break true;
        }
        if let Some(len) = mark(head) {
            // A mark closes exactly the frames since the last one; an empty
            // group only opens a segment.
            if len != at - group || (len == 0 && at != 0) {
                break false;
            }
            (at, group, marked) = (at + MARK_LEN as u64, at + MARK_LEN as u64, true);
            continue;
        }
        let need = frame_len(head, min_body).unwrap_or(FRAME_HEADER);
        let data = window.from(at, need).map_err(reading())?;
        match frame(data, min_body) {
            Some((body, len)) if frames.visit(at, body)? => at += len as u64,
            _ => break false,
        }
    };
    if !clean {
        let damaged = |follows| Error::Damaged {
            path: path.to_path_buf(),
            at,
            follows,
        };
        if !last {
            return Err(damaged(None).into());
        }
        let later = if marked {
            write_after(&file, &mut window, at, min_body, frames)
        } else {
            frame_after(&mut window, at + 1, min_body, frames)
        };
        if let Some(later) = later.map_err(reading())? {
            return Err(damaged(Some(later)).into());
        }
    }
    // Whether what stays ends with a mark already.
    let closed = marked && group == at;
    if !last || (clean && closed) {
        return Ok(Scanned {
            len: at,
            dropped: 0,
        });
    }
    let mut close = Vec::with_capacity(MARK_LEN);
    if !closed {
        put_mark(&mut close, at - group);
    }
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(at)?;
            f.write_all_at(&close, at)?;
            f.sync_all()
        })
        .map_err(Error::io(format!("closing the tail of {}", path.display())))?;
    Ok(Scanned {
        len: at + close.len() as u64,
        dropped: size - at,
    })
}

/// The position of the first whole frame at or after byte `from` that
/// `frames` accepts and whose checksum matches.
fn frame_after<F: Frames>(
    window: &mut Window<'_>,
    from: u64,
    min_body: usize,
    frames: &mut F,
) -> io::Result<Option<u64>> {
    for at in from..window.size {
        let Some(len) = frame_len(window.from(at, FRAME_HEADER)?, min_body) else {
            continue;
        };
        if at + len as u64 > window.size {
            continue;
        }
        let data = window.from(at, len)?;
        let body = &data[FRAME_HEADER..len];
        if frames.follows(body) && crc32fast::hash(body) == crc(data) {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// The position of the first whole write that begins at or after byte
/// `damage`: a commit mark whose group lies past the damage and holds only
/// whole frames that `frames` accepts. A write torn by a crash is never
/// whole, and no write follows it, since none is made before the last is
/// synced.
fn write_after<F: Frames>(
    file: &File,
    window: &mut Window<'_>,
    damage: u64,
    min_body: usize,
    frames: &mut F,
) -> io::Result<Option<u64>> {
    for at in damage + 1..window.size {
        let Some(len) = mark(window.from(at, MARK_LEN)?) else {
            continue;
        };
        if len == 0 || len > at - damage {
            continue;
        }
        let mut group = vec![0; len as usize];
        file.read_exact_at(&mut group, at - len)?;
        let mut rest = &group[..];
        while let Some((_, len)) = frame(rest, min_body).filter(|(b, _)| frames.follows(b)) {
            rest = &rest[len..];
        }
        if rest.is_empty() {
            return Ok(Some(at - len));
        }
    }
    Ok(None)
}

/// A moving window on a file read front to back, so that a scan holds one
/// chunk (or one frame) in memory, not the file.
struct Window<'f> {
    file: &'f File,
    size: u64,
    /// `buf` holds the file from byte `start` on.
    start: u64,
    buf: Vec<u8>,
}

impl<'f> Window<'f> {
    fn new(file: &'f File, size: u64) -> Window<'f> {
        Window {
            file,
            size,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// The bytes from `at` on: at least `want` of them unless the file
    /// ends sooner (then all it has). `at` never goes back before the last
    /// call's: what lies before it is dropped when more is read.
    fn from(&mut self, at: u64, want: usize) -> io::Result<&[u8]> {
        let end = self.size.min(at + want as u64);
        if self.start + (self.buf.len() as u64) < end {
            self.buf.drain(..(at - self.start) as usize);
            self.start = at;
            let held = self.start + self.buf.len() as u64;
            let more = (self.size - held).min(SCAN_CHUNK.max(want) as u64) as usize;
            let old = self.buf.len();
            self.buf.resize(old + more, 0);
            self.file.read_exact_at(&mut self.buf[old..], held)?;
        }
        Ok(&self.buf[(at - self.start) as usize..])
    }
}
