//! The stack: NICs, routing, the socket table, and `poll(now)`.
//!
//! Frames enter through [`Stack::poll`]: each one is classified by
//! [`demux`](crate::demux), then fed to smoltcp together with the one small
//! `SocketSet` that owns it (a connection, a listener's waiting socket, a UDP
//! or ICMP socket), or to an empty set when no socket does. Output is produced
//! only for sockets marked dirty (by input, by the caller, or by a timer from
//! the deadline heap). The cost per frame therefore does not depend on how many
//! sockets exist.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use slotmap::SlotMap;

use crate::buffers::BufferPool;
use smoltcp::iface::{Config, Interface, PollResult, SocketSet};
use smoltcp::socket::raw;
use smoltcp::storage::PacketMetadata;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpProtocol, IpVersion,
    Ipv4Address, Ipv6Address,
};

use crate::demux::{self, Flow, FragKey};
use crate::error::{NetError, Result};
use crate::frag6::{self, Reassembler};
use crate::link::{FrameDevice, Link, LinkCaps, Loopback, Medium};
use crate::socket::icmp::IcmpState;
use crate::socket::tcp::TcpState;
use crate::socket::udp::UdpState;
use crate::socket::{
    Binding, Datagram, Domain, Kind, Options, Protocol, Readiness, RecvFlags, Shutdown, Slot,
    SockOpt, SockOptName, Socket, SocketId, clamp_buffer,
};

/// Index of a NIC in its stack. The loopback NIC is always [`LOOPBACK`].
pub type NicId = usize;
/// The loopback NIC, present in every stack.
pub const LOOPBACK: NicId = 0;

/// Stack-wide settings.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Seeds initial sequence numbers and port choice.
    pub random_seed: u64,
    /// Upper bound of a listen backlog (`net.core.somaxconn`).
    pub somaxconn: usize,
    /// Ephemeral port range, inclusive (`net.ipv4.ip_local_port_range`).
    pub ephemeral_ports: (u16, u16),
    /// Default TCP receive buffer, bytes.
    pub tcp_recv_buffer: usize,
    /// Default TCP send buffer, bytes.
    pub tcp_send_buffer: usize,
    /// Default UDP/ICMP receive buffer, bytes.
    pub udp_recv_buffer: usize,
    /// Default UDP/ICMP send buffer, bytes.
    pub udp_send_buffer: usize,
    /// How long a connect may wait for the handshake (Linux: 6 SYN retries, about 127 s).
    pub connect_timeout: Duration,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            random_seed: 0x5eed_cafe_f00d_d00d,
            somaxconn: 4096,
            ephemeral_ports: (32768, 60999),
            tcp_recv_buffer: 256 << 10,
            tcp_send_buffer: 256 << 10,
            udp_recv_buffer: 256 << 10,
            udp_send_buffer: 256 << 10,
            connect_timeout: Duration::from_secs(127),
        }
    }
}

/// An address assigned to a NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length (the on-link subnet).
    pub prefix_len: u8,
}

/// How to set up a NIC.
#[derive(Debug, Clone)]
pub struct NicConfig {
    /// Interface name, as `ip link` shows it.
    pub name: String,
    /// MAC address (Ethernet links only).
    pub mac: [u8; 6],
    /// Addresses, with their subnets.
    pub addrs: Vec<IfAddr>,
    /// Default IPv4 gateway, if this NIC has the default route.
    pub gateway_v4: Option<Ipv4Addr>,
    /// Default IPv6 gateway.
    pub gateway_v6: Option<Ipv6Addr>,
}

/// A read-only view of one NIC, for interface listings.
#[derive(Debug, Clone)]
pub struct NicInfo {
    /// Interface name.
    pub name: String,
    /// MTU.
    pub mtu: usize,
    /// MAC address, for Ethernet NICs.
    pub mac: Option<[u8; 6]>,
    /// Addresses.
    pub addrs: Vec<IfAddr>,
    /// Default gateways.
    pub gateway_v4: Option<Ipv4Addr>,
    /// Default IPv6 gateway.
    pub gateway_v6: Option<Ipv6Addr>,
}

pub(crate) struct Nic {
    pub info: NicInfo,
    pub iface: Interface,
    pub link: Box<dyn Link>,
    pub caps: LinkCaps,
    /// A raw socket that sends IPv6 fragments made by the stack itself.
    pub frag_tx: Slot,
    /// Addresses whose link-layer address this NIC has heard (ARP, NDP);
    /// a connect whose next hop never shows up fails with EHOSTUNREACH.
    pub neighbors: std::collections::HashSet<IpAddress>,
    /// When the stack last sent its own ARP request for an address.
    pub solicited: HashMap<IpAddress, Instant>,
}

/// A user-space TCP/IP stack with Linux socket semantics.
pub struct Stack {
    pub(crate) cfg: StackConfig,
    pub(crate) now: Instant,
    pub(crate) nics: Vec<Nic>,
    pub(crate) sockets: SlotMap<SocketId, Socket>,
    /// Connections (including half-open ones) by (local, remote).
    pub(crate) tcp_conns: HashMap<(IpEndpoint, IpEndpoint), SocketId>,
    /// Listening sockets by port.
    pub(crate) tcp_listeners: HashMap<u16, Vec<SocketId>>,
    /// Every socket holding a local port, by protocol and port.
    pub(crate) tcp_ports: HashMap<u16, Vec<SocketId>>,
    pub(crate) udp_ports: HashMap<u16, Vec<SocketId>>,
    /// Ping sockets by (is IPv6, identifier).
    pub(crate) icmp_idents: HashMap<(bool, u16), SocketId>,
    frag_owners: HashMap<FragKey, (SocketId, Instant)>,
    dirty: Vec<SocketId>,
    events: Vec<SocketId>,
    timers: BinaryHeap<Reverse<(Instant, SocketId)>>,
    empty: SocketSet<'static>,
    /// When sockets waiting on a neighbour were last woken, and whether a
    /// neighbour answered since.
    last_wake: Option<Instant>,
    wake_pending: bool,
    /// Connections in TIME_WAIT, to bound their number.
    pub(crate) time_wait_count: usize,
    pub(crate) pool: BufferPool,
    reassembler: Reassembler,
    pub(crate) rng: u64,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field(
                "nics",
                &self.nics.iter().map(|n| &n.info.name).collect::<Vec<_>>(),
            )
            .field("sockets", &self.sockets.len())
            .finish_non_exhaustive()
    }
}

/// Frames read from one link before output is produced: batching lets one
/// ACK answer several segments, as GRO does on Linux.
const INGRESS_BATCH: usize = 64;

impl Stack {
    /// A stack with only the loopback NIC (`lo`: 127.0.0.1/8 and ::1/128).
    pub fn new(cfg: StackConfig, now: Instant) -> Stack {
        let mut stack = Stack {
            rng: cfg.random_seed | 1,
            cfg,
            now,
            nics: Vec::new(),
            sockets: SlotMap::with_key(),
            tcp_conns: HashMap::new(),
            tcp_listeners: HashMap::new(),
            tcp_ports: HashMap::new(),
            udp_ports: HashMap::new(),
            icmp_idents: HashMap::new(),
            frag_owners: HashMap::new(),
            dirty: Vec::new(),
            events: Vec::new(),
            timers: BinaryHeap::new(),
            empty: SocketSet::new(Vec::new()),
            last_wake: None,
            wake_pending: false,
            time_wait_count: 0,
            pool: BufferPool::default(),
            reassembler: Reassembler::default(),
        };
        let lo = NicConfig {
            name: "lo".into(),
            mac: [0; 6],
            addrs: vec![
                IfAddr {
                    addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    prefix_len: 8,
                },
                IfAddr {
                    addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    prefix_len: 128,
                },
            ],
            gateway_v4: None,
            gateway_v6: None,
        };
        stack
            .add_nic(Box::new(Loopback::new()), lo)
            .expect("the loopback configuration is valid");
        stack
    }

    /// Adds a NIC over `link`. Its addresses are also reachable through
    /// loopback, as Linux routes traffic to a host's own addresses.
    pub fn add_nic(&mut self, mut link: Box<dyn Link>, cfg: NicConfig) -> Result<NicId> {
        let caps = link.caps();
        let hw = match caps.medium {
            Medium::Ethernet => {
                let mac = EthernetAddress(cfg.mac);
                if !mac.is_unicast() {
                    return Err(NetError::InvalidInput);
                }
                HardwareAddress::Ethernet(mac)
            }
            _ => HardwareAddress::Ip,
        };
        let mut config = Config::new(hw);
        config.random_seed = self.next_random();
        let mut dev = FrameDevice::new(&mut *link, &caps, None, self.now);
        let mut iface = Interface::new(config, &mut dev, self.now);
        let mut cidrs = Vec::new();
        for a in &cfg.addrs {
            let cidr = IpCidr::new(IpAddress::from(a.addr), a.prefix_len);
            cidrs.push(cidr);
        }
        let mut full = false;
        iface.update_ip_addrs(|addrs| {
            for c in &cidrs {
                full |= addrs.push(*c).is_err();
            }
        });
        if full {
            return Err(NetError::NoBufferSpace);
        }
        if let Some(gw) = cfg.gateway_v4 {
            iface
                .routes_mut()
                .add_default_ipv4_route(gw)
                .map_err(|_| NetError::NoBufferSpace)?;
        }
        if let Some(gw) = cfg.gateway_v6 {
            iface
                .routes_mut()
                .add_default_ipv6_route(gw)
                .map_err(|_| NetError::NoBufferSpace)?;
        }
        let id = self.nics.len();
        if id == LOOPBACK {
            // All of 127.0.0.0/8 is this host, as on Linux.
            iface.set_any_ip(true);
            iface.routes_mut().update(|routes| {
                full |= routes
                    .push(smoltcp::iface::Route {
                        cidr: IpCidr::new(IpAddress::v4(127, 0, 0, 0), 8),
                        via_router: IpAddress::v4(127, 0, 0, 1),
                        preferred_until: None,
                        expires_at: None,
                    })
                    .is_err();
            });
        } else {
            // Traffic to our own addresses goes through lo.
            let lo = &mut self.nics[LOOPBACK].iface;
            lo.update_ip_addrs(|addrs| {
                for c in &cidrs {
                    let host = IpCidr::new(
                        c.address(),
                        match c.address() {
                            IpAddress::Ipv4(_) => 32,
                            IpAddress::Ipv6(_) => 128,
                        },
                    );
                    full |= addrs.push(host).is_err();
                }
            });
            if full {
                return Err(NetError::NoBufferSpace);
            }
        }
        let info = NicInfo {
            name: cfg.name,
            mtu: caps.mtu,
            mac: matches!(caps.medium, Medium::Ethernet).then_some(cfg.mac),
            addrs: cfg.addrs,
            gateway_v4: cfg.gateway_v4,
            gateway_v6: cfg.gateway_v6,
        };
        let (rx, rx_lease) = self.pool.lend(4096)?;
        let (tx, tx_lease) = self.pool.lend(512 << 10)?;
        let raw = raw::Socket::new(
            Some(IpVersion::Ipv6),
            Some(IpProtocol::Ipv6Frag),
            raw::PacketBuffer::new(vec![PacketMetadata::EMPTY; 1], rx),
            raw::PacketBuffer::new(vec![PacketMetadata::EMPTY; 512], tx),
        );
        self.nics.push(Nic {
            info,
            iface,
            link,
            caps,
            frag_tx: Slot::new(raw, [rx_lease, tx_lease]),
            neighbors: std::collections::HashSet::new(),
            solicited: HashMap::new(),
        });
        Ok(id)
    }

    /// The NICs, in index order.
    pub fn nics(&self) -> impl Iterator<Item = &NicInfo> {
        self.nics.iter().map(|n| &n.info)
    }

    /// The time of the last [`Stack::poll`].
    pub fn now(&self) -> Instant {
        self.now
    }

    pub(crate) fn next_random(&mut self) -> u64 {
        // xorshift64*: ports and seeds need spread, not secrecy.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    // ---- routing -------------------------------------------------------

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
        }
        if let Some((_, nic, src)) = best {
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
            .any(|a| IpCidr::new(IpAddress::from(a.addr), a.prefix_len).contains_addr(&dst));
        if on_link {
            return Some(dst);
        }
        match dst {
            IpAddress::Ipv4(_) => n.info.gateway_v4.map(IpAddress::Ipv4),
            IpAddress::Ipv6(_) => n.info.gateway_v6.map(IpAddress::Ipv6),
        }
    }

    /// Sends an ARP request for an IPv4 next hop the NIC has not heard from,
    /// at most once a second per address. smoltcp resolves neighbours too,
    /// but rate-limits the whole interface at once, so a second neighbour
    /// (or IPv4 beside IPv6) would wait a second; Linux limits per neighbour.
    pub(crate) fn solicit(&mut self, nic: NicId, hop: IpAddress) {
        let IpAddress::Ipv4(target) = hop else {
            return;
        };
        if self.neighbor_known(nic, hop) {
            return;
        }
        let Some(IpAddress::Ipv4(source)) = self.source_address(nic, hop) else {
            return;
        };
        let now = self.now;
        let Some(n) = self.nics.get_mut(nic) else {
            return;
        };
        let Some(mac) = n.info.mac else {
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
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(mac),
            source_protocol_addr: source,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(mac),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        };
        let mut frame = n.link.buffer();
        frame.clear();
        frame.resize(eth.buffer_len() + arp.buffer_len(), 0);
        let mut f = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.emit(&mut f);
        arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
        n.link.send(now, frame);
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

    // ---- the socket table ----------------------------------------------

    /// Opens a socket (`socket(2)`).
    pub fn socket(&mut self, domain: Domain, protocol: Protocol) -> Result<SocketId> {
        let (rbuf, sbuf) = match protocol {
            Protocol::Tcp => (self.cfg.tcp_recv_buffer, self.cfg.tcp_send_buffer),
            Protocol::Udp | Protocol::Icmp => (self.cfg.udp_recv_buffer, self.cfg.udp_send_buffer),
        };
        let opts = Options::new(rbuf, sbuf);
        let kind = match protocol {
            Protocol::Tcp => Kind::Tcp(TcpState::Fresh),
            Protocol::Udp => Kind::Udp(UdpState::new(&self.pool, &opts)?),
            Protocol::Icmp => Kind::Icmp(IcmpState::new(&self.pool, &opts)?),
        };
        let socket = Socket {
            domain,
            opts,
            kind,
            nic: LOOPBACK,
            timer: None,
            dirty: false,
            evented: false,
            orphan: false,
            error: None,
            shut_rd: false,
            shut_wr: false,
            binding: None,
        };
        Ok(self.sockets.insert(socket))
    }

    pub(crate) fn get(&self, id: SocketId) -> Result<&Socket> {
        match self.sockets.get(id) {
            Some(s) if !s.orphan => Ok(s),
            _ => Err(NetError::BadHandle),
        }
    }

    pub(crate) fn get_mut(&mut self, id: SocketId) -> Result<&mut Socket> {
        match self.sockets.get_mut(id) {
            Some(s) if !s.orphan => Ok(s),
            _ => Err(NetError::BadHandle),
        }
    }

    /// The protocol of a socket.
    pub fn protocol(&self, id: SocketId) -> Result<Protocol> {
        Ok(self.get(id)?.protocol())
    }

    /// The address family of a socket.
    pub fn domain(&self, id: SocketId) -> Result<Domain> {
        Ok(self.get(id)?.domain)
    }

    /// How many sockets exist, including closed ones still finishing their protocol.
    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    pub(crate) fn mark_dirty(&mut self, id: SocketId) {
        if let Some(s) = self.sockets.get_mut(id)
            && !s.dirty
        {
            s.dirty = true;
            self.dirty.push(id);
        }
    }

    pub(crate) fn mark_event(&mut self, id: SocketId) {
        if let Some(s) = self.sockets.get_mut(id)
            && !s.evented
            && !s.orphan
        {
            s.evented = true;
            self.events.push(id);
        }
    }

    /// Moves the ids of sockets whose readiness may have changed since the
    /// last call into `out`. Check each with [`Stack::readiness`].
    pub fn drain_events(&mut self, out: &mut Vec<SocketId>) {
        for id in self.events.drain(..) {
            if let Some(s) = self.sockets.get_mut(id) {
                s.evented = false;
                out.push(id);
            }
        }
    }

    /// Removes a socket from every table. Its smoltcp state goes with it.
    pub(crate) fn free(&mut self, id: SocketId) {
        let Some(sock) = self.sockets.remove(id) else {
            return;
        };
        if let Some(b) = sock.binding {
            let table = match sock.kind {
                Kind::Tcp(_) => &mut self.tcp_ports,
                Kind::Udp(_) => &mut self.udp_ports,
                Kind::Icmp(_) => return self.free_icmp(&sock, id),
            };
            remove_from(table, b.port, id);
        }
        match &sock.kind {
            Kind::Tcp(t) => self.free_tcp(id, t, sock.binding),
            Kind::Udp(_) => {}
            Kind::Icmp(_) => self.free_icmp(&sock, id),
        }
    }

    // ---- binding ---------------------------------------------------------

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
        if let Some(a) = local
            && !self.is_local(a)
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
                .find(|p| table.get(p).is_none_or(Vec::is_empty));
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

    // ---- the caller-facing socket calls, dispatched by protocol ----------

    /// Connects a socket (`connect(2)`). TCP answers [`NetError::InProgress`]
    /// and completes in the background; watch [`Stack::readiness`] and
    /// [`Stack::take_error`], or call again: `Ok` once connected.
    pub fn connect(&mut self, id: SocketId, addr: SocketAddr) -> Result<()> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_connect(id, addr),
            Kind::Udp(_) => self.udp_connect(id, addr),
            Kind::Icmp(_) => self.icmp_connect(id, addr),
        }
    }

    /// Marks a TCP socket as accepting connections (`listen(2)`).
    pub fn listen(&mut self, id: SocketId, backlog: i32) -> Result<()> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_listen(id, backlog),
            _ => Err(NetError::NotSupported),
        }
    }

    /// Takes a pending connection (`accept(2)`): the new socket and its peer.
    pub fn accept(&mut self, id: SocketId) -> Result<(SocketId, SocketAddr)> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_accept(id),
            _ => Err(NetError::NotSupported),
        }
    }

    /// Sends on a connected socket; returns how many bytes were taken.
    pub fn send(&mut self, id: SocketId, data: &[u8]) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_send(id, data),
            Kind::Udp(_) => self.udp_send_to(id, data, None),
            Kind::Icmp(_) => self.icmp_send_to(id, data, None),
        }
    }

    /// Sends a datagram to `to` (for TCP, `to` is ignored as Linux does).
    pub fn send_to(&mut self, id: SocketId, data: &[u8], to: SocketAddr) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_send(id, data),
            Kind::Udp(_) => self.udp_send_to(id, data, Some(to)),
            Kind::Icmp(_) => self.icmp_send_to(id, data, Some(to)),
        }
    }

    /// Receives from a stream (or a datagram, without its source).
    /// `Ok(0)` on a stream is end of file.
    pub fn recv(&mut self, id: SocketId, buf: &mut [u8], flags: RecvFlags) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_recv(id, buf, flags),
            Kind::Udp(_) | Kind::Icmp(_) => Ok(self.recv_from(id, buf, flags)?.copied),
        }
    }

    /// Receives one datagram with its source.
    pub fn recv_from(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
        flags: RecvFlags,
    ) -> Result<Datagram> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => {
                let copied = self.tcp_recv(id, buf, flags)?;
                let from = self.peer_addr(id)?;
                Ok(Datagram {
                    copied,
                    len: copied,
                    from,
                })
            }
            Kind::Udp(_) => self.udp_recv_from(id, buf, flags),
            Kind::Icmp(_) => self.icmp_recv_from(id, buf, flags),
        }
    }

    /// Shuts down one or both directions (`shutdown(2)`).
    pub fn shutdown(&mut self, id: SocketId, how: Shutdown) -> Result<()> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_shutdown(id, how),
            Kind::Udp(_) | Kind::Icmp(_) => self.dgram_shutdown(id, how),
        }
    }

    /// Closes a socket (`close(2)` of its last descriptor). A TCP connection
    /// finishes in the background (FIN, or RST with `SO_LINGER` 0 or unread data).
    pub fn close(&mut self, id: SocketId) -> Result<()> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_close(id),
            Kind::Udp(_) | Kind::Icmp(_) => {
                self.free(id);
                Ok(())
            }
        }
    }

    /// The local address (`getsockname(2)`); the wildcard with port 0 when unbound.
    pub fn local_addr(&self, id: SocketId) -> Result<SocketAddr> {
        let sock = self.get(id)?;
        if let Kind::Tcp(TcpState::Conn(c)) = &sock.kind {
            return Ok(sock.sockaddr(c.key.0));
        }
        if let Kind::Udp(u) = &sock.kind
            && let Some(src) = u.connected_src
            && let Some(b) = sock.binding
        {
            return Ok(sock.sockaddr(IpEndpoint::new(src, b.port)));
        }
        if let Kind::Icmp(i) = &sock.kind {
            return Ok(i.local_addr(sock));
        }
        Ok(match sock.binding {
            Some(Binding {
                addr: Some(a),
                port,
                ..
            }) => sock.sockaddr(IpEndpoint::new(a, port)),
            Some(b) => sock.unspecified(b.port),
            None => sock.unspecified(0),
        })
    }

    /// The peer address (`getpeername(2)`).
    pub fn peer_addr(&self, id: SocketId) -> Result<SocketAddr> {
        let sock = self.get(id)?;
        match &sock.kind {
            Kind::Tcp(TcpState::Conn(c)) if c.established => Ok(sock.sockaddr(c.key.1)),
            Kind::Udp(u) => u
                .peer
                .map(|p| sock.sockaddr(p))
                .ok_or(NetError::NotConnected),
            Kind::Icmp(i) => i
                .peer
                .map(|p| sock.sockaddr(IpEndpoint::new(p, 0)))
                .ok_or(NetError::NotConnected),
            _ => Err(NetError::NotConnected),
        }
    }

    /// Takes the pending error, if any (`getsockopt(SO_ERROR)`).
    pub fn take_error(&mut self, id: SocketId) -> Result<Option<NetError>> {
        Ok(self.get_mut(id)?.error.take())
    }

    /// What a poll on the socket would report now.
    pub fn readiness(&mut self, id: SocketId) -> Result<Readiness> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_readiness(id),
            Kind::Udp(_) => self.udp_readiness(id),
            Kind::Icmp(_) => self.icmp_readiness(id),
        }
    }

    /// Bytes (stream) or the next datagram's size waiting to be read (`FIONREAD`).
    pub fn recv_queue(&mut self, id: SocketId) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_queues(id).map(|q| q.0),
            Kind::Udp(_) => self.udp_next_len(id),
            Kind::Icmp(_) => Ok(0),
        }
    }

    /// Bytes sent but not yet acknowledged, plus unsent (`SIOCOUTQ`).
    pub fn send_queue(&mut self, id: SocketId) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_queues(id).map(|q| q.1),
            _ => Ok(0),
        }
    }

    /// Sets a socket option.
    pub fn set_option(&mut self, id: SocketId, opt: SockOpt) -> Result<()> {
        let sock = self.get_mut(id)?;
        let proto = sock.protocol();
        let tcp_only = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(NetError::NoProtocolOption)
            }
        };
        match opt {
            SockOpt::ReuseAddr(v) => sock.opts.reuse_addr = v,
            SockOpt::ReusePort(v) => sock.opts.reuse_port = v,
            SockOpt::KeepAlive(v) => sock.opts.keepalive = v,
            SockOpt::Linger(v) => sock.opts.linger = v,
            SockOpt::RecvBuffer(v) => sock.opts.recv_buffer = clamp_buffer(v),
            SockOpt::SendBuffer(v) => sock.opts.send_buffer = clamp_buffer(v),
            SockOpt::Broadcast(v) => sock.opts.broadcast = v,
            SockOpt::NoDelay(v) => {
                tcp_only(proto == Protocol::Tcp)?;
                sock.opts.nodelay = v;
            }
            SockOpt::KeepIdle(v) | SockOpt::KeepInterval(v) => {
                tcp_only(proto == Protocol::Tcp)?;
                if !(1..=32767).contains(&v) {
                    return Err(NetError::InvalidInput);
                }
                if matches!(opt, SockOpt::KeepIdle(_)) {
                    sock.opts.keep_idle = v;
                } else {
                    sock.opts.keep_interval = v;
                }
            }
            SockOpt::KeepCount(v) => {
                tcp_only(proto == Protocol::Tcp)?;
                if !(1..=127).contains(&v) {
                    return Err(NetError::InvalidInput);
                }
                sock.opts.keep_count = v;
            }
            SockOpt::Ttl(v) => {
                if v == 0 {
                    return Err(NetError::InvalidInput);
                }
                sock.opts.ttl = Some(v);
            }
            SockOpt::Tos(v) => sock.opts.tos = v,
            SockOpt::V6Only(v) => {
                if sock.domain != Domain::Ipv6 {
                    return Err(NetError::NoProtocolOption);
                }
                if sock.binding.is_some() {
                    return Err(NetError::InvalidInput);
                }
                sock.opts.v6only = v;
            }
        }
        self.apply_options(id);
        if matches!(opt, SockOpt::RecvBuffer(_) | SockOpt::SendBuffer(_)) {
            self.tcp_refresh_listener(id);
        }
        Ok(())
    }

    /// Reads a socket option.
    pub fn option(&self, id: SocketId, name: SockOptName) -> Result<SockOpt> {
        let sock = self.get(id)?;
        let o = &sock.opts;
        let is_tcp = sock.protocol() == Protocol::Tcp;
        // Linux: getsockopt of a TCP option on another kind of socket is
        // EOPNOTSUPP (setsockopt says ENOPROTOOPT).
        let tcp_only = |v: SockOpt| {
            if is_tcp {
                Ok(v)
            } else {
                Err(NetError::NotSupported)
            }
        };
        Ok(match name {
            SockOptName::ReuseAddr => SockOpt::ReuseAddr(o.reuse_addr),
            SockOptName::ReusePort => SockOpt::ReusePort(o.reuse_port),
            SockOptName::KeepAlive => SockOpt::KeepAlive(o.keepalive),
            SockOptName::Linger => SockOpt::Linger(o.linger),
            SockOptName::RecvBuffer => SockOpt::RecvBuffer(o.recv_buffer),
            SockOptName::SendBuffer => SockOpt::SendBuffer(o.send_buffer),
            SockOptName::Broadcast => SockOpt::Broadcast(o.broadcast),
            SockOptName::NoDelay => tcp_only(SockOpt::NoDelay(o.nodelay))?,
            SockOptName::KeepIdle => tcp_only(SockOpt::KeepIdle(o.keep_idle))?,
            SockOptName::KeepInterval => tcp_only(SockOpt::KeepInterval(o.keep_interval))?,
            SockOptName::KeepCount => tcp_only(SockOpt::KeepCount(o.keep_count))?,
            SockOptName::Ttl => SockOpt::Ttl(o.ttl.unwrap_or(64)),
            SockOptName::Tos => SockOpt::Tos(o.tos),
            SockOptName::V6Only => {
                if sock.domain != Domain::Ipv6 {
                    return Err(NetError::NoProtocolOption);
                }
                SockOpt::V6Only(o.v6only)
            }
        })
    }

    fn apply_options(&mut self, id: SocketId) {
        let Some(sock) = self.sockets.get_mut(id) else {
            return;
        };
        let opts = sock.opts.clone();
        match &mut sock.kind {
            Kind::Tcp(t) => t.apply_options(&opts),
            Kind::Udp(u) => u.apply_options(&opts),
            Kind::Icmp(i) => i.apply_options(&opts),
        }
        self.mark_dirty(id);
    }

    // ---- the event loop ------------------------------------------------

    /// Does all the work due at `now`: reads every link, runs timers, sends.
    pub fn poll(&mut self, now: Instant) {
        self.now = now;
        for nic in &mut self.nics {
            nic.iface.poll_maintenance(now);
        }
        self.run_timers();
        if self.wake_pending {
            self.wake_nic(LOOPBACK);
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
        let raw = n
            .frag_tx
            .set
            .get_mut::<raw::Socket<'static>>(n.frag_tx.handle);
        let pieces = packet.len().div_ceil(n.caps.mtu.saturating_sub(48).max(8));
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
        frag6::fragment(&d, packet, n.caps.mtu, |p| {
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
        let mut dev = FrameDevice::new(&mut *n.link, &n.caps, None, self.now);
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
            } => match self.tcp_target(nic, dst, src, syn, ack, rst) {
                Some(Some(id)) => Some(id),
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
                let mut dev = FrameDevice::new(&mut *n.link, &n.caps, Some(frame), self.now);
                n.iface
                    .poll_ingress_single(self.now, &mut dev, &mut self.empty);
            }
        }
        if let Flow::Neighbor(_) = flow {
            self.wake_nic(nic);
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
        let mut dev = FrameDevice::new(&mut *n.link, &n.caps, Some(frame), self.now);
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
        if let Kind::Udp(u) = &mut sock.kind {
            for (xnic, slot) in &mut u.extra_tx {
                at = earliest(at, drive_egress(&mut self.nics[*xnic], slot, self.now));
            }
        }
        self.arm_timer(id, at);
        let is_tcp = matches!(self.sockets.get(id).map(|s| &s.kind), Some(Kind::Tcp(_)));
        if is_tcp {
            self.tcp_after_egress(id);
        } else {
            self.mark_event(id);
        }
    }

    /// After a neighbour answered, sockets waiting on it may send. (A UDP
    /// socket may wait on several NICs, so every socket with a timer is woken.)
    /// The scan costs one step per socket, so a flood of ARP frames from the
    /// wire gets at most one scan per [`WAKE_INTERVAL`]; later ones wait for
    /// the next poll after it.
    fn wake_nic(&mut self, _nic: NicId) {
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
    let mut dev = FrameDevice::new(&mut *nic.link, &nic.caps, None, now);
    while nic.iface.poll_egress(now, &mut dev, &mut slot.set) == PollResult::SocketStateChanged {}
    nic.iface.poll_at(now, &slot.set)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) fn remove_from(table: &mut HashMap<u16, Vec<SocketId>>, port: u16, id: SocketId) {
    if let Some(v) = table.get_mut(&port) {
        v.retain(|&x| x != id);
        if v.is_empty() {
            table.remove(&port);
        }
    }
}
