//! The socket table: every guest socket's record, found by its key (the
//! epoll token of its pair end), by its guest end's cookie (descriptor
//! resolution) or by its stack socket (stack events); and the record's
//! arrival and departure.

use std::collections::HashMap;
use std::io;
use std::ops::{Index, IndexMut};

use netstack::SocketId;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use slotmap::{Key, SlotMap};

use super::Sentry;
use crate::errno::Errno;
use crate::gsock::{GKey, GSock, Phase};
use crate::sys::{self, Reply};

/// Every guest socket's record, indexed three ways.
#[derive(Debug, Default)]
pub(crate) struct SockTable {
    socks: SlotMap<GKey, GSock>,
    by_cookie: HashMap<u64, GKey>,
    by_id: HashMap<SocketId, GKey>,
}

impl SockTable {
    /// Adds a record, found from now on by its cookie and its stack socket.
    pub(crate) fn insert(&mut self, sock: GSock) -> GKey {
        let (cookie, id) = (sock.cookie, sock.id);
        let key = self.socks.insert(sock);
        self.by_cookie.insert(cookie, key);
        if let Some(id) = id {
            self.by_id.insert(id, key);
        }
        key
    }

    /// Takes a record out, with its indexes.
    pub(crate) fn remove(&mut self, key: GKey) -> Option<GSock> {
        let s = self.socks.remove(key)?;
        self.by_cookie.remove(&s.cookie);
        if let Some(id) = s.id {
            self.by_id.remove(&id);
        }
        Some(s)
    }

    /// Parts a record from its stack socket, which lives on elsewhere.
    pub(crate) fn detach_stack(&mut self, key: GKey) -> Option<SocketId> {
        let id = self.socks.get_mut(key)?.id.take()?;
        self.by_id.remove(&id);
        Some(id)
    }

    pub(crate) fn get(&self, key: GKey) -> Option<&GSock> {
        self.socks.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: GKey) -> Option<&mut GSock> {
        self.socks.get_mut(key)
    }

    /// Every record.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (GKey, &GSock)> {
        self.socks.iter()
    }

    /// The socket whose guest end has this `SO_COOKIE`.
    pub(crate) fn by_cookie(&self, cookie: u64) -> Option<GKey> {
        self.by_cookie.get(&cookie).copied()
    }

    /// The socket in front of stack socket `id`.
    pub(crate) fn by_stack(&self, id: SocketId) -> Option<GKey> {
        self.by_id.get(&id).copied()
    }
}

impl Index<GKey> for SockTable {
    type Output = GSock;
    fn index(&self, key: GKey) -> &GSock {
        &self.socks[key]
    }
}

impl IndexMut<GKey> for SockTable {
    fn index_mut(&mut self, key: GKey) -> &mut GSock {
        &mut self.socks[key]
    }
}

impl Sentry {
    /// Registers a new guest socket and its pair end.
    pub(crate) fn insert(&mut self, sock: GSock) -> io::Result<GKey> {
        let key = self.socks.insert(sock);
        if let Err(e) = self.watch_end(key) {
            self.socks.remove(key);
            return Err(e);
        }
        Ok(key)
    }

    /// Adds a socket's pair end (if it has one yet) to the epoll set.
    pub(crate) fn watch_end(&mut self, key: GKey) -> io::Result<()> {
        let Some(end) = &self.socks[key].end else {
            return Ok(());
        };
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        self.epoll
            .add(end, EpollEvent::new(flags, key.data().as_ffi()))?;
        Ok(())
    }

    /// Drops a socket whose descriptor never reached the guest.
    pub(crate) fn discard(&mut self, key: GKey) {
        self.remove(key);
    }

    /// Drops a socket record but keeps its stack socket (an accepted
    /// connection going back to the listener's stash).
    pub(crate) fn forget(&mut self, key: GKey) {
        self.socks.detach_stack(key);
        self.remove(key);
    }

    pub(super) fn remove(&mut self, key: GKey) {
        let Some(s) = self.socks.remove(key) else {
            return;
        };
        // Closing the end (when `s` drops) takes it out of the epoll set.
        if let Some(id) = s.id {
            let _ = self.stack.close(id);
        }
        if let Phase::Listening(q) = s.phase {
            for (child, _) in q.stash {
                let _ = self.stack.close(child);
            }
        }
        for p in s.parked {
            let _ = sys::notif_send(
                self.listeners.of(&p.notif),
                p.notif.id,
                Reply::Errno(Errno::EBADF),
            );
        }
    }

    pub(super) fn maybe_close(&mut self, key: GKey) {
        let Some(s) = self.socks.get(key) else {
            return;
        };
        if !s.finished() {
            return;
        }
        if matches!(s.phase, Phase::Reset) {
            self.report_reset(key);
        }
        self.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use netstack::{Domain, Protocol, Stack, StackConfig};

    use super::*;
    use crate::gsock::Kind;

    fn end() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn sock(cookie: u64, id: Option<SocketId>) -> GSock {
        let mut g = GSock::new(Kind::Tcp, false, libc::SOCK_STREAM, 6, Some(end()), cookie);
        g.id = id;
        g
    }

    fn stack_ids(n: usize) -> Vec<SocketId> {
        let mut stack = Stack::new(StackConfig::default(), netstack::Instant::from_micros(0));
        (0..n)
            .map(|_| stack.socket(Domain::Ipv4, Protocol::Tcp).unwrap())
            .collect()
    }

    #[test]
    fn records_are_found_three_ways() {
        let ids = stack_ids(2);
        let mut t = SockTable::default();
        let a = t.insert(sock(11, Some(ids[0])));
        let b = t.insert(sock(12, None));
        assert_eq!(t.by_cookie(11), Some(a));
        assert_eq!(t.by_cookie(12), Some(b));
        assert_eq!(t.by_stack(ids[0]), Some(a));
        assert_eq!(t.by_stack(ids[1]), None);
        assert_eq!(t[a].cookie, 11);
        t[b].listen(3);
        assert_eq!(t.get(b).and_then(|s| s.queue()).map(|q| q.backlog), Some(3));
    }

    #[test]
    fn removal_drops_every_index() {
        let ids = stack_ids(1);
        let mut t = SockTable::default();
        let a = t.insert(sock(21, Some(ids[0])));
        assert!(t.remove(a).is_some());
        assert!(t.get(a).is_none());
        assert_eq!(t.by_cookie(21), None);
        assert_eq!(t.by_stack(ids[0]), None);
        assert!(t.remove(a).is_none(), "a second removal finds nothing");
    }

    #[test]
    fn detaching_keeps_the_record_but_not_its_stack_socket() {
        let ids = stack_ids(1);
        let mut t = SockTable::default();
        let a = t.insert(sock(31, Some(ids[0])));
        assert_eq!(t.detach_stack(a), Some(ids[0]));
        assert_eq!(t.by_stack(ids[0]), None);
        assert_eq!(t.by_cookie(31), Some(a));
        assert!(t[a].id.is_none());
        assert_eq!(t.detach_stack(a), None);
    }
}
