//! The stack: NICs, routing, the socket table, and `poll(now)`.
//!
//! Frames enter through [`Stack::poll`]: each one is classified by
//! [`demux`](crate::demux); a TCP segment for a connection or listener is
//! parsed here and handed to its engine, a UDP or ICMP packet is fed to
//! smoltcp together with the one small `SocketSet` that owns it, and a
//! frame no socket owns goes to smoltcp with an empty set (which answers a
//! stray TCP segment with a RST). Output is produced
//! only for sockets marked dirty (by input, by the caller, or by a timer from
//! the deadline heap). The cost per frame therefore does not depend on how many
//! sockets exist.
//!
//! This file holds the `Stack` itself, its NICs and the socket table; `route`,
//! `ports` (the bind table), `calls` (the socket calls) and `io` (the event
//! loop) each add their part in an `impl` block of their own.

mod calls;
mod io;
mod ports;
pub(crate) mod route;

pub(crate) use io::parse_tcp;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use slotmap::SlotMap;

use crate::budget::Budget;
use crate::buffers::BufferPool;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::DeviceCapabilities;
use smoltcp::socket::raw;
use smoltcp::storage::PacketMetadata;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpProtocol, IpVersion,
};

use crate::demux::FragKey;
use crate::error::{NetError, Result};
use crate::frag6::Reassembler;
use crate::link::{FrameDevice, Link, LinkCaps, Loopback, Medium, device_caps};
use crate::socket::icmp::IcmpState;
use crate::socket::tcp::TcpState;
use crate::socket::udp::UdpState;
use crate::socket::{Domain, Kind, Options, Protocol, Slot, Socket, SocketId};

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
    /// What every TCP buffer's storage is charged to (`net.ipv4.tcp_mem`);
    /// unlimited by default.
    pub tcp_memory: Budget,
}

impl StackConfig {
    /// The defaults with a seed that differs on every call, for stacks that
    /// talk to the world: initial sequence numbers and ports must not be
    /// guessable from one run to the next. (The fixed default keeps tests
    /// and benches reproducible.)
    pub fn unpredictable() -> StackConfig {
        use std::hash::BuildHasher;
        StackConfig {
            random_seed: std::hash::RandomState::new().hash_one(std::time::SystemTime::now()),
            ..StackConfig::default()
        }
    }
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
            tcp_memory: Budget::unlimited(),
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

/// A NIC with its routes, ready to join a stack ([`Stack::add_nic_setup`]).
pub struct NicSetup {
    /// Where its frames go.
    pub link: Box<dyn Link>,
    /// Its name, MAC, addresses and default gateways.
    pub config: NicConfig,
    /// Routes through gateways on it, besides the default ones.
    pub routes: Vec<GatewayRoute>,
    /// Routes without a gateway (`ip route add DST dev NIC`) wider than its subnets.
    pub onlink: Vec<IfAddr>,
}

impl std::fmt::Debug for NicSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NicSetup")
            .field("config", &self.config)
            .field("routes", &self.routes)
            .field("onlink", &self.onlink)
            .finish_non_exhaustive()
    }
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
    /// Routes through a gateway on this NIC, besides the default ones.
    pub routes: Vec<GatewayRoute>,
    /// Routes with no gateway (`ip route add DST/LEN dev NIC`) wider than
    /// the subnets of the NIC's addresses: see [`Stack::add_onlink_route`].
    pub onlink: Vec<IfAddr>,
}

/// A route to a network through a gateway (`ip route add DST/LEN via GW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayRoute {
    /// The destination network.
    pub dst: IfAddr,
    /// The gateway, which must be on-link on the route's NIC.
    pub gateway: IpAddr,
}

pub(crate) struct Nic {
    pub info: NicInfo,
    pub iface: Interface,
    pub link: Box<dyn Link>,
    pub caps: LinkCaps,
    /// smoltcp's view of the link, offloads included: settled when it joined.
    pub device: DeviceCapabilities,
    /// A raw socket that sends IPv6 fragments made by the stack itself.
    pub frag_tx: Slot,
    /// A raw socket that sends the IP packets carrying our TCP segments, so
    /// smoltcp still routes, resolves neighbours and frames them.
    pub tcp_tx: SocketSet<'static>,
    pub tcp_tx_handle: smoltcp::iface::SocketHandle,
    /// Since when `tcp_tx` has held a packet it could not send. smoltcp
    /// keeps a packet whose neighbour is unresolved at the head of the
    /// queue, and every packet behind it waits: so one SYN from an address
    /// where no host answers would stop this NIC's TCP through the queue
    /// for good (a stack fuzzer found it). After `NEIGHBOR_WAIT` the queue
    /// is emptied; TCP sends again what it held.
    pub tcp_tx_waiting: Option<Instant>,
    /// Addresses whose link-layer address this NIC has heard (ARP, NDP);
    /// a connect whose next hop never shows up fails with EHOSTUNREACH.
    pub neighbors: std::collections::HashSet<IpAddress>,
    /// IPv4 neighbours' MAC addresses as their ARP frames told them, and
    /// when: TCP segments to a fresh one are framed here and may go to the
    /// link as one offloaded run (see `io::tcp_output`).
    pub arp: HashMap<IpAddress, (EthernetAddress, Instant)>,
    /// When the stack last sent its own ARP request for an address.
    pub solicited: HashMap<IpAddress, Instant>,
    /// SYNs that no listener owns are held for the caller (a NAT gateway).
    pub transparent: bool,
}

impl Nic {
    /// The largest IP packet this NIC sends (its MTU, within IP's 16-bit length).
    pub(crate) fn ip_mtu(&self) -> usize {
        self.caps.mtu.min(usize::from(u16::MAX))
    }
}

/// A connection attempt held by a transparent NIC: a SYN to an address and
/// port that no listener owns. Answer it with [`Stack::accept_intercepted`]
/// or [`Stack::refuse_intercepted`]; a retransmitted SYN is held again.
#[derive(Debug, Clone)]
pub struct Intercepted {
    /// The NIC it came in on.
    pub nic: NicId,
    /// Where the peer wants to connect (the SYN's destination).
    pub local: std::net::SocketAddr,
    /// The peer.
    pub remote: std::net::SocketAddr,
    pub(crate) frame: Vec<u8>,
}

/// Packets a NIC's TCP raw socket queues before it is flushed.
const TCP_TX_PACKETS: usize = 256;

/// How long `Nic::tcp_tx` may wait on a neighbour before it is emptied:
/// smoltcp asks again for an unanswered neighbour after a second.
pub(crate) const NEIGHBOR_WAIT: Duration = Duration::from_secs(1);

/// The raw socket (in a set of its own) that carries a NIC's TCP segments
/// through smoltcp's interface. Its queue holds what one poll of a busy
/// connection may send before the link drains it; it is flushed as it
/// fills.
pub(crate) fn tcp_tx_socket() -> (SocketSet<'static>, smoltcp::iface::SocketHandle) {
    let tcp_raw = raw::Socket::new(
        None,
        None,
        raw::PacketBuffer::new(vec![PacketMetadata::EMPTY; 1], vec![0; 0]),
        raw::PacketBuffer::new(
            vec![PacketMetadata::EMPTY; TCP_TX_PACKETS],
            vec![0; TCP_TX_BYTES],
        ),
    );
    let mut set = SocketSet::new(Vec::with_capacity(1));
    let handle = set.add(tcp_raw);
    (set, handle)
}
/// Bytes the same queue holds: several of the largest segments.
const TCP_TX_BYTES: usize = 1 << 20;

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
    /// Counts changes to [`Stack::tcp_listeners`] (see [`Stack::listening`]).
    pub(crate) listen_gen: u64,
    /// Every socket holding a local port, by protocol and port.
    pub(crate) tcp_ports: HashMap<u16, PortSet>,
    pub(crate) udp_ports: HashMap<u16, PortSet>,
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
    pub(crate) intercepted: Vec<Intercepted>,
    /// Segments one TCP poll produced (kept, so polls do not allocate).
    pub(crate) tcp_segments: Vec<crate::tcp_engine::Segment>,
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

impl Stack {
    /// A stack with only the loopback NIC (`lo`: 127.0.0.1/8 and ::1/128).
    /// What the TCP buffers' storage is charged to.
    pub fn tcp_memory(&self) -> &Budget {
        &self.cfg.tcp_memory
    }

    pub fn new(cfg: StackConfig, now: Instant) -> Stack {
        Stack::with_loopback(cfg, now, Box::new(Loopback::new()))
    }

    /// Like [`Stack::new`], with `lo` carried by `link` (a sniffer around a
    /// [`Loopback`], say).
    pub fn with_loopback(cfg: StackConfig, now: Instant, link: Box<dyn Link>) -> Stack {
        let mut stack = Stack {
            rng: cfg.random_seed | 1,
            cfg,
            now,
            nics: Vec::new(),
            sockets: SlotMap::with_key(),
            tcp_conns: HashMap::new(),
            tcp_listeners: HashMap::new(),
            listen_gen: 0,
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
            intercepted: Vec::new(),
            tcp_segments: Vec::new(),
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
            .add_nic(link, lo)
            .expect("the loopback configuration is valid");
        stack
    }

    /// Adds a NIC and then its routes. A route the stack cannot follow (an
    /// on-link prefix that holds none of the NIC's addresses, say) is
    /// skipped, and said why in the list returned beside the NIC.
    pub fn add_nic_setup(&mut self, setup: NicSetup) -> Result<(NicId, Vec<String>)> {
        let name = setup.config.name.clone();
        let nic = self.add_nic(setup.link, setup.config)?;
        let mut skipped = Vec::new();
        for dst in setup.onlink {
            if let Err(e) = self.add_onlink_route(nic, dst) {
                let (a, len) = (dst.addr, dst.prefix_len);
                skipped.push(format!(
                    "{name}: route {a}/{len} (no gateway) not followed: {e}"
                ));
            }
        }
        for r in setup.routes {
            if let Err(e) = self.add_route(nic, r) {
                let (a, len, gw) = (r.dst.addr, r.dst.prefix_len, r.gateway);
                skipped.push(format!(
                    "{name}: route {a}/{len} via {gw} not followed: {e}"
                ));
            }
        }
        Ok((nic, skipped))
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
        let device = device_caps(&mut *link, &caps);
        let mut dev = FrameDevice::new(&mut *link, &device, None, self.now);
        // Addresses come from the caller (a container's configuration): check
        // them before smoltcp, which asserts on an impossible prefix.
        let valid = |a: &IfAddr| {
            let max = if a.addr.is_ipv4() { 32 } else { 128 };
            a.prefix_len <= max && !a.addr.is_unspecified() && !a.addr.is_multicast()
        };
        if !cfg.addrs.iter().all(valid) {
            return Err(NetError::InvalidInput);
        }
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
            // lo takes every packet it carries as its own: the stack routes
            // only its own addresses there (all of 127.0.0.0/8 and each NIC's
            // addresses), as Linux's local table does.
            iface.set_any_ip(true);
        }
        let info = NicInfo {
            name: cfg.name,
            mtu: caps.mtu,
            mac: matches!(caps.medium, Medium::Ethernet).then_some(cfg.mac),
            addrs: cfg.addrs,
            gateway_v4: cfg.gateway_v4,
            gateway_v6: cfg.gateway_v6,
            routes: Vec::new(),
            onlink: Vec::new(),
        };
        // SAFETY: both slices go into the socket, and the socket and the leases
        // into one Slot, which drops the socket first (see `BufferPool::lend`).
        let [(rx, rx_lease), (tx, tx_lease)] = unsafe { self.pool.lend_two(4096, 512 << 10)? };
        let raw = raw::Socket::new(
            Some(IpVersion::Ipv6),
            Some(IpProtocol::Ipv6Frag),
            raw::PacketBuffer::new(vec![PacketMetadata::EMPTY; 1], rx),
            raw::PacketBuffer::new(vec![PacketMetadata::EMPTY; 512], tx),
        );
        let (tcp_tx, tcp_tx_handle) = tcp_tx_socket();
        self.nics.push(Nic {
            info,
            iface,
            link,
            caps,
            device,
            frag_tx: Slot::new(raw, [rx_lease, tx_lease]),
            tcp_tx,
            tcp_tx_handle,
            tcp_tx_waiting: None,
            neighbors: std::collections::HashSet::new(),
            arp: HashMap::new(),
            solicited: HashMap::new(),
            transparent: false,
        });
        Ok(id)
    }

    /// Makes `nic` a gateway's far side: it takes packets to any address
    /// (smoltcp's `any_ip`, through a default route via its own first IPv4
    /// address), and holds SYNs that no listener owns for
    /// [`Stack::take_intercepted`] instead of answering RST.
    pub fn set_transparent(&mut self, nic: NicId) -> Result<()> {
        let n = self.nics.get_mut(nic).ok_or(NetError::InvalidInput)?;
        let own = n.info.addrs.iter().find_map(|a| match a.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        });
        let own = own.ok_or(NetError::AddrNotAvailable)?;
        n.iface
            .routes_mut()
            .add_default_ipv4_route(own)
            .map_err(|_| NetError::NoBufferSpace)?;
        n.iface.set_any_ip(true);
        n.transparent = true;
        Ok(())
    }

    /// The SYNs held since the last call (see [`Stack::set_transparent`]).
    pub fn take_intercepted(&mut self, out: &mut Vec<Intercepted>) {
        out.append(&mut self.intercepted);
    }

    /// Answers a held SYN with RST, as a closed port does.
    pub fn refuse_intercepted(&mut self, syn: &Intercepted) {
        let Some(n) = self.nics.get_mut(syn.nic) else {
            return;
        };
        let mut dev = FrameDevice::new(&mut *n.link, &n.device, Some(&syn.frame), self.now);
        n.iface
            .poll_ingress_single(self.now, &mut dev, &mut self.empty);
    }

    /// The descriptors of the links backed by the host, by NIC: when one
    /// turns readable, [`Stack::poll`] has frames to read.
    /// Where sockets wait for peers: listening TCP sockets, and UDP sockets
    /// bound to a port of their choosing; each with its protocol, bound
    /// address (`None` for a wildcard that takes IPv4, `::` for an
    /// IPv6-only one) and port. Also a number that changes whenever such a
    /// socket comes or goes, so a caller mirroring them (a relay's host
    /// sockets) can tell cheaply that nothing changed.
    pub fn listening(&self) -> (u64, Vec<(Protocol, Option<IpAddr>, u16)>) {
        let tcp = self
            .tcp_listeners
            .values()
            .flatten()
            .filter_map(|&id| Some((Protocol::Tcp, self.sockets.get(id)?.binding?)));
        let udp = self
            .udp_ports
            .values()
            .flat_map(|set| set.iter().copied())
            .filter_map(|id| {
                let sock = self.sockets.get(id)?;
                match &sock.kind {
                    Kind::Udp(u) if u.port_locked => Some((Protocol::Udp, sock.binding?)),
                    _ => None,
                }
            });
        let mut out: Vec<(Protocol, Option<IpAddr>, u16)> = tcp
            .chain(udp)
            .map(|(proto, b)| {
                let v6_only = (!b.v4).then_some(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                (proto, b.addr.map(IpAddr::from).or(v6_only), b.port)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        (self.listen_gen, out)
    }

    /// The number [`Stack::listening`] returns, without the list.
    pub fn listening_generation(&self) -> u64 {
        self.listen_gen
    }

    pub fn link_fds(&self) -> Vec<(NicId, std::os::fd::BorrowedFd<'_>)> {
        let fds = self.nics.iter().enumerate();
        fds.filter_map(|(id, n)| n.link.fd().map(|fd| (id, fd)))
            .collect()
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
        Ok(self
            .sockets
            .insert(Socket::new(domain, opts, kind, LOOPBACK)))
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
        let port = sock.binding.map(|b| b.port);
        match &sock.kind {
            Kind::Tcp(t) => {
                if let Some(p) = port {
                    remove_from(&mut self.tcp_ports, p, id);
                }
                self.free_tcp(id, t, sock.binding);
            }
            Kind::Udp(u) => {
                if let Some(p) = port {
                    remove_from(&mut self.udp_ports, p, id);
                    if u.port_locked {
                        self.listen_gen += 1;
                    }
                }
            }
            // Ping sockets hold an identifier, not a port.
            Kind::Icmp(_) => self.free_icmp(&sock, id),
        }
    }
}

pub(crate) fn remove_from(table: &mut HashMap<u16, PortSet>, port: u16, id: SocketId) {
    if let Some(v) = table.get_mut(&port) {
        v.remove(id);
        if v.is_empty() {
            table.remove(&port);
        }
    }
}

/// The sockets holding one port. A listener's port is held by every
/// connection it accepted, TIME_WAIT included (up to 65,536 of them), so
/// removal is O(1): the last entry takes the removed one's place.
#[derive(Debug, Default, Clone)]
pub(crate) struct PortSet {
    ids: Vec<SocketId>,
    index: HashMap<SocketId, usize>,
}

impl PortSet {
    pub(crate) fn push(&mut self, id: SocketId) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.index.entry(id) {
            e.insert(self.ids.len());
            self.ids.push(id);
        }
    }

    pub(crate) fn remove(&mut self, id: SocketId) {
        if let Some(i) = self.index.remove(&id) {
            self.ids.swap_remove(i);
            if let Some(&moved) = self.ids.get(i) {
                self.index.insert(moved, i);
            }
        }
    }
}

impl std::ops::Deref for PortSet {
    type Target = [SocketId];

    fn deref(&self) -> &[SocketId] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::pair;

    fn add(cfg: NicConfig) -> Result<NicId> {
        let mut s = Stack::new(StackConfig::default(), Instant::from_secs(0));
        let (end, _) = pair(1500, Duration::ZERO, false);
        s.add_nic(Box::new(end), cfg)
    }

    fn nic(addrs: Vec<(IpAddr, u8)>, mac: [u8; 6]) -> NicConfig {
        NicConfig {
            name: "eth0".into(),
            mac,
            addrs: addrs
                .into_iter()
                .map(|(addr, prefix_len)| IfAddr { addr, prefix_len })
                .collect(),
            gateway_v4: None,
            gateway_v6: None,
        }
    }

    #[test]
    fn add_nic_rejects_impossible_configurations() {
        let mac = [2, 0, 0, 0, 0, 1];
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
        assert_eq!(add(nic(vec![(v4, 24), (v6, 64)], mac)), Ok(1));
        assert_eq!(add(nic(vec![(v4, 33)], mac)), Err(NetError::InvalidInput));
        assert_eq!(add(nic(vec![(v6, 129)], mac)), Err(NetError::InvalidInput));
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(add(nic(vec![(any, 8)], mac)), Err(NetError::InvalidInput));
        let multicast_mac = [1, 0, 0, 0, 0, 1];
        assert_eq!(
            add(nic(vec![(v4, 24)], multicast_mac)),
            Err(NetError::InvalidInput)
        );
        let many = (1..=9)
            .map(|i| (IpAddr::V4(Ipv4Addr::new(10, 0, i, 1)), 24))
            .collect();
        assert_eq!(add(nic(many, mac)), Err(NetError::NoBufferSpace));
    }

    #[test]
    fn several_nics_with_many_addresses_each() {
        // smoltcp holds 8 addresses per interface; NICs do not share that room.
        let mut s = Stack::new(StackConfig::default(), Instant::from_secs(0));
        for n in 1..=3u8 {
            let addrs = (1..=8)
                .map(|i| (IpAddr::V4(Ipv4Addr::new(10, n, i, 1)), 24))
                .collect();
            let (end, _) = pair(1500, Duration::ZERO, false);
            assert_eq!(
                s.add_nic(Box::new(end), nic(addrs, [2, 0, 0, 0, 0, n])),
                Ok(usize::from(n))
            );
        }
        assert!(s.is_local(IpAddress::v4(10, 3, 8, 1)));
        assert_eq!(
            s.route(IpAddress::v4(10, 2, 5, 9)),
            Ok((2, IpAddress::v4(10, 2, 5, 1)))
        );
        assert_eq!(
            s.route(IpAddress::v4(10, 1, 1, 1)).map(|r| r.0),
            Ok(LOOPBACK)
        );
    }

    /// What a [`Questioned`] link saw.
    #[derive(Debug, Default)]
    struct Asked {
        offload_questions: usize,
        frames_sent: usize,
    }

    /// A link that counts the offload questions it is asked and the frames
    /// it is given (and delivers none).
    struct Questioned(std::sync::Arc<std::sync::Mutex<Asked>>);

    impl Questioned {
        fn asked(&self) -> std::sync::MutexGuard<'_, Asked> {
            self.0.lock().unwrap()
        }
    }

    impl Link for Questioned {
        fn caps(&self) -> LinkCaps {
            LinkCaps {
                medium: Medium::Ethernet,
                mtu: 1500,
                checksum_offload: false,
            }
        }
        fn recv(&mut self, _now: Instant) -> Option<Vec<u8>> {
            None
        }
        fn send(&mut self, _now: Instant, _frame: Vec<u8>) {
            self.asked().frames_sent += 1;
        }
        fn segmentation(&self) -> Option<usize> {
            self.asked().offload_questions += 1;
            None
        }
        fn vouch_for_checksums(&mut self) -> bool {
            self.asked().offload_questions += 1;
            true
        }
    }

    #[test]
    fn offloads_are_asked_about_once_when_the_link_joins() {
        let mut s = Stack::new(StackConfig::default(), Instant::from_secs(0));
        let asked = std::sync::Arc::default();
        let link = Questioned(std::sync::Arc::clone(&asked));
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        s.add_nic(Box::new(link), nic(vec![(v4, 24)], [2, 0, 0, 0, 0, 1]))
            .unwrap();
        let count = |a: &std::sync::Mutex<Asked>| {
            let a = a.lock().unwrap();
            (a.offload_questions, a.frames_sent)
        };
        assert_eq!(count(&asked).0, 2, "segmentation and checksum trust");
        let id = s.socket(Domain::Ipv4, Protocol::Udp).unwrap();
        let to = std::net::SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 9));
        s.send_to(id, b"ping", to).unwrap();
        let mut now = Instant::from_secs(0);
        for _ in 0..10 {
            now += Duration::from_millis(400);
            s.poll(now);
        }
        let (questions, sent) = count(&asked);
        assert!(sent >= 2, "ARP requests went out: {sent}");
        assert_eq!(questions, 2, "and the link was not asked again");
    }
}
