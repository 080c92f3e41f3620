//! A link over an AF_PACKET socket on an existing host interface (the veth
//! Docker puts in a container's namespace): the `sandbox` network mode.
//!
//! Frames enter with `recvmmsg`, a batch at a time, into recycled buffers
//! that [`Link::recv`] hands out one by one; frames sent are queued and
//! leave with `sendmmsg` on [`Link::flush`] (or when a batch is full).
//! Every frame carries a virtio-net header (`PACKET_VNET_HDR`): on the way
//! in it says whether the checksum is still partial, as it is for frames a
//! local kernel sent through a veth, or already verified. Such frames are
//! vouched for ([`Link::vouch_for_checksums`]) and the link verifies only
//! the others, so smoltcp reads no byte twice; behind a wrapper that does
//! not pass that question on, partial checksums are completed instead, for
//! smoltcp to verify. On the way out the link offers
//! TSO ([`Link::segmentation`]): smoltcp hands over TCP/IPv4 segments of up
//! to 64 KiB and the kernel cuts them (veth takes no segments from a packet
//! socket whole), and TCP checksums are left for the receiver to complete,
//! which over a veth nobody then computes. Large frames also come in whole:
//! veth passes the peer's TSO segments through uncut. A full socket drops
//! and counts, like a NIC queue overflow; the stack never blocks on the host.

mod sys;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use smoltcp::time::Instant;

use super::{Link, LinkCaps, Medium};
use sys::{
    F_DATA_VALID, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, MAX_BATCH, VNET_HDR_LEN, VnetHdr,
};

/// Socket buffer, each way: room for a few batches of the largest frames.
const SOCKET_BUFFER: usize = 8 << 20;
/// The largest TCP frame given to the kernel to cut into segments: an IPv4
/// packet of 64 KiB behind its Ethernet header.
const SEGMENTED_FRAME: usize = 14 + 65535;
/// Room for the largest frame the kernel hands over: a GSO super-frame of
/// up to 64 KiB (veth passes the peer's TSO segments through unsplit), plus
/// its Ethernet and VLAN headers.
const FRAME_CAPACITY: usize = (64 << 10) + 64;
/// Buffers kept for reuse beyond the ones in flight.
const POOL_LIMIT: usize = 4 * MAX_BATCH;

/// Counters of a [`PacketLink`], for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// Frames received and handed to the stack.
    pub rx_frames: u64,
    /// Frames whose partial checksum the link completed (without checksum trust).
    pub rx_csum_completed: u64,
    /// Frames from elsewhere than the local kernel whose checksum the link
    /// verified itself (with checksum trust).
    pub rx_csum_verified: u64,
    /// Frames dropped on the way in (larger than a buffer, a bad checksum,
    /// or a checksum request pointing outside the frame).
    pub rx_dropped: u64,
    /// Frames the kernel took.
    pub tx_frames: u64,
    /// Frames dropped on the way out (socket buffer full, interface down).
    pub tx_dropped: u64,
}

impl PacketStats {
    fn add(&mut self, other: &PacketStats) {
        self.rx_frames += other.rx_frames;
        self.rx_csum_completed += other.rx_csum_completed;
        self.rx_csum_verified += other.rx_csum_verified;
        self.rx_dropped += other.rx_dropped;
        self.tx_frames += other.tx_frames;
        self.tx_dropped += other.tx_dropped;
    }
}

/// A [`Link`] over an AF_PACKET socket bound to one host interface.
#[derive(Debug)]
pub struct PacketLink {
    fd: OwnedFd,
    mtu: usize,
    /// Frames received and not yet handed out, oldest last (popped from the end).
    rx: Vec<Vec<u8>>,
    /// Frames queued for the next `sendmmsg`, each behind its header.
    tx: Vec<([u8; VNET_HDR_LEN], Vec<u8>)>,
    free: Vec<Vec<u8>>,
    /// Empty buffers lined up for the next `recvmmsg`.
    scratch: Vec<Vec<u8>>,
    /// Scratch for a batch's results, kept to avoid an allocation per call.
    batch: Vec<sys::Received>,
    /// Whether large TCP segments go to the kernel whole (see [`Link::segmentation`]).
    segmentation: bool,
    /// Whether the link may vouch for received TCP and UDP checksums (see
    /// [`Link::vouch_for_checksums`]) ...
    may_vouch: bool,
    /// ... and was asked to: until then, partial checksums are completed
    /// for smoltcp to verify.
    vouching: bool,
    stats: PacketStats,
    /// The thread that writes the batches, when there is one.
    sender: Option<SenderThread>,
    /// An empty batch (with its capacity) for the next frames.
    spare_batch: Batch,
    /// The last read took fewer frames than it had room for: the socket
    /// was empty then (what arrives later makes it readable again for the
    /// caller's epoll). The next `recv` that finds no frame left says so
    /// without asking the socket, which would cost a system call that
    /// fails with EAGAIN; the one after it asks again.
    drained: bool,
}

/// A batch of frames behind their headers, as `sendmmsg` takes them.
type Batch = Vec<([u8; VNET_HDR_LEN], Vec<u8>)>;

/// A thread of the link's own that writes its batches. Over a veth, the
/// `sendmmsg` that hands a frame to the kernel also runs the receiving
/// side's whole input path (segmentation of offloaded segments, the peer's
/// TCP), in the caller's time: on a thread of its own that work runs on
/// another core while the stack goes on.
#[derive(Debug)]
struct SenderThread {
    /// Batches to write; bounded, so a slow wire holds the stack back
    /// instead of queueing without end.
    batches: std::sync::mpsc::SyncSender<Batch>,
    /// Written batches come back with their counts, for their buffers.
    done: std::sync::mpsc::Receiver<(Batch, PacketStats)>,
    /// Batches sent to the thread and not yet back.
    in_thread: usize,
}

/// Batches the stack may queue ahead of the sender thread.
const SENDER_QUEUE: usize = 4;

/// A batch whose frames are all this small is written by the stack's own
/// thread when the sender thread is idle. What the thread is for is the
/// kernel's segmentation of offloaded runs (and the peer's input path
/// behind it); for frames the size of the wire's, waking it costs more
/// than the write it would take over (ACKs of a download, a server's
/// answers: with 32 keep-alive clients, the thread took 6% of the time).
const INLINE_FRAME: usize = 4096;

impl PacketLink {
    /// Opens a socket on the interface `ifindex` of the calling thread's
    /// network namespace (the socket keeps that namespace afterwards), for
    /// a NIC of `mtu` (the interface's MTU, as `ip link` shows it). Needs
    /// CAP_NET_RAW and CAP_NET_ADMIN (for buffers beyond `rmem_max`).
    pub fn open(ifindex: u32, mtu: usize) -> io::Result<PacketLink> {
        let fd = sys::open(ifindex, SOCKET_BUFFER)?;
        Ok(PacketLink {
            fd,
            mtu,
            rx: Vec::with_capacity(MAX_BATCH),
            tx: Vec::with_capacity(MAX_BATCH),
            free: Vec::new(),
            scratch: Vec::with_capacity(MAX_BATCH),
            batch: Vec::with_capacity(MAX_BATCH),
            segmentation: true,
            may_vouch: true,
            vouching: false,
            stats: PacketStats::default(),
            sender: None,
            spare_batch: Vec::with_capacity(MAX_BATCH),
            drained: false,
        })
    }

    /// The same link, writing from a thread of its own (see `SenderThread`).
    /// The thread only ever writes to this link's socket. A process that
    /// confines itself with seccomp later must do so for all its threads.
    pub fn with_sender_thread(mut self) -> io::Result<PacketLink> {
        let fd = self.fd.try_clone()?;
        let (batches, todo) = std::sync::mpsc::sync_channel::<Batch>(SENDER_QUEUE);
        let (back, done) = std::sync::mpsc::channel();
        crate::spawn_started("packet-tx", move || {
            for batch in todo {
                let mut stats = PacketStats::default();
                write_batch(fd.as_fd(), &batch, &mut stats);
                if back.send((batch, stats)).is_err() {
                    return;
                }
            }
        })?;
        self.sender = Some(SenderThread {
            batches,
            done,
            in_thread: 0,
        });
        Ok(self)
    }

    /// The same link, sending only segments that fit the MTU and with every
    /// checksum computed by the stack (no segmentation or checksum offload
    /// on the way out). Must be chosen before the link joins a stack.
    pub fn without_segmentation(mut self) -> PacketLink {
        self.segmentation = false;
        self
    }

    /// The same link, completing the partial checksums of received frames
    /// for smoltcp to verify every checksum, instead of vouching for the
    /// frames of the local kernel and verifying only the others itself.
    /// Must be chosen before the link joins a stack.
    pub fn without_checksum_trust(mut self) -> PacketLink {
        self.may_vouch = false;
        self.vouching = false;
        self
    }

    /// The link's counters so far.
    pub fn stats(&self) -> PacketStats {
        self.stats
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FRAME_CAPACITY))
    }

    /// Reads one batch into `rx`; false when nothing was waiting.
    fn fill(&mut self) -> bool {
        let mut bufs = std::mem::take(&mut self.scratch);
        while bufs.len() < MAX_BATCH {
            bufs.push(self.take_buffer());
        }
        // WouldBlock is the usual error; any other (the interface went
        // down) looks the same to the stack: no frame now.
        let ok = sys::recv_batch(self.fd.as_fd(), &mut bufs, &mut self.batch).is_ok();
        self.drained = !ok || self.batch.len() < bufs.len();
        if ok {
            let got = self.batch.len();
            // Kept in reverse, so that `pop` yields them in arrival order.
            for (mut frame, meta) in bufs.drain(..got).zip(&self.batch).rev() {
                let good = if self.vouching {
                    checksum_trusted(&frame, &meta.hdr, &mut self.stats)
                } else {
                    finish_checksum(&mut frame, &meta.hdr, &mut self.stats)
                };
                if meta.truncated || !good {
                    self.stats.rx_dropped += 1;
                    self.free.push(frame);
                } else {
                    self.stats.rx_frames += 1;
                    self.rx.push(frame);
                }
            }
        }
        // Buffers the batch did not use wait for the next one.
        self.scratch = bufs;
        ok
    }

    /// Writes the queued frames; what the kernel refuses is dropped.
    fn send_queued(&mut self) {
        let mut spare = None;
        if let Some(sender) = &mut self.sender {
            while let Ok((b, stats)) = sender.done.try_recv() {
                sender.in_thread -= 1;
                self.stats.add(&stats);
                spare = Some(b);
            }
        }
        if let Some(mut b) = spare {
            self.recycle_batch(&mut b);
            self.spare_batch = b;
        }
        // Without a thread, or when a batch of wire-sized frames (ACKs,
        // requests and answers) would wake an idle one only to write it:
        // here and now. With batches still in the thread, behind them, so
        // that frames keep their order.
        let inline = match &self.sender {
            None => true,
            Some(sender) => {
                sender.in_thread == 0 && self.tx.iter().all(|(_, f)| f.len() <= INLINE_FRAME)
            }
        };
        if inline {
            write_batch(self.fd.as_fd(), &self.tx, &mut self.stats);
            let mut tx = std::mem::take(&mut self.tx);
            self.recycle_batch(&mut tx);
            self.tx = tx;
            return;
        }
        let next = std::mem::take(&mut self.spare_batch);
        let batch = std::mem::replace(&mut self.tx, next);
        if let Some(sender) = &mut self.sender {
            if sender.batches.send(batch).is_err() {
                // The thread ends only with the process: nothing is lost here.
                self.sender = None;
            } else {
                sender.in_thread += 1;
            }
        }
    }

    /// Returns a written batch's buffers to the pool.
    fn recycle_batch(&mut self, batch: &mut Batch) {
        for (_, frame) in batch.drain(..) {
            self.keep(frame);
        }
    }

    /// Pools a buffer for reuse, if there is room and it can take any frame.
    fn keep(&mut self, buf: Vec<u8>) {
        if self.free.len() < POOL_LIMIT && buf.capacity() >= FRAME_CAPACITY {
            self.free.push(buf);
        }
    }
}

impl Link for PacketLink {
    fn caps(&self) -> LinkCaps {
        LinkCaps {
            medium: Medium::Ethernet,
            mtu: self.mtu,
            checksum_offload: false,
        }
    }

    fn recv(&mut self, _now: Instant) -> Option<Vec<u8>> {
        while self.rx.is_empty() {
            if std::mem::take(&mut self.drained) || !self.fill() {
                return None;
            }
        }
        self.rx.pop()
    }

    fn send(&mut self, now: Instant, mut frame: Vec<u8>) {
        let hdr = if self.segmentation {
            offload_header(&mut frame, None)
        } else {
            VnetHdr::default()
        };
        self.queue(now, hdr, frame);
    }

    fn buffer(&mut self) -> Vec<u8> {
        // Not cleared: a buffer that is long enough is cut to size by the
        // caller instead of being zeroed again.
        self.take_buffer()
    }

    fn recycle(&mut self, frame: Vec<u8>) {
        self.keep(frame);
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }

    fn flush(&mut self, _now: Instant) {
        if !self.tx.is_empty() {
            self.send_queued();
        }
    }

    fn segmentation(&self) -> Option<usize> {
        self.segmentation.then_some(SEGMENTED_FRAME)
    }

    fn vouch_for_checksums(&mut self) -> bool {
        self.vouching = self.may_vouch;
        self.vouching
    }

    fn send_segmented(&mut self, now: Instant, mut frame: Vec<u8>, mss: u16) {
        let hdr = offload_header(&mut frame, Some(mss));
        self.queue(now, hdr, frame);
    }
}

impl PacketLink {
    fn queue(&mut self, now: Instant, hdr: VnetHdr, frame: Vec<u8>) {
        self.tx.push((hdr.bytes(), frame));
        if self.tx.len() >= MAX_BATCH {
            self.flush(now);
        }
    }
}

/// Writes a batch, counting what went and what was dropped.
fn write_batch(fd: BorrowedFd<'_>, tx: &Batch, stats: &mut PacketStats) {
    let mut done = 0;
    while done < tx.len() {
        match sys::send_batch(fd, &tx[done..]) {
            Ok(0) => {
                stats.tx_dropped += (tx.len() - done) as u64;
                break;
            }
            Ok(n) => {
                stats.tx_frames += n as u64;
                done += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                // The queue is full: drop the rest, as a NIC does;
                // TCP retransmits.
                stats.tx_dropped += (tx.len() - done) as u64;
                break;
            }
            Err(_) => {
                // This frame is refused (too long, interface down): drop
                // it and try the others.
                stats.tx_dropped += 1;
                done += 1;
            }
        }
    }
}

/// The virtio-net header for an outgoing frame of a link with offloads: a
/// TCP segment gets its pseudo-header sum in the checksum field and
/// `NEEDS_CSUM` (the kernel, or the veth's peer, finishes it), and with
/// `mss` it is cut into segments of that many payload bytes. Other frames
/// go as they are.
/// [`offload_header`] as the bytes a TAP device with virtio-net headers
/// takes before the frame (the same legacy layout).
pub(super) fn offload_header_bytes(frame: &mut [u8], mss: Option<u16>) -> [u8; VNET_HDR_LEN] {
    offload_header(frame, mss).bytes()
}

fn offload_header(frame: &mut [u8], mss: Option<u16>) -> VnetHdr {
    let Some(tcp) = L4Layout::of(frame).filter(|l| l.tcp) else {
        return VnetHdr::default();
    };
    let at = tcp.start + 16;
    frame[at..at + 2].copy_from_slice(&tcp.pseudo_sum.to_be_bytes());
    let gso_type = match (mss, tcp.v6) {
        (None, _) => GSO_NONE,
        (Some(_), false) => GSO_TCPV4,
        (Some(_), true) => GSO_TCPV6,
    };
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: (tcp.start + tcp.header_len) as u16,
        gso_size: mss.unwrap_or(0),
        csum_start: tcp.start as u16,
        csum_offset: 16,
    }
}

/// Where the TCP or UDP header of an Ethernet frame starts, and the sum
/// of its pseudo-header. None for anything else: other protocols, IP
/// fragments, IPv6 extension headers (smoltcp sends none with TCP or UDP).
#[derive(Debug, PartialEq, Eq)]
struct L4Layout {
    start: usize,
    /// TCP's header with options, or UDP's 8 bytes.
    header_len: usize,
    /// Bytes from `start` to the end of the IP packet.
    len: usize,
    tcp: bool,
    v6: bool,
    pseudo_sum: u16,
}

const TCP: u8 = 6;
const UDP: u8 = 17;

impl L4Layout {
    fn of(frame: &[u8]) -> Option<L4Layout> {
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let ip = frame.get(14..)?;
        let (start, len, proto, v6, pseudo_sum) = match ethertype {
            0x0800 => {
                let ihl = usize::from(ip.first()? & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
                let fragment = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff != 0;
                let proto = *ip.get(9)?;
                if ihl < 20 || total > ip.len() || total < ihl || fragment {
                    return None;
                }
                let mut p = [0u8; 12];
                p[..8].copy_from_slice(ip.get(12..20)?);
                p[9] = proto;
                p[10..].copy_from_slice(&((total - ihl) as u16).to_be_bytes());
                (14 + ihl, total - ihl, proto, false, ones_complement_sum(&p))
            }
            0x86dd => {
                let payload = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
                let proto = *ip.get(6)?;
                if 40 + payload > ip.len() {
                    return None;
                }
                let mut p = [0u8; 40];
                p[..32].copy_from_slice(ip.get(8..40)?);
                p[32..36].copy_from_slice(&(payload as u32).to_be_bytes());
                p[39] = proto;
                (54, payload, proto, true, ones_complement_sum(&p))
            }
            _ => return None,
        };
        let header_len = match proto {
            TCP => usize::from(frame.get(start + 12)? >> 4) * 4,
            UDP => 8,
            _ => return None,
        };
        if header_len < 8 || header_len > len {
            return None;
        }
        Some(L4Layout {
            start,
            header_len,
            len,
            tcp: proto == TCP,
            v6,
            pseudo_sum,
        })
    }

    /// Where the checksum field is, from `start`.
    fn checksum_offset(&self) -> usize {
        if self.tcp { 16 } else { 6 }
    }

    /// Whether the checksum of the segment or datagram is right (an IPv4
    /// UDP datagram without one counts as right).
    fn checksum_ok(&self, frame: &[u8]) -> bool {
        let at = self.start + self.checksum_offset();
        if !self.tcp && !self.v6 && frame[at..at + 2] == [0, 0] {
            return true;
        }
        let body = ones_complement_sum(&frame[self.start..self.start + self.len]);
        let sum = u32::from(body) + u32::from(self.pseudo_sum);
        (sum & 0xffff) + (sum >> 16) == 0xffff
    }
}

/// Whether a received frame's TCP or UDP checksum can be trusted: the
/// kernel says so for frames it made itself (partial checksum; a local
/// sender never corrupts them) or already verified (`DATA_VALID`); others
/// are verified here. Frames of other protocols pass (smoltcp checks
/// theirs), and so do IP fragments, which cannot be verified before
/// reassembly: on this link, a fragmented datagram's checksum is not
/// verified.
fn checksum_trusted(frame: &[u8], hdr: &VnetHdr, stats: &mut PacketStats) -> bool {
    if hdr.flags & (F_NEEDS_CSUM | F_DATA_VALID) != 0 {
        return true;
    }
    match L4Layout::of(frame) {
        Some(l4) => {
            let ok = l4.checksum_ok(frame);
            stats.rx_csum_verified += u64::from(ok);
            ok
        }
        None => true,
    }
}

/// Completes a checksum the sender left partial (`NEEDS_CSUM`): the field at
/// `csum_start + csum_offset` holds the pseudo-header sum, and the sum of
/// everything from `csum_start` to the end of the frame is folded into it,
/// as the kernel's `skb_checksum_help` does. False when the header points
/// outside the frame.
fn finish_checksum(frame: &mut [u8], hdr: &VnetHdr, stats: &mut PacketStats) -> bool {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return true;
    }
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > frame.len() {
        return false;
    }
    let sum = !ones_complement_sum(&frame[start..]);
    // A computed zero is sent as 0xffff (the same value in one's complement):
    // for UDP, zero would mean "no checksum".
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    stats.rx_csum_completed += 1;
    true
}

/// The Internet checksum's one's-complement sum of `data` as big-endian
/// 16-bit words (an odd last byte padded with zero), folded, not inverted.
fn ones_complement_sum(data: &[u8]) -> u16 {
    // Eight bytes at a time: one's-complement addition with end-around carry
    // gives the same folded result at any word width.
    let add = |acc: u64, v: u64| {
        let (s, carry) = acc.overflowing_add(v);
        s + u64::from(carry)
    };
    let mut acc = 0u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        acc = add(acc, u64::from_be_bytes(w.try_into().unwrap_or([0; 8])));
    }
    let rest = words.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    acc = add(acc, u64::from_be_bytes(last));
    let mut folded = (acc >> 32) + (acc & 0xffff_ffff);
    folded = (folded >> 16) + (folded & 0xffff);
    folded = (folded >> 16) + (folded & 0xffff);
    folded = (folded >> 16) + (folded & 0xffff);
    folded as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sum agrees with the plain 16-bit definition, odd lengths included.
    #[test]
    fn ones_complement_sum_matches_the_definition() {
        let mut x = 0x1234_5678u32;
        let data: Vec<u8> = (0..1001)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for len in [0, 1, 2, 7, 8, 9, 15, 16, 17, 100, 1000, 1001] {
            let d = &data[..len];
            let mut s: u32 = 0;
            for c in d.chunks(2) {
                let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
                s += u32::from(w);
                s = (s & 0xffff) + (s >> 16);
            }
            assert_eq!(ones_complement_sum(d), s as u16, "len {len}");
        }
    }

    /// A UDP datagram whose checksum field holds the pseudo-header sum, as a
    /// kernel leaves it (CHECKSUM_PARTIAL), verifies once completed.
    #[test]
    fn partial_udp_checksum_is_completed() {
        use smoltcp::wire::{EthernetFrame, Ipv4Address, Ipv4Packet, UdpPacket};
        let src = Ipv4Address::new(10, 0, 0, 1);
        let dst = Ipv4Address::new(10, 0, 0, 2);
        let payload = b"hello, partial checksum!!";
        let udp_len = 8 + payload.len();
        let mut frame = vec![0u8; 14 + 20 + udp_len];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
            ip.set_version(4);
            ip.set_header_len(20);
            ip.set_total_len((20 + udp_len) as u16);
            ip.set_hop_limit(64);
            ip.set_next_header(smoltcp::wire::IpProtocol::Udp);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            ip.fill_checksum();
        }
        {
            let mut udp = UdpPacket::new_unchecked(&mut frame[34..]);
            udp.set_src_port(1000);
            udp.set_dst_port(2000);
            udp.set_len(udp_len as u16);
            udp.payload_mut().copy_from_slice(payload);
        }
        // The pseudo-header sum: addresses, protocol, length.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        let partial = ones_complement_sum(&pseudo);
        frame[34 + 6..34 + 8].copy_from_slice(&partial.to_be_bytes());
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(!udp.verify_checksum(&src.into(), &dst.into()));

        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        let mut stats = PacketStats::default();
        assert!(finish_checksum(&mut frame, &hdr, &mut stats));
        assert_eq!(stats.rx_csum_completed, 1);
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&src.into(), &dst.into()));
        // The link's own check agrees, and notices a flipped bit.
        let l4 = L4Layout::of(&frame).unwrap();
        assert!(!l4.tcp && l4.start == 34 && l4.len == udp_len);
        assert!(l4.checksum_ok(&frame));
        frame[50] ^= 0x10;
        assert!(!l4.checksum_ok(&frame));
        frame[50] ^= 0x10;
        // A zero checksum means none, for UDP over IPv4.
        let mut none = frame.clone();
        none[40..42].copy_from_slice(&[0, 0]);
        none[50] ^= 0x10;
        assert!(l4.checksum_ok(&none));

        // A header pointing past the frame is refused, not obeyed.
        let bad = VnetHdr {
            csum_start: frame.len() as u16 - 1,
            ..hdr
        };
        assert!(!finish_checksum(&mut frame, &bad, &mut stats));
    }

    /// A TCP frame sent with offloads carries its pseudo-header sum and a
    /// header that lets the receiver complete the checksum, over IPv4 and
    /// IPv6; with an MSS it asks for segmentation.
    #[test]
    fn outgoing_tcp_checksum_is_left_for_the_kernel_to_complete() {
        use smoltcp::phy::ChecksumCapabilities;
        use smoltcp::wire::{
            IpAddress, IpProtocol, IpRepr, Ipv4Address, Ipv6Address, TcpControl, TcpPacket,
            TcpRepr, TcpSeqNumber,
        };
        let payload = vec![0xabu8; 3001];
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 5201,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(7),
            ack_number: Some(TcpSeqNumber(9)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &payload,
        };
        let pairs: [(IpAddress, IpAddress); 2] = [
            (
                Ipv4Address::new(10, 0, 0, 1).into(),
                Ipv4Address::new(10, 0, 0, 2).into(),
            ),
            (
                Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into(),
                Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).into(),
            ),
        ];
        for (src, dst) in pairs {
            let ip = IpRepr::new(src, dst, IpProtocol::Tcp, tcp.buffer_len(), 64);
            let mut frame = vec![0u8; 14 + ip.buffer_len()];
            let ethertype: u16 = if src.version() == smoltcp::wire::IpVersion::Ipv4 {
                0x0800
            } else {
                0x86dd
            };
            frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
            ip.emit(&mut frame[14..], &ChecksumCapabilities::default());
            let l4 = 14 + ip.header_len();
            // As smoltcp leaves it with TCP checksum offload: zero.
            let mut none = ChecksumCapabilities::default();
            none.tcp = smoltcp::phy::Checksum::Rx;
            tcp.emit(
                &mut TcpPacket::new_unchecked(&mut frame[l4..]),
                &src,
                &dst,
                &none,
            );
            let hdr = offload_header(&mut frame, Some(1448));
            assert_eq!(hdr.flags, F_NEEDS_CSUM);
            assert_eq!(usize::from(hdr.csum_start), l4);
            assert_eq!(hdr.csum_offset, 16);
            assert_eq!(usize::from(hdr.hdr_len), l4 + 20);
            assert_eq!(hdr.gso_size, 1448);
            let v6 = ethertype == 0x86dd;
            assert_eq!(hdr.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
            assert!(
                !TcpPacket::new_checked(&frame[l4..])
                    .unwrap()
                    .verify_checksum(&src, &dst)
            );
            // What the receiving kernel does with such a frame.
            let mut stats = PacketStats::default();
            assert!(finish_checksum(&mut frame, &hdr, &mut stats));
            assert!(
                TcpPacket::new_checked(&frame[l4..])
                    .unwrap()
                    .verify_checksum(&src, &dst)
            );
            // Without an MSS: no segmentation asked.
            assert_eq!(offload_header(&mut frame, None).gso_type, GSO_NONE);
        }
        // Anything else goes untouched.
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(offload_header(&mut arp, None), VnetHdr::default());
    }
}
