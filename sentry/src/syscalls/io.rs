//! sendto, recvfrom, sendmsg, recvmsg, sendmmsg, recvmmsg.
//!
//! On a TCP socket these continue natively on the pair end (the filter
//! cannot tell a TCP descriptor from any other), except `sendto` with an
//! address, which a stream pair would refuse. On datagram sockets the
//! Sentry moves payloads and addresses itself.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use netstack::{IpMarks, NetError, RecvFlags, SocketId};
use nix::errno::Errno as NixErrno;
use nix::sys::socket::{MsgFlags, recv, send};

use super::{Args, Resume, Target, errno, target, value};
use crate::abi::{self, MsgHdr};
use crate::errno::{CALLER_GONE, Errno};
use crate::gsock::{GKey, Kind};
use crate::sentry::{Outcome, Sentry};
use crate::sys::{Notif, Reply};

/// The largest datagram payload the Sentry will gather from guest memory.
const MAX_DGRAM: usize = 65536;

/// The consuming half of a receive whose data was only peeked at, done
/// once the copy into guest memory succeeded: a signal that cancels the
/// call before then loses nothing.
#[derive(Debug)]
enum Commit {
    /// Drop the datagram at the head of the guest's end (and its address
    /// record, when one was matched).
    Pair { key: GKey, matched: bool },
    /// Drop the datagram at the head of the stack's queue.
    Stack { id: SocketId },
}

/// A datagram taken for the guest.
struct Got {
    data: Vec<u8>,
    len: usize,
    from: Option<SocketAddr>,
    to: Option<IpAddr>,
    marks: IpMarks,
    commit: Option<Commit>,
}

pub(super) fn sendto(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Outcome {
    let (key, mut r) = step!(target(s, n, resume));
    let flags = n.args[3] as i32;
    let decoded = r.take_args();
    let nonblock = r.nonblock() || flags & libc::MSG_DONTWAIT != 0;
    let tcp = s.socks[key].kind == Kind::Tcp;
    let (data, to) = match decoded {
        Args::Send { data, to, .. } => (data, to),
        _ => {
            let len = (n.args[2] as usize).min(abi_max(s, key));
            let data = step!(s.rd(n, n.args[1], len).map_err(errno));
            if tcp {
                (data, None)
            } else {
                if flags & libc::MSG_OOB != 0 && s.socks[key].kind != Kind::Netlink {
                    return errno(Errno::EOPNOTSUPP);
                }
                if n.args[4] != 0 && n.args[5] == 0 && s.socks[key].kind != Kind::Netlink {
                    return errno(Errno::EINVAL);
                }
                let to = step!(dgram_dest(s, n, key, n.args[4], n.args[5]).map_err(errno));
                (data, to)
            }
        }
    };
    if tcp {
        if !s.socks[key].is_connected() {
            return errno(Errno::EPIPE);
        }
        // Connected TCP ignores the address: the bytes go the native way.
        return match send(
            r.file.as_raw_fd(),
            &data,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => value(n as i64),
            Err(NixErrno::EAGAIN) if !nonblock => {
                let timeout = s.socks[key].sndtimeo;
                r.park(
                    key,
                    timeout,
                    Args::Send {
                        data,
                        to: None,
                        marks: IpMarks::default(),
                    },
                )
            }
            Err(e) => errno(Errno::from(e)),
        };
    }
    dgram_send(s, key, r, (data, to, IpMarks::default()), nonblock)
}

pub(super) fn recvfrom(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Outcome {
    let (key, r) = step!(target(s, n, resume));
    let flags = n.args[3] as i32;
    if s.socks[key].kind == Kind::Tcp {
        if flags & libc::MSG_TRUNC != 0 {
            return stream_truncating_recv(s, n, key, r, flags);
        }
        // A stream pair reports no address, as TCP does.
        return Outcome::Reply(Reply::Continue);
    }
    let peek = flags & libc::MSG_PEEK != 0;
    let nonblock = r.nonblock() || flags & libc::MSG_DONTWAIT != 0;
    let got = match take(s, key, &r.file, peek) {
        Ok(Some(g)) => g,
        Ok(None) if nonblock => return errno(Errno::EAGAIN),
        Ok(None) => {
            let timeout = s.socks[key].rcvtimeo;
            return r.park(key, timeout, Args::None);
        }
        Err(e) => return errno(e),
    };
    let room = n.args[2] as usize;
    let copied = got.data.len().min(room);
    let mut result = s.wr(n, n.args[1], &got.data[..copied]);
    if result.is_ok() && n.args[4] != 0 {
        let addr = source_bytes(s, key, got.from);
        result = s.write_sockaddr(n, n.args[4], n.args[5], &addr);
    }
    if let Err(e) = result {
        // Linux has dequeued the datagram before the copy fails.
        return fail_consumed(s, e, got.commit, &r.file);
    }
    let ret = if flags & libc::MSG_TRUNC != 0 {
        got.len
    } else {
        copied
    };
    commit_reply(s, Reply::Value(ret as i64), got.commit, &r.file)
}

/// `recv` with `MSG_TRUNC` on a TCP socket: Linux hands over no bytes; it
/// drops up to `len` of them (with `MSG_PEEK`, only counts them) and
/// returns how many. An AF_UNIX stream would copy them, so the filter
/// traps this case and it is done here on the guest's end.
fn stream_truncating_recv(s: &mut Sentry, n: &Notif, key: GKey, r: Target, flags: i32) -> Outcome {
    let len = n.args[2] as usize;
    let peek = flags & libc::MSG_PEEK != 0;
    let nonblock = r.nonblock() || flags & libc::MSG_DONTWAIT != 0;
    let fd = r.file.as_raw_fd();
    // Even for `len` 0, Linux waits for data (or end of file) first.
    let mut first = [0u8; 1];
    match recv(fd, &mut first, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
        // End of file.
        Ok(0) => return value(0),
        Ok(_) => {}
        Err(NixErrno::EAGAIN) if nonblock => return errno(Errno::EAGAIN),
        Err(NixErrno::EAGAIN) => {
            let timeout = s.socks[key].rcvtimeo;
            return r.park(key, timeout, Args::None);
        }
        Err(e) => return errno(Errno::from(e)),
    }
    let held = crate::sys::inq(std::os::fd::AsFd::as_fd(&r.file)).unwrap_or(1);
    let count = len.min(usize::try_from(held).unwrap_or(1).max(1));
    if peek {
        return value(count as i64);
    }
    let mut dropped = 0;
    while dropped < count {
        let chunk = (count - dropped).min(s.scratch.len());
        match recv(fd, &mut s.scratch[..chunk], MsgFlags::MSG_DONTWAIT) {
            Ok(0) | Err(_) => break,
            Ok(k) => dropped += k,
        }
    }
    value(dropped as i64)
}

pub(super) fn sendmsg(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Outcome {
    let (key, mut r) = step!(datagram(s, n, resume));
    let flags = n.args[2] as i32;
    let nonblock = r.nonblock() || flags & libc::MSG_DONTWAIT != 0;
    let msg = match r.take_args() {
        Args::Send { data, to, marks } => (data, to, marks),
        _ => step!(decode_send(s, n, key, n.args[1]).map_err(errno)),
    };
    dgram_send(s, key, r, msg, nonblock)
}

pub(super) fn sendmmsg(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Outcome {
    let (key, mut r) = step!(datagram(s, n, resume));
    let flags = n.args[3] as i32;
    let vlen = (n.args[2] as u32 as usize).min(abi::IOV_MAX);
    let nonblock = r.nonblock() || flags & libc::MSG_DONTWAIT != 0;
    // Resumed: the first message was decoded before the call blocked.
    let mut first = match r.take_args() {
        Args::Send { data, to, marks } => Some((data, to, marks)),
        _ => None,
    };
    let mut sent = 0usize;
    for i in 0..vlen {
        let hdr = n.args[1].wrapping_add((i * abi::MMSGHDR_LEN) as u64);
        let decoded = match first.take() {
            Some(m) => Ok(m),
            None => decode_send(s, n, key, hdr),
        };
        let (data, to, marks) = match decoded {
            Ok(m) => m,
            Err(e) if sent == 0 => return errno(e),
            Err(_) => break,
        };
        match dgram_send_inner(s, key, &data, to, marks, nonblock || sent > 0) {
            Ok(Some(len)) => {
                let at = hdr.wrapping_add(abi::MMSGHDR_LEN_OFF);
                if let Err(e) = s.wr(n, at, &(len as u32).to_ne_bytes()) {
                    return if sent > 0 {
                        value(sent as i64)
                    } else {
                        errno(e)
                    };
                }
                sent += 1;
            }
            Ok(None) if sent == 0 => {
                return if nonblock {
                    errno(Errno::EAGAIN)
                } else {
                    let timeout = s.socks[key].sndtimeo;
                    r.park(key, timeout, Args::Send { data, to, marks })
                };
            }
            Err(e) if sent == 0 => return errno(e),
            Ok(None) | Err(_) => break,
        }
    }
    value(sent as i64)
}

pub(super) fn recvmsg(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Outcome {
    let (key, mut r) = step!(target(s, n, resume));
    let flags = n.args[2] as i32;
    if flags & libc::MSG_ERRQUEUE != 0 {
        // Nothing is ever queued on the error queue.
        return errno(Errno::EAGAIN);
    }
    if s.socks[key].kind == Kind::Tcp {
        return Outcome::Reply(Reply::Continue);
    }
    let nonblock = r.nonblock() || flags & libc::MSG_DONTWAIT != 0;
    let hdr = match r.take_args() {
        Args::Recv(hdr) => hdr,
        _ => step!(read_msghdr(s, n, n.args[1]).map_err(errno)),
    };
    let peek = flags & libc::MSG_PEEK != 0;
    let got = match take(s, key, &r.file, peek) {
        Ok(Some(g)) => g,
        Ok(None) if nonblock => return errno(Errno::EAGAIN),
        Ok(None) => {
            let timeout = s.socks[key].rcvtimeo;
            return r.park(key, timeout, Args::Recv(hdr));
        }
        Err(e) => return errno(e),
    };
    match deliver(s, n, key, n.args[1], &hdr, &got, flags) {
        Ok(ret) => commit_reply(s, Reply::Value(ret as i64), got.commit, &r.file),
        Err(e) => fail_consumed(s, e, got.commit, &r.file),
    }
}

pub(super) fn recvmmsg(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Outcome {
    let (key, mut r) = step!(datagram(s, n, resume));
    let flags = n.args[3] as i32;
    let vlen = (n.args[2] as u32 as usize).min(abi::IOV_MAX);
    let nonblock = r.nonblock() || flags & libc::MSG_DONTWAIT != 0;
    // Resumed: the timeout was checked and the first header read before
    // the call blocked.
    let mut first = match r.take_args() {
        Args::Recv(hdr) => Some(hdr),
        _ => None,
    };
    if first.is_none() && n.args[4] != 0 {
        match s.rd_array::<16>(n, n.args[4]) {
            Err(e) => return errno(e),
            // Linux refuses a timespec that is not one (seconds below zero,
            // nanoseconds out of range) before it receives anything.
            Ok(t) => {
                let (sec, nsec) = (abi::u64_at(&t, 0) as i64, abi::u64_at(&t, 8) as i64);
                if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
                    return errno(Errno::EINVAL);
                }
            }
        }
    }
    let mut done = 0usize;
    for i in 0..vlen {
        let at = n.args[1].wrapping_add((i * abi::MMSGHDR_LEN) as u64);
        let read = match first.take() {
            Some(h) => Ok(h),
            None => read_msghdr(s, n, at),
        };
        let hdr = match read {
            Ok(h) => h,
            Err(e) if done == 0 => return errno(e),
            Err(_) => break,
        };
        // Only the first datagram may wait; later ones take what is there.
        let got = match take(s, key, &r.file, false) {
            Ok(Some(g)) => g,
            Ok(None) if done > 0 => break,
            Ok(None) if nonblock => return errno(Errno::EAGAIN),
            Ok(None) => {
                let timeout = s.socks[key].rcvtimeo;
                return r.park(key, timeout, Args::Recv(hdr));
            }
            Err(e) if done == 0 => return errno(e),
            Err(_) => break,
        };
        // Several datagrams in one answer: each is consumed once it is
        // copied, since the next one is only visible after it. A copy the
        // call's cancellation stopped consumes nothing.
        let delivered = deliver(s, n, key, at, &hdr, &got, flags & !libc::MSG_PEEK);
        if let Err(CALLER_GONE) = delivered {
            return errno(CALLER_GONE);
        }
        if let Some(c) = got.commit.as_ref() {
            apply_commit(s, c, &r.file);
        }
        match delivered {
            Ok(len) => {
                if let Err(e) = s.wr(
                    n,
                    at.wrapping_add(abi::MMSGHDR_LEN_OFF),
                    &(len as u32).to_ne_bytes(),
                ) {
                    return if done > 0 {
                        value(done as i64)
                    } else {
                        errno(e)
                    };
                }
                done += 1;
            }
            Err(e) if done == 0 => return errno(e),
            Err(_) => break,
        }
        if flags & libc::MSG_WAITFORONE != 0 {
            // Later datagrams never wait.
        }
    }
    value(done as i64)
}

/// The call's socket when it is a datagram one; a TCP socket's call runs
/// natively on its stream pair.
fn datagram(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Result<(GKey, Target), Outcome> {
    let (key, r) = target(s, n, resume)?;
    if s.socks[key].kind == Kind::Tcp {
        return Err(Outcome::Reply(Reply::Continue));
    }
    Ok((key, r))
}

/// The largest payload to gather for one send on this socket.
fn abi_max(s: &Sentry, key: GKey) -> usize {
    if s.socks[key].kind == Kind::Tcp {
        crate::mem::MAX_IO
    } else {
        MAX_DGRAM
    }
}

/// Decodes a datagram destination; `None` sends to the connected peer.
fn dgram_dest(
    s: &mut Sentry,
    n: &Notif,
    key: GKey,
    ptr: u64,
    len: u64,
) -> Result<Option<SocketAddr>, Errno> {
    if ptr == 0 || len == 0 {
        return Ok(None);
    }
    let bytes = s.read_sockaddr(n, ptr, len)?;
    if s.socks[key].kind == Kind::Netlink {
        return Ok(None);
    }
    if bytes.len() < 2 {
        return Err(Errno::EINVAL);
    }
    let v6 = s.socks[key].v6;
    let family = i32::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
    if v6 && family == libc::AF_INET6 && bytes.len() < abi::SOCKADDR_IN6_MIN {
        return Err(Errno::EINVAL);
    }
    if !v6 && bytes.len() < abi::SOCKADDR_IN_LEN {
        return Err(Errno::EINVAL);
    }
    if !v6 && family == libc::AF_UNSPEC {
        // Old programs: an IPv4 socket takes AF_UNSPEC as AF_INET.
        let mut b = bytes.clone();
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        return match abi::decode_addr(&b)? {
            abi::GuestAddr::Inet(a) => Ok(Some(a)),
            _ => Err(Errno::EINVAL),
        };
    }
    match abi::decode_addr(&bytes)? {
        abi::GuestAddr::Inet(a) if v6 => Ok(Some(abi::mapped(a))),
        abi::GuestAddr::Inet(a) if a.is_ipv4() => Ok(Some(a)),
        abi::GuestAddr::Unspec => Ok(None),
        abi::GuestAddr::Other(_) if v6 => Err(Errno::EINVAL),
        abi::GuestAddr::Inet(_) | abi::GuestAddr::Other(_) => Err(Errno::EAFNOSUPPORT),
    }
}

/// Sends one datagram, or blocks the call until it can.
fn dgram_send(
    s: &mut Sentry,
    key: GKey,
    r: Target,
    (data, to, marks): (Vec<u8>, Option<SocketAddr>, IpMarks),
    nonblock: bool,
) -> Outcome {
    match dgram_send_inner(s, key, &data, to, marks, nonblock) {
        Ok(Some(n)) => value(n as i64),
        Ok(None) => {
            let timeout = s.socks[key].sndtimeo;
            r.park(key, timeout, Args::Send { data, to, marks })
        }
        Err(e) => errno(e),
    }
}

fn dgram_send_inner(
    s: &mut Sentry,
    key: GKey,
    data: &[u8],
    to: Option<SocketAddr>,
    marks: IpMarks,
    nonblock: bool,
) -> Result<Option<usize>, Errno> {
    if s.socks[key].kind == Kind::Netlink {
        s.netlink_request(key, data);
        return Ok(Some(data.len()));
    }
    let Some(id) = s.stack_id(key) else {
        return Err(Errno::EBADF);
    };
    // Datagrams the guest wrote natively go first.
    s.flush_tx(key);
    let r = s.stack.send_marked(id, data, to, marks);
    match r {
        Ok(n) => Ok(Some(n)),
        Err(NetError::WouldBlock) if nonblock => Err(Errno::EAGAIN),
        Err(NetError::WouldBlock) => Ok(None),
        Err(e) => Err(crate::errno::errno(e)),
    }
}

/// Reads one `struct msghdr` worth of sending: the payload and where it goes.
fn decode_send(
    s: &mut Sentry,
    n: &Notif,
    key: GKey,
    hdr_ptr: u64,
) -> Result<(Vec<u8>, Option<SocketAddr>, IpMarks), Errno> {
    let hdr = read_msghdr(s, n, hdr_ptr)?;
    let mut marks = IpMarks::default();
    if hdr.controllen > 0 {
        // Linux copies the control messages in first (and refuses a bad
        // pointer); a datagram's hop limit and class are taken from them.
        if hdr.controllen > (1 << 16) {
            return Err(Errno::ENOBUFS);
        }
        let control = s.rd(n, hdr.control, hdr.controllen as usize)?;
        if s.socks[key].kind == Kind::Udp {
            marks = abi::send_marks(&control)?;
        }
    }
    let iov = read_iovecs(s, n, &hdr)?;
    let mut data = Vec::new();
    for (base, len) in iov {
        if data.len() + len as usize > MAX_DGRAM {
            return Err(Errno::EMSGSIZE);
        }
        let chunk = s.rd(n, base, len as usize)?;
        data.extend_from_slice(&chunk);
    }
    let to = if hdr.name != 0 && hdr.namelen != 0 {
        dgram_dest(s, n, key, hdr.name, u64::from(hdr.namelen))?
    } else {
        None
    };
    Ok((data, to, marks))
}

fn read_msghdr(s: &mut Sentry, n: &Notif, ptr: u64) -> Result<MsgHdr, Errno> {
    let b = s.rd_array::<{ abi::MSGHDR_LEN }>(n, ptr)?;
    let h = MsgHdr::decode(&b);
    if (h.namelen as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    Ok(h)
}

fn read_iovecs(s: &mut Sentry, n: &Notif, hdr: &MsgHdr) -> Result<Vec<(u64, u64)>, Errno> {
    if hdr.iovlen > abi::IOV_MAX as u64 {
        return Err(Errno::EMSGSIZE);
    }
    if hdr.iovlen == 0 {
        return Ok(Vec::new());
    }
    let raw = s.rd(n, hdr.iov, hdr.iovlen as usize * 16)?;
    let iov = abi::decode_iovecs(&raw);
    let mut total: u64 = 0;
    for &(_, len) in &iov {
        total = total.checked_add(len).ok_or(Errno::EINVAL)?;
        if total > isize::MAX as u64 {
            return Err(Errno::EINVAL);
        }
    }
    Ok(iov)
}

/// Takes the next datagram: from the guest's end first (older), then from
/// the stack. Both are only peeked at; `commit` consumes after the answer.
fn take(s: &mut Sentry, key: GKey, file: &OwnedFd, peek: bool) -> Result<Option<Got>, Errno> {
    let kind = s.socks[key].kind;
    match recv(
        file.as_raw_fd(),
        &mut s.scratch,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
    ) {
        Ok(full) => {
            let data = s.scratch[..full.min(s.scratch.len())].to_vec();
            let found = if kind == Kind::Netlink {
                None
            } else {
                s.match_delivered(key, &data, full, true)
            };
            let commit = (!peek).then_some(Commit::Pair {
                key,
                matched: found.is_some(),
            });
            return Ok(Some(Got {
                data,
                len: full,
                from: found.map(|f| f.0),
                to: found.and_then(|f| f.1),
                marks: found.map(|f| f.2).unwrap_or_default(),
                commit,
            }));
        }
        Err(NixErrno::EAGAIN) => {}
        Err(e) => return Err(Errno::from(e)),
    }
    let Some(id) = s.stack_id(key) else {
        return Ok(None);
    };
    match s
        .stack
        .recv_from(id, &mut s.scratch, RecvFlags { peek: true })
    {
        Ok(d) => Ok(Some(Got {
            data: s.scratch[..d.copied].to_vec(),
            len: d.len,
            from: Some(d.from),
            to: d.to,
            marks: d.marks,
            commit: (!peek).then_some(Commit::Stack { id }),
        })),
        Err(NetError::WouldBlock) => Ok(None),
        Err(e) => Err(crate::errno::errno(e)),
    }
}

/// The sender as the guest's address structure.
fn source_bytes(s: &Sentry, key: GKey, from: Option<SocketAddr>) -> Vec<u8> {
    let g = &s.socks[key];
    match (g.kind, from) {
        (Kind::Netlink, _) => crate::netlink::sockaddr_nl(0).to_vec(),
        (_, Some(a)) => abi::encode_addr(a, g.v6),
        (_, None) => abi::encode_addr(super::socket::unspecified(g.v6), g.v6),
    }
}

/// Copies a datagram into a `msghdr`'s buffers, name, and flags; returns
/// what the call returns.
fn deliver(
    s: &mut Sentry,
    n: &Notif,
    key: GKey,
    hdr_ptr: u64,
    hdr: &MsgHdr,
    got: &Got,
    flags: i32,
) -> Result<usize, Errno> {
    let iov = read_iovecs(s, n, hdr)?;
    let mut off = 0usize;
    for (base, len) in iov {
        if off >= got.data.len() {
            break;
        }
        let take = (len as usize).min(got.data.len() - off);
        s.wr(n, base, &got.data[off..off + take])?;
        off += take;
    }
    if hdr.name != 0 {
        let addr = source_bytes(s, key, got.from);
        let take = addr.len().min(hdr.namelen as usize);
        s.wr(n, hdr.name, &addr[..take])?;
        s.wr(
            n,
            hdr_ptr + abi::MSGHDR_NAMELEN_OFF,
            &(addr.len() as u32).to_ne_bytes(),
        )?;
    } else {
        s.wr(n, hdr_ptr + abi::MSGHDR_NAMELEN_OFF, &0u32.to_ne_bytes())?;
    }
    // Control messages: IP_PKTINFO / IPV6_PKTINFO when asked for.
    let mut out_flags = 0;
    let (cmsgs, all) = control_messages(s, key, got.to, got.marks, hdr.controllen as usize);
    if !all {
        out_flags |= libc::MSG_CTRUNC;
    }
    if !cmsgs.is_empty() {
        s.wr(n, hdr.control, &cmsgs)?;
    }
    s.wr(
        n,
        hdr_ptr + abi::MSGHDR_CONTROLLEN_OFF,
        &(cmsgs.len() as u64).to_ne_bytes(),
    )?;
    if off < got.len {
        out_flags |= libc::MSG_TRUNC;
    }
    s.wr(n, hdr_ptr + abi::MSGHDR_FLAGS_OFF, &out_flags.to_ne_bytes())?;
    Ok(if flags & libc::MSG_TRUNC != 0 {
        got.len
    } else {
        off
    })
}

/// The control messages a datagram carries for this socket's options, as
/// many as fit in `room` bytes; false when one did not fit (MSG_CTRUNC).
fn control_messages(
    s: &Sentry,
    key: GKey,
    to: Option<IpAddr>,
    marks: IpMarks,
    room: usize,
) -> (Vec<u8>, bool) {
    let g = &s.socks[key];
    let on = |level: i32, name: i32| {
        g.extra
            .get(&(level, name))
            .is_some_and(|v| v.len() >= 4 && v[..4] != [0, 0, 0, 0])
    };
    let mut wanted: Vec<(i32, i32, Vec<u8>)> = Vec::new();
    if let Some(to) = to {
        let ifindex = ifindex_of(s, to);
        let v4 = match to {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        // Linux puts the IPv6 message first on a dual-stack socket.
        if g.v6 && on(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO) {
            // struct in6_pktinfo: addr, ifindex.
            let a6 = match to {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            let mut d = a6.octets().to_vec();
            d.extend_from_slice(&ifindex.to_ne_bytes());
            wanted.push((libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, d));
        }
        if let Some(a) = v4
            && on(libc::IPPROTO_IP, libc::IP_PKTINFO)
        {
            // struct in_pktinfo: ifindex, spec_dst, addr.
            let mut d = ifindex.to_ne_bytes().to_vec();
            d.extend_from_slice(&a.octets());
            d.extend_from_slice(&a.octets());
            wanted.push((libc::IPPROTO_IP, libc::IP_PKTINFO, d));
        }
    }
    // Then the hop limit and the traffic class, in Linux's order: an int
    // each, but IP_TOS's single byte.
    let int = |v: u8| i32::from(v).to_ne_bytes().to_vec();
    if let (Some(hop), Some(class)) = (marks.hop_limit, marks.class) {
        if g.v6 {
            if on(libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT) {
                wanted.push((libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, int(hop)));
            }
            if on(libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS) {
                wanted.push((libc::IPPROTO_IPV6, libc::IPV6_TCLASS, int(class)));
            }
        } else {
            if on(libc::IPPROTO_IP, libc::IP_RECVTTL) {
                wanted.push((libc::IPPROTO_IP, libc::IP_TTL, int(hop)));
            }
            if on(libc::IPPROTO_IP, libc::IP_RECVTOS) {
                wanted.push((libc::IPPROTO_IP, libc::IP_TOS, vec![class]));
            }
        }
    }
    let mut out = Vec::new();
    for (level, ty, data) in wanted {
        let len = CMSG_HDR + data.len();
        let space = CMSG_HDR + data.len().next_multiple_of(8);
        if out.len() + len > room {
            return (out, false);
        }
        out.extend_from_slice(&(len as u64).to_ne_bytes());
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(&data);
        // Padding up to the next header, when there is room for it.
        let pad = (space - len).min(room - out.len());
        out.resize(out.len() + pad, 0);
    }
    (out, true)
}

/// `sizeof(struct cmsghdr)`.
const CMSG_HDR: usize = 16;

/// The interface a datagram for `to` arrived on: `lo` for loopback
/// addresses (as all local traffic), otherwise the NIC holding the address.
fn ifindex_of(s: &Sentry, to: IpAddr) -> i32 {
    let to = match to {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        a => a,
    };
    if to.is_loopback() {
        return 1;
    }
    s.stack
        .nics()
        .position(|nic| nic.addrs.iter().any(|a| a.addr == to))
        .map_or(1, |i| i as i32 + 1)
}

/// A receive whose copy-out failed: the datagram is gone, as on Linux,
/// unless the call was cancelled, which leaves it for the next receive.
fn fail_consumed(s: &mut Sentry, e: Errno, commit: Option<Commit>, file: &OwnedFd) -> Outcome {
    if e != CALLER_GONE
        && let Some(c) = commit
    {
        apply_commit(s, &c, file);
    }
    errno(e)
}

/// A receive whose copy-out succeeded: the datagram is consumed before the
/// answer goes, since the guest may read its end natively the moment it
/// has the answer. A received call waits killably (see `sigwatch.rs`), so
/// no signal takes the answer away after this.
fn commit_reply(s: &mut Sentry, reply: Reply, commit: Option<Commit>, file: &OwnedFd) -> Outcome {
    if let Some(c) = commit {
        apply_commit(s, &c, file);
    }
    Outcome::Reply(reply)
}

/// Consumes the datagram an answer delivered (`file`: the guest's end).
fn apply_commit(s: &mut Sentry, c: &Commit, file: &OwnedFd) {
    match c {
        Commit::Pair { key, matched } => {
            let mut b = [0u8; 1];
            let _ = recv(
                file.as_raw_fd(),
                &mut b,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
            );
            if *matched && let Some(g) = s.socks.get_mut(*key) {
                g.delivered.pop_front();
            }
        }
        Commit::Stack { id } => {
            let _ = s.stack.recv_from(*id, &mut s.scratch, RecvFlags::default());
        }
    }
}
