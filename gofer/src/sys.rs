//! The Gofer's system calls: the `*at` family on raw descriptors with the
//! guest's own flag bits, so the kernel (not we) decides what they mean and
//! which errno they give; and messages with descriptors beside them. The
//! only module of the crate with `unsafe`.

use std::ffi::CStr;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// A failed call's errno.
pub type Errno = i32;

fn errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(rc: libc::c_long) -> Result<libc::c_long, Errno> {
    if rc < 0 { Err(errno()) } else { Ok(rc) }
}

fn owned(rc: libc::c_long) -> Result<OwnedFd, Errno> {
    let fd = check(rc)?;
    let fd = RawFd::try_from(fd).map_err(|_| libc::EBADF)?;
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct open_how` (libc's cannot be built outside the crate).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dirfd, path, {flags, mode, resolve})`.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: u64,
    mode: u64,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    let how = OpenHow {
        flags,
        mode,
        resolve,
    };
    // SAFETY: `path` is NUL-terminated and `how` valid for reads of its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &raw const how,
            size_of::<OpenHow>(),
        )
    };
    owned(rc)
}

/// `openat(dirfd, path, flags)` (no mode: never creates).
pub fn openat(dir: BorrowedFd<'_>, path: &CStr, flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: `path` is NUL-terminated.
    let rc = unsafe { libc::syscall(libc::SYS_openat, dir.as_raw_fd(), path.as_ptr(), flags) };
    owned(rc)
}

/// `readlinkat(dirfd, path)`.
pub fn readlinkat(dir: BorrowedFd<'_>, path: &CStr) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `path` is NUL-terminated; `buf` is valid for writes of its length.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_readlinkat,
            dir.as_raw_fd(),
            path.as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    let n = check(rc)? as usize;
    if n >= buf.len() {
        return Err(libc::ENAMETOOLONG);
    }
    buf.truncate(n);
    Ok(buf)
}

/// The device and inode of an open file.
pub fn identity(fd: BorrowedFd<'_>) -> Result<(u64, u64), Errno> {
    // SAFETY: all-zero is a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes; the empty path is NUL-terminated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            &raw mut st,
            libc::AT_EMPTY_PATH,
        )
    };
    check(rc)?;
    Ok((st.st_dev, st.st_ino))
}

/// One `*at` call that takes a directory, a name and integer arguments.
pub fn at_call(
    nr: libc::c_long,
    dir: BorrowedFd<'_>,
    name: &CStr,
    args: [u64; 3],
) -> Result<(), Errno> {
    // SAFETY: `name` is NUL-terminated; the other arguments are integers
    // (every `nr` passed here takes no further pointer).
    let rc = unsafe {
        libc::syscall(
            nr,
            dir.as_raw_fd(),
            name.as_ptr(),
            args[0],
            args[1],
            args[2],
        )
    };
    check(rc).map(drop)
}

/// `renameat2`.
pub fn renameat2(
    from: BorrowedFd<'_>,
    old: &CStr,
    to: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> Result<(), Errno> {
    // SAFETY: both names are NUL-terminated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            from.as_raw_fd(),
            old.as_ptr(),
            to.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    };
    check(rc).map(drop)
}

/// `linkat`.
pub fn linkat(
    from: BorrowedFd<'_>,
    old: &CStr,
    to: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> Result<(), Errno> {
    // SAFETY: both names are NUL-terminated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_linkat,
            from.as_raw_fd(),
            old.as_ptr(),
            to.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    };
    check(rc).map(drop)
}

/// `symlinkat(target, dir, name)`.
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    // SAFETY: both strings are NUL-terminated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_symlinkat,
            target.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
        )
    };
    check(rc).map(drop)
}

/// `utimensat(fd, "", times, AT_EMPTY_PATH | flags)`.
pub fn utimens(
    fd: BorrowedFd<'_>,
    times: Option<[(i64, i64); 2]>,
    flags: u32,
) -> Result<(), Errno> {
    let ts = times.map(|t| {
        t.map(|(sec, nsec)| libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        })
    });
    let ptr = ts.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: `ptr` is NULL or points at two timespecs that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_utimensat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            ptr,
            flags | libc::AT_EMPTY_PATH as u32,
        )
    };
    check(rc).map(drop)
}

/// `ftruncate`.
pub fn ftruncate(fd: BorrowedFd<'_>, len: i64) -> Result<(), Errno> {
    // SAFETY: integers only.
    let rc = unsafe { libc::syscall(libc::SYS_ftruncate, fd.as_raw_fd(), len) };
    check(rc).map(drop)
}

/// `fsetxattr` (libseccomp does not know `setxattrat` yet, so the Gofer
/// opens the file and uses this).
pub fn set_xattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], xflags: u32) -> Result<(), Errno> {
    // SAFETY: `name` is NUL-terminated and `value` valid for reads of its length.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            xflags as i32,
        )
    };
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

/// `lsetxattr` of `name` relative to the cwd.
pub fn lset_xattr(path: &CStr, name: &CStr, value: &[u8], xflags: u32) -> Result<(), Errno> {
    // SAFETY: the strings are NUL-terminated, `value` valid for its length.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            xflags as i32,
        )
    };
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

/// `lremovexattr` of `name` relative to the cwd.
pub fn lremove_xattr(path: &CStr, name: &CStr) -> Result<(), Errno> {
    // SAFETY: the strings are NUL-terminated.
    let rc = unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) };
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

/// `fremovexattr`.
pub fn remove_xattr(fd: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    // SAFETY: `name` is NUL-terminated.
    let rc = unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) };
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

/// Binds `sock` to `addr` (relative to the cwd) with the process's umask
/// set to `umask` for the call (the socket's inode mode comes from it).
pub fn bind_unix(sock: BorrowedFd<'_>, addr: &libc::sockaddr_un, umask: u32) -> Result<(), Errno> {
    // SAFETY: umask takes an integer.
    let old = unsafe { libc::umask(umask) };
    // SAFETY: `addr` is a valid sockaddr_un, read for its full size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (addr as *const libc::sockaddr_un).cast(),
            size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    let e = errno();
    // SAFETY: umask takes an integer.
    unsafe { libc::umask(old) };
    if rc < 0 { Err(e) } else { Ok(()) }
}

/// Reads `len` bytes at most from `fd`.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is valid for writes of its length.
    let rc = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc as usize)
    }
}

/// Sends one message with `fds` beside it.
pub fn send(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> Result<(), Errno> {
    let iov = [IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e as i32),
        }
    }
}

/// Receives one message into `buf` and the descriptors beside it (at most
/// `max_fds`; a message with more, or cut short, is an error and its
/// descriptors are closed). `Ok(None)` at end of file.
pub fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> Result<Option<(usize, Vec<OwnedFd>)>, Errno> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e as i32),
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(|_| libc::EPROTO)? {
            if let ControlMessageOwned::ScmRights(list) = c {
                for fd in list {
                    // SAFETY: SCM_RIGHTS just installed this descriptor; we own it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        let cut = msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        let bytes = msg.bytes;
        if cut || fds.len() > max_fds {
            return Err(libc::EMSGSIZE);
        }
        if bytes == 0 && fds.is_empty() {
            return Ok(None);
        }
        return Ok(Some((bytes, fds)));
    }
}

/// `setfsuid`, checked: the kernel answers with the previous fsuid and no
/// error, so the new one is read back (`setfsuid(-1)` changes nothing).
pub fn set_fsuid(uid: u32) -> Result<(), Errno> {
    // SAFETY: integers only.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
    // SAFETY: integers only; -1 is never a valid id, so nothing changes.
    let now = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) };
    if now as u32 == uid {
        Ok(())
    } else {
        Err(libc::EPERM)
    }
}

/// `setfsgid`, checked as [`set_fsuid`] is.
pub fn set_fsgid(gid: u32) -> Result<(), Errno> {
    // SAFETY: integers only.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
    // SAFETY: integers only; -1 is never a valid id, so nothing changes.
    let now = unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) };
    if now as u32 == gid {
        Ok(())
    } else {
        Err(libc::EPERM)
    }
}

/// The calling thread's supplementary groups (the raw call: glibc's
/// wrapper would set every thread's).
pub fn set_groups(groups: &[u32]) -> Result<(), Errno> {
    // SAFETY: `groups` is valid for reads of its length in `gid_t`s.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    check(rc).map(drop)
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// The calling thread's capability sets, as 64-bit masks: (effective,
/// permitted, inheritable).
pub fn cap_get() -> Result<(u64, u64, u64), Errno> {
    let mut head = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `head` is valid for reads and writes, `data` for writes of
    // two structs, as version 3 takes.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut head, data.as_mut_ptr()) };
    check(rc)?;
    let join = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

/// Sets the calling thread's capability sets (64-bit masks).
pub fn cap_set(effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
    let mut head = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let half = |v: u64, i: usize| (v >> (32 * i)) as u32;
    let data = [0, 1].map(|i| CapData {
        effective: half(effective, i),
        permitted: half(permitted, i),
        inheritable: half(inheritable, i),
    });
    // SAFETY: `head` is valid for reads and writes, `data` for reads of
    // two structs, as version 3 takes.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut head, data.as_ptr()) };
    check(rc).map(drop)
}
