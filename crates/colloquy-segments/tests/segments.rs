//! Segment files on disk: listing, the scan on open and its torn-tail rule,
//! positional reads and the directory lock.

use colloquy_segments::{
    begin, create, frame, list, lock_dir, read_at_most, scan, seal, segment_path, Error, Frames,
    Scanned, FRAME_HEADER,
};
use std::path::Path;

/// Bodies are a one-byte sequence number and filler; a frame belongs where
/// its number is the next one, as the bus's offsets do.
const MIN_BODY: usize = 1;

fn framed(seqs: impl IntoIterator<Item = u8>, filler: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for seq in seqs {
        let start = begin(&mut out);
        out.push(seq);
        out.resize(out.len() + filler, b'.');
        seal(&mut out, start);
    }
    out
}

#[derive(Default)]
struct Numbered {
    /// (byte position, sequence number) of every frame taken.
    seen: Vec<(u64, u8)>,
    /// Bodies `follows` was asked about.
    asked: usize,
    /// Fail the scan on this sequence number.
    fail_on: Option<u8>,
}

impl Numbered {
    fn next(&self) -> u8 {
        self.seen.len() as u8
    }
}

impl Frames for Numbered {
    type Error = Error;

    fn visit(&mut self, at: u64, body: &[u8]) -> Result<bool, Error> {
        if self.fail_on == Some(body[0]) {
            return Err(Error::Io {
                context: "refused".into(),
                source: std::io::Error::other("by the caller"),
            });
        }
        let take = body[0] == self.next();
        if take {
            self.seen.push((at, body[0]));
        }
        Ok(take)
    }

    fn follows(&mut self, body: &[u8]) -> bool {
        self.asked += 1;
        body[0] > self.next()
    }
}

fn scan_file(path: &Path, last: bool) -> (Result<Scanned, Error>, Numbered) {
    let mut frames = Numbered::default();
    (scan(path, MIN_BODY, last, &mut frames), frames)
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn segments_are_named_and_listed_by_base() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 42, "seg");
    assert_eq!(path, dir.path().join("00000000000000000042.seg"));
    for base in [300, 7, 0] {
        create(dir.path(), base, "seg").unwrap();
    }
    create(dir.path(), 5, "log").unwrap();
    for other in ["LOCK", "x.seg", "12.seg.tmp", "00000000000000000009seg"] {
        std::fs::write(dir.path().join(other), b"").unwrap();
    }
    assert_eq!(list(dir.path(), "seg").unwrap(), [0, 7, 300]);
    assert_eq!(list(dir.path(), "log").unwrap(), [5]);
    assert!(
        create(dir.path(), 7, "seg").is_err(),
        "never over a segment"
    );
    assert!(matches!(
        list(&dir.path().join("missing"), "seg"),
        Err(Error::Io { .. })
    ));
}

#[test]
fn a_scan_visits_every_frame_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.seg");
    let data = framed(0..10, 20);
    std::fs::write(&path, &data).unwrap();
    let (scanned, frames) = scan_file(&path, false);
    let frame_len = (FRAME_HEADER + 21) as u64;
    assert_eq!(
        scanned.unwrap(),
        Scanned {
            len: data.len() as u64,
            dropped: 0
        }
    );
    let expected: Vec<(u64, u8)> = (0..10).map(|i| (i as u64 * frame_len, i)).collect();
    assert_eq!(frames.seen, expected);

    std::fs::write(&path, b"").unwrap();
    let (scanned, frames) = scan_file(&path, true);
    assert_eq!(scanned.unwrap(), Scanned { len: 0, dropped: 0 });
    assert!(frames.seen.is_empty());
}

/// Chunks of the scan end inside frames, and a frame may be larger than a
/// chunk.
#[test]
fn a_scan_reads_across_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.seg");
    let mut data = framed(0..9, 1 << 20);
    data.extend(framed([9], 9 << 20));
    data.extend(framed([10], 5));
    std::fs::write(&path, &data).unwrap();
    let (scanned, frames) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, data.len() as u64);
    assert_eq!(frames.seen.len(), 11);
    assert_eq!(frames.seen[10].0 as usize, data.len() - FRAME_HEADER - 6);
}

#[test]
fn a_torn_tail_of_the_last_segment_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.seg");
    let whole = framed(0..3, 10);
    let next = framed([3], 10);
    for torn in [
        &next[..3],                // not even a length
        &next[..FRAME_HEADER + 4], // a header and part of the body
        &next[..next.len() - 1],   // all but the last byte
    ] {
        let data = [whole.as_slice(), torn].concat();
        std::fs::write(&path, &data).unwrap();
        let (scanned, frames) = scan_file(&path, true);
        assert_eq!(
            scanned.unwrap(),
            Scanned {
                len: whole.len() as u64,
                dropped: torn.len() as u64
            }
        );
        assert_eq!(frames.seen.len(), 3);
        assert_eq!(len(&path), whole.len() as u64, "cut off on disk");
    }

    // A whole frame that damage made unreadable, as the last one.
    let mut data = [whole.as_slice(), &next].concat();
    let end = data.len() - 1;
    data[end] ^= 1;
    std::fs::write(&path, &data).unwrap();
    let (scanned, _) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, whole.len() as u64);
    assert_eq!(len(&path), whole.len() as u64);

    // A whole frame that does not belong there, as the last one.
    std::fs::write(&path, [whole.as_slice(), &framed([7], 10)].concat()).unwrap();
    let (scanned, _) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, whole.len() as u64);
}

#[test]
fn damage_in_a_segment_before_the_last_is_never_forgiven() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.seg");
    let whole = framed(0..3, 10);
    let data = [whole.as_slice(), &framed([3], 10)[..5]].concat();
    std::fs::write(&path, &data).unwrap();
    let (scanned, frames) = scan_file(&path, false);
    match scanned {
        Err(Error::Damaged {
            path: named,
            at,
            follows: None,
        }) => assert_eq!((named, at), (path.clone(), whole.len() as u64)),
        other => panic!("{other:?}"),
    }
    assert_eq!(frames.asked, 0, "no search for what follows");
    assert_eq!(len(&path), data.len() as u64, "left as it was");
}

#[test]
fn damage_followed_by_a_valid_frame_is_never_forgiven() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.seg");
    let mut data = framed(0..4, 10);
    let frame_len = data.len() / 4;
    data[frame_len + FRAME_HEADER + 3] ^= 1;
    std::fs::write(&path, &data).unwrap();
    let (scanned, frames) = scan_file(&path, true);
    let err = scanned.unwrap_err();
    match &err {
        Error::Damaged { at, follows, .. } => {
            assert_eq!(
                (*at, *follows),
                (frame_len as u64, Some(2 * frame_len as u64))
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(frames.seen.len(), 1);
    assert_eq!(len(&path), data.len() as u64, "left as it was");

    // A whole frame that `follows` refuses does not count: a cut.
    let mut data = framed(0..2, 10);
    data.extend(framed([0], 10));
    data[frame_len + 5] ^= 1;
    std::fs::write(&path, &data).unwrap();
    let (scanned, frames) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, frame_len as u64);
    assert!(frames.asked > 0);

    // Nor does one that `follows` takes but whose checksum fails.
    let mut data = framed(0..3, 10);
    data[frame_len + 5] ^= 1;
    data[2 * frame_len + FRAME_HEADER + 2] ^= 1;
    std::fs::write(&path, &data).unwrap();
    let (scanned, _) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, frame_len as u64);
}

#[test]
fn a_visitor_error_stops_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.seg");
    std::fs::write(&path, framed(0..3, 10)).unwrap();
    let mut frames = Numbered {
        fail_on: Some(1),
        ..Numbered::default()
    };
    let err = scan(&path, MIN_BODY, true, &mut frames).unwrap_err();
    assert_eq!(err.to_string(), "refused: by the caller");
    assert_eq!(frames.seen.len(), 1);
    assert_eq!(frames.asked, 0);
}

#[test]
fn frames_are_read_back_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.seg");
    let data = framed(0..2, 100);
    std::fs::write(&path, &data).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let second = data.len() / 2;
    let mut buf = vec![0; 4096];
    let got = read_at_most(&file, &mut buf, second as u64).unwrap();
    assert_eq!(got, data.len() - second, "stops at the end of the file");
    let (body, _) = frame(&buf[..got], MIN_BODY).unwrap();
    assert_eq!(body[0], 1);
    assert_eq!(read_at_most(&file, &mut buf, 10_000).unwrap(), 0);
}

#[test]
fn the_lock_refuses_a_second_holder() {
    let dir = tempfile::tempdir().unwrap();
    let held = lock_dir(dir.path(), "LOCK").unwrap();
    match lock_dir(dir.path(), "LOCK") {
        Err(Error::Locked { dir: locked }) => assert_eq!(locked, dir.path()),
        other => panic!("{other:?}"),
    }
    // Another name is another lock.
    let other = lock_dir(dir.path(), "OTHER").unwrap();
    drop(held);
    lock_dir(dir.path(), "LOCK").expect("free once the holder is gone");
    drop(other);
}
