//! The few system calls of the sandbox start-up that need `unsafe`: `fork`,
//! closing inherited descriptors, `statx` for a mount's id, and signal
//! dispositions. Everything else goes through `nix` or `std`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{ForkResult, Pid};

/// `fork(2)`.
///
/// Callers must keep the child on a short, known path that ends in `_exit` or
/// `execve` and never returns into the caller's code (see `init::run`).
pub(crate) fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the child of a multi-threaded parent may only rely on what fork
    // preserves. The children here run the sandbox's own start-up code only:
    // glibc keeps malloc usable after fork, they take no lock another thread
    // could hold (no stdout/stderr printing, no logging, no environment access
    // through std), and they leave through `_exit` or `execve`, never by
    // returning or unwinding into the parent's frames (see `init::run`).
    unsafe { nix::unistd::fork() }
}

/// Closes every descriptor above stderr except those in `keep`, so that
/// the guest inherits nothing but its stdio from the runtime (other
/// sandboxes' sockets, the Sentry's own descriptors, fds a caller leaked
/// without `O_CLOEXEC`).
/// It does not allocate: it runs in children forked from threaded processes.
pub(crate) fn close_descriptors_except(keep: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut kept = [RawFd::MAX; 8];
    if keep.len() > kept.len() {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    for (slot, fd) in kept.iter_mut().zip(keep) {
        *slot = fd.as_raw_fd();
    }
    kept.sort_unstable();
    let mut first: RawFd = 3;
    for last in kept
        .iter()
        .map(|&k| k.saturating_sub(1))
        .chain([RawFd::MAX])
    {
        if first <= last {
            // SAFETY: close_range takes integers only; the descriptors it
            // closes are owned by no Rust object that this (forked,
            // single-threaded) process still uses: it keeps only `keep` and stdio.
            let rc = unsafe { libc::close_range(first as libc::c_uint, last as libc::c_uint, 0) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        first = first.max(last.saturating_add(2));
    }
    Ok(())
}

/// What `statx` says about the object behind an `O_PATH` descriptor.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placement {
    /// The id of the mount the object is reached through, as in
    /// `/proc/self/mountinfo`.
    pub mount_id: u64,
    /// `S_IFMT` bits of the mode.
    pub file_type: u32,
}

/// `statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID | STATX_TYPE)`.
pub(super) fn placement(fd: BorrowedFd<'_>) -> io::Result<Placement> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid NUL-terminated string and `buf` is a valid,
    // writable statx buffer that outlives the call.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID | libc::STATX_TYPE,
            &raw mut buf,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if buf.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    Ok(Placement {
        mount_id: buf.stx_mnt_id,
        file_type: u32::from(buf.stx_mode) & libc::S_IFMT,
    })
}

/// Sets every signal's disposition back to the default, including the
/// real-time ones (an ignored signal would survive `execve`).
pub(super) fn reset_signal_dispositions() {
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler, so no code of ours can run in
        // signal context. Numbers the C library reserves fail with EINVAL,
        // which is fine to ignore.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

/// Ignores `signal` in this process.
pub(crate) fn ignore_signal(signal: Signal) -> nix::Result<()> {
    let action = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN installs no handler, so no code of ours runs in signal
    // context.
    unsafe { nix::sys::signal::sigaction(signal, &action) }.map(drop)
}

/// `sigwait(2)`: takes one pending signal of `set` (which must be blocked) and
/// returns its number, real-time signals included.
pub(super) fn wait_for_signal(set: &SigSet) -> nix::Result<i32> {
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is a valid sigset_t and `signal` a valid, writable int,
    // both outliving the call.
    let rc = unsafe { libc::sigwait(set.as_ref(), &raw mut signal) };
    if rc == 0 {
        Ok(signal)
    } else {
        Err(nix::errno::Errno::from_raw(rc))
    }
}

/// `kill(2)` with a raw signal number (real-time signals included).
pub(super) fn send_signal(pid: Pid, signal: i32) -> nix::Result<()> {
    // SAFETY: kill takes integers only.
    let rc = unsafe { libc::kill(pid.as_raw(), signal) };
    nix::errno::Errno::result(rc).map(drop)
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// `_exit(code)`.
    Exited(i32),
    /// Killed by this signal (any number, real-time ones included).
    Killed(i32),
}

/// `waitpid(-1, WNOHANG)`: one child that ended, if any. Unlike
/// `nix::sys::wait`, it does not fail on real-time signal numbers.
pub(super) fn reap_any() -> nix::Result<Option<(Pid, Ended)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid, writable int that outlives the call.
    let pid = unsafe { libc::waitpid(-1, &raw mut status, libc::WNOHANG) };
    let pid = nix::errno::Errno::result(pid)?;
    if pid == 0 {
        return Ok(None);
    }
    let ended = if libc::WIFSIGNALED(status) {
        Ended::Killed(libc::WTERMSIG(status))
    } else {
        Ended::Exited(libc::WEXITSTATUS(status))
    };
    Ok(Some((Pid::from_raw(pid), ended)))
}

/// `_exit(2)`: leaves a forked child at once, without running the runtime's
/// exit handlers or flushing buffers that belong to the parent.
pub(crate) fn exit_now(status: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(status) }
}
