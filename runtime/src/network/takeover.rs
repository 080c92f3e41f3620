//! The `sandbox` network mode's set-up: take over the interfaces of a
//! network namespace (Docker's veth) so that the netstack, not the host
//! kernel, answers for their addresses.
//!
//! [`take_over`] enters the namespace on a short-lived thread (the caller's
//! own namespace is untouched), lists with NETLINK_ROUTE every interface
//! that is up and is not loopback, and for each records its name, MAC, MTU,
//! addresses (IPv4, and IPv6 but link-local) and routes; it opens a
//! [`PacketLink`] there, then deletes the addresses and routes from the host
//! interface, which stays up. Out come one [`TakenNic`] per interface, ready
//! for [`TakenNic::add_to`] a [`Stack`], and a [`Restore`] that puts back
//! what was removed when the sandbox ends.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use netstack::link::PacketLink;
use netstack::{GatewayRoute, IfAddr, Link, NicConfig, NicSetup};
use nix::sched::{CloneFlags, setns};

/// Why the interfaces of a namespace could not be taken over.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// The namespace could not be opened or entered.
    #[error("cannot enter the network namespace {path}: {source}")]
    Namespace {
        /// The namespace's path.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A NETLINK_ROUTE request failed.
    #[error("netlink {what}: {source}")]
    Netlink {
        /// The request, in words.
        what: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The AF_PACKET socket on an interface could not be opened.
    #[error("cannot open an AF_PACKET socket on {name}: {source}")]
    Link {
        /// The interface.
        name: String,
        /// What failed.
        source: io::Error,
    },
    /// The thread working in the namespace panicked.
    #[error("the thread working in the network namespace panicked")]
    Thread,
}

/// One interface of the namespace, taken over.
#[derive(Debug)]
pub struct TakenNic {
    /// The AF_PACKET link on the interface, opened inside the namespace.
    pub link: PacketLink,
    /// Name, MAC, addresses and default gateways, as the host had them.
    pub config: NicConfig,
    /// Routes through a gateway, besides the default ones.
    pub routes: Vec<GatewayRoute>,
    /// Routes with no gateway to prefixes beyond the addresses' subnets.
    pub onlink: Vec<IfAddr>,
    /// Routes of the interface that the stack cannot follow (multipath,
    /// blackhole, a second default route...), as `ip route` would word
    /// them; they are removed and restored with the others.
    pub ignored: Vec<String>,
}

impl TakenNic {
    /// The NIC as a stack takes it, its link wrapped by `wrap` (a sniffer).
    pub fn into_setup(self, wrap: impl FnOnce(Box<dyn Link>) -> Box<dyn Link>) -> NicSetup {
        NicSetup {
            link: wrap(Box::new(self.link)),
            config: self.config,
            routes: self.routes,
            onlink: self.onlink,
        }
    }
}

/// What [`take_over`] removed from the namespace. [`Restore::restore`] puts
/// it back; dropping it without that restores too (best effort), so the
/// namespace is left as it was found even when the sandbox fails.
#[derive(Debug)]
pub struct Restore {
    netns: PathBuf,
    addrs: Vec<AddressMessage>,
    routes: Vec<RouteMessage>,
    done: bool,
}

impl Restore {
    /// Adds the addresses back, then the routes (some come back with their
    /// address by themselves). Every item is tried; the first error is
    /// returned.
    pub fn restore(mut self) -> io::Result<()> {
        self.done = true;
        let (addrs, routes) = (
            std::mem::take(&mut self.addrs),
            std::mem::take(&mut self.routes),
        );
        in_netns(&self.netns, move || restore_items(&addrs, &routes))
            .map_err(|e| io::Error::other(e.to_string()))?
    }
}

impl Restore {
    /// Forgets the work without doing it: another process (a copy made by
    /// `fork`) does it instead.
    pub fn disarm(mut self) {
        self.done = true;
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (addrs, routes) = (
            std::mem::take(&mut self.addrs),
            std::mem::take(&mut self.routes),
        );
        match in_netns(&self.netns, move || restore_items(&addrs, &routes)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("restoring {}: {e}", self.netns.display()),
            Err(e) => tracing::warn!("restoring {}: {e}", self.netns.display()),
        }
    }
}

/// The interfaces taken over, and how to give them back.
#[derive(Debug)]
pub struct TakeOver {
    /// One per interface that was up, in index order.
    pub nics: Vec<TakenNic>,
    /// Puts back the addresses and routes.
    pub restore: Restore,
}

/// Takes over every interface of the namespace at `netns` that is up and is
/// not loopback (see the module documentation). On failure, whatever was
/// already removed is put back.
pub fn take_over(netns: &Path) -> Result<TakeOver, TakeoverError> {
    let (nics, addrs, routes) = in_netns(netns, take_over_here)??;
    Ok(TakeOver {
        nics,
        restore: Restore {
            netns: netns.to_owned(),
            addrs,
            routes,
            done: false,
        },
    })
}

/// Runs `f` on a thread that has entered the namespace at `path`.
fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, TakeoverError> {
    let ns = |source| TakeoverError::Namespace {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(ns)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| ns(e.into()))?;
            Ok(f())
        })
        .join()
        .map_err(|_| TakeoverError::Thread)?
    })
}

type Taken = (Vec<TakenNic>, Vec<AddressMessage>, Vec<RouteMessage>);

/// One interface of a namespace as it is (`relay` mode reads them and
/// leaves them alone).
#[derive(Debug)]
pub struct SeenNic {
    /// Name, MAC, addresses and default gateways.
    pub config: NicConfig,
    /// Routes through a gateway, besides the default ones.
    pub routes: Vec<GatewayRoute>,
    /// Routes with no gateway to prefixes beyond the addresses' subnets.
    pub onlink: Vec<IfAddr>,
}

/// Every interface of the namespace at `netns` that is up, is not loopback
/// and is Ethernet, as [`take_over`] would see it, without changing anything.
pub fn read_interfaces(netns: &Path) -> Result<Vec<SeenNic>, TakeoverError> {
    in_netns(netns, || {
        let mut rtnl = Rtnl::new().map_err(netlink("open"))?;
        Ok(interfaces(&mut rtnl)?
            .into_iter()
            .map(|f| SeenNic {
                config: f.described.config,
                routes: f.described.routes,
                onlink: f.described.onlink,
            })
            .collect())
    })?
}

/// An interface found by [`interfaces`].
struct Found {
    index: u32,
    name: String,
    addrs: Vec<AddressMessage>,
    routes: Vec<RouteMessage>,
    described: Described,
}

/// The interfaces of the caller's namespace that the sandbox would serve.
fn interfaces(rtnl: &mut Rtnl) -> Result<Vec<Found>, TakeoverError> {
    let links = rtnl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .map_err(netlink("list links"))?;
    let all_addrs = rtnl
        .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .map_err(netlink("list addresses"))?;
    let all_routes = rtnl
        .dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))
        .map_err(netlink("list routes"))?;

    let mut found = Vec::new();
    for msg in links {
        let RouteNetlinkMessage::NewLink(link) = msg else {
            continue;
        };
        let flags = link.header.flags;
        if !flags.contains(LinkFlags::Up) || flags.contains(LinkFlags::Loopback) {
            continue;
        }
        let index = link.header.index;
        let name = link_name(&link);
        if link.header.link_layer_type != LinkLayerType::Ether {
            tracing::warn!("{name}: not an Ethernet interface, left alone");
            continue;
        }
        let addrs: Vec<AddressMessage> = all_addrs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => Some(a),
                _ => None,
            })
            .filter(|a| address_of(a).is_some_and(|ip| !is_link_local(ip)))
            .cloned()
            .collect();
        let routes: Vec<RouteMessage> = all_routes
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .filter(|r| belongs_to(r, index))
            .cloned()
            .collect();
        let described = describe(&link, &addrs, &routes);
        found.push(Found {
            index,
            name,
            addrs,
            routes,
            described,
        });
    }
    Ok(found)
}

/// The work of [`take_over`], in the namespace.
fn take_over_here() -> Result<Taken, TakeoverError> {
    let mut rtnl = Rtnl::new().map_err(netlink("open"))?;
    let found = interfaces(&mut rtnl)?;
    let mut nics = Vec::new();
    let mut removed_addrs = Vec::new();
    let mut removed_routes = Vec::new();
    let taken = || -> Result<(), TakeoverError> {
        for Found {
            index,
            name,
            addrs,
            routes,
            described: d,
        } in found
        {
            let link = PacketLink::open(index, d.mtu)
                .and_then(PacketLink::with_sender_thread)
                .map_err(|source| TakeoverError::Link {
                    name: name.clone(),
                    source,
                })?;
            let nic = TakenNic {
                link,
                config: d.config,
                routes: d.routes,
                onlink: d.onlink,
                ignored: d.ignored,
            };
            // Recorded before anything is removed, so that a failure half-way
            // restores what is gone.
            removed_addrs.extend(addrs.iter().cloned());
            removed_routes.extend(routes.iter().cloned());
            for a in &addrs {
                rtnl.request(RouteNetlinkMessage::DelAddress(a.clone()), 0)
                    .or_else(|e| gone(e, libc::EADDRNOTAVAIL))
                    .map_err(netlink(&format!("remove the addresses of {name}")))?;
            }
            // IPv4 routes vanish with the last address; IPv6 ones stay.
            for r in &routes {
                rtnl.request(RouteNetlinkMessage::DelRoute(r.clone()), 0)
                    .or_else(|e| gone(e, libc::ESRCH))
                    .map_err(netlink(&format!("remove the routes of {name}")))?;
            }
            nics.push(nic);
        }
        Ok(())
    };
    if let Err(e) = taken() {
        if let Err(r) = restore_items(&removed_addrs, &removed_routes) {
            tracing::warn!("restoring after a failed take-over: {r}");
        }
        return Err(e);
    }
    Ok((nics, removed_addrs, removed_routes))
}

/// Puts addresses back, then routes; what is there already counts as done.
fn restore_items(addrs: &[AddressMessage], routes: &[RouteMessage]) -> io::Result<()> {
    let mut rtnl = Rtnl::new()?;
    let mut first = None;
    let create = NLM_F_CREATE | NLM_F_EXCL;
    for a in addrs {
        let r = rtnl.request(RouteNetlinkMessage::NewAddress(a.clone()), create);
        if let Err(e) = r.or_else(|e| gone(e, libc::EEXIST)) {
            first.get_or_insert(e);
        }
    }
    for r in routes {
        let r = rtnl.request(RouteNetlinkMessage::NewRoute(for_restore(r)), create);
        if let Err(e) = r.or_else(|e| gone(e, libc::EEXIST)) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Treats the error `errno` as success (the thing is already gone or there).
fn gone(e: io::Error, errno: i32) -> io::Result<()> {
    if e.raw_os_error() == Some(errno) {
        Ok(())
    } else {
        Err(e)
    }
}

fn netlink(what: &str) -> impl FnOnce(io::Error) -> TakeoverError + '_ {
    move |source| TakeoverError::Netlink {
        what: what.to_owned(),
        source,
    }
}

fn link_name(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_else(|| format!("if{}", link.header.index))
}

/// The address of an address message: IFA_LOCAL for IPv4 (IFA_ADDRESS is
/// the peer's on point-to-point links), IFA_ADDRESS for IPv6.
fn address_of(a: &AddressMessage) -> Option<IpAddr> {
    let local = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    local.or(address)
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
        IpAddr::V4(_) => false,
    }
}

/// The interface a route leaves through, if it names one.
fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The route's destination network.
fn route_dst(r: &RouteMessage) -> Option<IfAddr> {
    let addr = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(d) => route_addr(d),
            _ => None,
        })
        .or(match r.header.address_family {
            AddressFamily::Inet => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            AddressFamily::Inet6 => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            _ => None,
        })?;
    Some(IfAddr {
        addr,
        prefix_len: r.header.destination_prefix_length,
    })
}

fn route_gateway(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => route_addr(g),
        _ => None,
    })
}

const RT_TABLE_LOCAL: u32 = 255;

/// Whether a route is the interface's to take: it leaves through it, is not
/// in the local table (the kernel keeps that per address), and is not one
/// of IPv6's link-local or multicast routes, which stay with the link-local
/// address the host keeps.
fn belongs_to(r: &RouteMessage, index: u32) -> bool {
    if route_oif(r) != Some(index) || route_table(r) == RT_TABLE_LOCAL {
        return false;
    }
    match route_dst(r) {
        Some(IfAddr {
            addr: IpAddr::V6(v6),
            ..
        }) => !v6.is_unicast_link_local() && !v6.is_multicast(),
        _ => true,
    }
}

/// A [`TakenNic`] but its link.
struct Described {
    config: NicConfig,
    mtu: usize,
    routes: Vec<GatewayRoute>,
    onlink: Vec<IfAddr>,
    ignored: Vec<String>,
}

/// What the stack is told about an interface, from its link, addresses and
/// routes.
fn describe(link: &LinkMessage, addrs: &[AddressMessage], routes: &[RouteMessage]) -> Described {
    let mut mac = [0u8; 6];
    let mut mtu = 1500;
    for a in &link.attributes {
        match a {
            LinkAttribute::Address(m) if m.len() == 6 => mac.copy_from_slice(m),
            LinkAttribute::Mtu(m) => mtu = *m as usize,
            _ => {}
        }
    }
    let ifaddrs: Vec<IfAddr> = addrs
        .iter()
        .filter_map(|a| {
            address_of(a).map(|addr| IfAddr {
                addr,
                prefix_len: a.header.prefix_len,
            })
        })
        .collect();
    let mut nic = Described {
        config: NicConfig {
            name: link_name(link),
            mac,
            addrs: ifaddrs.clone(),
            gateway_v4: None,
            gateway_v6: None,
        },
        mtu,
        routes: Vec::new(),
        onlink: Vec::new(),
        ignored: Vec::new(),
    };
    // Lowest metric first, so the preferred default route wins.
    let mut main: Vec<&RouteMessage> = routes
        .iter()
        .filter(|r| route_table(r) == u32::from(RouteHeader::RT_TABLE_MAIN))
        .collect();
    main.sort_by_key(|r| {
        r.attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Priority(p) => Some(*p),
                _ => None,
            })
            .unwrap_or(0)
    });
    for r in main {
        let Some(dst) = route_dst(r) else {
            continue;
        };
        let words = describe_route(r, dst);
        if r.header.kind != RouteType::Unicast {
            nic.ignored.push(words);
            continue;
        }
        match route_gateway(r) {
            Some(gw) if dst.prefix_len == 0 => match (gw, &mut nic.config) {
                (
                    IpAddr::V4(g),
                    NicConfig {
                        gateway_v4: slot @ None,
                        ..
                    },
                ) => *slot = Some(g),
                (
                    IpAddr::V6(g),
                    NicConfig {
                        gateway_v6: slot @ None,
                        ..
                    },
                ) => *slot = Some(g),
                _ => nic.ignored.push(words),
            },
            Some(gateway) => nic.routes.push(GatewayRoute { dst, gateway }),
            None => {
                // The subnet of an address (the kernel's own route for it) is
                // implied by the address.
                let inside_subnet = ifaddrs.iter().any(|a| {
                    a.addr.is_ipv4() == dst.addr.is_ipv4()
                        && a.prefix_len <= dst.prefix_len
                        && same_prefix(a.addr, dst.addr, a.prefix_len)
                });
                if !inside_subnet {
                    nic.onlink.push(dst);
                }
            }
        }
    }
    nic
}

/// Whether `a` and `b` agree on their first `len` bits.
fn same_prefix(a: IpAddr, b: IpAddr, len: u8) -> bool {
    let bits = |ip: IpAddr| -> u128 {
        match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
            IpAddr::V6(v6) => u128::from(v6),
        }
    };
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    bits(a) & mask == bits(b) & mask
}

/// A route as `ip route` words it, for the log.
fn describe_route(r: &RouteMessage, dst: IfAddr) -> String {
    let mut s = format!("{:?} {}/{}", r.header.kind, dst.addr, dst.prefix_len);
    if let Some(gw) = route_gateway(r) {
        s.push_str(&format!(" via {gw}"));
    }
    if r.attributes
        .iter()
        .any(|a| matches!(a, RouteAttribute::MultiPath(_)))
    {
        s.push_str(" (multipath)");
    }
    s
}

/// A recorded route as it can be added again: the attributes that say
/// what the route is, without the kernel's state (cache info, link-down
/// flags, which a request may not carry).
fn for_restore(r: &RouteMessage) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = r.header.clone();
    m.header.flags = r.header.flags & RouteFlags::Onlink;
    m.attributes = r
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                RouteAttribute::Destination(_)
                    | RouteAttribute::Source(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::PrefSource(_)
                    | RouteAttribute::Table(_)
                    | RouteAttribute::Metrics(_)
                    | RouteAttribute::Preference(_)
                    | RouteAttribute::MultiPath(_)
            )
        })
        .cloned()
        .collect();
    m
}

/// A NETLINK_ROUTE socket of the calling thread's namespace, used one
/// request at a time.
struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    fn new() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl {
            socket,
            seq: 0,
            buf: vec![0; 64 << 10],
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(self.seq)
    }

    /// Reads the answers to request `seq`, handing each message to `each`,
    /// until the end of a dump, an acknowledgement or an error.
    fn answers(&mut self, seq: u32, mut each: impl FnMut(RouteNetlinkMessage)) -> io::Result<()> {
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                off += len.next_multiple_of(4);
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(()),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(m) => each(m),
                    _ => {}
                }
            }
        }
    }

    fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_DUMP)?;
        let mut out = Vec::new();
        self.answers(seq, |m| out.push(m))?;
        Ok(out)
    }

    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, NLM_F_ACK | flags)?;
        self.answers(seq, |_| {})
    }
}

#[cfg(test)]
mod tests;
