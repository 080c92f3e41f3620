//! Routing and neighbours: which NIC a packet to an address leaves through,
//! with which source address and next hop. Queries answer from the NICs'
//! addresses, gateway routes and default gateways; only `solicit` sends: an
//! ARP request or a neighbour solicitation, straight to the link.

use std::net::IpAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::Duration;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr, IpProtocol, Ipv4Address,
    Ipv6Address, Ipv6Packet, Ipv6Repr, NdiscRepr,
};

use super::{GatewayRoute, IfAddr, LOOPBACK, NicId, Stack};
use crate::error::{NetError, Result};
use crate::link::{Link, Medium};

impl Stack {
    /// Whether `addr` is one of the stack's own addresses (any address in 127.0.0.0/8 counts).
    pub(crate) fn is_local(&self, addr: IpAddress) -> bool {
        match addr {
            IpAddress::Ipv4(a) if a.octets()[0] == 127 => true,
            _ => self
                .nics
                .iter()
                .any(|n| n.info.addrs.iter().any(|a| IpAddress::from(a.addr) == addr)),
        }
    }

    /// The NIC a packet to `dst` leaves through, and the source address to use.
    pub(crate) fn route(&self, dst: IpAddress) -> Result<(NicId, IpAddress)> {
        if self.is_local(dst) || dst.is_unspecified() {
            let src = match dst {
                IpAddress::Ipv4(a) if a.octets()[0] == 127 => {
                    IpAddress::Ipv4(Ipv4Address::LOCALHOST)
                }
                IpAddress::Ipv4(a) if a.is_unspecified() => IpAddress::Ipv4(Ipv4Address::LOCALHOST),
                IpAddress::Ipv6(a) if a.is_unspecified() => IpAddress::Ipv6(Ipv6Address::LOCALHOST),
                other => other,
            };
            return Ok((LOOPBACK, src));
        }
        // Longest on-link prefix first.
        let mut best: Option<(u8, NicId, IpAddress)> = None;
        for (i, nic) in self.nics.iter().enumerate().skip(1) {
            for a in &nic.info.addrs {
                let cidr = IpCidr::new(IpAddress::from(a.addr), a.prefix_len);
                if cidr.contains_addr(&dst) && best.is_none_or(|(p, _, _)| a.prefix_len > p) {
                    best = Some((a.prefix_len, i, cidr.address()));
                }
            }
            for r in &nic.info.onlink {
                let cidr = IpCidr::new(IpAddress::from(r.addr), r.prefix_len);
                if cidr.contains_addr(&dst)
                    && best.is_none_or(|(p, _, _)| r.prefix_len > p)
                    && let Some(src) = self.source_address(i, dst)
                {
                    best = Some((r.prefix_len, i, src));
                }
            }
        }
        if let Some((_, nic, src)) = best {
            return Ok((nic, src));
        }
        // Then the longest route through a gateway.
        if let Some((nic, _)) = self.gateway_route(dst)
            && let Some(src) = self.source_address(nic, dst)
        {
            return Ok((nic, src));
        }
        // Then the default route of the family.
        for (i, nic) in self.nics.iter().enumerate().skip(1) {
            let has_default = match dst {
                IpAddress::Ipv4(_) => nic.info.gateway_v4.is_some(),
                IpAddress::Ipv6(_) => nic.info.gateway_v6.is_some(),
            };
            if !has_default {
                continue;
            }
            if let Some(src) = self.source_address(i, dst) {
                return Ok((i, src));
            }
        }
        Err(NetError::NetworkUnreachable)
    }

    /// The NIC and gateway of the longest gateway route to `dst`, if any.
    fn gateway_route(&self, dst: IpAddress) -> Option<(NicId, IpAddress)> {
        let mut best: Option<(u8, NicId, IpAddress)> = None;
        for (i, nic) in self.nics.iter().enumerate() {
            for r in &nic.info.routes {
                let cidr = IpCidr::new(IpAddress::from(r.dst.addr), r.dst.prefix_len);
                if cidr.contains_addr(&dst) && best.is_none_or(|(p, _, _)| r.dst.prefix_len > p) {
                    best = Some((r.dst.prefix_len, i, IpAddress::from(r.gateway)));
                }
            }
        }
        best.map(|(_, nic, gw)| (nic, gw))
    }

    /// Adds a route to `route.dst` through `route.gateway` on `nic`.
    /// The gateway must be on-link there (Linux: ENETUNREACH otherwise).
    pub fn add_route(&mut self, nic: NicId, route: GatewayRoute) -> Result<()> {
        let GatewayRoute { dst, gateway } = route;
        let max = if dst.addr.is_ipv4() { 32 } else { 128 };
        if dst.prefix_len > max || dst.addr.is_ipv4() != gateway.is_ipv4() || nic == LOOPBACK {
            return Err(NetError::InvalidInput);
        }
        let gw = IpAddress::from(gateway);
        if self.next_hop(nic, gw) != Some(gw) {
            return Err(NetError::NetworkUnreachable);
        }
        let n = self.nics.get_mut(nic).ok_or(NetError::InvalidInput)?;
        let cidr = IpCidr::new(IpAddress::from(dst.addr), dst.prefix_len);
        let mut full = false;
        n.iface.routes_mut().update(|routes| {
            full = routes
                .push(smoltcp::iface::Route {
                    cidr,
                    via_router: gw,
                    preferred_until: None,
                    expires_at: None,
                })
                .is_err();
        });
        if full {
            return Err(NetError::NoBufferSpace);
        }
        n.info.routes.push(route);
        Ok(())
    }

    /// Adds a route with no gateway to `dst` on `nic` (`ip route add DST/LEN
    /// dev NIC`): its addresses are neighbours, reached directly. smoltcp
    /// takes ARP answers only from inside the subnets of its own addresses,
    /// so the prefix must hold one of the NIC's addresses (an address /32
    /// with a route to its /24, say), whose subnet it then widens; a prefix
    /// that holds none, such as a lone gateway outside every subnet, is
    /// [`NetError::NotSupported`]. A prefix already inside a subnet of the
    /// NIC needs nothing and is accepted as it is.
    pub fn add_onlink_route(&mut self, nic: NicId, dst: IfAddr) -> Result<()> {
        let max = if dst.addr.is_ipv4() { 32 } else { 128 };
        if dst.prefix_len > max || nic == LOOPBACK {
            return Err(NetError::InvalidInput);
        }
        let n = self.nics.get_mut(nic).ok_or(NetError::InvalidInput)?;
        let wide = IpCidr::new(IpAddress::from(dst.addr), dst.prefix_len);
        let covered = n.info.addrs.iter().any(|a| {
            a.addr.is_ipv4() == dst.addr.is_ipv4()
                && a.prefix_len <= dst.prefix_len
                && IpCidr::new(IpAddress::from(a.addr), a.prefix_len)
                    .contains_addr(&IpAddress::from(dst.addr))
        });
        if !covered {
            let inside = n
                .info
                .addrs
                .iter()
                .find(|a| wide.contains_addr(&IpAddress::from(a.addr)))
                .ok_or(NetError::NotSupported)?;
            let cidr = IpCidr::new(IpAddress::from(inside.addr), dst.prefix_len);
            let mut full = false;
            // smoltcp forgets its neighbours on any address change; this is set-up time.
            n.iface.update_ip_addrs(|addrs| {
                full = addrs.push(cidr).is_err();
            });
            if full {
                return Err(NetError::NoBufferSpace);
            }
        }
        n.info.onlink.push(dst);
        Ok(())
    }

    /// The neighbour that must answer for a packet to `dst` to leave `nic`:
    /// `dst` itself when on-link, else the gateway. None without a link layer.
    pub(crate) fn next_hop(&self, nic: NicId, dst: IpAddress) -> Option<IpAddress> {
        let n = self.nics.get(nic)?;
        if n.caps.medium != Medium::Ethernet {
            return None;
        }
        let on_link = n
            .info
            .addrs
            .iter()
            .chain(&n.info.onlink)
            .any(|a| IpCidr::new(IpAddress::from(a.addr), a.prefix_len).contains_addr(&dst));
        if on_link {
            return Some(dst);
        }
        if let Some((route_nic, gw)) = self.gateway_route(dst)
            && route_nic == nic
        {
            return Some(gw);
        }
        match dst {
            IpAddress::Ipv4(_) => n.info.gateway_v4.map(IpAddress::Ipv4),
            IpAddress::Ipv6(_) => n.info.gateway_v6.map(IpAddress::Ipv6),
        }
    }

    /// Sends an ARP request (IPv4) or a neighbour solicitation (IPv6) for a
    /// next hop the NIC has not heard from, at most once a second per
    /// address. smoltcp resolves neighbours too, but rate-limits the whole
    /// interface at once, so a second neighbour would wait a second; Linux
    /// limits per neighbour.
    pub(crate) fn solicit(&mut self, nic: NicId, hop: IpAddress) {
        if self.neighbor_known(nic, hop) {
            return;
        }
        let Some(source) = self.source_address(nic, hop) else {
            return;
        };
        let now = self.now;
        let Some(n) = self.nics.get_mut(nic) else {
            return;
        };
        let Some(mac) = n.info.mac.map(EthernetAddress) else {
            return;
        };
        if n.solicited
            .get(&hop)
            .is_some_and(|&t| now < t + Duration::from_secs(1))
        {
            return;
        }
        if n.solicited.len() >= 4096 {
            n.solicited.clear();
        }
        n.solicited.insert(hop, now);
        let mut frame = n.link.buffer();
        let built = match (source, hop) {
            (IpAddress::Ipv4(src), IpAddress::Ipv4(target)) => {
                arp_request(&mut frame, mac, src, target);
                true
            }
            (IpAddress::Ipv6(src), IpAddress::Ipv6(target)) => {
                neighbor_solicitation(&mut frame, mac, src, target);
                true
            }
            _ => false,
        };
        if built {
            n.link.send(now, frame);
        } else {
            n.link.recycle(frame);
        }
    }

    /// Whether `nic` has heard from `addr` at the link layer.
    pub(crate) fn neighbor_known(&self, nic: NicId, addr: IpAddress) -> bool {
        self.nics
            .get(nic)
            .is_some_and(|n| n.neighbors.contains(&addr))
    }

    fn source_address(&self, nic: NicId, dst: IpAddress) -> Option<IpAddress> {
        let addrs = &self.nics[nic].info.addrs;
        let same_family = |a: &&IfAddr| a.addr.is_ipv4() == matches!(dst, IpAddress::Ipv4(_));
        // Prefer a global address over a link-local one for IPv6.
        addrs
            .iter()
            .filter(same_family)
            .find(|a| match a.addr {
                IpAddr::V6(v6) => !v6.is_unicast_link_local(),
                IpAddr::V4(_) => true,
            })
            .or_else(|| addrs.iter().find(same_family))
            .map(|a| IpAddress::from(a.addr))
    }

    /// The broadcast addresses of the stack (limited and per-subnet).
    pub(crate) fn is_broadcast(&self, addr: IpAddress) -> bool {
        let IpAddress::Ipv4(a) = addr else {
            return false;
        };
        if a == Ipv4Address::BROADCAST {
            return true;
        }
        self.nics.iter().any(|n| {
            n.info.addrs.iter().any(|i| match i.addr {
                IpAddr::V4(v4) if i.prefix_len < 31 => {
                    let mask = u32::MAX
                        .checked_shl(32 - u32::from(i.prefix_len))
                        .unwrap_or(0);
                    u32::from(v4) | !mask == u32::from(a)
                }
                _ => false,
            })
        })
    }
}

/// Builds a broadcast ARP request for `target` into `frame`.
pub(crate) fn arp_request(
    frame: &mut Vec<u8>,
    mac: EthernetAddress,
    src: Ipv4Address,
    target: Ipv4Address,
) {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: src,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let eth = EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    frame.clear();
    frame.resize(eth.buffer_len() + arp.buffer_len(), 0);
    let mut f = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
}

/// Builds a neighbour solicitation for `target`, sent to its solicited-node
/// multicast group (ff02::1:ffXX:XXXX, Ethernet 33:33:ff:XX:XX:XX), into `frame`.
fn neighbor_solicitation(
    frame: &mut Vec<u8>,
    mac: EthernetAddress,
    src: Ipv6Address,
    target: Ipv6Address,
) {
    let t = target.octets();
    let group = Ipv6Address::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(mac.into()),
    });
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: group,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let eth = EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress([0x33, 0x33, 0xff, t[13], t[14], t[15]]),
        ethertype: EthernetProtocol::Ipv6,
    };
    frame.clear();
    frame.resize(eth.buffer_len() + ip.buffer_len() + icmp.buffer_len(), 0);
    let mut f = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut f);
    let mut p = Ipv6Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p);
    icmp.emit(
        &src,
        &group,
        &mut Icmpv6Packet::new_unchecked(p.payload_mut()),
        &ChecksumCapabilities::default(),
    );
}
