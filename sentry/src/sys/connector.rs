//! The connector's process: a child forked from the Sentry before it
//! confines itself, which makes the guest's TCP sockets before they connect
//! (the Sentry's own filter allows no `socket` of AF_UNIX).
//!
//! It lives in a network namespace of its own, empty, and binds one
//! listener there to the abstract address [`LISTENER_NAME`]; a socket's
//! abstract addresses are looked up in the namespace it was made in, so
//! only the sockets the connector makes reach that listener, and nothing
//! else can. It hands the listener to the Sentry and then, under a filter
//! of its own, makes unconnected AF_UNIX stream sockets on request (a TCP
//! socket the guest has not connected is one: `recv` fails, `poll` says
//! `POLLOUT|POLLHUP`). The Sentry connects them to the listener itself.
//!
//! Protocol, over a SOCK_SEQPACKET pair, each record 4 bytes:
//! - first, from the connector: a native-endian errno (0 when it is ready)
//!   with the listener as `SCM_RIGHTS`;
//! - request `[b'n', COUNT, NONBLOCK, 0]`: answer errno, and on success
//!   COUNT (at most [`MAX_BATCH`]) new sockets as `SCM_RIGHTS`, then a
//!   second answer 0 once the connector has closed its own copies (until
//!   then a socket the guest closes would stay open, its port taken).
//!
//! The child runs in a copy of a process that has other threads, so it
//! makes system calls only: no allocation, no lock. It dies with the
//! Sentry (its end of the pair reads end of file; `PR_SET_PDEATHSIG`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Most sockets one request may ask for.
pub const MAX_BATCH: usize = 16;

/// The listener's abstract name (after the leading NUL). One byte, so that
/// its address is 4 bytes long, the only length the Sentry's filter lets
/// `connect` take where it makes no host sockets (see `crate::filter`).
pub const LISTENER_NAME: &[u8] = b"L";

/// Forks the connector; `end` is its end of the pair, `bpf` its filter.
/// Returns the child's pid.
pub fn spawn(end: OwnedFd, bpf: &[u8]) -> io::Result<i32> {
    super::spawn_helper(end, bpf, child)
}

fn exit(code: i32) -> ! {
    // SAFETY: ends this process.
    unsafe { libc::_exit(code) }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn child(fd: RawFd, bpf: &[u8]) -> ! {
    // SAFETY: a plain system call with a constant argument.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        send_reply(fd, errno(), &[]);
        exit(1);
    }
    // SAFETY: a plain system call with constant arguments.
    let listener =
        unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if listener < 0 {
        send_reply(fd, errno(), &[]);
        exit(1);
    }
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays NUL: an abstract name.
    for (i, &b) in LISTENER_NAME.iter().enumerate() {
        addr.sun_path[1 + i] = b as libc::c_char;
    }
    let len = (size_of::<libc::sa_family_t>() + 1 + LISTENER_NAME.len()) as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un, longer than the length given.
    let bound = unsafe { libc::bind(listener, (&raw const addr).cast(), len) };
    // SAFETY: a plain system call.
    if bound != 0 || unsafe { libc::listen(listener, 8) } != 0 {
        send_reply(fd, errno(), &[]);
        exit(1);
    }
    if !send_reply(fd, 0, &[listener]) {
        exit(1);
    }
    // SAFETY: ours; the Sentry holds its own copy now.
    unsafe { libc::close(listener) };
    // SAFETY: a plain system call with constant arguments.
    let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if nnp != 0 || super::seccomp_load(bpf, 0).is_err() {
        exit(1);
    }
    loop {
        let mut req = [0u8; 4];
        let mut passed = [-1; 1];
        let n = recv_request(fd, &mut req, &mut passed);
        if n <= 0 {
            exit(0);
        }
        match req {
            [b'n', count, nonblock, _] => {
                let count = usize::from(count).min(MAX_BATCH);
                let mut made = [-1; MAX_BATCH];
                let mut flags = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
                if nonblock != 0 {
                    flags |= libc::SOCK_NONBLOCK;
                }
                let mut err = 0;
                for slot in made.iter_mut().take(count) {
                    // SAFETY: a plain system call.
                    let s = unsafe { libc::socket(libc::AF_UNIX, flags, 0) };
                    if s < 0 {
                        err = errno();
                        break;
                    }
                    *slot = s;
                }
                let got = made.iter().take_while(|&&s| s >= 0).count();
                if err != 0 || got == 0 {
                    send_reply(fd, if err != 0 { err } else { libc::EINVAL }, &[]);
                } else {
                    send_reply(fd, 0, &made[..got]);
                }
                for &s in &made[..got] {
                    // SAFETY: ours; the Sentry holds its own copies now.
                    unsafe { libc::close(s) };
                }
                if err == 0 && got > 0 {
                    // Only now is the guest's close of one of them the
                    // last: the Sentry waits for this before it uses them.
                    send_reply(fd, 0, &[]);
                }
            }
            _ => {
                send_reply(fd, libc::EINVAL, &[]);
            }
        }
        if passed[0] >= 0 {
            // SAFETY: the descriptor passed to us; ours to close.
            unsafe { libc::close(passed[0]) };
        }
    }
}

/// Sends a 4-byte errno with `fds` attached; whether it went.
fn send_reply(fd: RawFd, err: i32, fds: &[RawFd]) -> bool {
    send_record(fd, &err.to_ne_bytes(), fds).is_ok()
}

/// A control message of up to [`MAX_BATCH`] descriptors, laid out as the
/// kernel reads and writes one: the header, then the descriptors (the
/// header's size is a multiple of the alignment a control message needs,
/// so they follow it at once).
#[repr(C)]
struct Rights {
    hdr: libc::cmsghdr,
    fds: [RawFd; MAX_BATCH],
}

const _: () = assert!(size_of::<libc::cmsghdr>().is_multiple_of(size_of::<usize>()));

impl Rights {
    fn empty() -> Rights {
        Rights {
            hdr: libc::cmsghdr {
                cmsg_len: 0,
                cmsg_level: 0,
                cmsg_type: 0,
            },
            fds: [-1; MAX_BATCH],
        }
    }

    /// `CMSG_LEN` of `n` descriptors.
    fn len(n: usize) -> usize {
        size_of::<libc::cmsghdr>() + n * size_of::<RawFd>()
    }
}

/// Sends one record with `fds` (at most [`MAX_BATCH`]) as `SCM_RIGHTS`.
pub fn send_record(fd: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_BATCH {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut rights = Rights::empty();
    rights.hdr.cmsg_len = Rights::len(fds.len());
    rights.hdr.cmsg_level = libc::SOL_SOCKET;
    rights.hdr.cmsg_type = libc::SCM_RIGHTS;
    rights.fds[..fds.len()].copy_from_slice(fds);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = (&raw mut rights).cast();
        // The space of the last (only) message: its length, aligned.
        msg.msg_controllen = Rights::len(fds.len()).next_multiple_of(size_of::<usize>());
    }
    // SAFETY: `msg` points to live buffers (`data`, `rights`) of the
    // lengths it states for the call; the kernel only reads them.
    let rc = unsafe { libc::sendmsg(fd, &raw const msg, libc::MSG_NOSIGNAL) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Receives one record into `data` and up to `fds.len()` descriptors
/// (the rest are closed); the record's length, or a negative value on
/// error or end of file. Unused slots of `fds` stay -1.
fn recv_request(fd: RawFd, data: &mut [u8], fds: &mut [RawFd]) -> isize {
    let mut got = [-1; MAX_BATCH];
    let n = recv_raw(fd, data, &mut got);
    let mut kept = 0;
    for &f in got.iter().filter(|&&f| f >= 0) {
        if kept < fds.len() {
            fds[kept] = f;
            kept += 1;
        } else {
            // SAFETY: received by us and not kept: ours to close.
            unsafe { libc::close(f) };
        }
    }
    n
}

/// `recvmsg` of one record and its descriptors (close-on-exec), with no
/// allocation; the count of bytes (negative on error).
fn recv_raw(fd: RawFd, data: &mut [u8], fds: &mut [RawFd; MAX_BATCH]) -> isize {
    let mut rights = Rights::empty();
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&raw mut rights).cast();
    msg.msg_controllen = size_of::<Rights>();
    // SAFETY: `msg` points to writable buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 || msg.msg_controllen < Rights::len(0) {
        return n;
    }
    // Only descriptors are ever sent on this pair; the kernel installs no
    // more than fit (MSG_CTRUNC), and the header says how many.
    if rights.hdr.cmsg_level == libc::SOL_SOCKET && rights.hdr.cmsg_type == libc::SCM_RIGHTS {
        let count = (rights.hdr.cmsg_len.saturating_sub(Rights::len(0)) / size_of::<RawFd>())
            .min(MAX_BATCH);
        fds[..count].copy_from_slice(&rights.fds[..count]);
    }
    n
}

/// The Sentry's side: receives one reply, its errno and descriptors.
pub fn recv_reply(fd: RawFd) -> io::Result<(i32, Vec<OwnedFd>)> {
    let mut data = [0u8; 4];
    let mut fds = [-1; MAX_BATCH];
    let n = recv_raw(fd, &mut data, &mut fds);
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let owned = fds
        .iter()
        .filter(|&&f| f >= 0)
        // SAFETY: each was just received by this process and is owned by nobody else.
        .map(|&f| unsafe { OwnedFd::from_raw_fd(f) })
        .collect();
    if n == 0 {
        return Err(io::Error::from_raw_os_error(libc::EPIPE));
    }
    if n != 4 {
        return Err(io::Error::from_raw_os_error(libc::EPROTO));
    }
    Ok((i32::from_ne_bytes(data), owned))
}
