//! The calls that change files: the Sentry reads their arguments from guest
//! memory once, takes a copy of any directory descriptor they name
//! (`pidfd_getfd`), and asks the Gofer ([`gofer`]), which resolves and acts
//! inside the guest's root. An opened file comes back as a descriptor and is
//! installed in the guest with ADDFD.
//!
//! The guest's own view of its files is read-only, so whatever runs
//! natively (a plain read, a call the Gofer answers `Native`, every call
//! when no Gofer serves the sandbox) can change nothing but what was
//! writable anyway (`/proc`, device nodes, FIFOs).

use std::os::fd::{AsFd, OwnedFd};

use gofer::protocol::{
    Base, Op, PathArg, Request, Response, Times, XATTR_NAME_MAX, XATTR_SIZE_MAX,
};

use super::errno;
use crate::errno::{CALLER_GONE, Errno};
use crate::sentry::{Outcome, Sentry};
use crate::sys::{self, Notif, Reply};

/// `AT_FDCWD`.
const AT_FDCWD: i32 = libc::AT_FDCWD;
/// Longest path with its NUL (`PATH_MAX`).
const PATH_MAX: usize = 4096;
const PAGE: u64 = 4096;
/// Open flags that write or create: only these make an open the Gofer's.
const WRITES: u64 = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u64
    | (libc::O_TMPFILE & !libc::O_DIRECTORY) as u64;
const NOFOLLOW: u32 = libc::AT_SYMLINK_NOFOLLOW as u32;
/// Nanoseconds that mean "now" and "leave alone" (`UTIME_NOW`, `UTIME_OMIT`).
const UTIME_SPECIAL: [i64; 2] = [libc::UTIME_NOW, libc::UTIME_OMIT];

/// A request ready to go: the request, the descriptors that go with it,
/// and whether a descriptor it returns is close-on-exec.
struct Call {
    req: Request,
    fds: Vec<OwnedFd>,
    cloexec: bool,
}

/// Handles a trapped file call: asks the Gofer, or lets the kernel answer
/// when there is no Gofer or the call does not change anything.
pub(super) fn handle(s: &mut Sentry, n: &Notif) -> Outcome {
    if s.gofer.is_none() {
        return Outcome::Reply(Reply::Continue);
    }
    match decode(s, n) {
        Ok(Some(call)) => ask(s, n, call),
        Ok(None) => Outcome::Reply(Reply::Continue),
        Err(e) => errno(e),
    }
}

fn ask(s: &mut Sentry, n: &Notif, call: Call) -> Outcome {
    let Some(client) = &s.gofer else {
        return Outcome::Reply(Reply::Continue);
    };
    let answer = client.call(&call.req, &call.fds);
    drop(call.fds);
    // The Gofer acted with the credentials of whatever thread had this
    // tid when it read /proc/TID/status: if the caller is gone since,
    // another thread may have taken the number, and the answer is void.
    if answer.is_ok() && !sys::notif_id_valid(s.listeners.of(n), n.id) {
        return errno(CALLER_GONE);
    }
    match answer {
        Ok((Response::Value(v), _)) => Outcome::Reply(Reply::Value(v)),
        Ok((Response::Errno(e), _)) => errno(Errno::from_raw(e)),
        Ok((Response::Native, _)) => Outcome::Reply(Reply::Continue),
        Ok((Response::Fd, Some(fd))) => {
            match sys::notif_addfd_send(s.listeners.of(n), n.id, fd.as_fd(), call.cloexec) {
                Ok(_) => Outcome::Done,
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOENT | libc::ESRCH) => errno(CALLER_GONE),
                    Some(code) => errno(Errno::from_raw(code)),
                    None => errno(Errno::EIO),
                },
            }
        }
        Ok((Response::Fd, None)) | Err(_) => {
            // The Gofer is gone or broke the protocol: no change can be
            // made any more. The sandbox ends, visibly, rather than run on
            // with files it cannot change.
            tracing::error!(
                "the Gofer did not answer a {} call: ending the sandbox",
                call.req.op.name()
            );
            s.gofer = None;
            s.end_sandbox();
            errno(Errno::EIO)
        }
    }
}

/// The low 32 bits of a register, as the kernel reads an `int`.
fn int(v: u64) -> i32 {
    v as u32 as i32
}

/// Reads the guest's NUL-terminated string at `ptr` (at most `max`
/// bytes before the NUL), page by page so that an unmapped page after the
/// string does not fail the read.
fn read_cstr(
    s: &mut Sentry,
    n: &Notif,
    ptr: u64,
    max: usize,
    too_long: Errno,
) -> Result<Vec<u8>, Errno> {
    if ptr == 0 {
        return Err(Errno::EFAULT);
    }
    let mut out = Vec::new();
    let mut at = ptr;
    while out.len() <= max {
        let room = (PAGE - at % PAGE) as usize;
        let chunk = s.rd(n, at, room.min(max + 1 - out.len()))?;
        if let Some(end) = chunk.iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        at += chunk.len() as u64;
    }
    Err(too_long)
}

fn read_path(s: &mut Sentry, n: &Notif, ptr: u64) -> Result<Vec<u8>, Errno> {
    read_cstr(s, n, ptr, PATH_MAX - 1, Errno::from_raw(libc::ENAMETOOLONG))
}

/// A path argument and the descriptor it is relative to: `Base::Fd` with a
/// copy of the guest's `dirfd` when the path is relative (or empty, with
/// `empty_ok`) and `dirfd` is not AT_FDCWD.
fn path_at(
    s: &mut Sentry,
    n: &Notif,
    dirfd: i32,
    path: Vec<u8>,
    empty_ok: bool,
    fds: &mut Vec<OwnedFd>,
) -> Result<PathArg, Errno> {
    if path.is_empty() && !empty_ok {
        return Err(Errno::ENOENT);
    }
    if path.first() == Some(&b'/') || dirfd == AT_FDCWD {
        return Ok(PathArg {
            base: Base::Cwd,
            path,
        });
    }
    let file = s.resolve(n, u64::from(dirfd as u32))?.file;
    fds.push(file);
    Ok(PathArg {
        base: Base::Fd,
        path,
    })
}

/// The descriptor a magic link names: `/proc/self/fd/N`,
/// `/proc/thread-self/fd/N`, `/dev/fd/N`.
fn magic_fd(path: &[u8]) -> Option<i32> {
    let n = [
        &b"/proc/self/fd/"[..],
        b"/proc/thread-self/fd/",
        b"/dev/fd/",
    ]
    .iter()
    .find_map(|p| path.strip_prefix(*p))?;
    if n.is_empty() || n.len() > 10 || !n.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

/// `pa` as the file itself when it is a magic link to one of the guest's
/// descriptors and the call follows it (glibc's fchmodat falls back to
/// `chmod("/proc/self/fd/N")`; an O_TMPFILE is linked the same way): the
/// Gofer maps that descriptor as it maps a dirfd.
fn follow_magic(
    s: &mut Sentry,
    n: &Notif,
    pa: PathArg,
    follows: bool,
    fds: &mut Vec<OwnedFd>,
) -> Result<PathArg, Errno> {
    if !follows || pa.base != Base::Cwd {
        return Ok(pa);
    }
    let Some(fd) = magic_fd(&pa.path) else {
        return Ok(pa);
    };
    let file = s.resolve(n, u64::from(fd as u32))?.file;
    fds.push(file);
    Ok(PathArg {
        base: Base::Magic,
        path: Vec::new(),
    })
}

/// The guest's descriptor `fd` itself (fchmod, fchown, fsetxattr...).
fn the_fd(s: &mut Sentry, n: &Notif, fd: i32, fds: &mut Vec<OwnedFd>) -> Result<PathArg, Errno> {
    let file = s.resolve(n, u64::from(fd as u32))?.file;
    fds.push(file);
    Ok(PathArg {
        base: Base::Fd,
        path: Vec::new(),
    })
}

/// Decodes a trapped call into a request; `None` when it is not a change.
fn decode(s: &mut Sentry, n: &Notif) -> Result<Option<Call>, Errno> {
    let a = n.args;
    let mut fds = Vec::new();
    let mut cloexec = false;
    let one = |op: Op, path: PathArg| (op, path, None);
    let (op, pa, pb) = match n.nr {
        libc::SYS_open | libc::SYS_openat | libc::SYS_creat => {
            let (dirfd, ptr, flags, mode) = match n.nr {
                libc::SYS_open => (AT_FDCWD, a[0], a[1], a[2]),
                libc::SYS_creat => (
                    AT_FDCWD,
                    a[0],
                    (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64,
                    a[1],
                ),
                _ => (int(a[0]), a[1], a[2], a[3]),
            };
            // open's flags are an int: the high half is not the caller's.
            let flags = u64::from(flags as u32);
            if flags & WRITES == 0 || flags & libc::O_PATH as u64 != 0 {
                return Ok(None);
            }
            cloexec = flags & libc::O_CLOEXEC as u64 != 0;
            let path = read_path(s, n, ptr)?;
            let pa = path_at(s, n, dirfd, path, false, &mut fds)?;
            let follows = flags & libc::O_NOFOLLOW as u64 == 0;
            let pa = follow_magic(s, n, pa, follows, &mut fds)?;
            let op = Op::Open {
                flags,
                mode: u64::from(mode as u32),
                resolve: 0,
                strict: false,
            };
            one(op, pa)
        }
        libc::SYS_openat2 => {
            let size = a[3];
            if size < 24 {
                return Err(Errno::EINVAL);
            }
            if size > PAGE {
                return Err(Errno::from_raw(libc::E2BIG));
            }
            let how = s.rd(n, a[2], size as usize)?;
            if how[24..].iter().any(|&b| b != 0) {
                return Err(Errno::from_raw(libc::E2BIG));
            }
            let word =
                |i: usize| u64::from_le_bytes(how[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            let (flags, mode, resolve) = (word(0), word(1), word(2));
            if flags & WRITES == 0 || flags & libc::O_PATH as u64 != 0 {
                return Ok(None);
            }
            cloexec = flags & libc::O_CLOEXEC as u64 != 0;
            let path = read_path(s, n, a[1])?;
            let pa = path_at(s, n, int(a[0]), path, false, &mut fds)?;
            let follows = flags & libc::O_NOFOLLOW as u64 == 0
                && resolve & (libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_SYMLINKS) == 0;
            let pa = follow_magic(s, n, pa, follows, &mut fds)?;
            one(
                Op::Open {
                    flags,
                    mode,
                    resolve,
                    strict: true,
                },
                pa,
            )
        }
        libc::SYS_mkdir | libc::SYS_mkdirat => {
            let (dirfd, ptr, mode) = if n.nr == libc::SYS_mkdir {
                (AT_FDCWD, a[0], a[1])
            } else {
                (int(a[0]), a[1], a[2])
            };
            let path = read_path(s, n, ptr)?;
            let pa = path_at(s, n, dirfd, path, false, &mut fds)?;
            one(Op::Mkdir { mode: mode as u32 }, pa)
        }
        libc::SYS_mknod | libc::SYS_mknodat => {
            let (dirfd, ptr, mode, dev) = if n.nr == libc::SYS_mknod {
                (AT_FDCWD, a[0], a[1], a[2])
            } else {
                (int(a[0]), a[1], a[2], a[3])
            };
            let path = read_path(s, n, ptr)?;
            let pa = path_at(s, n, dirfd, path, false, &mut fds)?;
            one(
                Op::Mknod {
                    mode: mode as u32,
                    dev: u64::from(dev as u32),
                },
                pa,
            )
        }
        libc::SYS_unlink | libc::SYS_rmdir | libc::SYS_unlinkat => {
            let (dirfd, ptr, flags) = match n.nr {
                libc::SYS_unlink => (AT_FDCWD, a[0], 0),
                libc::SYS_rmdir => (AT_FDCWD, a[0], libc::AT_REMOVEDIR as u32),
                _ => (int(a[0]), a[1], a[2] as u32),
            };
            let path = read_path(s, n, ptr)?;
            let pa = path_at(s, n, dirfd, path, false, &mut fds)?;
            one(Op::Unlink { flags }, pa)
        }
        libc::SYS_rename | libc::SYS_renameat | libc::SYS_renameat2 => {
            let (d1, p1, d2, p2, flags) = match n.nr {
                libc::SYS_rename => (AT_FDCWD, a[0], AT_FDCWD, a[1], 0),
                libc::SYS_renameat => (int(a[0]), a[1], int(a[2]), a[3], 0),
                _ => (int(a[0]), a[1], int(a[2]), a[3], a[4] as u32),
            };
            let old = read_path(s, n, p1)?;
            let new = read_path(s, n, p2)?;
            let pa = path_at(s, n, d1, old, false, &mut fds)?;
            let pb = path_at(s, n, d2, new, false, &mut fds)?;
            (Op::Rename { flags }, pa, Some(pb))
        }
        libc::SYS_link | libc::SYS_linkat => {
            let (d1, p1, d2, p2, flags) = if n.nr == libc::SYS_link {
                (AT_FDCWD, a[0], AT_FDCWD, a[1], 0)
            } else {
                (int(a[0]), a[1], int(a[2]), a[3], a[4] as u32)
            };
            let empty_ok = flags & libc::AT_EMPTY_PATH as u32 != 0;
            let old = read_path(s, n, p1)?;
            let new = read_path(s, n, p2)?;
            let pa = path_at(s, n, d1, old, empty_ok, &mut fds)?;
            let follows = flags & libc::AT_SYMLINK_FOLLOW as u32 != 0;
            let pa = follow_magic(s, n, pa, follows, &mut fds)?;
            let pb = path_at(s, n, d2, new, false, &mut fds)?;
            (Op::Link { flags }, pa, Some(pb))
        }
        libc::SYS_symlink | libc::SYS_symlinkat => {
            let (target, dirfd, ptr) = if n.nr == libc::SYS_symlink {
                (a[0], AT_FDCWD, a[1])
            } else {
                (a[0], int(a[1]), a[2])
            };
            let target = read_path(s, n, target)?;
            let path = read_path(s, n, ptr)?;
            let pa = path_at(s, n, dirfd, path, false, &mut fds)?;
            one(Op::Symlink { target }, pa)
        }
        libc::SYS_chmod | libc::SYS_fchmodat | libc::SYS_fchmodat2 => {
            let (dirfd, ptr, mode, flags) = match n.nr {
                libc::SYS_chmod => (AT_FDCWD, a[0], a[1], 0),
                libc::SYS_fchmodat => (int(a[0]), a[1], a[2], 0),
                _ => (int(a[0]), a[1], a[2], a[3] as u32),
            };
            let empty_ok = flags & libc::AT_EMPTY_PATH as u32 != 0;
            let path = read_path(s, n, ptr)?;
            let pa = path_at(s, n, dirfd, path, empty_ok, &mut fds)?;
            let pa = follow_magic(s, n, pa, flags & NOFOLLOW == 0, &mut fds)?;
            one(
                Op::Chmod {
                    mode: mode as u32 & 0o7777,
                    flags,
                },
                pa,
            )
        }
        libc::SYS_fchmod => {
            let pa = the_fd(s, n, int(a[0]), &mut fds)?;
            let flags = libc::AT_EMPTY_PATH as u32;
            one(
                Op::Chmod {
                    mode: a[1] as u32 & 0o7777,
                    flags,
                },
                pa,
            )
        }
        libc::SYS_chown | libc::SYS_lchown | libc::SYS_fchownat | libc::SYS_fchown => {
            let (uid, gid) = match n.nr {
                libc::SYS_fchownat => (a[2] as u32, a[3] as u32),
                _ => (a[1] as u32, a[2] as u32),
            };
            let (pa, flags) = match n.nr {
                libc::SYS_fchown => (
                    the_fd(s, n, int(a[0]), &mut fds)?,
                    libc::AT_EMPTY_PATH as u32,
                ),
                libc::SYS_fchownat => {
                    let flags = a[4] as u32;
                    let empty_ok = flags & libc::AT_EMPTY_PATH as u32 != 0;
                    let path = read_path(s, n, a[1])?;
                    let pa = path_at(s, n, int(a[0]), path, empty_ok, &mut fds)?;
                    let pa = follow_magic(s, n, pa, flags & NOFOLLOW == 0, &mut fds)?;
                    (pa, flags)
                }
                nr => {
                    let path = read_path(s, n, a[0])?;
                    let flags = if nr == libc::SYS_lchown {
                        libc::AT_SYMLINK_NOFOLLOW as u32
                    } else {
                        0
                    };
                    let pa = path_at(s, n, AT_FDCWD, path, false, &mut fds)?;
                    let pa = follow_magic(s, n, pa, flags & NOFOLLOW == 0, &mut fds)?;
                    (pa, flags)
                }
            };
            one(Op::Chown { uid, gid, flags }, pa)
        }
        libc::SYS_truncate => {
            let path = read_path(s, n, a[0])?;
            let pa = path_at(s, n, AT_FDCWD, path, false, &mut fds)?;
            one(Op::Truncate { len: a[1] as i64 }, pa)
        }
        libc::SYS_utime | libc::SYS_utimes | libc::SYS_futimesat | libc::SYS_utimensat => {
            let (dirfd, ptr, times_ptr, flags) = match n.nr {
                libc::SYS_utime | libc::SYS_utimes => (AT_FDCWD, a[0], a[1], 0),
                libc::SYS_futimesat => (int(a[0]), a[1], a[2], 0),
                _ => (int(a[0]), a[1], a[2], a[3] as u32),
            };
            let times = read_times(s, n, times_ptr)?;
            let pa = if n.nr == libc::SYS_utimensat && ptr == 0 {
                // utimensat(fd, NULL, ...): the descriptor itself (futimens).
                if dirfd == AT_FDCWD {
                    return Err(Errno::EFAULT);
                }
                if flags & libc::AT_SYMLINK_NOFOLLOW as u32 != 0 {
                    return Err(Errno::EINVAL);
                }
                the_fd(s, n, dirfd, &mut fds)?
            } else {
                let path = read_path(s, n, ptr)?;
                let empty_ok = flags & libc::AT_EMPTY_PATH as u32 != 0;
                let pa = path_at(s, n, dirfd, path, empty_ok, &mut fds)?;
                follow_magic(s, n, pa, flags & NOFOLLOW == 0, &mut fds)?
            };
            let flags = if pa.path.is_empty() {
                flags | libc::AT_EMPTY_PATH as u32
            } else {
                flags
            };
            one(Op::Utimes { times, flags }, pa)
        }
        libc::SYS_setxattr | libc::SYS_lsetxattr | libc::SYS_fsetxattr => {
            let name = read_cstr(s, n, a[1], XATTR_NAME_MAX, Errno::from_raw(libc::ERANGE))?;
            if name.is_empty() {
                return Err(Errno::from_raw(libc::ERANGE));
            }
            let size = a[3] as usize;
            if size > XATTR_SIZE_MAX {
                return Err(Errno::from_raw(libc::E2BIG));
            }
            let value = if size == 0 {
                Vec::new()
            } else {
                s.rd(n, a[2], size)?
            };
            let (pa, flags) = path_of_xattr_call(s, n, &mut fds)?;
            one(
                Op::SetXattr {
                    name,
                    value,
                    xflags: a[4] as u32,
                    flags,
                },
                pa,
            )
        }
        libc::SYS_removexattr | libc::SYS_lremovexattr | libc::SYS_fremovexattr => {
            let name = read_cstr(s, n, a[1], XATTR_NAME_MAX, Errno::from_raw(libc::ERANGE))?;
            if name.is_empty() {
                return Err(Errno::from_raw(libc::ERANGE));
            }
            let (pa, flags) = path_of_xattr_call(s, n, &mut fds)?;
            one(Op::RemoveXattr { name, flags }, pa)
        }
        libc::SYS_access | libc::SYS_faccessat | libc::SYS_faccessat2 => {
            let (dirfd, ptr, mode, flags) = match n.nr {
                libc::SYS_access => (AT_FDCWD, a[0], a[1], 0),
                libc::SYS_faccessat => (int(a[0]), a[1], a[2], 0),
                _ => (int(a[0]), a[1], a[2], a[3] as u32),
            };
            if mode as u32 & libc::W_OK as u32 == 0 {
                return Ok(None);
            }
            let empty_ok = flags & libc::AT_EMPTY_PATH as u32 != 0;
            let path = read_path(s, n, ptr)?;
            let pa = path_at(s, n, dirfd, path, empty_ok, &mut fds)?;
            let pa = follow_magic(s, n, pa, flags & NOFOLLOW == 0, &mut fds)?;
            let flags = if pa.path.is_empty() {
                flags | libc::AT_EMPTY_PATH as u32
            } else {
                flags
            };
            one(
                Op::Access {
                    mode: mode as u32,
                    flags,
                },
                pa,
            )
        }
        _ => return Ok(None),
    };
    let from_cwd = |p: &PathArg| p.base == Base::Cwd && p.path.first() != Some(&b'/');
    let cwd = if from_cwd(&pa) || pb.as_ref().is_some_and(from_cwd) {
        guest_cwd(s, n)?
    } else {
        Vec::new()
    };
    let req = Request {
        op,
        tid: n.tid,
        a: pa,
        b: pb,
        cwd,
    };
    Ok(Some(Call { req, fds, cloexec }))
}

/// The calling thread's working directory, as its own mount namespace
/// names it. Only the link is read: the Gofer resolves the path inside
/// the root, so a thread that moved (or a number reused) can at worst
/// misplace a change inside the tree.
fn guest_cwd(s: &mut Sentry, n: &Notif) -> Result<Vec<u8>, Errno> {
    use std::os::unix::ffi::OsStringExt;
    let link = nix::fcntl::readlink(format!("/proc/{}/cwd", n.tid).as_str());
    if !sys::notif_id_valid(s.listeners.of(n), n.id) {
        return Err(CALLER_GONE);
    }
    link.map(OsStringExt::into_vec)
        .map_err(|e| Errno::from_raw(e as i32))
}

/// The file an xattr call names, and the at-flags that say how.
fn path_of_xattr_call(
    s: &mut Sentry,
    n: &Notif,
    fds: &mut Vec<OwnedFd>,
) -> Result<(PathArg, u32), Errno> {
    match n.nr {
        libc::SYS_fsetxattr | libc::SYS_fremovexattr => Ok((
            the_fd(s, n, int(n.args[0]), fds)?,
            libc::AT_EMPTY_PATH as u32,
        )),
        nr => {
            let path = read_path(s, n, n.args[0])?;
            let flags = if nr == libc::SYS_lsetxattr || nr == libc::SYS_lremovexattr {
                libc::AT_SYMLINK_NOFOLLOW as u32
            } else {
                0
            };
            let pa = path_at(s, n, AT_FDCWD, path, false, fds)?;
            Ok((follow_magic(s, n, pa, flags & NOFOLLOW == 0, fds)?, flags))
        }
    }
}

/// The times argument of utime (`utimbuf`), utimes and futimesat
/// (`timeval[2]`) and utimensat (`timespec[2]`), as timespecs.
fn read_times(s: &mut Sentry, n: &Notif, ptr: u64) -> Result<Times, Errno> {
    if ptr == 0 {
        return Ok(None);
    }
    let raw = s.rd_array::<32>(n, ptr).or_else(|e| {
        // utimbuf is only 16 bytes.
        if n.nr == libc::SYS_utime {
            s.rd_array::<16>(n, ptr).map(|b| {
                let mut out = [0u8; 32];
                out[..16].copy_from_slice(&b);
                out
            })
        } else {
            Err(e)
        }
    })?;
    let w = |i: usize| i64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let times = match n.nr {
        libc::SYS_utime => [(w(0), 0), (w(1), 0)],
        libc::SYS_utimensat => {
            for nsec in [w(1), w(3)] {
                if !(0..1_000_000_000).contains(&nsec) && !UTIME_SPECIAL.contains(&nsec) {
                    return Err(Errno::EINVAL);
                }
            }
            [(w(0), w(1)), (w(2), w(3))]
        }
        _ => {
            for usec in [w(1), w(3)] {
                if !(0..1_000_000).contains(&usec) {
                    return Err(Errno::EINVAL);
                }
            }
            [(w(0), w(1) * 1000), (w(2), w(3) * 1000)]
        }
    };
    Ok(Some(times))
}

/// The calls [`handle`] serves.
pub(super) const CALLS: &[i64] = &[
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_creat,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rmdir,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_truncate,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_futimesat,
    libc::SYS_utimensat,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
];

/// `sizeof(struct sockaddr_un)`.
const SOCKADDR_UN_LEN: u64 = 110;

/// A `bind` of one of the guest's own AF_UNIX sockets to a path: the
/// Gofer makes the socket's inode in the tree. `None` for every other bind
/// (an abstract name, another family, one of the Sentry's sockets, no
/// Gofer), which the socket layer serves as before.
pub(super) fn bind_unix(s: &mut Sentry, n: &Notif) -> Option<Outcome> {
    s.gofer.as_ref()?;
    let (fd, ptr, len) = (n.args[0], n.args[1], u64::from(n.args[2] as u32));
    if !(3..=SOCKADDR_UN_LEN).contains(&len) {
        return None;
    }
    let addr = s.rd(n, ptr, len as usize).ok()?;
    let family = u16::from_ne_bytes([addr[0], addr[1]]);
    if i32::from(family) != libc::AF_UNIX || addr[2] == 0 {
        return None;
    }
    let resolved = match s.resolve(n, fd) {
        Ok(r) => r,
        Err(e) => return Some(errno(e)),
    };
    if resolved.key.is_some() {
        return None;
    }
    let path: Vec<u8> = addr[2..].iter().copied().take_while(|&b| b != 0).collect();
    let mut fds = vec![resolved.file];
    let call = (|| {
        let pa = path_at(s, n, AT_FDCWD, path, false, &mut fds)?;
        let cwd = if pa.path.first() == Some(&b'/') {
            Vec::new()
        } else {
            guest_cwd(s, n)?
        };
        Ok::<_, Errno>(Request {
            op: Op::Bind,
            tid: n.tid,
            a: pa,
            b: None,
            cwd,
        })
    })();
    Some(match call {
        Ok(req) => ask(
            s,
            n,
            Call {
                req,
                fds,
                cloexec: false,
            },
        ),
        Err(e) => errno(e),
    })
}
