//! Descriptor resolution: from a guest thread's descriptor number to our
//! socket record, through a cached pidfd of the thread, `pidfd_getfd` and
//! the copy's `SO_COOKIE`. The same path reaches a guest's end later, to
//! report a reset.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{MsgFlags, send};

use super::Sentry;
use crate::errno::{CALLER_GONE, Errno};
use crate::gsock::GKey;
use crate::sys::{self, Notif};

/// Threads whose pidfds are kept open (each costs the Sentry a descriptor,
/// which guest sockets need more).
const MAX_PIDFDS: usize = 256;

/// A guest descriptor resolved to one of our sockets.
#[derive(Debug)]
pub struct Resolved {
    /// Our record, when the descriptor is one of our pair ends.
    pub key: Option<GKey>,
    /// A copy of the guest's descriptor, valid during this call.
    pub file: OwnedFd,
}

/// Pidfds of the guest threads that made trapped calls lately.
#[derive(Debug, Default)]
pub(crate) struct PidfdCache {
    open: HashMap<u32, OwnedFd>,
}

impl PidfdCache {
    /// Thread `tid`'s pidfd, when it is cached.
    fn get(&self, tid: u32) -> Option<BorrowedFd<'_>> {
        self.open.get(&tid).map(AsFd::as_fd)
    }

    /// Keeps `pidfd` for `tid` (replacing a stale one); a full cache is
    /// emptied first, as threads that made no call lately are the likely
    /// majority.
    fn insert(&mut self, tid: u32, pidfd: OwnedFd) {
        if self.open.len() >= MAX_PIDFDS && !self.open.contains_key(&tid) {
            self.open.clear();
        }
        self.open.insert(tid, pidfd);
    }
}

impl Sentry {
    /// Resolves guest descriptor `fd` of the calling thread.
    pub(crate) fn resolve(&mut self, n: &Notif, fd: u64) -> Result<Resolved, Errno> {
        let fd = i32::try_from(fd as i64).map_err(|_| Errno::EBADF)?;
        if fd < 0 {
            return Err(Errno::EBADF);
        }
        let file = self.guest_fd(n, fd)?;
        let key = match sys::socket_cookie(file.as_fd()) {
            Ok(c) => self.socks.by_cookie(c),
            Err(_) => None,
        };
        if let Some(k) = key {
            self.socks[k].home = Some((n.tid, fd));
        }
        Ok(Resolved { key, file })
    }

    fn guest_fd(&mut self, n: &Notif, fd: RawFd) -> Result<OwnedFd, Errno> {
        // Out of descriptors in the Sentry: the guest hears EMFILE/ENFILE,
        // as if its own call had run out.
        let own_limit = |e: &io::Error| match e.raw_os_error() {
            Some(code @ (libc::EMFILE | libc::ENFILE)) => Some(Errno::from_raw(code)),
            _ => None,
        };
        for attempt in 0..2 {
            if attempt == 1 || self.pidfds.get(n.tid).is_none() {
                let pidfd = match sys::pidfd_open(n.tid as i32, true) {
                    Ok(p) => p,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                        return Err(CALLER_GONE);
                    }
                    Err(e) => return Err(own_limit(&e).unwrap_or(Errno::EBADF)),
                };
                if !sys::notif_id_valid(self.listeners.of(n), n.id) {
                    return Err(CALLER_GONE);
                }
                self.pidfds.insert(n.tid, pidfd);
            }
            let Some(pidfd) = self.pidfds.get(n.tid) else {
                return Err(Errno::EBADF);
            };
            match sys::pidfd_getfd(pidfd, fd) {
                Ok(f) => return Ok(f),
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => return Err(Errno::EBADF),
                Err(e) if own_limit(&e).is_some() => {
                    return Err(own_limit(&e).unwrap_or(Errno::EMFILE));
                }
                // ESRCH: a stale pidfd of a thread that exited; reopen once.
                Err(_) => continue,
            }
        }
        Err(Errno::EBADF)
    }

    /// A reset as Linux reports it on the native data path: the guest's
    /// next read takes what was already delivered, then fails once with
    /// ECONNRESET (later reads see end of file), and writes fail with EPIPE.
    /// That is what an AF_UNIX stream end does when its peer closes with
    /// unread data: so one byte goes into the Sentry's end through a copy
    /// of the guest's (taken where the guest last named the socket; the
    /// cookie proves it is the same socket), and the caller then closes
    /// the Sentry's end with the socket's record (later trapped calls find
    /// no record and run natively on the dead end, as on a closed socket).
    /// Without a copy (the descriptor moved on) the guest reads end of file.
    pub(super) fn report_reset(&mut self, key: GKey) {
        let Some(copy) = self.guest_end(key) else {
            return;
        };
        let _ = send(
            copy.as_raw_fd(),
            &[0],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
    }

    /// A copy of the guest's end of `key`'s pair, taken where the guest last
    /// named it; none when that descriptor is gone or is another socket now
    /// (the cookie tells).
    pub(super) fn guest_end(&mut self, key: GKey) -> Option<OwnedFd> {
        let s = self.socks.get(key)?;
        let (tid, fd) = s.home?;
        let cookie = s.cookie;
        let copy = match self.pidfds.get(tid) {
            Some(p) => sys::pidfd_getfd(p, fd),
            None => sys::pidfd_open(tid as i32, true).and_then(|p| sys::pidfd_getfd(p.as_fd(), fd)),
        }
        .ok()?;
        (sys::socket_cookie(copy.as_fd()).ok() == Some(cookie)).then_some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some_fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn cache_keeps_one_pidfd_per_thread() {
        let mut c = PidfdCache::default();
        assert!(c.get(7).is_none());
        c.insert(7, some_fd());
        let first = c.get(7).unwrap().as_raw_fd();
        c.insert(7, some_fd());
        assert_eq!(c.open.len(), 1);
        assert_ne!(
            c.get(7).unwrap().as_raw_fd(),
            first,
            "a stale pidfd is replaced"
        );
    }

    #[test]
    fn a_full_cache_starts_over() {
        let mut c = PidfdCache::default();
        for tid in 0..MAX_PIDFDS as u32 {
            c.insert(tid, some_fd());
        }
        assert_eq!(c.open.len(), MAX_PIDFDS);
        // Refreshing a cached thread keeps the others.
        c.insert(3, some_fd());
        assert_eq!(c.open.len(), MAX_PIDFDS);
        c.insert(100_000, some_fd());
        assert_eq!(c.open.len(), 1);
        assert!(c.get(100_000).is_some() && c.get(3).is_none());
    }
}
