//! System calls the Sentry makes that need `unsafe`: seccomp user
//! notifications, pidfds, and socket cookies. Everything else goes through
//! `nix` or `std`.

pub mod connector;
pub mod sigwatch;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// One trapped system call, as `SECCOMP_IOCTL_NOTIF_RECV` reports it.
#[derive(Debug, Clone, Copy)]
pub struct Notif {
    /// Cookie naming this notification in the answer.
    pub id: u64,
    /// The calling thread, as the Sentry's PID namespace sees it.
    pub tid: u32,
    /// System call number.
    pub nr: i64,
    /// Audit architecture the call was made with.
    pub arch: u32,
    /// The six raw arguments.
    pub args: [u64; 6],
    /// Which of the Sentry's listeners it came from (a sandbox has one per
    /// process tree that loaded the filter: the init's, each `exec`'s).
    pub source: usize,
}

/// Receives the next notification; `Ok(None)` when the listener has none ready
/// (`ENOENT`: the caller went away between the wake-up and the read).
pub fn notif_recv(listener: BorrowedFd<'_>) -> io::Result<Option<Notif>> {
    // SAFETY: seccomp_notif is plain old data; all-zero is a valid value, and the kernel requires it zeroed.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `req` is a valid, writable seccomp_notif of the size the ioctl number encodes.
        let rc = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &raw mut req,
            )
        };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOENT) | Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(err),
        }
    }
    Ok(Some(Notif {
        id: req.id,
        tid: req.pid,
        nr: i64::from(req.data.nr),
        arch: req.data.arch,
        args: req.data.args,
        source: 0,
    }))
}

/// How a notification is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The call returns this value.
    Value(i64),
    /// The call fails with this errno.
    Errno(crate::errno::Errno),
    /// The kernel runs the call itself, as if nothing had trapped it.
    Continue,
}

/// Answers a notification. `Err` with `ENOENT` means the caller is gone (a
/// signal interrupted it, or it died): nothing happened in the guest.
pub fn notif_send(listener: BorrowedFd<'_>, id: u64, reply: Reply) -> io::Result<()> {
    let (val, error, flags) = match reply {
        Reply::Value(v) => (v, 0, 0),
        Reply::Errno(e) => (0, -e.raw(), 0),
        Reply::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
    };
    let resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: `resp` is a valid seccomp_notif_resp, read by the kernel only.
    let rc = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs `fd` in the caller's file table and answers the notification with
/// the new descriptor number, atomically (`SECCOMP_ADDFD_FLAG_SEND`): when the
/// caller is gone, nothing is installed and the error is `ENOENT`.
pub fn notif_addfd_send(
    listener: BorrowedFd<'_>,
    id: u64,
    fd: BorrowedFd<'_>,
    cloexec: bool,
) -> io::Result<i32> {
    let addfd = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: fd.as_raw_fd() as u32,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: `addfd` is a valid seccomp_notif_addfd, read by the kernel only.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &addfd,
        )
    };
    if rc >= 0 {
        Ok(rc)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the notification's caller is still waiting for the answer.
pub fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: the ioctl reads one u64 through the pointer.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id,
        )
    };
    rc == 0
}

/// Asks the kernel to switch to the woken guest thread on the Sentry's CPU
/// when a notification is answered (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`,
/// Linux 6.6). It shortens the round trip; older kernels refuse it harmlessly.
pub fn notif_sync_wakeup(listener: BorrowedFd<'_>) -> io::Result<()> {
    let flags: u64 = 1;
    // SAFETY: the ioctl reads one u64 through the pointer.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_RCVLOWAT` on a socket of the Sentry's (nix has no wrapper for it).
pub fn set_rcvlowat(fd: BorrowedFd<'_>, bytes: i32) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<i32>()` bytes from the pointer,
    // which points at a live i32.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const bytes).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `pidfd_open(2)`; `thread` asks for a pidfd naming one thread (`PIDFD_THREAD`).
pub fn pidfd_open(pid: i32, thread: bool) -> io::Result<OwnedFd> {
    let flags = if thread { libc::PIDFD_THREAD } else { 0 };
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    owned(rc)
}

/// `pidfd_getfd(2)`: a copy of descriptor `fd` of the process behind `pidfd`
/// (close-on-exec in the Sentry).
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes three integers and returns a new descriptor or -1.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    owned(rc)
}

/// `pidfd_send_signal(2)` without siginfo.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: a NULL siginfo is allowed; the other arguments are integers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The socket's cookie (`SO_COOKIE`): a 64-bit number the kernel never reuses,
/// so it names a socket more safely than its inode number does.
pub fn socket_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `process_vm_readv` of one range of thread `tid`; returns the bytes read
/// (fewer than asked when the range runs into memory that is not readable).
pub fn vm_read(tid: u32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which is valid for writes of its
    // length; the remote range is only read by the kernel, in the other process.
    let rc = unsafe { libc::process_vm_readv(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// `process_vm_writev` of one range of thread `tid`; returns the bytes written.
pub fn vm_write(tid: u32, addr: u64, data: &[u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: `local` describes `data`, which the kernel only reads; the
    // remote range is written in the other process, checked by the kernel.
    let rc = unsafe { libc::process_vm_writev(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// `process_vm_writev` of several ranges of thread `tid` in one call, in
/// order (the kernel stops at the first range it cannot write whole);
/// returns the bytes written.
pub fn vm_write_parts(tid: u32, parts: &[(u64, &[u8])]) -> io::Result<usize> {
    let local: Vec<libc::iovec> = parts
        .iter()
        .map(|(_, data)| libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        })
        .collect();
    let remote: Vec<libc::iovec> = parts
        .iter()
        .map(|&(addr, data)| libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: data.len(),
        })
        .collect();
    // SAFETY: each local iovec describes a slice of `parts`, which the
    // kernel only reads; both arrays hold `parts.len()` entries; the remote
    // ranges are written in the other process, checked by the kernel.
    let rc = unsafe {
        libc::process_vm_writev(
            tid as libc::pid_t,
            local.as_ptr(),
            local.len() as libc::c_ulong,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Bytes queued for reading on a socket (`FIONREAD`/`SIOCINQ`).
pub fn inq(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &raw mut n) };
    if rc == 0 {
        Ok(n)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Forks a helper process of the Sentry's (the signal watcher, the
/// connector): the child dies with the Sentry (`PR_SET_PDEATHSIG`), keeps
/// only `end` of all its descriptors, and runs `child(end, bpf)`, which
/// never returns. `child` runs in a copy of a process that has other
/// threads, so it must make system calls only: no allocation, no lock.
/// Returns the child's pid.
pub fn spawn_helper(end: OwnedFd, bpf: &[u8], child: fn(RawFd, &[u8]) -> !) -> io::Result<i32> {
    // SAFETY: the child runs only the code below and `child`, which make
    // raw system calls on memory of their own stack (and `bpf`, unchanged
    // since the fork) and never return: nothing they do needs a lock
    // another thread held.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let fd = end.as_raw_fd();
        // SAFETY: a plain system call with constant arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        if fd > 0 {
            // SAFETY: closes descriptors no Rust object of this process uses.
            unsafe { libc::syscall(libc::SYS_close_range, 0u32, (fd - 1) as u32, 0u32) };
        }
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_close_range, (fd + 1) as u32, u32::MAX, 0u32) };
        child(fd, bpf);
    }
    // The child holds its own copy.
    drop(end);
    Ok(pid)
}

/// The Sentry's channel to a helper process: a SOCK_SEQPACKET pair, the
/// Sentry's end (first) giving up on an answer after `patience`, so that a
/// helper that stopped answering never stalls it.
pub fn helper_channel(patience: std::time::Duration) -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let timeout = nix::sys::time::TimeVal::new(
        patience.as_secs() as i64,
        i64::from(patience.subsec_micros()),
    );
    setsockopt(&ours, sockopt::ReceiveTimeout, &timeout)?;
    Ok((ours, theirs))
}

fn owned(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
pub const SECCOMP_NEW_LISTENER: u32 = 1 << 3;
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19): once the Sentry
/// has received a call, only a fatal signal ends the caller's wait.
pub const SECCOMP_WAIT_KILLABLE_RECV: u32 = 1 << 5;

/// Whether the kernel takes `flags` for a new filter. Asked with no
/// program: the kernel checks the flags first (EINVAL) and only then reads
/// the program (EFAULT).
pub fn seccomp_flags_supported(flags: u32) -> bool {
    // SAFETY: the null program pointer is never dereferenced by us; the
    // kernel fails its copy with EFAULT, and no filter is installed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

/// Loads a classic BPF program (`struct sock_filter` records, as
/// libseccomp exports them) on the calling thread, with `flags`; returns
/// what the kernel returns (the listener's descriptor with
/// [`SECCOMP_NEW_LISTENER`]). `no_new_privs` must be set already.
pub fn seccomp_load(bpf: &[u8], flags: u32) -> io::Result<i64> {
    const RECORD: usize = size_of::<libc::sock_filter>();
    if bpf.is_empty()
        || !bpf.len().is_multiple_of(RECORD)
        || bpf.len() / RECORD > usize::from(u16::MAX)
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let prog = libc::sock_fprog {
        len: (bpf.len() / RECORD) as u16,
        // The kernel copies the records out; it needs no alignment and
        // writes nothing through this pointer.
        filter: bpf.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `prog` points to `len` complete records inside `bpf`, which
    // outlives the call; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &raw const prog,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod vm_tests {
    use super::*;

    #[test]
    fn parts_are_written_in_order_up_to_the_first_bad_one() {
        let tid = std::process::id();
        let (mut a, mut b) = (vec![0u8; 4], vec![0u8; 2]);
        let (pa, pb) = (a.as_mut_ptr() as u64, b.as_mut_ptr() as u64);
        let put = vm_write_parts(tid, &[(pa, &[1, 2, 3, 4]), (pb, &[5, 6])]).unwrap();
        assert_eq!(put, 6);
        assert_eq!((&a[..], &b[..]), (&[1, 2, 3, 4][..], &[5, 6][..]));
        // Page zero is never mapped: the first part goes in, then it stops.
        let put = vm_write_parts(tid, &[(pa, &[9; 4]), (8, &[7, 7])]).unwrap();
        assert_eq!(put, 4);
        assert_eq!(a, [9; 4]);
    }
}
