//! One partition's log on disk: segment files of records, their scan on
//! open, and the in-memory index readers use.
//!
//! A segment is `<partition dir>/<base offset, 20 digits>.log`, holding the
//! records from its base offset on, back to back. A record is
//!
//! ```text
//! len: u32 LE | crc32(body): u32 LE | body (len bytes)
//! body = offset u64 | timestamp_ms i64 | key_len u32 | key
//!      | header_count u32 | (name_len u32 | name | value_len u32 | value)*
//!      | payload (the rest)
//! ```
//!
//! all integers little-endian, and each write closed by a commit mark. The
//! offset inside the checksummed body lets a scan prove that a record is
//! the one expected at its place. Frames,
//! segment files and the torn-tail rule are [`colloquy_segments`]'s,
//! shared with the store's event log.

use crate::{BusError, Record};
use colloquy_segments::{seal, Cursor, Frames, FRAME_HEADER};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// offset + timestamp + key_len + header_count: the smallest possible body.
const MIN_BODY: usize = 24;
const EXT: &str = "log";

/// Bytes a record takes on disk.
pub(crate) fn encoded_len(key: &str, headers: &[(String, String)], payload: &[u8]) -> usize {
    let headers: usize = headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    FRAME_HEADER + MIN_BODY + key.len() + headers + payload.len()
}

pub(crate) fn encode(
    out: &mut Vec<u8>,
    offset: u64,
    timestamp_ms: i64,
    key: &str,
    headers: &[(String, String)],
    payload: &[u8],
) {
    let start = colloquy_segments::begin(out);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    put_bytes(out, key.as_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        put_bytes(out, name.as_bytes());
        put_bytes(out, value.as_bytes());
    }
    out.extend_from_slice(payload);
    seal(out, start);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The frame at the start of `data`: `Some((body, frame length))` if it is
/// whole and its checksum matches.
fn frame(data: &[u8]) -> Option<(&[u8], usize)> {
    colloquy_segments::frame(data, MIN_BODY)
}

fn body_offset(body: &[u8]) -> u64 {
    u64::from_le_bytes(
        body[..8]
            .try_into()
            .expect("bodies are at least MIN_BODY long"),
    )
}

/// Decode a checksummed body; `None` if its fields do not add up.
fn decode(body: &[u8], topic: &str, partition: u32) -> Option<Record> {
    let mut cursor = Cursor::new(body);
    let offset = cursor.u64()?;
    let timestamp_ms = cursor.i64()?;
    let string = |cursor: &mut Cursor| String::from_utf8(cursor.bytes32()?.to_vec()).ok();
    let key = string(&mut cursor)?;
    let count = cursor.u32()?;
    let mut headers = Vec::new();
    for _ in 0..count {
        headers.push((string(&mut cursor)?, string(&mut cursor)?));
    }
    Some(Record {
        topic: topic.to_string(),
        partition,
        offset,
        key,
        payload: cursor.rest().to_vec(),
        headers,
        timestamp_ms,
    })
}

fn decode_all(
    data: &[u8],
    first: u64,
    topic: &str,
    partition: u32,
) -> Result<Vec<Record>, BusError> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < data.len() {
        // A read spanning writes holds the commit marks between them.
        if colloquy_segments::mark(&data[at..]).is_some() {
            at += colloquy_segments::MARK_LEN;
            continue;
        }
        let expected = first + records.len() as u64;
        let record = frame(&data[at..])
            .and_then(|(body, len)| {
                at += len;
                decode(body, topic, partition)
            })
            .filter(|r| r.offset == expected)
            .ok_or_else(|| {
                BusError::Corrupt(format!("{topic}/{partition}: record {expected} is damaged"))
            })?;
        records.push(record);
    }
    Ok(records)
}

pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    colloquy_segments::segment_path(dir, base, EXT)
}

/// The bases of the segments in `dir`, ascending.
pub(crate) fn list(dir: &Path) -> Result<Vec<u64>, BusError> {
    Ok(colloquy_segments::list(dir, EXT)?)
}

/// Create the empty segment beginning at offset `base`, durably.
pub(crate) fn create(dir: &Path, base: u64) -> std::io::Result<File> {
    colloquy_segments::create(dir, base, EXT)
}

/// A segment as readers see it: only records known durable are indexed.
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    /// Read and written with positional I/O only, so one handle serves the
    /// writer thread and every reader.
    pub file: Arc<File>,
    /// Byte position of record `base + i`.
    pub positions: Vec<u32>,
    /// Bytes of durable records.
    pub len: u64,
}

/// What a scan found in one segment file.
pub(crate) struct Scanned {
    pub positions: Vec<u32>,
    pub len: u64,
}

/// Index a segment file. A damaged record is forgiven only at the very end
/// of the partition's last segment, and only if nothing valid follows it:
/// that is a write torn by a crash, never acknowledged, and it is cut off.
/// Anything else is corruption of acknowledged records and an error.
pub(crate) fn scan(path: &Path, base: u64, last: bool) -> Result<Scanned, BusError> {
    let mut offsets = Offsets {
        base,
        positions: Vec::new(),
    };
    let scanned =
        colloquy_segments::scan(path, MIN_BODY, last, &mut offsets).map_err(|e| match e {
            colloquy_segments::Error::Damaged { path, at, follows } => {
                let (path, expected) = (path.display(), offsets.expected());
                BusError::Corrupt(match follows {
                    None => format!("{path}: record {expected} at byte {at} is damaged"),
                    Some(later) => format!(
                        "{path}: record {expected} at byte {at} is damaged but a whole record follows at byte {later}"
                    ),
                })
            }
            e => e.into(),
        })?;
    if scanned.dropped > 0 {
        tracing::warn!(
            segment = %path.display(),
            offset = offsets.expected(),
            dropped_bytes = scanned.dropped,
            "cutting off a torn write at the end of the log"
        );
    }
    Ok(Scanned {
        positions: offsets.positions,
        len: scanned.len,
    })
}

/// A segment's frames as the bus sees them: record `base + i` is the i-th
/// frame, and says so in its offset field.
struct Offsets {
    base: u64,
    positions: Vec<u32>,
}

/// More records than a segment can hold: positions are `u32`, and no
/// record is shorter than a header and [`MIN_BODY`].
const MAX_SEGMENT_RECORDS: u64 = u32::MAX as u64 / (FRAME_HEADER + MIN_BODY) as u64;

impl Offsets {
    fn expected(&self) -> u64 {
        self.base + self.positions.len() as u64
    }
}

impl Frames for Offsets {
    type Error = colloquy_segments::Error;

    fn visit(&mut self, at: u64, body: &[u8]) -> Result<bool, Self::Error> {
        let take = body_offset(body) == self.expected();
        if take {
            self.positions.push(at as u32);
        }
        Ok(take)
    }

    /// A record whose offset is one the damaged region could have
    /// displaced: a cheap test on the offset field.
    fn follows(&mut self, body: &[u8]) -> bool {
        let expected = self.expected();
        (expected..expected.saturating_add(MAX_SEGMENT_RECORDS)).contains(&body_offset(body))
    }
}

/// The readers' view of a partition, plus what commits and publishes need.
pub(crate) struct Partition {
    pub topic: String,
    pub id: u32,
    pub dir: PathBuf,
    pub index: RwLock<Index>,
    /// The end offset: one past the last durable record. Fetches wait on it.
    pub end: watch::Sender<u64>,
    /// The lowest offset some group still needs (the oldest retained offset
    /// when no group consumes the topic): retention and backlog start here.
    pub floor: AtomicU64,
    pub failed: AtomicBool,
}

pub(crate) struct Index {
    pub segments: Vec<Segment>,
    /// The newest records, so that consumers keeping up do not read the disk.
    pub tail: VecDeque<Record>,
    pub tail_bytes: usize,
}

/// Limits of one read from disk; the tail cache has its own.
const MAX_READ_BYTES: u64 = 4 << 20;

impl Partition {
    pub fn start(&self) -> u64 {
        self.index.read().expect("index lock").segments[0].base
    }

    pub fn failed_error(&self) -> BusError {
        BusError::Failed {
            topic: self.topic.clone(),
            partition: self.id,
        }
    }

    /// Records from `from` (< end) on: from the tail cache when it has them,
    /// else from the one segment holding `from`.
    pub async fn read(&self, from: u64, max: usize) -> Result<Vec<Record>, BusError> {
        let (file, first, range) = {
            let index = self.index.read().expect("index lock");
            if index.tail.front().is_some_and(|r| r.offset <= from) {
                let skip = (from - index.tail[0].offset) as usize;
                return Ok(index.tail.iter().skip(skip).take(max).cloned().collect());
            }
            // Retention may have dropped `from` since the caller checked it.
            let Some(i) = index
                .segments
                .partition_point(|s| s.base <= from)
                .checked_sub(1)
            else {
                return Err(BusError::OffsetOutOfRange {
                    topic: self.topic.clone(),
                    partition: self.id,
                    offset: from,
                    start: index.segments[0].base,
                    end: *self.end.borrow(),
                });
            };
            let segment = &index.segments[i];
            let at = (from - segment.base) as usize;
            let start = u64::from(segment.positions[at]);
            // Up to `max` records, within the read limit but at least one.
            let limit = max.min(segment.positions.len() - at);
            let count = 1 + segment.positions[at + 1..at + limit]
                .iter()
                .take_while(|&&p| u64::from(p) - start < MAX_READ_BYTES)
                .count();
            let end = segment
                .positions
                .get(at + count)
                .map_or(segment.len, |&p| u64::from(p));
            (Arc::clone(&segment.file), from, start..end)
        };
        let (topic, partition) = (self.topic.clone(), self.id);
        tokio::task::spawn_blocking(move || {
            let mut data = vec![0; (range.end - range.start) as usize];
            file.read_exact_at(&mut data, range.start)
                .map_err(BusError::io(format!("read {topic}/{partition}")))?;
            decode_all(&data, first, &topic, partition)
        })
        .await
        .map_err(|_| BusError::Closed)?
    }

    /// Drop the segments entirely below the floor (never the active one) from
    /// the index; the caller deletes their files.
    pub fn release_consumed(&self) -> Vec<PathBuf> {
        let floor = self.floor.load(Ordering::Acquire);
        let mut index = self.index.write().expect("index lock");
        let consumed = index
            .segments
            .windows(2)
            .take_while(|pair| pair[1].base <= floor)
            .count();
        index.segments.drain(..consumed).map(|s| s.path).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, key: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let headers = vec![
            ("trace".to_string(), "abc".to_string()),
            ("empty".to_string(), String::new()),
        ];
        encode(
            &mut out,
            offset,
            1_700_000_000_000,
            key,
            &headers,
            b"payload",
        );
        assert_eq!(out.len(), encoded_len(key, &headers, b"payload"));
        out
    }

    #[test]
    fn round_trip() {
        let mut data = record(7, "user-1");
        data.extend(record(8, "ключ"));
        let records = decode_all(&data, 7, "t", 3).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].offset, 8);
        assert_eq!(records[1].key, "ключ");
        assert_eq!(records[0].header("trace"), Some("abc"));
        assert_eq!(records[0].header("empty"), Some(""));
        assert_eq!(records[0].payload, b"payload");
        assert_eq!(records[0].timestamp_ms, 1_700_000_000_000);
        assert_eq!((records[0].topic.as_str(), records[0].partition), ("t", 3));
    }

    #[test]
    fn damage_is_caught() {
        let mut data = record(0, "k");
        let last = data.len() - 1;
        data[last] ^= 1;
        assert!(frame(&data).is_none());
        assert!(decode_all(&data, 0, "t", 0).is_err());
        // A whole record in the wrong place is damage too.
        assert!(decode_all(&record(1, "k"), 0, "t", 0).is_err());
    }

    #[test]
    fn finds_a_valid_record_behind_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut data = record(0, "a");
        let second = data.len();
        data.extend(record(1, "b"));
        data[3] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        // Record 1, at byte `second`, is valid: the damage is not a tail.
        let err = scan(&path, 0, true).err().expect("damage before a record");
        assert!(
            err.to_string()
                .ends_with(&format!("a whole record follows at byte {second}")),
            "{err}"
        );
        data[second + 12] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let scanned = scan(&path, 0, true).unwrap();
        let closed = colloquy_segments::MARK_LEN as u64;
        assert_eq!(
            (scanned.positions.len(), scanned.len),
            (0, closed),
            "cut off"
        );
    }

    #[test]
    fn a_read_across_writes_skips_their_marks() {
        let mut data = record(0, "a");
        colloquy_segments::commit(&mut data);
        data.extend(record(1, "b"));
        let records = decode_all(&data, 0, "t", 0).unwrap();
        let keys: Vec<_> = records.iter().map(|r| (r.offset, r.key.as_str())).collect();
        assert_eq!(keys, [(0, "a"), (1, "b")]);
    }
}
