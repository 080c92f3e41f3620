//! TCP sockets that are not connected yet. Linux's fail `recv` and `send`
//! (ENOTCONN, EPIPE) and poll `POLLOUT|POLLHUP`; an end of an AF_UNIX pair
//! would block or take the bytes instead. So a guest's TCP socket starts as
//! an unconnected AF_UNIX stream socket (its `recv` fails with EINVAL, its
//! `send` with ENOTCONN, its poll mask is Linux's), and becomes one end of
//! a pair when the guest connects it or listens on it: it is connected to a
//! listener of the Sentry's, whose accepted end is the Sentry's end. The
//! descriptor stays the same file, so the guest's duplicates, its epoll
//! registrations, flags and options all carry over.
//!
//! The Sentry may not make AF_UNIX sockets itself (`socket` of AF_UNIX is
//! not in its filter). A process of its own makes them, the *connector*
//! (`sys::connector`): it lives in an empty network namespace, so the only
//! abstract address its sockets can reach is its listener's, which it hands
//! to the Sentry. The Sentry connects a socket to that address and accepts
//! it, two system calls. Where the Sentry makes no host sockets, its filter
//! lets `connect` take only an address as long as that one (4 bytes), so
//! the only other sockets it could reach are named by paths of two bytes,
//! relative to `/`, where it works (see `crate::filter`).
//!
//! Where the connector cannot start (no `CAP_SYS_ADMIN` for its namespace),
//! TCP sockets are pairs from the start, as datagram sockets always are.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use nix::sys::socket::{SockFlag, UnixAddr, accept4, connect};

use crate::sys;

pub use crate::sys::connector::{LISTENER_NAME, MAX_BATCH};

/// The length of the listener's address: the family, the NUL of an
/// abstract name, the name.
pub const ADDRESS_LEN: usize = size_of::<libc::sa_family_t>() + 1 + LISTENER_NAME.len();

/// How long the Sentry waits for the connector's answer before it gives
/// up on it (it answers in microseconds; a connector that stopped must not
/// stall the Sentry).
const PATIENCE: Duration = Duration::from_secs(1);

/// The Sentry's side of the connector.
#[derive(Debug)]
pub struct Connector {
    ctl: OwnedFd,
    /// The listener the connector connects sockets to (non-blocking).
    listener: OwnedFd,
    /// A request or its answer failed to cross (the connector is gone or
    /// too slow): a late answer would be taken for the next one's, so it is
    /// asked nothing more.
    broken: std::cell::Cell<bool>,
}

impl Connector {
    /// Starts the connector process (before the Sentry confines itself).
    pub fn spawn() -> io::Result<Connector> {
        let bpf = connector_filter()?;
        let (ours, theirs) = sys::helper_channel(PATIENCE)?;
        sys::connector::spawn(theirs, &bpf)?;
        let (err, mut fds) = sys::connector::recv_reply(ours.as_raw_fd())?;
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        let listener = fds
            .pop()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EPROTO))?;
        nix::fcntl::fcntl(
            &listener,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Ok(Connector {
            ctl: ours,
            listener,
            broken: std::cell::Cell::new(false),
        })
    }

    /// Whether it may be asked (see `broken`).
    pub fn works(&self) -> bool {
        !self.broken.get()
    }

    /// One request and its answer: the connector's errno and descriptors.
    fn call(&self, req: [u8; 4]) -> io::Result<(i32, Vec<OwnedFd>)> {
        if self.broken.get() {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        let r = sys::connector::send_record(self.ctl.as_raw_fd(), &req, &[])
            .and_then(|()| sys::connector::recv_reply(self.ctl.as_raw_fd()));
        if r.is_err() {
            self.broken.set(true);
        }
        r
    }

    /// Up to `count` (at most [`MAX_BATCH`]) new unconnected stream
    /// sockets, close-on-exec, blocking unless `nonblock`.
    pub fn sockets(&self, count: usize, nonblock: bool) -> io::Result<Vec<OwnedFd>> {
        let count = count.clamp(1, MAX_BATCH) as u8;
        let (err, fds) = self.call([b'n', count, u8::from(nonblock), 0])?;
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        if fds.is_empty() || fds.len() > usize::from(count) {
            self.broken.set(true);
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        // The connector has closed its copies once it says so: a socket
        // the guest then closes is closed at once (and leaves the set that
        // tells which are open, `sentry::unconnected`).
        match sys::connector::recv_reply(self.ctl.as_raw_fd()) {
            Ok((0, extra)) if extra.is_empty() => {}
            _ => {
                self.broken.set(true);
                return Err(io::Error::from_raw_os_error(libc::EPROTO));
            }
        }
        Ok(fds)
    }

    /// Connects `sock` (a socket the connector made) to the listener: the
    /// Sentry's end of the pair it now belongs to.
    pub fn attach(&self, sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        let addr = UnixAddr::new_abstract(LISTENER_NAME)?;
        // Its backlog is never full: each connect is accepted at once.
        connect(sock.as_raw_fd(), &addr)?;
        // Only sockets the connector made reach the listener, and only the
        // Sentry connects them, one at a time: this is the one just connected.
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        Ok(accept4(&self.listener, flags)?)
    }

    /// The listener (for tests).
    #[cfg(test)]
    fn listener(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.listener.as_fd()
    }
}

/// The connector's own filter: AF_UNIX sockets made, records in and out,
/// descriptors closed; nothing else.
fn connector_filter() -> io::Result<Vec<u8>> {
    let other = |e: libseccomp::error::SeccompError| io::Error::other(e.to_string());
    let mut f = ScmpFilterContext::new_filter(ScmpAction::KillProcess).map_err(other)?;
    for name in ["recvmsg", "sendmsg", "close", "exit", "exit_group"] {
        let call = ScmpSyscall::from_name(name).map_err(other)?;
        f.add_rule(ScmpAction::Allow, call).map_err(other)?;
    }
    let socket = ScmpSyscall::from_name("socket").map_err(other)?;
    f.add_rule_conditional(
        ScmpAction::Allow,
        socket,
        &[ScmpArgCompare::new(
            0,
            ScmpCompareOp::Equal,
            libc::AF_UNIX as u64,
        )],
    )
    .map_err(other)?;
    crate::filter::export(&f)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use nix::sys::socket::{AddressFamily, MsgFlags, SockType, getsockopt, recv, send, sockopt};

    use super::*;

    /// As root (CI): the connector needs a network namespace of its own.
    #[test]
    fn sockets_start_unconnected_and_attach_to_a_pair() {
        let c = Connector::spawn().unwrap();
        let socks = c.sockets(3, false).unwrap();
        assert_eq!(socks.len(), 3);
        let s = &socks[0];
        assert_eq!(getsockopt(s, sockopt::SockType).unwrap(), SockType::Stream);
        // Not connected: reads fail at once instead of blocking.
        let mut b = [0u8; 4];
        assert_eq!(
            recv(s.as_raw_fd(), &mut b, MsgFlags::empty()),
            Err(nix::errno::Errno::EINVAL)
        );
        assert_eq!(
            send(s.as_raw_fd(), b"x", MsgFlags::MSG_NOSIGNAL),
            Err(nix::errno::Errno::ENOTCONN)
        );
        let end = c.attach(s.as_fd()).unwrap();
        send(s.as_raw_fd(), b"ping", MsgFlags::empty()).unwrap();
        assert_eq!(recv(end.as_raw_fd(), &mut b, MsgFlags::empty()).unwrap(), 4);
        assert_eq!(&b, b"ping");
        send(end.as_raw_fd(), b"pong", MsgFlags::empty()).unwrap();
        assert_eq!(recv(s.as_raw_fd(), &mut b, MsgFlags::empty()).unwrap(), 4);
        assert_eq!(&b, b"pong");
        // Each attach pairs the socket handed over, not another.
        let end2 = c.attach(socks[2].as_fd()).unwrap();
        send(socks[2].as_raw_fd(), b"two!", MsgFlags::empty()).unwrap();
        assert_eq!(
            recv(end.as_raw_fd(), &mut b, MsgFlags::MSG_DONTWAIT),
            Err(nix::errno::Errno::EAGAIN)
        );
        assert_eq!(
            recv(end2.as_raw_fd(), &mut b, MsgFlags::empty()).unwrap(),
            4
        );
        // A connected socket cannot be attached again; nothing is queued.
        assert!(c.attach(s.as_fd()).is_err());
        assert_eq!(
            accept4(c.listener(), SockFlag::empty()).err(),
            Some(nix::errno::Errno::EAGAIN)
        );
    }

    /// Closing the only copy of a socket the connector made takes it out
    /// of an epoll set at once: how the Sentry learns that a guest closed
    /// an unconnected socket. (Whether the connector still held a copy is
    /// a race this test seldom loses on an idle machine; e2e
    /// `a_closed_sockets_port_is_free_at_once` catches it under load.)
    #[test]
    fn the_connector_keeps_no_copy_of_what_it_handed_over() {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
        let c = Connector::spawn().unwrap();
        for _ in 0..20 {
            let mut socks = c.sockets(MAX_BATCH, false).unwrap();
            let set = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
            for (i, s) in socks.iter().enumerate() {
                set.add(s, EpollEvent::new(EpollFlags::EPOLLOUT, i as u64))
                    .unwrap();
            }
            let mut events = vec![EpollEvent::empty(); MAX_BATCH + 1];
            assert_eq!(
                set.wait(&mut events, EpollTimeout::ZERO).unwrap(),
                MAX_BATCH
            );
            socks.truncate(1);
            assert_eq!(set.wait(&mut events, EpollTimeout::ZERO).unwrap(), 1);
            assert_eq!(events[0].data(), 0);
        }
    }

    #[test]
    fn non_blocking_sockets_are_made_so() {
        let c = Connector::spawn().unwrap();
        for nb in [false, true] {
            let s = c.sockets(1, nb).unwrap().pop().unwrap();
            let fl = nix::fcntl::fcntl(&s, nix::fcntl::FcntlArg::F_GETFL).unwrap();
            let got =
                nix::fcntl::OFlag::from_bits_truncate(fl).contains(nix::fcntl::OFlag::O_NONBLOCK);
            assert_eq!(got, nb);
        }
    }

    #[test]
    fn a_socket_not_of_the_connectors_is_refused() {
        let c = Connector::spawn().unwrap();
        // Made in the test's namespace, where the name is not found.
        let a = nix::sys::socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        assert!(c.attach(a.as_fd()).is_err());
        assert!(accept4(c.listener(), SockFlag::empty()).is_err());
        // The connector still serves.
        assert_eq!(c.sockets(1, false).unwrap().len(), 1);
    }
}
