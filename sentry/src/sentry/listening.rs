//! Listening sockets: connections taken from the stack's accept queue wait
//! in the record's stash, and the listener's pair holds one token byte per
//! stashed connection so that the guest's `poll` reports it readable.

use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, send};

use super::Sentry;
use crate::gsock::GKey;

impl Sentry {
    /// Takes connections off the stack's accept queue (up to the backlog),
    /// serves blocked accepts, and leaves a token byte for each of the rest.
    pub(super) fn refill_stash(&mut self, key: GKey) {
        let s = &self.socks[key];
        let Some(id) = s.id else {
            return;
        };
        let limit = s.backlog + 1;
        while self.socks[key].stash.len() < limit {
            match self.stack.accept(id) {
                Ok(c) => self.socks[key].stash.push_back(c),
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
        while s.tokens < s.stash.len() {
            match send(
                s.end.as_raw_fd(),
                &[0u8],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(_) => s.tokens += 1,
                Err(_) => break,
            }
        }
    }
}
