//! The event loop: `poll(now)` reads every link and feeds each frame to the
//! socket that owns it (`ingress`, `feed`: a TCP segment, parsed here, to its
//! engine; anything else to the socket's smoltcp set), runs the deadline
//! heap, and sends dirty sockets' output to their NIC (`egress`): TCP
//! segments wrapped in IP through the NIC's raw socket, IPv6 fragments
//! through another.

use std::cmp::Reverse;
use std::net::{IpAddr, SocketAddr};

use smoltcp::iface::PollResult;
use smoltcp::phy::{ChecksumCapabilities, Medium};
use smoltcp::socket::raw;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress,
    IpEndpoint, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Address, Ipv6Packet, Ipv6Repr, TcpControl,
    TcpPacket, TcpRepr,
};

use super::{NEIGHBOR_WAIT, Nic, NicId, Stack, tcp_tx_socket};
use crate::demux::{self, Flow};
use crate::error::{NetError, Result};
use crate::frag6;
use crate::link::{FrameDevice, Link};
use crate::socket::tcp::{TcpState, hop_limit};
use crate::socket::{Kind, Slot, SocketId};
use crate::tcp_engine::{Connection, Segment};

/// Frames read from one link before output is produced: batching lets one
/// ACK answer several segments, as GRO does on Linux.
const INGRESS_BATCH: usize = 64;

impl Stack {
    /// Does all the work due at `now`: reads every link, runs timers, sends.
    pub fn poll(&mut self, now: Instant) {
        self.now = now;
        for nic in &mut self.nics {
            nic.iface.poll_maintenance(now);
        }
        self.run_timers();
        if self.wake_pending {
            self.wake_neighbor_waiters();
        }
        // Host-backed links (those with a descriptor) that had no frame
        // left: new ones make the descriptor readable and bring another
        // poll, so this one does not ask them again (a system call each).
        let mut emptied = 0u64;
        // Bounded: loopback traffic feeds itself, and must not spin forever.
        for _ in 0..1024 {
            let mut work = false;
            for nic in 0..self.nics.len() {
                let bit = 1u64 << (nic % 64);
                if nic < 64 && emptied & bit != 0 {
                    continue;
                }
                for _ in 0..INGRESS_BATCH {
                    let Some(frame) = self.nics[nic].link.recv(now) else {
                        if nic < 64 && self.nics[nic].link.fd().is_some() {
                            emptied |= bit;
                        }
                        break;
                    };
                    work = true;
                    self.ingress(nic, &frame);
                    self.nics[nic].link.recycle(frame);
                }
            }
            while let Some(id) = self.dirty.pop() {
                work = true;
                self.egress(id);
            }
            if !work {
                break;
            }
        }
        self.expire_fragments();
        for nic in &mut self.nics {
            nic.link.flush(now);
        }
    }

    /// When [`Stack::poll`] should run next, if nothing else happens first.
    pub fn poll_at(&self) -> Option<Instant> {
        let mut at = self.timers.peek().map(|Reverse((t, _))| *t);
        for nic in &self.nics {
            let give_up = nic.tcp_tx_waiting.map(|t| t + NEIGHBOR_WAIT);
            for t in [nic.link.poll_at(), give_up].into_iter().flatten() {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        }
        if !self.dirty.is_empty() {
            at = Some(self.now);
        }
        if self.wake_pending
            && let Some(t) = self.last_wake
        {
            let t = t + WAKE_INTERVAL;
            at = Some(at.map_or(t, |a| a.min(t)));
        }
        at
    }

    fn run_timers(&mut self) {
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > self.now {
                break;
            }
            self.timers.pop();
            if let Some(s) = self.sockets.get_mut(id)
                && s.timer == Some(t)
            {
                s.timer = None;
                self.mark_dirty(id);
            }
        }
        if self.timers.len() > 2 * self.sockets.len() + 64 {
            let sockets = &self.sockets;
            self.timers
                .retain(|Reverse((t, id))| sockets.get(*id).is_some_and(|s| s.timer == Some(*t)));
        }
    }

    pub(crate) fn arm_timer(&mut self, id: SocketId, at: Option<Instant>) {
        let Some(s) = self.sockets.get_mut(id) else {
            return;
        };
        if s.timer == at {
            return;
        }
        s.timer = at;
        if let Some(t) = at {
            // A deadline already due is served on the next poll, not in a loop now.
            let t = t.max(self.now);
            s.timer = Some(t);
            self.timers.push(Reverse((t, id)));
        }
    }

    /// Sends an upper-layer packet too large for the NIC as IPv6 fragments.
    pub(crate) fn send_ipv6_fragments(
        &mut self,
        nic: NicId,
        src: Ipv6Address,
        dst: Ipv6Address,
        proto: IpProtocol,
        hop_limit: u8,
        packet: &[u8],
    ) -> Result<()> {
        let ident = self.next_random() as u32;
        let n = &mut self.nics[nic];
        let mtu = n.ip_mtu();
        let raw = n
            .frag_tx
            .set
            .get_mut::<raw::Socket<'static>>(n.frag_tx.handle);
        let pieces = packet.len().div_ceil(mtu.saturating_sub(48).max(8));
        if raw.payload_send_capacity() - raw.send_queue() < packet.len() + pieces * 48 {
            return Err(NetError::WouldBlock);
        }
        let mut ok = true;
        let d = frag6::Datagram {
            src,
            dst,
            next_header: proto,
            hop_limit,
            ident,
        };
        frag6::fragment(&d, packet, mtu, |p| {
            ok &= raw.send_slice(p).is_ok();
        });
        self.flush_fragments(nic);
        if ok {
            Ok(())
        } else {
            Err(NetError::NoBufferSpace)
        }
    }

    fn flush_fragments(&mut self, nic: NicId) {
        let n = &mut self.nics[nic];
        let mut dev = FrameDevice::new(&mut *n.link, &n.device, None, self.now);
        while n.iface.poll_egress(self.now, &mut dev, &mut n.frag_tx.set)
            == PollResult::SocketStateChanged
        {}
    }

    fn expire_fragments(&mut self) {
        // Fragments waiting for a neighbour go out once it answers.
        for nic in 0..self.nics.len() {
            let n = &mut self.nics[nic];
            if n.frag_tx
                .set
                .get_mut::<raw::Socket<'static>>(n.frag_tx.handle)
                .send_queue()
                > 0
            {
                self.flush_fragments(nic);
            }
            let n = &mut self.nics[nic];
            if n.tcp_tx_waiting.is_some()
                || n.tcp_tx
                    .get_mut::<raw::Socket<'static>>(n.tcp_tx_handle)
                    .send_queue()
                    > 0
            {
                flush_tcp(n, self.now);
            }
        }
        self.reassembler.expire(self.now);
        // Bounded: a flood of first fragments must not grow this without end.
        // Losing an owner only loses that datagram, as a full reassembly queue would.
        if self.frag_owners.len() > 1024 {
            let now = self.now;
            self.frag_owners
                .retain(|_, (_, at)| now < *at + Duration::from_secs(60));
            if self.frag_owners.len() > 4096 {
                self.frag_owners.clear();
            }
        }
    }

    fn ingress(&mut self, nic: NicId, frame: &[u8]) {
        // A frame for another host's MAC (a bridge floods unknown unicast,
        // a veth's peer may send anything): Linux drops it as
        // PACKET_OTHERHOST, and so do we, before any socket sees it.
        if let Some(own) = self.nics[nic].info.mac
            && self.nics[nic].caps.medium == Medium::Ethernet
            && let Ok(eth) = EthernetFrame::new_checked(frame)
            && eth.dst_addr().is_unicast()
            && eth.dst_addr() != EthernetAddress(own)
        {
            return;
        }
        let flow = demux::classify(self.nics[nic].caps.medium, frame);
        let target = match flow {
            Flow::Tcp {
                dst,
                src,
                syn,
                ack,
                rst,
            } => match self.tcp_target(dst, src, syn, ack, rst) {
                Some(Some(id)) => Some(id),
                Some(None) if self.nics[nic].transparent && syn && !ack && !rst => {
                    self.intercepted.push(super::Intercepted {
                        nic,
                        local: SocketAddr::from((IpAddr::from(dst.addr), dst.port)),
                        remote: SocketAddr::from((IpAddr::from(src.addr), src.port)),
                        frame: frame.to_vec(),
                    });
                    return;
                }
                Some(None) => None,
                // Dropped, as Linux drops a SYN to a full accept queue.
                None => return,
            },
            Flow::Udp { dst, src } => self.udp_target(dst, src),
            Flow::Fragment { key, .. } if matches!(key.src, IpAddress::Ipv6(_)) => {
                let medium = self.nics[nic].caps.medium;
                if let Some(whole) = self.reassembler.add(medium, key, frame, self.now) {
                    self.ingress(nic, &whole);
                }
                return;
            }
            Flow::Fragment { key, ports } => {
                let owner = match ports {
                    Some((IpProtocol::Udp, dst, src)) => self.udp_target(dst, src),
                    Some((_, dst, src)) => self.tcp_conns.get(&(dst, src)).copied(),
                    None => None,
                };
                match owner {
                    Some(id) => {
                        self.frag_owners.insert(key, (id, self.now));
                        Some(id)
                    }
                    None => self.frag_owners.get(&key).map(|(id, _)| *id),
                }
            }
            Flow::EchoReply { v6, ident } => self.icmp_idents.get(&(v6, ident)).copied(),
            Flow::Unreachable {
                proto,
                local,
                remote,
                port,
            } => {
                self.icmp_error(proto, local, remote, port);
                None
            }
            Flow::Neighbor(learned) => {
                learn_mac(&mut self.nics[nic], frame, self.now);
                if let Some(addr) = learned {
                    let seen = &mut self.nics[nic].neighbors;
                    if seen.len() >= 4096 {
                        seen.clear();
                    }
                    seen.insert(addr);
                }
                None
            }
            Flow::Other => None,
        };
        match target {
            Some(id) if self.sockets.contains_key(id) => self.feed(nic, id, frame),
            _ => {
                let n = &mut self.nics[nic];
                let mut dev = FrameDevice::new(&mut *n.link, &n.device, Some(frame), self.now);
                n.iface
                    .poll_ingress_single(self.now, &mut dev, &mut self.empty);
            }
        }
        if let Flow::Neighbor(_) = flow {
            self.wake_neighbor_waiters();
        }
    }

    /// An ICMP error about a packet we sent: a hard error for a connected UDP
    /// socket and for a TCP connect in progress, as Linux treats them.
    fn icmp_error(&mut self, proto: IpProtocol, local: IpEndpoint, remote: IpEndpoint, port: bool) {
        let err = if port {
            NetError::ConnectionRefused
        } else {
            NetError::HostUnreachable
        };
        let id = match proto {
            IpProtocol::Udp => self.udp_ports.get(&local.port).and_then(|ids| {
                ids.iter().copied().find(|&id| {
                    matches!(self.sockets.get(id).map(|s| &s.kind),
                        Some(Kind::Udp(u)) if u.peer == Some(remote))
                })
            }),
            IpProtocol::Tcp => self.tcp_conns.get(&(local, remote)).copied(),
            _ => None,
        };
        let Some(id) = id else {
            return;
        };
        if proto == IpProtocol::Tcp {
            self.tcp_connect_failed(id, err);
        } else if let Some(s) = self.sockets.get_mut(id) {
            s.error = Some(err);
            self.mark_event(id);
        }
    }

    /// Feeds a frame to the set that owns it, then lets the protocol react.
    fn feed(&mut self, nic: NicId, id: SocketId, frame: &[u8]) {
        let Some(sock) = self.sockets.get_mut(id) else {
            return;
        };
        if let Kind::Tcp(t) = &sock.kind {
            if !matches!(t, TcpState::Conn(_) | TcpState::Listening(_)) {
                return;
            }
            let n = &mut self.nics[nic];
            // Asked of the link once, when it joined (`device_caps`).
            let checksum = n.device.checksum.clone();
            // A malformed segment, a bad checksum or an IPv4 fragment (which
            // no TCP of ours sends; the peer's MSS keeps them away) is
            // dropped, as by Linux.
            if let Some((src, dst, repr)) = parse_tcp(n.caps.medium, frame, &checksum) {
                self.tcp_input(nic, id, dst, src, &repr);
            }
            return;
        }
        let slot = match &mut sock.kind {
            Kind::Tcp(_) => None,
            Kind::Udp(u) => Some(&mut u.slot),
            Kind::Icmp(i) => Some(&mut i.slot),
        };
        let Some(slot) = slot else {
            return;
        };
        let n = &mut self.nics[nic];
        let mut dev = FrameDevice::new(&mut *n.link, &n.device, Some(frame), self.now);
        n.iface
            .poll_ingress_single(self.now, &mut dev, &mut slot.set);
        self.mark_event(id);
        self.mark_dirty(id);
    }

    /// Produces the output of one socket and re-arms its timer.
    pub(crate) fn egress(&mut self, id: SocketId) {
        let Some(sock) = self.sockets.get_mut(id) else {
            return;
        };
        sock.dirty = false;
        let nic = sock.nic;
        let extra_deadline = match &sock.kind {
            Kind::Tcp(t) => t.deadline(),
            _ => None,
        };
        if let Kind::Tcp(TcpState::Conn(_)) = &sock.kind {
            let at = earliest(extra_deadline, self.tcp_output(id));
            self.arm_timer(id, at);
            self.tcp_after_egress(id);
            return;
        }
        let class = sock.opts.tos;
        let slot = match &mut sock.kind {
            Kind::Tcp(_) => None,
            Kind::Udp(u) => Some(&mut u.slot),
            Kind::Icmp(i) => Some(&mut i.slot),
        };
        let mut at = extra_deadline;
        if let Some(slot) = slot {
            at = earliest(at, drive_egress(&mut self.nics[nic], slot, self.now, class));
        }
        let extra_tx = match &mut sock.kind {
            Kind::Udp(u) => u.extra_tx.as_mut_slice(),
            Kind::Icmp(i) => i.extra_tx.as_mut_slice(),
            Kind::Tcp(_) => &mut [],
        };
        for (xnic, slot) in extra_tx {
            at = earliest(
                at,
                drive_egress(&mut self.nics[*xnic], slot, self.now, class),
            );
        }
        self.arm_timer(id, at);
        let is_tcp = matches!(self.sockets.get(id).map(|s| &s.kind), Some(Kind::Tcp(_)));
        if is_tcp {
            self.tcp_after_egress(id);
        } else {
            self.mark_event(id);
        }
    }

    /// Sends what a connection's engine has to send, each segment wrapped
    /// in IP; returns the engine's next deadline.
    fn tcp_output(&mut self, id: SocketId) -> Option<Instant> {
        let now = self.now;
        let mut segs = std::mem::take(&mut self.tcp_segments);
        let sock = self.sockets.get_mut(id)?;
        let nic = sock.nic;
        let hop_limit = hop_limit(&sock.opts);
        let Kind::Tcp(TcpState::Conn(c)) = &mut sock.kind else {
            return None;
        };
        c.engine.poll(now, &mut segs);
        let at = c.engine.poll_at();
        let (local, remote) = (c.key.0.addr, c.key.1.addr);
        let direct = if segs.is_empty() {
            None
        } else {
            self.direct_framing(nic, remote)
        };
        // The segments' payloads are still in the engine's send queue.
        let (Some(sock), Some(n)) = (self.sockets.get(id), self.nics.get_mut(nic)) else {
            segs.clear();
            self.tcp_segments = segs;
            return at;
        };
        let Kind::Tcp(TcpState::Conn(c)) = &sock.kind else {
            segs.clear();
            self.tcp_segments = segs;
            return at;
        };
        if let Some(mac) = direct {
            // The interface's own output (MLD reports, say) still goes out
            // when a socket sends, and first, as through the raw socket.
            flush_tcp(n, now);
            let to = Framing {
                mac,
                src: local,
                dst: remote,
                hop_limit,
            };
            send_runs(n, now, to, &segs, &c.engine);
            segs.clear();
        }
        if !segs.is_empty() {
            let tx_csum = n.device.checksum.clone();
            let mut scratch = Vec::new();
            for seg in segs.drain(..) {
                let repr = c.engine.repr(&seg, &mut scratch);
                send_segment(n, now, local, remote, hop_limit, &repr, &tx_csum);
            }
            flush_tcp(n, now);
        }
        self.tcp_segments = segs;
        at
    }

    /// Whether TCP segments to `remote` may be framed here, and with which
    /// destination MAC: `Some(None)` on an IP link, `Some(Some(mac))` to an
    /// IPv4 next hop whose ARP entry is fresh. `None` sends them through
    /// smoltcp's interface instead, which resolves the neighbour (IPv6 on
    /// Ethernet always goes that way).
    fn direct_framing(&self, nic: NicId, remote: IpAddress) -> Option<Option<EthernetAddress>> {
        let n = self.nics.get(nic)?;
        if n.caps.medium != Medium::Ethernet {
            return Some(None);
        }
        n.info.mac?;
        if !matches!(remote, IpAddress::Ipv4(_)) {
            return None;
        }
        let hop = self.next_hop(nic, remote)?;
        let &(mac, at) = n.arp.get(&hop)?;
        (self.now < at + ARP_FRESH).then_some(Some(mac))
    }

    /// After a neighbour answered, sockets waiting on it may send. (smoltcp
    /// does not say who waits, and a UDP socket may wait on several NICs, so
    /// every socket with a timer is woken.)
    /// The scan costs one step per socket, so a flood of ARP frames from the
    /// wire gets at most one scan per [`WAKE_INTERVAL`]; later ones wait for
    /// the next poll after it.
    fn wake_neighbor_waiters(&mut self) {
        if self.last_wake.is_some_and(|t| self.now < t + WAKE_INTERVAL) {
            self.wake_pending = true;
            return;
        }
        self.wake_pending = false;
        self.last_wake = Some(self.now);
        let waiting: Vec<SocketId> = self
            .sockets
            .iter()
            .filter(|(_, s)| s.timer.is_some())
            .map(|(id, _)| id)
            .collect();
        for id in waiting {
            self.mark_dirty(id);
        }
    }
}

/// Least time between two scans for sockets waiting on a neighbour.
const WAKE_INTERVAL: Duration = Duration::from_millis(5);

/// Sends everything one socket set has for `nic`, its UDP datagrams with
/// traffic class `class`; returns its next deadline.
fn drive_egress(nic: &mut Nic, slot: &mut Slot, now: Instant, class: u8) -> Option<Instant> {
    let mut dev = FrameDevice::new(&mut *nic.link, &nic.device, None, now).with_class(class);
    while nic.iface.poll_egress(now, &mut dev, &mut slot.set) == PollResult::SocketStateChanged {}
    nic.iface.poll_at(now, &slot.set)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The IP addresses and TCP header of a frame carrying one whole TCP
/// segment, checked once (lengths, and the checksum `checksum` asks for).
pub(crate) fn parse_tcp<'a>(
    medium: Medium,
    frame: &'a [u8],
    checksum: &ChecksumCapabilities,
) -> Option<(IpAddress, IpAddress, TcpRepr<'a>)> {
    let ip = match medium {
        Medium::Ethernet => {
            let eth = EthernetFrame::new_checked(frame).ok()?;
            if !matches!(
                eth.ethertype(),
                EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6
            ) {
                return None;
            }
            &frame[EthernetFrame::<&[u8]>::header_len()..]
        }
        _ => frame,
    };
    let (src, dst, payload) = match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            if p.more_frags() || p.frag_offset() != 0 || p.next_header() != IpProtocol::Tcp {
                return None;
            }
            if checksum.ipv4.rx() && !p.verify_checksum() {
                return None;
            }
            let payload = &ip[p.header_len() as usize..p.total_len() as usize];
            (
                IpAddress::Ipv4(p.src_addr()),
                IpAddress::Ipv4(p.dst_addr()),
                payload,
            )
        }
        6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            if p.next_header() != IpProtocol::Tcp {
                return None;
            }
            let start = p.header_len();
            let payload = &ip[start..start + usize::from(p.payload_len())];
            (
                IpAddress::Ipv6(p.src_addr()),
                IpAddress::Ipv6(p.dst_addr()),
                payload,
            )
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    let repr = TcpRepr::parse(&tcp, &src, &dst, checksum).ok()?;
    Some((src, dst, repr))
}

/// Queues one segment, wrapped in IP, on the NIC's TCP raw socket; a full
/// queue is flushed to the link first. A segment that still finds no room
/// is dropped, as a full device queue drops it: the engine repairs it.
fn send_segment(
    nic: &mut Nic,
    now: Instant,
    src: IpAddress,
    dst: IpAddress,
    hop_limit: u8,
    tcp: &TcpRepr,
    csum: &ChecksumCapabilities,
) {
    let tcp_len = tcp.buffer_len();
    let (ip_len, v4) = match (src, dst) {
        (IpAddress::Ipv4(_), IpAddress::Ipv4(_)) => (20, true),
        (IpAddress::Ipv6(_), IpAddress::Ipv6(_)) => (40, false),
        _ => return,
    };
    let total = ip_len + tcp_len;
    for attempt in 0..2 {
        let raw = nic
            .tcp_tx
            .get_mut::<raw::Socket<'static>>(nic.tcp_tx_handle);
        match raw.send(total) {
            Ok(buf) => {
                emit_ip_tcp(buf, src, dst, hop_limit, tcp, csum, v4, ip_len);
                return;
            }
            Err(_) if attempt == 0 => flush_tcp(nic, now),
            Err(_) => return,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn emit_ip_tcp(
    buf: &mut [u8],
    src: IpAddress,
    dst: IpAddress,
    hop_limit: u8,
    tcp: &TcpRepr,
    csum: &ChecksumCapabilities,
    v4: bool,
    ip_len: usize,
) {
    let payload_len = tcp.buffer_len();
    match (src, dst) {
        (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) if v4 => {
            let repr = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Tcp,
                payload_len,
                hop_limit,
            };
            // The raw socket fills in the header checksum itself.
            repr.emit(
                &mut Ipv4Packet::new_unchecked(&mut buf[..]),
                &ChecksumCapabilities::ignored(),
            );
        }
        (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
            let repr = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Tcp,
                payload_len,
                hop_limit,
            };
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
        }
        _ => return,
    }
    let mut packet = TcpPacket::new_unchecked(&mut buf[ip_len..]);
    tcp.emit(&mut packet, &src, &dst, csum);
}

/// Hands what the NIC's TCP raw socket holds to the link.
fn flush_tcp(nic: &mut Nic, now: Instant) {
    let queued = |nic: &mut Nic| {
        nic.tcp_tx
            .get_mut::<raw::Socket<'static>>(nic.tcp_tx_handle)
            .send_queue()
            > 0
    };
    // Also the interface's own output (MLD reports, say), queue or not.
    let mut dev = FrameDevice::new(&mut *nic.link, &nic.device, None, now);
    while nic.iface.poll_egress(now, &mut dev, &mut nic.tcp_tx) == PollResult::SocketStateChanged {}
    if !queued(nic) {
        nic.tcp_tx_waiting = None;
        return;
    }
    // The head waits for a neighbour (see `Nic::tcp_tx_waiting`).
    let since = *nic.tcp_tx_waiting.get_or_insert(now);
    if now >= since + NEIGHBOR_WAIT {
        (nic.tcp_tx, nic.tcp_tx_handle) = tcp_tx_socket();
        nic.tcp_tx_waiting = None;
    }
}

/// How long an ARP entry is trusted for framing TCP here; smoltcp's own
/// cache expires after a minute too, and its renewal refreshes ours.
const ARP_FRESH: Duration = Duration::from_secs(60);

/// Records the sender of an ARP frame (request or reply) that a neighbour
/// sent, by its IPv4 address.
fn learn_mac(nic: &mut Nic, frame: &[u8], now: Instant) {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return;
    };
    if eth.ethertype() != EthernetProtocol::Arp {
        return;
    }
    let Ok(arp) = ArpPacket::new_checked(eth.payload()) else {
        return;
    };
    if !matches!(arp.operation(), ArpOperation::Request | ArpOperation::Reply) {
        return;
    }
    let (Ok(ip), Ok(mac)) = (
        <[u8; 4]>::try_from(arp.source_protocol_addr()),
        <[u8; 6]>::try_from(arp.source_hardware_addr()),
    ) else {
        return;
    };
    let mac = EthernetAddress(mac);
    if !mac.is_unicast() {
        return;
    }
    if nic.arp.len() >= 4096 {
        nic.arp.clear();
    }
    nic.arp
        .insert(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), (mac, now));
}

/// Whether `next` continues `run` as the kernel's segmentation would cut
/// it: the same header but for the sequence number, no flags but ACK, and
/// every segment before it exactly the run's segment size.
fn continues(run: &[Segment], next: &Segment) -> bool {
    let (first, last) = (&run[0], &run[run.len() - 1]);
    let (f, n) = (&first.header, &next.header);
    n.control == TcpControl::None
        && last.len == first.len
        && n.seq_number.0 == last.header.seq_number.0.wrapping_add(last.len as i32)
        && n.ack_number == f.ack_number
        && n.window_len == f.window_len
        && n.timestamp == f.timestamp
        && n.sack_ranges == f.sack_ranges
        && n.window_scale.is_none()
        && n.max_seg_size.is_none()
        && !n.sack_permitted
}

/// Where a connection's framed segments go.
#[derive(Debug, Clone, Copy)]
struct Framing {
    /// The next hop's MAC on Ethernet; `None` on an IP link.
    mac: Option<EthernetAddress>,
    src: IpAddress,
    dst: IpAddress,
    hop_limit: u8,
}

/// Frames a connection's segments for the link directly (behind an
/// Ethernet header to `mac`, or bare on an IP link). On a link that
/// offloads segmentation, consecutive full segments with one header go as
/// a single run that the link (the kernel behind it) cuts back into those
/// same segments: one frame per 64 KiB instead of one per segment, as
/// smoltcp's TSO did. The payloads are copied from `conn`'s send queue
/// into the frames.
fn send_runs(nic: &mut Nic, now: Instant, to: Framing, segs: &[Segment], conn: &Connection) {
    let Framing {
        mac,
        src,
        dst,
        hop_limit,
    } = to;
    let eth = match (mac, nic.info.mac) {
        (Some(to), Some(own)) => Some((to, EthernetAddress(own))),
        (None, _) => None,
        (Some(_), None) => return,
    };
    let l2 = if eth.is_some() { 14 } else { 0 };
    let l3 = match dst {
        IpAddress::Ipv4(_) => 20,
        IpAddress::Ipv6(_) => 40,
    };
    let csum = nic.device.checksum.clone();
    let segmentation = nic
        .device
        .segmentation
        .tcpv4
        .map(std::num::NonZeroUsize::get);
    let limit = segmentation.unwrap_or(0).min(l2 + usize::from(u16::MAX));
    let mut i = 0;
    while i < segs.len() {
        let first = &segs[i];
        let header_len = l2 + l3 + first.header.header_len();
        let mut j = i + 1;
        let mut len = header_len + first.len;
        if segmentation.is_some() && first.header.control == TcpControl::None && first.len > 0 {
            while j < segs.len() && continues(&segs[i..j], &segs[j]) && len + segs[j].len <= limit {
                len += segs[j].len;
                j += 1;
            }
        }
        let first_end = header_len + first.len;
        let mut frame = nic.link.buffer();
        frame.clear();
        // Headers are written in place, payloads appended: a frame of up to
        // 64 KiB is not zeroed first.
        frame.reserve(len);
        frame.resize(header_len, 0);
        if let Some((to, own)) = eth {
            let mut e = EthernetFrame::new_unchecked(&mut frame[..]);
            e.set_dst_addr(to);
            e.set_src_addr(own);
            e.set_ethertype(match dst {
                IpAddress::Ipv4(_) => EthernetProtocol::Ipv4,
                IpAddress::Ipv6(_) => EthernetProtocol::Ipv6,
            });
        }
        let tcp_len = len - l2 - l3;
        match (src, dst) {
            (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Tcp,
                payload_len: tcp_len,
                hop_limit,
            }
            .emit(
                &mut Ipv4Packet::new_unchecked(&mut frame[l2..l2 + l3]),
                &csum,
            ),
            (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Tcp,
                payload_len: tcp_len,
                hop_limit,
            }
            .emit(&mut Ipv6Packet::new_unchecked(&mut frame[l2..l2 + l3])),
            _ => return,
        }
        // The header alone (its `payload` is empty), the checksum below.
        first.header.emit(
            &mut TcpPacket::new_unchecked(&mut frame[l2 + l3..header_len]),
            &src,
            &dst,
            &ChecksumCapabilities::ignored(),
        );
        // The payloads straight from the send queue.
        for seg in &segs[i..j] {
            let (a, b) = conn.payload(seg);
            frame.extend_from_slice(a);
            frame.extend_from_slice(b);
        }
        // On an offloading link the link completes the TCP checksum (the
        // kernel, per segment); `csum` says so.
        if csum.tcp.tx() {
            TcpPacket::new_unchecked(&mut frame[l2 + l3..first_end]).fill_checksum(&src, &dst);
        }
        if j - i > 1 {
            let mss = first.len as u16;
            nic.link.send_segmented(now, frame, mss);
        } else {
            nic.link.send(now, frame);
        }
        i = j;
    }
}
