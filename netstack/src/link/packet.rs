//! A link over an AF_PACKET socket on an existing host interface (the veth
//! Docker puts in a container's namespace): the `sandbox` network mode.
//!
//! Frames enter with `recvmmsg`, a batch at a time, into recycled buffers
//! that [`Link::recv`] hands out one by one; frames sent are queued and
//! leave with `sendmmsg` on [`Link::flush`] (or when a batch is full).
//! Every frame carries a virtio-net header (`PACKET_VNET_HDR`): on the way
//! in it says whether the checksum is still partial, as it is for frames a
//! local kernel sent through a veth, and the link completes it, because
//! smoltcp verifies checksums on this link. A full socket drops and counts,
//! like a NIC queue overflow; the stack never blocks on the host.

mod sys;

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use smoltcp::time::Instant;

use super::{Link, LinkCaps, Medium};
use sys::{F_NEEDS_CSUM, MAX_BATCH, VNET_HDR_LEN, VnetHdr};

/// Socket buffer, each way: room for a few batches of the largest frames.
const SOCKET_BUFFER: usize = 8 << 20;
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
    /// Frames whose partial checksum the link completed.
    pub rx_csum_completed: u64,
    /// Frames dropped on the way in (larger than a buffer, or a checksum
    /// request pointing outside the frame).
    pub rx_dropped: u64,
    /// Frames the kernel took.
    pub tx_frames: u64,
    /// Frames dropped on the way out (socket buffer full, interface down).
    pub tx_dropped: u64,
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
    stats: PacketStats,
}

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
            stats: PacketStats::default(),
        })
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
        if ok {
            let got = self.batch.len();
            // Kept in reverse, so that `pop` yields them in arrival order.
            for (mut frame, meta) in bufs.drain(..got).zip(&self.batch).rev() {
                if meta.truncated || !finish_checksum(&mut frame, &meta.hdr, &mut self.stats) {
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
        let mut done = 0;
        while done < self.tx.len() {
            match sys::send_batch(self.fd.as_fd(), &self.tx[done..]) {
                Ok(0) => {
                    self.stats.tx_dropped += (self.tx.len() - done) as u64;
                    break;
                }
                Ok(n) => {
                    self.stats.tx_frames += n as u64;
                    done += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    // The queue is full: drop the rest, as a NIC does;
                    // TCP retransmits.
                    self.stats.tx_dropped += (self.tx.len() - done) as u64;
                    break;
                }
                Err(_) => {
                    // This frame is refused (too long, interface down): drop
                    // it and try the others.
                    self.stats.tx_dropped += 1;
                    done += 1;
                }
            }
        }
        for (_, frame) in self.tx.drain(..) {
            if self.free.len() < POOL_LIMIT {
                self.free.push(frame);
            }
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
            if !self.fill() {
                return None;
            }
        }
        self.rx.pop()
    }

    fn send(&mut self, now: Instant, frame: Vec<u8>) {
        let hdr = VnetHdr::default();
        self.tx.push((hdr.bytes(), frame));
        if self.tx.len() >= MAX_BATCH {
            self.flush(now);
        }
    }

    fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.take_buffer();
        b.clear();
        b
    }

    fn recycle(&mut self, frame: Vec<u8>) {
        if self.free.len() < POOL_LIMIT {
            self.free.push(frame);
        }
    }

    fn fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn flush(&mut self, _now: Instant) {
        if !self.tx.is_empty() {
            self.send_queued();
        }
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

        // A header pointing past the frame is refused, not obeyed.
        let bad = VnetHdr {
            csum_start: frame.len() as u16 - 1,
            ..hdr
        };
        assert!(!finish_checksum(&mut frame, &bad, &mut stats));
    }
}
