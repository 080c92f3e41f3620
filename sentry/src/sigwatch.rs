//! Signals for blocked calls. The guest's filter is loaded with
//! `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` where the kernel has it: once
//! the Sentry has received a call, a signal no longer takes it away, so an
//! answer is never lost after the Sentry acted on it. (Without it, before
//! Linux 5.19, a signal can still end a call the Sentry acted on; the kernel
//! can even drop an answer it accepted. The retry then acts again.) A call that waits in the Sentry (a parked accept,
//! connect, datagram receive or send) must still end when its thread has a
//! signal to handle, as Linux's would: the Sentry asks which parked threads
//! have one pending (from `/proc/TID/status`, through the watcher process of
//! `sys::sigwatch`, since the Sentry itself may open no file) and answers
//! those calls `ERESTARTSYS`. The kernel then runs the handler and restarts
//! the call under `SA_RESTART`, or returns EINTR, exactly as for a call
//! interrupted inside the kernel.
//!
//! A signal sent to the whole process is pending for the process, and any
//! of its threads may take it. One that stays pending over two checks is
//! taken as this thread's to handle (another thread able to would have taken
//! it in microseconds): answering `ERESTARTSYS` to a thread that then finds
//! no signal would hand it errno 512.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
use nix::sys::socket::{MsgFlags, recv, send};

use crate::sys;
use crate::sys::sigwatch::MAX_TIDS;

/// The answer that has the kernel handle the signal and then restart the
/// call or fail it with EINTR, by the handler's `SA_RESTART`.
pub const ERESTARTSYS: crate::errno::Errno = crate::errno::Errno::ERESTARTSYS;

/// How often blocked calls' threads are checked for signals: the most a
/// handler waits for its blocked call to end.
pub const CHECK_EVERY: Duration = Duration::from_millis(10);

/// Whether guests' filters are loaded so that received calls wait killably
/// (and so the Sentry must end blocked calls for signals itself).
pub fn waits_killable() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        sys::seccomp_flags_supported(sys::SECCOMP_NEW_LISTENER | sys::SECCOMP_WAIT_KILLABLE_RECV)
    })
}

/// The Sentry's side of the watcher.
#[derive(Debug)]
pub struct SignalWatch {
    sock: OwnedFd,
    /// Process-wide signals seen pending at the last check, by thread.
    shared_before: HashMap<u32, u64>,
}

impl SignalWatch {
    /// Starts the watcher process (before the Sentry confines itself).
    pub fn spawn() -> io::Result<SignalWatch> {
        let bpf = watcher_filter()?;
        let (ours, theirs) = sys::helper_channel(Duration::from_millis(200))?;
        sys::sigwatch::spawn(theirs, &bpf)?;
        Ok(SignalWatch {
            sock: ours,
            shared_before: HashMap::new(),
        })
    }

    /// Of `tids` (threads with blocked calls), those with a signal to
    /// handle now.
    pub fn signalled(&mut self, tids: &[u32]) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut shared_now = HashMap::new();
        for chunk in tids.chunks(MAX_TIDS) {
            let req: Vec<u8> = chunk.iter().flat_map(|t| t.to_ne_bytes()).collect();
            send(self.sock.as_raw_fd(), &req, MsgFlags::MSG_NOSIGNAL)?;
            let mut resp = vec![0u8; chunk.len() * 16];
            let n = recv(self.sock.as_raw_fd(), &mut resp, MsgFlags::empty())?;
            if n != resp.len() {
                return Err(io::Error::from_raw_os_error(libc::EPROTO));
            }
            for (i, &tid) in chunk.iter().enumerate() {
                let own =
                    u64::from_ne_bytes(resp[16 * i..16 * i + 8].try_into().unwrap_or_default());
                let shared = u64::from_ne_bytes(
                    resp[16 * i + 8..16 * i + 16].try_into().unwrap_or_default(),
                );
                let lasting = shared & self.shared_before.get(&tid).copied().unwrap_or(0);
                if own != 0 || lasting != 0 {
                    out.push(tid);
                } else if shared != 0 {
                    shared_now.insert(tid, shared);
                }
            }
        }
        self.shared_before = shared_now;
        Ok(out)
    }
}

/// The watcher's own filter: read `/proc` files and answer; nothing else.
fn watcher_filter() -> io::Result<Vec<u8>> {
    let other = |e: libseccomp::error::SeccompError| io::Error::other(e.to_string());
    let mut f = ScmpFilterContext::new_filter(ScmpAction::KillProcess).map_err(other)?;
    for name in [
        "open",
        "openat",
        "read",
        "write",
        "close",
        "exit",
        "exit_group",
    ] {
        let call = ScmpSyscall::from_name(name).map_err(other)?;
        f.add_rule(ScmpAction::Allow, call).map_err(other)?;
    }
    crate::filter::export(&f)
}
