//! Ping through the gateway: echo requests leave by a host ping socket
//! (`SOCK_DGRAM`/`IPPROTO_ICMP`, allowed by `net.ipv4.ping_group_range`), or
//! by a raw ICMP socket where that range shuts the caller out and it holds
//! CAP_NET_RAW. Replies get the guest's identifier back.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::OwnedFd;

use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
use smoltcp::time::Instant;
use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol};

use super::{Flow, FlowKey, Nat};

#[derive(Debug)]
pub(super) struct PingFlow {
    /// A ping socket or a raw socket; both are read with `recvfrom`.
    sock: UdpSocket,
    /// Raw sockets see whole IP packets, and every ICMP message.
    raw: bool,
    pub(super) guest_ident: u16,
    pub(super) last: Instant,
}

fn icmp_socket(ty: SockType) -> Option<OwnedFd> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    socket(AddressFamily::Inet, ty, flags, SockProtocol::Icmp).ok()
}

impl PingFlow {
    pub(super) fn host_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.sock)
    }
}

impl Nat {
    fn ping_flow(&mut self, ident: u16, now: Instant) -> Option<FlowKey> {
        if let Some(&k) = self.pings.get(&ident) {
            return Some(k);
        }
        if !self.room() {
            return None;
        }
        let (fd, raw) = match icmp_socket(SockType::Datagram) {
            Some(fd) => (fd, false),
            None => (icmp_socket(SockType::Raw)?, true),
        };
        let key = self
            .add_flow(Flow::Ping(PingFlow {
                sock: UdpSocket::from(fd),
                raw,
                guest_ident: ident,
                last: now,
            }))
            .ok()?;
        self.pings.insert(ident, key);
        Some(key)
    }

    /// An echo request from the guest to `dst`.
    pub(super) fn ping_from_guest(&mut self, dst: Ipv4Addr, packet: &[u8], now: Instant) {
        let Ok(icmp) = Icmpv4Packet::new_checked(packet) else {
            return;
        };
        if icmp.msg_type() != Icmpv4Message::EchoRequest {
            return;
        }
        let Some(SocketAddr::V4(real)) = self.cfg.outbound(SocketAddrV4::new(dst, 0)) else {
            return;
        };
        let Some(key) = self.ping_flow(icmp.echo_ident(), now) else {
            return;
        };
        let Some(Flow::Ping(p)) = self.flows.get_mut(key) else {
            return;
        };
        p.last = now;
        // The guest's stack may leave the checksum to the (in-memory) link.
        let mut msg = packet.to_vec();
        Icmpv4Packet::new_unchecked(&mut msg[..]).fill_checksum();
        let _ = p.sock.send_to(&msg, SocketAddrV4::new(*real.ip(), 0));
    }

    /// Echo replies for the guest.
    pub(super) fn ping_from_host(&mut self, key: FlowKey, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(Flow::Ping(p)) = self.flows.get_mut(key) {
            let Ok((n, from)) = p.sock.recv_from(&mut buf) else {
                break;
            };
            let mut msg = &buf[..n];
            if p.raw {
                let ihl = usize::from(msg.first().map_or(0, |b| b & 0x0f)) * 4;
                msg = msg.get(ihl..).unwrap_or_default();
            }
            let ident = p.guest_ident;
            let Ok(reply) = Icmpv4Packet::new_checked(msg) else {
                continue;
            };
            if reply.msg_type() != Icmpv4Message::EchoReply
                || (p.raw && reply.echo_ident() != ident)
            {
                continue;
            }
            p.last = now;
            let Some(src) = self.cfg.inbound(from) else {
                continue;
            };
            let len = msg.len();
            self.inject(*src.ip(), IpProtocol::Icmp, len, |out| {
                out.copy_from_slice(msg);
                let mut pkt = Icmpv4Packet::new_unchecked(out);
                pkt.set_echo_ident(ident);
                pkt.fill_checksum();
            });
        }
        self.buf = buf;
    }
}
