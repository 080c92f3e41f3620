//! Linux socket semantics on top of smoltcp: the per-socket state the stack
//! keeps, the options a socket carries, and the address conversions between
//! the caller's `std::net` view (IPv4-mapped IPv6 included) and smoltcp's.
//!
//! Each protocol module adds its operations to [`Stack`](crate::Stack) in an
//! `impl` block of its own; the stack owns every socket in one slot map.

pub(crate) mod icmp;
pub(crate) mod tcp;
pub(crate) mod udp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::buffers::Lease;
use crate::error::{NetError, Result};

slotmap::new_key_type! {
    /// Names one socket of a [`Stack`](crate::Stack). Stale ids are detected, never reused.
    pub struct SocketId;
}

/// The address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    /// AF_INET.
    Ipv4,
    /// AF_INET6 (dual-stack unless `IPV6_V6ONLY`).
    Ipv6,
}

/// The kind of socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// SOCK_STREAM / IPPROTO_TCP.
    Tcp,
    /// SOCK_DGRAM / IPPROTO_UDP.
    Udp,
    /// SOCK_DGRAM / IPPROTO_ICMP or IPPROTO_ICMPV6: a "ping socket".
    Icmp,
}

/// Which direction `shutdown` closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SHUT_RD.
    Read,
    /// SHUT_WR.
    Write,
    /// SHUT_RDWR.
    Both,
}

/// What a poll on the socket would report (POLLIN, POLLOUT, POLLRDHUP, POLLHUP, POLLERR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Data (or a pending connection, or end of file) can be read without blocking.
    pub readable: bool,
    /// Data can be written without blocking.
    pub writable: bool,
    /// The peer closed its sending side.
    pub read_hangup: bool,
    /// Both directions are closed.
    pub hangup: bool,
    /// An error is pending (`SO_ERROR`).
    pub error: bool,
}

/// Flags of a receive call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvFlags {
    /// MSG_PEEK: leave the data queued.
    pub peek: bool,
}

/// What a datagram receive returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Bytes copied into the caller's buffer.
    pub copied: usize,
    /// The datagram's full length (larger than `copied` when truncated: MSG_TRUNC).
    pub len: usize,
    /// The sender.
    pub from: SocketAddr,
    /// The address the datagram was sent to (UDP; `IP_PKTINFO`'s `ipi_addr`).
    pub to: Option<IpAddr>,
    /// Its IP header's hop limit and traffic class (UDP).
    pub marks: IpMarks,
}

/// A datagram's IP hop limit (TTL) and traffic class (TOS), for
/// `IP_RECVTTL`, `IP_RECVTOS`, `IPV6_RECVHOPLIMIT` and `IPV6_RECVTCLASS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpMarks {
    pub hop_limit: Option<u8>,
    pub class: Option<u8>,
}

impl IpMarks {
    /// Read from a frame whose IP header starts at `ip_at` (after an
    /// Ethernet header or not); none when it is no IPv4 or IPv6 packet.
    pub(crate) fn of_frame(frame: &[u8], ip_at: usize) -> IpMarks {
        if ip_at == 14 && !matches!(frame.get(12..14), Some([0x08, 0x00] | [0x86, 0xdd])) {
            return IpMarks::default();
        }
        let Some(ip) = frame.get(ip_at..) else {
            return IpMarks::default();
        };
        match (ip.first().map(|b| b >> 4), ip.len()) {
            (Some(4), 20..) => IpMarks {
                hop_limit: Some(ip[8]),
                class: Some(ip[1]),
            },
            (Some(6), 40..) => IpMarks {
                hop_limit: Some(ip[7]),
                class: Some((ip[0] << 4) | (ip[1] >> 4)),
            },
            _ => IpMarks::default(),
        }
    }

    /// As smoltcp's packet metadata id carries it from the link to the
    /// socket: bit 16 says a hop limit is there (in bits 8..16), bit 17 a
    /// class (bits 0..8).
    pub(crate) fn pack(self) -> u32 {
        let hop = self.hop_limit.map_or(0, |h| 1 << 16 | u32::from(h) << 8);
        let class = self.class.map_or(0, |c| 1 << 17 | u32::from(c));
        hop | class
    }

    pub(crate) fn unpack(id: u32) -> IpMarks {
        IpMarks {
            hop_limit: (id & 1 << 16 != 0).then_some((id >> 8) as u8),
            class: (id & 1 << 17 != 0).then_some(id as u8),
        }
    }
}

/// A socket option, with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockOpt {
    /// SO_REUSEADDR.
    ReuseAddr(bool),
    /// SO_REUSEPORT.
    ReusePort(bool),
    /// SO_KEEPALIVE.
    KeepAlive(bool),
    /// SO_LINGER: `None` is off, `Some(seconds)`; `Some(0)` makes close send RST.
    Linger(Option<u32>),
    /// SO_RCVBUF, in bytes (as `getsockopt` reports it: twice what was set, like Linux).
    RecvBuffer(usize),
    /// SO_SNDBUF, in bytes (as reported: twice what was set).
    SendBuffer(usize),
    /// SO_BROADCAST.
    Broadcast(bool),
    /// TCP_NODELAY.
    NoDelay(bool),
    /// TCP_CORK: partial segments wait (at most 200 ms) until it is cleared.
    Cork(bool),
    /// TCP_KEEPIDLE, seconds.
    KeepIdle(u32),
    /// TCP_KEEPINTVL, seconds.
    KeepInterval(u32),
    /// TCP_KEEPCNT.
    KeepCount(u32),
    /// IP_TTL / IPV6_UNICAST_HOPS.
    Ttl(u8),
    /// IP_TOS / IPV6_TCLASS.
    Tos(u8),
    /// IPV6_V6ONLY.
    V6Only(bool),
}

/// The name of a socket option, to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockOptName {
    /// SO_REUSEADDR.
    ReuseAddr,
    /// SO_REUSEPORT.
    ReusePort,
    /// SO_KEEPALIVE.
    KeepAlive,
    /// SO_LINGER.
    Linger,
    /// SO_RCVBUF.
    RecvBuffer,
    /// SO_SNDBUF.
    SendBuffer,
    /// SO_BROADCAST.
    Broadcast,
    /// TCP_NODELAY.
    NoDelay,
    /// TCP_CORK.
    Cork,
    /// TCP_KEEPIDLE.
    KeepIdle,
    /// TCP_KEEPINTVL.
    KeepInterval,
    /// TCP_KEEPCNT.
    KeepCount,
    /// IP_TTL.
    Ttl,
    /// IP_TOS.
    Tos,
    /// IPV6_V6ONLY.
    V6Only,
}

/// Largest buffer a socket may ask for (Linux's `rmem_max`/`wmem_max` raised, as
/// a sandbox for throughput wants).
pub const MAX_BUFFER: usize = 16 << 20;
/// Smallest buffer Linux grants (`SOCK_MIN_RCVBUF`).
pub const MIN_BUFFER: usize = 2304;

/// Options every socket carries; each protocol reads the ones it knows.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub reuse_addr: bool,
    pub reuse_port: bool,
    pub keepalive: bool,
    pub keep_idle: u32,
    pub keep_interval: u32,
    pub keep_count: u32,
    pub linger: Option<u32>,
    pub recv_buffer: usize,
    pub send_buffer: usize,
    pub broadcast: bool,
    pub nodelay: bool,
    pub cork: bool,
    pub ttl: Option<u8>,
    pub tos: u8,
    pub v6only: bool,
}

impl Options {
    pub(crate) fn new(recv_buffer: usize, send_buffer: usize) -> Self {
        Options {
            reuse_addr: false,
            reuse_port: false,
            keepalive: false,
            keep_idle: 7200,
            keep_interval: 75,
            keep_count: 9,
            linger: None,
            recv_buffer,
            send_buffer,
            broadcast: false,
            nodelay: false,
            cork: false,
            ttl: None,
            tos: 0,
            v6only: false,
        }
    }
}

/// One smoltcp socket in a set of its own, so that feeding it a frame or
/// polling it for output costs the same however many sockets exist.
pub(crate) struct Slot {
    pub set: SocketSet<'static>,
    pub handle: SocketHandle,
    /// The memory the socket's buffers borrow. Declared after `set`, so it is
    /// dropped (and returned to the pool) only after the socket is gone.
    _leases: [Lease; 2],
}

impl Slot {
    pub(crate) fn new<S: smoltcp::socket::AnySocket<'static>>(
        socket: S,
        leases: [Lease; 2],
    ) -> Slot {
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(socket);
        Slot {
            set,
            handle,
            _leases: leases,
        }
    }
}

/// The set a datagram leaving through `nic` is queued in: the socket's own
/// (`home`), or the send-only one it keeps for that NIC.
pub(crate) fn send_slot<'a, S: smoltcp::socket::AnySocket<'static>>(
    home: &'a mut Slot,
    extra: &'a mut [(usize, Slot)],
    use_home: bool,
    nic: usize,
) -> Result<&'a mut S> {
    let slot = if use_home {
        home
    } else {
        extra
            .iter_mut()
            .find(|(n, _)| *n == nic)
            .map(|(_, s)| s)
            .ok_or(NetError::InvalidInput)?
    };
    Ok(slot.set.get_mut::<S>(slot.handle))
}

/// A local address/port a socket holds, as the bind table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Binding {
    /// `None` is the wildcard.
    pub addr: Option<IpAddress>,
    pub port: u16,
    /// Which families the binding covers (a dual-stack wildcard covers both).
    pub v4: bool,
    pub v6: bool,
    /// An ephemeral port taken by `connect`: other connections may share it
    /// as long as their 4-tuples differ, as on Linux.
    pub shared: bool,
}

impl Binding {
    pub(crate) fn overlaps(&self, other: &Binding) -> bool {
        self.port == other.port
            && ((self.v4 && other.v4) || (self.v6 && other.v6))
            && match (self.addr, other.addr) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Whether a packet addressed to `dst` is for this binding.
    pub(crate) fn matches(&self, dst: IpAddress) -> bool {
        let family = match dst {
            IpAddress::Ipv4(_) => self.v4,
            IpAddress::Ipv6(_) => self.v6,
        };
        family && self.addr.is_none_or(|a| a == dst)
    }
}

/// The per-socket state that is the same for every protocol.
pub(crate) struct Socket {
    pub domain: Domain,
    pub opts: Options,
    pub kind: Kind,
    /// The NIC this socket's packets leave through.
    pub nic: usize,
    /// The deadline armed in the stack's timer heap, if any.
    pub timer: Option<Instant>,
    /// Queued for output processing.
    pub dirty: bool,
    /// Queued in the event list.
    pub evented: bool,
    /// Closed by its owner; lingers until the protocol is done with it.
    pub orphan: bool,
    /// Pending error, reported once (`SO_ERROR`).
    pub error: Option<NetError>,
    pub shut_rd: bool,
    pub shut_wr: bool,
    /// The entry this socket holds in the bind table.
    pub binding: Option<Binding>,
}

pub(crate) enum Kind {
    Tcp(tcp::TcpState),
    Udp(udp::UdpState),
    Icmp(icmp::IcmpState),
}

impl Socket {
    /// A new socket: unbound, no error, no timer, sending through `nic`.
    pub(crate) fn new(domain: Domain, opts: Options, kind: Kind, nic: usize) -> Socket {
        Socket {
            domain,
            opts,
            kind,
            nic,
            timer: None,
            dirty: false,
            evented: false,
            orphan: false,
            error: None,
            shut_rd: false,
            shut_wr: false,
            binding: None,
        }
    }

    pub(crate) fn protocol(&self) -> Protocol {
        match self.kind {
            Kind::Tcp(_) => Protocol::Tcp,
            Kind::Udp(_) => Protocol::Udp,
            Kind::Icmp(_) => Protocol::Icmp,
        }
    }

    /// The binding a socket of this family gets for `addr` (already converted).
    pub(crate) fn binding_for(&self, addr: Option<IpAddress>, port: u16) -> Binding {
        match (self.domain, addr) {
            (Domain::Ipv4, _) | (Domain::Ipv6, Some(IpAddress::Ipv4(_))) => Binding {
                addr,
                port,
                v4: true,
                v6: false,
                shared: false,
            },
            (Domain::Ipv6, _) => Binding {
                addr,
                port,
                v4: addr.is_none() && !self.opts.v6only,
                v6: true,
                shared: false,
            },
        }
    }

    /// Converts a caller's address to smoltcp's form, checking the family.
    pub(crate) fn endpoint(&self, addr: SocketAddr) -> Result<IpEndpoint> {
        match (self.domain, addr) {
            (Domain::Ipv4, SocketAddr::V4(a)) => {
                Ok(IpEndpoint::new(IpAddress::Ipv4(*a.ip()), a.port()))
            }
            (Domain::Ipv6, SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
                // A v6-only socket cannot reach IPv4 peers.
                Some(_) if self.opts.v6only => Err(NetError::NetworkUnreachable),
                Some(v4) => Ok(IpEndpoint::new(IpAddress::Ipv4(v4), a.port())),
                None => Ok(IpEndpoint::new(IpAddress::Ipv6(*a.ip()), a.port())),
            },
            _ => Err(NetError::AddrFamilyNotSupported),
        }
    }

    /// Converts a smoltcp endpoint to what the caller sees (IPv4-mapped on IPv6 sockets).
    pub(crate) fn sockaddr(&self, ep: IpEndpoint) -> SocketAddr {
        sockaddr(self.domain, ep.addr, ep.port)
    }

    /// The wildcard address of this socket's family.
    pub(crate) fn unspecified(&self, port: u16) -> SocketAddr {
        match self.domain {
            Domain::Ipv4 => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            Domain::Ipv6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        }
    }
}

/// Linux sends to the wildcard address as to this host.
pub(crate) fn wildcard_is_local(addr: IpAddress) -> IpAddress {
    match addr {
        IpAddress::Ipv4(a) if a.is_unspecified() => IpAddress::Ipv4(Ipv4Addr::LOCALHOST),
        IpAddress::Ipv6(a) if a.is_unspecified() => IpAddress::Ipv6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

pub(crate) fn sockaddr(domain: Domain, addr: IpAddress, port: u16) -> SocketAddr {
    match (domain, addr) {
        (Domain::Ipv4, IpAddress::Ipv4(a)) => SocketAddr::new(IpAddr::V4(a), port),
        (Domain::Ipv6, IpAddress::Ipv4(a)) => {
            SocketAddr::V6(SocketAddrV6::new(a.to_ipv6_mapped(), port, 0, 0))
        }
        (_, IpAddress::Ipv6(a)) => SocketAddr::V6(SocketAddrV6::new(a, port, 0, 0)),
    }
}

/// Linux doubles what `SO_RCVBUF`/`SO_SNDBUF` ask for (to count its overhead) and
/// reports the doubled value; the stack uses the doubled value as the buffer size.
pub(crate) fn clamp_buffer(requested: usize) -> usize {
    requested.saturating_mul(2).clamp(MIN_BUFFER, MAX_BUFFER)
}

/// A cheap spread of peers over a `SO_REUSEPORT` group.
pub(crate) fn flow_hash(src: IpEndpoint) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    };
    match src.addr {
        IpAddress::Ipv4(a) => a.octets().into_iter().for_each(&mut eat),
        IpAddress::Ipv6(a) => a.octets().into_iter().for_each(&mut eat),
    }
    src.port.to_be_bytes().into_iter().for_each(&mut eat);
    h as usize
}
