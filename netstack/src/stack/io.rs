//! The event loop: `poll(now)` reads every link and feeds each frame to the
//! set of the socket that owns it (`ingress`, `feed`), runs the deadline heap,
//! and sends dirty sockets' output, IPv6 fragments included, to their NIC (`egress`).

use std::cmp::Reverse;
use std::net::{IpAddr, SocketAddr};

use smoltcp::iface::PollResult;
use smoltcp::socket::raw;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint, IpProtocol, Ipv6Address};

use super::{Nic, NicId, Stack};
use crate::demux::{self, Flow};
use crate::error::{NetError, Result};
use crate::frag6;
use crate::link::{FrameDevice, Link};
use crate::socket::{Kind, Slot, SocketId};

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
        // Bounded: loopback traffic feeds itself, and must not spin forever.
        for _ in 0..1024 {
            let mut work = false;
            for nic in 0..self.nics.len() {
                for _ in 0..INGRESS_BATCH {
                    let Some(frame) = self.nics[nic].link.recv(now) else {
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
            if let Some(t) = nic.link.poll_at() {
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
        let slot = match &mut sock.kind {
            Kind::Tcp(t) => t.ingress_slot(),
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
        match sock.kind {
            Kind::Tcp(_) => self.tcp_after_ingress(nic, id),
            _ => {
                self.mark_event(id);
                self.mark_dirty(id);
            }
        }
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
        let slot = match &mut sock.kind {
            Kind::Tcp(t) => t.egress_slot(),
            Kind::Udp(u) => Some(&mut u.slot),
            Kind::Icmp(i) => Some(&mut i.slot),
        };
        let mut at = extra_deadline;
        if let Some(slot) = slot {
            at = earliest(at, drive_egress(&mut self.nics[nic], slot, self.now));
        }
        let extra_tx = match &mut sock.kind {
            Kind::Udp(u) => u.extra_tx.as_mut_slice(),
            Kind::Icmp(i) => i.extra_tx.as_mut_slice(),
            Kind::Tcp(_) => &mut [],
        };
        for (xnic, slot) in extra_tx {
            at = earliest(at, drive_egress(&mut self.nics[*xnic], slot, self.now));
        }
        self.arm_timer(id, at);
        let is_tcp = matches!(self.sockets.get(id).map(|s| &s.kind), Some(Kind::Tcp(_)));
        if is_tcp {
            self.tcp_after_egress(id);
        } else {
            self.mark_event(id);
        }
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

/// Sends everything one socket set has for `nic`; returns its next deadline.
fn drive_egress(nic: &mut Nic, slot: &mut Slot, now: Instant) -> Option<Instant> {
    let mut dev = FrameDevice::new(&mut *nic.link, &nic.device, None, now);
    while nic.iface.poll_egress(now, &mut dev, &mut slot.set) == PollResult::SocketStateChanged {}
    nic.iface.poll_at(now, &slot.set)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
