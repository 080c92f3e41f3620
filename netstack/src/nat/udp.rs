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
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, setsockopt, sockopt};
use smoltcp::wire::{
    Icmpv4Packet, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

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

impl UdpFlow {
    pub(super) fn host_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.sock)
    }
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
        let key = self.add_flow(Flow::Udp(flow)).map_err(|(_, e)| e)?;
        self.udp_published.insert(guest_port, key);
        Ok(())
    }

    /// Relay mode: the host socket for the guest's UDP port `port`, which
    /// peers write to and the guest's datagrams from the port leave by. A
    /// flow the guest's port already has (it sent before it bound, say)
    /// becomes it.
    pub(super) fn mirror_udp(&mut self, port: u16) -> io::Result<FlowKey> {
        let guest = SocketAddrV4::new(self.cfg.guest, port);
        if let Some(&key) = self.udp_by_guest.get(&guest)
            && let Some(Flow::Udp(u)) = self.flows.get_mut(key)
        {
            u.published = true;
            return Ok(key);
        }
        let sock = UdpSocket::bind(guest)?;
        sock.set_nonblocking(true)?;
        let _ = setsockopt(&sock, sockopt::Ipv4RecvErr, &true);
        let key = self
            .add_flow(Flow::Udp(UdpFlow {
                sock,
                guest,
                last: Instant::ZERO,
                published: true,
                peers: HashMap::new(),
            }))
            .map_err(|(_, e)| e)?;
        self.udp_by_guest.insert(guest, key);
        Ok(key)
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
        // In relay mode the host has the guest's address: the datagrams
        // leave from the guest's own port when it is free, as they would
        // from the guest's kernel.
        let preserved = self.cfg.relay.then(|| UdpSocket::bind(from).ok()).flatten();
        let sock = match preserved {
            Some(s) => s,
            None => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?,
        };
        sock.set_nonblocking(true).ok()?;
        // ICMP errors about what the guest sent come back to it (a
        // connected UDP socket then fails with ECONNREFUSED, as on Linux).
        let _ = setsockopt(&sock, sockopt::Ipv4RecvErr, &true);
        let key = self
            .add_flow(Flow::Udp(UdpFlow {
                sock,
                guest: from,
                last: now,
                published: false,
                peers: HashMap::new(),
            }))
            .ok()?;
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

    /// ICMP errors the host socket heard about datagrams it sent, passed to
    /// the guest as the ICMP message its own datagram would have caused.
    pub(super) fn udp_errors(&mut self, key: FlowKey) {
        let mut payload = [0u8; 8];
        let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in);
        loop {
            let Some(Flow::Udp(u)) = self.flows.get(key) else {
                return;
            };
            let guest = u.guest;
            let mut iov = [IoSliceMut::new(&mut payload)];
            let Ok(msg) = recvmsg::<SockaddrIn>(
                u.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
            ) else {
                return;
            };
            let Some(dst) = msg.address.map(SocketAddrV4::from) else {
                continue;
            };
            let err = msg
                .cmsgs()
                .ok()
                .into_iter()
                .flatten()
                .find_map(|c| match c {
                    ControlMessageOwned::Ipv4RecvErr(e, offender) => Some((e, offender)),
                    _ => None,
                });
            let Some((e, offender)) = err else {
                continue;
            };
            if e.ee_origin != libc::SO_EE_ORIGIN_ICMP {
                continue;
            }
            let sent = msg.bytes.min(8);
            let Some(visible) = self.cfg.inbound(SocketAddr::V4(dst)) else {
                continue;
            };
            // The router or host that answered, as the guest sees it.
            let from = offender.map_or(*visible.ip(), |o| {
                let ip = Ipv4Addr::from(u32::from_be(o.sin_addr.s_addr));
                self.cfg
                    .inbound(SocketAddr::from((ip, 0)))
                    .map_or(*visible.ip(), |v| *v.ip())
            });
            // The guest's datagram as it left: IPv4 header, UDP header, and
            // the first 8 bytes of its payload (RFC 792).
            let mut quoted = [0u8; 20 + 8 + 8];
            let ip = Ipv4Repr {
                src_addr: *guest.ip(),
                dst_addr: *visible.ip(),
                next_header: IpProtocol::Udp,
                payload_len: 8 + sent,
                hop_limit: 64,
            };
            ip.emit(
                &mut Ipv4Packet::new_unchecked(&mut quoted[..20]),
                &ChecksumCapabilities::default(),
            );
            let udp = &mut quoted[20..28];
            udp[0..2].copy_from_slice(&guest.port().to_be_bytes());
            udp[2..4].copy_from_slice(&visible.port().to_be_bytes());
            udp[4..6].copy_from_slice(&((8 + sent) as u16).to_be_bytes());
            quoted[28..28 + sent].copy_from_slice(&payload[..sent]);
            let quoted = &quoted[..28 + sent];
            let (ty, code) = (e.ee_type, e.ee_code);
            self.inject(from, IpProtocol::Icmp, 8 + quoted.len(), |out| {
                out[0] = ty;
                out[1] = code;
                out[2..8].fill(0);
                out[8..].copy_from_slice(quoted);
                Icmpv4Packet::new_unchecked(out).fill_checksum();
            });
        }
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
