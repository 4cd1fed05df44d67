//! Segment files: reading a record at a position, and the scan on open.
//!
//! A segment is `<dir>/<base position, 20 digits>.seg`; it holds the frames
//! from its base position on, and the next segment begins where it ends.

use super::format::{self, FRAME_HEADER};
use crate::StoreError;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub(super) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The bases of the segments in `dir`, ascending.
pub(super) fn list(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let io = |source| StoreError::Io {
        context: format!("listing {}", dir.display()),
        source,
    };
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        bases.extend(
            name.to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok()),
        );
    }
    bases.sort_unstable();
    Ok(bases)
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
        let mut data = vec![0; FIRST_READ];
        let got = read_at_most(&file, &mut data, at)?;
        data.truncate(got);
        let len = format::frame_len(&data).ok_or_else(|| corrupt("bad frame header"))?;
        if len > data.len() {
            let mut rest = vec![0; len - data.len()];
            let more = read_at_most(&file, &mut rest, at + data.len() as u64)?;
            data.extend_from_slice(&rest[..more]);
        }
        let (body, _) = format::frame(&data).ok_or_else(|| corrupt("damaged or cut short"))?;
        Ok(body.to_vec())
    }
}

/// Fill `buf` from `at` on, stopping early only at the end of the file.
fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> Result<usize, StoreError> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(StoreError::Io {
                    context: "reading the event log".into(),
                    source,
                })
            }
        }
    }
    Ok(got)
}

/// What a scan calls with each record's position and checksummed body.
pub(super) type Visit<'a> = dyn FnMut(u64, &[u8]) -> Result<(), StoreError> + 'a;

/// Bytes read per step of a scan.
const SCAN_CHUNK: usize = 8 << 20;

/// Visit every record of the segment at `path` in order, with its position,
/// and return the segment's length. A damaged or partial frame is forgiven
/// only at the very end of the last segment, and only when no whole frame
/// follows it: that is a group commit torn by a crash, never acknowledged,
/// and it is cut off. Anything else is damage to acknowledged records.
pub(super) fn scan(
    path: &Path,
    base: u64,
    last: bool,
    visit: &mut Visit<'_>,
) -> Result<u64, StoreError> {
    let io = |what: &str| {
        let context = format!("{what} {}", path.display());
        move |source| StoreError::Io { context, source }
    };
    let file = File::open(path).map_err(io("opening"))?;
    let size = file.metadata().map_err(io("reading"))?.len();
    // `buf` holds the file from byte `start` on.
    let (mut buf, mut start, mut at) = (Vec::new(), 0u64, 0usize);
    loop {
        let need = format::frame_len(&buf[at..]).unwrap_or(FRAME_HEADER);
        if buf.len() - at < need && start + (buf.len() as u64) < size {
            buf.drain(..at);
            start += at as u64;
            at = 0;
            let want = (size - start - buf.len() as u64).min(SCAN_CHUNK.max(need) as u64);
            let old = buf.len();
            buf.resize(old + want as usize, 0);
            file.read_exact_at(&mut buf[old..], start + old as u64)
                .map_err(io("reading"))?;
            continue;
        }
        if at == buf.len() {
            return Ok(start + at as u64);
        }
        let pos = start + at as u64;
        match format::frame(&buf[at..]) {
            Some((body, len)) => {
                visit(base + pos, body)?;
                at += len;
            }
            None => return cut_torn_tail(path, &file, pos, size, last),
        }
    }
}

fn cut_torn_tail(
    path: &Path,
    file: &File,
    pos: u64,
    size: u64,
    last: bool,
) -> Result<u64, StoreError> {
    let damaged = || {
        StoreError::Corrupt(format!(
            "{}: the record at byte {pos} is damaged",
            path.display()
        ))
    };
    if !last {
        return Err(damaged());
    }
    let mut rest = vec![0; (size - pos) as usize];
    file.read_exact_at(&mut rest, pos)
        .map_err(|source| StoreError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
    if let Some(later) = whole_frame_after(&rest, 1) {
        return Err(StoreError::Corrupt(format!(
            "{}: the record at byte {pos} is damaged but a whole one follows at byte {}",
            path.display(),
            pos + later as u64
        )));
    }
    tracing::warn!(
        segment = %path.display(),
        at = pos,
        dropped_bytes = size - pos,
        "cutting off a torn write at the end of the event log"
    );
    let file = File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(pos).and_then(|()| f.sync_all()))
        .map_err(|source| StoreError::Io {
            context: format!("truncating {}", path.display()),
            source,
        });
    file.map(|()| pos)
}

/// The offset of a whole, checksummed frame in `data` at or after `from`
/// that parses as a record.
fn whole_frame_after(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len()).find(|&at| {
        // Cheap filters before the checksum: a plausible length and kind.
        matches!(data.get(at + FRAME_HEADER), Some(1 | 2))
            && format::frame(&data[at..]).is_some_and(|(body, _)| format::parse(body).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::format::{encode_snapshot, Snapshot};

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
        let whole = (a.len() + b.len()) as u64;
        assert_eq!(
            scan_all(&path, true).unwrap(),
            (whole, vec![100, 100 + a.len() as u64])
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole, "cut off");
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
