//! The capture's writing thread.
//!
//! Writing to the file costs as much as the rest of capture together, so it
//! runs on a thread of its own beside the stack. Jobs are taken in order and
//! the queue is bounded: a slow disk or reader holds the stack back rather
//! than losing frames.
//!
//! A capture file on a disk is opened with `O_DIRECT` where the file system
//! allows it. A buffered write copies every byte into the page cache, and
//! here that copy (with the page cache's accounting and writeback) moved
//! under 300 MB/s at a whole core's cost, against 2 GB/s for direct writes
//! of the same bytes: a full-speed capture is bounded by it. Direct writes
//! must be whole aligned blocks at aligned offsets, so the thread stages
//! bytes in an aligned buffer and writes the whole blocks; when nothing
//! more is queued for the file, the last partial block goes through the
//! page cache (`O_DIRECT` off for that one write), so that what was
//! reported written is in the file, and the next direct write writes that
//! block again, longer.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// Alignment and size granularity of direct writes: the page size, a
/// multiple of any disk's logical block.
const ALIGN: usize = 4096;
/// Bytes staged for one direct write.
const STAGE: usize = 4 << 20;
/// Buffers queued ahead of the writing thread.
pub(super) const DISK_QUEUE: usize = 8;

/// What the writing thread is asked to do, in order.
pub(super) enum Job {
    /// Append the bytes to file `n`.
    Write(usize, Vec<u8>),
    /// Empty file `n` and start over at its beginning (rotation).
    Reset(usize),
}

/// What became of a job: the buffer back, how many of its bytes reached
/// the file, and the error that stopped the capture, if one did.
pub(super) struct JobDone {
    pub buf: Vec<u8>,
    pub written: usize,
    pub error: Option<Arc<io::Error>>,
}

/// One output file, and how it is written.
pub(super) struct DiskFile {
    file: File,
    /// Opened with `O_DIRECT`: written in whole blocks from `base`.
    direct: bool,
    /// The file offset where the staged bytes begin (block-aligned).
    base: u64,
}

impl DiskFile {
    /// A file written from its current position with plain writes (stdout,
    /// a pipe, or a file system without direct I/O).
    pub fn buffered(file: File) -> DiskFile {
        DiskFile {
            file,
            direct: false,
            base: 0,
        }
    }

    /// A file opened with `O_DIRECT` and empty.
    pub fn direct(file: File) -> DiskFile {
        DiskFile {
            file,
            direct: true,
            base: 0,
        }
    }
}

/// The writing thread's side of the queue.
pub(super) struct Disk {
    pub jobs: SyncSender<Job>,
    /// Bounded too (no allocation per answer); whoever waits on a full
    /// job queue takes answers meanwhile, so neither side waits forever.
    pub done: Receiver<JobDone>,
}

impl Disk {
    pub fn spawn(files: Vec<DiskFile>) -> io::Result<Disk> {
        let (jobs, todo) = std::sync::mpsc::sync_channel::<Job>(DISK_QUEUE);
        let (back, done) = std::sync::mpsc::sync_channel(2 * DISK_QUEUE);
        crate::spawn_started("pcap-writer", move || run(files, &todo, &back))?;
        Ok(Disk { jobs, done })
    }
}

fn run(mut files: Vec<DiskFile>, todo: &Receiver<Job>, back: &SyncSender<JobDone>) {
    let mut error: Option<Arc<io::Error>> = None;
    // Made on the first direct write: a pipe or stdout never needs it.
    let mut stage: Option<Stage> = None;
    // The file whose bytes are staged.
    let mut staged_for = None;
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match todo.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        // One job of lookahead: whether more comes at once for this file.
        next = todo.try_recv().ok();
        let (buf, written) = match job {
            Job::Write(n, buf) if error.is_none() => {
                if staged_for != Some(n) {
                    if let Some(s) = &mut stage {
                        s.clear();
                    }
                    staged_for = Some(n);
                }
                let more = matches!(next, Some(Job::Write(m, _)) if m == n);
                let out = &mut files[n];
                let result = if out.direct {
                    let stage = stage.get_or_insert_with(Stage::new);
                    append_direct(out, stage, &buf, !more).map(|()| buf.len())
                } else {
                    write_all(&mut out.file, &buf)
                };
                match result {
                    Ok(written) => (buf, written),
                    Err((e, written)) => {
                        error = Some(Arc::new(e));
                        (buf, written)
                    }
                }
            }
            Job::Write(_, buf) => (buf, 0),
            Job::Reset(n) => {
                let out = &mut files[n];
                if let Some(s) = &mut stage {
                    s.clear();
                }
                staged_for = None;
                out.base = 0;
                let reset = out.file.set_len(0).and_then(|()| {
                    use std::io::Seek;
                    out.file.rewind()
                });
                if let Err(e) = reset {
                    error.get_or_insert(Arc::new(e));
                }
                (Vec::new(), 0)
            }
        };
        let answer = JobDone {
            buf,
            written,
            error: error.clone(),
        };
        if back.send(answer).is_err() {
            return;
        }
    }
}

/// Bytes waiting for a direct write, in a block-aligned region.
struct Stage {
    buf: Vec<u8>,
    /// Where the aligned region starts in `buf`.
    start: usize,
    len: usize,
}

impl Stage {
    fn new() -> Stage {
        // Made once; pages are touched only as the capture fills them.
        let buf = vec![0u8; STAGE + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Stage { buf, start, len: 0 }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// Copies as much of `data` as fits; returns how much.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(STAGE - self.len);
        let at = self.start + self.len;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Drops the first `n` bytes, moving the rest to the front.
    fn drop_front(&mut self, n: usize) {
        let from = self.start + n;
        self.buf
            .copy_within(from..self.start + self.len, self.start);
        self.len -= n;
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// Appends `data` to a direct file: whole blocks now, and with `settle`
/// the last partial block too (see the module's note).
fn append_direct(
    out: &mut DiskFile,
    stage: &mut Stage,
    mut data: &[u8],
    settle: bool,
) -> Result<(), (io::Error, usize)> {
    let total = data.len();
    while !data.is_empty() {
        let n = stage.push(data);
        data = &data[n..];
        if stage.len == STAGE {
            // Bytes of this job not yet staged did not reach the file.
            write_blocks(out, stage).map_err(|e| (e, 0))?;
        }
    }
    write_blocks(out, stage).map_err(|e| (e, 0))?;
    if settle && stage.len > 0 {
        write_tail(out, stage).map_err(|e| (e, 0))?;
    }
    debug_assert!(total == 0 || stage.len < ALIGN);
    Ok(())
}

/// Writes the whole blocks staged, at the file's aligned offset.
fn write_blocks(out: &mut DiskFile, stage: &mut Stage) -> io::Result<()> {
    let whole = stage.len / ALIGN * ALIGN;
    if whole == 0 {
        return Ok(());
    }
    write_all_at(&out.file, &stage.bytes()[..whole], out.base)?;
    out.base += whole as u64;
    stage.drop_front(whole);
    Ok(())
}

/// Writes the staged partial block through the page cache, leaving it
/// staged (the next direct write covers it again).
fn write_tail(out: &mut DiskFile, stage: &Stage) -> io::Result<()> {
    set_direct(&out.file, false)?;
    let written = write_all_at(&out.file, stage.bytes(), out.base);
    set_direct(&out.file, true)?;
    written
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(file.as_fd(), FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_DIRECT
    } else {
        flags - OFlag::O_DIRECT
    };
    fcntl(file.as_fd(), FcntlArg::F_SETFL(flags))?;
    Ok(())
}

fn write_all_at(file: &File, mut buf: &[u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `buf` to `file`, waiting when a non-blocking one is full (stdout
/// may be one), never dropping; on an error, returns it with the bytes
/// written before it.
fn write_all(file: &mut File, buf: &[u8]) -> Result<usize, (io::Error, usize)> {
    let mut done = 0;
    while done < buf.len() {
        match file.write(&buf[done..]) {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), done)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_writable(file).map_err(|e| (e, done))?;
            }
            Err(e) => return Err((e, done)),
        }
    }
    Ok(done)
}

fn wait_writable(file: &File) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLOUT)];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of cutting a stream into jobs, settled or not between
    /// them, leaves the same bytes in a direct file as were given.
    #[test]
    fn direct_writes_keep_every_byte_in_order() {
        // The temporary directory, or (where that is a tmpfs without direct
        // I/O) the build's own target directory, which is on a disk.
        let name = format!("smolvisor-disk-{}", std::process::id());
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        let (dir, file) = [std::env::temp_dir().join(&name), target.join(&name)]
            .into_iter()
            .find_map(|dir| {
                std::fs::create_dir_all(&dir).ok()?;
                match open_direct(&dir.join("direct")) {
                    Some(f) => Some((dir, f)),
                    None => {
                        let _ = std::fs::remove_dir_all(&dir);
                        None
                    }
                }
            })
            .expect("a directory whose file system takes O_DIRECT");
        let path = dir.join("direct");
        let mut out = DiskFile::direct(file);
        let mut stage = Stage::new();
        let mut want = Vec::new();
        let mut x = 0x2545_f491u32;
        for round in 0..300 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Sizes from a few bytes to beyond the stage.
            let len = if round % 50 == 7 {
                STAGE + 12_345
            } else {
                (x % 70_000) as usize
            };
            let data: Vec<u8> = (0..len).map(|i| (i as u32 ^ x) as u8).collect();
            append_direct(&mut out, &mut stage, &data, x & 3 == 0)
                .map_err(|(e, _)| e)
                .unwrap();
            want.extend_from_slice(&data);
            if x & 3 == 0 {
                let got = std::fs::read(&path).unwrap();
                assert_eq!(got.len(), want.len(), "round {round}");
                assert!(got == want, "round {round}: bytes differ");
            }
        }
        append_direct(&mut out, &mut stage, &[], true)
            .map_err(|(e, _)| e)
            .unwrap();
        assert!(std::fs::read(&path).unwrap() == want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn open_direct(path: &std::path::Path) -> Option<File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(OFlag::O_DIRECT.bits())
            .open(path)
            .ok()
    }
}
