//! The user-mode NAT gateway: the far end of the sandbox's `eth0` in `nat`
//! mode, like slirp or pasta, inside the Sentry.
//!
//! The guest's stack and the gateway are joined by an in-memory Ethernet
//! cable ([`pair`]). On the gateway's side:
//! - **TCP** goes to a second [`Stack`] whose NIC is transparent: a SYN to
//!   any address is held while a host socket connects to where it was going;
//!   then the SYN is accepted (or refused with RST, as the host's connect
//!   was), and the two are spliced by `tcp`.
//! - **UDP** and **ICMP echo** are taken off the cable before that stack
//!   sees them and relayed through host sockets (`udp`, `icmp`); the answers
//!   are written back as frames.
//! - **Published ports** (`-p`) are host listeners whose connections the
//!   gateway stack opens towards the guest.
//!
//! Address plan (slirp's): the guest is 10.0.2.15/24, the gateway 10.0.2.2,
//! the DNS forwarder 10.0.2.3. The host's loopback stays out of reach unless
//! [`NatConfig::host_loopback`] maps the gateway's address onto it.
//!
//! **Relay** ([`NatConfig::relay`], the OCI `relay` mode): the guest keeps
//! the container's own address, subnet and gateway, and the host sockets
//! are made in the container's namespace, which keeps that address too.
//! Every address but the guest's is then reached through the gateway (its
//! subnet and the gateway's address included), which answers ARP for all of
//! them; connections from outside keep the peer's address; and the guest's
//! listeners are mirrored as host listeners ([`ListenMirror`]).
//!
//! Every host descriptor sits in the gateway's own epoll set ([`Nat::fd`]).
//! The Sentry runs the gateway on a thread of its own ([`Nat::spawn`]),
//! which sleeps on that set and on an eventfd the cable signals when the
//! guest sends; the cable signals the guest's side the same way. Driven by
//! hand instead (tests), [`Nat::poll`] does one round.

mod icmp;
mod mirror;
mod tcp;
mod udp;

pub use mirror::ListenMirror;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use slotmap::{KeyData, SlotMap, new_key_type};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr,
};

use crate::link::{Layer, Layered, Link, PairEnd, pair};
use crate::{IfAddr, Intercepted, NicConfig, Protocol, SocketId, Stack, StackConfig};

/// The NIC MTU of the cable, as pasta uses: large segments cost fewer trips.
pub const NAT_MTU: usize = 65520;

/// Most flows at once (each holds a host descriptor): beyond it, new TCP
/// connections are refused and new UDP or ping flows dropped, so a guest
/// cannot exhaust the Sentry's descriptors or the host's memory.
const MAX_FLOWS: usize = 32768;

/// How long a UDP flow or a ping identifier lives without traffic.
const FLOW_IDLE: Duration = Duration::from_secs(180);

/// A port published from the host into the guest (`-p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// UDP rather than TCP.
    pub udp: bool,
    /// Where the host listens.
    pub host: SocketAddr,
    /// The guest's port it reaches.
    pub guest_port: u16,
}

impl FromStr for Publish {
    type Err = String;

    /// `[HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp]`, as `docker run -p` takes it;
    /// an IPv6 host address goes in brackets. Without one, every address.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad port mapping {s:?} (expected [HOSTIP:]HOSTPORT:GUESTPORT[/udp])");
        let (spec, udp) = match s.rsplit_once('/') {
            Some((spec, "udp")) => (spec, true),
            Some((spec, "tcp")) => (spec, false),
            Some(_) => return Err(bad()),
            None => (s, false),
        };
        let (host, guest) = spec.rsplit_once(':').ok_or_else(bad)?;
        let guest_port: u16 = guest.parse().map_err(|_| bad())?;
        let host = match host.rsplit_once(':') {
            Some((ip, port)) => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip: IpAddr = ip.parse().map_err(|_| bad())?;
                SocketAddr::new(ip, port.parse().map_err(|_| bad())?)
            }
            None => SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                host.parse().map_err(|_| bad())?,
            ),
        };
        if host.port() == 0 || guest_port == 0 {
            return Err(bad());
        }
        Ok(Publish {
            udp,
            host,
            guest_port,
        })
    }
}

/// How the gateway is set up.
#[derive(Debug, Clone)]
pub struct NatConfig {
    /// The guest's address.
    pub guest: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// The gateway's address (the guest's default route).
    pub gateway: Ipv4Addr,
    /// The DNS forwarder's address (the guest's `nameserver`).
    pub dns: Ipv4Addr,
    /// The guest NIC's MAC address.
    pub guest_mac: [u8; 6],
    /// The gateway's MAC address.
    pub gateway_mac: [u8; 6],
    /// Where DNS queries to [`NatConfig::dns`] go (the host's resolver).
    pub dns_upstream: Option<SocketAddr>,
    /// Maps the gateway's address to the host's 127.0.0.1.
    pub host_loopback: bool,
    /// Ports published into the guest.
    pub publish: Vec<Publish>,
    /// Relay mode (see the module's documentation): `dns` and
    /// `host_loopback` then play no part.
    pub relay: bool,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            guest: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            guest_mac: [0x02, 0x00, 0x0a, 0x00, 0x02, 0x0f],
            gateway_mac: [0x02, 0x00, 0x0a, 0x00, 0x02, 0x02],
            dns_upstream: None,
            host_loopback: false,
            publish: Vec::new(),
            relay: false,
        }
    }
}

impl NatConfig {
    /// The guest's NIC: `eth0` with its address and default route.
    pub fn guest_nic(&self) -> NicConfig {
        NicConfig {
            name: "eth0".into(),
            mac: self.guest_mac,
            addrs: vec![IfAddr {
                addr: IpAddr::V4(self.guest),
                prefix_len: self.prefix_len,
            }],
            gateway_v4: Some(self.gateway),
            gateway_v6: None,
        }
    }

    /// Where a guest's packet to `dst` really goes, or `None` when nothing
    /// outside answers for it (the subnet, loopback, broadcast, and the
    /// gateway itself unless the host's loopback is allowed).
    fn outbound(&self, dst: SocketAddrV4) -> Option<SocketAddr> {
        let ip = *dst.ip();
        let subnet = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        if self.relay {
            let directed_broadcast = self.prefix_len < 31 && u32::from(ip) | subnet == u32::MAX;
            let nowhere = ip == self.guest
                || ip.is_loopback()
                || ip.is_broadcast()
                || ip.is_multicast()
                || ip.is_unspecified()
                || directed_broadcast;
            return (!nowhere).then_some(SocketAddr::V4(dst));
        }
        if ip == self.dns && dst.port() == 53 {
            return self.dns_upstream;
        }
        if ip == self.gateway {
            return self
                .host_loopback
                .then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, dst.port())));
        }
        let on_subnet = u32::from(ip) & subnet == u32::from(self.guest) & subnet;
        if on_subnet
            || ip.is_loopback()
            || ip.is_broadcast()
            || ip.is_multicast()
            || ip.is_unspecified()
        {
            return None;
        }
        Some(SocketAddr::V4(dst))
    }

    /// How a host address that answers appears to the guest.
    fn inbound(&self, from: SocketAddr) -> Option<SocketAddrV4> {
        if Some(from) == self.dns_upstream {
            return Some(SocketAddrV4::new(self.dns, 53));
        }
        let ip = match from.ip() {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => v6.to_ipv4_mapped()?,
        };
        if ip.is_loopback() {
            return Some(SocketAddrV4::new(self.gateway, from.port()));
        }
        Some(SocketAddrV4::new(ip, from.port()))
    }
}

new_key_type! {
    /// A flow's key; also its epoll token.
    struct FlowKey;
}

/// One relayed conversation and its host socket.
#[derive(Debug)]
enum Flow {
    /// A published TCP port's host listener.
    Listener(TcpListener, u16),
    Tcp(tcp::TcpFlow),
    Udp(udp::UdpFlow),
    Ping(icmp::PingFlow),
}

impl Flow {
    /// The host socket the flow waits on.
    fn host_fd(&self) -> BorrowedFd<'_> {
        match self {
            Flow::Listener(l, _) => l.as_fd(),
            Flow::Tcp(t) => t.host_fd(),
            Flow::Udp(u) => u.host_fd(),
            Flow::Ping(p) => p.host_fd(),
        }
    }
}

/// Frames taken off the cable for the relays, and frames they answer with.
#[derive(Debug, Default)]
struct Side {
    diverted: Vec<Vec<u8>>,
    inject: Vec<Vec<u8>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The gateway stack's link: its end of the cable, minus what the relays take.
/// Generic over the cable so that tests can watch what reaches it.
type GatewayLink<C = PairEnd> = Layered<C, Diversion>;

/// The layer that takes the relays' frames off the cable ([`Side::diverted`])
/// and puts their answers on it ([`Side::inject`]) when the stack flushes.
#[derive(Debug)]
struct Diversion {
    side: Arc<Mutex<Side>>,
    /// Echo requests to these are the gateway stack's to answer.
    own: Vec<Ipv4Addr>,
    /// In relay mode, ARP requests from the guest for any address but
    /// these (the guest's own, then the gateway stack's) are answered with
    /// the gateway's MAC, so that the guest hands the gateway every packet.
    proxy_arp: Option<ProxyArp>,
}

/// Who answers ARP for everyone (see [`Diversion::proxy_arp`]).
#[derive(Debug, Clone, Copy)]
struct ProxyArp {
    guest: Ipv4Addr,
    gateway: Ipv4Addr,
    mac: EthernetAddress,
}

impl ProxyArp {
    /// The reply to `frame` when it is an ARP request the proxy answers.
    fn answer(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Arp {
            return None;
        }
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
        let ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = arp
        else {
            return None;
        };
        if [self.guest, self.gateway].contains(&target_protocol_addr)
            || source_protocol_addr != self.guest
        {
            return None;
        }
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: self.mac,
            source_protocol_addr: target_protocol_addr,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let eth = EthernetRepr {
            src_addr: self.mac,
            dst_addr: source_hardware_addr,
            ethertype: EthernetProtocol::Arp,
        };
        let mut out = vec![0u8; eth.buffer_len() + reply.buffer_len()];
        let mut f = EthernetFrame::new_unchecked(&mut out[..]);
        eth.emit(&mut f);
        reply.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
        Some(out)
    }
}

impl Diversion {
    /// UDP, and echo requests to addresses other than the gateway's own.
    fn relayed(&self, frame: &[u8]) -> bool {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return false;
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return false;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return false;
        };
        match ip.next_header() {
            IpProtocol::Udp => true,
            IpProtocol::Icmp => {
                ip.payload().first() == Some(&8) && !self.own.contains(&ip.dst_addr())
            }
            _ => false,
        }
    }
}

impl Layer for Diversion {
    fn inbound(&mut self, _link: &mut dyn Link, _now: Instant, frame: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(reply) = self.proxy_arp.and_then(|p| p.answer(&frame)) {
            lock(&self.side).inject.push(reply);
            return None;
        }
        if !self.relayed(&frame) {
            return Some(frame);
        }
        lock(&self.side).diverted.push(frame);
        None
    }

    // Before the cable's own flush (see `Layered`), so the answers leave in it.
    fn flush(&mut self, link: &mut dyn Link, now: Instant) {
        let frames = std::mem::take(&mut lock(&self.side).inject);
        for f in frames {
            link.send(now, f);
        }
    }
}

/// The gateway: its stack, its host sockets, and their flows.
#[derive(Debug)]
pub struct Nat {
    cfg: NatConfig,
    gw: Stack,
    side: Arc<Mutex<Side>>,
    epoll: Epoll,
    flows: SlotMap<FlowKey, Flow>,
    /// TCP flows by their gateway socket.
    by_socket: HashMap<SocketId, FlowKey>,
    /// Outbound connections waiting for their host connect, by (dst, src).
    pending: HashMap<(SocketAddr, SocketAddr), FlowKey>,
    /// UDP flows by the guest's address (and published ones by guest port).
    udp_by_guest: HashMap<SocketAddrV4, FlowKey>,
    udp_published: HashMap<u16, FlowKey>,
    /// Ping flows by the guest's identifier.
    pings: HashMap<u16, FlowKey>,
    events: Vec<SocketId>,
    held: Vec<Intercepted>,
    buf: Vec<u8>,
    next_sweep: Instant,
    /// Signalled when frames wait for the gateway, and for the guest.
    to_gateway: Arc<EventFd>,
    to_guest: Arc<EventFd>,
    /// Host listeners the Sentry opened or closed for the guest's
    /// listeners ([`ListenMirror`]), and those in use, by the guest's port.
    mirror: Option<Arc<mirror::Shared>>,
    mirrored: HashMap<mirror::Mirrored, FlowKey>,
    /// Where the gateway's thread makes its host sockets, when not in the
    /// namespace it was started from ([`Nat::sockets_in`]).
    netns: Option<std::fs::File>,
}

/// Frames queued towards the guest are picked up by the guest's next poll.
const GATEWAY_NIC: usize = 1;

impl Nat {
    /// A gateway set up by `cfg` (published ports are bound now, so a busy
    /// port is an error here), and the guest's end of its cable with the
    /// guest NIC's configuration.
    pub fn new(cfg: NatConfig, now: Instant) -> io::Result<(Nat, PairEnd, NicConfig)> {
        let (guest_end, gw_end) = pair(NAT_MTU, Duration::ZERO, true);
        let wakeup = || {
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map(Arc::new)
        };
        let (to_gateway, to_guest) = (wakeup()?, wakeup()?);
        gw_end.wake_on_frames(Arc::clone(&to_gateway));
        guest_end.wake_on_frames(Arc::clone(&to_guest));
        let side = Arc::new(Mutex::new(Side::default()));
        // In relay mode the gateway stands for no address of its own: an
        // echo request to the container's gateway goes to the real one.
        let own = if cfg.relay {
            vec![cfg.gateway]
        } else {
            vec![cfg.gateway, cfg.dns]
        };
        let diversion = Diversion {
            side: Arc::clone(&side),
            own: if cfg.relay { Vec::new() } else { own.clone() },
            proxy_arp: cfg.relay.then_some(ProxyArp {
                guest: cfg.guest,
                gateway: cfg.gateway,
                mac: EthernetAddress(cfg.gateway_mac),
            }),
        };
        let link: GatewayLink = Layered::wrap(gw_end, diversion);
        let stack_cfg = StackConfig {
            tcp_recv_buffer: 1 << 20,
            tcp_send_buffer: 1 << 20,
            ..StackConfig::unpredictable()
        };
        let mut gw = Stack::new(stack_cfg, now);
        let nic = NicConfig {
            name: "gw".into(),
            mac: cfg.gateway_mac,
            addrs: own
                .iter()
                .map(|&a| IfAddr {
                    addr: IpAddr::V4(a),
                    prefix_len: cfg.prefix_len,
                })
                .collect(),
            gateway_v4: None,
            gateway_v6: None,
        };
        let setup = |e: crate::NetError| io::Error::other(format!("the gateway's NIC: {e}"));
        let id = gw.add_nic(Box::new(link), nic).map_err(setup)?;
        debug_assert_eq!(id, GATEWAY_NIC);
        gw.set_transparent(id).map_err(setup)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let guest_nic = cfg.guest_nic();
        let mut nat = Nat {
            cfg,
            gw,
            side,
            epoll,
            flows: SlotMap::with_key(),
            by_socket: HashMap::new(),
            pending: HashMap::new(),
            udp_by_guest: HashMap::new(),
            udp_published: HashMap::new(),
            pings: HashMap::new(),
            events: Vec::new(),
            held: Vec::new(),
            buf: vec![0; 1 << 16],
            next_sweep: now + FLOW_IDLE,
            to_gateway,
            to_guest,
            mirror: None,
            netns: None,
            mirrored: HashMap::new(),
        };
        for p in nat.cfg.publish.clone() {
            nat.publish(&p)
                .map_err(|e| io::Error::new(e.kind(), format!("publishing {}: {e}", p.host)))?;
        }
        Ok((nat, guest_end, guest_nic))
    }

    /// The Sentry's handle on the host listeners that mirror the guest's
    /// (relay mode; see [`ListenMirror`]). One per gateway: a second call
    /// replaces the first handle.
    pub fn mirror(&mut self) -> ListenMirror {
        let (handle, shared) = mirror::new(self.cfg.guest, Arc::clone(&self.to_gateway));
        self.mirror = Some(shared);
        handle
    }

    /// Whether this is a relay (see [`NatConfig::relay`]).
    pub fn is_relay(&self) -> bool {
        self.cfg.relay
    }

    /// Makes the gateway's thread ([`Nat::spawn`]) enter the network
    /// namespace `netns` before it makes any host socket: `relay` mode
    /// under `do`, where the Sentry stays in the caller's namespace.
    /// (Published ports are bound by [`Nat::new`], where it runs.)
    pub fn sockets_in(&mut self, netns: std::fs::File) {
        self.netns = Some(netns);
    }

    /// The gateway's epoll set: readable when a host socket is.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// A descriptor that turns readable when the gateway has queued frames
    /// for the guest: what the guest's side waits on while the gateway runs
    /// on its own thread ([`Nat::spawn`]). Read it before reading the cable.
    /// (An eventfd: reading its 8 bytes takes the signal.)
    pub fn guest_wakeup(&self) -> io::Result<std::os::fd::OwnedFd> {
        self.to_guest.as_fd().try_clone_to_owned()
    }

    /// Runs the gateway on a thread of its own for the rest of the process:
    /// it sleeps on its host sockets, on frames from the guest and on its
    /// timers. `origin` is the instant both ends of the cable count time
    /// from. The thread is made here, with all it needs (no descriptor is
    /// made after), so a seccomp filter loaded later confines it too.
    pub fn spawn(mut self, origin: std::time::Instant) -> io::Result<()> {
        const HOST: u64 = 0;
        const CABLE: u64 = 1;
        let wait = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        wait.add(&self.epoll.0, EpollEvent::new(EpollFlags::EPOLLIN, HOST))?;
        let cable = Arc::clone(&self.to_gateway);
        wait.add(cable.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, CABLE))?;
        let clock = move || Instant::from_micros(origin.elapsed().as_micros() as i64);
        let netns = self.netns.take();
        // This thread only: the namespace is a thread's own.
        let enter = move || match netns {
            Some(ns) => nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("the gateway cannot enter its network namespace: {e}"),
                )
            }),
            None => Ok(()),
        };
        crate::spawn_prepared("nat", enter, move || {
            let mut events = [EpollEvent::empty(); 2];
            loop {
                // Taken before the cable is read: frames sent after
                // this signal again.
                let _ = cable.read();
                let now = clock();
                self.poll(now);
                let wait_ms = self.poll_at().map_or(u16::MAX, |at| {
                    let us = (at - now.min(at)).total_micros();
                    us.div_ceil(1000).min(u64::from(u16::MAX)) as u16
                });
                let _ = wait.wait(&mut events, EpollTimeout::from(wait_ms));
            }
        })
    }

    /// When [`Nat::poll`] must run next if no descriptor wakes it.
    pub fn poll_at(&self) -> Option<Instant> {
        let at = self.gw.poll_at();
        Some(at.map_or(self.next_sweep, |a| a.min(self.next_sweep)))
    }

    /// Does the gateway's work due at `now`: host sockets, frames from the
    /// guest, and the gateway stack's output (which the guest's next poll reads).
    pub fn poll(&mut self, now: Instant) {
        self.apply_mirror_changes();
        self.host_events(now);
        for _ in 0..16 {
            self.gw.poll(now);
            let mut work = self.relay_diverted(now);
            self.gw.take_intercepted(&mut self.held);
            for syn in std::mem::take(&mut self.held) {
                work = true;
                self.on_syn(syn);
            }
            self.gw.drain_events(&mut self.events);
            for id in std::mem::take(&mut self.events) {
                work = true;
                if let Some(&key) = self.by_socket.get(&id) {
                    self.service_tcp(key);
                }
            }
            if !work {
                break;
            }
        }
        if now >= self.next_sweep {
            self.sweep(now);
            self.next_sweep = now + Duration::from_secs(10);
        }
    }

    fn host_events(&mut self, now: Instant) {
        let mut events = [EpollEvent::empty(); 64];
        for _ in 0..16 {
            let Ok(n) = self.epoll.wait(&mut events, EpollTimeout::ZERO) else {
                return;
            };
            for ev in &events[..n] {
                let key = FlowKey::from(KeyData::from_ffi(ev.data()));
                self.on_host_event(key, ev.events(), now);
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn on_host_event(&mut self, key: FlowKey, ev: EpollFlags, now: Instant) {
        match self.flows.get(key) {
            Some(Flow::Listener(..)) => self.accept_published(key),
            Some(Flow::Tcp(_)) => self.on_tcp_event(key, ev),
            Some(Flow::Udp(_)) => {
                if ev.contains(EpollFlags::EPOLLERR) {
                    self.udp_errors(key);
                }
                self.udp_from_host(key, now);
            }
            Some(Flow::Ping(_)) => self.ping_from_host(key, now),
            None => {}
        }
    }

    fn relay_diverted(&mut self, now: Instant) -> bool {
        let frames = std::mem::take(&mut lock(&self.side).diverted);
        let work = !frames.is_empty();
        for f in &frames {
            let Some((src, dst, proto, payload)) = self.guest_packet(f) else {
                continue;
            };
            match proto {
                IpProtocol::Udp => self.udp_from_guest(src, dst, payload, now),
                IpProtocol::Icmp => self.ping_from_guest(dst, payload, now),
                _ => {}
            }
        }
        work
    }

    /// The IPv4 header of a frame from the guest, checked: its source must be
    /// the guest, and fragments are not relayed.
    fn guest_packet<'a>(
        &self,
        frame: &'a [u8],
    ) -> Option<(Ipv4Addr, Ipv4Addr, IpProtocol, &'a [u8])> {
        let eth = EthernetFrame::<&[u8]>::header_len();
        let ip = Ipv4Packet::new_checked(frame.get(eth..)?).ok()?;
        if ip.src_addr() != self.cfg.guest || ip.more_frags() || ip.frag_offset() != 0 {
            return None;
        }
        let start = eth + usize::from(ip.header_len());
        let end = eth + usize::from(ip.total_len());
        Some((
            ip.src_addr(),
            ip.dst_addr(),
            ip.next_header(),
            frame.get(start..end)?,
        ))
    }

    /// Queues an IPv4 packet from `src` to the guest; `body` writes the
    /// upper-layer part (of `len` bytes) and its checksum.
    fn inject(
        &mut self,
        src: Ipv4Addr,
        proto: IpProtocol,
        len: usize,
        body: impl FnOnce(&mut [u8]),
    ) {
        if len + 20 > NAT_MTU {
            return;
        }
        let eth = EthernetRepr {
            src_addr: EthernetAddress(self.cfg.gateway_mac),
            dst_addr: EthernetAddress(self.cfg.guest_mac),
            ethertype: EthernetProtocol::Ipv4,
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: self.cfg.guest,
            next_header: proto,
            payload_len: len,
            hop_limit: 64,
        };
        let mut frame = vec![0u8; eth.buffer_len() + ip.buffer_len() + len];
        let mut f = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.emit(&mut f);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &ChecksumCapabilities::default());
        body(p.payload_mut());
        lock(&self.side).inject.push(frame);
    }

    fn publish(&mut self, p: &Publish) -> io::Result<()> {
        if p.udp {
            self.publish_udp(p.host, p.guest_port)
        } else {
            self.publish_tcp(p.host, p.guest_port)
        }
    }

    /// Enters a flow and watches its host socket, edge-triggered. A flow
    /// that cannot be watched would never be served: it is taken out again
    /// and handed back with the reason.
    fn add_flow(&mut self, flow: Flow) -> Result<FlowKey, (Flow, io::Error)> {
        let key = self.flows.insert(flow);
        let flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        let event = EpollEvent::new(flags, key.0.as_ffi());
        match self.epoll.add(self.flows[key].host_fd(), event) {
            Ok(()) => Ok(key),
            Err(e) => Err((self.flows.remove(key).expect("just entered"), e.into())),
        }
    }

    /// Opens and closes the host listeners that mirror the guest's, in the
    /// order the Sentry asked, and answers for each opened.
    fn apply_mirror_changes(&mut self) {
        let Some(shared) = self.mirror.clone() else {
            return;
        };
        let changes = std::mem::take(&mut *lock(&shared.changes));
        for change in changes {
            match change {
                mirror::Change::Open(proto, port) => {
                    let opened = match proto {
                        Protocol::Udp => self.mirror_udp(port),
                        _ => self.mirror_tcp(port),
                    };
                    let answer = opened.map(|key| {
                        if let Some(old) = self.mirrored.insert((proto, port), key)
                            && old != key
                        {
                            self.drop_flow(old);
                        }
                    });
                    let _ = shared.answers.try_send(((proto, port), answer));
                }
                mirror::Change::Close(proto, port) => {
                    if let Some(key) = self.mirrored.remove(&(proto, port)) {
                        self.drop_flow(key);
                    }
                }
            }
        }
    }

    /// A TCP listener on the guest's address and `port`, accepting for it.
    fn mirror_tcp(&mut self, port: u16) -> io::Result<FlowKey> {
        let host = SocketAddr::V4(SocketAddrV4::new(self.cfg.guest, port));
        let l = TcpListener::bind(host)?;
        l.set_nonblocking(true)?;
        self.add_flow(Flow::Listener(l, port)).map_err(|(_, e)| e)
    }

    /// Forgets a flow and its host socket (a UDP one leaves its table too).
    fn drop_flow(&mut self, key: FlowKey) {
        if let Some(Flow::Udp(u)) = self.flows.remove(key)
            && self.udp_by_guest.get(&u.guest) == Some(&key)
        {
            self.udp_by_guest.remove(&u.guest);
        }
    }

    /// Drops idle UDP flows and ping identifiers.
    fn sweep(&mut self, now: Instant) {
        let idle: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| match f {
                Flow::Udp(u) => !u.published && now >= u.last + FLOW_IDLE,
                Flow::Ping(p) => now >= p.last + FLOW_IDLE,
                _ => false,
            })
            .map(|(k, _)| k)
            .collect();
        for key in idle {
            match self.flows.remove(key) {
                Some(Flow::Udp(u)) => {
                    self.udp_by_guest.remove(&u.guest);
                }
                Some(Flow::Ping(p)) => {
                    self.pings.remove(&p.guest_ident);
                }
                _ => {}
            }
        }
    }

    /// Whether another flow may open.
    fn room(&self) -> bool {
        self.flows.len() < MAX_FLOWS
    }

    /// How many flows are open (TCP, UDP, ping), for tests and statistics.
    pub fn flow_count(&self) -> usize {
        self.flows
            .values()
            .filter(|f| !matches!(f, Flow::Listener(..)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkCaps;

    /// What reached a cable, in order.
    #[derive(Debug, Default)]
    struct WatchedCable {
        events: Vec<&'static str>,
    }

    impl Link for WatchedCable {
        fn caps(&self) -> LinkCaps {
            LinkCaps {
                medium: crate::link::Medium::Ethernet,
                mtu: NAT_MTU,
                checksum_offload: true,
            }
        }
        fn recv(&mut self, _now: Instant) -> Option<Vec<u8>> {
            None
        }
        fn send(&mut self, _now: Instant, _frame: Vec<u8>) {
            self.events.push("send");
        }
        fn flush(&mut self, _now: Instant) {
            self.events.push("flush");
        }
    }

    /// The relays' answers are put on the cable when the gateway stack
    /// flushes, and the cable is flushed after them: a cable that batches
    /// its writes would otherwise hold them back.
    #[test]
    fn the_gateway_link_flushes_its_cable_after_the_relays_answers() {
        let side = Arc::new(Mutex::new(Side::default()));
        lock(&side).inject.push(vec![0; 60]);
        let diversion = Diversion {
            side: Arc::clone(&side),
            own: vec![Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::new(10, 0, 2, 3)],
            proxy_arp: None,
        };
        let mut link: GatewayLink<_> = Layered::wrap(WatchedCable::default(), diversion);
        link.flush(Instant::ZERO);
        assert_eq!(link.get_ref().events, ["send", "flush"]);
        assert!(lock(&side).inject.is_empty());
    }

    #[test]
    fn the_relay_reaches_every_address_but_the_guests_own() {
        let cfg = NatConfig {
            guest: Ipv4Addr::new(172, 17, 0, 2),
            prefix_len: 16,
            gateway: Ipv4Addr::new(172, 17, 0, 1),
            relay: true,
            ..NatConfig::default()
        };
        let to = |s: &str| cfg.outbound(s.parse().unwrap());
        for reached in [
            "172.17.0.1:80",
            "172.17.0.3:80",
            "198.51.100.7:443",
            "10.0.2.3:53",
        ] {
            assert_eq!(to(reached), Some(reached.parse().unwrap()), "{reached}");
        }
        for nowhere in [
            "172.17.0.2:80",
            "127.0.0.1:80",
            "172.17.255.255:9",
            "255.255.255.255:9",
            "224.0.0.1:80",
            "0.0.0.0:80",
        ] {
            assert_eq!(to(nowhere), None, "{nowhere}");
        }
    }

    #[test]
    fn the_relay_answers_arp_for_every_address_but_the_guests_and_the_gateways() {
        let guest_mac = EthernetAddress([2, 0, 0, 0, 0, 2]);
        let proxy = ProxyArp {
            guest: Ipv4Addr::new(172, 17, 0, 2),
            gateway: Ipv4Addr::new(172, 17, 0, 1),
            mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
        };
        let request = |from: Ipv4Addr, target: Ipv4Addr| {
            let mut out = Vec::new();
            crate::stack::route::arp_request(&mut out, guest_mac, from, target);
            out
        };
        let peer = Ipv4Addr::new(172, 17, 0, 3);
        let reply = proxy
            .answer(&request(proxy.guest, peer))
            .expect("a peer's address is answered");
        let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
        assert_eq!(eth.dst_addr(), guest_mac);
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        assert_eq!(
            arp,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: proxy.mac,
                source_protocol_addr: peer,
                target_hardware_addr: guest_mac,
                target_protocol_addr: proxy.guest,
            }
        );
        // The gateway stack answers for its own address; the guest's own
        // (a duplicate-address probe) and strangers' requests get nothing.
        assert!(proxy.answer(&request(proxy.guest, proxy.gateway)).is_none());
        assert!(proxy.answer(&request(proxy.guest, proxy.guest)).is_none());
        assert!(proxy.answer(&request(peer, proxy.guest)).is_none());
        assert!(proxy.answer(&reply).is_none(), "a reply is not answered");
    }

    #[test]
    fn port_mappings_parse_like_docker() {
        let p: Publish = "8080:80".parse().unwrap();
        assert_eq!(p.host, "0.0.0.0:8080".parse().unwrap());
        assert_eq!((p.guest_port, p.udp), (80, false));
        let p: Publish = "127.0.0.1:5353:53/udp".parse().unwrap();
        assert_eq!(p.host, "127.0.0.1:5353".parse().unwrap());
        assert_eq!((p.guest_port, p.udp), (53, true));
        let p: Publish = "[::1]:8443:443/tcp".parse().unwrap();
        assert_eq!(p.host, "[::1]:8443".parse().unwrap());
        for bad in [
            "",
            "80",
            "x:80",
            "8080:80/sctp",
            "0:80",
            "8080:0",
            "1.2.3.4:99999:80",
        ] {
            assert!(bad.parse::<Publish>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_gateway_maps_addresses_as_documented() {
        let mut cfg = NatConfig {
            dns_upstream: Some("192.0.2.53:53".parse().unwrap()),
            ..NatConfig::default()
        };
        let to = |s: &str| cfg.outbound(s.parse().unwrap());
        assert_eq!(to("10.0.2.3:53"), Some("192.0.2.53:53".parse().unwrap()));
        assert_eq!(to("10.0.2.3:80"), None);
        assert_eq!(to("10.0.2.2:8000"), None, "the host's loopback is closed");
        assert_eq!(to("10.0.2.99:80"), None);
        assert_eq!(to("127.0.0.1:80"), None);
        assert_eq!(to("224.0.0.1:80"), None);
        assert_eq!(
            to("198.51.100.7:443"),
            Some("198.51.100.7:443".parse().unwrap())
        );
        cfg.host_loopback = true;
        let to = |s: &str| cfg.outbound(s.parse().unwrap());
        assert_eq!(to("10.0.2.2:8000"), Some("127.0.0.1:8000".parse().unwrap()));
        let back = |s: &str| cfg.inbound(s.parse().unwrap());
        assert_eq!(back("192.0.2.53:53"), Some("10.0.2.3:53".parse().unwrap()));
        assert_eq!(
            back("127.0.0.1:8000"),
            Some("10.0.2.2:8000".parse().unwrap())
        );
        assert_eq!(
            back("198.51.100.7:443"),
            Some("198.51.100.7:443".parse().unwrap())
        );
        assert_eq!(back("[2001:db8::1]:443"), None);
    }
}
