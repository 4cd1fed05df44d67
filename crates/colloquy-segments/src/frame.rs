//! Frames: the length and checksum around a body, and a reader of bodies.

/// Frame header: body length and checksum.
pub const FRAME_HEADER: usize = 8;

/// The largest body a frame may hold. Reads check against this, never
/// against a configured limit, so that lowering a limit never makes stored
/// frames look damaged.
pub const MAX_BODY: usize = 64 << 20;

/// Start a frame at the end of `out`: reserve its header, to be filled by
/// [`seal`] once the body has been appended after it. Returns where the
/// frame starts.
#[inline]
pub fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    start
}

/// Finish the frame [`begin`] started at `start`: everything after its
/// header is its body. The caller keeps bodies within [`MAX_BODY`].
#[inline]
pub fn seal(out: &mut [u8], start: usize) {
    let body = &out[start + FRAME_HEADER..];
    let (len, crc) = (body.len() as u32, crc32fast::hash(body));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The length of the frame starting `data`, if its header is plausible: a
/// body of `min_body..=MAX_BODY` bytes. Says how much to read before
/// [`frame`] can check it.
#[inline]
pub fn frame_len(data: &[u8], min_body: usize) -> Option<usize> {
    let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    (min_body..=MAX_BODY)
        .contains(&len)
        .then_some(FRAME_HEADER + len)
}

/// The checksummed body of the frame starting `data`, and the frame's
/// length; `None` if it is implausible (see [`frame_len`]), incomplete or
/// damaged.
#[inline]
pub fn frame(data: &[u8], min_body: usize) -> Option<(&[u8], usize)> {
    let len = frame_len(data, min_body)?;
    let body = data.get(FRAME_HEADER..len)?;
    (crc32fast::hash(body) == crc(data)).then_some((body, len))
}

/// The first word of a commit mark. Above [`MAX_BODY`], so no frame header
/// starts with it, and a scan tells the two apart by their first word.
const MARK_TAG: u32 = 0xC011_0C0A;

/// Bytes of a commit mark: its tag and the length of the group it closes.
pub const MARK_LEN: usize = 12;

/// Close a group commit: append the mark that says the `out.len()` bytes
/// before it are one write. A writer calls it on the bytes of each write,
/// just before writing them, so that a scan can tell a write torn by a
/// crash (its mark missing or its frames damaged) from damage to earlier,
/// acknowledged writes (see [`crate::scan`]).
#[inline]
pub fn commit(out: &mut Vec<u8>) {
    let group = out.len() as u64;
    put_mark(out, group);
}

pub(crate) fn put_mark(out: &mut Vec<u8>, group: u64) {
    out.extend_from_slice(&MARK_TAG.to_le_bytes());
    out.extend_from_slice(&group.to_le_bytes());
}

/// The group length of the commit mark starting `data`, if one does.
#[inline]
pub fn mark(data: &[u8]) -> Option<u64> {
    let mark = data.get(..MARK_LEN)?;
    (mark[..4] == MARK_TAG.to_le_bytes())
        .then(|| u64::from_le_bytes(mark[4..].try_into().expect("8 bytes")))
}

/// The checksum field of a frame whose header is present.
#[inline]
pub(crate) fn crc(data: &[u8]) -> u32 {
    u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"))
}

/// Reads little-endian fields off the front of a body; every read is
/// `None` once the body runs short, so a decoder of stored bytes never
/// panics.
#[derive(Debug, Clone, Copy)]
pub struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    #[inline]
    pub fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor(data)
    }

    #[inline]
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    #[inline]
    pub fn u8(&mut self) -> Option<u8> {
        self.array().map(u8::from_le_bytes)
    }

    #[inline]
    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    #[inline]
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    #[inline]
    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    #[inline]
    pub fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    /// Bytes preceded by their length as a `u16`.
    #[inline]
    pub fn bytes16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(len.into())
    }

    /// Bytes preceded by their length as a `u32`.
    #[inline]
    pub fn bytes32(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()?;
        self.take(len as usize)
    }

    /// Whatever is left: the last field of a body takes the rest.
    #[inline]
    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            let start = begin(&mut out);
            out.extend_from_slice(body);
            seal(&mut out, start);
        }
        out
    }

    #[test]
    fn frames_round_trip() {
        let out = framed(&[b"first", b"", b"third body"]);
        let (body, len) = frame(&out, 0).unwrap();
        assert_eq!((body, len), (&b"first"[..], FRAME_HEADER + 5));
        assert_eq!(frame_len(&out, 0), Some(len));
        let (body, second) = frame(&out[len..], 0).unwrap();
        assert_eq!((body, second), (&b""[..], FRAME_HEADER));
        let (body, third) = frame(&out[len + second..], 0).unwrap();
        assert_eq!(body, b"third body");
        assert_eq!(len + second + third, out.len());
    }

    #[test]
    fn damage_is_caught() {
        let mut out = framed(&[b"a body"]);
        assert!(frame(&out[..out.len() - 1], 0).is_none(), "cut short");
        assert!(frame(&out[..3], 0).is_none(), "not even a length");
        assert_eq!(frame_len(&out, 7), None, "a body shorter than allowed");
        assert!(frame(&out, 7).is_none());
        let last = out.len() - 1;
        out[last] ^= 1;
        assert!(frame(&out, 0).is_none(), "a flipped bit fails the checksum");
        out[last] ^= 1;
        out[5] ^= 1;
        assert!(frame(&out, 0).is_none(), "so does a flipped checksum");
        let huge = ((MAX_BODY + 1) as u32).to_le_bytes();
        assert_eq!(frame_len(&huge, 0), None, "no body is that long");
    }

    #[test]
    fn a_cursor_reads_fields_and_stops_at_the_end() {
        let mut body = vec![7u8];
        body.extend_from_slice(&513u16.to_le_bytes());
        body.extend_from_slice(&70_000u32.to_le_bytes());
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        body.extend_from_slice(&(-5i64).to_le_bytes());
        body.extend_from_slice(&2u16.to_le_bytes());
        body.extend_from_slice(b"hi");
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"you");
        body.extend_from_slice(b"rest");
        let mut c = Cursor::new(&body);
        assert_eq!(c.u8(), Some(7));
        assert_eq!(c.u16(), Some(513));
        assert_eq!(c.u32(), Some(70_000));
        assert_eq!(c.u64(), Some(u64::MAX));
        assert_eq!(c.i64(), Some(-5));
        assert_eq!(c.bytes16(), Some(&b"hi"[..]));
        assert_eq!(c.bytes32(), Some(&b"you"[..]));
        assert_eq!(c.rest(), b"rest");

        // Reads past the end fail and take nothing.
        let mut c = Cursor::new(&[1, 2, 3]);
        assert_eq!(c.u32(), None);
        assert_eq!(c.take(4), None);
        assert_eq!(c.u16(), Some(0x0201));
        assert_eq!(c.u16(), None);
        assert_eq!(c.rest(), [3]);
        // A length prefix longer than what follows.
        let mut c = Cursor::new(&[5, 0, b'a']);
        assert_eq!(c.bytes16(), None);
        let mut c = Cursor::new(&[]);
        assert_eq!(c.u8(), None);
        assert_eq!(c.take(0), Some(&[][..]));
    }
}
