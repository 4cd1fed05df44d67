//! Segment files by name, positional reads, and the directory lock.

use crate::frame::{put_mark, MARK_LEN};
use crate::Error;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The segment beginning at `base`: `<dir>/<base, 20 digits>.<ext>`, so
/// that names sort like bases.
pub fn segment_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// The bases of the segments (files named `<base>.<ext>`) in `dir`,
/// ascending. Other files are not segments and are left out.
pub fn list(dir: &Path, ext: &str) -> Result<Vec<u64>, Error> {
    let io = || Error::io(format!("listing {}", dir.display()));
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io())? {
        let name = entry.map_err(io())?.file_name();
        bases.extend(
            name.to_str()
                .and_then(|n| n.strip_suffix(ext)?.strip_suffix('.'))
                .and_then(|n| n.parse::<u64>().ok()),
        );
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Where the first write of a new segment goes: after its opening mark.
pub const SEGMENT_START: u64 = MARK_LEN as u64;

/// Create the segment beginning at `base`, for reading and writing, holding
/// only the empty commit mark that says it is written with marks (so that
/// a torn first write is known as one), durably: its name and mark must
/// survive a crash before any frame in it is acknowledged. Fails if it
/// exists.
pub fn create(dir: &Path, base: u64, ext: &str) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(segment_path(dir, base, ext))?;
    let mut opening = Vec::with_capacity(MARK_LEN);
    put_mark(&mut opening, 0);
    file.write_all_at(&opening, 0)?;
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// Fill `buf` from byte `at` of `file` on, stopping early only at the end
/// of the file; returns the bytes read. For a frame whose length is not
/// known before its header is read.
pub fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Take the exclusive lock (flock) on `dir/name`, creating the file if
/// needed, so that one process at a time owns the files in `dir`; held as
/// long as the returned file is open. [`Error::Locked`] if another holds
/// it.
pub fn lock_dir(dir: &Path, name: &str) -> Result<File, Error> {
    let path = dir.join(name);
    let io = || Error::io(format!("locking {}", path.display()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io())?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(e) => Err(io()(e.into())),
    }
}
