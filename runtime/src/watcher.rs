//! A child that acts once its parent has ended, however it ended: normally,
//! by a crash, or by SIGKILL. It waits for the end of a pipe whose writing
//! end only the parent holds. The restorer of `sandbox` mode (which gives a
//! namespace its addresses back) and the OCI Sentry's warden (which ends
//! the container, and every container of its pod, with its Sentry) are
//! such children; the warden collects the pod members' pidfds while it
//! waits ([`fork_collecting`]).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
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
    match fork_waiting(name, keep)? {
        Waiting::Parent(watcher) => Ok(Forked::Parent(watcher)),
        Waiting::Child(read) => {
            let mut byte = [0u8; 1];
            while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(&read, &mut byte) {}
            Ok(Forked::Child)
        }
    }
}

/// Where [`fork_collecting`] returns.
#[derive(Debug)]
pub enum Collected {
    Parent(Watcher),
    /// In the child, once the parent has ended, with the pidfds it holds
    /// (see [`fork_collecting`]); it must leave through `exit_now`.
    Child(Vec<OwnedFd>),
}

/// As [`fork`], and while it waits the child takes the pidfds the parent
/// sends on `inbox` (non-blocking; one per message, as
/// `oci::sys::send_fd` sends them), and lets go of each whose process has
/// ended, so that what it holds stays as small as what lives. `inbox`
/// must be among `keep`.
pub fn fork_collecting(
    name: &CStr,
    keep: &[BorrowedFd<'_>],
    inbox: BorrowedFd<'_>,
) -> nix::Result<Collected> {
    let read = match fork_waiting(name, keep)? {
        Waiting::Parent(watcher) => return Ok(Collected::Parent(watcher)),
        Waiting::Child(read) => read,
    };
    let mut held: Vec<OwnedFd> = Vec::new();
    loop {
        let mut fds = vec![
            PollFd::new(read.as_fd(), PollFlags::POLLIN),
            PollFd::new(inbox, PollFlags::POLLIN),
        ];
        fds.extend(
            held.iter()
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            break;
        }
        let mut index = 0;
        held.retain(|_| {
            index += 1;
            !ready[index + 1]
        });
        if ready[1] {
            take_all(inbox, &mut held);
        }
    }
    // What the parent sent last, after the child last looked.
    take_all(inbox, &mut held);
    Ok(Collected::Child(held))
}

/// Takes every descriptor queued on the non-blocking socket `inbox`.
fn take_all(inbox: BorrowedFd<'_>, held: &mut Vec<OwnedFd>) {
    let mut buf = [0u8; 16];
    while let Ok((n, fd)) = crate::oci::sys::recv_fd(inbox, &mut buf) {
        match fd {
            Some(fd) => held.push(fd),
            None if n == 0 => break,
            None => {}
        }
    }
}

/// Where [`fork_waiting`] returns.
enum Waiting {
    Parent(Watcher),
    /// The child, prepared, with the pipe's end that reads end-of-file
    /// once the parent has ended.
    Child(OwnedFd),
}

/// The fork and the child's preparation that [`fork`] describes.
fn fork_waiting(name: &CStr, keep: &[BorrowedFd<'_>]) -> nix::Result<Waiting> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    match sys::fork()? {
        ForkResult::Parent { child } => Ok(Waiting::Parent(Watcher {
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
            Ok(Waiting::Child(read))
        }
    }
}
