//! The messages between the Sentry (client) and the Gofer (server): one
//! request, one response, each a single SOCK_SEQPACKET message, descriptors
//! beside it as SCM_RIGHTS.
//!
//! A request names one change (an [`Op`]), the guest thread it is for (its
//! cwd and umask), and one or two paths, each relative to the thread's cwd
//! or to a directory descriptor passed with the message ([`Base::Fd`], in
//! the order of the paths). The Gofer trusts nothing here: [`Request::parse`]
//! checks every length, tag and count once, and a request that does not
//! parse is refused with EINVAL.
//!
//! Wire form (little-endian): version, op tag, tid (u32); path A (base tag,
//! u16 length, bytes); a byte saying whether path B follows, and path B;
//! four u64 numbers whose meaning depends on the op; two blobs (u16 length
//! then u32 length) for a symlink's target or an xattr's name and value.

/// The version byte every message starts with.
const VERSION: u8 = 1;
/// Longest path (`PATH_MAX` less its NUL).
pub const PATH_MAX: usize = 4095;
/// Longest xattr name (`XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;
/// Longest xattr value (`XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65536;
/// Largest request: header, two paths, numbers, and the blobs.
pub const MAX_REQUEST: usize = 16 + 3 * (3 + PATH_MAX) + 32 + 2 + PATH_MAX + 4 + XATTR_SIZE_MAX;
/// Size of a response.
pub const RESPONSE_LEN: usize = 9;

/// What a path is relative to when it is not absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The calling thread's working directory.
    Cwd,
    /// A descriptor sent with the request (a guest's dirfd, or with an
    /// empty path the file itself).
    Fd,
    /// The descriptor sent, itself, named by a magic link the call follows
    /// (`/proc/self/fd/N`); the path is empty.
    Magic,
}

/// One path argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathArg {
    pub base: Base,
    /// The bytes the guest passed, without the NUL.
    pub path: Vec<u8>,
}

/// File times: `None` is "now" for both (a NULL `times`).
pub type Times = Option<[(i64, i64); 2]>;

/// The change asked for. Flags are the guest's own bits, checked against
/// what the call accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// open, openat, creat, openat2 (`resolve` is openat2's, 0 otherwise;
    /// `strict` is openat2's refusal of unknown flags).
    Open {
        flags: u64,
        mode: u64,
        resolve: u64,
        strict: bool,
    },
    Mkdir {
        mode: u32,
    },
    Mknod {
        mode: u32,
        dev: u64,
    },
    /// unlink, rmdir (`AT_REMOVEDIR`), unlinkat.
    Unlink {
        flags: u32,
    },
    /// Path A to path B.
    Rename {
        flags: u32,
    },
    /// Path A to path B.
    Link {
        flags: u32,
    },
    /// A new link at path A whose contents are `target`.
    Symlink {
        target: Vec<u8>,
    },
    Chmod {
        mode: u32,
        flags: u32,
    },
    Chown {
        uid: u32,
        gid: u32,
        flags: u32,
    },
    Truncate {
        len: i64,
    },
    Utimes {
        times: Times,
        flags: u32,
    },
    SetXattr {
        name: Vec<u8>,
        value: Vec<u8>,
        xflags: u32,
        flags: u32,
    },
    RemoveXattr {
        name: Vec<u8>,
        flags: u32,
    },
    /// access, faccessat, faccessat2 (only those that ask W_OK trap).
    Access {
        mode: u32,
        flags: u32,
    },
    /// bind of an AF_UNIX socket to path A; the socket is the first
    /// descriptor sent.
    Bind,
}

impl Op {
    /// The system call's name, for the file log.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Open { .. } => "open",
            Op::Mkdir { .. } => "mkdir",
            Op::Mknod { .. } => "mknod",
            Op::Unlink { flags } if flags & AT_REMOVEDIR != 0 => "rmdir",
            Op::Unlink { .. } => "unlink",
            Op::Rename { .. } => "rename",
            Op::Link { .. } => "link",
            Op::Symlink { .. } => "symlink",
            Op::Chmod { .. } => "chmod",
            Op::Chown { .. } => "chown",
            Op::Truncate { .. } => "truncate",
            Op::Utimes { .. } => "utimens",
            Op::SetXattr { .. } => "setxattr",
            Op::RemoveXattr { .. } => "removexattr",
            Op::Access { .. } => "access",
            Op::Bind => "bind",
        }
    }

    /// Whether the op takes a second path.
    fn two_paths(&self) -> bool {
        matches!(self, Op::Rename { .. } | Op::Link { .. })
    }
}

const AT_REMOVEDIR: u32 = libc::AT_REMOVEDIR as u32;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    /// The guest thread (host tid) whose cwd and umask apply.
    pub tid: u32,
    pub a: PathArg,
    /// The second path of rename and link.
    pub b: Option<PathArg>,
    /// The thread's working directory as the guest sees it (from
    /// `/proc/TID/cwd`), when a relative path is relative to it; empty
    /// otherwise.
    pub cwd: Vec<u8>,
}

/// Why bytes are not a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Too short, too long, or bytes left over.
    Length,
    /// An unknown version, op or base tag.
    Tag,
    /// A path or blob longer than Linux allows, or holding a NUL.
    Field,
    /// The descriptors sent do not match the [`Base::Fd`] paths.
    Descriptors,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(Malformed::Length);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().map_err(|_| Malformed::Length)?,
        ))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| Malformed::Length)?,
        ))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| Malformed::Length)?,
        ))
    }
    fn bytes(&mut self, len: usize, max: usize, nul_ok: bool) -> Result<Vec<u8>, Malformed> {
        if len > max {
            return Err(Malformed::Field);
        }
        let b = self.take(len)?;
        if !nul_ok && b.contains(&0) {
            return Err(Malformed::Field);
        }
        Ok(b.to_vec())
    }
    fn path(&mut self) -> Result<PathArg, Malformed> {
        let base = match self.u8()? {
            0 => Base::Cwd,
            1 => Base::Fd,
            2 => Base::Magic,
            _ => return Err(Malformed::Tag),
        };
        let len = usize::from(self.u16()?);
        let path = self.bytes(len, PATH_MAX, false)?;
        if base == Base::Magic && !path.is_empty() {
            return Err(Malformed::Field);
        }
        Ok(PathArg { base, path })
    }
}

fn put_path(out: &mut Vec<u8>, p: &PathArg) {
    out.push(match p.base {
        Base::Cwd => 0,
        Base::Fd => 1,
        Base::Magic => 2,
    });
    out.extend_from_slice(&(p.path.len() as u16).to_le_bytes());
    out.extend_from_slice(&p.path);
}

impl Request {
    /// How many descriptors go with the request.
    pub fn fds(&self) -> usize {
        let sent = |p: &PathArg| usize::from(p.base != Base::Cwd);
        sent(&self.a) + usize::from(self.op == Op::Bind) + self.b.as_ref().map_or(0, sent)
    }

    /// The wire form. Fields longer than [`Request::parse`] takes are cut
    /// to what it refuses, so a bad request is refused, never altered.
    pub fn emit(&self) -> Vec<u8> {
        let (tag, nums, blob1, blob2): (u8, [u64; 4], &[u8], &[u8]) = match &self.op {
            Op::Open {
                flags,
                mode,
                resolve,
                strict,
            } => (1, [*flags, *mode, *resolve, u64::from(*strict)], &[], &[]),
            Op::Mkdir { mode } => (2, [u64::from(*mode), 0, 0, 0], &[], &[]),
            Op::Mknod { mode, dev } => (3, [u64::from(*mode), *dev, 0, 0], &[], &[]),
            Op::Unlink { flags } => (4, [u64::from(*flags), 0, 0, 0], &[], &[]),
            Op::Rename { flags } => (5, [u64::from(*flags), 0, 0, 0], &[], &[]),
            Op::Link { flags } => (6, [u64::from(*flags), 0, 0, 0], &[], &[]),
            Op::Symlink { target } => (7, [0; 4], target, &[]),
            Op::Chmod { mode, flags } => (8, [u64::from(*mode), u64::from(*flags), 0, 0], &[], &[]),
            Op::Chown { uid, gid, flags } => (
                9,
                [u64::from(*uid), u64::from(*gid), u64::from(*flags), 0],
                &[],
                &[],
            ),
            Op::Truncate { len } => (10, [*len as u64, 0, 0, 0], &[], &[]),
            Op::Utimes { times, flags } => {
                let t = times.unwrap_or([(0, 0); 2]);
                // The flags word carries bit 63 when times were given.
                let given = if times.is_some() { 1u64 << 63 } else { 0 };
                let nsecs = u64::from(t[0].1 as u32) | (u64::from(t[1].1 as u32) << 32);
                (
                    11,
                    [
                        t[0].0 as u64,
                        t[1].0 as u64,
                        nsecs,
                        u64::from(*flags) | given,
                    ],
                    &[],
                    &[],
                )
            }
            Op::SetXattr {
                name,
                value,
                xflags,
                flags,
            } => (
                12,
                [u64::from(*xflags), u64::from(*flags), 0, 0],
                name,
                value,
            ),
            Op::RemoveXattr { name, flags } => (13, [u64::from(*flags), 0, 0, 0], name, &[]),
            Op::Access { mode, flags } => {
                (14, [u64::from(*mode), u64::from(*flags), 0, 0], &[], &[])
            }
            Op::Bind => (15, [0; 4], &[], &[]),
        };
        let mut out = Vec::with_capacity(64 + self.a.path.len() + blob1.len() + blob2.len());
        out.push(VERSION);
        out.push(tag);
        out.extend_from_slice(&self.tid.to_le_bytes());
        put_path(&mut out, &self.a);
        match &self.b {
            Some(b) => {
                out.push(1);
                put_path(&mut out, b);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.cwd.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.cwd);
        for n in nums {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&(blob1.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        out.extend_from_slice(blob1);
        out.extend_from_slice(&(blob2.len() as u32).to_le_bytes());
        out.extend_from_slice(blob2);
        out
    }

    /// Parses one request that came with `fds` descriptors.
    pub fn parse(bytes: &[u8], fds: usize) -> Result<Request, Malformed> {
        if bytes.len() > MAX_REQUEST {
            return Err(Malformed::Length);
        }
        let mut r = Reader { buf: bytes };
        if r.u8()? != VERSION {
            return Err(Malformed::Tag);
        }
        let tag = r.u8()?;
        let tid = r.u32()?;
        let a = r.path()?;
        let b = match r.u8()? {
            0 => None,
            1 => Some(r.path()?),
            _ => return Err(Malformed::Tag),
        };
        let cwd_len = usize::from(r.u16()?);
        let cwd = r.bytes(cwd_len, PATH_MAX, false)?;
        let n = [r.u64()?, r.u64()?, r.u64()?, r.u64()?];
        let len1 = usize::from(r.u16()?);
        let blob1 = r.bytes(len1, PATH_MAX, false)?;
        let len2 = r.u32()? as usize;
        let blob2 = r.bytes(len2, XATTR_SIZE_MAX, true)?;
        if !r.buf.is_empty() {
            return Err(Malformed::Length);
        }
        let small = |v: u64| u32::try_from(v).map_err(|_| Malformed::Field);
        let no_blobs = || {
            if blob1.is_empty() && blob2.is_empty() {
                Ok(())
            } else {
                Err(Malformed::Field)
            }
        };
        let op = match tag {
            1 => {
                no_blobs()?;
                if n[3] > 1 {
                    return Err(Malformed::Field);
                }
                Op::Open {
                    flags: n[0],
                    mode: n[1],
                    resolve: n[2],
                    strict: n[3] == 1,
                }
            }
            2 => Op::Mkdir { mode: small(n[0])? },
            3 => Op::Mknod {
                mode: small(n[0])?,
                dev: n[1],
            },
            4 => Op::Unlink {
                flags: small(n[0])?,
            },
            5 => Op::Rename {
                flags: small(n[0])?,
            },
            6 => Op::Link {
                flags: small(n[0])?,
            },
            7 => Op::Symlink {
                target: blob1.clone(),
            },
            8 => Op::Chmod {
                mode: small(n[0])?,
                flags: small(n[1])?,
            },
            9 => Op::Chown {
                uid: small(n[0])?,
                gid: small(n[1])?,
                flags: small(n[2])?,
            },
            10 => Op::Truncate { len: n[0] as i64 },
            11 => {
                let given = n[3] & (1 << 63) != 0;
                let flags = small(n[3] & !(1 << 63))?;
                let times = given.then_some([
                    (n[0] as i64, i64::from(n[2] as u32 as i32)),
                    (n[1] as i64, i64::from((n[2] >> 32) as u32 as i32)),
                ]);
                Op::Utimes { times, flags }
            }
            12 => {
                if blob1.is_empty() || blob1.len() > XATTR_NAME_MAX {
                    return Err(Malformed::Field);
                }
                Op::SetXattr {
                    name: blob1.clone(),
                    value: blob2.clone(),
                    xflags: small(n[0])?,
                    flags: small(n[1])?,
                }
            }
            13 => {
                if blob1.is_empty() || blob1.len() > XATTR_NAME_MAX || !blob2.is_empty() {
                    return Err(Malformed::Field);
                }
                Op::RemoveXattr {
                    name: blob1.clone(),
                    flags: small(n[0])?,
                }
            }
            14 => Op::Access {
                mode: small(n[0])?,
                flags: small(n[1])?,
            },
            15 => Op::Bind,
            _ => return Err(Malformed::Tag),
        };
        // Only the ops that carry blobs may have them.
        if !matches!(
            op,
            Op::Symlink { .. } | Op::SetXattr { .. } | Op::RemoveXattr { .. }
        ) {
            no_blobs()?;
        }
        if matches!(op, Op::Symlink { .. }) && !blob2.is_empty() {
            return Err(Malformed::Field);
        }
        if op.two_paths() != b.is_some() {
            return Err(Malformed::Field);
        }
        let req = Request { op, tid, a, b, cwd };
        if req.fds() != fds {
            return Err(Malformed::Descriptors);
        }
        Ok(req)
    }
}

/// The Gofer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// The call returns this value.
    Value(i64),
    /// The call returns the descriptor sent with the response.
    Fd,
    /// The call fails with this errno.
    Errno(i32),
    /// The path leads out of the Gofer's tree (into the guest's own /proc,
    /// /sys, a magic link, a descriptor that is not a file in the tree):
    /// the guest's kernel answers it natively, on its read-only view.
    Native,
}

impl Response {
    pub fn emit(self) -> [u8; RESPONSE_LEN] {
        let (tag, v) = match self {
            Response::Value(v) => (0, v),
            Response::Fd => (1, 0),
            Response::Errno(e) => (2, i64::from(e)),
            Response::Native => (3, 0),
        };
        let mut out = [0u8; RESPONSE_LEN];
        out[0] = tag;
        out[1..].copy_from_slice(&v.to_le_bytes());
        out
    }

    /// Parses a response that came with `fds` descriptors.
    pub fn parse(bytes: &[u8], fds: usize) -> Result<Response, Malformed> {
        if bytes.len() != RESPONSE_LEN {
            return Err(Malformed::Length);
        }
        let v = i64::from_le_bytes(bytes[1..].try_into().map_err(|_| Malformed::Length)?);
        let r = match bytes[0] {
            0 => Response::Value(v),
            1 => Response::Fd,
            2 => match i32::try_from(v) {
                Ok(e) if (1..4096).contains(&e) => Response::Errno(e),
                _ => return Err(Malformed::Field),
            },
            3 => Response::Native,
            _ => return Err(Malformed::Tag),
        };
        if fds != usize::from(r == Response::Fd) {
            return Err(Malformed::Descriptors);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(base: Base, p: &str) -> PathArg {
        PathArg {
            base,
            path: p.as_bytes().to_vec(),
        }
    }

    fn samples() -> Vec<Request> {
        let one = |op| Request {
            op,
            tid: 42,
            a: path(Base::Cwd, "a/b"),
            b: None,
            cwd: b"/home/x".to_vec(),
        };
        let two = |op| Request {
            op,
            tid: 7,
            a: path(Base::Fd, "x"),
            b: Some(path(Base::Cwd, "/y")),
            cwd: Vec::new(),
        };
        vec![
            one(Op::Open {
                flags: 0o101,
                mode: 0o644,
                resolve: 0x10,
                strict: true,
            }),
            one(Op::Mkdir { mode: 0o755 }),
            one(Op::Mknod {
                mode: 0o10644,
                dev: 0,
            }),
            one(Op::Unlink { flags: 0x200 }),
            two(Op::Rename { flags: 1 }),
            two(Op::Link { flags: 0x400 }),
            one(Op::Symlink {
                target: b"/etc/passwd".to_vec(),
            }),
            one(Op::Chmod {
                mode: 0o600,
                flags: 0x100,
            }),
            one(Op::Chown {
                uid: 1000,
                gid: u32::MAX,
                flags: 0,
            }),
            one(Op::Truncate { len: -1 }),
            one(Op::Utimes {
                times: None,
                flags: 0,
            }),
            one(Op::Utimes {
                times: Some([(-5, (1 << 30) - 1), (7, (1 << 30) - 2)]),
                flags: 0x100,
            }),
            one(Op::SetXattr {
                name: b"user.k".to_vec(),
                value: vec![0, 1, 2],
                xflags: 1,
                flags: 0,
            }),
            one(Op::RemoveXattr {
                name: b"user.k".to_vec(),
                flags: 0x100,
            }),
            one(Op::Access { mode: 2, flags: 0 }),
        ]
    }

    #[test]
    fn requests_round_trip() {
        for req in samples() {
            let bytes = req.emit();
            assert_eq!(
                Request::parse(&bytes, req.fds()),
                Ok(req.clone()),
                "{req:?}"
            );
        }
    }

    #[test]
    fn a_magic_path_round_trips() {
        let req = Request {
            op: Op::Chmod {
                mode: 0o755,
                flags: 0,
            },
            tid: 9,
            a: PathArg {
                base: Base::Magic,
                path: Vec::new(),
            },
            b: None,
            cwd: Vec::new(),
        };
        assert_eq!(req.fds(), 1);
        assert_eq!(Request::parse(&req.emit(), 1), Ok(req));
    }

    #[test]
    fn a_bind_carries_its_socket() {
        let bind = Request {
            op: Op::Bind,
            tid: 1,
            a: path(Base::Fd, "s"),
            b: None,
            cwd: Vec::new(),
        };
        assert_eq!(bind.fds(), 2);
        assert_eq!(Request::parse(&bind.emit(), 2), Ok(bind.clone()));
        assert_eq!(Request::parse(&bind.emit(), 1), Err(Malformed::Descriptors));
    }

    #[test]
    fn responses_round_trip() {
        for (r, fds) in [
            (Response::Value(-3), 0),
            (Response::Fd, 1),
            (Response::Errno(libc::ENOENT), 0),
            (Response::Native, 0),
        ] {
            assert_eq!(Response::parse(&r.emit(), fds), Ok(r));
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        for req in samples() {
            let bytes = req.emit();
            for cut in 0..bytes.len() {
                assert!(Request::parse(&bytes[..cut], req.fds()).is_err());
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(Request::parse(&long, req.fds()), Err(Malformed::Length));
        }
    }

    #[test]
    fn malformed_requests_are_refused() {
        let req = &samples()[0];
        let good = req.emit();
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(Request::parse(&bad, 0), Err(Malformed::Tag));
        let mut bad = good.clone();
        bad[1] = 99;
        assert_eq!(Request::parse(&bad, 0), Err(Malformed::Tag));
        // A NUL inside a path.
        let mut with_nul = req.clone();
        with_nul.a.path = b"a\0b".to_vec();
        assert_eq!(Request::parse(&with_nul.emit(), 0), Err(Malformed::Field));
        // Too long a path.
        let mut long = req.clone();
        long.a.path = vec![b'a'; PATH_MAX + 1];
        assert!(Request::parse(&long.emit(), 0).is_err());
        // A descriptor too many, or missing.
        assert_eq!(Request::parse(&good, 1), Err(Malformed::Descriptors));
        let rename = &samples()[4];
        assert_eq!(
            Request::parse(&rename.emit(), 0),
            Err(Malformed::Descriptors)
        );
        // rename without its second path.
        let mut half = rename.clone();
        half.b = None;
        assert_eq!(Request::parse(&half.emit(), 1), Err(Malformed::Field));
        // A magic base with a path.
        let mut magic = req.clone();
        magic.a.base = Base::Magic;
        assert_eq!(Request::parse(&magic.emit(), 1), Err(Malformed::Field));
        magic.a.path.clear();
        assert_eq!(Request::parse(&magic.emit(), 1), Ok(magic.clone()));
        // A mode that does not fit.
        let mut bytes = samples()[1].emit();
        let at = bytes.len() - 6 - 32;
        assert_eq!(
            Request::parse(&bytes, 0).unwrap().op,
            Op::Mkdir { mode: 0o755 }
        );
        bytes[at + 7] = 1;
        assert_eq!(Request::parse(&bytes, 0), Err(Malformed::Field));
        // An empty xattr name.
        let mut x = samples()[12].clone();
        if let Op::SetXattr { name, .. } = &mut x.op {
            name.clear();
        }
        assert_eq!(Request::parse(&x.emit(), 0), Err(Malformed::Field));
    }

    #[test]
    fn malformed_responses_are_refused() {
        assert!(Response::parse(&[0; 8], 0).is_err());
        assert!(Response::parse(&Response::Fd.emit(), 0).is_err());
        assert!(Response::parse(&Response::Value(1).emit(), 1).is_err());
        let mut bad = Response::Errno(1).emit();
        bad[1..].copy_from_slice(&(-1i64).to_le_bytes());
        assert!(Response::parse(&bad, 0).is_err());
        let mut bad = Response::Native.emit();
        bad[0] = 9;
        assert!(Response::parse(&bad, 0).is_err());
    }
}
