//! getsockopt, setsockopt, and the socket ioctls.

use std::os::fd::{AsFd, AsRawFd};

use netstack::{SockOpt, SockOptName, SocketId};
use nix::sys::socket::{setsockopt as host_setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::{done, errno, net, ours, value};
use crate::abi;
use crate::errno::Errno;
use crate::gsock::{GKey, Kind};
use crate::sentry::{Outcome, Sentry};
use crate::sys::Notif;

const SOL_SOCKET: i32 = libc::SOL_SOCKET;
const SOL_TCP: i32 = libc::IPPROTO_TCP;
const SOL_IP: i32 = libc::IPPROTO_IP;
const SOL_IPV6: i32 = libc::IPPROTO_IPV6;
const SOL_NETLINK: i32 = 270;
/// `sizeof(struct tcp_info)` on Linux 6.x.
const TCP_INFO_LEN: usize = 280;
/// Linux's TCP states, as `tcpi_state` numbers them.
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LISTEN: u8 = 10;
const TCP_SYN_SENT: u8 = 2;

pub(super) fn getsockopt(s: &mut Sentry, n: &Notif) -> Outcome {
    let (key, _r) = step!(ours(s, n));
    let level = n.args[1] as i32;
    let name = n.args[2] as i32;
    let (optval, optlen) = (n.args[3], n.args[4]);
    let room = match s.rd_array::<4>(n, optlen) {
        Ok(b) => i32::from_ne_bytes(b),
        Err(e) => return errno(e),
    };
    if room < 0 {
        return errno(Errno::EINVAL);
    }
    let v = step!(get(s, key, level, name).map_err(errno));
    let take = v.len().min(room as usize);
    let len = (take as u32).to_ne_bytes();
    done(s.wr_parts(n, &[(optval, &v[..take]), (optlen, &len)]))
}

fn int(v: i32) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn opt(s: &Sentry, id: SocketId, name: SockOptName) -> Result<SockOpt, Errno> {
    s.stack.option(id, name).map_err(crate::errno::errno)
}

fn get(s: &mut Sentry, key: GKey, level: i32, name: i32) -> Result<Vec<u8>, Errno> {
    let g = &s.socks[key];
    let (kind, v6, ty, protocol, id) = (g.kind, g.v6, g.ty, g.protocol, g.id);
    let domain = match (kind, v6) {
        (Kind::Netlink, _) => libc::AF_NETLINK,
        (_, true) => libc::AF_INET6,
        (_, false) => libc::AF_INET,
    };
    if kind != Kind::Netlink && (level, name) == (SOL_SOCKET, libc::SO_PASSCRED) {
        return Err(Errno::EOPNOTSUPP);
    }
    if kind == Kind::Tcp && (level, name) == (SOL_TCP, libc::TCP_MAXSEG) {
        return Ok(int(max_seg(s, key)));
    }
    if let Some(v) = s.socks[key].extra.get(&(level, name)) {
        return Ok(v.clone());
    }
    if !level_known(kind, v6, level) {
        return Err(Errno::EOPNOTSUPP);
    }
    if kept(level, name, v6, kind == Kind::Tcp) {
        return Ok(kept_default(level, name));
    }
    let b = |x: bool| int(i32::from(x));
    match (level, name) {
        (SOL_SOCKET, libc::SO_TYPE) => return Ok(int(ty)),
        (SOL_SOCKET, libc::SO_DOMAIN) => return Ok(int(domain)),
        (SOL_SOCKET, libc::SO_PROTOCOL) => return Ok(int(protocol)),
        (SOL_SOCKET, libc::SO_ACCEPTCONN) => return Ok(b(s.socks[key].is_listening())),
        (SOL_SOCKET, libc::SO_RCVTIMEO) | (SOL_SOCKET, libc::SO_RCVTIMEO_NEW) => {
            return Ok(abi::encode_timeval(s.socks[key].rcvtimeo).to_vec());
        }
        (SOL_SOCKET, libc::SO_SNDTIMEO) | (SOL_SOCKET, libc::SO_SNDTIMEO_NEW) => {
            return Ok(abi::encode_timeval(s.socks[key].sndtimeo).to_vec());
        }
        (SOL_SOCKET, libc::SO_RCVLOWAT) | (SOL_SOCKET, libc::SO_SNDLOWAT) => return Ok(int(1)),
        (SOL_SOCKET, libc::SO_PRIORITY) | (SOL_SOCKET, libc::SO_OOBINLINE) => return Ok(int(0)),
        (SOL_SOCKET, libc::SO_COOKIE) => return Ok(s.socks[key].cookie.to_ne_bytes().to_vec()),
        (SOL_SOCKET, libc::SO_ERROR) => {
            if let Some(e) = s.socks[key].connect_error.take() {
                return Ok(int(e.raw()));
            }
            let Some(id) = id else { return Ok(int(0)) };
            return Ok(int(match s.stack.take_error(id) {
                Ok(Some(e)) => crate::errno::errno(e).raw(),
                _ => 0,
            }));
        }
        _ => {}
    }
    let Some(id) = id else {
        return match (level, name) {
            (SOL_SOCKET, libc::SO_RCVBUF) | (SOL_SOCKET, libc::SO_SNDBUF) => Ok(int(212_992)),
            _ => Err(Errno::ENOPROTOOPT),
        };
    };
    let tcp = kind == Kind::Tcp;
    let which = match (level, name) {
        (SOL_SOCKET, libc::SO_REUSEADDR) => SockOptName::ReuseAddr,
        (SOL_SOCKET, libc::SO_REUSEPORT) => SockOptName::ReusePort,
        (SOL_SOCKET, libc::SO_KEEPALIVE) => SockOptName::KeepAlive,
        (SOL_SOCKET, libc::SO_LINGER) => {
            return match opt(s, id, SockOptName::Linger)? {
                SockOpt::Linger(None) => {
                    // Off, with the time last set (Linux keeps it).
                    let secs = s.socks[key]
                        .extra
                        .get(&LINGER_TIME)
                        .map_or(0, |v| read_int(v));
                    let mut v = int(0);
                    v.extend_from_slice(&secs.to_ne_bytes());
                    Ok(v)
                }
                SockOpt::Linger(l) => Ok(abi::encode_linger(l).to_vec()),
                _ => Err(Errno::ENOPROTOOPT),
            };
        }
        (SOL_SOCKET, libc::SO_RCVBUF) => SockOptName::RecvBuffer,
        (SOL_SOCKET, libc::SO_SNDBUF) => SockOptName::SendBuffer,
        (SOL_SOCKET, libc::SO_BROADCAST) => SockOptName::Broadcast,
        (SOL_TCP, _) if !tcp => return Err(Errno::EOPNOTSUPP),
        (SOL_TCP, libc::TCP_NODELAY) => SockOptName::NoDelay,
        (SOL_TCP, libc::TCP_CORK) => SockOptName::Cork,
        (SOL_TCP, libc::TCP_KEEPIDLE) => SockOptName::KeepIdle,
        (SOL_TCP, libc::TCP_KEEPINTVL) => SockOptName::KeepInterval,
        (SOL_TCP, libc::TCP_KEEPCNT) => SockOptName::KeepCount,
        (SOL_TCP, libc::TCP_INFO) => return Ok(tcp_info(s, key, id)),
        (SOL_IP, _) if v6 && name != libc::IP_TOS && name != libc::IP_TTL => {
            return Err(Errno::ENOPROTOOPT);
        }
        (SOL_IP, libc::IP_TTL) | (SOL_IPV6, libc::IPV6_UNICAST_HOPS) if level == SOL_IP || v6 => {
            SockOptName::Ttl
        }
        (SOL_IP, libc::IP_TOS) | (SOL_IPV6, libc::IPV6_TCLASS) if level == SOL_IP || v6 => {
            SockOptName::Tos
        }
        (SOL_IPV6, _) if !v6 => return Err(Errno::ENOPROTOOPT),
        (SOL_IPV6, libc::IPV6_V6ONLY) => SockOptName::V6Only,
        _ => return Err(Errno::ENOPROTOOPT),
    };
    Ok(match opt(s, id, which)? {
        SockOpt::ReuseAddr(x)
        | SockOpt::ReusePort(x)
        | SockOpt::KeepAlive(x)
        | SockOpt::Broadcast(x)
        | SockOpt::NoDelay(x)
        | SockOpt::Cork(x)
        | SockOpt::V6Only(x) => b(x),
        SockOpt::RecvBuffer(v) | SockOpt::SendBuffer(v) => int(v as i32),
        SockOpt::KeepIdle(v) | SockOpt::KeepInterval(v) | SockOpt::KeepCount(v) => int(v as i32),
        SockOpt::Ttl(v) | SockOpt::Tos(v) => int(i32::from(v)),
        SockOpt::Linger(l) => abi::encode_linger(l).to_vec(),
    })
}

fn mss(s: &Sentry) -> i32 {
    // Loopback's MTU less the IPv4 and TCP headers, as Linux reports on lo.
    let mtu = s.stack.nics().next().map_or(65536, |n| n.mtu);
    (mtu.min(65535) as i32) - 40 - 12
}

fn tcp_info(s: &mut Sentry, key: GKey, id: SocketId) -> Vec<u8> {
    let mut v = vec![0u8; TCP_INFO_LEN];
    let state = if s.socks[key].is_listening() {
        TCP_LISTEN
    } else if s.socks[key].is_connecting() {
        TCP_SYN_SENT
    } else if s.stack.peer_addr(id).is_ok() {
        match s.stack.readiness(id) {
            Ok(r) if r.read_hangup && !r.hangup => TCP_CLOSE_WAIT,
            Ok(r) if r.hangup => TCP_CLOSE,
            _ => TCP_ESTABLISHED,
        }
    } else {
        TCP_CLOSE
    };
    v[0] = state;
    let mss = mss(s) as u32;
    let put =
        |v: &mut Vec<u8>, off: usize, x: u32| v[off..off + 4].copy_from_slice(&x.to_ne_bytes());
    put(&mut v, 8, 200_000); // tcpi_rto, µs (Linux's minimum)
    put(&mut v, 16, mss); // tcpi_snd_mss
    put(&mut v, 20, mss); // tcpi_rcv_mss
    put(&mut v, 60, mss + 52); // tcpi_pmtu
    put(&mut v, 80, 10); // tcpi_snd_cwnd (initial window)
    put(&mut v, 84, mss); // tcpi_advmss
    v
}

pub(super) fn setsockopt(s: &mut Sentry, n: &Notif) -> Outcome {
    let (key, r) = step!(ours(s, n));
    let level = n.args[1] as i32;
    let name = n.args[2] as i32;
    let len = n.args[4] as i64 as i32;
    if len < 0 {
        return errno(Errno::EINVAL);
    }
    let len = (len as usize).min(256);
    let val = step!(s.rd(n, n.args[3], len).map_err(errno));
    let ival = || -> Result<i32, Errno> {
        if val.len() < 4 {
            Err(Errno::EINVAL)
        } else {
            Ok(i32::from_ne_bytes([val[0], val[1], val[2], val[3]]))
        }
    };
    let g = &s.socks[key];
    let (kind, v6, id) = (g.kind, g.v6, g.id);
    // Timeouts apply to the native reads and writes on the guest's end too.
    if level == SOL_SOCKET
        && matches!(
            name,
            libc::SO_RCVTIMEO | libc::SO_RCVTIMEO_NEW | libc::SO_SNDTIMEO | libc::SO_SNDTIMEO_NEW
        )
    {
        let t = step!(abi::decode_timeval(&val).map_err(errno));
        // The guest's end gets the value as given: a negative one makes its
        // native reads and writes give up at once, as on a Linux socket.
        let tv = TimeVal::new(abi::u64_at(&val, 0) as i64, abi::u64_at(&val, 8) as i64);
        let rcv = matches!(name, libc::SO_RCVTIMEO | libc::SO_RCVTIMEO_NEW);
        let native = if rcv {
            host_setsockopt(&r.file.as_fd(), sockopt::ReceiveTimeout, &tv)
        } else {
            host_setsockopt(&r.file.as_fd(), sockopt::SendTimeout, &tv)
        };
        if let Err(e) = native {
            return errno(Errno::from(e));
        }
        let g = &mut s.socks[key];
        if rcv {
            g.rcvtimeo = t;
        } else {
            g.sndtimeo = t;
        }
        return value(0);
    }
    // setsockopt answers ENOPROTOOPT for an unknown level too (getsockopt
    // says EOPNOTSUPP), as Linux does.
    if !level_known(kind, v6, level) {
        return errno(Errno::ENOPROTOOPT);
    }
    if kind == Kind::Netlink {
        return match (level, name) {
            (SOL_NETLINK, 1..=12)
            | (
                SOL_SOCKET,
                libc::SO_RCVBUF
                | libc::SO_SNDBUF
                | libc::SO_RCVBUFFORCE
                | libc::SO_SNDBUFFORCE
                | libc::SO_PASSCRED
                | libc::SO_ATTACH_FILTER,
            ) => value(0),
            _ => errno(Errno::ENOPROTOOPT),
        };
    }
    // Linux 6.16 keeps credentials passing to AF_UNIX and netlink.
    if (level, name) == (SOL_SOCKET, libc::SO_PASSCRED) {
        return errno(Errno::EOPNOTSUPP);
    }
    let Some(id) = id else {
        return errno(Errno::ENOPROTOOPT);
    };
    let tcp = kind == Kind::Tcp;
    if kept(level, name, v6, tcp) {
        let closed = !s.socks[key].is_connected() && !s.socks[key].is_listening();
        return match kept_value(level, name, &val, closed) {
            Ok(v) => {
                // A stream's reads are native: the guest's end of the pair
                // waits for that many bytes as a TCP socket does.
                if tcp && (level, name) == (SOL_SOCKET, libc::SO_RCVLOWAT) {
                    let bytes = read_int(&v);
                    if let Err(e) = crate::sys::set_rcvlowat(r.file.as_fd(), bytes) {
                        return errno(Errno::of_io(&e, Errno::EINVAL));
                    }
                }
                s.socks[key].extra.insert((level, name), v);
                value(0)
            }
            Err(e) => errno(e),
        };
    }
    let set = match (level, name) {
        (SOL_SOCKET, libc::SO_REUSEADDR) => ival().map(|v| SockOpt::ReuseAddr(v != 0)),
        (SOL_SOCKET, libc::SO_REUSEPORT) => ival().map(|v| SockOpt::ReusePort(v != 0)),
        (SOL_SOCKET, libc::SO_KEEPALIVE) => ival().map(|v| SockOpt::KeepAlive(v != 0)),
        (SOL_SOCKET, libc::SO_BROADCAST) => ival().map(|v| SockOpt::Broadcast(v != 0)),
        // Linux reads the size as unsigned: -1 asks for the most there is.
        (SOL_SOCKET, libc::SO_RCVBUF) => ival().map(|v| SockOpt::RecvBuffer(v as u32 as usize)),
        (SOL_SOCKET, libc::SO_SNDBUF) => ival().map(|v| SockOpt::SendBuffer(v as u32 as usize)),
        (SOL_SOCKET, libc::SO_RCVBUFFORCE) => {
            ival().map(|v| SockOpt::RecvBuffer(v.max(0) as usize))
        }
        (SOL_SOCKET, libc::SO_SNDBUFFORCE) => {
            ival().map(|v| SockOpt::SendBuffer(v.max(0) as usize))
        }
        (SOL_SOCKET, libc::SO_LINGER) => {
            if val.len() < 8 {
                Err(Errno::EINVAL)
            } else {
                let on = i32::from_ne_bytes([val[0], val[1], val[2], val[3]]);
                let secs = i32::from_ne_bytes([val[4], val[5], val[6], val[7]]);
                if on != 0 {
                    s.socks[key].extra.insert(LINGER_TIME, int(secs.max(0)));
                }
                Ok(SockOpt::Linger((on != 0).then_some(secs.max(0) as u32)))
            }
        }
        (SOL_TCP, _) if !tcp => return errno(Errno::ENOPROTOOPT),
        (SOL_TCP, libc::TCP_NODELAY) => ival().map(|v| SockOpt::NoDelay(v != 0)),
        (SOL_TCP, libc::TCP_CORK) => ival().map(|v| SockOpt::Cork(v != 0)),
        (SOL_TCP, libc::TCP_KEEPIDLE) => pos(ival()).map(SockOpt::KeepIdle),
        (SOL_TCP, libc::TCP_KEEPINTVL) => pos(ival()).map(SockOpt::KeepInterval),
        (SOL_TCP, libc::TCP_KEEPCNT) => pos(ival()).map(SockOpt::KeepCount),
        (SOL_IP, libc::IP_TTL) => ival().and_then(|v| match v {
            -1 => Ok(SockOpt::Ttl(64)),
            1..=255 => Ok(SockOpt::Ttl(v as u8)),
            _ => Err(Errno::EINVAL),
        }),
        (SOL_IP, libc::IP_TOS) => ival().map(|v| SockOpt::Tos(v as u8)),
        (SOL_IPV6, _) if !v6 => return errno(Errno::ENOPROTOOPT),
        (SOL_IPV6, libc::IPV6_V6ONLY) => ival().map(|v| SockOpt::V6Only(v != 0)),
        (SOL_IPV6, libc::IPV6_UNICAST_HOPS) => ival().and_then(|v| match v {
            -1 => Ok(SockOpt::Ttl(64)),
            0..=255 => Ok(SockOpt::Ttl(v as u8)),
            _ => Err(Errno::EINVAL),
        }),
        (SOL_IPV6, libc::IPV6_TCLASS) => ival().map(|v| SockOpt::Tos(v as u8)),
        _ => Err(Errno::ENOPROTOOPT),
    };
    match set {
        Ok(o) => {
            let send_buffer = match o {
                SockOpt::SendBuffer(v) => Some(v),
                _ => None,
            };
            let recv_buffer = matches!(o, SockOpt::RecvBuffer(_));
            match s.stack.set_option(id, o) {
                Ok(()) => {
                    if let Some(bytes) = send_buffer {
                        // A stream's writes land in the guest's end of the
                        // pair first: it gets the size too (the kernel caps
                        // and doubles it as a TCP socket's), so a writer
                        // blocks, or hears of a reset, after as many bytes
                        // as on Linux instead of a megabyte later.
                        if tcp {
                            let _ = host_setsockopt(&r.file.as_fd(), sockopt::SndBuf, &bytes);
                        }
                        // A larger send buffer has room for what waits in
                        // the pair: a writer blocked there goes on.
                        s.flush_tx(key);
                    }
                    if recv_buffer && tcp {
                        s.socks[key].extra.insert(RCVBUF_CHOSEN, Vec::new());
                        s.fit_end_to_recv_buffer(key);
                    }
                    value(0)
                }
                Err(e) => net(e),
            }
        }
        Err(e) => errno(e),
    }
}

/// Whether a socket of this kind has option level `level` at all (an
/// unknown level is EOPNOTSUPP, an unknown name at a known level ENOPROTOOPT).
fn level_known(kind: Kind, v6: bool, level: i32) -> bool {
    match level {
        SOL_SOCKET => true,
        SOL_TCP => kind == Kind::Tcp,
        libc::IPPROTO_UDP => kind == Kind::Udp,
        SOL_IP => kind != Kind::Netlink,
        SOL_IPV6 => v6 && kind != Kind::Netlink,
        SOL_NETLINK => kind == Kind::Netlink,
        _ => false,
    }
}

/// Options that are accepted and read back but change nothing in the stack.
fn kept(level: i32, name: i32, v6: bool, tcp: bool) -> bool {
    match level {
        SOL_SOCKET => matches!(
            name,
            libc::SO_PRIORITY
                | libc::SO_OOBINLINE
                | libc::SO_RCVLOWAT
                | libc::SO_SNDLOWAT
                | libc::SO_TIMESTAMP
                | libc::SO_TIMESTAMPNS
                | libc::SO_MARK
                | libc::SO_BINDTODEVICE
                | libc::SO_ZEROCOPY
                | libc::SO_DONTROUTE
                | libc::SO_NO_CHECK
        ),
        SOL_TCP => {
            tcp && matches!(
                name,
                libc::TCP_QUICKACK
                    | libc::TCP_DEFER_ACCEPT
                    | libc::TCP_USER_TIMEOUT
                    | libc::TCP_FASTOPEN
                    | libc::TCP_NOTSENT_LOWAT
                    | libc::TCP_MAXSEG
                    | libc::TCP_CONGESTION
                    | libc::TCP_SYNCNT
                    | libc::TCP_LINGER2
                    | libc::TCP_WINDOW_CLAMP
                    | libc::TCP_INQ
            )
        }
        SOL_IP => matches!(
            name,
            libc::IP_RECVERR
                | libc::IP_PKTINFO
                | libc::IP_RECVTOS
                | libc::IP_MTU_DISCOVER
                | libc::IP_FREEBIND
                | libc::IP_TRANSPARENT
                | libc::IP_MULTICAST_TTL
                | libc::IP_MULTICAST_LOOP
                | libc::IP_RECVTTL
        ),
        SOL_IPV6 => {
            v6 && matches!(
                name,
                libc::IPV6_RECVERR
                    | libc::IPV6_RECVPKTINFO
                    | libc::IPV6_RECVHOPLIMIT
                    | libc::IPV6_RECVTCLASS
                    | libc::IPV6_MTU_DISCOVER
                    | libc::IPV6_MULTICAST_HOPS
                    | libc::IPV6_MULTICAST_LOOP
            )
        }
        _ => false,
    }
}

fn pos(v: Result<i32, Errno>) -> Result<u32, Errno> {
    match v {
        Ok(x) if x >= 1 => Ok(x as u32),
        Ok(_) => Err(Errno::EINVAL),
        Err(e) => Err(e),
    }
}

/// Where `SO_LINGER`'s time is kept while lingering is off.
const LINGER_TIME: (i32, i32) = (SOL_SOCKET, -libc::SO_LINGER);
/// Marks a TCP socket (and so the children of a listener) whose receive
/// buffer the guest chose: its pair end is sized to it.
pub(crate) const RCVBUF_CHOSEN: (i32, i32) = (SOL_SOCKET, -libc::SO_RCVBUF);
/// Linux's smallest receive buffer (`SOCK_MIN_RCVBUF`, what `SO_RCVBUF` 0
/// reads back); `TCP_WINDOW_CLAMP` is raised to half of it.
const MIN_RCVBUF: i32 = 2304;
/// Linux's bounds: `MAX_TCP_SYNCNT`, `TCP_FIN_TIMEOUT_MAX` (s), `TCP_MIN_MSS`,
/// `MAX_TCP_WINDOW`, and the default `TCP_MAXSEG` of a socket not connected.
const MAX_SYNCNT: i32 = 127;
const MAX_LINGER2: i32 = 120;
const FIN_TIMEOUT: i32 = 60;
const MIN_MSS: i32 = 88;
const MAX_MSS: i32 = 32767;
const DEFAULT_MSS: i32 = 536;

fn read_int(v: &[u8]) -> i32 {
    v.get(..4)
        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// What getsockopt reads for a kept option never set: Linux's defaults.
fn kept_default(level: i32, name: i32) -> Vec<u8> {
    match (level, name) {
        (SOL_TCP, libc::TCP_SYNCNT) => int(6),
        (SOL_TCP, libc::TCP_LINGER2) => int(FIN_TIMEOUT),
        (SOL_TCP, libc::TCP_NOTSENT_LOWAT) => int(-1),
        (SOL_TCP, libc::TCP_CONGESTION) => cc_name(b"cubic"),
        (SOL_IP, libc::IP_MTU_DISCOVER) => int(libc::IP_PMTUDISC_WANT),
        (SOL_TCP, libc::TCP_QUICKACK)
        | (SOL_IP, libc::IP_MULTICAST_TTL | libc::IP_MULTICAST_LOOP)
        | (SOL_SOCKET, libc::SO_RCVLOWAT)
        | (SOL_IPV6, libc::IPV6_MULTICAST_HOPS | libc::IPV6_MULTICAST_LOOP) => int(1),
        _ => int(0),
    }
}

/// A congestion control name as `TCP_CONGESTION` reads it: 16 bytes.
fn cc_name(name: &[u8]) -> Vec<u8> {
    let mut v = name.to_vec();
    v.resize(16, 0);
    v
}

/// Linux's `TCP_DEFER_ACCEPT` rounding: seconds become SYN-ACK
/// retransmissions (1 s, doubling, at most 120 s apart) and back.
fn defer_accept_rounded(secs: i32) -> i32 {
    if secs <= 0 {
        return 0;
    }
    let (mut timeout, mut period, mut retrans) = (1i32, 1i32, 1i32);
    while secs > period && retrans < 255 {
        retrans += 1;
        timeout = (timeout * 2).min(120);
        period += timeout;
    }
    let (mut timeout, mut total) = (1i32, 1i32);
    for _ in 1..retrans {
        timeout = (timeout * 2).min(120);
        total += timeout;
    }
    total
}

/// An option the stack has no use for, checked and rounded as Linux does:
/// the bytes getsockopt reads back afterwards, or Linux's errno.
/// `closed`: the socket is neither connected nor listening.
fn kept_value(level: i32, name: i32, val: &[u8], closed: bool) -> Result<Vec<u8>, Errno> {
    if (level, name) == (SOL_TCP, libc::TCP_CONGESTION) {
        let name = &val[..val.len().min(15)];
        let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
        return match name {
            b"reno" | b"cubic" => Ok(cc_name(name)),
            _ => Err(Errno::ENOENT),
        };
    }
    if (level, name) == (SOL_SOCKET, libc::SO_BINDTODEVICE) {
        return Ok(val.to_vec());
    }
    // IP-level integers may be given as one byte.
    let v = match val.len() {
        4.. => read_int(val),
        1.. if level == SOL_IP => i32::from(val[0]),
        _ => return Err(Errno::EINVAL),
    };
    let bool_of = |v: i32| int(i32::from(v != 0));
    Ok(match (level, name) {
        (SOL_TCP, libc::TCP_SYNCNT) if !(1..=MAX_SYNCNT).contains(&v) => return Err(Errno::EINVAL),
        (SOL_TCP, libc::TCP_LINGER2) => int(match v {
            ..0 => -1,
            0 => FIN_TIMEOUT,
            _ => v.min(MAX_LINGER2),
        }),
        (SOL_TCP, libc::TCP_DEFER_ACCEPT) => int(defer_accept_rounded(v)),
        (SOL_TCP, libc::TCP_USER_TIMEOUT) if v < 0 => return Err(Errno::EINVAL),
        (SOL_TCP, libc::TCP_MAXSEG) if v != 0 && !(MIN_MSS..=MAX_MSS).contains(&v) => {
            return Err(Errno::EINVAL);
        }
        (SOL_TCP, libc::TCP_INQ) if !(0..=1).contains(&v) => return Err(Errno::EINVAL),
        (SOL_TCP, libc::TCP_WINDOW_CLAMP) => match v {
            0 if !closed => return Err(Errno::EINVAL),
            0 => int(0),
            _ => int(v.max(MIN_RCVBUF / 2)),
        },
        (SOL_IP, libc::IP_MTU_DISCOVER) if !(0..=5).contains(&v) => return Err(Errno::EINVAL),
        (SOL_IP, libc::IP_MULTICAST_TTL) => match v {
            -1 => int(1),
            0..=255 => int(v),
            _ => return Err(Errno::EINVAL),
        },
        (SOL_TCP, libc::TCP_QUICKACK)
        | (
            SOL_IP,
            libc::IP_MULTICAST_LOOP
            | libc::IP_RECVTTL
            | libc::IP_RECVERR
            | libc::IP_PKTINFO
            | libc::IP_RECVTOS
            | libc::IP_FREEBIND
            | libc::IP_TRANSPARENT,
        )
        | (
            SOL_SOCKET,
            libc::SO_TIMESTAMP
            | libc::SO_TIMESTAMPNS
            | libc::SO_NO_CHECK
            | libc::SO_OOBINLINE
            | libc::SO_DONTROUTE
            | libc::SO_ZEROCOPY,
        ) => bool_of(v),
        (SOL_SOCKET, libc::SO_RCVLOWAT) => int(if v == 0 { 1 } else { v }),
        _ => int(v),
    })
}

/// `TCP_MAXSEG` as Linux reads it: the value set (or 536) before the
/// connection exists, the segment size in use after.
fn max_seg(s: &Sentry, key: GKey) -> i32 {
    let g = &s.socks[key];
    let user = g
        .extra
        .get(&(SOL_TCP, libc::TCP_MAXSEG))
        .map_or(0, |v| read_int(v));
    if g.is_connected() {
        let mss = mss(s);
        if user > 0 { mss.min(user) } else { mss }
    } else if user > 0 {
        user
    } else {
        DEFAULT_MSS
    }
}

pub(super) fn ioctl(s: &mut Sentry, n: &Notif) -> Outcome {
    use crate::ifreq::{self, SocketFamily};
    let cmd = n.args[1] as u32;
    let arg = n.args[2];
    let r = step!(s.resolve(n, n.args[0]).map_err(errno));
    if r.key.is_none() && matches!(u64::from(cmd), libc::FIONREAD | libc::TIOCOUTQ) {
        return Outcome::Reply(crate::sys::Reply::Continue);
    }
    let family = match r.key.map(|k| (s.socks[k].kind, s.socks[k].v6)) {
        Some((Kind::Netlink, _)) => SocketFamily::Other,
        Some((_, true)) => SocketFamily::Inet6,
        Some((_, false)) => SocketFamily::Inet,
        None => {
            // glibc asks interface questions through any socket, AF_UNIX
            // included: those get the sandbox's interfaces; the rest is
            // the kernel's to answer.
            if crate::sys::socket_cookie(r.file.as_fd()).is_err()
                || !ifreq::is_ifreq_ioctl(SocketFamily::Other, cmd)
            {
                return Outcome::Reply(crate::sys::Reply::Continue);
            }
            SocketFamily::Other
        }
    };
    let tcp = r.key.is_some_and(|k| s.socks[k].kind == Kind::Tcp);
    if let Some(key) = r.key
        && matches!(u64::from(cmd), libc::FIONREAD | libc::TIOCOUTQ)
    {
        let v = if u64::from(cmd) == libc::FIONREAD {
            queued_in(s, key, &r.file)
        } else {
            queued_out(s, key)
        };
        return match v {
            Ok(v) => done(s.wr(n, arg, &v.to_ne_bytes())),
            Err(e) => errno(e),
        };
    }
    let nics: Vec<netstack::NicInfo> = s.stack.nics().cloned().collect();
    match cmd {
        ifreq::SIOCGIFCONF => {
            let b = step!(s.rd_array::<16>(n, arg).map_err(errno));
            let len = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            let buf = abi::u64_at(&b, 8);
            if buf == 0 {
                let need = ifreq::ifconf_len(&nics);
                return done(s.wr(n, arg, &(need as i32).to_ne_bytes()));
            }
            let (records, used) = ifreq::ifconf(&nics, len.max(0) as usize);
            if let Err(e) = s.wr(n, buf, &records) {
                return errno(e);
            }
            done(s.wr(n, arg, &(used as i32).to_ne_bytes()))
        }
        // SIOCATMARK: TCP only; never at the urgent mark (no urgent data).
        0x8905 if tcp => done(s.wr(n, arg, &0i32.to_ne_bytes())),
        0x8905 => errno(Errno::ENOTTY),
        // SIOCGSTAMP, SIOCGSTAMPNS: no packet was time-stamped.
        0x8906 | 0x8907 => errno(Errno::ENOENT),
        _ => {
            let mut req = match s.rd_array::<{ ifreq::IFREQ_SIZE }>(n, arg) {
                Ok(b) => b,
                Err(e) => return errno(e),
            };
            match ifreq::ifreq_ioctl_on(family, cmd, &mut req, &nics) {
                Ok(()) => done(s.wr(n, arg, &req)),
                Err(e) => errno(Errno::from(e)),
            }
        }
    }
}

/// `FIONREAD`: a stream's bytes readable now (in the pair and still in the
/// stack); a datagram socket's next datagram size, as Linux answers.
fn queued_in(s: &mut Sentry, key: GKey, guest: &std::os::fd::OwnedFd) -> Result<i32, Errno> {
    let g = &s.socks[key];
    if g.is_listening() {
        return Err(Errno::EINVAL);
    }
    let (kind, id) = (g.kind, g.id);
    if kind == Kind::Tcp {
        let in_pair = crate::sys::inq(guest.as_fd()).map_err(|e| Errno::of_io(&e, Errno::EIO))?;
        let in_stack = id.map_or(0, |id| s.stack.recv_queue(id).unwrap_or(0));
        return Ok(in_pair.saturating_add(i32::try_from(in_stack).unwrap_or(i32::MAX)));
    }
    // The head of the pair is the oldest datagram.
    let flags = nix::sys::socket::MsgFlags::MSG_PEEK
        | nix::sys::socket::MsgFlags::MSG_TRUNC
        | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
    let mut none = [0u8; 0];
    if let Ok(len) = nix::sys::socket::recv(guest.as_raw_fd(), &mut none, flags)
        && crate::sys::inq(guest.as_fd()).is_ok_and(|q| q > 0)
    {
        return Ok(i32::try_from(len).unwrap_or(i32::MAX));
    }
    Ok(id.map_or(0, |id| {
        i32::try_from(s.stack.recv_queue(id).unwrap_or(0)).unwrap_or(i32::MAX)
    }))
}

/// `TIOCOUTQ` (`SIOCOUTQ`): a stream's bytes not yet acknowledged, those
/// the Sentry has not taken from the pair included.
fn queued_out(s: &mut Sentry, key: GKey) -> Result<i32, Errno> {
    let g = &s.socks[key];
    if g.is_listening() {
        return Err(Errno::EINVAL);
    }
    if g.kind != Kind::Tcp {
        return Ok(0);
    }
    // A connect's filler is not the guest's.
    let filler = match g.phase {
        crate::gsock::Phase::Connecting { filler } => i32::try_from(filler).unwrap_or(i32::MAX),
        _ => 0,
    };
    let in_pair = g
        .end
        .as_ref()
        .map_or(Ok(0), |end| crate::sys::inq(end.as_fd()))
        .unwrap_or(0)
        .saturating_sub(filler);
    let pending = i32::try_from(g.tx.len()).unwrap_or(i32::MAX);
    let in_stack = g.id.map_or(0, |id| s.stack.send_queue(id).unwrap_or(0));
    Ok(in_pair
        .saturating_add(pending)
        .saturating_add(i32::try_from(in_stack).unwrap_or(i32::MAX)))
}
