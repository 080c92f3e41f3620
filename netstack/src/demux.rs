//! Reads a received frame's headers, once and checked, to find which socket
//! owns it before smoltcp sees it.
//!
//! Only what the lookup needs is extracted; smoltcp validates the rest when
//! the frame is fed to the owning socket's set. Anything malformed or not
//! owned by a socket is classified [`Flow::Other`] and fed to an empty set,
//! where smoltcp answers as a host with no such socket would (RST, ICMP).

use smoltcp::phy::Medium;
use smoltcp::wire::{
    ArpPacket, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, Icmpv6Message,
    Icmpv6Packet, IpAddress, IpEndpoint, IpProtocol, Ipv4Packet, Ipv6ExtHeader, Ipv6FragmentHeader,
    Ipv6Packet, TcpPacket, UdpPacket,
};

/// Identifies the datagram an IP fragment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FragKey {
    pub src: IpAddress,
    pub dst: IpAddress,
    pub ident: u32,
    pub proto: u8,
}

/// What a frame is, as far as socket lookup cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Tcp {
        dst: IpEndpoint,
        src: IpEndpoint,
        syn: bool,
        ack: bool,
        rst: bool,
    },
    Udp {
        dst: IpEndpoint,
        src: IpEndpoint,
    },
    /// An IP fragment; the first one (offset 0) also tells the ports.
    Fragment {
        key: FragKey,
        ports: Option<(IpProtocol, IpEndpoint, IpEndpoint)>,
    },
    EchoReply {
        v6: bool,
        ident: u16,
    },
    /// An ICMP "destination unreachable" about a packet we sent from `local` to `remote`.
    Unreachable {
        proto: IpProtocol,
        local: IpEndpoint,
        remote: IpEndpoint,
        /// Port unreachable (the peer host answered) rather than host or network.
        port: bool,
    },
    /// ARP or IPv6 neighbour discovery: may unblock sockets waiting for a
    /// neighbour; carries the address whose link-layer address it tells.
    Neighbor(Option<IpAddress>),
    Other,
}

pub(crate) fn classify(medium: Medium, frame: &[u8]) -> Flow {
    match medium {
        Medium::Ethernet => {
            let Ok(eth) = EthernetFrame::new_checked(frame) else {
                return Flow::Other;
            };
            match eth.ethertype() {
                EthernetProtocol::Arp => Flow::Neighbor(arp_sender(eth.payload())),
                EthernetProtocol::Ipv4 => ipv4(eth.payload()),
                EthernetProtocol::Ipv6 => ipv6(eth.payload()),
                EthernetProtocol::Unknown(_) => Flow::Other,
            }
        }
        _ => match frame.first().map(|b| b >> 4) {
            Some(4) => ipv4(frame),
            Some(6) => ipv6(frame),
            _ => Flow::Other,
        },
    }
}

fn ipv4(bytes: &[u8]) -> Flow {
    let Ok(ip) = Ipv4Packet::new_checked(bytes) else {
        return Flow::Other;
    };
    let src = IpAddress::Ipv4(ip.src_addr());
    let dst = IpAddress::Ipv4(ip.dst_addr());
    let proto = ip.next_header();
    if ip.more_frags() || ip.frag_offset() != 0 {
        let key = FragKey {
            src,
            dst,
            ident: u32::from(ip.ident()),
            proto: proto.into(),
        };
        let ports = if ip.frag_offset() == 0 {
            ports(proto, src, dst, ip.payload())
        } else {
            None
        };
        return Flow::Fragment { key, ports };
    }
    transport(proto, src, dst, ip.payload())
}

fn ipv6(bytes: &[u8]) -> Flow {
    let Ok(ip) = Ipv6Packet::new_checked(bytes) else {
        return Flow::Other;
    };
    let src = IpAddress::Ipv6(ip.src_addr());
    let dst = IpAddress::Ipv6(ip.dst_addr());
    let proto = ip.next_header();
    if proto == IpProtocol::Ipv6Frag {
        let Ok(ext) = Ipv6ExtHeader::new_checked(ip.payload()) else {
            return Flow::Other;
        };
        let Ok(frag) = Ipv6FragmentHeader::new_checked(ext.payload()) else {
            return Flow::Other;
        };
        let inner = ext.next_header();
        let key = FragKey {
            src,
            dst,
            ident: frag.ident(),
            proto: inner.into(),
        };
        let first = frag.frag_offset() == 0;
        let ports = if first {
            ip.payload()
                .get(8..)
                .and_then(|p| ports(inner, src, dst, p))
        } else {
            None
        };
        return Flow::Fragment { key, ports };
    }
    transport(proto, src, dst, ip.payload())
}

fn ports(
    proto: IpProtocol,
    src: IpAddress,
    dst: IpAddress,
    payload: &[u8],
) -> Option<(IpProtocol, IpEndpoint, IpEndpoint)> {
    // A first fragment holds at least 8 bytes: enough for both ports of TCP and UDP.
    let sport = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
    let dport = u16::from_be_bytes([*payload.get(2)?, *payload.get(3)?]);
    matches!(proto, IpProtocol::Tcp | IpProtocol::Udp).then(|| {
        (
            proto,
            IpEndpoint::new(dst, dport),
            IpEndpoint::new(src, sport),
        )
    })
}

fn transport(proto: IpProtocol, src: IpAddress, dst: IpAddress, payload: &[u8]) -> Flow {
    match proto {
        IpProtocol::Tcp => match TcpPacket::new_checked(payload) {
            Ok(tcp) => Flow::Tcp {
                dst: IpEndpoint::new(dst, tcp.dst_port()),
                src: IpEndpoint::new(src, tcp.src_port()),
                syn: tcp.syn(),
                ack: tcp.ack(),
                rst: tcp.rst(),
            },
            Err(_) => Flow::Other,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(payload) {
            Ok(udp) => Flow::Udp {
                dst: IpEndpoint::new(dst, udp.dst_port()),
                src: IpEndpoint::new(src, udp.src_port()),
            },
            Err(_) => Flow::Other,
        },
        IpProtocol::Icmp => match Icmpv4Packet::new_checked(payload) {
            Ok(icmp) if icmp.msg_type() == Icmpv4Message::EchoReply => Flow::EchoReply {
                v6: false,
                ident: icmp.echo_ident(),
            },
            Ok(icmp) if icmp.msg_type() == Icmpv4Message::DstUnreachable => {
                quoted_v4(icmp.data(), icmp.msg_code() == 3)
            }
            _ => Flow::Other,
        },
        IpProtocol::Icmpv6 => match Icmpv6Packet::new_checked(payload) {
            Ok(icmp) => match icmp.msg_type() {
                Icmpv6Message::EchoReply => Flow::EchoReply {
                    v6: true,
                    ident: icmp.echo_ident(),
                },
                Icmpv6Message::DstUnreachable => quoted_v6(icmp.payload(), icmp.msg_code() == 4),
                // An advertisement names its target; a solicitation's source is
                // cached by the receiver too.
                Icmpv6Message::NeighborAdvert => Flow::Neighbor(
                    payload
                        .get(8..24)
                        .and_then(|t| <[u8; 16]>::try_from(t).ok())
                        .map(|t| IpAddress::Ipv6(t.into())),
                ),
                Icmpv6Message::NeighborSolicit => {
                    Flow::Neighbor((!src.is_unspecified()).then_some(src))
                }
                Icmpv6Message::RouterAdvert => Flow::Neighbor(None),
                _ => Flow::Other,
            },
            Err(_) => Flow::Other,
        },
        _ => Flow::Other,
    }
}

fn arp_sender(bytes: &[u8]) -> Option<IpAddress> {
    let arp = ArpPacket::new_checked(bytes).ok()?;
    let a: [u8; 4] = arp.source_protocol_addr().try_into().ok()?;
    Some(IpAddress::v4(a[0], a[1], a[2], a[3]))
}

/// The addresses and ports of the IPv4 packet quoted in an ICMP error (its
/// header and at least 8 bytes of its payload).
fn quoted_v4(q: &[u8], port: bool) -> Flow {
    let parse = || {
        let hl = usize::from(q.first()? & 0x0f) * 4;
        let proto = IpProtocol::from(*q.get(9)?);
        let src: [u8; 4] = q.get(12..16)?.try_into().ok()?;
        let dst: [u8; 4] = q.get(16..20)?.try_into().ok()?;
        let ports = q.get(hl..hl.checked_add(4)?)?;
        Some(Flow::Unreachable {
            proto,
            local: IpEndpoint::new(
                IpAddress::v4(src[0], src[1], src[2], src[3]),
                u16::from_be_bytes([ports[0], ports[1]]),
            ),
            remote: IpEndpoint::new(
                IpAddress::v4(dst[0], dst[1], dst[2], dst[3]),
                u16::from_be_bytes([ports[2], ports[3]]),
            ),
            port,
        })
    };
    parse().unwrap_or(Flow::Other)
}

/// The same for an IPv6 packet quoted in an ICMPv6 error.
fn quoted_v6(q: &[u8], port: bool) -> Flow {
    let parse = || {
        let proto = IpProtocol::from(*q.get(6)?);
        let src: [u8; 16] = q.get(8..24)?.try_into().ok()?;
        let dst: [u8; 16] = q.get(24..40)?.try_into().ok()?;
        let ports = q.get(40..44)?;
        Some(Flow::Unreachable {
            proto,
            local: IpEndpoint::new(
                IpAddress::Ipv6(src.into()),
                u16::from_be_bytes([ports[0], ports[1]]),
            ),
            remote: IpEndpoint::new(
                IpAddress::Ipv6(dst.into()),
                u16::from_be_bytes([ports[2], ports[3]]),
            ),
            port,
        })
    };
    parse().unwrap_or(Flow::Other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_other_and_never_panics() {
        let mut buf = [0u8; 80];
        for len in 0..buf.len() {
            for fill in [0u8, 0x45, 0x60, 0xff] {
                buf.iter_mut().for_each(|b| *b = fill);
                let _ = classify(Medium::Ethernet, &buf[..len]);
                let _ = classify(Medium::Ip, &buf[..len]);
            }
        }
        assert_eq!(classify(Medium::Ip, &[]), Flow::Other);
        assert_eq!(classify(Medium::Ethernet, &[0; 10]), Flow::Other);
    }
}
