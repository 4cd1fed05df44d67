//! The bytes of the event log: frames and the two record kinds.
//!
//! ```text
//! frame    = len: u32 | crc32(body): u32 | body (len bytes)
//! append   = 1u8 | user | prev: u64 | first_seq: u64 | last_seq: u64
//!          | ts_ms: i64 | id_count: u16 | ids (16 bytes each) | events (JSON array)
//! snapshot = 2u8 | user | seq: u64 | ts_ms: i64 | hmac_len: u16 | hmac
//!          | state (JSON)
//! user     = len: u16 | UTF-8 bytes
//! ```
//!
//! Integers are little-endian. Frames and their segment files are
//! [`colloquy_segments`]'s, shared with the embedded bus. A position is a
//! byte offset into the concatenation of all segments, so it names a
//! record for good. `prev` is the position of the same user's previous
//! append ([`NONE`] for the first): each user's appends form a chain from
//! the newest back to the oldest, which is how a user's log is read
//! without an on-disk index. The event ids sit in binary before the JSON,
//! so the duplicate check can collect them without parsing events.

use colloquy_segments::{seal, Cursor, FRAME_HEADER};

/// Kind byte and an empty user name: no body is shorter.
pub(super) const MIN_BODY: usize = 3;
/// "No record": the chain's end, a user without a snapshot.
pub(super) const NONE: u64 = u64::MAX;

const KIND_APPEND: u8 = 1;
const KIND_SNAPSHOT: u8 = 2;

/// A decoded record body, borrowing from the bytes read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Body<'a> {
    Append(Append<'a>),
    Snapshot(Snapshot<'a>),
}

impl<'a> Body<'a> {
    pub fn user(&self) -> &'a str {
        match self {
            Body::Append(a) => a.user,
            Body::Snapshot(s) => s.user,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Append<'a> {
    pub user: &'a str,
    pub prev: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub ts_ms: i64,
    /// 16 bytes per event id.
    pub ids: &'a [u8],
    pub events: &'a [u8],
}

impl Append<'_> {
    pub fn ids(&self) -> impl Iterator<Item = u128> + '_ {
        self.ids
            .chunks_exact(16)
            .map(|id| u128::from_be_bytes(id.try_into().expect("16-byte chunks")))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Snapshot<'a> {
    pub user: &'a str,
    pub seq: u64,
    pub ts_ms: i64,
    pub hmac: &'a str,
    pub state: &'a [u8],
}

/// Bytes an append frame takes.
pub(super) fn append_len(user: &str, ids: usize, events: &[u8]) -> usize {
    FRAME_HEADER + 1 + 2 + user.len() + 8 * 4 + 2 + 16 * ids + events.len()
}

/// Bytes a snapshot frame takes.
pub(super) fn snapshot_len(user: &str, hmac: &str, state: &[u8]) -> usize {
    FRAME_HEADER + 1 + 2 + user.len() + 8 * 2 + 2 + hmac.len() + state.len()
}

/// Append an append frame to `out`. Callers have checked that `user` and
/// the id count fit in 16 bits.
pub(super) fn encode_append(out: &mut Vec<u8>, a: &Append<'_>) {
    let start = begin(out, KIND_APPEND, a.user);
    for n in [a.prev, a.first_seq, a.last_seq] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&a.ts_ms.to_le_bytes());
    out.extend_from_slice(&((a.ids.len() / 16) as u16).to_le_bytes());
    out.extend_from_slice(a.ids);
    out.extend_from_slice(a.events);
    seal(out, start);
}

pub(super) fn encode_snapshot(out: &mut Vec<u8>, s: &Snapshot<'_>) {
    let start = begin(out, KIND_SNAPSHOT, s.user);
    out.extend_from_slice(&s.seq.to_le_bytes());
    out.extend_from_slice(&s.ts_ms.to_le_bytes());
    out.extend_from_slice(&(s.hmac.len() as u16).to_le_bytes());
    out.extend_from_slice(s.hmac.as_bytes());
    out.extend_from_slice(s.state);
    seal(out, start);
}

/// Start a frame whose body begins with `kind` and `user`.
fn begin(out: &mut Vec<u8>, kind: u8, user: &str) -> usize {
    let start = colloquy_segments::begin(out);
    out.push(kind);
    out.extend_from_slice(&(user.len() as u16).to_le_bytes());
    out.extend_from_slice(user.as_bytes());
    start
}

/// The length of the frame starting `data`, if its header is plausible.
pub(super) fn frame_len(data: &[u8]) -> Option<usize> {
    colloquy_segments::frame_len(data, MIN_BODY)
}

/// The checksummed body of the frame starting `data`, and the frame's
/// length; `None` if it is incomplete or damaged.
pub(super) fn frame(data: &[u8]) -> Option<(&[u8], usize)> {
    colloquy_segments::frame(data, MIN_BODY)
}

/// Whether `body` may be a record: a cheap look at its kind byte, before
/// parsing it.
pub(super) fn is_record(body: &[u8]) -> bool {
    matches!(body.first(), Some(&(KIND_APPEND | KIND_SNAPSHOT))) && parse(body).is_some()
}

/// Decode a checksummed body; `None` if its fields do not add up.
pub(super) fn parse(body: &[u8]) -> Option<Body<'_>> {
    let mut c = Cursor::new(body);
    let kind = c.u8()?;
    let user = std::str::from_utf8(c.bytes16()?).ok()?;
    match kind {
        KIND_APPEND => {
            let (prev, first_seq, last_seq) = (c.u64()?, c.u64()?, c.u64()?);
            let ts_ms = c.i64()?;
            let count = c.u16()? as usize;
            let ids = c.take(16 * count)?;
            (count > 0 && last_seq >= first_seq && last_seq - first_seq + 1 == count as u64)
                .then_some(Body::Append(Append {
                    user,
                    prev,
                    first_seq,
                    last_seq,
                    ts_ms,
                    ids,
                    events: c.rest(),
                }))
        }
        KIND_SNAPSHOT => {
            let (seq, ts_ms) = (c.u64()?, c.i64()?);
            let hmac = std::str::from_utf8(c.bytes16()?).ok()?;
            Some(Body::Snapshot(Snapshot {
                user,
                seq,
                ts_ms,
                hmac,
                state: c.rest(),
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> Vec<u8> {
        (0..n).flat_map(|i| [i; 16]).collect()
    }

    #[test]
    fn both_kinds_round_trip() {
        let ids = ids(2);
        let append = Append {
            user: "用户-1",
            prev: 42,
            first_seq: 7,
            last_seq: 8,
            ts_ms: -5,
            ids: &ids,
            events: b"[{},{}]",
        };
        let snapshot = Snapshot {
            user: "u",
            seq: 9,
            ts_ms: 1_700_000_000_000,
            hmac: "abcd",
            state: b"{\"seq\":9}",
        };
        let mut out = Vec::new();
        encode_append(&mut out, &append);
        assert_eq!(out.len(), append_len(append.user, 2, append.events));
        let split = out.len();
        encode_snapshot(&mut out, &snapshot);
        assert_eq!(out.len() - split, snapshot_len("u", "abcd", snapshot.state));
        let (body, len) = frame(&out).unwrap();
        assert_eq!(len, split);
        assert_eq!(parse(body), Some(Body::Append(append)));
        let (body, _) = frame(&out[split..]).unwrap();
        assert_eq!(parse(body), Some(Body::Snapshot(snapshot)));
    }

    #[test]
    fn damage_and_inconsistency_are_caught() {
        let ids = ids(1);
        let mut out = Vec::new();
        let mut a = Append {
            user: "u",
            prev: NONE,
            first_seq: 1,
            last_seq: 1,
            ts_ms: 0,
            ids: &ids,
            events: b"[]",
        };
        encode_append(&mut out, &a);
        let last = out.len() - 1;
        out[last] ^= 1;
        assert!(frame(&out).is_none(), "a flipped bit fails the checksum");
        assert!(frame(&out[..out.len() - 1]).is_none(), "a short frame");
        // One id for two seqs: the fields do not add up.
        a.last_seq = 2;
        let mut out = Vec::new();
        encode_append(&mut out, &a);
        assert_eq!(parse(frame(&out).unwrap().0), None);
    }
}
