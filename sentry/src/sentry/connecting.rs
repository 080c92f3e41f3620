//! Connects under way: the guest's end polls not writable while the
//! handshake runs, and writable once it ended (with `SO_ERROR` telling how).
//!
//! An AF_UNIX stream end polls writable while the bytes it has in flight
//! take at most a quarter of its send buffer. So while a connect runs, the
//! guest end's send buffer is shrunk to the kernel's minimum (4.5 KiB) and
//! a few kilobytes of filler are written through it; when the handshake
//! ends, its buffer is sized back (reaching the guest's end where the guest
//! last named it, as a reset does) and the filler read back.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv, send, setsockopt, sockopt};

use super::Sentry;
use crate::gsock::GKey;

impl Sentry {
    /// A connect finished (or failed): take the filler away so the guest
    /// sees its descriptor writable.
    pub(super) fn check_connected(&mut self, key: GKey) {
        let s = &self.socks[key];
        let Some(id) = s.id else {
            return;
        };
        let Ok(r) = self.stack.readiness(id) else {
            return;
        };
        if !(r.writable || r.error || r.hangup) {
            return;
        }
        let mut established = false;
        if r.error
            && let Ok(Some(e)) = self.stack.take_error(id)
        {
            self.socks[key].connect_error = Some(crate::errno::errno(e));
            self.fail_parked_connects(key);
        } else if r.writable {
            established = true;
        }
        let filler = self.socks[key].connect_ended(established);
        // Room first, then the bytes out: either wakes a guest polling for POLLOUT.
        if let Some(guest) = self.guest_end(key) {
            self.pool.size_send_buffer(guest.as_fd());
        }
        let s = &self.socks[key];
        if let Some(end) = &s.end {
            drain(end.as_fd(), filler, &mut self.scratch);
        }
    }

    /// Holds the guest's end not writable until the connection is up.
    pub(crate) fn fill(&mut self, key: GKey, guest: BorrowedFd<'_>) {
        let filler = fill(guest);
        self.socks[key].connecting(filler);
    }
}

/// Shrinks `guest`'s send buffer to the least the kernel allows and fills
/// it: how many bytes went in.
fn fill(guest: BorrowedFd<'_>) -> usize {
    // The kernel doubles the value and rounds it up to its minimum.
    let _ = setsockopt(&guest, sockopt::SndBuf, &1);
    let zeros = [0u8; 16 << 10];
    let mut total = 0;
    loop {
        match send(
            guest.as_raw_fd(),
            &zeros,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => total += n,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    total
}

/// Reads `filler` bytes back out of the Sentry's end.
fn drain(end: BorrowedFd<'_>, mut filler: usize, scratch: &mut [u8]) {
    while filler > 0 {
        let want = filler.min(scratch.len());
        match recv(
            end.as_raw_fd(),
            &mut scratch[..want],
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => break,
            Ok(n) => filler -= n,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, getsockopt, socketpair};

    use super::*;
    use crate::sentry::pool::PairPool;

    fn writable(fd: &OwnedFd) -> bool {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        poll(&mut fds, PollTimeout::ZERO).unwrap();
        fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLOUT))
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        let mut pool = PairPool::default();
        let p = pool.take(true, true).unwrap();
        (p.end, p.guest)
    }

    #[test]
    fn a_few_kilobytes_hold_the_guest_end_not_writable() {
        let (end, guest) = pair();
        assert!(writable(&guest));
        let filler = fill(guest.as_fd());
        assert!(filler > 0 && filler <= 16 << 10, "filled {filler} bytes");
        assert!(!writable(&guest));
        let mut scratch = vec![0u8; 64 << 10];
        drain(end.as_fd(), filler, &mut scratch);
        assert!(writable(&guest));
        // Nothing of the filler is left for the guest's peer to read.
        assert_eq!(crate::sys::inq(end.as_fd()).unwrap(), 0);
    }

    #[test]
    fn the_send_buffer_is_sized_back() {
        let (end, guest) = pair();
        let before = getsockopt(&guest, sockopt::SndBuf).unwrap();
        let filler = fill(guest.as_fd());
        assert!(getsockopt(&guest, sockopt::SndBuf).unwrap() < before);
        PairPool::default().size_send_buffer(guest.as_fd());
        drain(end.as_fd(), filler, &mut [0u8; 4096]);
        assert_eq!(getsockopt(&guest, sockopt::SndBuf).unwrap(), before);
        assert!(writable(&guest));
    }

    #[test]
    fn drain_stops_at_an_empty_end() {
        let (end, _guest) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        // Claims more than is there: returns instead of spinning.
        drain(end.as_fd(), 100, &mut [0u8; 16]);
        let _ = getsockopt(&end, sockopt::SndBuf).unwrap();
    }
}
