//! UDP with Linux semantics: bind and autobind, connect/disconnect filtering,
//! source addresses, truncation, `SO_BROADCAST`, and datagrams larger than the
//! MTU (smoltcp fragments them on output and reassembles on input).

use std::net::SocketAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::udp::{self, UdpMetadata};
use smoltcp::storage::PacketMetadata;
use smoltcp::wire::{IpAddress, IpEndpoint, IpProtocol, Ipv6Address, UdpPacket, UdpRepr};

use super::{Datagram, Domain, Kind, Options, Readiness, RecvFlags, Shutdown, Slot, SocketId};
use crate::buffers::BufferPool;
use crate::error::{NetError, Result};
use crate::stack::{NicId, Stack};

/// Largest UDP payload over IPv4 (65535 - 20 - 8) and IPv6 (65535 - 8).
const MAX_PAYLOAD_V4: usize = 65507;
const MAX_PAYLOAD_V6: usize = 65527;

pub(crate) struct UdpState {
    pub slot: Slot,
    /// Set by `connect`: the only source accepted, and the default destination.
    pub peer: Option<IpEndpoint>,
    /// The source address chosen at connect time, for `getsockname`.
    pub connected_src: Option<IpAddress>,
    /// `bind` named a port (Linux's SOCK_BINDPORT_LOCK): disconnect keeps it.
    pub port_locked: bool,
    /// Send-only sockets for datagrams routed through NICs other than the home one.
    pub extra_tx: Vec<(NicId, Slot)>,
}

fn new_slot(pool: &BufferPool, opts: &Options) -> Result<Slot> {
    // A datagram may be up to 64 KiB; make sure one always fits.
    let rx = opts.recv_buffer.max(2 * MAX_PAYLOAD_V6);
    let tx = opts.send_buffer.max(2 * MAX_PAYLOAD_V6);
    // SAFETY: both slices go into the socket, and the socket and the leases
    // into one Slot, which drops the socket first (see `BufferPool::lend`).
    let [(rx_mem, rx_lease), (tx_mem, tx_lease)] = unsafe { pool.lend_two(rx, tx)? };
    // The datagram slots are allocated and written in full up front, so
    // they are what an idle socket costs (about 50 bytes each): one per
    // 2 KiB of receive buffer (128 for the default; the guest's pair end
    // queues hundreds more, so as many small datagrams wait as in Linux's
    // default 208 KiB, where each costs about 800 bytes) and one per 4 KiB
    // to send (the pump refills them every round).
    let socket = udp::Socket::new(
        udp::PacketBuffer::new(vec![PacketMetadata::EMPTY; (rx / 2048).max(16)], rx_mem),
        udp::PacketBuffer::new(vec![PacketMetadata::EMPTY; (tx / 4096).max(16)], tx_mem),
    );
    Ok(Slot::new(socket, [rx_lease, tx_lease]))
}

impl UdpState {
    pub(crate) fn new(pool: &BufferPool, opts: &Options) -> Result<UdpState> {
        Ok(UdpState {
            slot: new_slot(pool, opts)?,
            peer: None,
            connected_src: None,
            port_locked: false,
            extra_tx: Vec::new(),
        })
    }

    pub(crate) fn socket(&mut self) -> &mut udp::Socket<'static> {
        self.slot
            .set
            .get_mut::<udp::Socket<'static>>(self.slot.handle)
    }

    pub(crate) fn apply_options(&mut self, opts: &Options) {
        self.socket().set_hop_limit(opts.ttl);
    }
}

fn udp(sock: &mut super::Socket) -> Option<&mut UdpState> {
    match &mut sock.kind {
        Kind::Udp(u) => Some(u),
        _ => None,
    }
}

impl Stack {
    /// Binds the smoltcp socket to the port the bind table gave it.
    pub(crate) fn udp_bind_port(&mut self, id: SocketId) -> Result<()> {
        let sock = self.get_mut(id)?;
        let port = sock.binding.map(|b| b.port).ok_or(NetError::InvalidInput)?;
        let u = udp(sock).ok_or(NetError::InvalidInput)?;
        if !u.socket().is_open() {
            u.socket().bind(port).map_err(|_| NetError::InvalidInput)?;
        }
        Ok(())
    }

    /// Binds to an ephemeral port if the socket has no port yet.
    fn udp_autobind(&mut self, id: SocketId) -> Result<()> {
        if self.get(id)?.binding.is_none() {
            let b = self.claim_port(id, None, 0)?;
            self.get_mut(id)?.binding = Some(b);
        }
        self.udp_bind_port(id)
    }

    pub(crate) fn udp_connect(&mut self, id: SocketId, addr: SocketAddr) -> Result<()> {
        let sock = self.get(id)?;
        let mut remote = sock.endpoint(addr)?;
        remote.addr = super::wildcard_is_local(remote.addr);
        let (_, src) = self.route(remote.addr)?;
        self.udp_autobind(id)?;
        let sock = self.get_mut(id)?;
        let src = match sock.binding.and_then(|b| b.addr) {
            Some(a) => a,
            None => src,
        };
        let u = udp(sock).ok_or(NetError::InvalidInput)?;
        u.peer = Some(remote);
        u.connected_src = Some(src);
        Ok(())
    }

    pub(crate) fn udp_disconnect(&mut self, id: SocketId) -> Result<()> {
        let sock = self.get_mut(id)?;
        let u = udp(sock).ok_or(NetError::InvalidInput)?;
        u.peer = None;
        u.connected_src = None;
        // A port the caller did not choose goes back, as on Linux.
        if !u.port_locked
            && let Some(b) = sock.binding.take()
            && let Some(u) = udp(sock)
        {
            u.socket().close();
            u.extra_tx.clear();
            crate::stack::remove_from(&mut self.udp_ports, b.port, id);
        }
        Ok(())
    }

    pub(crate) fn udp_send_to(
        &mut self,
        id: SocketId,
        data: &[u8],
        to: Option<SocketAddr>,
    ) -> Result<usize> {
        self.udp_send_marked(id, data, to, super::IpMarks::default())
    }

    /// [`Stack::udp_send_to`] with the datagram's own hop limit or class.
    /// smoltcp takes a hop limit per socket only (and drops the packet
    /// metadata of IPv6 packets), so what the socket holds leaves first,
    /// then this datagram with the socket's settings changed for it alone,
    /// at once, unless it must wait for a neighbour (it then leaves later
    /// with the socket's own).
    pub(crate) fn udp_send_marked(
        &mut self,
        id: SocketId,
        data: &[u8],
        to: Option<SocketAddr>,
        marks: super::IpMarks,
    ) -> Result<usize> {
        if marks == super::IpMarks::default() {
            return self.udp_enqueue(id, data, to);
        }
        self.egress(id);
        let sock = self.get_mut(id)?;
        let own = (sock.opts.ttl, sock.opts.tos);
        sock.opts.ttl = marks.hop_limit.or(own.0);
        sock.opts.tos = marks.class.unwrap_or(own.1);
        self.udp_hop_limits(id);
        let sent = self.udp_enqueue(id, data, to);
        if sent.is_ok() {
            self.egress(id);
        }
        if let Ok(sock) = self.get_mut(id) {
            (sock.opts.ttl, sock.opts.tos) = own;
        }
        self.udp_hop_limits(id);
        sent
    }

    /// Gives every smoltcp socket of a UDP socket its hop limit option.
    fn udp_hop_limits(&mut self, id: SocketId) {
        let Ok(sock) = self.get_mut(id) else {
            return;
        };
        let ttl = sock.opts.ttl;
        if let Some(u) = udp(sock) {
            u.socket().set_hop_limit(ttl);
            for (_, slot) in &mut u.extra_tx {
                slot.set
                    .get_mut::<udp::Socket<'static>>(slot.handle)
                    .set_hop_limit(ttl);
            }
        }
    }

    /// Queues a datagram in the socket's smoltcp socket for the NIC its
    /// route names; it leaves at the next egress.
    fn udp_enqueue(&mut self, id: SocketId, data: &[u8], to: Option<SocketAddr>) -> Result<usize> {
        let sock = self.get_mut(id)?;
        if let Some(e) = sock.error.take() {
            return Err(e);
        }
        if sock.shut_wr {
            return Err(NetError::BrokenPipe);
        }
        let mut dst = match to {
            Some(a) => sock.endpoint(a)?,
            None => udp(sock)
                .and_then(|u| u.peer)
                .ok_or(NetError::DestinationRequired)?,
        };
        if dst.port == 0 {
            return Err(NetError::InvalidInput);
        }
        dst.addr = super::wildcard_is_local(dst.addr);
        let max = match (sock.domain, dst.addr) {
            (Domain::Ipv6, IpAddress::Ipv6(_)) => MAX_PAYLOAD_V6,
            _ => MAX_PAYLOAD_V4,
        };
        if data.len() > max {
            return Err(NetError::MessageTooLong);
        }
        let broadcast_ok = sock.opts.broadcast;
        if self.is_broadcast(dst.addr) && !broadcast_ok {
            return Err(NetError::BroadcastNotAllowed);
        }
        let (nic, src) = self.route(dst.addr)?;
        if let Some(hop) = self.next_hop(nic, dst.addr) {
            self.solicit(nic, hop);
        }
        self.udp_autobind(id)?;
        let nic_mtu = self.nics[nic].ip_mtu();
        let sock = self.get_mut(id)?;
        let src = match sock.binding.and_then(|b| b.addr) {
            Some(a) if std::mem::discriminant(&a) != std::mem::discriminant(&dst.addr) => {
                return Err(NetError::NetworkUnreachable);
            }
            Some(a) if a.is_unicast() => a,
            _ => src,
        };
        if let (IpAddress::Ipv6(s6), IpAddress::Ipv6(d6)) = (src, dst.addr)
            && data.len() + 48 > nic_mtu
        {
            return self.udp_send_fragmented_v6(id, nic, s6, d6, dst.port, data);
        }
        // Each datagram leaves through the NIC its route names. The socket's own
        // smoltcp socket sends through its home NIC; while it still holds
        // datagrams for that NIC, others go through a send-only socket per NIC.
        let use_home = sock.nic == nic || udp(sock).is_some_and(|u| u.socket().send_queue() == 0);
        if use_home {
            sock.nic = nic;
        } else if !udp(sock).is_some_and(|u| u.extra_tx.iter().any(|(n, _)| *n == nic)) {
            let port = sock.binding.map(|b| b.port).ok_or(NetError::InvalidInput)?;
            let opts = sock.opts.clone();
            let mut slot = new_slot(&self.pool, &opts)?;
            slot.set
                .get_mut::<udp::Socket<'static>>(slot.handle)
                .bind(port)
                .map_err(|_| NetError::InvalidInput)?;
            let sock = self.get_mut(id)?;
            udp(sock)
                .ok_or(NetError::InvalidInput)?
                .extra_tx
                .push((nic, slot));
        }
        let u = udp(self.get_mut(id)?).ok_or(NetError::InvalidInput)?;
        let s: &mut udp::Socket<'static> =
            super::send_slot(&mut u.slot, &mut u.extra_tx, use_home, nic)?;
        let mut meta = UdpMetadata::from(dst);
        meta.local_address = Some(src);
        match s.send_slice(data, meta) {
            Ok(()) => {}
            Err(udp::SendError::BufferFull) => return Err(NetError::WouldBlock),
            Err(udp::SendError::Unaddressable) => return Err(NetError::InvalidInput),
        }
        // Datagrams leave at once, through the NIC chosen for this one.
        self.mark_dirty(id);
        Ok(data.len())
    }

    /// smoltcp drops IPv6 packets larger than the MTU; the stack fragments them itself.
    fn udp_send_fragmented_v6(
        &mut self,
        id: SocketId,
        nic: NicId,
        src: Ipv6Address,
        dst: Ipv6Address,
        dst_port: u16,
        data: &[u8],
    ) -> Result<usize> {
        let sock = self.get(id)?;
        let src_port = sock.binding.map(|b| b.port).ok_or(NetError::InvalidInput)?;
        let hop_limit = sock.opts.ttl.unwrap_or(64);
        let mut packet = vec![0u8; 8 + data.len()];
        let repr = UdpRepr { src_port, dst_port };
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut packet[..]),
            &IpAddress::Ipv6(src),
            &IpAddress::Ipv6(dst),
            data.len(),
            |p| p.copy_from_slice(data),
            &ChecksumCapabilities::default(),
        );
        self.send_ipv6_fragments(nic, src, dst, IpProtocol::Udp, hop_limit, &packet)?;
        Ok(data.len())
    }

    pub(crate) fn udp_recv_from(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
        flags: RecvFlags,
    ) -> Result<Datagram> {
        let sock = self.get_mut(id)?;
        // A pending error (an ICMP port unreachable) is reported before data, as Linux does.
        if let Some(e) = sock.error.take() {
            return Err(e);
        }
        let domain = sock.domain;
        let shut_rd = sock.shut_rd;
        let u = udp(sock).ok_or(NetError::InvalidInput)?;
        let s = u.socket();
        let got = if flags.peek {
            s.peek()
                .map(|(p, m)| (p, m.endpoint, m.local_address, m.meta.id))
        } else {
            s.recv()
                .map(|(p, m)| (p, m.endpoint, m.local_address, m.meta.id))
        };
        match got {
            Ok((payload, from, to, marks)) => {
                let n = payload.len().min(buf.len());
                buf[..n].copy_from_slice(&payload[..n]);
                Ok(Datagram {
                    copied: n,
                    len: payload.len(),
                    from: super::sockaddr(domain, from.addr, from.port),
                    to: to.map(std::net::IpAddr::from),
                    marks: super::IpMarks::unpack(marks),
                })
            }
            Err(_) => {
                if shut_rd {
                    return Ok(Datagram {
                        copied: 0,
                        len: 0,
                        from: super::sockaddr(domain, IpAddress::Ipv4([0, 0, 0, 0].into()), 0),
                        to: None,
                        marks: super::IpMarks::default(),
                    });
                }
                Err(NetError::WouldBlock)
            }
        }
    }

    pub(crate) fn udp_next_len(&mut self, id: SocketId) -> Result<usize> {
        let u = udp(self.get_mut(id)?).ok_or(NetError::InvalidInput)?;
        Ok(u.socket().peek().map(|(p, _)| p.len()).unwrap_or(0))
    }

    pub(crate) fn udp_readiness(&mut self, id: SocketId) -> Result<Readiness> {
        let sock = self.get_mut(id)?;
        let (shut_rd, shut_wr, error) = (sock.shut_rd, sock.shut_wr, sock.error.is_some());
        let u = udp(sock).ok_or(NetError::InvalidInput)?;
        let s = u.socket();
        Ok(Readiness {
            readable: s.can_recv() || shut_rd,
            writable: s.can_send() || shut_wr,
            read_hangup: shut_rd,
            hangup: shut_rd && shut_wr,
            error,
        })
    }

    pub(crate) fn dgram_shutdown(&mut self, id: SocketId, how: Shutdown) -> Result<()> {
        let sock = self.get_mut(id)?;
        let connected = match &sock.kind {
            Kind::Udp(u) => u.peer.is_some(),
            Kind::Icmp(i) => i.peer.is_some(),
            Kind::Tcp(_) => false,
        };
        if !connected {
            return Err(NetError::NotConnected);
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            sock.shut_rd = true;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            sock.shut_wr = true;
        }
        self.mark_event(id);
        Ok(())
    }

    /// Which UDP socket a datagram to `dst` from `src` belongs to.
    pub(crate) fn udp_target(&self, dst: IpEndpoint, src: IpEndpoint) -> Option<SocketId> {
        let ids = self.udp_ports.get(&dst.port)?;
        // A connected socket beats one bound to the address, which beats the wildcard.
        let score = |id: SocketId| {
            let s = self.sockets.get(id)?;
            let b = s.binding?;
            if !b.matches(dst.addr) {
                return None;
            }
            let mut score = if b.addr.is_some() { 2 } else { 1 };
            if let Kind::Udp(u) = &s.kind
                && let Some(peer) = u.peer
            {
                if peer != src {
                    return None;
                }
                score += 4;
            }
            Some(score)
        };
        self.pick_socket(ids, src, score)
    }
}
