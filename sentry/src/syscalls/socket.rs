//! socket, bind, listen, connect, accept, shutdown, getsockname, getpeername.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use netstack::{Domain, NetError, Protocol, Shutdown as NetShutdown};
use nix::sys::socket::{MsgFlags, recv};

use super::{Args, Resume, Target, done, errno, net, ours, target, value};
use crate::abi::{self, GuestAddr};
use crate::errno::{CALLER_GONE, Errno};
use crate::gsock::{GKey, GSock, Kind};
use crate::sentry::{Outcome, Sentry};
use crate::sys::{self, Notif};

/// `SOCK_MAX`.
const SOCK_MAX: i32 = 11;

pub(super) fn socket(s: &mut Sentry, n: &Notif) -> Outcome {
    let domain = n.args[0] as i32;
    let ty = n.args[1] as i32;
    let proto = n.args[2] as i32;
    let base = ty & 0xf;
    let flags = ty & !0xf;
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 || !(0..SOCK_MAX).contains(&base) {
        return errno(Errno::EINVAL);
    }
    let v6 = domain == libc::AF_INET6;
    let kind = match domain {
        libc::AF_INET | libc::AF_INET6 => match base {
            libc::SOCK_STREAM if proto == 0 || proto == libc::IPPROTO_TCP => Kind::Tcp,
            libc::SOCK_DGRAM if proto == 0 || proto == libc::IPPROTO_UDP => Kind::Udp,
            libc::SOCK_DGRAM if !v6 && proto == libc::IPPROTO_ICMP => Kind::Icmp,
            libc::SOCK_DGRAM if v6 && proto == libc::IPPROTO_ICMPV6 => Kind::Icmp,
            libc::SOCK_STREAM | libc::SOCK_DGRAM => return errno(Errno::EPROTONOSUPPORT),
            // Raw sockets need CAP_NET_RAW, which the guest does not have here.
            libc::SOCK_RAW => return errno(Errno::EPERM),
            _ => return errno(Errno::ESOCKTNOSUPPORT),
        },
        libc::AF_NETLINK => match base {
            libc::SOCK_RAW | libc::SOCK_DGRAM => Kind::Netlink,
            _ => return errno(Errno::ESOCKTNOSUPPORT),
        },
        _ => return errno(Errno::EAFNOSUPPORT),
    };
    let protocol = match kind {
        Kind::Tcp => libc::IPPROTO_TCP,
        Kind::Udp => libc::IPPROTO_UDP,
        Kind::Icmp | Kind::Netlink => proto,
    };
    let id = match kind {
        Kind::Netlink => None,
        _ => {
            let d = if v6 { Domain::Ipv6 } else { Domain::Ipv4 };
            let p = match kind {
                Kind::Tcp => Protocol::Tcp,
                Kind::Udp => Protocol::Udp,
                _ => Protocol::Icmp,
            };
            match s.stack.socket(d, p) {
                Ok(id) => Some(id),
                Err(e) => return net(e),
            }
        }
    };
    let nonblock = flags & libc::SOCK_NONBLOCK != 0;
    let cloexec = flags & libc::SOCK_CLOEXEC != 0;
    if kind == Kind::Tcp && s.unconnected.available() {
        // Unconnected until it connects or listens (`crate::connector`).
        if s.unconnected.count_due() {
            s.reap_unconnected();
        }
        if let Ok(lone) = s.take_lone(nonblock) {
            let mut g = GSock::new(kind, v6, base, protocol, None, lone.cookie);
            g.id = id;
            return install(s, n, g, &lone.sock, cloexec);
        }
    }
    let pair = s.take_pair(kind == Kind::Tcp, nonblock);
    let (end, guest, cookie) = match pair {
        Ok(p) => p,
        Err(e) => {
            if let Some(id) = id {
                let _ = s.stack.close(id);
            }
            return errno(e);
        }
    };
    let mut g = GSock::new(kind, v6, base, protocol, Some(end), cookie);
    g.id = id;
    install(s, n, g, &guest, cloexec)
}

/// Registers the socket and installs the guest's end as the call's result.
fn install(s: &mut Sentry, n: &Notif, g: GSock, guest: &OwnedFd, cloexec: bool) -> Outcome {
    let key = match s.insert(g) {
        Ok(k) => k,
        Err(e) => return errno(Errno::of_io(&e, Errno::ENOMEM)),
    };
    match sys::notif_addfd_send(s.listeners.of(n), n.id, guest.as_fd(), cloexec) {
        Ok(fd) => {
            s.trace(n, &format!("fd {fd}"));
            Outcome::Done
        }
        Err(e) => {
            s.discard(key);
            match e.raw_os_error() {
                // The caller is gone: there is nobody to answer.
                // The caller was interrupted (ESRCH: while the descriptor went in).
                Some(libc::ENOENT | libc::ESRCH) => errno(CALLER_GONE),
                Some(code) => errno(Errno::from_raw(code)),
                None => errno(Errno::EIO),
            }
        }
    }
}

/// Decodes an inet address for socket `key`, with the family and length
/// rules of bind and connect. `Ok(None)` is AF_UNSPEC for connect.
fn inet_addr(
    s: &Sentry,
    key: GKey,
    bytes: &[u8],
    for_bind: bool,
) -> Result<Option<SocketAddr>, Errno> {
    let g = &s.socks[key];
    let (v6, kind) = (g.v6, g.kind);
    if bytes.len() < 2 {
        return Err(Errno::EINVAL);
    }
    let family = i32::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
    if !for_bind && family == libc::AF_UNSPEC {
        return Ok(None);
    }
    // An IPv6 datagram socket takes a plain sockaddr_in; TCP wants the
    // IPv6 length whatever the family.
    let min = if !v6 || (family == libc::AF_INET && kind != Kind::Tcp && !for_bind) {
        abi::SOCKADDR_IN_LEN
    } else {
        abi::SOCKADDR_IN6_MIN
    };
    if bytes.len() < min {
        return Err(Errno::EINVAL);
    }
    match abi::decode_addr(bytes)? {
        GuestAddr::Inet(SocketAddr::V6(a))
            if for_bind && a.scope_id() == 0 && (a.ip().segments()[0] & 0xffc0) == 0xfe80 =>
        {
            // A link-local address means nothing without its interface.
            Err(Errno::EINVAL)
        }
        GuestAddr::Inet(a) if a.is_ipv4() != v6 => Ok(Some(a)),
        // A v6 socket may connect to (or send to) an IPv4 address, as the
        // IPv4-mapped address; the stack refuses it under IPV6_V6ONLY.
        GuestAddr::Inet(a) if !for_bind && a.is_ipv4() => Ok(Some(abi::mapped(a))),
        GuestAddr::Unspec if !v6 => {
            // Linux accepts AF_UNSPEC with INADDR_ANY for bind, for old programs.
            let any = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            if any == 0 {
                let port = u16::from_be_bytes([bytes[2], bytes[3]]);
                Ok(Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::UNSPECIFIED,
                    port,
                ))))
            } else {
                Err(Errno::EAFNOSUPPORT)
            }
        }
        _ => Err(Errno::EAFNOSUPPORT),
    }
}

pub(super) fn bind(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Outcome {
    let (key, mut r) = step!(target(s, n, resume));
    if let Args::Bind(addr) = r.take_args() {
        return bind_inet(s, key, r, addr);
    }
    let bytes = step!(s.read_sockaddr(n, n.args[1], n.args[2]).map_err(errno));
    if s.socks[key].kind == Kind::Netlink {
        if bytes.len() < 12 {
            return errno(Errno::EINVAL);
        }
        if u16::from_ne_bytes([bytes[0], bytes[1]]) != libc::AF_NETLINK as u16 {
            return errno(Errno::EINVAL);
        }
        let pid = u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if pid != 0 {
            s.socks[key].nl_port = pid;
        } else {
            s.netlink_port(key);
        }
        return value(0);
    }
    let addr = match inet_addr(s, key, &bytes, true) {
        Ok(Some(a)) => a,
        Ok(None) => return errno(Errno::EAFNOSUPPORT),
        Err(e) => return errno(e),
    };
    bind_inet(s, key, r, addr)
}

/// Binds an inet socket. A port in use may be held by a socket the guest
/// has just closed, whose hang-up the Sentry has not read yet: the call
/// waits for the next round of the event loop (which reads it) and tries
/// once more.
fn bind_inet(s: &mut Sentry, key: GKey, r: Target, addr: SocketAddr) -> Outcome {
    let Some(id) = s.stack_id(key) else {
        return errno(Errno::EBADF);
    };
    let mut bound = s.stack.bind(id, addr);
    if bound == Err(NetError::AddrInUse) && s.reap_unconnected() {
        // It was held by an unconnected socket the guest has closed.
        bound = s.stack.bind(id, addr);
    }
    match bound {
        Err(NetError::AddrInUse) if !r.resumed => r.defer(key, Args::Bind(addr)),
        Ok(()) => {
            // A UDP port the guest chose takes datagrams from outside once
            // `bind` returned.
            s.sync_mirrors();
            value(0)
        }
        Err(e) => net(e),
    }
}

pub(super) fn listen(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Outcome {
    let (key, r) = step!(target(s, n, resume));
    let Some(id) = s.stack_id(key) else {
        return errno(Errno::EOPNOTSUPP);
    };
    let backlog = n.args[1] as i32;
    // The token bytes need the pair: the guest's socket joins one.
    if s.socks[key].kind == Kind::Tcp {
        step!(s.attach(key, r.file.as_fd()).map_err(errno));
    }
    let mut listening = s.stack.listen(id, backlog);
    if listening == Err(NetError::AddrInUse) && s.reap_unconnected() {
        listening = s.stack.listen(id, backlog);
    }
    match listening {
        // As bind: the port may be held by a socket closed a moment ago.
        Err(NetError::AddrInUse) if !r.resumed => r.defer(key, Args::None),
        Ok(()) => {
            s.socks[key].listen(backlog.clamp(0, 4096) as usize);
            // Peers outside reach the listener once `listen` returned.
            s.sync_mirrors();
            value(0)
        }
        Err(e) => net(e),
    }
}

pub(super) fn connect(s: &mut Sentry, n: &Notif, resume: Option<Resume>) -> Outcome {
    let (key, mut r) = step!(target(s, n, resume));
    let addr = match r.take_args() {
        // Resumed: the address was read and decoded before it blocked.
        Args::Connect(addr) => Some(addr),
        _ => {
            let bytes = step!(s.read_sockaddr(n, n.args[1], n.args[2]).map_err(errno));
            if s.socks[key].kind == Kind::Netlink {
                return value(0);
            }
            step!(inet_addr(s, key, &bytes, false).map_err(errno))
        }
    };
    let kind = s.socks[key].kind;
    if kind == Kind::Netlink {
        return value(0);
    }
    let Some(id) = s.stack_id(key) else {
        return errno(Errno::EBADF);
    };
    let Some(addr) = addr else {
        // AF_UNSPEC: dissolve the association (nothing to do when there is none).
        if kind == Kind::Tcp && s.stack.peer_addr(id).is_err() && !s.socks[key].is_connecting() {
            return value(0);
        }
        return match s.stack.disconnect(id) {
            Ok(()) => value(0),
            Err(e) => net(e),
        };
    };
    if kind != Kind::Tcp {
        // Datagrams still in the pair go to the old peer first.
        s.flush_tx(key);
        return match s.stack.connect(id, addr) {
            Ok(()) => value(0),
            Err(e) => net(e),
        };
    }
    if s.socks[key].is_connecting() {
        // A non-blocking attempt is still under way.
        return if r.nonblock() {
            errno(Errno::EALREADY)
        } else {
            let timeout = s.socks[key].sndtimeo;
            r.park(key, timeout, Args::Connect(addr))
        };
    }
    let result = s.stack.connect(id, addr);
    if matches!(
        result,
        Ok(()) | Err(NetError::InProgress) | Err(NetError::Already)
    ) && let Err(e) = s.attach(key, r.file.as_fd())
    {
        // Bytes move from now on, through a pair the socket could not join.
        let _ = s.stack.disconnect(id);
        return errno(e);
    }
    match result {
        Ok(()) => connected(s, key),
        Err(NetError::InProgress) | Err(NetError::Already) => {
            // Over loopback the handshake may be done within this poll; the
            // rest of what it caused (the listener's side) waits until the
            // answer is out.
            s.poll_stack_only();
            if r.nonblock() {
                let ready = s.stack.readiness(id).ok();
                if ready.is_some_and(|r| r.error) {
                    // Failed already: SO_ERROR tells, the descriptor is writable.
                    if let Ok(Some(e)) = s.stack.take_error(id) {
                        s.socks[key].connect_error = Some(crate::errno::errno(e));
                    }
                } else if ready.is_some_and(|r| r.writable) {
                    s.socks[key].established();
                } else {
                    s.fill(key, r.file.as_fd());
                }
                if result == Err(NetError::Already) {
                    errno(Errno::EALREADY)
                } else {
                    errno(Errno::EINPROGRESS)
                }
            } else {
                match s.stack.connect(id, addr) {
                    Ok(()) => connected(s, key),
                    Err(NetError::InProgress) | Err(NetError::Already) => {
                        // The guest end polls not-writable until the
                        // handshake ends, as Linux's does: a caller that a
                        // signal takes out of this wait polls for the result.
                        s.fill(key, r.file.as_fd());
                        let timeout = s.socks[key].sndtimeo;
                        r.park(key, timeout, Args::Connect(addr))
                    }
                    Err(e) => net(e),
                }
            }
        }
        Err(e) => net(e),
    }
}

/// A connect succeeded: bytes may flow.
fn connected(s: &mut Sentry, key: GKey) -> Outcome {
    s.socks[key].established();
    s.pump_rx(key);
    // Bytes the guest wrote before connect have set `readable` already (the
    // loop reads an end's edge before the notifications that came after
    // it), so there is nothing to read when it is clear.
    s.pump_tx(key);
    value(0)
}

pub(super) fn accept(s: &mut Sentry, n: &Notif, flags: i32, resume: Option<Resume>) -> Outcome {
    let (key, r) = step!(target(s, n, resume));
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return errno(Errno::EINVAL);
    }
    let g = &s.socks[key];
    if g.kind != Kind::Tcp {
        return errno(Errno::EOPNOTSUPP);
    }
    if !g.is_listening() {
        return errno(Errno::EINVAL);
    }
    let Some(id) = g.id else {
        return errno(Errno::EINVAL);
    };
    let mut popped = s.socks[key].queue_mut().and_then(|q| q.stash.pop_front());
    if popped.is_none() {
        match s.stack.accept(id) {
            Ok(c) => popped = Some(c),
            Err(NetError::WouldBlock) => {}
            // A listener that was shut down, or is no longer listening.
            Err(e) => return net(e),
        }
    }
    let Some((child, peer)) = popped else {
        return if r.nonblock() {
            errno(Errno::EAGAIN)
        } else {
            let timeout = s.socks[key].rcvtimeo;
            r.park(key, timeout, Args::None)
        };
    };
    let v6 = s.socks[key].v6;
    if n.args[1] != 0 {
        let bytes = abi::encode_addr(peer, v6);
        match s.write_sockaddr(n, n.args[1], n.args[2], &bytes) {
            Ok(()) => {}
            // Cancelled by a signal: the connection waits for the next accept.
            Err(CALLER_GONE) => {
                put_back(s, key, (child, peer));
                return errno(CALLER_GONE);
            }
            Err(e) => {
                // Linux drops the connection it accepted when the address
                // cannot be written.
                let _ = s.stack.close(child);
                return errno(e);
            }
        }
    }
    let (end, guest, cookie) = match s.take_pair(true, flags & libc::SOCK_NONBLOCK != 0) {
        Ok(p) => p,
        Err(e) => {
            put_back(s, key, (child, peer));
            return errno(e);
        }
    };
    let mut g = GSock::new(
        Kind::Tcp,
        v6,
        libc::SOCK_STREAM,
        libc::IPPROTO_TCP,
        Some(end),
        cookie,
    );
    g.id = Some(child);
    g.established();
    // A Linux child socket starts as a copy of its listener: the options
    // the Sentry keeps come along (TCP_USER_TIMEOUT, TCP_LINGER2, ...).
    g.extra = s.socks[key].extra.clone();
    let child_key = match s.insert(g) {
        Ok(k) => k,
        Err(e) => {
            put_back(s, key, (child, peer));
            return errno(Errno::of_io(&e, Errno::ENOMEM));
        }
    };
    if s.socks[child_key]
        .extra
        .contains_key(&super::opts::RCVBUF_CHOSEN)
    {
        s.fit_end_to_recv_buffer(child_key);
    }
    let cloexec = flags & libc::SOCK_CLOEXEC != 0;
    // One pending connection fewer: take its token before the guest runs
    // again, so a poll right after accept does not see it.
    let mut took_token = false;
    if let Some(q) = s.socks[key].queue_mut()
        && q.tokens > 0
    {
        let mut b = [0u8; 1];
        if let Ok(1) = recv(r.file.as_raw_fd(), &mut b, MsgFlags::MSG_DONTWAIT) {
            q.tokens -= 1;
            took_token = true;
        }
    }
    match sys::notif_addfd_send(s.listeners.of(n), n.id, guest.as_fd(), cloexec) {
        Ok(fd) => {
            s.trace(n, &format!("fd {fd}"));
            // Where the guest holds it: a reset that comes before any other
            // trapped call on it can still be reported (`report_reset`).
            s.socks[child_key].home = Some((n.tid, fd));
            s.pump_rx(child_key);
            Outcome::Done
        }
        Err(e) => {
            // Put the connection (and its token) back for the next accept.
            s.forget(child_key);
            put_back(s, key, (child, peer));
            if took_token {
                s.write_tokens(key);
            }
            match e.raw_os_error() {
                // The caller was interrupted (ESRCH: while the descriptor went in).
                Some(libc::ENOENT | libc::ESRCH) => errno(CALLER_GONE),
                Some(code) => errno(Errno::from_raw(code)),
                None => errno(Errno::EIO),
            }
        }
    }
}

/// Puts an accepted connection back at the head of its listener's stash
/// (or closes it, should the listener have gone).
fn put_back(s: &mut Sentry, key: GKey, c: (netstack::SocketId, SocketAddr)) {
    match s.socks.get_mut(key).and_then(|g| g.queue_mut()) {
        Some(q) => q.stash.push_front(c),
        None => {
            let _ = s.stack.close(c.0);
        }
    }
}

pub(super) fn shutdown(s: &mut Sentry, n: &Notif) -> Outcome {
    let (key, r) = step!(ours(s, n));
    let how = match n.args[1] as i32 {
        libc::SHUT_RD => NetShutdown::Read,
        libc::SHUT_WR => NetShutdown::Write,
        libc::SHUT_RDWR => NetShutdown::Both,
        _ => return errno(Errno::EINVAL),
    };
    let Some(id) = s.stack_id(key) else {
        return errno(Errno::EOPNOTSUPP);
    };
    let kind = s.socks[key].kind;
    if kind == Kind::Tcp && !s.socks[key].is_listening() && s.stack.peer_addr(id).is_err() {
        if let Ok(rd) = s.stack.readiness(id)
            && !rd.hangup
        {
            // Connecting: Linux allows it.
        } else {
            return errno(Errno::ENOTCONN);
        }
    }
    if kind == Kind::Tcp && matches!(how, NetShutdown::Write | NetShutdown::Both) {
        // The FIN must follow the bytes still in the pair: shut the guest's
        // end (its later writes fail with EPIPE); the stack's side is shut
        // when the Sentry reads the end of file.
        let _ = nix::sys::socket::shutdown(r.file.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        s.flush_tx(key);
        if matches!(how, NetShutdown::Both) {
            let _ = s.stack.shutdown(id, NetShutdown::Read);
        }
        return value(0);
    }
    match s.stack.shutdown(id, how) {
        Ok(()) => {
            if matches!(how, NetShutdown::Read | NetShutdown::Both) {
                if kind == Kind::Tcp {
                    s.pump_rx(key);
                } else {
                    // Reads see end of file once the queued datagrams are taken.
                    s.socks[key].shut_rd = true;
                    let _ = nix::sys::socket::shutdown(
                        s.socks[key].end_fd(),
                        nix::sys::socket::Shutdown::Write,
                    );
                }
            }
            value(0)
        }
        Err(e) => net(e),
    }
}

pub(super) fn name(s: &mut Sentry, n: &Notif, peer: bool) -> Outcome {
    let (key, _r) = step!(ours(s, n));
    let g = &s.socks[key];
    let bytes = if g.kind == Kind::Netlink {
        let port = if peer { 0 } else { s.netlink_port(key) };
        crate::netlink::sockaddr_nl(port).to_vec()
    } else {
        let Some(id) = g.id else {
            return errno(Errno::EBADF);
        };
        let v6 = g.v6;
        let a = if peer {
            s.stack.peer_addr(id)
        } else {
            s.stack.local_addr(id)
        };
        match a {
            Ok(a) => abi::encode_addr(a, v6),
            Err(e) => return net(e),
        }
    };
    done(s.write_sockaddr(n, n.args[1], n.args[2], &bytes))
}

/// An unspecified address of the socket's family, for answers that need one.
pub(super) fn unspecified(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    }
}
