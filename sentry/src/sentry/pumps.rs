//! The pumps: bytes and datagrams between each pair end and its stack
//! socket. `pump_tx` moves what the guest wrote into the stack, `pump_rx`
//! what the stack received into the pair; both stop when either side is
//! out of data or room, and resume on the next edge or stack event.

use std::os::fd::{AsFd, OwnedFd};

use netstack::{NetError, RecvFlags, Shutdown as NetShutdown, SockOpt, SocketId};
use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use nix::sys::socket::{MsgFlags, Shutdown, recv, send, shutdown};
use slotmap::Key;

use super::Sentry;
use crate::gsock::{Delivered, GKey, payload_hash};

impl Sentry {
    /// Moves what the guest wrote before a trapped call that must come
    /// after it: reads even when no edge has been seen yet.
    pub(crate) fn flush_tx(&mut self, key: GKey) {
        if let Some(s) = self.socks.get_mut(key) {
            s.readable = true;
        }
        self.pump_tx(key);
    }

    /// Moves bytes (or datagrams) the guest wrote into its end to the stack.
    pub(crate) fn pump_tx(&mut self, key: GKey) {
        let Some(s) = self.socks.get_mut(key) else {
            return;
        };
        if !s.takes_from_guest() {
            return;
        }
        let Some(id) = s.id else {
            // Netlink: the guest's plain writes are requests too.
            self.pump_netlink(key);
            return;
        };
        let dgram = s.is_dgram();
        if !dgram && s.is_connected() {
            self.pump_stream_tx(key, id);
            return;
        }
        let listening = s.is_listening();
        loop {
            let s = &mut self.socks[key];
            if !s.tx.is_empty() {
                let r = if dgram {
                    self.stack.send(id, &s.tx).map(|_| s.tx.len())
                } else {
                    self.stack.send(id, &s.tx)
                };
                match r {
                    Ok(n) => {
                        s.tx.drain(..n);
                        if !s.tx.is_empty() {
                            return;
                        }
                    }
                    Err(NetError::WouldBlock) => return,
                    // The connection cannot carry it any more (or the
                    // datagram has no destination): it is dropped, as the
                    // bytes of a reset connection are.
                    Err(_) => s.tx.clear(),
                }
            }
            if s.guest_eof || !s.readable {
                return;
            }
            let r = recv(s.end_fd(), &mut self.scratch, MsgFlags::MSG_DONTWAIT);
            match r {
                Ok(0) if !dgram || s.guest_gone || peer_closed(s.end.as_ref()) => {
                    s.guest_eof = true;
                    // A close, not a shutdown: the stack's close (when the
                    // record goes) ends the connection as Linux's does,
                    // with RST for SO_LINGER 0 or unread data.
                    let closed = s.guest_gone || peer_closed(s.end.as_ref());
                    if !dgram && !listening && !closed {
                        let _ = self.stack.shutdown(id, NetShutdown::Write);
                    }
                    return;
                }
                Ok(0) => {
                    // An empty datagram.
                    let _ = self.stack.send(id, &[]);
                }
                Ok(n) => {
                    if listening {
                        continue;
                    }
                    s.tx.extend_from_slice(&self.scratch[..n]);
                }
                Err(Errno::EAGAIN) => {
                    s.readable = false;
                    if s.guest_gone {
                        s.guest_eof = true;
                    }
                    return;
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    s.guest_eof = true;
                    return;
                }
            }
        }
    }

    /// Moves a connection's bytes from the pair straight into the stack's
    /// send buffer, until either runs dry.
    fn pump_stream_tx(&mut self, key: GKey, id: SocketId) {
        let s = &mut self.socks[key];
        if !s.tx.is_empty() {
            match self.stack.send(id, &s.tx) {
                Ok(n) => {
                    s.tx.drain(..n);
                }
                Err(NetError::WouldBlock) => {}
                Err(NetError::ConnectionReset) => {
                    s.tx.clear();
                    self.connection_failed(key, NetError::ConnectionReset);
                    return;
                }
                Err(_) => s.tx.clear(),
            }
            if !s.tx.is_empty() {
                return;
            }
        }
        loop {
            let s = &mut self.socks[key];
            if s.guest_eof || !s.readable {
                return;
            }
            let fd = s.end_fd();
            let hangup_seen = s.hangup_seen;
            let (mut eof, mut stop, mut unread) = (false, false, false);
            let r = self.stack.send_with(id, |room| {
                if room.is_empty() {
                    // No room: nothing is read (a zero-length read is not EOF).
                    return 0;
                }
                match recv(fd, room, MsgFlags::MSG_DONTWAIT) {
                    Ok(0) => {
                        eof = true;
                        0
                    }
                    // Less than there was room for: the pair was empty. The
                    // end is edge-triggered, so what the guest writes next
                    // brings a new edge; asking again now would only cost a
                    // read that fails with EAGAIN (one per request of a
                    // keep-alive server). Not after a hang-up, whose edge
                    // has come already: then the next read finds the end.
                    Ok(n) if n < room.len() && !hangup_seen => {
                        stop = true;
                        n
                    }
                    Ok(n) => n,
                    // The guest closed its end with bytes it never read.
                    Err(Errno::ECONNRESET) => {
                        (eof, unread) = (true, true);
                        0
                    }
                    Err(_) => {
                        stop = true;
                        0
                    }
                }
            });
            if unread {
                // Linux resets a connection closed with unread data: so
                // does the stack's close, with SO_LINGER 0, when the
                // record goes.
                let _ = self.stack.set_option(id, SockOpt::Linger(Some(0)));
                self.socks[key].guest_gone = true;
            }
            if stop {
                self.socks[key].readable = false;
            }
            match r {
                Ok(_) if eof => break,
                Ok(n) if n > 0 && !stop => {}
                // The pair is empty (or the stack full): the next edge resumes.
                Ok(_) | Err(NetError::WouldBlock) => return,
                Err(NetError::ConnectionReset) => {
                    self.connection_failed(key, NetError::ConnectionReset);
                    return;
                }
                Err(_) => {
                    // The connection cannot carry bytes any more: the
                    // guest's are dropped, as a reset connection's are.
                    match recv(fd, &mut self.scratch, MsgFlags::MSG_DONTWAIT) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
        }
        let s = &mut self.socks[key];
        s.guest_eof = true;
        // A close, not a shutdown: the stack's close (when the record goes)
        // ends the connection as Linux's does, with RST for SO_LINGER 0 or
        // unread data.
        if !(s.guest_gone || peer_closed(s.end.as_ref())) {
            let _ = self.stack.shutdown(id, NetShutdown::Write);
        }
    }

    /// The guest chose the socket's receive buffer (`SO_RCVBUF`, maybe on
    /// its listener): what waits for it in the pair is bounded alike. The
    /// Sentry's end gets that send buffer (the kernel caps and doubles it,
    /// as it does a TCP socket's receive buffer) and keeps it, so a peer's
    /// window closes when the guest stops reading, as on Linux, instead of
    /// after a megabyte.
    pub(crate) fn fit_end_to_recv_buffer(&mut self, key: GKey) {
        let Some(g) = self.socks.get_mut(key) else {
            return;
        };
        let (Some(id), Some(end)) = (g.id, g.end.as_ref()) else {
            return;
        };
        if let Ok(SockOpt::RecvBuffer(bytes)) =
            self.stack.option(id, netstack::SockOptName::RecvBuffer)
        {
            let _ = nix::sys::socket::setsockopt(end, nix::sys::socket::sockopt::SndBuf, &bytes);
            g.end_sized = true;
        }
    }

    /// Moves what the stack received into the pair, towards the guest.
    pub(crate) fn pump_rx(&mut self, key: GKey) {
        let mut blocked = self.pump_rx_inner(key);
        // Not while memory is short: the end keeps the kernel's default
        // and may grow later.
        if blocked
            && !self.stack.tcp_memory().short()
            && let Some(s) = self.socks.get_mut(key)
            && !s.end_sized
        {
            s.end_sized = true;
            if let Some(end) = &s.end {
                self.pool.size_send_buffer(end.as_fd());
            }
            blocked = self.pump_rx_inner(key);
        }
        self.arm_out(key, blocked);
    }

    /// Asks for the pair end's writable edges only while something waits
    /// for room: otherwise every read the guest makes would wake the Sentry.
    fn arm_out(&mut self, key: GKey, on: bool) {
        let Some(s) = self.socks.get_mut(key) else {
            return;
        };
        if s.out_armed == on {
            return;
        }
        let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        if on {
            flags |= EpollFlags::EPOLLOUT;
        }
        let mut ev = EpollEvent::new(flags, key.data().as_ffi());
        if let Some(end) = &s.end
            && self.epoll.modify(end, &mut ev).is_ok()
        {
            s.out_armed = on;
        }
    }

    /// Moves what it can; true when it stopped for want of room in the pair.
    fn pump_rx_inner(&mut self, key: GKey) -> bool {
        let Some(s) = self.socks.get_mut(key) else {
            return false;
        };
        let Some(id) = s.id else {
            return false;
        };
        if !s.gives_to_guest() {
            return false;
        }
        if s.is_dgram() {
            // Blocked receivers are served first, straight from the stack.
            if !s.parked.is_empty() || s.shut_rd {
                return false;
            }
            loop {
                let s = &mut self.socks[key];
                // A datagram waiting for room (it may be empty).
                if let Some((from, to, marks)) = s.rx_from {
                    match send(
                        s.end_fd(),
                        &s.rx,
                        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                    ) {
                        Ok(_) => s.delivered.push_back(Delivered {
                            len: s.rx.len(),
                            hash: payload_hash(&s.rx),
                            from,
                            to,
                            marks,
                        }),
                        Err(Errno::EAGAIN) => return true,
                        Err(_) => {}
                    }
                    s.rx.clear();
                    s.rx_from = None;
                }
                match self
                    .stack
                    .recv_from(id, &mut self.scratch, RecvFlags::default())
                {
                    Ok(d) => {
                        let s = &mut self.socks[key];
                        s.rx.extend_from_slice(&self.scratch[..d.copied]);
                        s.rx_from = Some((d.from, d.to, d.marks));
                    }
                    Err(_) => return false,
                }
            }
        }
        loop {
            let s = &mut self.socks[key];
            if !s.rx.is_empty() {
                match send(
                    s.end_fd(),
                    &s.rx,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                ) {
                    Ok(n) => {
                        s.rx.drain(..n);
                        continue;
                    }
                    Err(Errno::EAGAIN) => return true,
                    Err(_) => {
                        s.rx.clear();
                        return false;
                    }
                }
            }
            if s.stack_eof {
                return false;
            }
            // Straight from the stack's receive buffer into the pair.
            let fd = s.end_fd();
            let (mut called, mut stop) = (false, false);
            let r = self.stack.recv_with(id, |data| {
                if data.is_empty() {
                    return 0;
                }
                called = true;
                match send(fd, data, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
                    Ok(n) => {
                        stop = n < data.len();
                        n
                    }
                    Err(_) => {
                        stop = true;
                        0
                    }
                }
            });
            match r {
                Ok(0) if !called => {
                    let s = &mut self.socks[key];
                    s.stack_eof = true;
                    let _ = shutdown(s.end_fd(), Shutdown::Write);
                    return false;
                }
                Ok(_) => {
                    if stop {
                        return true;
                    }
                }
                Err(NetError::WouldBlock | NetError::NotConnected) => return false,
                Err(e) => {
                    self.connection_failed(key, e);
                    return false;
                }
            }
        }
    }

    /// The stack says the connection is over (`e`, taken from it by a
    /// receive or a send). An established connection reset, with no call
    /// waiting on it, is reported by the guest's end itself
    /// (`report_reset`, when `service` next looks at the socket). Anything
    /// else (timed out, or calls wait): the guest reads end of file, and
    /// writes fail with EPIPE; SO_ERROR tells the cause.
    fn connection_failed(&mut self, key: GKey, e: NetError) {
        let s = &mut self.socks[key];
        s.stack_eof = true;
        if s.connect_error.is_none() {
            s.connect_error = Some(crate::errno::errno(e));
        }
        if e == NetError::ConnectionReset && s.reset() {
            self.touched.push(key);
            return;
        }
        let _ = shutdown(s.end_fd(), Shutdown::Both);
    }

    /// Answers a datagram socket's netlink requests written with plain `write`.
    fn pump_netlink(&mut self, key: GKey) {
        loop {
            let s = &mut self.socks[key];
            if !s.readable {
                return;
            }
            match recv(s.end_fd(), &mut self.scratch, MsgFlags::MSG_DONTWAIT) {
                Ok(0) if s.guest_gone || peer_closed(s.end.as_ref()) => {
                    s.guest_gone = true;
                    s.guest_eof = true;
                    return;
                }
                Ok(n) => {
                    // An empty request means nothing.
                    if n > 0 {
                        let req = self.scratch[..n].to_vec();
                        self.netlink_request(key, &req);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    let s = &mut self.socks[key];
                    s.readable = false;
                    if s.guest_gone {
                        s.guest_eof = true;
                    }
                    return;
                }
            }
        }
    }

    /// Answers one netlink request by queueing the replies in the pair.
    pub(crate) fn netlink_request(&mut self, key: GKey, req: &[u8]) {
        let port = self.netlink_port(key);
        let nics: Vec<netstack::NicInfo> = self.stack.nics().cloned().collect();
        let replies = crate::netlink::respond(req, &nics, port);
        let s = &self.socks[key];
        for r in replies {
            let _ = send(
                s.end_fd(),
                &r,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            );
        }
    }

    /// The netlink port id of a socket, assigned on first use as the kernel's autobind does.
    pub(crate) fn netlink_port(&mut self, key: GKey) -> u32 {
        if self.socks[key].nl_port == 0 {
            self.next_nl_port = self.next_nl_port.wrapping_add(1).max(1);
            self.socks[key].nl_port = self.next_nl_port;
        }
        self.socks[key].nl_port
    }

    /// The address of a datagram the guest is about to read from its end:
    /// entries for datagrams it already read natively are dropped.
    pub(crate) fn match_delivered(
        &mut self,
        key: GKey,
        data: &[u8],
        full_len: usize,
        peek: bool,
    ) -> Option<crate::gsock::Origin> {
        self.socks
            .get_mut(key)?
            .take_delivered(data, full_len, peek)
    }
}

/// Whether the guest's end of a datagram pair is closed: a zero-length read
/// is either an empty datagram or the end of file, and only poll tells.
fn peer_closed(end: Option<&OwnedFd>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let Some(end) = end else {
        return false;
    };
    let mut fds = [PollFd::new(end.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn a_closed_guest_end_is_told_from_an_empty_datagram() {
        let (end, guest) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        send(guest.as_raw_fd(), &[], MsgFlags::empty()).unwrap();
        assert!(!peer_closed(Some(&end)), "an empty datagram is not the end");
        drop(guest);
        assert!(peer_closed(Some(&end)));
    }
}
