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

/// Connections a listener took from the stack's accept queue, which the
/// guest has not accepted yet.
#[derive(Debug, Default)]
pub struct AcceptQueue {
    /// The listen backlog.
    pub backlog: usize,
    /// The connections and their peers, oldest first.
    pub stash: VecDeque<(SocketId, SocketAddr)>,
    /// Token bytes in the pair (one per stashed connection, as far as
    /// there was room), so that the guest's `poll` sees the listener readable.
    pub tokens: usize,
}

impl AcceptQueue {
    /// Whether the stash takes another connection (the backlog, plus one
    /// as Linux's `sk_acceptq_is_full` allows).
    pub fn has_room(&self) -> bool {
        self.stash.len() < self.backlog + 1
    }

    /// Token bytes still to write into the pair.
    pub fn tokens_owed(&self) -> usize {
        self.stash.len().saturating_sub(self.tokens)
    }
}

/// A guest socket's phase. The pair has no state of its own for two of
/// them, so the Sentry fakes them: a listener's end holds a token byte per
/// pending connection, and a connecting socket's end is kept not writable.
///
/// ```text
///   Idle ──listen──▶ Listening            (and listen again: new backlog)
///   Idle ──connect, pending──▶ Connecting ──ended──▶ Connected | Idle (failed)
///   Idle ──connect done / accepted──▶ Connected ──reset, nobody waiting──▶ Reset
/// ```
/// Datagram and netlink sockets stay `Idle`: their pairs carry datagrams
/// whatever the association.
#[derive(Debug, Default)]
pub enum Phase {
    /// Neither connected nor listening (a new socket, a datagram socket, a
    /// TCP socket whose connect failed).
    #[default]
    Idle,
    /// A TCP connect is under way: `filler` bytes sit in the pair so that
    /// the guest's end polls not writable (its send buffer shrunk, so a few
    /// kilobytes do it).
    Connecting {
        /// Bytes written into the guest's end, to read back.
        filler: usize,
    },
    /// Established (connect succeeded, or accepted): bytes move.
    Connected,
    /// Listening, with the connections waiting to be accepted.
    Listening(AcceptQueue),
    /// An established connection was reset with no call waiting on it: the
    /// record goes, and the guest's end reports ECONNRESET by itself.
    Reset,
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
    /// Where the socket is in its life: the part of its state that the
    /// pair has to fake, and that decides what the pumps do.
    pub phase: Phase,
    /// A non-blocking connect's failure, reported once by `SO_ERROR`.
    pub connect_error: Option<crate::errno::Errno>,
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
    /// The Sentry's end has its full send buffer (a stream's is given it
    /// when the pump first runs out of room).
    pub end_sized: bool,
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
            phase: Phase::Idle,
            connect_error: None,
            tx: Vec::new(),
            rx: Vec::new(),
            rx_from: None,
            readable: false,
            out_armed: false,
            end_sized: kind != Kind::Tcp,
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
        }
    }

    /// Whether the pair carries datagrams (SOCK_SEQPACKET) rather than a stream.
    pub fn is_dgram(&self) -> bool {
        self.kind != Kind::Tcp
    }

    /// Established: a stream's bytes move.
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected)
    }

    /// `listen` was called.
    pub fn is_listening(&self) -> bool {
        matches!(self.phase, Phase::Listening(_))
    }

    /// A connect is under way (its filler is in the pair).
    pub fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting { .. })
    }

    /// The listener's pending connections.
    pub fn queue(&self) -> Option<&AcceptQueue> {
        match &self.phase {
            Phase::Listening(q) => Some(q),
            _ => None,
        }
    }

    /// The listener's pending connections, to change.
    pub fn queue_mut(&mut self) -> Option<&mut AcceptQueue> {
        match &mut self.phase {
            Phase::Listening(q) => Some(q),
            _ => None,
        }
    }

    /// Whether the pumps move bytes from the guest into the stack: a
    /// datagram socket always (each datagram carries or finds its peer), a
    /// stream once established, a listener (to drain what the guest wrote
    /// into it), or one the guest closed (to see the end of file); never
    /// while the pair is faking a connect.
    pub fn takes_from_guest(&self) -> bool {
        match self.phase {
            Phase::Connecting { .. } => false,
            Phase::Connected | Phase::Listening(_) => true,
            Phase::Idle | Phase::Reset => self.is_dgram() || self.guest_gone,
        }
    }

    /// Whether the pumps move what the stack received into the pair.
    pub fn gives_to_guest(&self) -> bool {
        if self.guest_gone {
            return false;
        }
        match self.phase {
            Phase::Connecting { .. } | Phase::Listening(_) | Phase::Reset => false,
            Phase::Connected => true,
            Phase::Idle => self.is_dgram(),
        }
    }

    /// `listen` succeeded: a listener keeps its pending connections when
    /// called again.
    pub fn listen(&mut self, backlog: usize) {
        match &mut self.phase {
            Phase::Listening(q) => q.backlog = backlog,
            _ => {
                self.phase = Phase::Listening(AcceptQueue {
                    backlog,
                    ..AcceptQueue::default()
                });
            }
        }
    }

    /// A connect is under way, with `filler` bytes in the pair.
    pub fn connecting(&mut self, filler: usize) {
        self.phase = Phase::Connecting { filler };
    }

    /// Established (a connect succeeded, or the socket was accepted).
    pub fn established(&mut self) {
        self.phase = Phase::Connected;
    }

    /// A pending connect ended, `established` or not (its error is kept for
    /// `SO_ERROR`): the filler bytes to take back out of the pair.
    pub fn connect_ended(&mut self, established: bool) -> usize {
        let filler = match self.phase {
            Phase::Connecting { filler } => filler,
            _ => 0,
        };
        self.phase = if established {
            Phase::Connected
        } else {
            Phase::Idle
        };
        filler
    }

    /// The stack reset the connection. Reported through the guest's end
    /// alone when it was established and no call waits (true then);
    /// otherwise the calls waiting hear it.
    pub fn reset(&mut self) -> bool {
        if self.is_connected() && self.parked.is_empty() {
            self.phase = Phase::Reset;
            return true;
        }
        false
    }

    /// Whether the record can go: reset and nobody waits, or the guest
    /// closed its end and everything it wrote reached the stack.
    pub fn finished(&self) -> bool {
        if !self.parked.is_empty() {
            return false;
        }
        matches!(self.phase, Phase::Reset)
            || (self.guest_gone && self.guest_eof && self.tx.is_empty())
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
