//! The Gofer's side: each request is resolved inside the writable tree and
//! done there, or answered [`Response::Native`] when it leads somewhere the
//! tree does not hold.
//!
//! Every path is resolved from the tree's root with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: `..`, absolute
//! symlinks and mount crossings all stay inside, and no `/proc` magic link
//! is followed. A guest directory (its dirfd, its cwd) is on the guest's
//! read-only view, which the tree mirrors mount for mount: it is mapped by
//! its path (read from `/proc/self/fd`), resolved in the tree the same way,
//! and accepted only when the result is the same inode (`st_dev`,
//! `st_ino`, the superblocks being shared). What does not map (a pipe, the
//! guest's own `/proc`, a deleted directory) is answered `Native`: the
//! guest's kernel then runs the call on the read-only view, where the only
//! writable things are those that were writable before the Gofer existed
//! (`/proc`, device nodes, FIFOs). So a mistake here can misplace a change
//! inside the tree, never take one outside it.
//!
//! The last component of calls that do not follow it (mkdir, unlink,
//! rename, link, symlink, mknod) is done with the `*at` call on the parent
//! resolved as above: one component, resolved by the kernel.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::creds::{self, Creds, Own};
use crate::protocol::{Base, MAX_REQUEST, Op, PathArg, Request, Response};
use crate::sys::{self, Errno};

/// How every path is resolved in the tree.
const IN_TREE: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
/// openat2's resolve bits a guest may ask for.
const RESOLVE_KNOWN: u64 = 0x3f;
/// The flags `open` takes; others are ignored, as Linux ignores them.
const OPEN_FLAGS: u64 = (libc::O_ACCMODE
    | libc::O_CREAT
    | libc::O_EXCL
    | libc::O_NOCTTY
    | libc::O_TRUNC
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_ASYNC
    | libc::O_DIRECT
    | libc::O_LARGEFILE
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_NOATIME
    | libc::O_CLOEXEC
    | libc::O_SYNC
    | libc::O_PATH
    | libc::O_TMPFILE) as u64;
const O_PATH_FLAGS: u64 =
    (libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
const AT_EMPTY_PATH: u32 = libc::AT_EMPTY_PATH as u32;
const AT_NOFOLLOW: u32 = libc::AT_SYMLINK_NOFOLLOW as u32;
const AT_FOLLOW: u32 = libc::AT_SYMLINK_FOLLOW as u32;

/// Why a request was not done in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Errno(Errno),
    Native,
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Errno(e)
    }
}

type Res<T> = Result<T, Fail>;

/// Errors of resolution that the guest's own kernel answers as well (or
/// serves, where it is not the tree: its `/proc`, a magic link).
fn resolving(e: Errno) -> Fail {
    match e {
        libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV | libc::ENXIO => Fail::Native,
        e => Fail::Errno(e),
    }
}

fn cstr(bytes: &[u8]) -> Res<CString> {
    CString::new(bytes).map_err(|_| Fail::Errno(libc::EINVAL))
}

/// The guest thread a request is for.
#[derive(Debug)]
struct Who<'a> {
    /// Its umask.
    umask: u32,
    /// Its cwd, as the guest sees it.
    cwd: &'a [u8],
}

/// A directory a relative path starts from, mapped into the tree.
#[derive(Debug)]
struct Dir {
    /// Its path inside the root.
    path: Vec<u8>,
    /// Its descriptor in the tree.
    fd: OwnedFd,
}

/// What an xattr call acts on.
#[derive(Debug)]
enum XattrOn {
    /// A regular file or a directory, opened.
    File(OwnedFd),
    /// A symlink: its directory and its name.
    Link(OwnedFd, CString),
}

/// One Gofer: the writable tree it serves and how it logs.
#[derive(Debug)]
pub struct Gofer {
    root: OwnedFd,
    proc: OwnedFd,
    log: Option<File>,
    /// The tree's `/proc` and `/sys`: empty directories under the guest's
    /// own mounts. A change there is the guest kernel's to answer.
    hidden: Vec<(u64, u64)>,
    /// The Gofer's own credentials, taken back after each request.
    own: Own,
}

impl Gofer {
    /// A Gofer of the tree `root`, with the host's `/proc` (for the guest
    /// threads' cwd and umask, and its own descriptors' paths), logging
    /// every change to `log`. Its thread's credentials, as they are now,
    /// are those it returns to after each request.
    pub fn new(root: OwnedFd, proc: OwnedFd, log: Option<File>) -> Result<Gofer, Errno> {
        let hidden = [c"/proc", c"/sys"]
            .iter()
            .filter_map(|p| {
                let fd = sys::openat2(root.as_fd(), p, o_path(true), 0, IN_TREE).ok()?;
                sys::identity(fd.as_fd()).ok()
            })
            .collect();
        Ok(Gofer {
            root,
            proc,
            log,
            hidden,
            own: Own::current()?,
        })
    }

    /// Serves requests on `sock` until the other end closes it.
    pub fn serve(&mut self, sock: BorrowedFd<'_>) -> Result<(), Errno> {
        let mut buf = vec![0u8; MAX_REQUEST];
        loop {
            let Some((len, fds)) = sys::recv(sock, &mut buf, 2)? else {
                return Ok(());
            };
            let nfds = fds.len();
            let (resp, fd) = match Request::parse(&buf[..len], nfds) {
                Ok(req) => self.handle(&req, fds),
                Err(_) => (Response::Errno(libc::EINVAL), None),
            };
            let raw: Vec<i32> = fd.iter().map(AsRawFd::as_raw_fd).collect();
            sys::send(sock, &resp.emit(), &raw)?;
        }
    }

    /// Does one request: its answer, and the descriptor that goes with a
    /// [`Response::Fd`].
    pub fn handle(&mut self, req: &Request, fds: Vec<OwnedFd>) -> (Response, Option<OwnedFd>) {
        let mut fds = fds.into_iter();
        let sock = if req.op == Op::Bind { fds.next() } else { None };
        let fd_a = (req.a.base != Base::Cwd).then(|| fds.next()).flatten();
        let fd_b = req
            .b
            .as_ref()
            .and_then(|b| (b.base != Base::Cwd).then(|| fds.next()).flatten());
        let mut logged = Vec::new();
        let result = self.as_caller(req, |g, creds| match (&req.op, sock) {
            (Op::Bind, Some(sock)) => g
                .bind(req, creds, &sock, fd_a, &mut logged)
                .map(|()| (0, None)),
            (Op::Bind, None) => Err(Fail::Errno(libc::EINVAL)),
            _ => g.act(req, creds, fd_a, fd_b, &mut logged),
        });
        let (resp, fd) = match result {
            Ok((v, fd)) => match fd {
                Some(fd) => (Response::Fd, Some(fd)),
                None => (Response::Value(v), None),
            },
            Err(Fail::Errno(e)) => (Response::Errno(e), None),
            Err(Fail::Native) => (Response::Native, None),
        };
        if self.log.is_some() {
            self.record(req, &logged, resp);
        }
        (resp, fd)
    }

    /// Runs `f` with the credentials of the thread `req` is for: its
    /// fsuid, fsgid, groups and effective capabilities (within the
    /// Gofer's), or for `access` without `AT_EACCESS` its real ids, as the
    /// kernel checks them. Credentials that cannot be read (a thread gone,
    /// odd text) refuse the request with EPERM.
    fn as_caller(
        &self,
        req: &Request,
        f: impl FnOnce(&Self, &Creds) -> Res<(i64, Option<OwnedFd>)>,
    ) -> Res<(i64, Option<OwnedFd>)> {
        let creds = self.creds(req.tid).ok_or(Fail::Errno(libc::EPERM))?;
        let creds = match req.op {
            Op::Access { flags, .. } if flags & libc::AT_EACCESS as u32 == 0 => creds.for_access(),
            _ => creds,
        };
        if creds.same_as(&self.own) {
            return f(self, &creds);
        }
        let assumed = creds.assume(&self.own);
        let result = match assumed {
            Ok(()) => f(self, &creds),
            Err(_) => Err(Fail::Errno(libc::EPERM)),
        };
        self.own.restore();
        result
    }

    /// The credentials of thread `tid` (its `/proc/TID/status`).
    fn creds(&self, tid: u32) -> Option<Creds> {
        const MAX: usize = 1 << 20;
        let name = CString::new(format!("{tid}/status")).ok()?;
        let fd = sys::openat(self.proc.as_fd(), &name, libc::O_RDONLY | libc::O_CLOEXEC).ok()?;
        let mut text = Vec::new();
        let mut buf = vec![0u8; 16384];
        loop {
            let n = sys::read(fd.as_fd(), &mut buf).ok()?;
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            if text.len() > MAX {
                return None;
            }
        }
        creds::parse(&text)
    }

    fn act(
        &self,
        req: &Request,
        creds: &Creds,
        fd_a: Option<OwnedFd>,
        fd_b: Option<OwnedFd>,
        logged: &mut Vec<Vec<u8>>,
    ) -> Res<(i64, Option<OwnedFd>)> {
        let tid = &Who {
            umask: creds.umask,
            cwd: &req.cwd,
        };
        let a = &req.a;
        match &req.op {
            Op::Open {
                flags,
                mode,
                resolve,
                strict,
            } => {
                let fd = self.open(tid, a, fd_a, *flags, *mode, *resolve, *strict, logged)?;
                Ok((0, Some(fd)))
            }
            Op::Mkdir { mode } => {
                let (parent, name) = self.parent(tid, a, fd_a, logged)?;
                let mode = mode & 0o7777 & !tid.umask;
                sys::at_call(
                    libc::SYS_mkdirat,
                    parent.as_fd(),
                    &name,
                    [mode.into(), 0, 0],
                )?;
                Ok((0, None))
            }
            Op::Mknod { mode, dev } => {
                match mode & libc::S_IFMT {
                    0 | libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => {}
                    libc::S_IFCHR | libc::S_IFBLK => return Err(Fail::Errno(libc::EPERM)),
                    _ => return Err(Fail::Errno(libc::EINVAL)),
                }
                let (parent, name) = self.parent(tid, a, fd_a, logged)?;
                let mode = mode & !tid.umask;
                sys::at_call(
                    libc::SYS_mknodat,
                    parent.as_fd(),
                    &name,
                    [mode.into(), *dev, 0],
                )?;
                Ok((0, None))
            }
            Op::Unlink { flags } => {
                if flags & !(libc::AT_REMOVEDIR as u32) != 0 {
                    return Err(Fail::Errno(libc::EINVAL));
                }
                let (parent, name) = self.parent(tid, a, fd_a, logged)?;
                sys::at_call(
                    libc::SYS_unlinkat,
                    parent.as_fd(),
                    &name,
                    [(*flags).into(), 0, 0],
                )?;
                Ok((0, None))
            }
            Op::Rename { flags } => {
                let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT;
                if flags & !known != 0 {
                    return Err(Fail::Errno(libc::EINVAL));
                }
                let b = req.b.as_ref().ok_or(Fail::Errno(libc::EINVAL))?;
                let (p1, n1) = self.parent(tid, a, fd_a, logged)?;
                let (p2, n2) = self.parent(tid, b, fd_b, logged)?;
                sys::renameat2(p1.as_fd(), &n1, p2.as_fd(), &n2, *flags)?;
                Ok((0, None))
            }
            Op::Link { flags } => {
                if flags & !(AT_FOLLOW | AT_EMPTY_PATH) != 0 {
                    return Err(Fail::Errno(libc::EINVAL));
                }
                let b = req.b.as_ref().ok_or(Fail::Errno(libc::EINVAL))?;
                if a.base == Base::Magic || (a.path.is_empty() && flags & AT_EMPTY_PATH != 0) {
                    // The file itself (an O_TMPFILE made by the Gofer, say).
                    // The kernel links it only within its own mount: a
                    // descriptor from outside the tree gets EXDEV.
                    let file = match (a.base, fd_a) {
                        (Base::Fd | Base::Magic, Some(fd)) => fd,
                        _ => self.map(tid, None, false)?.fd,
                    };
                    let (p2, n2) = self.parent(tid, b, fd_b, logged)?;
                    sys::linkat(file.as_fd(), c"", p2.as_fd(), &n2, AT_EMPTY_PATH)?;
                } else if flags & AT_FOLLOW != 0 {
                    let src = self.target(tid, a, fd_a, 0, logged)?;
                    let (p2, n2) = self.parent(tid, b, fd_b, logged)?;
                    sys::linkat(src.as_fd(), c"", p2.as_fd(), &n2, AT_EMPTY_PATH)?;
                } else {
                    let (p1, n1) = self.parent(tid, a, fd_a, logged)?;
                    let (p2, n2) = self.parent(tid, b, fd_b, logged)?;
                    sys::linkat(p1.as_fd(), &n1, p2.as_fd(), &n2, 0)?;
                }
                Ok((0, None))
            }
            Op::Symlink { target } => {
                if target.is_empty() {
                    return Err(Fail::Errno(libc::ENOENT));
                }
                let target = cstr(target)?;
                let (parent, name) = self.parent(tid, a, fd_a, logged)?;
                sys::symlinkat(&target, parent.as_fd(), &name)?;
                Ok((0, None))
            }
            Op::Chmod { mode, flags } => {
                let fd = self.target(tid, a, fd_a, *flags, logged)?;
                sys::at_call(
                    libc::SYS_fchmodat2,
                    fd.as_fd(),
                    c"",
                    [(*mode).into(), AT_EMPTY_PATH.into(), 0],
                )?;
                Ok((0, None))
            }
            Op::Chown { uid, gid, flags } => {
                let fd = self.target(tid, a, fd_a, *flags, logged)?;
                sys::at_call(
                    libc::SYS_fchownat,
                    fd.as_fd(),
                    c"",
                    [(*uid).into(), (*gid).into(), AT_EMPTY_PATH.into()],
                )?;
                Ok((0, None))
            }
            Op::Truncate { len } => {
                if *len < 0 {
                    return Err(Fail::Errno(libc::EINVAL));
                }
                let full = self.full(tid, a, fd_a)?;
                let flags = (libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
                let fd = sys::openat2(self.root.as_fd(), &cstr(&full)?, flags, 0, IN_TREE)
                    .map_err(resolving)?;
                logged.push(self.where_is(fd.as_fd(), None));
                sys::ftruncate(fd.as_fd(), *len)?;
                Ok((0, None))
            }
            Op::Utimes { times, flags } => {
                let fd = self.target(tid, a, fd_a, *flags, logged)?;
                sys::utimens(fd.as_fd(), *times, 0)?;
                Ok((0, None))
            }
            Op::SetXattr {
                name,
                value,
                xflags,
                flags,
            } => {
                if xflags & !((libc::XATTR_CREATE | libc::XATTR_REPLACE) as u32) != 0 {
                    return Err(Fail::Errno(libc::EINVAL));
                }
                let name = cstr(name)?;
                match self.xattr_target(tid, a, fd_a, *flags, logged)? {
                    XattrOn::File(fd) => sys::set_xattr(fd.as_fd(), &name, value, *xflags)?,
                    XattrOn::Link(dir, link) => {
                        self.in_dir(&dir, || sys::lset_xattr(&link, &name, value, *xflags))?;
                    }
                }
                Ok((0, None))
            }
            Op::Access { mode, flags } => {
                if mode & !7 != 0 {
                    return Err(Fail::Errno(libc::EINVAL));
                }
                // The caller's real ids, when it asked for them, are the
                // Gofer's file-system ids now (see `as_caller`).
                let at = libc::AT_EACCESS as u32;
                let fd = self.target(tid, a, fd_a, flags & !at, logged)?;
                let flags = at | AT_EMPTY_PATH;
                sys::at_call(
                    libc::SYS_faccessat2,
                    fd.as_fd(),
                    c"",
                    [(*mode).into(), flags.into(), 0],
                )?;
                Ok((0, None))
            }
            Op::Bind => Err(Fail::Errno(libc::EINVAL)),
            Op::RemoveXattr { name, flags } => {
                let name = cstr(name)?;
                match self.xattr_target(tid, a, fd_a, *flags, logged)? {
                    XattrOn::File(fd) => sys::remove_xattr(fd.as_fd(), &name)?,
                    XattrOn::Link(dir, link) => {
                        self.in_dir(&dir, || sys::lremove_xattr(&link, &name))?;
                    }
                }
                Ok((0, None))
            }
        }
    }

    /// Binds the guest's AF_UNIX socket `sock` to path A: from inside its
    /// parent (bind has no `*at` form), with the guest's umask.
    fn bind(
        &self,
        req: &Request,
        creds: &Creds,
        sock: &OwnedFd,
        fd_a: Option<OwnedFd>,
        logged: &mut Vec<Vec<u8>>,
    ) -> Res<()> {
        let who = Who {
            umask: creds.umask,
            cwd: &req.cwd,
        };
        let (parent, name) = self.parent(&who, &req.a, fd_a, logged)?;
        let name = name.as_bytes();
        let mut addr = libc::sockaddr_un {
            sun_family: libc::AF_UNIX as libc::sa_family_t,
            sun_path: [0; 108],
        };
        if name.len() >= addr.sun_path.len() {
            return Err(Fail::Errno(libc::EINVAL));
        }
        for (d, s) in addr.sun_path.iter_mut().zip(name) {
            *d = *s as libc::c_char;
        }
        self.in_dir(&parent, || sys::bind_unix(sock.as_fd(), &addr, creds.umask))
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &self,
        tid: &Who<'_>,
        a: &PathArg,
        fd_a: Option<OwnedFd>,
        flags: u64,
        mode: u64,
        resolve: u64,
        strict: bool,
        logged: &mut Vec<Vec<u8>>,
    ) -> Res<OwnedFd> {
        let (mut flags, mut mode) = (flags, mode);
        if !strict {
            flags &= OPEN_FLAGS;
            if flags & libc::O_PATH as u64 != 0 {
                flags &= O_PATH_FLAGS;
            }
            let creates = flags & (libc::O_CREAT | libc::O_TMPFILE) as u64 != 0;
            mode = if creates { mode & 0o7777 } else { 0 };
        } else if resolve & !RESOLVE_KNOWN != 0 {
            return Err(Fail::Errno(libc::EINVAL));
        }
        // An O_CREAT open of an existing file tries without O_CREAT first
        // (the guest's umask applies only to a file that is made).
        let o_creat = libc::O_CREAT as u64;
        let made = flags & o_creat != 0 && flags & libc::O_EXCL as u64 == 0;
        if flags & (libc::O_CREAT | libc::O_TMPFILE) as u64 != 0 && !made {
            mode &= !u64::from(tid.umask);
        }
        // Never block here (a FIFO without a reader): a special file is the
        // guest kernel's to open.
        let ours = flags | (libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY) as u64;
        let confined = resolve & (libc::RESOLVE_BENEATH | libc::RESOLVE_IN_ROOT) != 0;
        let fd = if a.base == Base::Magic {
            // Reopened through our own magic link to the file's copy.
            let file = self.map(tid, fd_a, false)?.fd;
            let name =
                CString::new(format!("self/fd/{}", file.as_raw_fd())).map_err(|_| libc::EINVAL)?;
            let flags = (ours & !(libc::O_CREAT as u64 | libc::O_TMPFILE as u64)) as i32;
            sys::openat(self.proc.as_fd(), &name, flags)
        } else if confined {
            // Confined to the guest's directory: resolve from its copy.
            let dir = if a.path.first() == Some(&b'/') && resolve & libc::RESOLVE_BENEATH != 0 {
                return Err(Fail::Errno(libc::EXDEV));
            } else {
                self.map(tid, fd_a, true)?
            };
            sys::openat2(
                dir.fd.as_fd(),
                &cstr(&a.path)?,
                ours,
                mode,
                resolve | libc::RESOLVE_NO_MAGICLINKS,
            )
        } else {
            let full = cstr(&self.full(tid, a, fd_a)?)?;
            let open = |flags: u64, mode: u64| {
                sys::openat2(self.root.as_fd(), &full, flags, mode, IN_TREE | resolve)
            };
            if made {
                match open(ours & !o_creat, 0) {
                    Err(libc::ENOENT) => open(ours, mode & !u64::from(tid.umask)),
                    Ok(fd) if file_type(fd.as_fd())? == libc::S_IFDIR => Err(libc::EISDIR),
                    other => other,
                }
            } else {
                open(ours, mode)
            }
        };
        let fd = fd.map_err(resolving)?;
        if flags & libc::O_PATH as u64 == 0 {
            match file_type(fd.as_fd())? {
                libc::S_IFREG => {}
                // The placeholders are directories.
                libc::S_IFDIR if !self.is_hidden(fd.as_fd()) => {}
                _ => return Err(Fail::Native),
            }
            if flags & libc::O_NONBLOCK as u64 == 0 {
                let back = (flags & !(libc::O_CLOEXEC as u64)) as i32;
                set_status_flags(fd.as_fd(), back)?;
            }
        }
        logged.push(self.where_is(fd.as_fd(), None));
        Ok(fd)
    }

    /// The path of one of our own descriptors, as the tree sees it.
    fn path_of(&self, fd: BorrowedFd<'_>) -> Result<Vec<u8>, Errno> {
        let name = CString::new(format!("self/fd/{}", fd.as_raw_fd())).map_err(|_| libc::EINVAL)?;
        sys::readlinkat(self.proc.as_fd(), &name)
    }

    /// Where `fd` (plus `name`) is, for the log.
    fn where_is(&self, fd: BorrowedFd<'_>, name: Option<&[u8]>) -> Vec<u8> {
        if self.log.is_none() {
            return Vec::new();
        }
        let mut p = self.path_of(fd).unwrap_or_else(|_| b"?".to_vec());
        if let Some(n) = name {
            if p != b"/" {
                p.push(b'/');
            }
            p.extend_from_slice(n);
        }
        p
    }

    fn is_hidden(&self, fd: BorrowedFd<'_>) -> bool {
        sys::identity(fd).is_ok_and(|id| self.hidden.contains(&id))
    }

    /// The guest directory `fd` (the thread's cwd when `None`) in the tree:
    /// its path, resolved in the tree, must be the very same inode.
    fn map(&self, who: &Who<'_>, fd: Option<OwnedFd>, want_dir: bool) -> Res<Dir> {
        let cwd = who.cwd;
        let Some(source) = fd else {
            // The cwd comes as a path only (the Sentry may read the link,
            // not open it): resolved in the tree like any other path.
            if cwd.first() != Some(&b'/') {
                return Err(Fail::Native);
            }
            let fd = sys::openat2(self.root.as_fd(), &cstr(cwd)?, o_path(want_dir), 0, IN_TREE)
                .map_err(|_| Fail::Native)?;
            return Ok(Dir {
                path: cwd.to_vec(),
                fd,
            });
        };
        let path = self.path_of(source.as_fd())?;
        if path.first() != Some(&b'/') {
            return Err(Fail::Native);
        }
        let mapped = sys::openat2(
            self.root.as_fd(),
            &cstr(&path)?,
            o_path(want_dir),
            0,
            IN_TREE,
        )
        .map_err(|_| Fail::Native)?;
        if sys::identity(source.as_fd())? != sys::identity(mapped.as_fd())? {
            return Err(Fail::Native);
        }
        Ok(Dir { path, fd: mapped })
    }

    /// The absolute path of `a` inside the root.
    fn full(&self, tid: &Who<'_>, a: &PathArg, fd: Option<OwnedFd>) -> Res<Vec<u8>> {
        if a.base == Base::Magic {
            // Only calls that follow a last magic link may name one.
            return Err(Fail::Native);
        }
        if a.path.is_empty() {
            return Err(Fail::Errno(libc::ENOENT));
        }
        if a.path[0] == b'/' {
            return Ok(a.path.clone());
        }
        let mut full = match fd {
            // The cwd's path is all that is needed (resolved below).
            None if tid.cwd.first() == Some(&b'/') => tid.cwd.to_vec(),
            None => return Err(Fail::Native),
            Some(fd) => self.map(tid, Some(fd), true)?.path,
        };
        if full != b"/" {
            full.push(b'/');
        }
        full.extend_from_slice(&a.path);
        Ok(full)
    }

    /// The parent directory of `a` in the tree, and its last component
    /// (with any trailing slashes, which the kernel interprets).
    fn parent(
        &self,
        tid: &Who<'_>,
        a: &PathArg,
        fd: Option<OwnedFd>,
        logged: &mut Vec<Vec<u8>>,
    ) -> Res<(OwnedFd, CString)> {
        let full = self.full(tid, a, fd)?;
        let (parent, name) = split(&full);
        let dir = sys::openat2(self.root.as_fd(), &cstr(parent)?, o_path(true), 0, IN_TREE)
            .map_err(resolving)?;
        if self.is_hidden(dir.as_fd()) {
            return Err(Fail::Native);
        }
        logged.push(self.where_is(dir.as_fd(), Some(name)));
        Ok((dir, cstr(name)?))
    }

    /// The file `a` names (following a last symlink unless `flags` has
    /// AT_SYMLINK_NOFOLLOW; the directory itself for an empty path with
    /// AT_EMPTY_PATH), as an O_PATH descriptor in the tree.
    fn target(
        &self,
        tid: &Who<'_>,
        a: &PathArg,
        fd: Option<OwnedFd>,
        flags: u32,
        logged: &mut Vec<Vec<u8>>,
    ) -> Res<OwnedFd> {
        if flags & !(AT_NOFOLLOW | AT_EMPTY_PATH) != 0 {
            return Err(Fail::Errno(libc::EINVAL));
        }
        let fd = if a.base == Base::Magic {
            self.map(tid, fd, false)?.fd
        } else if a.path.is_empty() {
            if flags & AT_EMPTY_PATH == 0 {
                return Err(Fail::Errno(libc::ENOENT));
            }
            self.map(tid, fd, false)?.fd
        } else {
            let full = self.full(tid, a, fd)?;
            let mut how = o_path(false);
            if flags & AT_NOFOLLOW != 0 {
                how |= libc::O_NOFOLLOW as u64;
            }
            sys::openat2(self.root.as_fd(), &cstr(&full)?, how, 0, IN_TREE).map_err(resolving)?
        };
        if self.is_hidden(fd.as_fd()) {
            return Err(Fail::Native);
        }
        logged.push(self.where_is(fd.as_fd(), None));
        Ok(fd)
    }

    /// The file an xattr call names, opened for it: a regular file or a
    /// directory (a symlink's user xattrs are refused, as Linux refuses
    /// them; a special file is the guest kernel's).
    fn xattr_target(
        &self,
        tid: &Who<'_>,
        a: &PathArg,
        fd: Option<OwnedFd>,
        flags: u32,
        logged: &mut Vec<Vec<u8>>,
    ) -> Res<XattrOn> {
        let mut ignored = Vec::new();
        let fd = self.target(tid, a, fd, flags, &mut ignored)?;
        match file_type(fd.as_fd())? {
            libc::S_IFREG | libc::S_IFDIR => {}
            libc::S_IFLNK if !a.path.is_empty() && a.base != Base::Magic => {
                // A symlink itself (lsetxattr): from inside its directory,
                // as the l*xattr calls have no *at form.
                let (dir, name) = self.parent(tid, a, None, logged)?;
                return Ok(XattrOn::Link(dir, name));
            }
            _ => return Err(Fail::Native),
        }
        logged.append(&mut ignored);
        let name = CString::new(format!("self/fd/{}", fd.as_raw_fd())).map_err(|_| libc::EINVAL)?;
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        Ok(XattrOn::File(sys::openat(self.proc.as_fd(), &name, flags)?))
    }

    /// Runs `f` with the Gofer's cwd in `dir`, then back at the root.
    fn in_dir(&self, dir: &OwnedFd, f: impl FnOnce() -> Result<(), Errno>) -> Res<()> {
        nix::unistd::fchdir(dir).map_err(|e| e as i32)?;
        let done = f();
        nix::unistd::fchdir(&self.root).map_err(|e| e as i32)?;
        Ok(done?)
    }

    /// One line of the file log: the call, where it acted, the answer.
    fn record(&mut self, req: &Request, logged: &[Vec<u8>], resp: Response) {
        let mut paths: Vec<String> = logged.iter().map(|p| escape(p)).collect();
        if paths.is_empty() {
            paths.push(escape(&req.a.path));
        }
        let result = match resp {
            Response::Value(v) => v.to_string(),
            Response::Fd => "fd".to_owned(),
            Response::Errno(e) => format!("-1 {}", nix::errno::Errno::from_raw(e)),
            Response::Native => "native".to_owned(),
        };
        let extra = match &req.op {
            Op::Open { flags, .. } => format!(" {}", open_flags(*flags)),
            Op::Mkdir { mode } | Op::Chmod { mode, .. } | Op::Mknod { mode, .. } => {
                format!(" {mode:o}")
            }
            Op::Symlink { target } => format!(" -> {}", escape(target)),
            _ => String::new(),
        };
        let line = format!("{} {}{extra} = {result}\n", req.op.name(), paths.join(" "));
        if let Some(log) = &mut self.log {
            // One write per line; a full disk loses lines, never the call.
            let _ = log.write_all(line.as_bytes());
        }
    }
}

fn o_path(dir: bool) -> u64 {
    let mut f = libc::O_PATH | libc::O_CLOEXEC;
    if dir {
        f |= libc::O_DIRECTORY;
    }
    f as u64
}

fn file_type(fd: BorrowedFd<'_>) -> Result<u32, Errno> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| e as i32)?;
    Ok(st.st_mode & libc::S_IFMT)
}

fn set_status_flags(fd: BorrowedFd<'_>, flags: i32) -> Result<(), Errno> {
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map(drop)
        .map_err(|e| e as i32)
}

/// `full` (absolute) as its parent and its last component, trailing
/// slashes kept with the component; the root's is ".".
fn split(full: &[u8]) -> (&[u8], &[u8]) {
    let end = full.iter().rposition(|&c| c != b'/').map_or(0, |i| i + 1);
    if end == 0 {
        return (b"/", b".");
    }
    match full[..end].iter().rposition(|&c| c == b'/') {
        Some(0) => (b"/", &full[1..]),
        Some(i) => (&full[..i], &full[i + 1..]),
        None => (b".", full),
    }
}

fn escape(p: &[u8]) -> String {
    let mut s = String::new();
    for chunk in p.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' || c == ' ' {
                s.push_str(&format!("\\x{:02x}", u32::from(c)));
            } else {
                s.push(c);
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

fn open_flags(flags: u64) -> String {
    let names: [(i32, &str); 8] = [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_TMPFILE & !libc::O_DIRECTORY, "O_TMPFILE"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_PATH, "O_PATH"),
    ];
    let mut out = vec![match flags as i32 & libc::O_ACCMODE {
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_RDONLY",
    }];
    for (bit, name) in names {
        if flags as i32 & bit == bit {
            out.push(name);
        }
    }
    out.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_parent_and_last_component() {
        assert_eq!(split(b"/a/b"), (&b"/a"[..], &b"b"[..]));
        assert_eq!(split(b"/a/b//"), (&b"/a"[..], &b"b//"[..]));
        assert_eq!(split(b"/a"), (&b"/"[..], &b"a"[..]));
        assert_eq!(split(b"///"), (&b"/"[..], &b"."[..]));
        assert_eq!(split(b"/a/.."), (&b"/a"[..], &b".."[..]));
    }

    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use crate::protocol::Times;

    /// A tree of its own under the test's temporary directory, served by a
    /// Gofer (the process's root is the host's here: only `openat2`'s own
    /// confinement keeps paths inside).
    struct Tree {
        dir: PathBuf,
        gofer: Gofer,
    }

    impl Tree {
        fn new(name: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!("gofer-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("etc")).unwrap();
            std::fs::create_dir_all(dir.join("proc")).unwrap();
            std::fs::write(dir.join("etc/passwd"), "inside\n").unwrap();
            let open = |p: &std::path::Path| -> OwnedFd { File::open(p).unwrap().into() };
            let gofer = Gofer::new(open(&dir), open(std::path::Path::new("/proc")), None).unwrap();
            Tree { dir, gofer }
        }

        fn ask(&mut self, op: Op, path: &str, cwd: &str, fds: Vec<OwnedFd>) -> Response {
            let base = if fds.is_empty() { Base::Cwd } else { Base::Fd };
            let req = Request {
                op,
                tid: std::process::id(),
                a: PathArg {
                    base,
                    path: path.as_bytes().to_vec(),
                },
                b: None,
                cwd: cwd.as_bytes().to_vec(),
            };
            self.gofer.handle(&req, fds).0
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn open_for_append() -> Op {
        Op::Open {
            flags: (libc::O_WRONLY | libc::O_APPEND) as u64,
            mode: 0,
            resolve: 0,
            strict: false,
        }
    }

    #[test]
    fn absolute_symlinks_and_dotdot_stay_in_the_root() {
        let mut t = Tree::new("escape");
        symlink("/etc/passwd", t.dir.join("passwd")).unwrap();
        let host = std::fs::read("/etc/passwd").unwrap();
        assert_eq!(
            t.ask(open_for_append(), "/passwd", "/", vec![]),
            Response::Fd
        );
        assert_eq!(
            t.ask(open_for_append(), "../../../../etc/passwd", "/etc", vec![]),
            Response::Fd
        );
        assert_eq!(
            t.ask(
                Op::Mkdir { mode: 0o700 },
                "../../../../made",
                "/etc",
                vec![]
            ),
            Response::Value(0)
        );
        assert!(t.dir.join("made").is_dir());
        assert_eq!(std::fs::read("/etc/passwd").unwrap(), host);
        assert!(!std::path::Path::new("/made").exists());
    }

    #[test]
    fn magic_links_and_missing_parents_are_the_guest_kernels() {
        let mut t = Tree::new("magic");
        symlink("/proc/self/root/etc/passwd", t.dir.join("magic")).unwrap();
        // The tree's /proc is an empty placeholder: a change there, or
        // through a magic link, is answered natively.
        assert_eq!(
            t.ask(open_for_append(), "/magic", "/", vec![]),
            Response::Native
        );
        assert_eq!(
            t.ask(Op::Mkdir { mode: 0o700 }, "/proc/x", "/", vec![]),
            Response::Native
        );
        assert_eq!(
            t.ask(Op::Mkdir { mode: 0o700 }, "/nope/x", "/", vec![]),
            Response::Native
        );
        assert!(!t.dir.join("proc/x").exists());
        // A cwd that is not a path inside.
        assert_eq!(
            t.ask(Op::Mkdir { mode: 0o700 }, "x", "pipe:[1]", vec![]),
            Response::Native
        );
    }

    #[test]
    fn a_dirfd_maps_only_to_the_same_inode() {
        let mut t = Tree::new("dirfd");
        // A directory outside the tree whose path does not exist inside.
        let outside: OwnedFd = File::open(std::env::temp_dir()).unwrap().into();
        assert_eq!(
            t.ask(Op::Mkdir { mode: 0o700 }, "x", "/", vec![outside]),
            Response::Native
        );
        // The host's /etc: its path exists inside, but is another inode.
        let etc: OwnedFd = File::open("/etc").unwrap().into();
        assert_eq!(
            t.ask(
                Op::Mkdir { mode: 0o700 },
                "smolvisor-gofer-test",
                "/",
                vec![etc]
            ),
            Response::Native
        );
        assert!(!std::path::Path::new("/etc/smolvisor-gofer-test").exists());
    }

    #[test]
    fn errnos_are_the_kernels() {
        let mut t = Tree::new("errno");
        let mkdir = || Op::Mkdir { mode: 0o755 };
        assert_eq!(
            t.ask(mkdir(), "/etc", "/", vec![]),
            Response::Errno(libc::EEXIST)
        );
        assert_eq!(
            t.ask(Op::Unlink { flags: 0 }, "/etc", "/", vec![]),
            Response::Errno(libc::EISDIR)
        );
        assert_eq!(
            t.ask(Op::Unlink { flags: 0 }, "/etc/none", "/", vec![]),
            Response::Errno(libc::ENOENT)
        );
        assert_eq!(
            t.ask(Op::Unlink { flags: 0x1 }, "/etc/passwd", "/", vec![]),
            Response::Errno(libc::EINVAL)
        );
        let times: Times = None;
        assert_eq!(
            t.ask(Op::Utimes { times, flags: 0 }, "/etc/passwd", "/", vec![]),
            Response::Value(0)
        );
        assert_eq!(
            t.ask(
                Op::Mknod {
                    mode: libc::S_IFCHR | 0o600,
                    dev: 0
                },
                "/dev",
                "/",
                vec![]
            ),
            Response::Errno(libc::EPERM)
        );
    }

    /// A thread that acts as `fsuid`:`fsgid` (as after `setfsuid`, which
    /// also clears its file-system capabilities) until told to end.
    fn caller(fsuid: u32, fsgid: u32) -> (u32, std::sync::mpsc::Sender<()>) {
        let (tx_tid, rx_tid) = std::sync::mpsc::channel();
        let (tx_end, rx_end) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            sys::set_groups(&[]).unwrap();
            sys::set_fsgid(fsgid).unwrap();
            sys::set_fsuid(fsuid).unwrap();
            tx_tid.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            let _ = rx_end.recv();
        });
        (rx_tid.recv().unwrap(), tx_end)
    }

    #[test]
    fn changes_are_made_with_the_callers_credentials() {
        let mut t = Tree::new("creds");
        std::fs::create_dir(t.dir.join("tmp")).unwrap();
        std::fs::set_permissions(t.dir.join("tmp"), PermissionsExt::from_mode(0o1777)).unwrap();
        let (tid, _end) = caller(65534, 65534);
        let before = sys::cap_get().unwrap();
        let mut ask = |op: Op, path: &str, tid: u32| {
            let req = Request {
                op,
                tid,
                a: PathArg {
                    base: Base::Cwd,
                    path: path.as_bytes().to_vec(),
                },
                b: None,
                cwd: b"/".to_vec(),
            };
            t.gofer.handle(&req, Vec::new()).0
        };
        let eacces = Response::Errno(libc::EACCES);
        assert_eq!(ask(open_for_append(), "/etc/passwd", tid), eacces);
        assert_eq!(ask(Op::Mkdir { mode: 0o755 }, "/etc/x", tid), eacces);
        let chmod = || Op::Chmod {
            mode: 0o600,
            flags: 0,
        };
        assert_eq!(
            ask(chmod(), "/etc/passwd", tid),
            Response::Errno(libc::EPERM)
        );
        assert_eq!(
            ask(Op::Mkdir { mode: 0o755 }, "/tmp/mine", tid),
            Response::Value(0)
        );
        let meta = std::fs::metadata(t.dir.join("tmp/mine")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        // A thread that is gone: refused.
        assert_eq!(
            ask(chmod(), "/etc/passwd", u32::MAX - 1),
            Response::Errno(libc::EPERM)
        );
        // The test's own (root) thread still may, and the Gofer's thread
        // is itself again.
        assert_eq!(
            ask(chmod(), "/etc/passwd", std::process::id()),
            Response::Value(0)
        );
        assert_eq!(sys::cap_get().unwrap(), before);
        assert!(sys::set_fsuid(nix::unistd::geteuid().as_raw()).is_ok());
    }

    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn log_paths_are_one_line() {
        assert_eq!(escape(b"a b\n\xff"), "a\\x20b\\x0a\\xff");
    }
}
