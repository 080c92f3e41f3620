//! A guest socket: the Sentry's end of the AF_UNIX pair, the netstack socket
//! behind it, and the state that moves bytes between the two.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use netstack::SocketId;

slotmap::new_key_type! {
    /// Names one guest socket in the Sentry.
    pub struct GKey;
}

/// What a guest socket is, as `SO_PROTOCOL`/`SO_TYPE` tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SOCK_STREAM, IPPROTO_TCP.
    Tcp,
    /// SOCK_DGRAM, IPPROTO_UDP.
    Udp,
    /// SOCK_DGRAM, IPPROTO_ICMP / IPPROTO_ICMPV6 (a ping socket).
    Icmp,
    /// AF_NETLINK, NETLINK_ROUTE (emulated).
    Netlink,
}

/// A datagram handed to the guest through the pair: its sender, and enough
/// to recognise it again when a trapped `recvfrom` reads it back.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    /// Payload length.
    pub len: usize,
    /// Hash of the payload.
    pub hash: u64,
    /// Sender.
    pub from: SocketAddr,
    /// Where it was sent to (for `IP_PKTINFO`).
    pub to: Option<std::net::IpAddr>,
}

/// One guest socket.
#[derive(Debug)]
pub struct GSock {
    /// Protocol.
    pub kind: Kind,
    /// AF_INET6 (for Tcp/Udp/Icmp).
    pub v6: bool,
    /// The type the guest asked for (`SO_TYPE`).
    pub ty: i32,
    /// The protocol number (`SO_PROTOCOL`).
    pub protocol: i32,
    /// The netstack socket (none for netlink).
    pub id: Option<SocketId>,
    /// The Sentry's end of the pair.
    pub end: OwnedFd,
    /// `SO_COOKIE` of the guest's end.
    pub cookie: u64,
    /// A TCP connection is established (accepted, or connect succeeded):
    /// only then do bytes move, so a pending connect's error is left for
    /// `connect` and `SO_ERROR` to report.
    pub connected: bool,
    /// `listen` was called.
    pub listening: bool,
    /// The listen backlog.
    pub backlog: usize,
    /// Connections taken from the stack's accept queue, not yet accepted by the guest.
    pub stash: VecDeque<(SocketId, SocketAddr)>,
    /// Token bytes in the pair (one per stashed connection).
    pub tokens: usize,
    /// Filler bytes in the pair while a non-blocking connect is under way.
    pub filler: usize,
    /// A non-blocking connect's failure, reported once by `SO_ERROR`.
    pub connect_error: Option<i32>,
    /// Bytes read from the pair that the stack has not taken yet.
    pub tx: Vec<u8>,
    /// Bytes (or one datagram) from the stack that the pair has not taken yet.
    pub rx: Vec<u8>,
    /// Where `rx` came from and was sent to (datagram sockets).
    pub rx_from: Option<(SocketAddr, Option<std::net::IpAddr>)>,
    /// The Sentry's end may hold something to read: set by each readable
    /// edge, cleared when a read finds it empty, so that a socket the stack
    /// wakes does not cost a read that finds nothing.
    pub readable: bool,
    /// The epoll registration includes EPOLLOUT (see `Sentry::arm_out`).
    pub out_armed: bool,
    /// The guest's side of the pair reached end of file.
    pub guest_eof: bool,
    /// The guest closed its last descriptor.
    pub guest_gone: bool,
    /// The guest shut the receiving side of a datagram socket: nothing more
    /// goes into the pair.
    pub shut_rd: bool,
    /// End of file was passed on to the guest.
    pub stack_eof: bool,
    /// Datagrams in the pair, oldest first.
    pub delivered: VecDeque<Delivered>,
    /// Netlink port id.
    pub nl_port: u32,
    /// `SO_RCVTIMEO`.
    pub rcvtimeo: Option<Duration>,
    /// `SO_SNDTIMEO`.
    pub sndtimeo: Option<Duration>,
    /// Options kept for `getsockopt` that the stack has no use for.
    pub extra: std::collections::HashMap<(i32, i32), Vec<u8>>,
    /// Blocked calls waiting on this socket.
    pub parked: VecDeque<crate::sentry::Parked>,
    /// Where the guest last named this socket: a thread and its descriptor
    /// number (the Sentry reaches the guest's end through it to report a
    /// reset, see `Sentry::report_reset`).
    pub home: Option<(u32, i32)>,
    /// The connection was reset: once no call waits on it, the record goes
    /// and the guest's end reports ECONNRESET by itself.
    pub reset: bool,
}

impl GSock {
    /// A fresh socket record.
    pub fn new(kind: Kind, v6: bool, ty: i32, protocol: i32, end: OwnedFd, cookie: u64) -> Self {
        GSock {
            kind,
            v6,
            ty,
            protocol,
            id: None,
            end,
            cookie,
            connected: false,
            listening: false,
            backlog: 0,
            stash: VecDeque::new(),
            tokens: 0,
            filler: 0,
            connect_error: None,
            tx: Vec::new(),
            rx: Vec::new(),
            rx_from: None,
            readable: false,
            out_armed: false,
            guest_eof: false,
            guest_gone: false,
            shut_rd: false,
            stack_eof: false,
            delivered: VecDeque::new(),
            nl_port: 0,
            rcvtimeo: None,
            sndtimeo: None,
            extra: std::collections::HashMap::new(),
            parked: VecDeque::new(),
            home: None,
            reset: false,
        }
    }

    /// Whether the pair carries datagrams (SOCK_SEQPACKET) rather than a stream.
    pub fn is_dgram(&self) -> bool {
        self.kind != Kind::Tcp
    }
}

/// The hash that recognises a datagram again (not a security boundary: a
/// collision only matters between identical payloads).
pub fn payload_hash(data: &[u8]) -> u64 {
    // FNV-1a over 8-byte words, then the tail.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(0x0100_0000_01b3);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^ data.len() as u64
}
