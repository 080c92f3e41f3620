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
    /// Its hop limit and traffic class (for `IP_RECVTTL` and the like).
    pub marks: netstack::IpMarks,
}

/// Where a datagram came from and went to, and its IP marks: what its
/// control messages and address say when the guest reads it.
pub type Origin = (SocketAddr, Option<std::net::IpAddr>, netstack::IpMarks);

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
    /// The Sentry's end of the pair; none while a TCP socket is neither
    /// connected nor listening (its guest end is then a lone socket, see
    /// `crate::connector`).
    pub end: Option<OwnedFd>,
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
    pub rx_from: Option<Origin>,
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
    /// The Sentry's end has seen its peer shut down or close (EPOLLRDHUP
    /// or EPOLLHUP): an edge that does not come twice, so the pumps read
    /// on to end of file rather than stopping at a short read.
    pub hangup_seen: bool,
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
    pub fn new(
        kind: Kind,
        v6: bool,
        ty: i32,
        protocol: i32,
        end: Option<OwnedFd>,
        cookie: u64,
    ) -> Self {
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
            hangup_seen: false,
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
        if self.end.is_none() {
            return false;
        }
        match self.phase {
            Phase::Connecting { .. } => false,
            Phase::Connected | Phase::Listening(_) => true,
            Phase::Idle | Phase::Reset => self.is_dgram() || self.guest_gone,
        }
    }

    /// Whether the pumps move what the stack received into the pair.
    pub fn gives_to_guest(&self) -> bool {
        if self.guest_gone || self.end.is_none() {
            return false;
        }
        match self.phase {
            Phase::Connecting { .. } | Phase::Listening(_) | Phase::Reset => false,
            Phase::Connected => true,
            Phase::Idle => self.is_dgram(),
        }
    }

    /// The Sentry's end as a raw descriptor: -1 (so EBADF) before the pair
    /// exists, when the pumps never run (`takes_from_guest`,
    /// `gives_to_guest`).
    pub fn end_fd(&self) -> std::os::fd::RawFd {
        self.end
            .as_ref()
            .map_or(-1, std::os::fd::AsRawFd::as_raw_fd)
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

    /// The sender of the datagram the guest is about to read from its end
    /// (`data`, of `full_len` bytes): the first record that matches it;
    /// older records are of datagrams the guest read natively and go. The
    /// match goes too unless the guest only `peek`s.
    pub fn take_delivered(&mut self, data: &[u8], full_len: usize, peek: bool) -> Option<Origin> {
        // A truncated copy cannot be hashed: its length alone must do.
        let hash = (data.len() == full_len).then(|| payload_hash(data));
        let pos = self
            .delivered
            .iter()
            .position(|d| d.len == full_len && hash.is_none_or(|h| h == d.hash))?;
        let d = &self.delivered[pos];
        let found = (d.from, d.to, d.marks);
        let upto = if peek { pos } else { pos + 1 };
        self.delivered.drain(..upto);
        Some(found)
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

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use super::*;

    fn sock(kind: Kind) -> GSock {
        let end: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        GSock::new(kind, false, 0, 0, Some(end), 1)
    }

    fn stack_id() -> SocketId {
        let mut stack = netstack::Stack::new(
            netstack::StackConfig::default(),
            netstack::Instant::from_micros(0),
        );
        stack
            .socket(netstack::Domain::Ipv4, netstack::Protocol::Tcp)
            .unwrap()
    }

    #[test]
    fn a_listener_keeps_its_pending_connections_when_it_listens_again() {
        let mut g = sock(Kind::Tcp);
        assert!(g.queue().is_none());
        g.listen(4);
        let peer: SocketAddr = "10.0.0.2:80".parse().unwrap();
        g.queue_mut().unwrap().stash.push_back((stack_id(), peer));
        g.listen(9);
        let q = g.queue().unwrap();
        assert_eq!((q.backlog, q.stash.len()), (9, 1));
        assert!(g.is_listening() && !g.is_connected() && !g.is_connecting());
    }

    #[test]
    fn a_connect_ends_connected_or_idle_and_gives_its_filler_back() {
        let mut g = sock(Kind::Tcp);
        g.connecting(4480);
        assert!(g.is_connecting());
        assert_eq!(g.connect_ended(true), 4480);
        assert!(g.is_connected());
        let mut g = sock(Kind::Tcp);
        g.connecting(100);
        assert_eq!(g.connect_ended(false), 100);
        assert!(matches!(g.phase, Phase::Idle));
        // No filler when no connect was under way.
        assert_eq!(g.connect_ended(true), 0);
    }

    #[test]
    fn a_reset_is_left_to_the_pair_only_when_established_and_nobody_waits() {
        let mut g = sock(Kind::Tcp);
        assert!(!g.reset(), "not established");
        g.established();
        assert!(g.reset());
        assert!(matches!(g.phase, Phase::Reset));
        assert!(g.finished());
    }

    #[test]
    fn what_the_pumps_move_follows_the_phase() {
        let mut tcp = sock(Kind::Tcp);
        assert!(!tcp.takes_from_guest() && !tcp.gives_to_guest());
        tcp.connecting(1);
        assert!(!tcp.takes_from_guest() && !tcp.gives_to_guest());
        tcp.established();
        assert!(tcp.takes_from_guest() && tcp.gives_to_guest());
        tcp.guest_gone = true;
        assert!(tcp.takes_from_guest() && !tcp.gives_to_guest());
        let mut l = sock(Kind::Tcp);
        l.listen(1);
        assert!(l.takes_from_guest() && !l.gives_to_guest());
        let mut gone = sock(Kind::Tcp);
        gone.guest_gone = true;
        assert!(
            gone.takes_from_guest(),
            "an unconnected socket's close is read"
        );
        let udp = sock(Kind::Udp);
        assert!(udp.takes_from_guest() && udp.gives_to_guest());
    }

    #[test]
    fn a_closed_socket_goes_once_its_bytes_reached_the_stack() {
        let mut g = sock(Kind::Tcp);
        g.established();
        g.guest_gone = true;
        assert!(!g.finished());
        g.guest_eof = true;
        g.tx.push(1);
        assert!(!g.finished());
        g.tx.clear();
        assert!(g.finished());
    }

    #[test]
    fn delivered_records_match_what_the_guest_reads() {
        let mut g = sock(Kind::Udp);
        let from = |p| SocketAddr::from(([10, 0, 0, 1], p));
        for (port, data) in [(1, &b"aa"[..]), (2, b"bbb"), (3, b"cc")] {
            g.delivered.push_back(Delivered {
                len: data.len(),
                hash: payload_hash(data),
                from: from(port),
                to: None,
                marks: netstack::IpMarks::default(),
            });
        }
        // The guest read "aa" natively: its record goes with the match.
        assert_eq!(
            g.take_delivered(b"bbb", 3, true),
            Some((from(2), None, netstack::IpMarks::default()))
        );
        assert_eq!(g.delivered.len(), 2, "a peek keeps the match");
        assert_eq!(
            g.take_delivered(b"bbb", 3, false),
            Some((from(2), None, netstack::IpMarks::default()))
        );
        // A truncated read matches by length.
        assert_eq!(
            g.take_delivered(b"c", 2, false),
            Some((from(3), None, netstack::IpMarks::default()))
        );
        assert!(g.delivered.is_empty());
        assert_eq!(g.take_delivered(b"zz", 2, false), None);
    }
}
