//! The OCI runtime's system calls that need `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeVal;

/// The descriptor number a spawned Sentry daemon finds its control socket at.
pub const DAEMON_CTL_FD: RawFd = 3;

/// A descriptor inherited across `fork` whose number the caller recorded.
pub fn inherited(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: callers pass descriptors that stay open for the rest of the
    // process (inherited from the runtime and closed only by `execve`).
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Takes ownership of the daemon's control socket.
pub fn daemon_ctl() -> io::Result<OwnedFd> {
    nix::fcntl::fcntl(
        inherited(DAEMON_CTL_FD),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    // SAFETY: `create` put the control socket at this number for us alone,
    // and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(DAEMON_CTL_FD) })
}

/// Makes `cmd` start in a session of its own, with `fd` at [`DAEMON_CTL_FD`].
pub fn pass_fd_and_detach(cmd: &mut Command, fd: BorrowedFd<'_>) {
    let raw = fd.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe calls (fcntl, dup2, close, setsid).
    unsafe {
        cmd.pre_exec(move || place_and_detach(raw));
    }
}

/// In the child of a fork: `raw` to [`DAEMON_CTL_FD`], and a new session.
fn place_and_detach(raw: RawFd) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    // Out of the way first, in case `raw` is already at the target.
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes integers and makes a new descriptor.
    let high = check(unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 10) })?;
    // SAFETY: dup2 takes integers; the target number is reserved for this.
    check(unsafe { libc::dup2(high, DAEMON_CTL_FD) })?;
    // SAFETY: `high` was made just above and nothing else refers to it.
    check(unsafe { libc::close(high) })?;
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() })?;
    Ok(())
}

/// A new, empty network namespace, held by a descriptor (made on a thread
/// of its own so the caller's namespace stays).
pub fn new_netns() -> io::Result<OwnedFd> {
    std::thread::spawn(|| -> io::Result<OwnedFd> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        Ok(std::fs::File::open("/proc/thread-self/ns/net")?.into())
    })
    .join()
    .map_err(|_| io::Error::other("the thread making a network namespace panicked"))?
}

/// Sends `fd` over a Unix socket, with `data` as the message.
pub fn send_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let iov = [io::IoSlice::new(data)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// Receives one message and the descriptor it carries, if any.
pub fn recv_fd(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut got = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed this descriptor for us
                // (SCM_RIGHTS); nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if got.is_none() {
                    got = Some(owned);
                }
            }
        }
    }
    Ok((msg.bytes, got))
}

/// Bounds how long reads on `socket` wait.
pub fn set_recv_timeout(socket: BorrowedFd<'_>, limit: Duration) -> io::Result<()> {
    let tv = TimeVal::new(limit.as_secs() as _, limit.subsec_micros().into());
    setsockopt(&socket, sockopt::ReceiveTimeout, &tv)?;
    Ok(())
}
