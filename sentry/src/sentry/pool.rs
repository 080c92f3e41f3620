//! The pair pool: AF_UNIX pairs made ahead of time, so that `socket()` and
//! `accept()` do not pay for `socketpair`, buffer sizing and `SO_COOKIE`
//! while the guest waits. Pairs leave by `take`, and the event loop tops
//! the pool up at the end of each round.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::errno::Errno;
use crate::sys;

/// Send buffer of each pair end: room for a fast stream without a trip
/// through the Sentry for every few kilobytes.
const PAIR_BUFFER: usize = 1 << 20;
/// The same while the stack is short of buffer memory (see
/// [`netstack::budget`]): the kernel holds up to twice an end's send
/// buffer in its queue, and a guest that fills thousands of connections
/// must not make it hold gigabytes either.
const SHORT_PAIR_BUFFER: usize = 32 << 10;
/// Pairs kept ready, per kind and guest-end mode: making one costs several
/// system calls, which are better spent while the guest runs than while it
/// waits in socket() or accept().
const POOL_STREAM: usize = 4;
const POOL_SEQPACKET: usize = 2;

/// Both ends of an AF_UNIX pair, made ahead of time.
#[derive(Debug)]
pub(crate) struct Pair {
    /// The Sentry's end.
    pub(crate) end: OwnedFd,
    /// The guest's end, until it is installed in the guest.
    pub(crate) guest: OwnedFd,
    /// `SO_COOKIE` of the guest's end.
    pub(crate) cookie: u64,
}

/// Ready pairs, by kind and the guest end's blocking mode (`pool_slot`).
#[derive(Debug, Default)]
pub(crate) struct PairPool {
    ready: [Vec<Pair>; 4],
    /// `SO_SNDBUFFORCE` failed once (the Sentry shed CAP_NET_ADMIN): it
    /// is not tried again.
    unforced: bool,
    /// The stack's buffers are short of memory: ends get small buffers.
    short: bool,
}

impl PairPool {
    /// A pair for a new guest socket, its guest end blocking unless asked
    /// otherwise: a ready one, or a new one when none is left.
    pub(crate) fn take(&mut self, stream: bool, guest_nonblock: bool) -> Result<Pair, Errno> {
        match self.ready[pool_slot(stream, guest_nonblock)].pop() {
            Some(p) => Ok(p),
            None => self.new_pair(stream, guest_nonblock),
        }
    }

    /// Whether the stack's buffers are short of memory now.
    pub(crate) fn set_short(&mut self, short: bool) {
        self.short = short;
    }

    /// Gives an end its send buffer: past `wmem_max` while the Sentry may,
    /// as far as `wmem_max` allows otherwise; a small one while memory is
    /// short.
    pub(crate) fn size_send_buffer(&mut self, fd: BorrowedFd<'_>) {
        use nix::sys::socket::{setsockopt, sockopt};
        if self.short {
            let _ = setsockopt(&fd, sockopt::SndBuf, &SHORT_PAIR_BUFFER);
            return;
        }
        if !self.unforced {
            if setsockopt(&fd, sockopt::SndBufForce, &PAIR_BUFFER).is_ok() {
                return;
            }
            self.unforced = true;
        }
        let _ = setsockopt(&fd, sockopt::SndBuf, &PAIR_BUFFER);
    }

    /// Makes a pair: stream (TCP) or seqpacket (datagrams), close-on-exec,
    /// with large send buffers; the Sentry's end non-blocking, the guest's
    /// as asked. (Making both ends in the guest's mode would save the
    /// `fcntl`, since the Sentry passes MSG_DONTWAIT anyway, but a blocking
    /// Sentry end measured iperf3 over loopback at 13 Gbit/s instead of 19.)
    fn new_pair(&mut self, stream: bool, guest_nonblock: bool) -> Result<Pair, Errno> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let ty = if stream {
            SockType::Stream
        } else {
            SockType::SeqPacket
        };
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let (end, guest) = socketpair(AddressFamily::Unix, ty, None, flags).map_err(Errno::from)?;
        if !guest_nonblock {
            use nix::fcntl::{FcntlArg, OFlag, fcntl};
            fcntl(&guest, FcntlArg::F_SETFL(OFlag::O_RDWR)).map_err(Errno::from)?;
        }
        // The guest writes straight into its end, so its room is set now. A
        // stream's own end gets its room when a pump first runs out of it
        // (most connections never do); a datagram end's now, since netlink
        // answers are written into it without waiting.
        self.size_send_buffer(guest.as_fd());
        if !stream {
            self.size_send_buffer(end.as_fd());
        }
        let cookie = sys::socket_cookie(guest.as_fd()).map_err(|e| Errno::of_io(&e, Errno::EIO))?;
        Ok(Pair { end, guest, cookie })
    }

    /// Makes pairs until every kind has its share ready (or making one fails).
    pub(crate) fn refill(&mut self) {
        for stream in [true, false] {
            for nonblock in [false, true] {
                let (slot, want) = (pool_slot(stream, nonblock), pool_size(stream));
                while self.ready[slot].len() < want {
                    match self.new_pair(stream, nonblock) {
                        Ok(p) => self.ready[slot].push(p),
                        Err(_) => break,
                    }
                }
            }
        }
    }

    /// Pairs ready of this kind and mode.
    #[cfg(test)]
    fn ready(&self, stream: bool, guest_nonblock: bool) -> usize {
        self.ready[pool_slot(stream, guest_nonblock)].len()
    }
}

impl super::Sentry {
    /// A pair for a new guest socket: (Sentry's end, guest's end, the guest
    /// end's cookie), its guest end blocking unless asked otherwise.
    pub(crate) fn take_pair(
        &mut self,
        stream: bool,
        guest_nonblock: bool,
    ) -> Result<(OwnedFd, OwnedFd, u64), Errno> {
        let p = self.pool.take(stream, guest_nonblock)?;
        Ok((p.end, p.guest, p.cookie))
    }
}

/// Which pool holds pairs of this kind and guest-end mode.
fn pool_slot(stream: bool, guest_nonblock: bool) -> usize {
    usize::from(stream) * 2 + usize::from(guest_nonblock)
}

/// How many pairs of a kind are kept ready.
fn pool_size(stream: bool) -> usize {
    if stream { POOL_STREAM } else { POOL_SEQPACKET }
}
#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::socket::{SockType, getsockopt, sockopt};

    use super::*;

    fn nonblocking(fd: &OwnedFd) -> bool {
        let fl = fcntl(fd, FcntlArg::F_GETFL).unwrap();
        OFlag::from_bits_truncate(fl).contains(OFlag::O_NONBLOCK)
    }

    #[test]
    fn slots_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for stream in [false, true] {
            for nb in [false, true] {
                assert!(seen.insert(pool_slot(stream, nb)));
                assert!(pool_slot(stream, nb) < 4);
            }
        }
    }

    #[test]
    fn refill_fills_every_kind_and_take_drains_it() {
        let mut pool = PairPool::default();
        pool.refill();
        for stream in [false, true] {
            for nb in [false, true] {
                assert_eq!(pool.ready(stream, nb), pool_size(stream));
            }
        }
        let p = pool.take(true, false).unwrap();
        assert_eq!(pool.ready(true, false), POOL_STREAM - 1);
        assert_eq!(pool.ready(true, true), POOL_STREAM);
        drop(p);
        pool.refill();
        assert_eq!(pool.ready(true, false), POOL_STREAM);
    }

    #[test]
    fn an_empty_pool_still_gives_pairs() {
        let mut pool = PairPool::default();
        let p = pool.take(false, true).unwrap();
        assert_eq!(pool.ready(false, true), 0);
        assert_eq!(
            getsockopt(&p.guest, sockopt::SockType).unwrap(),
            SockType::SeqPacket
        );
    }

    #[test]
    fn a_stream_end_waits_for_its_room_and_a_datagram_end_does_not() {
        let mut pool = PairPool::default();
        let sndbuf = |fd: &OwnedFd| getsockopt(fd, sockopt::SndBuf).unwrap();
        let p = pool.take(true, false).unwrap();
        assert!(sndbuf(&p.guest) > sndbuf(&p.end));
        pool.size_send_buffer(p.end.as_fd());
        assert_eq!(sndbuf(&p.guest), sndbuf(&p.end));
        let p = pool.take(false, false).unwrap();
        assert_eq!(sndbuf(&p.guest), sndbuf(&p.end));
    }

    #[test]
    fn ends_have_the_modes_asked_for() {
        let mut pool = PairPool::default();
        for nb in [false, true] {
            for stream in [false, true] {
                let p = pool.take(stream, nb).unwrap();
                assert!(nonblocking(&p.end), "the Sentry's end never blocks");
                assert_eq!(nonblocking(&p.guest), nb);
                let want = if stream {
                    SockType::Stream
                } else {
                    SockType::SeqPacket
                };
                assert_eq!(getsockopt(&p.end, sockopt::SockType).unwrap(), want);
                assert_eq!(sys::socket_cookie(p.guest.as_fd()).unwrap(), p.cookie);
                assert!(p.end.as_raw_fd() != p.guest.as_raw_fd());
            }
        }
    }
}
