//! A link over an existing TAP device (`--network tap:NAME`).
//!
//! [`TapLink::open`] attaches to a TAP device that someone else created and
//! configured (`ip tuntap add dev NAME mode tap`): it neither creates the
//! device nor touches its addresses, MTU or state. Frames are read and
//! written one per system call on a non-blocking descriptor that the event
//! loop waits on ([`Link::fd`]).
//!
//! With offload (the default where the kernel allows it), every frame
//! carries a virtio-net header and the kernel may hand over a TCP segment
//! larger than the MTU (TSO: one read instead of dozens) whose checksum is
//! left to the reader (`NEEDS_CSUM`). The link completes that checksum
//! before the stack sees the frame, so smoltcp verifies checksums as on any
//! wire, and accepts the large segment as it is. The other way the same
//! header carries TSO ([`Link::segmentation`]): the stack hands over TCP
//! segments of up to 64 KiB, which the kernel cuts to size, and leaves
//! every TCP checksum to the kernel (`NEEDS_CSUM` with the pseudo-header
//! sum in place), as on the AF_PACKET link.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::checksum;
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

use super::{Link, LinkCaps, Medium};

/// The largest frame the stack hands over with TSO: a 64 KiB IP packet.
const SEGMENTED_FRAME: usize = 14 + 65535;

/// `struct virtio_net_hdr`, the legacy layout a TAP uses by default.
const VNET_HDR_LEN: usize = 10;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_GSO_NONE: u8 = 0;
const VNET_GSO_TCPV4: u8 = 1;
const VNET_GSO_TCPV6: u8 = 4;
const VNET_GSO_ECN: u8 = 0x80;
/// The largest frame a read can return: a 64 KiB TSO segment and its headers.
const MAX_FRAME: usize = 65536 + 14 + 4;
/// Frames kept for a retry when the device cannot take them now.
const MAX_QUEUED: usize = 256;
/// Buffers kept for reuse.
const MAX_FREE: usize = 256;

/// Why a TAP device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// There is no interface of that name in the caller's network namespace.
    #[error("no TAP device named {name} in this network namespace")]
    NotFound {
        /// The device name.
        name: String,
    },
    /// The device exists but could not be attached (not a TAP, no permission…).
    #[error("cannot attach to TAP device {name}: {source}")]
    Attach {
        /// The device name.
        name: String,
        /// Why.
        source: io::Error,
    },
}

/// Counters of a [`TapLink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frames read.
    pub rx_frames: u64,
    /// Of those, TCP segments larger than the MTU (TSO).
    pub rx_gso_frames: u64,
    /// Of those, frames whose checksum the link completed.
    pub rx_checksums_completed: u64,
    /// Reads that failed or returned a frame that was malformed or of a
    /// segmentation type the link did not ask for (dropped).
    pub rx_errors: u64,
    /// Frames written.
    pub tx_frames: u64,
    /// Frames dropped on the way out: the device refused them (down: EIO)
    /// or the retry queue was full.
    pub tx_dropped: u64,
}

/// A link over an existing TAP device.
pub struct TapLink {
    dev: SyncDevice,
    name: String,
    mtu: usize,
    mac: [u8; 6],
    offload: bool,
    /// One read's worth of bytes; frames are copied out at their own size,
    /// so pooled buffers stay small.
    scratch: Vec<u8>,
    free: Vec<Vec<u8>>,
    /// Frames the device could not take yet (EAGAIN), in order.
    /// Frames waiting for room, each with its virtio-net header.
    queued: VecDeque<([u8; VNET_HDR_LEN], Vec<u8>)>,
    last_now: Instant,
    stats: TapStats,
}

impl std::fmt::Debug for TapLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapLink")
            .field("name", &self.name)
            .field("fd", &self.dev.as_raw_fd())
            .field("mtu", &self.mtu)
            .field("offload", &self.offload)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl TapLink {
    /// Attaches to the TAP device `name` in the calling thread's network
    /// namespace, with checksum and segmentation offload when the kernel
    /// allows it.
    pub fn open(name: &str) -> Result<TapLink, TapError> {
        match TapLink::attach(name, true) {
            Ok(link) => Ok(link),
            Err(TapError::Attach { .. }) => TapLink::attach(name, false),
            Err(e) => Err(e),
        }
    }

    /// Like [`TapLink::open`], without virtio-net headers: every frame is a
    /// plain Ethernet frame within the MTU.
    pub fn open_without_offload(name: &str) -> Result<TapLink, TapError> {
        TapLink::attach(name, false)
    }

    fn attach(name: &str, offload: bool) -> Result<TapLink, TapError> {
        // TUNSETIFF creates a device when none has the name: look first, so
        // that a typo fails instead of making a private, unconfigured TAP.
        if !sys::interface_exists(name) {
            return Err(TapError::NotFound {
                name: name.to_owned(),
            });
        }
        let attach_err = |source| TapError::Attach {
            name: name.to_owned(),
            source,
        };
        let dev = DeviceBuilder::new()
            .name(name)
            .layer(Layer::L2)
            .offload(offload)
            // Leave the device up or down as it is.
            .inherit_enable_state()
            .build_sync()
            .map_err(attach_err)?;
        if offload {
            // tun-rs also asks for UDP segmentation (USO), whose frames
            // would need splitting here: TCP and checksums only.
            sys::set_offload(dev.as_fd(), sys::TCP_OFFLOADS).map_err(attach_err)?;
        }
        dev.set_nonblocking(true).map_err(attach_err)?;
        // Both are read by name through a socket of the caller's namespace,
        // which is why they are read here, once.
        let mtu = usize::from(dev.mtu().map_err(attach_err)?);
        let mac = dev.mac_address().map_err(attach_err)?;
        Ok(TapLink {
            dev,
            name: name.to_owned(),
            mtu,
            mac,
            offload,
            scratch: vec![0; MAX_FRAME],
            free: Vec::new(),
            queued: VecDeque::new(),
            last_now: Instant::ZERO,
            stats: TapStats::default(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's MTU when it was opened.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The MAC address of the kernel's side of the device (the stack uses its own).
    pub fn device_mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether frames carry virtio-net headers (checksum and TSO offload).
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// The counters so far.
    pub fn stats(&self) -> TapStats {
        self.stats
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        let mut b = self.free.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// One read: `Some(len of the frame in scratch, header)`, `None` when
    /// nothing is ready.
    fn read(&mut self) -> Option<(usize, [u8; VNET_HDR_LEN])> {
        let mut hdr = [0u8; VNET_HDR_LEN];
        loop {
            let r = if self.offload {
                let mut bufs = [
                    IoSliceMut::new(&mut hdr),
                    IoSliceMut::new(&mut self.scratch),
                ];
                self.dev
                    .recv_vectored(&mut bufs)
                    .map(|n| n.checked_sub(VNET_HDR_LEN))
            } else {
                self.dev.recv(&mut self.scratch).map(Some)
            };
            match r {
                Ok(Some(n)) => return Some((n, hdr)),
                Ok(None) => self.stats.rx_errors += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(_) => {
                    self.stats.rx_errors += 1;
                    return None;
                }
            }
        }
    }

    /// Writes one frame; `false` when the device cannot take it now.
    /// Writes a frame now, or queues it while the device is full.
    fn queue(&mut self, now: Instant, hdr: [u8; VNET_HDR_LEN], frame: Vec<u8>) {
        self.last_now = now;
        if self.queued.is_empty() && self.write(&hdr, &frame) {
            self.recycle(frame);
        } else if self.queued.len() < MAX_QUEUED {
            self.queued.push_back((hdr, frame));
        } else {
            self.stats.tx_dropped += 1;
            self.recycle(frame);
        }
    }

    fn write(&mut self, hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> bool {
        loop {
            let r = if self.offload {
                self.dev
                    .send_vectored(&[IoSlice::new(hdr), IoSlice::new(frame)])
            } else {
                self.dev.send(frame)
            };
            match r {
                Ok(_) => {
                    self.stats.tx_frames += 1;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    return false;
                }
                Err(_) => {
                    // As a NIC without carrier: the frame is lost, TCP resends.
                    self.stats.tx_dropped += 1;
                    return true;
                }
            }
        }
    }
}

/// Completes the checksum the kernel left partial (`NEEDS_CSUM`): the field
/// at `start + offset` holds the pseudo-header sum, and the checksum covers
/// everything from `start` to the end. `false` if the offsets do not fit.
fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let field = start + offset;
    if field + 2 > frame.len() {
        return false;
    }
    let sum = !checksum::data(&frame[start..]);
    // As the kernel does: 0 is sent as 0xffff (the same in ones' complement,
    // and required for UDP, where 0 means "no checksum").
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

impl AsFd for TapLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }
}

impl Link for TapLink {
    fn caps(&self) -> LinkCaps {
        LinkCaps {
            medium: Medium::Ethernet,
            mtu: self.mtu,
            checksum_offload: false,
        }
    }

    fn recv(&mut self, _now: Instant) -> Option<Vec<u8>> {
        loop {
            let (len, hdr) = self.read()?;
            if len < 14 {
                self.stats.rx_errors += 1;
                continue;
            }
            let mut frame = self.take_buffer();
            frame.extend_from_slice(&self.scratch[..len]);
            if self.offload {
                let [flags, gso, _, _, _, _, s0, s1, o0, o1] = hdr;
                // Legacy virtio-net headers are in the host's byte order.
                let start = usize::from(u16::from_ne_bytes([s0, s1]));
                let offset = usize::from(u16::from_ne_bytes([o0, o1]));
                match gso & !VNET_GSO_ECN {
                    VNET_GSO_NONE => {}
                    VNET_GSO_TCPV4 | VNET_GSO_TCPV6 => self.stats.rx_gso_frames += 1,
                    _ => {
                        self.stats.rx_errors += 1;
                        self.recycle(frame);
                        continue;
                    }
                }
                if flags & VNET_F_NEEDS_CSUM != 0 {
                    if !complete_checksum(&mut frame, start, offset) {
                        self.stats.rx_errors += 1;
                        self.recycle(frame);
                        continue;
                    }
                    self.stats.rx_checksums_completed += 1;
                }
            }
            self.stats.rx_frames += 1;
            return Some(frame);
        }
    }

    fn send(&mut self, now: Instant, mut frame: Vec<u8>) {
        // With offload, TCP checksums are the kernel's (see `segmentation`).
        let hdr = if self.offload {
            super::packet::offload_header_bytes(&mut frame, None)
        } else {
            [0; VNET_HDR_LEN]
        };
        self.queue(now, hdr, frame);
    }

    fn segmentation(&self) -> Option<usize> {
        self.offload.then_some(SEGMENTED_FRAME)
    }

    fn send_segmented(&mut self, now: Instant, mut frame: Vec<u8>, mss: u16) {
        let hdr = super::packet::offload_header_bytes(&mut frame, Some(mss));
        self.queue(now, hdr, frame);
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.take_buffer()
    }

    fn recycle(&mut self, frame: Vec<u8>) {
        if self.free.len() < MAX_FREE {
            self.free.push(frame);
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        // The descriptor's readiness covers reads only: retry writes soon.
        (!self.queued.is_empty()).then(|| self.last_now + Duration::from_millis(1))
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.dev.as_fd())
    }

    fn flush(&mut self, now: Instant) {
        self.last_now = now;
        while let Some((hdr, frame)) = self.queued.pop_front() {
            if !self.write(&hdr, &frame) {
                self.queued.push_front((hdr, frame));
                break;
            }
            self.recycle(frame);
        }
    }
}

/// What tun-rs does not offer as the link needs it.
mod sys {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd};

    /// Whether the calling thread's network namespace has an interface `name`.
    pub(super) fn interface_exists(name: &str) -> bool {
        let Ok(name) = CString::new(name) else {
            return false;
        };
        // SAFETY: `name` is a NUL-terminated string that outlives the call,
        // which only reads it.
        unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
    }

    /// Checksum offload and TCP segmentation, IPv4 and IPv6; no UDP segmentation.
    pub(super) const TCP_OFFLOADS: libc::c_uint =
        libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

    nix::ioctl_write_int!(tunsetoffload, b'T', 208);

    /// `TUNSETOFFLOAD`: which offloaded frames the kernel may hand to this device's readers.
    pub(super) fn set_offload(fd: BorrowedFd<'_>, flags: libc::c_uint) -> io::Result<()> {
        // SAFETY: `fd` is a live descriptor (borrowed for the call), and
        // TUNSETOFFLOAD takes its argument by value: no memory is passed.
        unsafe { tunsetoffload(fd.as_raw_fd(), libc::c_ulong::from(flags)) }
            .map(drop)
            .map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket};

    /// A TCP segment in an Ethernet frame as the kernel leaves it with
    /// NEEDS_CSUM: the checksum field holds the pseudo-header sum only.
    #[test]
    fn completed_checksum_verifies() {
        let payload = b"some payload of odd length";
        let tcp_len = 20 + payload.len();
        let mut frame = vec![0u8; 14 + 20 + tcp_len];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let (src, dst) = (
            Ipv4Address::new(10, 77, 0, 1),
            Ipv4Address::new(10, 77, 0, 2),
        );
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
            ip.set_version(4);
            ip.set_header_len(20);
            ip.set_total_len((20 + tcp_len) as u16);
            ip.set_hop_limit(64);
            ip.set_next_header(IpProtocol::Tcp);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            ip.fill_checksum();
        }
        let tcp = &mut frame[34..];
        tcp[12] = 5 << 4;
        tcp[20..].copy_from_slice(payload);
        let pseudo = checksum::pseudo_header(
            &IpAddress::Ipv4(src),
            &IpAddress::Ipv4(dst),
            IpProtocol::Tcp,
            tcp_len as u32,
        );
        tcp[16..18].copy_from_slice(&pseudo.to_be_bytes());
        assert!(complete_checksum(&mut frame, 34, 16));
        let tcp = TcpPacket::new_checked(&frame[34..]).unwrap();
        assert!(tcp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)));
        // Offsets beyond the frame are refused, not followed.
        let len = frame.len();
        assert!(!complete_checksum(&mut frame, len - 1, 0));
        assert!(!complete_checksum(&mut frame, 34, len));
    }
}
