//! pcapng capture of every frame a stack sends and receives, on every NIC.
//!
//! A [`Capture`] owns the output: one file (or an already-open descriptor
//! such as stdout), or a ring of files opened up front. Each NIC registers
//! an interface with it, and a [`Sniffer`] wraps the NIC's link: every frame
//! the link yields or is given is encoded as an Enhanced Packet Block (with
//! its direction) into an in-memory buffer, which goes to the file in large
//! writes. The Sentry runs under a seccomp filter that forbids `open`, so
//! rotation never opens anything: it truncates and rewinds a file opened at
//! construction. Writes block rather than drop frames; a failed write stops
//! the capture, and every frame not written is counted and reported by
//! [`Capture::finish`] and in the Interface Statistics Blocks.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration as StdDuration, SystemTime};

use nix::fcntl::OFlag;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::{DataLink, Endianness};
use smoltcp::time::{Duration, Instant};

use super::{Layer, Layered, Link, Medium, pass_on};

mod disk;
use disk::{DISK_QUEUE, Disk, DiskFile, Job};

/// Encoded bytes held in memory before they are written out in one go.
const BUFFER_BYTES: usize = 1 << 20;
/// At the end of a stack poll, write out once this much is buffered...
const FLUSH_BYTES: usize = 64 << 10;
/// ...or once the oldest buffered frame is this old, so a live reader
/// (`--pcap-log - | wireshark -k -i -`) is never far behind.
const FLUSH_DELAY: Duration = Duration::from_millis(100);
/// pcapng `if_tsresol`: timestamps in units of 10^-9 s. pcap-file 2.0 always
/// writes an EPB's timestamp as nanoseconds, so this must be 9.
const TSRESOL_NANOS: u8 = 9;
/// Size of one Interface Statistics Block as `finish` writes it: block
/// framing 12, interface and timestamp 12, two 64-bit options 24, end 4.
const ISB_BYTES: u64 = 52;
/// pcapng `epb_flags` direction bits.
const EPB_INBOUND: u32 = 0b01;
const EPB_OUTBOUND: u32 = 0b10;
/// pcapng `epb_flags` link-layer error bit: CRC error.
const EPB_CRC_ERROR: u32 = 1 << 24;

/// Where capture timestamps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaptureClock {
    /// The real time of day, in nanoseconds.
    #[default]
    Wall,
    /// `epoch` (since 1970) plus the stack's `now`: with a simulated clock,
    /// the same run gives a byte-identical file.
    Stack {
        /// Time of day that the stack's instant zero stands for.
        epoch: StdDuration,
    },
}

/// A ring of capture files, as `dumpcap -b filesize -b files` or `tcpdump -C -W`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    /// A file is closed before it would grow beyond this many bytes (unless
    /// one frame alone does not fit: each file holds at least one frame).
    pub max_size: u64,
    /// Number of files: `FILE`, `FILE.1`, … `FILE.<max_files - 1>`, reused
    /// in turn, so the oldest is overwritten.
    pub max_files: usize,
}

/// How to capture.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureConfig {
    /// Bytes kept of each frame (the original length is recorded too);
    /// 0 keeps whole frames.
    pub snaplen: u32,
    /// Rotate through several files instead of growing one.
    pub ring: Option<Ring>,
    /// Timestamps.
    pub clock: CaptureClock,
}

/// Why a capture cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A capture file could not be created.
    #[error("cannot create capture file {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Rotation names its files after a path, so it needs one.
    #[error("a ring of capture files needs a file name, not an open descriptor")]
    RingNeedsPath,
    /// A ring needs at least one file and room for something in each.
    #[error("invalid capture ring: {max_files} files of at most {max_size} bytes")]
    InvalidRing {
        /// Requested size bound.
        max_size: u64,
        /// Requested number of files.
        max_files: usize,
    },
    /// The thread that writes the capture could not start.
    #[error("cannot start the capture's writing thread: {0}")]
    Thread(io::Error),
}

/// Frame counts of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceCounts {
    /// Interface name.
    pub name: String,
    /// Frames the sniffer saw.
    pub seen: u64,
    /// Frames written to the output (in a ring, maybe overwritten since).
    pub written: u64,
    /// Frames not written because writing had failed.
    pub dropped: u64,
}

/// One output file and the frames it holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureFile {
    /// Its name (`None` for a descriptor given by the caller).
    pub path: Option<PathBuf>,
    /// Frames it holds.
    pub frames: u64,
}

/// What a capture did, for the summary a user sees at exit.
#[derive(Debug, Clone)]
pub struct CaptureSummary {
    /// Per interface, in the order they were added.
    pub interfaces: Vec<InterfaceCounts>,
    /// The files in use, oldest first.
    pub files: Vec<CaptureFile>,
    /// The write error that stopped the capture, if one did.
    pub error: Option<Arc<io::Error>>,
}

impl CaptureSummary {
    /// Frames not written, over all interfaces.
    pub fn dropped(&self) -> u64 {
        self.interfaces.iter().map(|i| i.dropped).sum()
    }
}

/// Index of an interface in a capture (its pcapng interface id).
pub type CaptureInterface = u32;

/// Which way a frame went, seen from the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the link.
    Inbound,
    /// Sent to the link.
    Outbound,
}

/// What a frame is recorded with besides its direction: a comment (the
/// EPB's `opt_comment`, which Wireshark shows and `frame.comment`
/// filters) and the CRC-error flag of its `epb_flags`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark<'a> {
    /// Why the frame is remarkable (dropped, corrupted, ...).
    pub comment: Option<&'a str>,
    /// The frame is damaged, as a frame that failed its CRC is.
    pub crc_error: bool,
}

/// A pcapng capture shared by the NICs of a stack: cloning is cheap, and
/// every clone writes to the same output.
#[derive(Debug, Clone)]
pub struct Capture {
    inner: Arc<Mutex<Writer>>,
}

struct Interface {
    name: String,
    linktype: DataLink,
    seen: u64,
    written: u64,
    dropped: u64,
}

struct Output {
    path: Option<PathBuf>,
    /// Frames in the file now.
    frames: u64,
    /// Whether it received a header since the capture began.
    used: bool,
}

struct Writer {
    cfg: CaptureConfig,
    section: SectionHeaderBlock<'static>,
    files: Vec<Output>,
    current: usize,
    /// The encoder; its `Vec` holds bytes not yet written to `files[current]`.
    enc: PcapNgWriter<Vec<u8>>,
    /// For each buffered frame: where its block ends in the buffer, and its interface.
    pending: Vec<(usize, CaptureInterface)>,
    /// When the oldest buffered frame was recorded.
    oldest: Option<Instant>,
    /// Bytes of the current file, buffered ones included.
    file_bytes: u64,
    /// Frames in the current file, buffered ones included.
    file_frames: u64,
    interfaces: Vec<Interface>,
    /// Reused for each frame's options, so recording allocates nothing.
    opts: Vec<EnhancedPacketOption<'static>>,
    error: Option<Arc<io::Error>>,
    finished: bool,
    /// The stack time of the last frame, for the statistics' timestamp.
    last_now: Instant,
    /// The thread that does the writing, and what it was given, oldest first:
    /// the file each buffer went to and the frames in it.
    disk: Disk,
    /// One entry per job given: a write's file and frames, or `None` for a reset.
    inflight: std::collections::VecDeque<Option<(usize, Frames)>>,
    /// Buffers back from the thread, and emptied frame lists, for reuse:
    /// recording allocates nothing.
    spare: Vec<Vec<u8>>,
    spare_frames: Vec<Frames>,
}

/// The frames of a buffer: where each one's block ends, and its interface.
type Frames = Vec<(usize, CaptureInterface)>;

/// Buffers given to the thread and not yet settled, at most: the queue
/// and the one being written.
const MAX_OUT: usize = DISK_QUEUE + 1;
/// Frames a buffer can hold: the smallest block is 44 bytes.
const MAX_FRAMES: usize = (BUFFER_BYTES + (64 << 10)) / 44;

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("files", &self.files.len())
            .field("current", &self.current)
            .field("interfaces", &self.interfaces.len())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Creates (truncating) `path`, and with a ring also `path.1` …
    /// `path.<max_files - 1>`: every file is opened here, so that the capture
    /// works on after the process loses the right to open files.
    pub fn create(path: &Path, cfg: CaptureConfig) -> Result<Capture, CaptureError> {
        let count = match cfg.ring {
            Some(r) if r.max_files == 0 || r.max_size == 0 => {
                return Err(CaptureError::InvalidRing {
                    max_size: r.max_size,
                    max_files: r.max_files,
                });
            }
            Some(r) => r.max_files,
            None => 1,
        };
        let mut files = Vec::with_capacity(count);
        let mut raw = Vec::with_capacity(count);
        for i in 0..count {
            let path = ring_path(path, i);
            let open = |flags: OFlag| {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(flags.bits())
                    .open(&path)
            };
            // Direct I/O where the file system has it (see `disk`).
            let file = match open(OFlag::O_DIRECT) {
                Ok(f) => DiskFile::direct(f),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    DiskFile::buffered(open(OFlag::empty()).map_err(|source| {
                        CaptureError::Create {
                            path: path.clone(),
                            source,
                        }
                    })?)
                }
                Err(source) => {
                    return Err(CaptureError::Create {
                        path: path.clone(),
                        source,
                    });
                }
            };
            raw.push(file);
            files.push(Output {
                path: Some(path),
                frames: 0,
                used: false,
            });
        }
        Capture::with_files(files, raw, cfg)
    }

    /// Writes to `file`, an open descriptor (stdout, a pipe) from its current
    /// position. No rotation: there is no name to rotate to.
    pub fn from_file(file: File, cfg: CaptureConfig) -> Result<Capture, CaptureError> {
        if cfg.ring.is_some() {
            return Err(CaptureError::RingNeedsPath);
        }
        let out = Output {
            path: None,
            frames: 0,
            used: false,
        };
        Capture::with_files(vec![out], vec![DiskFile::buffered(file)], cfg)
    }

    fn with_files(
        mut files: Vec<Output>,
        raw: Vec<DiskFile>,
        cfg: CaptureConfig,
    ) -> Result<Capture, CaptureError> {
        let disk = Disk::spawn(raw).map_err(CaptureError::Thread)?;
        let section = SectionHeaderBlock {
            // Fixed, so that golden files do not depend on the host.
            endianness: Endianness::Little,
            options: vec![SectionHeaderOption::UserApplication(Cow::Borrowed(
                "smolvisor",
            ))],
            ..SectionHeaderBlock::default()
        };
        let enc = PcapNgWriter::with_section_header(
            Vec::with_capacity(BUFFER_BYTES + (64 << 10)),
            section.clone(),
        )
        .expect("encoding into memory cannot fail");
        files[0].used = true;
        let file_bytes = enc.get_ref().len() as u64;
        Ok(Capture {
            inner: Arc::new(Mutex::new(Writer {
                cfg,
                section,
                files,
                current: 0,
                enc,
                pending: Vec::new(),
                oldest: None,
                file_bytes,
                file_frames: 0,
                interfaces: Vec::new(),
                opts: Vec::with_capacity(1),
                error: None,
                finished: false,
                last_now: Instant::ZERO,
                disk,
                inflight: std::collections::VecDeque::with_capacity(4 * DISK_QUEUE),
                // As many buffers and frame lists as can be out at once
                // (see `give`) and one to fill: made now, their pages are
                // touched only when used, and recording never allocates.
                spare: (0..=MAX_OUT)
                    .map(|_| Vec::with_capacity(BUFFER_BYTES + (64 << 10)))
                    .collect(),
                spare_frames: (0..=MAX_OUT)
                    .map(|_| Vec::with_capacity(MAX_FRAMES))
                    .collect(),
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A panic mid-record leaves at worst one frame half-encoded in memory.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Declares an interface (an Interface Description Block). Add every NIC
    /// before its first frame; [`Capture::wrap`] does it for you.
    pub fn add_interface(&self, name: &str, medium: Medium) -> CaptureInterface {
        let mut w = self.lock();
        let linktype = match medium {
            Medium::Ethernet => DataLink::ETHERNET,
            // LINKTYPE_RAW: a bare IPv4 or IPv6 packet, told apart by its version.
            Medium::Ip => DataLink::RAW,
        };
        let id = w.interfaces.len() as CaptureInterface;
        w.interfaces.push(Interface {
            name: name.to_owned(),
            linktype,
            seen: 0,
            written: 0,
            dropped: 0,
        });
        let idb = w.idb(id as usize);
        let before = w.enc.get_ref().len();
        w.encode(&idb);
        w.file_bytes += (w.enc.get_ref().len() - before) as u64;
        id
    }

    /// Wraps `link` in a sniffer that records both directions, as interface `name`.
    pub fn wrap<L: Link>(&self, link: L, name: &str) -> Sniffer<L> {
        let iface = self.add_interface(name, link.caps().medium);
        let recorder = FrameRecorder {
            capture: self.clone(),
            iface,
            record_inbound: true,
        };
        Layered::wrap(link, recorder)
    }

    /// Records one frame now. Sniffers call this; it is public for links
    /// that are not wrapped (a frame injected by a fuzzer, say).
    pub fn record(&self, iface: CaptureInterface, dir: Direction, now: Instant, frame: &[u8]) {
        self.lock().record(iface, dir, now, frame, Mark::default());
    }

    /// Records one frame now, with a comment or error flag (an impairment
    /// says so of the frames it dropped or damaged).
    pub fn record_marked(
        &self,
        iface: CaptureInterface,
        dir: Direction,
        now: Instant,
        frame: &[u8],
        mark: Mark<'_>,
    ) {
        self.lock().record(iface, dir, now, frame, mark);
    }

    /// Writes out what is buffered now (the next poll would do it soon
    /// anyway), and waits until it is in the file.
    pub fn flush(&self) {
        let mut w = self.lock();
        w.write_out();
        w.settle(true);
    }

    /// Writes what is buffered, an Interface Statistics Block per interface,
    /// and a header into ring files never reached; returns the counts. Frames
    /// recorded afterwards are only counted, as dropped.
    pub fn finish(&self) -> CaptureSummary {
        let mut w = self.lock();
        if !w.finished {
            w.finish();
        }
        w.summary()
    }

    /// The counts so far (frames still buffered are neither written nor dropped yet).
    pub fn summary(&self) -> CaptureSummary {
        let mut w = self.lock();
        w.settle(false);
        w.summary()
    }

    fn flush_due(&self, now: Instant) {
        let mut w = self.lock();
        let old = w.oldest.is_some_and(|t| now >= t + FLUSH_DELAY);
        if old || w.enc.get_ref().len() >= FLUSH_BYTES {
            w.write_out();
        }
    }

    fn flush_at(&self) -> Option<Instant> {
        self.lock().oldest.map(|t| t + FLUSH_DELAY)
    }
}

fn ring_path(path: &Path, i: usize) -> PathBuf {
    if i == 0 {
        return path.to_owned();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

impl Writer {
    fn idb(&self, i: usize) -> Block<'static> {
        let iface = &self.interfaces[i];
        Block::InterfaceDescription(InterfaceDescriptionBlock {
            linktype: iface.linktype,
            snaplen: self.cfg.snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(iface.name.clone())),
                InterfaceDescriptionOption::IfTsResol(TSRESOL_NANOS),
            ],
        })
    }

    /// Encodes into the buffer. Only interface ids unknown to the encoder
    /// can fail, and ours all come from `add_interface`.
    fn encode(&mut self, block: &Block<'_>) -> bool {
        self.enc.write_block(block).is_ok()
    }

    fn timestamp(&self, now: Instant) -> StdDuration {
        match self.cfg.clock {
            CaptureClock::Wall => SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
            CaptureClock::Stack { epoch } => {
                epoch + StdDuration::from_micros(u64::try_from(now.total_micros()).unwrap_or(0))
            }
        }
    }

    fn record(
        &mut self,
        iface: CaptureInterface,
        dir: Direction,
        now: Instant,
        frame: &[u8],
        mark: Mark<'_>,
    ) {
        let Some(i) = self.interfaces.get_mut(iface as usize) else {
            return;
        };
        i.seen += 1;
        if self.error.is_some() || self.finished {
            i.dropped += 1;
            return;
        }
        self.last_now = now;
        let snap = match self.cfg.snaplen {
            0 => frame.len(),
            n => frame.len().min(n as usize),
        };
        let mut flags = match dir {
            Direction::Inbound => EPB_INBOUND,
            Direction::Outbound => EPB_OUTBOUND,
        };
        if mark.crc_error {
            flags |= EPB_CRC_ERROR;
        }
        let mut opts = std::mem::take(&mut self.opts);
        opts.push(EnhancedPacketOption::Flags(flags));
        if let Some(c) = mark.comment {
            opts.push(EnhancedPacketOption::Comment(Cow::Owned(c.to_owned())));
        }
        let mut block = Block::EnhancedPacket(EnhancedPacketBlock {
            interface_id: iface,
            timestamp: self.timestamp(now),
            original_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            data: Cow::Borrowed(&frame[..snap]),
            options: opts,
        });
        let start = self.enc.get_ref().len();
        let mut ok = self.encode(&block);
        let mut size = (self.enc.get_ref().len() - start) as u64;
        if let Some(ring) = self.cfg.ring
            && ok
            && self.file_frames > 0
            && self.file_bytes + size + self.trailer_bytes() > ring.max_size
        {
            self.enc.get_mut().truncate(start);
            self.rotate();
            if self.error.is_none() {
                let start = self.enc.get_ref().len();
                ok = self.encode(&block);
                size = (self.enc.get_ref().len() - start) as u64;
            }
        }
        // Take the options vector back, emptied, for the next frame. Its
        // element type is tied to the frame's lifetime, so it is rebuilt
        // in place: collecting an emptied `into_iter` keeps the allocation.
        if let Block::EnhancedPacket(epb) = &mut block {
            let mut opts = std::mem::take(&mut epb.options);
            opts.clear();
            self.opts = opts
                .into_iter()
                .map(EnhancedPacketOption::into_owned)
                .collect();
        }
        let i = &mut self.interfaces[iface as usize];
        if !ok || self.error.is_some() {
            i.dropped += 1;
            return;
        }
        self.pending.push((self.enc.get_ref().len(), iface));
        self.oldest.get_or_insert(now);
        self.file_bytes += size;
        self.file_frames += 1;
        if self.enc.get_ref().len() >= BUFFER_BYTES {
            self.write_out();
        }
    }

    /// Room kept at the end of a ring file for the statistics that `finish` writes.
    fn trailer_bytes(&self) -> u64 {
        ISB_BYTES * self.interfaces.len() as u64
    }

    /// Hands the buffer to the writing thread (waiting while its queue is
    /// full); the frames in it are settled when the thread says how it went.
    fn write_out(&mut self) {
        if self.enc.get_ref().is_empty() {
            self.settle(false);
            return;
        }
        let spare = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUFFER_BYTES + (64 << 10)));
        let buf = std::mem::replace(self.enc.get_mut(), spare);
        let frames = self.spare_frames.pop().unwrap_or_default();
        let pending = std::mem::replace(&mut self.pending, frames);
        self.oldest = None;
        self.give(Some((self.current, pending)), Job::Write(self.current, buf));
        self.settle(false);
    }

    fn give(&mut self, entry: Option<(usize, Frames)>, mut job: Job) {
        while self.inflight.len() >= MAX_OUT && self.settle_next(true) {}
        self.inflight.push_back(entry);
        loop {
            match self.disk.jobs.try_send(job) {
                // Taken; or the thread is gone (it ends only when the capture
                // is dropped) and `settle_next` counts its jobs as dropped.
                Ok(()) | Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                // The queue is full: wait for the thread to finish a job.
                Err(std::sync::mpsc::TrySendError::Full(j)) => {
                    job = j;
                    if !self.settle_next(true) {
                        return;
                    }
                }
            }
        }
    }

    /// Takes the thread's answers, all of them with `wait`, and settles
    /// each written buffer's frames as written or (after a failure) dropped.
    fn settle(&mut self, wait: bool) {
        while self.settle_next(wait) {}
    }

    /// Settles the oldest job given if the thread has answered (or, with
    /// `wait`, once it has); false when there was nothing to settle.
    fn settle_next(&mut self, wait: bool) -> bool {
        if self.inflight.is_empty() {
            return false;
        }
        let answer = if wait {
            self.disk.done.recv().ok()
        } else {
            match self.disk.done.try_recv() {
                Ok(d) => Some(d),
                Err(std::sync::mpsc::TryRecvError::Empty) => return false,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
            }
        };
        let Some(d) = answer else {
            let gone = io::Error::other("the capture's writing thread ended");
            self.error.get_or_insert(Arc::new(gone));
            for (_, frames) in self.inflight.drain(..).flatten() {
                for (_, iface) in frames {
                    self.interfaces[iface as usize].dropped += 1;
                }
            }
            return false;
        };
        if let Some(e) = d.error {
            self.error.get_or_insert(e);
        }
        if let Some((file, mut frames)) = self.inflight.pop_front().flatten() {
            for &(end, iface) in &frames {
                let i = &mut self.interfaces[iface as usize];
                if end <= d.written {
                    i.written += 1;
                    self.files[file].frames += 1;
                } else {
                    i.dropped += 1;
                }
            }
            frames.clear();
            if self.spare_frames.len() <= MAX_OUT {
                self.spare_frames.push(frames);
            }
        }
        let mut buf = d.buf;
        if buf.capacity() > 0 && self.spare.len() <= MAX_OUT {
            buf.clear();
            self.spare.push(buf);
        }
        true
    }

    /// Closes the current ring file and starts the next: truncated, rewound,
    /// and given the section header and every interface again.
    fn rotate(&mut self) {
        self.write_out();
        // Settled first: the next file's counts start from zero, and with a
        // ring of one it is the same file.
        self.settle(true);
        if self.error.is_some() {
            return;
        }
        self.current = (self.current + 1) % self.files.len();
        let out = &mut self.files[self.current];
        out.frames = 0;
        out.used = true;
        self.give(None, Job::Reset(self.current));
        self.file_bytes = self.write_header() as u64;
        self.file_frames = 0;
    }

    /// Encodes the section header and the interfaces; returns their size.
    fn write_header(&mut self) -> usize {
        let start = self.enc.get_ref().len();
        let shb = Block::SectionHeader(self.section.clone());
        self.encode(&shb);
        for i in 0..self.interfaces.len() {
            let idb = self.idb(i);
            self.encode(&idb);
        }
        self.enc.get_ref().len() - start
    }

    fn finish(&mut self) {
        self.write_out();
        self.settle(true);
        self.finished = true;
        if self.error.is_some() {
            return;
        }
        let ts = self.timestamp(self.last_now).as_nanos();
        let ts = u64::try_from(ts).unwrap_or(u64::MAX);
        // pcapng stores a timestamp as two 32-bit words, high word first;
        // pcap-file 2.0 writes the ISB's as one little-endian u64 (low word
        // first), so the words are swapped here to come out right.
        let ts = ts.rotate_left(32);
        for (id, i) in self.interfaces.iter().enumerate() {
            let isb = Block::InterfaceStatistics(InterfaceStatisticsBlock {
                interface_id: id as u32,
                timestamp: ts,
                options: vec![
                    InterfaceStatisticsOption::IsbIfRecv(i.seen),
                    InterfaceStatisticsOption::IsbIfDrop(i.dropped),
                ],
            });
            // Cannot fail: the id is one of ours.
            let _ = self.enc.write_block(&isb);
        }
        self.write_out();
        // Ring files never reached get a valid, empty capture rather than
        // zero bytes, so that every file of the ring opens.
        let current = self.current;
        for f in 0..self.files.len() {
            if self.files[f].used || self.error.is_some() {
                continue;
            }
            self.current = f;
            self.files[f].used = true;
            self.write_header();
            self.write_out();
        }
        self.current = current;
        self.settle(true);
    }

    fn summary(&self) -> CaptureSummary {
        let interfaces = self.interfaces.iter().map(|i| InterfaceCounts {
            name: i.name.clone(),
            seen: i.seen,
            written: i.written,
            dropped: i.dropped,
        });
        // Oldest first: the ring continues after the current file.
        let n = self.files.len();
        let files = (1..=n)
            .map(|k| &self.files[(self.current + k) % n])
            .filter(|f| f.used)
            .map(|f| CaptureFile {
                path: f.path.clone(),
                frames: f.frames,
            });
        CaptureSummary {
            interfaces: interfaces.collect(),
            files: files.collect(),
            error: self.error.clone(),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Never finished (an early exit): at least keep the frames.
        if !self.finished {
            self.write_out();
            self.settle(true);
        }
    }
}

/// A link that records every frame through it into a [`Capture`], and
/// otherwise is the link it wraps: a [`FrameRecorder`] around it.
pub type Sniffer<L> = Layered<L, FrameRecorder>;

impl<L> Sniffer<L> {
    /// Records sent frames only. For `lo`, where every frame sent comes back
    /// as received: each packet then appears once, as on Linux's `lo`.
    pub fn sent_only(mut self) -> Self {
        self.layer_mut().record_inbound = false;
        self
    }

    /// The interface this sniffer records as.
    pub fn interface(&self) -> CaptureInterface {
        self.layer().iface
    }
}

/// The layer that records frames into a [`Capture`] as one of its
/// interfaces. Made by [`Capture::wrap`].
#[derive(Debug)]
pub struct FrameRecorder {
    capture: Capture,
    iface: CaptureInterface,
    record_inbound: bool,
}

// Offloads pass through, so capturing changes nothing on the wire: a large
// segment is recorded whole, as a capture on Linux shows a GSO frame before
// the NIC cuts it.
impl Layer for FrameRecorder {
    fn inbound(&mut self, _link: &mut dyn Link, now: Instant, frame: Vec<u8>) -> Option<Vec<u8>> {
        if self.record_inbound {
            self.capture
                .record(self.iface, Direction::Inbound, now, &frame);
        }
        Some(frame)
    }

    fn outbound(&mut self, link: &mut dyn Link, now: Instant, frame: Vec<u8>, mss: Option<u16>) {
        self.capture
            .record(self.iface, Direction::Outbound, now, &frame);
        pass_on(link, now, frame, mss);
    }

    fn poll_at(&self) -> Option<Instant> {
        self.capture.flush_at()
    }

    fn flush(&mut self, _link: &mut dyn Link, now: Instant) {
        self.capture.flush_due(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture_into_null(cfg: CaptureConfig) -> Capture {
        let null = File::options().write(true).open("/dev/null").unwrap();
        Capture::from_file(null, cfg).unwrap()
    }

    /// The ring keeps room for the statistics: the size it assumes must be
    /// what the encoder writes.
    #[test]
    fn statistics_block_size_is_what_the_ring_reserves() {
        let cap = capture_into_null(CaptureConfig::default());
        cap.add_interface("eth0", Medium::Ethernet);
        let mut w = cap.lock();
        let isb = Block::InterfaceStatistics(InterfaceStatisticsBlock {
            interface_id: 0,
            timestamp: 0,
            options: vec![
                InterfaceStatisticsOption::IsbIfRecv(1),
                InterfaceStatisticsOption::IsbIfDrop(2),
            ],
        });
        let before = w.enc.get_ref().len();
        assert!(w.encode(&isb));
        assert_eq!((w.enc.get_ref().len() - before) as u64, ISB_BYTES);
    }

    #[test]
    fn ring_names_count_up_from_the_given_path() {
        let p = Path::new("/tmp/x.pcapng");
        assert_eq!(ring_path(p, 0), p);
        assert_eq!(ring_path(p, 1), Path::new("/tmp/x.pcapng.1"));
        assert_eq!(ring_path(p, 12), Path::new("/tmp/x.pcapng.12"));
    }

    #[test]
    fn a_ring_needs_a_path_and_room() {
        let ring = Some(Ring {
            max_size: 1 << 20,
            max_files: 2,
        });
        let null = File::options().write(true).open("/dev/null").unwrap();
        let cfg = CaptureConfig {
            ring,
            ..CaptureConfig::default()
        };
        assert!(matches!(
            Capture::from_file(null, cfg),
            Err(CaptureError::RingNeedsPath)
        ));
        let cfg = CaptureConfig {
            ring: Some(Ring {
                max_size: 1 << 20,
                max_files: 0,
            }),
            ..CaptureConfig::default()
        };
        assert!(matches!(
            Capture::create(Path::new("/nonexistent/x"), cfg),
            Err(CaptureError::InvalidRing { .. })
        ));
    }

    #[test]
    fn frames_after_finish_are_counted_dropped() {
        let cap = capture_into_null(CaptureConfig::default());
        let lo = cap.add_interface("lo", Medium::Ip);
        cap.record(lo, Direction::Outbound, Instant::ZERO, &[0x45; 40]);
        let sum = cap.finish();
        assert_eq!((sum.interfaces[0].seen, sum.interfaces[0].written), (1, 1));
        cap.record(lo, Direction::Outbound, Instant::ZERO, &[0x45; 40]);
        let sum = cap.finish();
        let lo = &sum.interfaces[0];
        assert_eq!((lo.seen, lo.written, lo.dropped), (2, 1, 1));
    }
}
