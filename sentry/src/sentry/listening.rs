//! Listening sockets: connections taken from the stack's accept queue wait
//! in the record's stash, and the listener's pair holds one token byte per
//! stashed connection so that the guest's `poll` reports it readable.

use std::os::fd::RawFd;

use nix::sys::socket::{MsgFlags, send};

use super::Sentry;
use crate::gsock::GKey;

impl Sentry {
    /// Takes connections off the stack's accept queue (up to the backlog),
    /// serves blocked accepts, and leaves a token byte for each of the rest.
    pub(super) fn refill_stash(&mut self, key: GKey) {
        let s = &mut self.socks[key];
        let (Some(id), Some(q)) = (s.id, s.queue_mut()) else {
            return;
        };
        while q.has_room() {
            match self.stack.accept(id) {
                Ok(c) => q.stash.push_back(c),
                Err(_) => break,
            }
        }
        self.retry_parked(key);
        self.write_tokens(key);
    }

    /// Leaves one token byte in the listener's pair per stashed connection.
    pub(crate) fn write_tokens(&mut self, key: GKey) {
        let Some(s) = self.socks.get_mut(key) else {
            return;
        };
        let end = s.end_fd();
        if let Some(q) = s.queue_mut() {
            q.tokens += write_tokens(end, q.tokens_owed());
        }
    }
}

/// Writes up to `owed` token bytes into a listener's end; how many went in.
fn write_tokens(end: RawFd, owed: usize) -> usize {
    let mut written = 0;
    while written < owed {
        match send(end, &[0u8], MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => written += 1,
            Err(_) => break,
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{AddressFamily, SockFlag, SockType, recv, socketpair};

    use super::*;
    use crate::gsock::AcceptQueue;

    #[test]
    fn the_stash_holds_the_backlog_and_one_more() {
        let mut q = AcceptQueue {
            backlog: 1,
            ..AcceptQueue::default()
        };
        assert!(q.has_room());
        let peer: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let mut stack = netstack::Stack::new(
            netstack::StackConfig::default(),
            netstack::Instant::from_micros(0),
        );
        for _ in 0..2 {
            let id = stack
                .socket(netstack::Domain::Ipv4, netstack::Protocol::Tcp)
                .unwrap();
            q.stash.push_back((id, peer));
        }
        assert!(!q.has_room());
        assert_eq!(q.tokens_owed(), 2);
        q.tokens = 2;
        q.stash.pop_front();
        // A token the guest has not consumed yet is not owed again.
        assert_eq!(q.tokens_owed(), 0);
        q.stash = VecDeque::new();
        assert!(q.has_room());
    }

    #[test]
    fn tokens_make_the_guest_end_readable_one_byte_each() {
        let (end, guest) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        assert_eq!(write_tokens(end.as_raw_fd(), 3), 3);
        assert_eq!(write_tokens(end.as_raw_fd(), 0), 0);
        let mut buf = [9u8; 8];
        assert_eq!(
            recv(guest.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap(),
            3
        );
        assert_eq!(&buf[..3], &[0, 0, 0]);
    }
}
