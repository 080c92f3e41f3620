//! Guest TCP sockets before `connect` or `listen` (see `crate::connector`):
//! unconnected AF_UNIX stream sockets made by the connector ahead of time,
//! attached to a pair end of the Sentry's when the guest connects or
//! listens.
//!
//! Such a socket has no end of the Sentry's to report its close, so the
//! Sentry watches each in an epoll set of its own, level-triggered: an
//! unconnected stream socket always polls `POLLHUP`, and a socket whose
//! last descriptor is closed leaves the set. One `epoll_wait` therefore
//! lists the ones still open; the records of the others go (their stack
//! sockets are closed, their ports freed). That count is taken when a port
//! is found in use and whenever the number watched has doubled since.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::Sentry;
use super::pool::PairPool;
use crate::connector::Connector;
use crate::errno::Errno;
use crate::gsock::GKey;
use crate::sys;

/// Sockets kept ready per blocking mode.
const READY: usize = 4;
/// Sockets asked for at once.
const BATCH: usize = crate::connector::MAX_BATCH;

/// An unconnected socket for the guest, and its cookie.
#[derive(Debug)]
pub(crate) struct Lone {
    pub(crate) sock: OwnedFd,
    pub(crate) cookie: u64,
}

/// The connector, its ready sockets, and the set that tells which of the
/// guest's unconnected sockets are still open.
#[derive(Debug)]
pub(crate) struct Unconnected {
    connector: Option<Connector>,
    /// Ready sockets, blocking ones first.
    ready: [Vec<Lone>; 2],
    /// Every socket the connector made that is still open (event data: its
    /// cookie), connected since or not.
    set: Epoll,
    /// How many the set holds at most (closed ones leave it silently).
    watched: usize,
    /// `watched` after the last count.
    counted: usize,
}

impl Unconnected {
    /// Starts the connector; without it (an error is logged), TCP sockets
    /// are pairs from the start.
    pub(crate) fn new() -> std::io::Result<Unconnected> {
        let connector = match Connector::spawn() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(
                    "no connector ({e}): a TCP socket's reads before connect block \
                     instead of failing"
                );
                None
            }
        };
        Ok(Unconnected {
            connector,
            ready: [Vec::new(), Vec::new()],
            set: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            watched: 0,
            counted: 0,
        })
    }

    fn connector(&self) -> Option<&Connector> {
        self.connector.as_ref().filter(|c| c.works())
    }

    /// Whether new TCP sockets start unconnected.
    pub(crate) fn available(&self) -> bool {
        self.connector().is_some()
    }

    /// A socket for the guest, blocking unless `nonblock`.
    pub(crate) fn take(&mut self, nonblock: bool, pool: &mut PairPool) -> Result<Lone, Errno> {
        let slot = usize::from(nonblock);
        if self.ready[slot].is_empty() {
            self.make(nonblock, 1, pool)?;
        }
        self.ready[slot].pop().ok_or(Errno::ENOBUFS)
    }

    /// Tops up the ready sockets.
    pub(crate) fn refill(&mut self, pool: &mut PairPool) {
        for nonblock in [false, true] {
            if self.ready[usize::from(nonblock)].len() < READY && self.available() {
                let _ = self.make(nonblock, BATCH, pool);
            }
        }
    }

    fn make(&mut self, nonblock: bool, count: usize, pool: &mut PairPool) -> Result<(), Errno> {
        let Some(c) = self.connector() else {
            return Err(Errno::ENOBUFS);
        };
        let socks = c
            .sockets(count, nonblock)
            .map_err(|e| Errno::of_io(&e, Errno::ENOBUFS))?;
        for sock in socks {
            // The guest writes straight into it once it is connected.
            pool.size_send_buffer(sock.as_fd());
            let cookie =
                sys::socket_cookie(sock.as_fd()).map_err(|e| Errno::of_io(&e, Errno::EIO))?;
            let ev = EpollEvent::new(EpollFlags::EPOLLOUT, cookie);
            self.set.add(&sock, ev).map_err(Errno::from)?;
            self.watched += 1;
            self.ready[usize::from(nonblock)].push(Lone { sock, cookie });
        }
        Ok(())
    }

    /// Makes the guest's unconnected socket one end of a pair: the other
    /// end, the Sentry's.
    pub(crate) fn attach(&mut self, sock: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
        // (A connector that stopped answering made this one all the same.)
        let Some(c) = &self.connector else {
            return Err(Errno::ENOBUFS);
        };
        // It stays in the set (which holds it by the descriptor number it was
        // added under, long closed) until its last descriptor closes; it is
        // no longer unconnected, so a count ignores it.
        c.attach(sock).map_err(|e| Errno::of_io(&e, Errno::ENOBUFS))
    }

    /// Whether enough sockets were handed out since the last count for
    /// another to pay.
    pub(crate) fn count_due(&self) -> bool {
        self.watched > 2 * self.counted + 64
    }

    /// The cookies of the unconnected sockets still open (ready ones
    /// included).
    pub(crate) fn open(&mut self) -> Result<HashSet<u64>, Errno> {
        // One wait reports each ready socket once when there is room for
        // all; a full answer may have left some out, so it is asked again
        // with twice the room.
        let mut room = self.watched.max(64);
        loop {
            let mut events = vec![EpollEvent::empty(); room];
            let n = self
                .set
                .wait(&mut events, EpollTimeout::ZERO)
                .map_err(Errno::from)?;
            if n < room {
                self.watched = n;
                self.counted = n;
                return Ok(events[..n].iter().map(EpollEvent::data).collect());
            }
            room *= 2;
        }
    }
}

impl Sentry {
    /// An unconnected socket for a new guest TCP socket.
    pub(crate) fn take_lone(&mut self, nonblock: bool) -> Result<Lone, Errno> {
        self.unconnected.take(nonblock, &mut self.pool)
    }

    /// A guest socket still unconnected (`end` is none) gets its pair end:
    /// the guest connects it or listens on it. `file` is the guest's
    /// descriptor.
    pub(crate) fn attach(&mut self, key: GKey, file: BorrowedFd<'_>) -> Result<(), Errno> {
        if self.socks[key].end.is_some() {
            return Ok(());
        }
        let end = self.unconnected.attach(file)?;
        self.socks[key].end = Some(end);
        self.watch_end(key)
            .map_err(|e| Errno::of_io(&e, Errno::ENOMEM))
    }

    /// Drops the records of unconnected sockets the guest has closed;
    /// whether any went.
    pub(crate) fn reap_unconnected(&mut self) -> bool {
        let Ok(open) = self.unconnected.open() else {
            return false;
        };
        let gone: Vec<GKey> = self
            .socks
            .iter()
            .filter(|(_, s)| s.end.is_none() && !open.contains(&s.cookie))
            .map(|(k, _)| k)
            .collect();
        for &key in &gone {
            self.remove(key);
        }
        !gone.is_empty()
    }
}
