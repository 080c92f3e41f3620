//! UDP through the gateway: one host socket per guest source address.
//!
//! The mapping is endpoint-independent, as on most home routers: whatever
//! the guest sends from one address and port leaves from one host port, and
//! answers from any peer come back. DNS to the forwarder's address goes to
//! the host's resolver; its answers come back from the forwarder's address.
//! A published port's host socket also carries the guest's replies, so a
//! peer sees them come from the port it wrote to.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpProtocol, UdpPacket, UdpRepr};

use super::{Flow, FlowKey, Nat};

/// Most peers remembered per published port.
const MAX_PEERS: usize = 4096;

#[derive(Debug)]
pub(super) struct UdpFlow {
    sock: UdpSocket,
    /// The guest's address and port.
    pub(super) guest: SocketAddrV4,
    pub(super) last: Instant,
    pub(super) published: bool,
    /// On a published port: the peers that wrote, as the guest sees them.
    peers: HashMap<SocketAddrV4, SocketAddr>,
}

impl Nat {
    pub(super) fn publish_udp(&mut self, host: SocketAddr, guest_port: u16) -> io::Result<()> {
        let sock = UdpSocket::bind(host)?;
        sock.set_nonblocking(true)?;
        let flow = UdpFlow {
            sock,
            guest: SocketAddrV4::new(self.cfg.guest, guest_port),
            last: Instant::ZERO,
            published: true,
            peers: HashMap::new(),
        };
        let key = self.flows.insert(Flow::Udp(flow));
        self.udp_published.insert(guest_port, key);
        if let Some(Flow::Udp(u)) = self.flows.get(key) {
            self.watch(&u.sock, key)?;
        }
        Ok(())
    }

    fn udp_flow(&mut self, from: SocketAddrV4, now: Instant) -> Option<FlowKey> {
        if let Some(&k) = self.udp_published.get(&from.port()) {
            return Some(k);
        }
        if let Some(&k) = self.udp_by_guest.get(&from) {
            return Some(k);
        }
        if !self.room() {
            return None;
        }
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        sock.set_nonblocking(true).ok()?;
        let key = self.flows.insert(Flow::Udp(UdpFlow {
            sock,
            guest: from,
            last: now,
            published: false,
            peers: HashMap::new(),
        }));
        if let Some(Flow::Udp(u)) = self.flows.get(key)
            && self.watch(&u.sock, key).is_err()
        {
            self.flows.remove(key);
            return None;
        }
        self.udp_by_guest.insert(from, key);
        Some(key)
    }

    /// A datagram the guest sent to `dst`.
    pub(super) fn udp_from_guest(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        packet: &[u8],
        now: Instant,
    ) {
        let Ok(udp) = UdpPacket::new_checked(packet) else {
            return;
        };
        let from = SocketAddrV4::new(src, udp.src_port());
        let to = SocketAddrV4::new(dst, udp.dst_port());
        let Some(key) = self.udp_flow(from, now) else {
            return;
        };
        let Some(Flow::Udp(u)) = self.flows.get_mut(key) else {
            return;
        };
        let Some(real) = u.peers.get(&to).copied().or_else(|| self.cfg.outbound(to)) else {
            return;
        };
        u.last = now;
        // A full host buffer drops the datagram, as a full NIC queue would.
        let _ = u.sock.send_to(udp.payload(), real);
    }

    /// Datagrams for the guest, read from a flow's host socket.
    pub(super) fn udp_from_host(&mut self, key: FlowKey, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(Flow::Udp(u)) = self.flows.get_mut(key) {
            let Ok((n, from)) = u.sock.recv_from(&mut buf) else {
                break;
            };
            let Some(visible) = self.cfg.inbound(from) else {
                continue;
            };
            if u.published {
                if u.peers.len() >= MAX_PEERS {
                    u.peers.clear();
                }
                u.peers.insert(visible, from);
            }
            u.last = now;
            let guest = u.guest;
            let repr = UdpRepr {
                src_port: visible.port(),
                dst_port: guest.port(),
            };
            let data = &buf[..n];
            self.inject(*visible.ip(), IpProtocol::Udp, 8 + n, |p| {
                repr.emit(
                    &mut UdpPacket::new_unchecked(p),
                    &IpAddress::Ipv4(*visible.ip()),
                    &IpAddress::Ipv4(*guest.ip()),
                    n,
                    |b| b.copy_from_slice(data),
                    &ChecksumCapabilities::default(),
                );
            });
        }
        self.buf = buf;
    }
}
