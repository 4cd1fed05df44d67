//! Segment files on disk: listing, the scan on open and its torn-tail rule,
//! positional reads and the directory lock.

use colloquy_segments::{
    begin, commit, create, frame, list, lock_dir, read_at_most, scan, seal, segment_path, Error,
    Frames, Scanned, FRAME_HEADER, MARK_LEN, SEGMENT_START,
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

/// One write: the frames and the commit mark that closes them.
fn write(seqs: impl IntoIterator<Item = u8>, filler: usize) -> Vec<u8> {
    let mut out = framed(seqs, filler);
    commit(&mut out);
    out
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

    // The last segment is closed with a mark, for the next write to start
    // a group of its own; a segment from before marks gets one too.
    let (scanned, _) = scan_file(&path, true);
    let closed = (data.len() + MARK_LEN) as u64;
    assert_eq!(
        scanned.unwrap(),
        Scanned {
            len: closed,
            dropped: 0
        }
    );
    assert_eq!(len(&path), closed);
    let (scanned, frames) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, closed, "closed once");
    assert_eq!(frames.seen.len(), 10);

    std::fs::write(&path, b"").unwrap();
    let (scanned, frames) = scan_file(&path, true);
    let opened = Scanned {
        len: SEGMENT_START,
        dropped: 0,
    };
    assert_eq!(scanned.unwrap(), opened);
    assert!(frames.seen.is_empty());
    assert_eq!(scan_file(&path, true).0.unwrap(), opened);
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
    let (scanned, frames) = scan_file(&path, false);
    assert_eq!(scanned.unwrap().len, data.len() as u64);
    assert_eq!(frames.seen.len(), 11);
    assert_eq!(frames.seen[10].0 as usize, data.len() - FRAME_HEADER - 6);
}

#[test]
fn a_torn_tail_of_the_last_segment_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.seg");
    let whole = framed(0..3, 10);
    let closed = (whole.len() + MARK_LEN) as u64;
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
                len: closed,
                dropped: torn.len() as u64
            }
        );
        assert_eq!(frames.seen.len(), 3);
        assert_eq!(len(&path), closed, "cut off and closed on disk");
    }

    // A whole frame that damage made unreadable, as the last one.
    let mut data = [whole.as_slice(), &next].concat();
    let end = data.len() - 1;
    data[end] ^= 1;
    std::fs::write(&path, &data).unwrap();
    let (scanned, _) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, closed);
    assert_eq!(len(&path), closed);

    // A whole frame that does not belong there, as the last one.
    std::fs::write(&path, [whole.as_slice(), &framed([7], 10)].concat()).unwrap();
    let (scanned, _) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, closed);
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
    assert_eq!(scanned.unwrap().len, (frame_len + MARK_LEN) as u64);
    assert!(frames.asked > 0);

    // Nor does one that `follows` takes but whose checksum fails.
    let mut data = framed(0..3, 10);
    data[frame_len + 5] ^= 1;
    data[2 * frame_len + FRAME_HEADER + 2] ^= 1;
    std::fs::write(&path, &data).unwrap();
    let (scanned, _) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, (frame_len + MARK_LEN) as u64);
}

/// Writers sync one write before they make the next, so only the last
/// write can be torn, and anywhere inside: a crash may lose a page in its
/// middle while later ones (its mark too) reached the disk.
#[test]
fn a_write_torn_in_its_middle_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), 0, "seg").unwrap();
    let path = segment_path(dir.path(), 0, "seg");
    let first = write(0..3, 10);
    let frame_len = (FRAME_HEADER + 11) as u64;
    let acknowledged = SEGMENT_START + first.len() as u64;
    let mut torn = write(3..6, 10);
    torn[frame_len as usize + FRAME_HEADER + 4] ^= 1; // frame 4 of 3, 4, 5
    let data = [std::fs::read(&path).unwrap(), first.clone(), torn.clone()].concat();
    std::fs::write(&path, &data).unwrap();

    let (scanned, frames) = scan_file(&path, true);
    let kept = acknowledged + frame_len; // frame 3 is whole: it stays
    assert_eq!(
        scanned.unwrap(),
        Scanned {
            len: kept + MARK_LEN as u64,
            dropped: data.len() as u64 - kept,
        }
    );
    assert_eq!(
        frames.seen.iter().map(|s| s.1).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(len(&path), kept + MARK_LEN as u64, "cut off and closed");

    // What stays is whole, and the log goes on from it.
    let mut file = std::fs::read(&path).unwrap();
    file.extend(write(4..6, 10));
    std::fs::write(&path, &file).unwrap();
    let (scanned, frames) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, file.len() as u64);
    assert_eq!(frames.seen.len(), 6);

    // The same when the torn write is the segment's first.
    let opening = std::fs::read(&path).unwrap()[..MARK_LEN].to_vec();
    let mut torn = write(0..3, 10);
    torn[FRAME_HEADER + 1] ^= 1;
    let data = [opening, torn].concat();
    std::fs::write(&path, &data).unwrap();
    let (scanned, frames) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, SEGMENT_START);
    assert!(frames.seen.is_empty());
    assert_eq!(len(&path), SEGMENT_START);
}

#[test]
fn damage_before_a_whole_write_is_never_forgiven() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), 0, "seg").unwrap();
    let path = segment_path(dir.path(), 0, "seg");
    let mut first = write(0..3, 10);
    first[FRAME_HEADER + 2] ^= 1; // frame 0
    let second = write(3..5, 10);
    let data = [std::fs::read(&path).unwrap(), first.clone(), second].concat();
    std::fs::write(&path, &data).unwrap();
    match scan_file(&path, true).0 {
        Err(Error::Damaged { at, follows, .. }) => {
            assert_eq!(
                (at, follows),
                (SEGMENT_START, Some(SEGMENT_START + first.len() as u64))
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(len(&path), data.len() as u64, "left as it was");

    // A mark that does not close exactly the frames before it is damage.
    let mut data = [
        std::fs::read(&path).unwrap()[..MARK_LEN].to_vec(),
        framed(0..2, 10),
    ]
    .concat();
    let mut wrong = framed([], 0);
    commit(&mut wrong);
    data.extend(&wrong);
    std::fs::write(&path, &data).unwrap();
    assert!(matches!(
        scan_file(&path, false).0,
        Err(Error::Damaged { follows: None, .. })
    ));
}

/// A segment written before marks existed keeps the rule it had: damage
/// followed by a whole frame is not forgiven. From its first marked write
/// on, the rule of writes applies.
#[test]
fn a_segment_from_before_marks_is_marked_from_its_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.seg");
    let old = framed(0..3, 10);
    std::fs::write(&path, &old).unwrap();
    let (scanned, _) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, (old.len() + MARK_LEN) as u64);
    let mut data = std::fs::read(&path).unwrap();
    let mut torn = write(3..6, 10);
    torn[FRAME_HEADER + 1] ^= 1; // frame 3
    data.extend(&torn);
    std::fs::write(&path, &data).unwrap();
    let (scanned, frames) = scan_file(&path, true);
    assert_eq!(scanned.unwrap().len, (old.len() + MARK_LEN) as u64);
    assert_eq!(frames.seen.len(), 3);

    let mut data = std::fs::read(&path).unwrap();
    data[FRAME_HEADER + 1] ^= 1; // frame 0, written before marks
    std::fs::write(&path, &data).unwrap();
    match scan_file(&path, true).0 {
        Err(Error::Damaged { at: 0, follows, .. }) => assert!(follows.is_some()),
        other => panic!("{other:?}"),
    }
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
