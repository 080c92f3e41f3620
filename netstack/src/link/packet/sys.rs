//! The system calls behind [`PacketLink`](super::PacketLink) that nix does
//! not wrap: binding to an interface, the `SOL_PACKET` options, and batched
//! `recvmmsg`/`sendmmsg` with a virtio-net header in front of every frame.
//! nix has the two batch calls, but it builds its headers per call and
//! cannot put the header and the frame in one message without copying.

use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socket, sockopt};

/// Length of the legacy `struct virtio_net_hdr` that `PACKET_VNET_HDR` puts
/// in front of every frame, both ways.
pub(super) const VNET_HDR_LEN: usize = 10;

/// Most messages one `recvmmsg` or `sendmmsg` call moves.
pub(super) const MAX_BATCH: usize = 64;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset`
/// holds only the pseudo-header sum; the rest is still to be added.
pub(super) const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the kernel (or the NIC) verified the checksum.
pub(super) const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`: the frame goes as it is.
pub(super) const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`: cut into TCP/IPv4 segments of `gso_size`.
pub(super) const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub(super) const GSO_TCPV6: u8 = 4;

/// A legacy `struct virtio_net_hdr`. Packet sockets use the host's byte
/// order for it (`vio_le()` is true on little-endian hosts, the only ones
/// where legacy virtio differs from network order in practice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    pub fn bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Sets an integer socket option nix does not know.
fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed with it; the
    // kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking, close-on-exec AF_PACKET raw socket bound to `ifindex`
/// for every protocol, with virtio-net headers, ignoring the host's own
/// outgoing frames, and with `buffer` bytes of socket buffer each way.
pub(super) fn open(ifindex: u32, buffer: usize) -> io::Result<OwnedFd> {
    // Protocol 0 at creation: the socket hears nothing until it is bound, so
    // no frame of another interface slips in before the bind.
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let size = buffer.min(i32::MAX as usize);
    // The FORCE variants pass net.core.rmem_max; they need CAP_NET_ADMIN,
    // which opening an AF_PACKET socket needed anyway.
    setsockopt(&fd, sockopt::RcvBufForce, &size)?;
    setsockopt(&fd, sockopt::SndBufForce, &size)?;
    set_int(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
    set_int(
        fd.as_fd(),
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        1,
    )?;
    let ifindex =
        libc::c_int::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is a live sockaddr_ll and its exact size is passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// One received message: the frame's length and whether it was cut short.
#[derive(Debug, Clone, Copy)]
pub(super) struct Received {
    pub hdr: VnetHdr,
    pub truncated: bool,
}

/// Receives up to `bufs.len()` (at most [`MAX_BATCH`]) frames, each into a
/// buffer's spare capacity, which is set as the buffer's length. Returns one
/// entry per frame received; `WouldBlock` when none was waiting.
pub(super) fn recv_batch(
    fd: BorrowedFd<'_>,
    bufs: &mut [Vec<u8>],
    out: &mut Vec<Received>,
) -> io::Result<()> {
    let n = bufs.len().min(MAX_BATCH);
    let mut hdrs = [[0u8; VNET_HDR_LEN]; MAX_BATCH];
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 2 * MAX_BATCH];
    // SAFETY: mmsghdr is plain old data; all-zero (null pointers, zero
    // lengths) is a valid value.
    let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    for (i, (buf, hdr)) in bufs.iter_mut().zip(hdrs.iter_mut()).take(n).enumerate() {
        buf.clear();
        let spare: &mut [MaybeUninit<u8>] = buf.spare_capacity_mut();
        iovs[2 * i] = libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: VNET_HDR_LEN,
        };
        iovs[2 * i + 1] = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: spare.len(),
        };
        msgs[i].msg_hdr.msg_iov = &raw mut iovs[2 * i];
        msgs[i].msg_hdr.msg_iovlen = 2;
    }
    // SAFETY: each of the first `n` headers points at two iovecs, which
    // point at a live 10-byte header and at the spare capacity of a live
    // Vec; nothing else touches them during the call. No name or control
    // buffer is given.
    let rc = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    out.clear();
    for i in 0..rc as usize {
        let total = msgs[i].msg_len as usize;
        let truncated = msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let len = total.saturating_sub(VNET_HDR_LEN).min(bufs[i].capacity());
        // SAFETY: the kernel wrote `total` bytes over the two iovecs: the
        // header first, then `len` bytes into the buffer's spare capacity,
        // which are therefore initialised.
        unsafe { bufs[i].set_len(len) };
        out.push(Received {
            hdr: VnetHdr::parse(&hdrs[i]),
            truncated: truncated || total < VNET_HDR_LEN,
        });
    }
    Ok(())
}

/// Sends up to [`MAX_BATCH`] frames, each behind its virtio-net header.
/// Returns how many the kernel took (the first of the others failed, if
/// any, and the error is returned on the next call).
pub(super) fn send_batch(
    fd: BorrowedFd<'_>,
    frames: &[([u8; VNET_HDR_LEN], Vec<u8>)],
) -> io::Result<usize> {
    let n = frames.len().min(MAX_BATCH);
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 2 * MAX_BATCH];
    // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
    let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    for (i, (hdr, frame)) in frames.iter().take(n).enumerate() {
        // The kernel only reads from these (iovec has no const variant).
        iovs[2 * i] = libc::iovec {
            iov_base: hdr.as_ptr().cast_mut().cast(),
            iov_len: VNET_HDR_LEN,
        };
        iovs[2 * i + 1] = libc::iovec {
            iov_base: frame.as_ptr().cast_mut().cast(),
            iov_len: frame.len(),
        };
        msgs[i].msg_hdr.msg_iov = &raw mut iovs[2 * i];
        msgs[i].msg_hdr.msg_iovlen = 2;
    }
    // SAFETY: each of the first `n` headers points at two iovecs over live,
    // borrowed bytes that the kernel only reads; no name or control buffer.
    let rc = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}
