//! ICMP echo ("ping") sockets: `socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`.
//!
//! As on Linux, the caller writes an echo request (header and data), the
//! stack puts the socket's identifier in it, and reads return echo replies
//! with that identifier, ICMP header included. Echo requests addressed to
//! the stack itself are answered by smoltcp.

use std::net::SocketAddr;

use smoltcp::socket::icmp;
use smoltcp::storage::PacketMetadata;
use smoltcp::wire::IpAddress;

use super::{Datagram, Domain, Kind, Options, Readiness, RecvFlags, Slot, Socket, SocketId};
use crate::buffers::BufferPool;
use crate::error::{NetError, Result};
use crate::stack::{NicId, Stack};

pub(crate) struct IcmpState {
    pub slot: Slot,
    pub ident: Option<u16>,
    pub bound: Option<IpAddress>,
    pub peer: Option<IpAddress>,
    /// A reply taken out of smoltcp by MSG_PEEK, returned by the next read.
    pub peeked: Option<(Vec<u8>, IpAddress)>,
    /// Send-only sockets for requests routed through NICs other than the home
    /// one while it still holds requests (as for UDP).
    pub extra_tx: Vec<(NicId, Slot)>,
}

fn new_slot(pool: &BufferPool, opts: &Options) -> Result<Slot> {
    // SAFETY: both slices go into the socket, and the socket and the leases
    // into one Slot, which drops the socket first (see `BufferPool::lend`).
    let [(rx, rx_lease), (tx, tx_lease)] =
        unsafe { pool.lend_two(opts.recv_buffer.max(1 << 17), opts.send_buffer.max(1 << 17))? };
    let socket = icmp::Socket::new(
        icmp::PacketBuffer::new(vec![PacketMetadata::EMPTY; 64], rx),
        icmp::PacketBuffer::new(vec![PacketMetadata::EMPTY; 64], tx),
    );
    Ok(Slot::new(socket, [rx_lease, tx_lease]))
}

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REQUEST_V6: u8 = 128;

impl IcmpState {
    pub(crate) fn new(pool: &BufferPool, opts: &Options) -> Result<IcmpState> {
        Ok(IcmpState {
            slot: new_slot(pool, opts)?,
            ident: None,
            bound: None,
            peer: None,
            peeked: None,
            extra_tx: Vec::new(),
        })
    }

    pub(crate) fn socket(&mut self) -> &mut icmp::Socket<'static> {
        self.slot
            .set
            .get_mut::<icmp::Socket<'static>>(self.slot.handle)
    }

    pub(crate) fn apply_options(&mut self, opts: &Options) {
        self.socket().set_hop_limit(opts.ttl);
    }

    pub(crate) fn local_addr(&self, sock: &Socket) -> SocketAddr {
        let port = self.ident.unwrap_or(0);
        match self.bound {
            Some(a) => super::sockaddr(sock.domain, a, port),
            None => sock.unspecified(port),
        }
    }
}

fn icmp_state(sock: &mut Socket) -> Option<&mut IcmpState> {
    match &mut sock.kind {
        Kind::Icmp(i) => Some(i),
        _ => None,
    }
}

impl Stack {
    /// Gives the socket an identifier (the "port" of a ping socket).
    fn icmp_claim_ident(&mut self, id: SocketId, wanted: u16) -> Result<u16> {
        let sock = self.get(id)?;
        let v6 = sock.domain == Domain::Ipv6;
        if let Kind::Icmp(IcmpState { ident: Some(i), .. }) = sock.kind {
            return Ok(i);
        }
        let ident = if wanted != 0 {
            if self.icmp_idents.contains_key(&(v6, wanted)) {
                return Err(NetError::AddrInUse);
            }
            wanted
        } else {
            let start = self.next_random() as u16;
            (0..=u16::MAX)
                .map(|i| start.wrapping_add(i))
                .find(|i| *i != 0 && !self.icmp_idents.contains_key(&(v6, *i)))
                .ok_or(NetError::AddrNotAvailable)?
        };
        let i = icmp_state(self.get_mut(id)?).ok_or(NetError::InvalidInput)?;
        i.socket()
            .bind(icmp::Endpoint::Ident(ident))
            .map_err(|_| NetError::InvalidInput)?;
        i.ident = Some(ident);
        self.icmp_idents.insert((v6, ident), id);
        Ok(ident)
    }

    pub(crate) fn bind_icmp(&mut self, id: SocketId, addr: SocketAddr) -> Result<()> {
        let sock = self.get(id)?;
        let ep = sock.endpoint(addr)?;
        if !ep.addr.is_unspecified() && !self.is_local(ep.addr) {
            return Err(NetError::AddrNotAvailable);
        }
        if matches!(sock.kind, Kind::Icmp(IcmpState { ident: Some(_), .. })) {
            return Err(NetError::InvalidInput);
        }
        self.icmp_claim_ident(id, ep.port)?;
        let i = icmp_state(self.get_mut(id)?).ok_or(NetError::InvalidInput)?;
        i.bound = (!ep.addr.is_unspecified()).then_some(ep.addr);
        Ok(())
    }

    pub(crate) fn icmp_connect(&mut self, id: SocketId, addr: SocketAddr) -> Result<()> {
        let peer = super::wildcard_is_local(self.get(id)?.endpoint(addr)?.addr);
        self.route(peer)?;
        let i = icmp_state(self.get_mut(id)?).ok_or(NetError::InvalidInput)?;
        i.peer = Some(peer);
        Ok(())
    }

    pub(crate) fn icmp_disconnect(&mut self, id: SocketId) -> Result<()> {
        icmp_state(self.get_mut(id)?)
            .ok_or(NetError::InvalidInput)?
            .peer = None;
        Ok(())
    }

    pub(crate) fn icmp_send_to(
        &mut self,
        id: SocketId,
        data: &[u8],
        to: Option<SocketAddr>,
    ) -> Result<usize> {
        let sock = self.get_mut(id)?;
        let domain = sock.domain;
        let dst = match to {
            Some(a) => super::wildcard_is_local(sock.endpoint(a)?.addr),
            None => icmp_state(sock)
                .and_then(|i| i.peer)
                .ok_or(NetError::DestinationRequired)?,
        };
        let echo_request = match domain {
            Domain::Ipv4 => ECHO_REQUEST_V4,
            Domain::Ipv6 => ECHO_REQUEST_V6,
        };
        // Linux's ping sockets take only echo requests with code 0.
        if data.len() < 8 || data[0] != echo_request || data[1] != 0 {
            return Err(NetError::InvalidInput);
        }
        if data.len() > 65507 {
            return Err(NetError::MessageTooLong);
        }
        let (nic, _) = self.route(dst)?;
        if let Some(hop) = self.next_hop(nic, dst) {
            self.solicit(nic, hop);
        }
        let ident = self.icmp_claim_ident(id, 0)?;
        let sock = self.get_mut(id)?;
        let use_home =
            sock.nic == nic || icmp_state(sock).is_some_and(|i| i.socket().send_queue() == 0);
        if use_home {
            sock.nic = nic;
        } else if !icmp_state(sock).is_some_and(|i| i.extra_tx.iter().any(|(n, _)| *n == nic)) {
            let opts = sock.opts.clone();
            let mut slot = new_slot(&self.pool, &opts)?;
            slot.set
                .get_mut::<icmp::Socket<'static>>(slot.handle)
                .bind(icmp::Endpoint::Ident(ident))
                .map_err(|_| NetError::InvalidInput)?;
            let i = icmp_state(self.get_mut(id)?).ok_or(NetError::InvalidInput)?;
            i.extra_tx.push((nic, slot));
        }
        let i = icmp_state(self.get_mut(id)?).ok_or(NetError::InvalidInput)?;
        let s: &mut icmp::Socket<'static> =
            super::send_slot(&mut i.slot, &mut i.extra_tx, use_home, nic)?;
        let buf = s.send(data.len(), dst).map_err(|e| match e {
            icmp::SendError::BufferFull => NetError::WouldBlock,
            icmp::SendError::Unaddressable => NetError::InvalidInput,
        })?;
        buf.copy_from_slice(data);
        buf[4..6].copy_from_slice(&ident.to_be_bytes());
        self.mark_dirty(id);
        Ok(data.len())
    }

    pub(crate) fn icmp_recv_from(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
        flags: RecvFlags,
    ) -> Result<Datagram> {
        let sock = self.get_mut(id)?;
        let domain = sock.domain;
        let i = icmp_state(sock).ok_or(NetError::InvalidInput)?;
        if i.peeked.is_none() {
            let (payload, from) = i.socket().recv().map_err(|_| NetError::WouldBlock)?;
            i.peeked = Some((payload.to_vec(), from));
        }
        let (payload, from) = if flags.peek {
            i.peeked.clone()
        } else {
            i.peeked.take()
        }
        .ok_or(NetError::WouldBlock)?;
        let n = payload.len().min(buf.len());
        buf[..n].copy_from_slice(&payload[..n]);
        Ok(Datagram {
            copied: n,
            len: payload.len(),
            from: super::sockaddr(domain, from, 0),
            to: None,
            marks: super::IpMarks::default(),
        })
    }

    pub(crate) fn icmp_readiness(&mut self, id: SocketId) -> Result<Readiness> {
        let sock = self.get_mut(id)?;
        let error = sock.error.is_some();
        let i = icmp_state(sock).ok_or(NetError::InvalidInput)?;
        let peeked = i.peeked.is_some();
        let s = i.socket();
        Ok(Readiness {
            readable: peeked || s.can_recv(),
            writable: s.can_send(),
            error,
            ..Readiness::default()
        })
    }

    pub(crate) fn free_icmp(&mut self, sock: &Socket, id: SocketId) {
        if let Kind::Icmp(IcmpState {
            ident: Some(ident), ..
        }) = sock.kind
        {
            let v6 = sock.domain == Domain::Ipv6;
            if self.icmp_idents.get(&(v6, ident)) == Some(&id) {
                self.icmp_idents.remove(&(v6, ident));
            }
        }
    }
}
