//! Segment files: reading a record at a position, and the scan on open.
//!
//! A segment is `<dir>/<base position, 20 digits>.seg`; it holds the frames
//! from its base position on, and the next segment begins where it ends.
//! The files, their frames and the torn-tail rule are
//! [`colloquy_segments`]'s; what is the store's is that bases and
//! positions count bytes over all segments, and which frames are records.

use super::format::{self, MIN_BODY};
use crate::StoreError;
use colloquy_segments::{read_at_most, Frames};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

const EXT: &str = "seg";

pub(super) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    colloquy_segments::segment_path(dir, base, EXT)
}

/// The bases of the segments in `dir`, ascending.
pub(super) fn list(dir: &Path) -> Result<Vec<u64>, StoreError> {
    Ok(colloquy_segments::list(dir, EXT)?)
}

/// Create the empty segment beginning at `base`, durably.
pub(super) fn create(dir: &Path, base: u64) -> Result<File, StoreError> {
    colloquy_segments::create(dir, base, EXT).map_err(|source| StoreError::Io {
        context: format!("creating {}", segment_path(dir, base).display()),
        source,
    })
}

/// The segments readers may read: every one whose records are (in part)
/// durable. Files are only ever read and written positionally, so one
/// handle serves the writer and every reader.
#[derive(Default)]
pub(super) struct Segments {
    list: RwLock<Vec<(u64, Arc<File>)>>,
}

/// A first read of this many bytes holds most records whole.
const FIRST_READ: usize = 4096;

impl Segments {
    pub fn push(&self, base: u64, file: Arc<File>) {
        self.list.write().expect("segments lock").push((base, file));
    }

    fn locate(&self, pos: u64) -> Option<(Arc<File>, u64)> {
        let list = self.list.read().expect("segments lock");
        let i = list
            .partition_point(|(base, _)| *base <= pos)
            .checked_sub(1)?;
        let (base, file) = &list[i];
        Some((Arc::clone(file), pos - base))
    }

    /// The checksummed body of the record at `pos`. Blocking.
    pub fn read(&self, pos: u64) -> Result<Vec<u8>, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("event log record at {pos}: {what}"));
        let (file, at) = self.locate(pos).ok_or_else(|| corrupt("no such segment"))?;
        let io = |source| StoreError::Io {
            context: "reading the event log".into(),
            source,
        };
        let mut data = vec![0; FIRST_READ];
        let got = read_at_most(&file, &mut data, at).map_err(io)?;
        data.truncate(got);
        let len = format::frame_len(&data).ok_or_else(|| corrupt("bad frame header"))?;
        if len > data.len() {
            let mut rest = vec![0; len - data.len()];
            let more = read_at_most(&file, &mut rest, at + data.len() as u64).map_err(io)?;
            data.extend_from_slice(&rest[..more]);
        }
        let (body, _) = format::frame(&data).ok_or_else(|| corrupt("damaged or cut short"))?;
        Ok(body.to_vec())
    }
}

impl Segments {
    /// Writes `body` over the record at `pos`, which must be exactly as
    /// long (a re-sealed value takes the bytes of the one it replaces), with
    /// its checksum, durably. Blocking.
    pub fn rewrite(&self, pos: u64, body: &[u8]) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let old = self.read(pos)?;
        if old.len() != body.len() {
            return Err(StoreError::Corrupt(format!(
                "event log record at {pos}: a rewrite must keep its {} bytes",
                old.len()
            )));
        }
        let (file, at) = self.locate(pos).ok_or_else(|| {
            StoreError::Corrupt(format!("event log record at {pos}: no such segment"))
        })?;
        let mut frame = Vec::with_capacity(colloquy_segments::FRAME_HEADER + body.len());
        let start = colloquy_segments::begin(&mut frame);
        frame.extend_from_slice(body);
        colloquy_segments::seal(&mut frame, start);
        let io = |source| StoreError::Io {
            context: format!("rewriting the event log record at {pos}"),
            source,
        };
        file.write_all_at(&frame, at).map_err(io)?;
        file.sync_data().map_err(io)
    }
}

/// What a scan calls with each record's position and checksummed body.
pub(super) type Visit<'a> = dyn FnMut(u64, &[u8]) -> Result<(), StoreError> + 'a;

/// Visit every record of the segment at `path` in order, with its position,
/// and return the segment's length. A damaged or partial frame is forgiven
/// only at the very end of the last segment, and only when no whole record
/// follows it: that is a group commit torn by a crash, never acknowledged,
/// and it is cut off. Anything else is damage to acknowledged records.
pub(super) fn scan(
    path: &Path,
    base: u64,
    last: bool,
    visit: &mut Visit<'_>,
) -> Result<u64, StoreError> {
    let scanned = colloquy_segments::scan(path, MIN_BODY, last, &mut Records { base, visit })?;
    if scanned.dropped > 0 {
        tracing::warn!(
            segment = %path.display(),
            at = scanned.len,
            dropped_bytes = scanned.dropped,
            "cutting off a torn write at the end of the event log"
        );
    }
    Ok(scanned.len)
}

/// A segment's frames as the store sees them: every whole frame is a
/// record, to be indexed at its position over all segments.
struct Records<'v, 'a> {
    base: u64,
    visit: &'v mut Visit<'a>,
}

impl Frames for Records<'_, '_> {
    type Error = StoreError;

    fn visit(&mut self, at: u64, body: &[u8]) -> Result<bool, StoreError> {
        (self.visit)(self.base + at, body).map(|()| true)
    }

    fn follows(&mut self, body: &[u8]) -> bool {
        format::is_record(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::format::{encode_snapshot, Snapshot};
    use colloquy_segments::FRAME_HEADER;

    fn frame(seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_snapshot(
            &mut out,
            &Snapshot {
                user: "u",
                seq,
                ts_ms: 0,
                hmac: "h",
                state: b"{}",
            },
        );
        out
    }

    fn scan_all(path: &Path, last: bool) -> Result<(u64, Vec<u64>), StoreError> {
        let mut seen = Vec::new();
        let len = scan(path, 100, last, &mut |pos, _| {
            seen.push(pos);
            Ok(())
        })?;
        Ok((len, seen))
    }

    #[test]
    fn a_torn_tail_is_cut_and_damage_before_whole_records_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.seg");
        let (a, b) = (frame(1), frame(2));
        let mut data = [a.clone(), b.clone()].concat();
        data.extend_from_slice(&b[..b.len() / 2]);
        std::fs::write(&path, &data).unwrap();
        // Only the last segment may have a torn tail.
        assert!(matches!(
            scan_all(&path, false),
            Err(StoreError::Corrupt(_))
        ));
        // Cut off, and closed with a commit mark for the next write.
        let closed = (a.len() + b.len() + colloquy_segments::MARK_LEN) as u64;
        assert_eq!(
            scan_all(&path, true).unwrap(),
            (closed, vec![100, 100 + a.len() as u64])
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), closed);
        // A damaged record with a whole one behind it was acknowledged.
        let mut data = [a.clone(), b.clone()].concat();
        data[a.len() - 1] ^= 1;
        std::fs::write(&path, &data).unwrap();
        let err = scan_all(&path, true).unwrap_err().to_string();
        assert!(err.contains("a whole one follows"), "{err}");
    }

    #[test]
    fn records_are_read_back_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.seg");
        let big = {
            let mut out = Vec::new();
            let state = vec![b' '; 3 * FIRST_READ];
            encode_snapshot(
                &mut out,
                &Snapshot {
                    user: "u",
                    seq: 3,
                    ts_ms: 0,
                    hmac: "h",
                    state: &state,
                },
            );
            out
        };
        let data = [frame(1), big.clone(), frame(2)].concat();
        std::fs::write(&path, &data).unwrap();
        let segments = Segments::default();
        segments.push(100, Arc::new(File::open(&path).unwrap()));
        let at = 100 + frame(1).len() as u64;
        assert_eq!(segments.read(at).unwrap(), big[FRAME_HEADER..]);
        assert!(segments.read(at + 1).is_err());
        assert!(segments.read(50).is_err(), "before the first segment");
    }
}
