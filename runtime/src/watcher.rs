//! A child that acts once its parent has ended, however it ended: normally,
//! by a crash, or by SIGKILL. It waits for the end of a pipe whose writing
//! end only the parent holds. The restorer of `sandbox` mode (which gives a
//! namespace its addresses back) and the OCI Sentry's warden (which ends
//! the container with its Sentry) are such children.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::sandbox::sys;

/// The parent's side: the child, and the pipe's end that keeps it waiting.
#[derive(Debug)]
pub struct Watcher {
    pub pid: Pid,
    pipe: OwnedFd,
}

impl Watcher {
    /// Lets the child act now, and waits until it has.
    pub fn finish(self) -> nix::Result<WaitStatus> {
        drop(self.pipe);
        waitpid(self.pid, None)
    }
}

/// Where [`fork`] returns.
#[derive(Debug)]
pub enum Forked {
    Parent(Watcher),
    /// In the child, once the parent has ended: it keeps only stdio and
    /// `keep`, and must leave through `exit_now`.
    Child,
}

/// Forks the watcher. The child takes `name`, leaves the process group (a
/// terminal's Ctrl-C or a service manager's SIGTERM to the group must not
/// stop it), ignores the signals that would, and closes every descriptor
/// but stdio and `keep` (the parent's sockets and files are the parent's).
/// Call it before the caller confines itself with seccomp.
pub fn fork(name: &CStr, keep: &[BorrowedFd<'_>]) -> nix::Result<Forked> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    match sys::fork()? {
        ForkResult::Parent { child } => Ok(Forked::Parent(Watcher {
            pid: child,
            pipe: write,
        })),
        ForkResult::Child => {
            drop(write);
            let _ = nix::sys::prctl::set_name(name);
            let _ = nix::unistd::setsid();
            for signal in [
                Signal::SIGINT,
                Signal::SIGQUIT,
                Signal::SIGHUP,
                Signal::SIGTERM,
                Signal::SIGPIPE,
            ] {
                let _ = sys::ignore_signal(signal);
            }
            let mut kept = [read.as_fd(); 8];
            let n = keep.len().min(kept.len() - 1);
            kept[1..=n].copy_from_slice(&keep[..n]);
            let _ = sys::close_descriptors_except(&kept[..=n]);
            let mut byte = [0u8; 1];
            while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(&read, &mut byte) {}
            Ok(Forked::Child)
        }
    }
}
