//! Non-blocking connects: the guest's end polls not writable while the
//! handshake runs, and writable once it ended (with `SO_ERROR` telling how).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv, send};

use super::Sentry;
use crate::gsock::GKey;

impl Sentry {
    /// A non-blocking connect finished (or failed): take the filler away so
    /// the guest sees its descriptor writable.
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
        if r.error
            && let Ok(Some(e)) = self.stack.take_error(id)
        {
            self.socks[key].connect_error = Some(crate::errno::errno(e));
            self.fail_parked_connects(key);
        } else if r.writable {
            self.socks[key].connected = true;
        }
        let s = &mut self.socks[key];
        while s.filler > 0 {
            let want = s.filler.min(self.scratch.len());
            match recv(
                s.end.as_raw_fd(),
                &mut self.scratch[..want],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => break,
                Ok(n) => s.filler -= n,
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        s.filler = 0;
    }

    /// Fills the guest end's send room so it polls not-writable until the
    /// connection is up.
    pub(crate) fn fill(&mut self, key: GKey, guest: BorrowedFd<'_>) {
        let zeros = [0u8; 64 << 10];
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
        self.socks[key].filler = total;
    }
}
