//! The bind table: local ports by protocol, ephemeral port choice and Linux's
//! `SO_REUSEADDR`/`SO_REUSEPORT` rules. Bindings enter through `bind` and
//! `connect`; incoming packets leave through `pick_socket` to one of a port's sockets.

use std::net::SocketAddr;

use smoltcp::wire::{IpAddress, IpEndpoint};

use super::Stack;
use crate::error::{NetError, Result};
use crate::socket::tcp::TcpState;
use crate::socket::{Binding, Kind, Protocol, SocketId};

impl Stack {
    /// Binds a socket to a local address (`bind(2)`). Port 0 picks an ephemeral port.
    pub fn bind(&mut self, id: SocketId, addr: SocketAddr) -> Result<()> {
        let sock = self.get(id)?;
        if sock.binding.is_some() {
            return Err(NetError::InvalidInput);
        }
        if let Kind::Icmp(_) = sock.kind {
            return self.bind_icmp(id, addr);
        }
        let ep = match sock.endpoint(addr) {
            Ok(ep) => ep,
            // Binding a v6-only socket to a mapped address is refused as Linux does.
            Err(NetError::NetworkUnreachable) => return Err(NetError::InvalidInput),
            Err(e) => return Err(e),
        };
        let local = (!ep.addr.is_unspecified()).then_some(ep.addr);
        let sock_is_udp = sock.protocol() == Protocol::Udp;
        // A gateway's far side (a transparent NIC) may speak for any
        // address, as IP_TRANSPARENT lets a Linux proxy do.
        let transparent = self.nics.iter().any(|n| n.transparent);
        if let Some(a) = local
            && !self.is_local(a)
            && !transparent
            && !(sock.protocol() == Protocol::Udp && self.is_broadcast(a))
        {
            return Err(NetError::AddrNotAvailable);
        }
        let binding = self.claim_port(id, local, ep.port)?;
        self.get_mut(id)?.binding = Some(binding);
        if sock_is_udp {
            if let Kind::Udp(u) = &mut self.get_mut(id)?.kind {
                u.port_locked = ep.port != 0;
            }
            if ep.port != 0 {
                self.listen_gen += 1;
            }
            self.udp_bind_port(id)?;
        }
        Ok(())
    }

    /// Finds (port 0) or checks a port for `id` and records the binding.
    pub(crate) fn claim_port(
        &mut self,
        id: SocketId,
        addr: Option<IpAddress>,
        port: u16,
    ) -> Result<Binding> {
        let random = self.next_random();
        let sock = self.get(id)?;
        let proto = sock.protocol();
        let binding = if port != 0 {
            let b = sock.binding_for(addr, port);
            if self.bind_conflict(id, &b, false) {
                return Err(NetError::AddrInUse);
            }
            b
        } else {
            let (lo, hi) = self.cfg.ephemeral_ports;
            let span = u32::from(hi - lo) + 1;
            let start = (random % u64::from(span)) as u32;
            let table = match proto {
                Protocol::Tcp => &self.tcp_ports,
                _ => &self.udp_ports,
            };
            let found = (0..span)
                .map(|i| lo + ((start + i) % span) as u16)
                .find(|p| table.get(p).is_none_or(|v| v.is_empty()));
            match found {
                Some(p) => sock.binding_for(addr, p),
                None => return Err(NetError::AddrNotAvailable),
            }
        };
        let table = match proto {
            Protocol::Tcp => &mut self.tcp_ports,
            _ => &mut self.udp_ports,
        };
        table.entry(binding.port).or_default().push(id);
        Ok(binding)
    }

    /// Picks the local port of an outgoing TCP connection: a free port, or one
    /// held only by other outgoing connections whose 4-tuples differ. A
    /// 4-tuple still in TIME_WAIT is taken over (Linux's `tcp_tw_reuse`).
    pub(crate) fn claim_connect_port(
        &mut self,
        id: SocketId,
        local: IpAddress,
        remote: IpEndpoint,
    ) -> Result<Binding> {
        let random = self.next_random();
        let (lo, hi) = self.cfg.ephemeral_ports;
        let span = u32::from(hi - lo) + 1;
        let start = (random % u64::from(span)) as u32;
        for i in 0..span {
            let port = lo + ((start + i) % span) as u16;
            let shareable = self.tcp_ports.get(&port).is_none_or(|ids| {
                ids.iter().all(|&o| {
                    self.sockets
                        .get(o)
                        .and_then(|s| s.binding)
                        .is_some_and(|b| b.shared)
                })
            });
            if !shareable {
                continue;
            }
            let key = (IpEndpoint::new(local, port), remote);
            if let Some(&old) = self.tcp_conns.get(&key) {
                match self.sockets.get(old).map(|s| &s.kind) {
                    Some(Kind::Tcp(TcpState::TimeWait { .. })) => self.free(old),
                    _ => continue,
                }
            }
            let mut b = self.get(id)?.binding_for(None, port);
            b.shared = true;
            self.tcp_ports.entry(port).or_default().push(id);
            return Ok(b);
        }
        Err(NetError::AddrNotAvailable)
    }

    /// Among `ids`, the socket with the best `score` (None: not a candidate).
    /// Ties within a `SO_REUSEPORT` group are spread by a hash of the sender,
    /// so one peer always reaches the same socket, as on Linux.
    pub(crate) fn pick_socket(
        &self,
        ids: &[SocketId],
        src: IpEndpoint,
        score: impl Fn(SocketId) -> Option<u8>,
    ) -> Option<SocketId> {
        let best = ids.iter().filter_map(|&id| score(id)).max()?;
        let group: Vec<SocketId> = ids
            .iter()
            .copied()
            .filter(|&id| score(id) == Some(best))
            .collect();
        let spread = group.len() > 1
            && group
                .iter()
                .all(|&id| self.sockets.get(id).is_some_and(|s| s.opts.reuse_port));
        let pick = if spread {
            crate::socket::flow_hash(src) % group.len()
        } else {
            0
        };
        group.get(pick).copied()
    }

    /// Linux's bind conflict rule: overlapping bindings conflict unless both
    /// set SO_REUSEADDR and the other is not listening, or both set SO_REUSEPORT.
    /// With `listening`, the check is the one `listen` makes: only other
    /// listeners count, and SO_REUSEADDR no longer helps.
    pub(crate) fn bind_conflict(&self, id: SocketId, b: &Binding, listening: bool) -> bool {
        let Some(me) = self.sockets.get(id) else {
            return true;
        };
        let table = match me.protocol() {
            Protocol::Tcp => &self.tcp_ports,
            _ => &self.udp_ports,
        };
        let Some(ids) = table.get(&b.port) else {
            return false;
        };
        ids.iter().filter(|&&o| o != id).any(|&o| {
            let Some(other) = self.sockets.get(o) else {
                return false;
            };
            let Some(ob) = other.binding else {
                return false;
            };
            if !ob.overlaps(b) {
                return false;
            }
            let other_listening = matches!(other.kind, Kind::Tcp(TcpState::Listening(_)));
            if me.opts.reuse_port && other.opts.reuse_port {
                return false;
            }
            if listening {
                return other_listening;
            }
            !(me.opts.reuse_addr && other.opts.reuse_addr && !other_listening)
        })
    }
}
