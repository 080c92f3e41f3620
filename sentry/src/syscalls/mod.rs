//! Handlers of the trapped calls. Each takes the notification, reads what it
//! needs from guest memory once, and returns what to answer.
//!
//! A descriptor that is not one of our pair ends (an AF_UNIX socket of the
//! guest's own, a file) continues natively: the kernel then answers exactly
//! as it would without us, and the guest can reach nothing through it that it
//! could not reach anyway.

/// Unwraps one step of a handler whose `Err` is already the answer.
macro_rules! step {
    ($e:expr) => {
        match $e {
            Ok(x) => x,
            Err(outcome) => return outcome,
        }
    };
}

mod files;
mod io;
mod opts;
mod socket;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::abi::MsgHdr;
use crate::errno::Errno;
use crate::gsock::GKey;
use crate::sentry::{Outcome, Sentry};
use crate::sys::{Notif, Reply};

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `sizeof(struct sockaddr_storage)`: the longest address a call may pass.
const SOCKADDR_MAX: u64 = 128;

/// A parked call's continuation: what its handler resolved and decoded
/// before the call had to wait. It resumes from here, without resolving
/// its descriptor or reading its arguments from guest memory again.
#[derive(Debug)]
pub struct Resume {
    /// The socket.
    pub key: GKey,
    /// The copy of the guest's descriptor the call named.
    file: OwnedFd,
    /// The arguments, decoded.
    args: Args,
}

/// A blocked call's decoded arguments.
#[derive(Debug, Default)]
enum Args {
    /// Nothing beyond the registers (accept, recvfrom).
    #[default]
    None,
    /// `connect`'s address.
    Connect(SocketAddr),
    /// A send's payload and destination (sendto, sendmsg, the first
    /// message of sendmmsg).
    Send {
        data: Vec<u8>,
        to: Option<SocketAddr>,
        /// The datagram's own hop limit and class (`sendmsg`'s control
        /// messages).
        marks: netstack::IpMarks,
    },
    /// The `msghdr` of recvmsg (the first one of recvmmsg).
    Recv(MsgHdr),
    /// `bind`'s address.
    Bind(SocketAddr),
}

/// Handles one notification; `resume` continues a parked or deferred one.
pub fn handle(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Outcome {
    if n.arch != AUDIT_ARCH_X86_64 {
        return Outcome::Reply(Reply::Errno(Errno::ENOSYS));
    }
    let r = resume;
    match n.nr {
        libc::SYS_socket => socket::socket(s, n),
        libc::SYS_bind => match files::bind_unix(s, n) {
            Some(done) => done,
            None => socket::bind(s, n, r),
        },
        libc::SYS_listen => socket::listen(s, n, r),
        libc::SYS_connect => socket::connect(s, n, r),
        libc::SYS_accept => socket::accept(s, n, 0, r),
        libc::SYS_accept4 => socket::accept(s, n, n.args[3] as i32, r),
        libc::SYS_shutdown => socket::shutdown(s, n),
        libc::SYS_getsockname => socket::name(s, n, false),
        libc::SYS_getpeername => socket::name(s, n, true),
        libc::SYS_getsockopt => opts::getsockopt(s, n),
        libc::SYS_setsockopt => opts::setsockopt(s, n),
        libc::SYS_ioctl => opts::ioctl(s, n),
        libc::SYS_sendto => io::sendto(s, n, r),
        libc::SYS_recvfrom => io::recvfrom(s, n, r),
        libc::SYS_sendmsg => io::sendmsg(s, n, r),
        libc::SYS_recvmsg => io::recvmsg(s, n, r),
        libc::SYS_sendmmsg => io::sendmmsg(s, n, r),
        libc::SYS_recvmmsg => io::recvmmsg(s, n, r),
        nr if files::CALLS.contains(&nr) => files::handle(s, n),
        // The filter traps nothing else; answer as a kernel without the call would.
        _ => Outcome::Reply(Reply::Errno(Errno::ENOSYS)),
    }
}

/// The socket a call names, resolved now or carried by its continuation.
#[derive(Debug)]
struct Target {
    /// The copy of the guest's descriptor.
    file: OwnedFd,
    /// Resumed after it blocked.
    resumed: bool,
    /// The arguments decoded before it blocked.
    args: Args,
}

impl Target {
    /// The descriptor's O_NONBLOCK (asked only by calls that may block). A
    /// resumed call blocks whatever the flag says now, as on Linux.
    fn nonblock(&self) -> bool {
        !self.resumed
            && nix::fcntl::fcntl(&self.file, nix::fcntl::FcntlArg::F_GETFL)
                .is_ok_and(|f| f & libc::O_NONBLOCK != 0)
    }

    /// The arguments decoded before the call blocked, when it did.
    fn take_args(&mut self) -> Args {
        std::mem::take(&mut self.args)
    }

    /// Tries the call again after the event loop's next round (which reads
    /// the guest's latest closes), from `args`.
    fn defer(self, key: GKey, args: Args) -> Outcome {
        Outcome::Defer(Box::new(Resume {
            key,
            file: self.file,
            args,
        }))
    }

    /// Blocks the call on `key` until the socket changes or `timeout`
    /// passes; it resumes from `args`.
    fn park(self, key: GKey, timeout: Option<Duration>, args: Args) -> Outcome {
        Outcome::Park(
            Box::new(Resume {
                key,
                file: self.file,
                args,
            }),
            timeout,
        )
    }
}

/// Resolves the call's first argument; `Err(outcome)` when the call is not
/// ours to serve (continue natively) or the descriptor is bad.
fn ours(s: &mut Sentry, n: &Notif) -> Result<(GKey, Target), Outcome> {
    match s.resolve(n, n.args[0]) {
        Ok(r) => match r.key {
            Some(k) => Ok((
                k,
                Target {
                    file: r.file,
                    resumed: false,
                    args: Args::None,
                },
            )),
            None => Err(Outcome::Reply(Reply::Continue)),
        },
        Err(e) => Err(Outcome::Reply(Reply::Errno(e))),
    }
}

/// A blocking call's socket: from its continuation when it resumes (a
/// socket whose record went meanwhile is a bad descriptor), resolved
/// otherwise.
fn target(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Result<(GKey, Target), Outcome> {
    let Some(r) = resume else {
        return ours(s, n);
    };
    if s.socks.get(r.key).is_none() {
        return Err(Outcome::Reply(Reply::Errno(Errno::EBADF)));
    }
    Ok((
        r.key,
        Target {
            file: r.file,
            resumed: true,
            args: r.args,
        },
    ))
}

/// A call that returns 0, or the errno of the write that failed.
fn done(r: Result<(), Errno>) -> Outcome {
    r.map(|()| 0).into()
}

fn errno(e: Errno) -> Outcome {
    Outcome::Reply(Reply::Errno(e))
}

fn value(v: i64) -> Outcome {
    Outcome::Reply(Reply::Value(v))
}

fn net(e: netstack::NetError) -> Outcome {
    errno(crate::errno::errno(e))
}

impl Sentry {
    /// Reads a socket address argument (`move_addr_to_kernel`).
    pub(crate) fn read_sockaddr(
        &mut self,
        n: &Notif,
        ptr: u64,
        len: u64,
    ) -> Result<Vec<u8>, Errno> {
        let len = len as i64 as i32;
        if len < 0 || len as u64 > SOCKADDR_MAX {
            return Err(Errno::EINVAL);
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        self.rd(n, ptr, len as usize)
    }

    /// Writes an address to `ptr`, with its length through `len_ptr`
    /// (`move_addr_to_user`): truncated to the caller's room, full length reported.
    pub(crate) fn write_sockaddr(
        &mut self,
        n: &Notif,
        ptr: u64,
        len_ptr: u64,
        addr: &[u8],
    ) -> Result<(), Errno> {
        if len_ptr == 0 {
            return Err(Errno::EFAULT);
        }
        let room = i32::from_ne_bytes(self.rd_array::<4>(n, len_ptr)?);
        if room < 0 {
            return Err(Errno::EINVAL);
        }
        let take = addr.len().min(room as usize);
        let len = (addr.len() as u32).to_ne_bytes();
        self.wr_parts(n, &[(ptr, &addr[..take]), (len_ptr, &len)])
    }

    /// Writes several ranges of guest memory in order, in one call.
    pub(crate) fn wr_parts(&mut self, n: &Notif, parts: &[(u64, &[u8])]) -> Result<(), Errno> {
        self.mem.write_parts(self.listeners.of(n), n, parts)
    }

    /// Reads `len` bytes of guest memory.
    pub(crate) fn rd(&mut self, n: &Notif, ptr: u64, len: usize) -> Result<Vec<u8>, Errno> {
        self.mem.read(self.listeners.of(n), n, ptr, len)
    }

    /// Reads a fixed number of bytes of guest memory.
    pub(crate) fn rd_array<const N: usize>(
        &mut self,
        n: &Notif,
        ptr: u64,
    ) -> Result<[u8; N], Errno> {
        self.mem.read_array(self.listeners.of(n), n, ptr)
    }

    /// Writes guest memory.
    pub(crate) fn wr(&mut self, n: &Notif, ptr: u64, data: &[u8]) -> Result<(), Errno> {
        self.mem.write(self.listeners.of(n), n, ptr, data)
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

    use super::*;

    fn target(resumed: bool) -> Target {
        let (a, _b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        Target {
            file: a,
            resumed,
            args: Args::Recv(MsgHdr::default()),
        }
    }

    #[test]
    fn a_resumed_call_blocks_whatever_its_descriptor_says_now() {
        assert!(target(false).nonblock());
        assert!(!target(true).nonblock());
    }

    #[test]
    fn arguments_are_taken_once() {
        let mut t = target(true);
        assert!(matches!(t.take_args(), Args::Recv(_)));
        assert!(matches!(t.take_args(), Args::None));
    }
}
