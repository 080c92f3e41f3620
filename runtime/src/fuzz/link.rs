//! The sandbox's end of the fuzzer's cable: one AF_UNIX `SOCK_SEQPACKET`
//! socket whose every record is one Ethernet frame. The other end is the
//! fuzzer, a peer host on the link; no frame touches the host kernel's
//! network stack. The socket is non-blocking and the Sentry's event loop
//! waits on it ([`Link::fd`]); it reads and writes with `read`/`write`,
//! which the confined Sentry may call.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use netstack::link::{LinkCaps, Medium};
use netstack::{Instant, Link};
use nix::errno::Errno;

/// The largest frame on the cable.
pub const MAX_FRAME: usize = 1514;
/// Frames kept for a retry while the fuzzer is not reading.
const MAX_QUEUED: usize = 1024;

/// A link over one end of a `SOCK_SEQPACKET` pair.
#[derive(Debug)]
pub struct SeqpacketLink {
    fd: OwnedFd,
    scratch: Vec<u8>,
    queued: VecDeque<Vec<u8>>,
    last_now: Instant,
}

impl SeqpacketLink {
    /// A link over `fd`, which must be a non-blocking `SOCK_SEQPACKET` socket.
    pub fn new(fd: OwnedFd) -> SeqpacketLink {
        SeqpacketLink {
            fd,
            scratch: vec![0; MAX_FRAME + 1],
            queued: VecDeque::new(),
            last_now: Instant::ZERO,
        }
    }
}

impl Link for SeqpacketLink {
    fn caps(&self) -> LinkCaps {
        LinkCaps {
            medium: Medium::Ethernet,
            mtu: MAX_FRAME - 14,
            // Checksums are checked, as on a wire: the fuzzer sends bad ones.
            checksum_offload: false,
        }
    }

    fn recv(&mut self, _now: Instant) -> Option<Vec<u8>> {
        loop {
            match nix::unistd::read(&self.fd, &mut self.scratch) {
                // Runts and frames cut by the buffer are what a NIC drops.
                Ok(n) if (14..=MAX_FRAME).contains(&n) => return Some(self.scratch[..n].to_vec()),
                Ok(0) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    fn send(&mut self, now: Instant, frame: Vec<u8>) {
        if self.queued.len() < MAX_QUEUED {
            self.queued.push_back(frame);
        }
        self.flush(now);
    }

    fn flush(&mut self, now: Instant) {
        self.last_now = now;
        while let Some(frame) = self.queued.front() {
            match nix::unistd::write(&self.fd, frame) {
                Err(Errno::EAGAIN) => break,
                // Sent, or refused for good (too large, the fuzzer gone).
                _ => {
                    self.queued.pop_front();
                }
            }
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        // Readiness covers reads only: retry queued writes soon.
        (!self.queued.is_empty()).then(|| self.last_now + netstack::Duration::from_millis(1))
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}
