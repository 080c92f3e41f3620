//! NETLINK_ROUTE emulation: the guest's rtnetlink requests answered from the
//! netstack's interface list.
//!
//! Data enters as one datagram the guest sent on its NETLINK_ROUTE socket and
//! the interface list (`&[NicInfo]` in NIC order: NIC `i` is ifindex `i + 1`,
//! the loopback NIC is the one without a MAC). It leaves as the datagrams Linux
//! would queue on that socket, in order ([`respond`]). Everything here is pure:
//! no socket state, no clock.
//!
//! The answers copy Linux 6.18 as observed on a real kernel (the tests hold the
//! kernel's bytes for a namespace configured like the test NICs):
//!
//! - Framing: a message whose `nlmsg_len` is below 16 or runs past the datagram
//!   ends processing silently, as does a tail shorter than a header (iproute2
//!   pads its requests with zeros and relies on this). Messages without
//!   `NLM_F_REQUEST`, and control types below 16, are only acknowledged if
//!   `NLM_F_ACK` asks for it.
//! - Errors are `NLMSG_ERROR` carrying the whole request; a success
//!   acknowledgement (`NLM_F_ACK`) carries only its header and `NLM_F_CAPPED`.
//!   Dumps are never acknowledged: `NLMSG_DONE` (payload: a 4-byte 0,
//!   `NLM_F_MULTI`) ends them.
//! - Dumps are packed into datagrams of at most [`DUMP_DATAGRAM_MAX`] bytes.
//!   Links, addresses (unless only IPv6) and routes send `NLMSG_DONE` alone in
//!   the last datagram, like the kernel does for those dumps (its
//!   `RTNL_FLAG_DUMP_SPLIT_NLM_DONE`); other dumps append it.
//! - A second dump request in the same datagram while the first still has
//!   datagrams to deliver gets `EBUSY`, placed after the first dump's first
//!   datagram, exactly where the kernel queues it.
//! - Requests are parsed as on a socket without `NETLINK_GET_STRICT_CHK`
//!   (filters in the family header, e.g. `ifa_index` or `RTA_TABLE`, are
//!   ignored and clients filter themselves, as they do on any kernel), and
//!   without `NETLINK_EXT_ACK`/`NETLINK_CAP_ACK` (no extended-ack attributes).
//!
//! What is served:
//!
//! - `RTM_GETLINK`: dump (AF_UNSPEC and any family but AF_BRIDGE, whose bridge
//!   ports are none, and AF_INET6, which gets the per-link IPv6 view), and a
//!   single link by `ifi_index` or `IFLA_IFNAME`/`IFLA_ALT_IFNAME` (`ENODEV`
//!   when there is none, `EINVAL` when neither is given). `IFLA_EXT_MASK`'s
//!   `RTEXT_FILTER_SKIP_STATS` drops the statistics; an `IFLA_MASTER` or
//!   `IFLA_LINKINFO` kind filter matches nothing (our links have neither).
//! - `RTM_GETADDR` dump: AF_INET, AF_INET6, or both for any other family.
//! - `RTM_GETROUTE` dump: the main and local tables Linux derives from the
//!   addresses (connected subnets, local and broadcast entries, IPv6
//!   `ff00::/8`), the default routes and the NIC's gateway routes.
//! - `RTM_GETROUTE` for one destination (`ip route get`): the lookup Linux
//!   does in its local then main table, with its source address selection
//!   (RFC 6724 for IPv6), `RTA_SRC`, `RTA_OIF`, `RTA_UID` and
//!   `RTM_F_FIB_MATCH`; `ENETUNREACH` without a route. Input-route
//!   simulation (`RTA_IIF`) is `EOPNOTSUPP`.
//! - Dumps of objects the sandbox has none of (neighbours, rules, netconf,
//!   qdiscs and other traffic control, nsids, nexthops, neighbour tables,
//!   stats) are empty: just `NLMSG_DONE`.
//! - Every other request, including every modifying one (`RTM_NEWADDR`,
//!   `RTM_NEWROUTE`, `RTM_SETLINK`, ...), gets `EOPNOTSUPP`: the guest is root in
//!   its namespace, so Linux would not say `EPERM`; the configuration is simply
//!   not changeable from inside, and `EOPNOTSUPP` is what rtnetlink answers for
//!   what it does not implement (`ip addr add` prints "Operation not
//!   supported"; `ip link set` falls back to the ioctls, which answer `EPERM`,
//!   see [`crate::ifreq`]). A request with an empty payload is accepted and
//!   does nothing, as in Linux.

use std::cmp::{Ordering, Reverse};
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netstack::NicInfo;
use nix::errno::Errno;

// --- netlink framing (linux/netlink.h) ---
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_MIN_TYPE: u16 = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CAPPED: u16 = 0x100;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The largest datagram a dump produces: the kernel's `NLMSG_GOODSIZE` with
/// 4 KiB pages (4096 less the skb overhead). glibc's `getifaddrs` reads with a
/// 4096-byte buffer and fails on `MSG_TRUNC`, so dump datagrams must stay below
/// that.
pub const DUMP_DATAGRAM_MAX: usize = 3776;

// --- address families ---
const AF_INET: u8 = 2;
const AF_BRIDGE: u8 = 7;
const AF_INET6: u8 = 10;
const AF_NETLINK: u16 = 16;

// --- rtnetlink message types (linux/rtnetlink.h) ---
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_GETNEIGH: u16 = 30;
const RTM_GETRULE: u16 = 34;
const RTM_GETQDISC: u16 = 38;
const RTM_GETTCLASS: u16 = 42;
const RTM_GETTFILTER: u16 = 46;
const RTM_GETACTION: u16 = 50;
const RTM_GETNEIGHTBL: u16 = 66;
const RTM_GETNETCONF: u16 = 82;
const RTM_GETNSID: u16 = 90;
const RTM_GETSTATS: u16 = 94;
const RTM_GETCHAIN: u16 = 102;
const RTM_GETNEXTHOP: u16 = 106;
const RTM_GETNEXTHOPBUCKET: u16 = 118;
/// The highest type rtnetlink dispatches; above it is `EOPNOTSUPP` at once.
const RTM_MAX: u16 = 123;

/// Dumps of objects the sandbox has none of: answered with just `NLMSG_DONE`.
/// (All have dump handlers in a stock kernel for AF_UNSPEC.)
const EMPTY_DUMPS: [u16; 13] = [
    RTM_GETNEIGH,
    RTM_GETRULE,
    RTM_GETQDISC,
    RTM_GETTCLASS,
    RTM_GETTFILTER,
    RTM_GETACTION,
    RTM_GETNEIGHTBL,
    RTM_GETNETCONF,
    RTM_GETNSID,
    RTM_GETSTATS,
    RTM_GETCHAIN,
    RTM_GETNEXTHOP,
    RTM_GETNEXTHOPBUCKET,
];

// --- link attributes (linux/if_link.h) ---
const IFLA_ADDRESS: u16 = 1;
const IFLA_BROADCAST: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_QDISC: u16 = 6;
const IFLA_STATS: u16 = 7;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_TXQLEN: u16 = 13;
const IFLA_MAP: u16 = 14;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKMODE: u16 = 17;
const IFLA_LINKINFO: u16 = 18;
const IFLA_STATS64: u16 = 23;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_GROUP: u16 = 27;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_PROMISCUITY: u16 = 30;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_CARRIER: u16 = 33;
const IFLA_CARRIER_CHANGES: u16 = 35;
const IFLA_PROTO_DOWN: u16 = 39;
const IFLA_GSO_MAX_SEGS: u16 = 40;
const IFLA_GSO_MAX_SIZE: u16 = 41;
const IFLA_CARRIER_UP_COUNT: u16 = 47;
const IFLA_CARRIER_DOWN_COUNT: u16 = 48;
const IFLA_MIN_MTU: u16 = 50;
const IFLA_MAX_MTU: u16 = 51;
const IFLA_ALT_IFNAME: u16 = 53;
const IFLA_GRO_MAX_SIZE: u16 = 58;
const IFLA_TSO_MAX_SIZE: u16 = 59;
const IFLA_TSO_MAX_SEGS: u16 = 60;
const IFLA_ALLMULTI: u16 = 61;
const IFLA_GSO_IPV4_MAX_SIZE: u16 = 63;
const IFLA_GRO_IPV4_MAX_SIZE: u16 = 64;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INET6_FLAGS: u16 = 1;
const IFLA_INET6_CACHEINFO: u16 = 5;
const IFLA_INET6_TOKEN: u16 = 7;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
/// `struct rtnl_link_stats64` (25 counters) and `struct rtnl_link_stats` (24).
const STATS64_LEN: usize = 25 * 8;
const STATS_LEN: usize = 24 * 4;
/// `struct rtnl_link_ifmap`: three u64, u16, two u8, padded to 8.
const IFMAP_LEN: usize = 32;
const IF_OPER_UNKNOWN: u8 = 0;
const IF_OPER_UP: u8 = 6;
/// IPv6 per-link flags: `IF_READY`, and `IF_RS_SENT` on links that solicit routers.
const IF_READY: u32 = 0x8000_0000;
const IF_RS_SENT: u32 = 0x10;

// --- device flags and types (linux/if.h, linux/if_arp.h) ---
pub(crate) const IFF_UP: u32 = 0x1;
pub(crate) const IFF_BROADCAST: u32 = 0x2;
pub(crate) const IFF_LOOPBACK: u32 = 0x8;
pub(crate) const IFF_RUNNING: u32 = 0x40;
pub(crate) const IFF_MULTICAST: u32 = 0x1000;
pub(crate) const IFF_LOWER_UP: u32 = 0x1_0000;
pub(crate) const ARPHRD_ETHER: u16 = 1;
pub(crate) const ARPHRD_LOOPBACK: u16 = 772;
/// Longest interface name (`IFNAMSIZ` less the NUL).
pub(crate) const IFNAME_MAX: usize = 15;
/// `dev->tx_queue_len` of Linux's loopback and Ethernet devices.
pub(crate) const TX_QUEUE_LEN: u32 = 1000;

// --- address attributes (linux/if_addr.h) ---
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const IFA_BROADCAST: u16 = 4;
const IFA_CACHEINFO: u16 = 6;
const IFA_FLAGS: u16 = 8;
const IFA_PROTO: u16 = 11;
const IFA_F_SECONDARY: u32 = 0x01;
const IFA_F_PERMANENT: u32 = 0x80;
const IFAPROT_KERNEL_LO: u8 = 1;
const IFAPROT_KERNEL_LL: u8 = 3;

// --- routes (linux/rtnetlink.h) ---
const RTA_DST: u16 = 1;
const RTA_SRC: u16 = 2;
const RTA_IIF: u16 = 3;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_CACHEINFO: u16 = 12;
const RTA_TABLE: u16 = 15;
const RTA_PREF: u16 = 20;
const RTA_UID: u16 = 25;
/// `struct rta_cacheinfo`: eight u32.
const RTA_CACHEINFO_LEN: usize = 32;
const RT_TABLE_MAIN: u8 = 254;
const RT_TABLE_LOCAL: u8 = 255;
const RTPROT_KERNEL: u8 = 2;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_SITE: u8 = 200;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_HOST: u8 = 254;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RTN_BROADCAST: u8 = 3;
const RTN_MULTICAST: u8 = 5;
const RTM_F_CLONED: u32 = 0x200;
const RTM_F_PREFIX: u32 = 0x800;
const RTM_F_FIB_MATCH: u32 = 0x2000;
/// Route cache flags a `route get` answer carries in `rtm_flags`.
const RTCF_BROADCAST: u32 = 0x1000_0000;
const RTCF_MULTICAST: u32 = 0x2000_0000;
const RTCF_LOCAL: u32 = 0x8000_0000;
/// Metrics Linux gives IPv6 routes: connected and multicast, and user-added.
const IP6_RT_PRIO_ADDRCONF: u32 = 256;
const IP6_RT_PRIO_USER: u32 = 1024;

/// Answers one datagram the guest sent on a NETLINK_ROUTE socket.
///
/// `request` may hold several messages; they are processed in order.
/// `port_id` is the socket's port id (`nl_pid`): it is put in every reply's
/// `nlmsg_pid`, and `nlmsg_seq` echoes the request's. Returns the datagrams to
/// deliver, in order; each must be delivered from the kernel's address,
/// `sockaddr_nl(0)`. Never panics, whatever the bytes.
pub fn respond(request: &[u8], nics: &[NicInfo], port_id: u32) -> Vec<Vec<u8>> {
    let mut out = Replies::default();
    for req in requests(request) {
        handle(&req, nics, port_id, &mut out);
    }
    out.sent.append(&mut out.dump_rest);
    out.sent
}

/// `struct sockaddr_nl` for `port_id` (`nl_groups` 0): the address a netlink
/// socket reports for itself, and, with port id 0, the kernel's address that
/// every reply comes from.
pub fn sockaddr_nl(port_id: u32) -> [u8; 12] {
    let mut sa = [0; 12];
    sa[0..2].copy_from_slice(&AF_NETLINK.to_ne_bytes());
    sa[4..8].copy_from_slice(&port_id.to_ne_bytes());
    sa
}

// ---------------------------------------------------------------------------
// The interface model shared with the ioctls.

/// An interface as the guest sees it: a NIC and its ifindex.
#[derive(Clone, Copy)]
pub(crate) struct Iface<'a> {
    pub(crate) index: u32,
    pub(crate) nic: &'a NicInfo,
}

/// The interfaces, in ifindex order.
pub(crate) fn ifaces(nics: &[NicInfo]) -> impl Iterator<Item = Iface<'_>> {
    nics.iter()
        .zip(1u32..)
        .map(|(nic, index)| Iface { index, nic })
}

/// The interface with ifindex `index`, if any (indexes below 1 name none).
pub(crate) fn iface_by_index(nics: &[NicInfo], index: i32) -> Option<Iface<'_>> {
    let index = u32::try_from(index).ok()?;
    ifaces(nics).find(|i| i.index == index)
}

/// The interface named `name` (no NUL), if any.
pub(crate) fn iface_by_name<'a>(nics: &'a [NicInfo], name: &[u8]) -> Option<Iface<'a>> {
    if name.is_empty() {
        return None;
    }
    ifaces(nics).find(|i| i.name() == name)
}

impl<'a> Iface<'a> {
    pub(crate) fn is_loopback(&self) -> bool {
        self.nic.mac.is_none()
    }

    /// The name as Linux would hold it: at most [`IFNAME_MAX`] bytes.
    pub(crate) fn name(&self) -> &'a [u8] {
        let name = self.nic.name.as_bytes();
        &name[..name.len().min(IFNAME_MAX)]
    }

    /// `dev_get_flags()`: every NIC is up, running, with carrier.
    pub(crate) fn flags(&self) -> u32 {
        if self.is_loopback() {
            IFF_UP | IFF_LOOPBACK | IFF_RUNNING | IFF_LOWER_UP
        } else {
            IFF_UP | IFF_BROADCAST | IFF_RUNNING | IFF_MULTICAST | IFF_LOWER_UP
        }
    }

    pub(crate) fn arphrd(&self) -> u16 {
        if self.is_loopback() {
            ARPHRD_LOOPBACK
        } else {
            ARPHRD_ETHER
        }
    }

    /// The hardware address: the MAC, or six zeros for loopback (whose
    /// `addr_len` is 6 in Linux too).
    pub(crate) fn hw_addr(&self) -> [u8; 6] {
        self.nic.mac.unwrap_or([0; 6])
    }

    fn hw_broadcast(&self) -> [u8; 6] {
        if self.is_loopback() {
            [0; 6]
        } else {
            [0xff; 6]
        }
    }

    pub(crate) fn mtu(&self) -> u32 {
        u32::try_from(self.nic.mtu).unwrap_or(u32::MAX)
    }

    /// The IPv4 addresses in the order Linux lists them (see [`V4Addr`]).
    pub(crate) fn v4_addrs(&self) -> Vec<V4Addr> {
        let mut primaries: Vec<V4Addr> = Vec::new();
        let mut secondaries: Vec<V4Addr> = Vec::new();
        for a in &self.nic.addrs {
            let IpAddr::V4(addr) = a.addr else { continue };
            let prefix_len = a.prefix_len.min(32);
            let same = |x: &V4Addr| x.addr == addr && x.prefix_len == prefix_len;
            if primaries.iter().chain(&secondaries).any(same) {
                continue; // Linux refuses the duplicate with EEXIST
            }
            let net = v4_network(addr, prefix_len);
            let primary = primaries
                .iter()
                .find(|p| p.prefix_len == prefix_len && v4_network(p.addr, prefix_len) == net)
                .map(|p| p.addr);
            let broadcast = (!self.is_loopback() && prefix_len <= 30)
                .then(|| Ipv4Addr::from(u32::from(addr) | !v4_mask(prefix_len)));
            let entry = V4Addr {
                addr,
                prefix_len,
                broadcast,
                secondary: primary.is_some(),
                primary: primary.unwrap_or(addr),
            };
            if entry.secondary {
                secondaries.push(entry);
            } else {
                primaries.push(entry);
            }
        }
        primaries.append(&mut secondaries);
        primaries
    }

    /// The IPv6 addresses, deduplicated, in Linux's order: by scope, widest
    /// first; within a scope in configuration order (Linux puts the newest
    /// first there, but "newest" means nothing for a configuration).
    fn v6_addrs(&self) -> Vec<(Ipv6Addr, u8)> {
        let mut out: Vec<(Ipv6Addr, u8)> = Vec::new();
        for a in &self.nic.addrs {
            let IpAddr::V6(addr) = a.addr else { continue };
            let entry = (addr, a.prefix_len.min(128));
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
        out.sort_by_key(|(addr, _)| Reverse(v6_src_scope(addr)));
        out
    }
}

/// An IPv4 address as Linux keeps it on a device.
///
/// Linux lists primaries before secondaries. An address is secondary when a
/// primary with the same prefix length covers it; it gets no subnet route,
/// and its local route's source is that primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct V4Addr {
    pub(crate) addr: Ipv4Addr,
    pub(crate) prefix_len: u8,
    /// Directed broadcast, as `ip addr add ... brd +` sets it: for prefixes up
    /// to /30 on non-loopback links.
    pub(crate) broadcast: Option<Ipv4Addr>,
    pub(crate) secondary: bool,
    /// The primary address of this subnet (the address itself when primary).
    pub(crate) primary: Ipv4Addr,
}

impl V4Addr {
    pub(crate) fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(v4_mask(self.prefix_len))
    }

    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(v4_network(self.addr, self.prefix_len))
    }
}

fn v4_mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

fn v4_network(addr: Ipv4Addr, prefix_len: u8) -> u32 {
    u32::from(addr) & v4_mask(prefix_len)
}

fn v6_mask(prefix_len: u8) -> u128 {
    match prefix_len {
        0 => 0,
        n => u128::MAX << (128 - u32::from(n.min(128))),
    }
}

fn v6_network(addr: Ipv6Addr, prefix_len: u8) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(addr) & v6_mask(prefix_len))
}

/// `ipv6_addr_src_scope()`: a rank, wider scopes higher.
fn v6_src_scope(addr: &Ipv6Addr) -> u8 {
    let seg0 = addr.segments()[0];
    if addr.is_loopback() {
        0x1
    } else if seg0 & 0xffc0 == 0xfe80 {
        0x2
    } else if seg0 & 0xffc0 == 0xfec0 {
        0x5
    } else {
        0xe
    }
}

/// `ifa_scope` of an IPv6 address (`rt_scope()` of its address type).
fn v6_rt_scope(addr: &Ipv6Addr) -> u8 {
    match v6_src_scope(addr) {
        0x1 => RT_SCOPE_HOST,
        0x2 => RT_SCOPE_LINK,
        0x5 => RT_SCOPE_SITE,
        _ => RT_SCOPE_UNIVERSE,
    }
}

// ---------------------------------------------------------------------------
// Requests: framing, one checked step.

/// One message of the guest's datagram, its framing already checked.
struct Request<'a> {
    /// The 16 header bytes as sent (echoed in errors).
    header: &'a [u8],
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The datagram's messages, ending (silently, as Linux does) at the first
/// whose length is below a header or past the datagram's end.
fn requests(datagram: &[u8]) -> impl Iterator<Item = Request<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let len = usize::try_from(read_u32(rest, 0)?).ok()?;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let (msg, _) = rest.split_at(len);
        rest = rest.get(align4(len)..).unwrap_or_default();
        let (header, payload) = msg.split_at(NLMSG_HDRLEN);
        Some(Request {
            header,
            ty: read_u16(header, 4)?,
            flags: read_u16(header, 6)?,
            seq: read_u32(header, 8)?,
            payload,
        })
    })
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn read_bytes<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    read_bytes(b, at).map(u16::from_ne_bytes)
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    read_bytes(b, at).map(u32::from_ne_bytes)
}

/// Attributes of a message, parsed liberally as the kernel's deprecated
/// parser does: a malformed attribute ends the list without error.
fn attrs(mut rest: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(read_u16(rest, 0)?);
        let ty = read_u16(rest, 2)? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            return None;
        }
        let value = &rest[NLA_HDRLEN..len];
        rest = rest.get(align4(len)..).unwrap_or_default();
        Some((ty, value))
    })
}

// ---------------------------------------------------------------------------
// Replies.

/// Where the replies go: `sent` is what the kernel queues while processing the
/// datagram; `dump_rest` is the remainder of a running dump, which the kernel
/// produces only as the guest reads, so after everything else.
#[derive(Default)]
struct Replies {
    sent: Vec<Vec<u8>>,
    dump_rest: Vec<Vec<u8>>,
}

/// What a request produces, besides its acknowledgement.
enum Answer {
    Nothing,
    Reply(Vec<u8>),
    Dump(Vec<Vec<u8>>),
}

/// The reply context: the request's sequence number and the socket's port.
#[derive(Clone, Copy)]
struct Ctx {
    seq: u32,
    port_id: u32,
}

/// `netlink_rcv_skb()` for one message.
fn handle(req: &Request, nics: &[NicInfo], port_id: u32, out: &mut Replies) {
    let ack = req.flags & NLM_F_ACK != 0;
    if req.flags & NLM_F_REQUEST == 0 || req.ty < NLMSG_MIN_TYPE {
        if ack {
            out.sent.push(error_msg(req, 0, port_id));
        }
        return;
    }
    let ctx = Ctx {
        seq: req.seq,
        port_id,
    };
    match rtnetlink(req, nics, ctx) {
        Ok(Answer::Dump(datagrams)) => {
            if !out.dump_rest.is_empty() {
                out.sent.push(error_msg(req, Errno::EBUSY as i32, port_id));
                return;
            }
            let mut datagrams = datagrams.into_iter();
            out.sent.extend(datagrams.next());
            out.dump_rest.extend(datagrams);
        }
        Ok(Answer::Reply(msg)) => {
            out.sent.push(msg);
            if ack {
                out.sent.push(error_msg(req, 0, port_id));
            }
        }
        Ok(Answer::Nothing) => {
            if ack {
                out.sent.push(error_msg(req, 0, port_id));
            }
        }
        Err(e) => out.sent.push(error_msg(req, e as i32, port_id)),
    }
}

/// `rtnetlink_rcv_msg()`: dispatch on the type.
fn rtnetlink(req: &Request, nics: &[NicInfo], ctx: Ctx) -> Result<Answer, Errno> {
    if req.ty > RTM_MAX {
        return Err(Errno::EOPNOTSUPP);
    }
    let Some(&family) = req.payload.first() else {
        return Ok(Answer::Nothing); // "all the messages must have at least 1 byte length"
    };
    let is_get = req.ty & 3 == 2;
    let dump = is_get && req.flags & NLM_F_DUMP != 0;
    match req.ty {
        RTM_GETLINK if dump => Ok(Answer::Dump(dump_links(req.payload, nics, ctx))),
        RTM_GETLINK => get_link(req.payload, nics, ctx).map(Answer::Reply),
        RTM_GETADDR if dump => Ok(Answer::Dump(dump_addrs(family, nics, ctx))),
        RTM_GETROUTE if dump => Ok(Answer::Dump(dump_routes(req.payload, nics, ctx))),
        RTM_GETROUTE => get_route(req.payload, nics, ctx).map(Answer::Reply),
        ty if dump && EMPTY_DUMPS.contains(&ty) => Ok(Answer::Dump(
            DumpWriter::default().finish(ctx, Done::Appended),
        )),
        _ => Err(Errno::EOPNOTSUPP),
    }
}

/// `netlink_ack()`: `NLMSG_ERROR` with `errno` (positive, or 0 for an
/// acknowledgement). Errors carry the whole request, acknowledgements only
/// its header and `NLM_F_CAPPED`.
fn error_msg(req: &Request, errno: i32, port_id: u32) -> Vec<u8> {
    let capped = errno == 0;
    let flags = if capped { NLM_F_CAPPED } else { 0 };
    let mut m = MsgWriter::new(NLMSG_ERROR, flags, req.seq, port_id);
    m.raw(&(-errno).to_ne_bytes());
    m.raw(req.header);
    if !capped {
        m.raw(req.payload);
    }
    m.finish()
}

/// Builds one netlink message: header, family header, attributes, each
/// padded to 4 bytes as the kernel pads them.
struct MsgWriter {
    buf: Vec<u8>,
}

impl MsgWriter {
    fn new(ty: u16, flags: u16, seq: u32, port_id: u32) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set by finish()
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&port_id.to_ne_bytes());
        Self { buf }
    }

    fn pad(&mut self) {
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// Bytes without an attribute header (family headers), padded.
    fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pad();
    }

    fn attr(&mut self, ty: u16, value: &[u8]) {
        let len = u16::try_from(NLA_HDRLEN + value.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.raw(value);
    }

    fn u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }

    fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    /// A NUL-terminated string attribute.
    fn str(&mut self, ty: u16, s: &[u8]) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s);
        v.push(0);
        self.attr(ty, &v);
    }

    fn ip(&mut self, ty: u16, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => self.attr(ty, &a.octets()),
            IpAddr::V6(a) => self.attr(ty, &a.octets()),
        }
    }

    /// A nested attribute whose contents `fill` writes.
    fn nest(&mut self, ty: u16, fill: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        self.attr(ty, &[]);
        fill(self);
        let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// Where `NLMSG_DONE` goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Done {
    /// In a datagram of its own (links, addresses, routes).
    Split,
    /// In the last datagram if it fits.
    Appended,
}

/// Packs a dump's messages into datagrams of at most [`DUMP_DATAGRAM_MAX`].
#[derive(Default)]
struct DumpWriter {
    datagrams: Vec<Vec<u8>>,
    current: Vec<u8>,
}

impl DumpWriter {
    fn push(&mut self, msg: &[u8]) {
        if !self.current.is_empty() && self.current.len() + msg.len() > DUMP_DATAGRAM_MAX {
            self.datagrams.push(mem::take(&mut self.current));
        }
        self.current.extend_from_slice(msg);
    }

    fn finish(mut self, ctx: Ctx, placement: Done) -> Vec<Vec<u8>> {
        let mut done = MsgWriter::new(NLMSG_DONE, NLM_F_MULTI, ctx.seq, ctx.port_id);
        done.raw(&0i32.to_ne_bytes());
        let done = done.finish();
        let split = placement == Done::Split && !self.current.is_empty();
        if split || self.current.len() + done.len() > DUMP_DATAGRAM_MAX {
            self.datagrams.push(mem::take(&mut self.current));
        }
        self.current.extend_from_slice(&done);
        self.datagrams.push(self.current);
        self.datagrams
    }
}

// ---------------------------------------------------------------------------
// Links.

/// The `RTM_GETLINK` attributes that select or shape the answer.
#[derive(Default)]
struct LinkRequest<'a> {
    name: Option<&'a [u8]>,
    ext_mask: u32,
    master: u32,
    kind: bool,
}

/// Parses `RTM_GETLINK` attributes, checking the ones it reads as
/// `ifla_policy` does (`ERANGE` for a name too long or a short u32).
fn parse_link_request(attr_bytes: &[u8]) -> Result<LinkRequest<'_>, Errno> {
    let mut out = LinkRequest::default();
    let mut alt_name = None;
    for (ty, value) in attrs(attr_bytes) {
        match ty {
            IFLA_IFNAME => out.name = Some(policy_string(value, IFNAME_MAX)?),
            IFLA_ALT_IFNAME => alt_name = Some(policy_string(value, 127)?),
            IFLA_EXT_MASK => out.ext_mask = policy_u32(value)?,
            IFLA_MASTER => out.master = policy_u32(value)?,
            IFLA_LINKINFO => out.kind = attrs(value).any(|(t, _)| t == IFLA_INFO_KIND),
            _ => {}
        }
    }
    out.name = out.name.or(alt_name);
    Ok(out)
}

/// An `NLA_STRING` with a maximum length: one trailing NUL does not count;
/// the name is what precedes the first NUL.
fn policy_string(value: &[u8], max: usize) -> Result<&[u8], Errno> {
    let s = value.strip_suffix(&[0]).unwrap_or(value);
    if value.is_empty() || s.len() > max {
        return Err(Errno::ERANGE);
    }
    Ok(s.split(|&b| b == 0).next().unwrap_or_default())
}

fn policy_u32(value: &[u8]) -> Result<u32, Errno> {
    read_u32(value, 0).ok_or(Errno::ERANGE)
}

/// `RTM_GETLINK` for one link (`rtnl_getlink()`).
fn get_link(payload: &[u8], nics: &[NicInfo], ctx: Ctx) -> Result<Vec<u8>, Errno> {
    let (Some(index), Some(attr_bytes)) = (read_u32(payload, 4), payload.get(16..)) else {
        return Err(Errno::EINVAL); // shorter than struct ifinfomsg
    };
    let index = i32::from_ne_bytes(index.to_ne_bytes());
    let req = parse_link_request(attr_bytes)?;
    let iface = if index > 0 {
        iface_by_index(nics, index)
    } else if let Some(name) = req.name {
        iface_by_name(nics, name)
    } else {
        return Err(Errno::EINVAL);
    };
    let iface = iface.ok_or(Errno::ENODEV)?;
    Ok(link_msg(
        &iface,
        ctx,
        0,
        req.ext_mask & RTEXT_FILTER_SKIP_STATS == 0,
    ))
}

/// `RTM_GETLINK` dump (`rtnl_dump_ifinfo()`, or the IPv6 or bridge view).
fn dump_links(payload: &[u8], nics: &[NicInfo], ctx: Ctx) -> Vec<Vec<u8>> {
    let mut dump = DumpWriter::default();
    match payload.first().copied() {
        Some(AF_BRIDGE) => return dump.finish(ctx, Done::Appended), // no bridge ports
        Some(AF_INET6) => {
            for iface in ifaces(nics) {
                dump.push(&inet6_link_msg(&iface, ctx));
            }
            return dump.finish(ctx, Done::Appended);
        }
        _ => {}
    }
    // A filter that fails to parse is ignored, as the kernel does.
    let req = match payload.get(16..).map(parse_link_request) {
        Some(Ok(req)) => req,
        _ => LinkRequest::default(),
    };
    if req.master == 0 && !req.kind {
        let stats = req.ext_mask & RTEXT_FILTER_SKIP_STATS == 0;
        for iface in ifaces(nics) {
            dump.push(&link_msg(&iface, ctx, NLM_F_MULTI, stats));
        }
    }
    dump.finish(ctx, Done::Split)
}

fn ifinfomsg(m: &mut MsgWriter, family: u8, iface: &Iface) {
    m.buf.extend_from_slice(&[family, 0]);
    m.buf.extend_from_slice(&iface.arphrd().to_ne_bytes());
    m.buf.extend_from_slice(&iface.index.to_ne_bytes());
    m.buf.extend_from_slice(&iface.flags().to_ne_bytes());
    m.buf.extend_from_slice(&0u32.to_ne_bytes()); // ifi_change
}

/// `RTM_NEWLINK` for one link, attributes in `rtnl_fill_ifinfo()`'s order.
/// Values are those of Linux's loopback device and of a plain Ethernet NIC
/// (veth-like limits); counters are zero.
fn link_msg(iface: &Iface, ctx: Ctx, flags: u16, stats: bool) -> Vec<u8> {
    let lo = iface.is_loopback();
    let mut m = MsgWriter::new(RTM_NEWLINK, flags, ctx.seq, ctx.port_id);
    ifinfomsg(&mut m, 0, iface);
    m.str(IFLA_IFNAME, iface.name());
    m.u32(IFLA_TXQLEN, TX_QUEUE_LEN);
    m.u8(
        IFLA_OPERSTATE,
        if lo { IF_OPER_UNKNOWN } else { IF_OPER_UP },
    );
    m.u8(IFLA_LINKMODE, 0);
    m.u32(IFLA_MTU, iface.mtu());
    m.u32(IFLA_MIN_MTU, if lo { 0 } else { 68 });
    m.u32(IFLA_MAX_MTU, if lo { 0 } else { 65535 });
    m.u32(IFLA_GROUP, 0);
    m.u32(IFLA_PROMISCUITY, 0);
    m.u32(IFLA_ALLMULTI, 0);
    m.u32(IFLA_NUM_TX_QUEUES, 1);
    m.u32(IFLA_GSO_MAX_SEGS, 65535);
    m.u32(IFLA_GSO_MAX_SIZE, 65536);
    m.u32(IFLA_GRO_MAX_SIZE, 65536);
    m.u32(IFLA_GSO_IPV4_MAX_SIZE, 65536);
    m.u32(IFLA_GRO_IPV4_MAX_SIZE, 65536);
    m.u32(IFLA_TSO_MAX_SIZE, 524_280);
    m.u32(IFLA_TSO_MAX_SEGS, 65535);
    m.u32(IFLA_NUM_RX_QUEUES, 1);
    m.u8(IFLA_CARRIER, 1);
    m.u32(IFLA_CARRIER_CHANGES, 0);
    m.u32(IFLA_CARRIER_UP_COUNT, 0);
    m.u32(IFLA_CARRIER_DOWN_COUNT, 0);
    m.u8(IFLA_PROTO_DOWN, 0);
    m.attr(IFLA_ADDRESS, &iface.hw_addr());
    m.attr(IFLA_BROADCAST, &iface.hw_broadcast());
    if stats {
        m.attr(IFLA_STATS64, &[0; STATS64_LEN]);
        m.attr(IFLA_STATS, &[0; STATS_LEN]);
    }
    m.str(IFLA_QDISC, b"noqueue");
    m.nest(IFLA_AF_SPEC, |m| {
        m.nest(u16::from(AF_INET6), |m| inet6_link_attrs(m, lo));
    });
    m.attr(IFLA_MAP, &[0; IFMAP_LEN]);
    m.finish()
}

/// `RTM_NEWLINK` of the AF_INET6 link dump (`inet6_fill_ifinfo()`).
fn inet6_link_msg(iface: &Iface, ctx: Ctx) -> Vec<u8> {
    let lo = iface.is_loopback();
    let mut m = MsgWriter::new(RTM_NEWLINK, NLM_F_MULTI, ctx.seq, ctx.port_id);
    ifinfomsg(&mut m, AF_INET6, iface);
    m.str(IFLA_IFNAME, iface.name());
    m.attr(IFLA_ADDRESS, &iface.hw_addr());
    m.u32(IFLA_MTU, iface.mtu());
    m.u8(
        IFLA_OPERSTATE,
        if lo { IF_OPER_UNKNOWN } else { IF_OPER_UP },
    );
    m.nest(IFLA_PROTINFO, |m| inet6_link_attrs(m, lo));
    m.finish()
}

/// A link's IPv6 attributes (`inet6_fill_ifla6_attrs()`): flags, cache info,
/// token and address generation mode (EUI-64); not the per-link sysctls and
/// counters.
fn inet6_link_attrs(m: &mut MsgWriter, lo: bool) {
    m.u32(
        IFLA_INET6_FLAGS,
        if lo { IF_READY } else { IF_READY | IF_RS_SENT },
    );
    // struct ifla_cacheinfo: max_reasm_len, tstamp, reachable_time, retrans_time
    let cache: Vec<u8> = [65535u32, 0, 30_000, 1000]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    m.attr(IFLA_INET6_CACHEINFO, &cache);
    m.attr(IFLA_INET6_TOKEN, &[0; 16]);
    m.u8(IFLA_INET6_ADDR_GEN_MODE, 0);
}

// ---------------------------------------------------------------------------
// Addresses.

/// `RTM_GETADDR` dump: IPv4 then IPv6, or one of them.
fn dump_addrs(family: u8, nics: &[NicInfo], ctx: Ctx) -> Vec<Vec<u8>> {
    let mut dump = DumpWriter::default();
    if family != AF_INET6 {
        for iface in ifaces(nics) {
            for a in iface.v4_addrs() {
                dump.push(&v4_addr_msg(&iface, &a, ctx));
            }
        }
    }
    if family != AF_INET {
        for iface in ifaces(nics) {
            for (addr, prefix_len) in iface.v6_addrs() {
                dump.push(&v6_addr_msg(&iface, addr, prefix_len, ctx));
            }
        }
    }
    // The kernel's AF_INET6 address dump appends DONE; the others split it.
    dump.finish(
        ctx,
        if family == AF_INET6 {
            Done::Appended
        } else {
            Done::Split
        },
    )
}

fn ifaddrmsg(m: &mut MsgWriter, family: u8, prefix_len: u8, flags: u32, scope: u8, index: u32) {
    m.raw(&[family, prefix_len, flags.to_le_bytes()[0], scope]);
    m.buf.extend_from_slice(&index.to_ne_bytes());
}

/// `struct ifa_cacheinfo` of a permanent address: lifetimes forever, time
/// stamps 0 (there is no clock here).
fn ifa_cacheinfo() -> [u8; 16] {
    let mut c = [0; 16];
    c[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
    c[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    c
}

/// `RTM_NEWADDR` for an IPv4 address (`inet_fill_ifaddr()`).
fn v4_addr_msg(iface: &Iface, a: &V4Addr, ctx: Ctx) -> Vec<u8> {
    let flags = IFA_F_PERMANENT | if a.secondary { IFA_F_SECONDARY } else { 0 };
    let scope = if a.addr.is_loopback() {
        RT_SCOPE_HOST
    } else {
        RT_SCOPE_UNIVERSE
    };
    let mut m = MsgWriter::new(RTM_NEWADDR, NLM_F_MULTI, ctx.seq, ctx.port_id);
    ifaddrmsg(&mut m, AF_INET, a.prefix_len, flags, scope, iface.index);
    if !a.addr.is_unspecified() {
        m.attr(IFA_ADDRESS, &a.addr.octets());
        m.attr(IFA_LOCAL, &a.addr.octets());
    }
    if let Some(brd) = a.broadcast {
        m.attr(IFA_BROADCAST, &brd.octets());
    }
    m.str(IFA_LABEL, iface.name());
    m.u32(IFA_FLAGS, flags);
    m.attr(IFA_CACHEINFO, &ifa_cacheinfo());
    m.finish()
}

/// `RTM_NEWADDR` for an IPv6 address (`inet6_fill_ifaddr()`). `::1` and
/// link-local addresses are marked as the kernel's own (`IFA_PROTO`), as
/// Linux creates them.
fn v6_addr_msg(iface: &Iface, addr: Ipv6Addr, prefix_len: u8, ctx: Ctx) -> Vec<u8> {
    let scope = v6_rt_scope(&addr);
    let mut m = MsgWriter::new(RTM_NEWADDR, NLM_F_MULTI, ctx.seq, ctx.port_id);
    ifaddrmsg(
        &mut m,
        AF_INET6,
        prefix_len,
        IFA_F_PERMANENT,
        scope,
        iface.index,
    );
    m.attr(IFA_ADDRESS, &addr.octets());
    m.attr(IFA_CACHEINFO, &ifa_cacheinfo());
    m.u32(IFA_FLAGS, IFA_F_PERMANENT);
    if addr.is_loopback() && iface.is_loopback() {
        m.u8(IFA_PROTO, IFAPROT_KERNEL_LO);
    } else if scope == RT_SCOPE_LINK {
        m.u8(IFA_PROTO, IFAPROT_KERNEL_LL);
    }
    m.finish()
}

// ---------------------------------------------------------------------------
// Routes.

/// One FIB entry, as `ip route show table all` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    table: u8,
    dst: IpAddr,
    dst_len: u8,
    protocol: u8,
    scope: u8,
    kind: u8,
    prefsrc: Option<Ipv4Addr>,
    gateway: Option<IpAddr>,
    oif: u32,
    /// IPv6 only (IPv4 routes here have metric 0, which is not sent).
    metric: u32,
}

impl Route {
    fn push_unique(routes: &mut Vec<Route>, r: Route) {
        if !routes.contains(&r) {
            routes.push(r);
        }
    }
}

/// `RTM_GETROUTE` dump: IPv4 (main then local table), then IPv6.
fn dump_routes(payload: &[u8], nics: &[NicInfo], ctx: Ctx) -> Vec<Vec<u8>> {
    let family = payload.first().copied().unwrap_or(0);
    // RTM_F_PREFIX asks for routes learnt from router advertisements: none.
    let prefix_only = read_u32(payload, 8).is_some_and(|f| f & RTM_F_PREFIX != 0);
    let mut dump = DumpWriter::default();
    if !prefix_only {
        if family != AF_INET6 {
            for r in v4_routes(nics) {
                dump.push(&route_msg(&r, ctx));
            }
        }
        if family != AF_INET {
            for r in v6_routes(nics) {
                dump.push(&route_msg(&r, ctx));
            }
        }
    }
    dump.finish(ctx, Done::Split)
}

/// The IPv4 FIB `fib_add_ifaddr()` builds from the addresses, plus the
/// gateway routes; each table in trie order (by key, longer prefix first).
fn v4_routes(nics: &[NicInfo]) -> Vec<Route> {
    let mut main = Vec::new();
    let mut local = Vec::new();
    let connected = |table, dst, dst_len, scope, kind, prefsrc, oif| Route {
        table,
        dst: IpAddr::V4(dst),
        dst_len,
        protocol: RTPROT_KERNEL,
        scope,
        kind,
        prefsrc: Some(prefsrc),
        gateway: None,
        oif,
        metric: 0,
    };
    for iface in ifaces(nics) {
        let oif = iface.index;
        for a in iface.v4_addrs() {
            let src = a.primary;
            let host = (RT_TABLE_LOCAL, RT_SCOPE_HOST, RTN_LOCAL);
            let r = connected(host.0, a.addr, 32, host.1, host.2, src, oif);
            Route::push_unique(&mut local, r);
            if let Some(brd) = a.broadcast.filter(|b| *b != Ipv4Addr::BROADCAST) {
                let r = connected(
                    RT_TABLE_LOCAL,
                    brd,
                    32,
                    RT_SCOPE_LINK,
                    RTN_BROADCAST,
                    src,
                    oif,
                );
                Route::push_unique(&mut local, r);
            }
            let net = a.network();
            if a.secondary || net.octets()[0] == 0 || a.prefix_len == 32 {
                continue;
            }
            // The subnet: on lo a local route, elsewhere a link route in main.
            let r = if iface.is_loopback() {
                connected(host.0, net, a.prefix_len, host.1, host.2, src, oif)
            } else {
                connected(
                    RT_TABLE_MAIN,
                    net,
                    a.prefix_len,
                    RT_SCOPE_LINK,
                    RTN_UNICAST,
                    src,
                    oif,
                )
            };
            Route::push_unique(
                if iface.is_loopback() {
                    &mut local
                } else {
                    &mut main
                },
                r,
            );
            if a.prefix_len < 31 {
                let brd = Ipv4Addr::from(u32::from(net) | !v4_mask(a.prefix_len));
                let r = connected(
                    RT_TABLE_LOCAL,
                    brd,
                    32,
                    RT_SCOPE_LINK,
                    RTN_BROADCAST,
                    src,
                    oif,
                );
                Route::push_unique(&mut local, r);
            }
        }
        let via = |dst: Ipv4Addr, dst_len: u8, gw: Ipv4Addr| Route {
            table: RT_TABLE_MAIN,
            dst: IpAddr::V4(Ipv4Addr::from(v4_network(dst, dst_len))),
            dst_len,
            protocol: RTPROT_BOOT,
            scope: RT_SCOPE_UNIVERSE,
            kind: RTN_UNICAST,
            prefsrc: None,
            gateway: Some(IpAddr::V4(gw)),
            oif,
            metric: 0,
        };
        if let Some(gw) = iface.nic.gateway_v4 {
            Route::push_unique(&mut main, via(Ipv4Addr::UNSPECIFIED, 0, gw));
        }
        for r in &iface.nic.routes {
            if let (IpAddr::V4(dst), IpAddr::V4(gw)) = (r.dst.addr, r.gateway) {
                Route::push_unique(&mut main, via(dst, r.dst.prefix_len.min(32), gw));
            }
        }
        // `ip route add DST dev NIC`: no gateway, link scope.
        for o in &iface.nic.onlink {
            if let IpAddr::V4(dst) = o.addr {
                let dst_len = o.prefix_len.min(32);
                Route::push_unique(
                    &mut main,
                    Route {
                        scope: RT_SCOPE_LINK,
                        gateway: None,
                        ..via(dst, dst_len, Ipv4Addr::UNSPECIFIED)
                    },
                );
            }
        }
    }
    let key = |r: &Route| {
        let dst = match r.dst {
            IpAddr::V4(a) => u32::from(a),
            IpAddr::V6(_) => 0,
        };
        (dst, Reverse(r.dst_len))
    };
    main.sort_by_key(key);
    local.sort_by_key(key);
    main.append(&mut local);
    main
}

/// The IPv6 FIB addrconf builds (prefix routes, local routes, `ff00::/8`
/// multicast on each non-loopback link with IPv6), plus the gateway routes;
/// each table in the order of the kernel's tree walk.
fn v6_routes(nics: &[NicInfo]) -> Vec<Route> {
    let mut main = Vec::new();
    let mut local = Vec::new();
    let route = |table, dst: Ipv6Addr, dst_len, protocol, kind, gateway, oif, metric| Route {
        table,
        dst: IpAddr::V6(v6_network(dst, dst_len)),
        dst_len,
        protocol,
        scope: RT_SCOPE_UNIVERSE,
        kind,
        prefsrc: None,
        gateway,
        oif,
        metric,
    };
    for iface in ifaces(nics) {
        let oif = iface.index;
        let addrs = iface.v6_addrs();
        for &(addr, prefix_len) in &addrs {
            let r = route(
                RT_TABLE_LOCAL,
                addr,
                128,
                RTPROT_KERNEL,
                RTN_LOCAL,
                None,
                oif,
                0,
            );
            Route::push_unique(&mut local, r);
            if prefix_len < 128 {
                let prio = IP6_RT_PRIO_ADDRCONF;
                let r = route(
                    RT_TABLE_MAIN,
                    addr,
                    prefix_len,
                    RTPROT_KERNEL,
                    RTN_UNICAST,
                    None,
                    oif,
                    prio,
                );
                Route::push_unique(&mut main, r);
            }
        }
        if !addrs.is_empty() && !iface.is_loopback() {
            let ff00 = Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0);
            let prio = IP6_RT_PRIO_ADDRCONF;
            let r = route(
                RT_TABLE_LOCAL,
                ff00,
                8,
                RTPROT_KERNEL,
                RTN_MULTICAST,
                None,
                oif,
                prio,
            );
            Route::push_unique(&mut local, r);
        }
        let via = |dst, dst_len, gw: Ipv6Addr| {
            let gw = Some(IpAddr::V6(gw));
            route(
                RT_TABLE_MAIN,
                dst,
                dst_len,
                RTPROT_BOOT,
                RTN_UNICAST,
                gw,
                oif,
                IP6_RT_PRIO_USER,
            )
        };
        if let Some(gw) = iface.nic.gateway_v6 {
            Route::push_unique(&mut main, via(Ipv6Addr::UNSPECIFIED, 0, gw));
        }
        for r in &iface.nic.routes {
            if let (IpAddr::V6(dst), IpAddr::V6(gw)) = (r.dst.addr, r.gateway) {
                Route::push_unique(&mut main, via(dst, r.dst.prefix_len.min(128), gw));
            }
        }
    }
    main.sort_by(fib6_walk_order);
    local.sort_by(fib6_walk_order);
    main.append(&mut local);
    main
}

/// The order of `fib6_walk()`: a post-order walk of the prefix tree, so a
/// prefix comes after the longer prefixes it covers, and siblings in address
/// order.
fn fib6_walk_order(a: &Route, b: &Route) -> Ordering {
    let bits = |r: &Route| match r.dst {
        IpAddr::V6(a) => u128::from(a),
        IpAddr::V4(_) => 0,
    };
    let common = v6_mask(a.dst_len.min(b.dst_len));
    (bits(a) & common)
        .cmp(&(bits(b) & common))
        .then(b.dst_len.cmp(&a.dst_len))
}

/// `RTM_NEWROUTE` for one FIB entry (`fib_dump_info()` / `rt6_fill_node()`).
fn route_msg(r: &Route, ctx: Ctx) -> Vec<u8> {
    fib_entry_msg(r, r.table, NLM_F_MULTI, ctx)
}

/// A FIB entry as dumped, or as `RTM_F_FIB_MATCH` returns it (with the
/// table the lookup reports, and no `NLM_F_MULTI`).
fn fib_entry_msg(r: &Route, table: u8, flags: u16, ctx: Ctx) -> Vec<u8> {
    let family = if r.dst.is_ipv4() { AF_INET } else { AF_INET6 };
    let mut m = MsgWriter::new(RTM_NEWROUTE, flags, ctx.seq, ctx.port_id);
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
    m.raw(&[family, r.dst_len, 0, 0, table, r.protocol, r.scope, r.kind]);
    m.raw(&0u32.to_ne_bytes());
    m.u32(RTA_TABLE, u32::from(table));
    if r.dst_len > 0 {
        m.ip(RTA_DST, r.dst);
    }
    if family == AF_INET {
        if let Some(src) = r.prefsrc {
            m.attr(RTA_PREFSRC, &src.octets());
        }
        if let Some(gw) = r.gateway {
            m.ip(RTA_GATEWAY, gw);
        }
        m.u32(RTA_OIF, r.oif);
    } else {
        m.u32(RTA_PRIORITY, r.metric);
        if let Some(gw) = r.gateway {
            m.ip(RTA_GATEWAY, gw);
        }
        m.u32(RTA_OIF, r.oif);
        m.attr(RTA_CACHEINFO, &[0; RTA_CACHEINFO_LEN]);
        m.u8(RTA_PREF, 0); // ICMPV6_ROUTER_PREF_MEDIUM
    }
    m.finish()
}

// ---------------------------------------------------------------------------
// Route lookups (`ip route get`).

/// What `RTM_GETROUTE` without `NLM_F_DUMP` asks.
struct RouteQuery {
    dst: IpAddr,
    src: Option<IpAddr>,
    oif: Option<u32>,
    uid: u32,
    fib_match: bool,
}

/// `RTM_GETROUTE` for one destination (`inet_rtm_getroute()`,
/// `inet6_rtm_getroute()`).
fn get_route(payload: &[u8], nics: &[NicInfo], ctx: Ctx) -> Result<Vec<u8>, Errno> {
    let family = payload.first().copied().unwrap_or(0);
    if family != AF_INET && family != AF_INET6 {
        return Err(Errno::EOPNOTSUPP); // no AF_UNSPEC handler
    }
    let (Some(rtm_flags), Some(attr_bytes)) = (read_u32(payload, 8), payload.get(12..)) else {
        return Err(Errno::EINVAL); // shorter than struct rtmsg
    };
    let v4 = family == AF_INET;
    let addr = |value: &[u8]| -> Result<IpAddr, Errno> {
        if v4 {
            read_bytes::<4>(value, 0)
                .map(IpAddr::from)
                .ok_or(Errno::ERANGE)
        } else {
            read_bytes::<16>(value, 0)
                .map(IpAddr::from)
                .ok_or(Errno::EINVAL)
        }
    };
    let unspecified = if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let mut q = RouteQuery {
        dst: unspecified,
        src: None,
        oif: None,
        uid: 0,
        fib_match: rtm_flags & RTM_F_FIB_MATCH != 0,
    };
    for (ty, value) in attrs(attr_bytes) {
        match ty {
            RTA_DST => q.dst = addr(value)?,
            RTA_SRC => q.src = Some(addr(value)?),
            RTA_OIF => q.oif = Some(policy_u32(value)?).filter(|&o| o != 0),
            RTA_UID => q.uid = policy_u32(value)?,
            RTA_IIF if policy_u32(value)? != 0 => return Err(Errno::EOPNOTSUPP),
            _ => {}
        }
    }
    if let Some(oif) = q.oif {
        iface_by_index(nics, i32::try_from(oif).unwrap_or(-1)).ok_or(Errno::ENODEV)?;
    }
    match (q.dst, q.src) {
        (IpAddr::V4(dst), src) => {
            let src = src.and_then(|s| match s {
                IpAddr::V4(s) => Some(s),
                IpAddr::V6(_) => None,
            });
            get_route_v4(&q, dst, src, nics, ctx)
        }
        (IpAddr::V6(dst), src) => {
            let src = src.and_then(|s| match s {
                IpAddr::V6(s) => Some(s),
                IpAddr::V4(_) => None,
            });
            get_route_v6(&q, dst, src, nics, ctx)
        }
    }
}

/// The longest-prefix match in `table` (first of equals, lowest metric first
/// for IPv6), optionally only through `oif`.
fn longest_match(routes: &[Route], table: u8, dst: IpAddr, oif: Option<u32>) -> Option<&Route> {
    let covers = |r: &Route| match (r.dst, dst) {
        (IpAddr::V4(net), IpAddr::V4(d)) => v4_network(d, r.dst_len) == u32::from(net),
        (IpAddr::V6(net), IpAddr::V6(d)) => v6_network(d, r.dst_len) == net,
        _ => false,
    };
    routes
        .iter()
        .filter(|r| r.table == table && covers(r) && oif.is_none_or(|o| r.oif == o))
        .min_by_key(|r| (Reverse(r.dst_len), r.metric))
}

/// `struct rta_cacheinfo` of a fresh cache entry: one reference from the
/// lookup, one from the socket.
fn rta_cacheinfo() -> [u8; RTA_CACHEINFO_LEN] {
    let mut c = [0; RTA_CACHEINFO_LEN];
    c[..4].copy_from_slice(&2u32.to_ne_bytes());
    c
}

fn get_route_v4(
    q: &RouteQuery,
    dst: Ipv4Addr,
    src: Option<Ipv4Addr>,
    nics: &[NicInfo],
    ctx: Ctx,
) -> Result<Vec<u8>, Errno> {
    let all_v4: Vec<(Iface, V4Addr)> = ifaces(nics)
        .flat_map(|i| i.v4_addrs().into_iter().map(move |a| (i, a)))
        .collect();
    if let Some(s) = src {
        // The source must be ours (ip_route_output_key_hash_rcu()).
        if !all_v4.iter().any(|(_, a)| a.addr == s) {
            return Err(Errno::ENETUNREACH);
        }
    }
    let routes = v4_routes(nics);
    let dst_ip = IpAddr::V4(dst);
    let local = longest_match(&routes, RT_TABLE_LOCAL, dst_ip, None);
    let route = local.or_else(|| longest_match(&routes, RT_TABLE_MAIN, dst_ip, q.oif));
    if dst.is_unspecified() && !q.fib_match {
        // 0.0.0.0 means this host: loopback, from 127.0.0.1.
        let lo = Route {
            table: RT_TABLE_MAIN,
            dst: dst_ip,
            dst_len: 32,
            protocol: 0,
            scope: RT_SCOPE_UNIVERSE,
            kind: RTN_LOCAL,
            prefsrc: Some(Ipv4Addr::LOCALHOST),
            gateway: None,
            oif: 1,
            metric: 0,
        };
        return Ok(cached_v4(q, &lo, RTCF_LOCAL, src, ctx));
    }
    let route = route.ok_or(Errno::ENETUNREACH)?;
    if q.fib_match {
        // Without custom rules the kernel looks up one merged table: main.
        return Ok(fib_entry_msg(route, RT_TABLE_MAIN, 0, ctx));
    }
    let mut r = *route;
    r.table = RT_TABLE_MAIN;
    r.protocol = 0;
    r.scope = RT_SCOPE_UNIVERSE;
    r.dst = dst_ip;
    r.dst_len = 32;
    let flags = match r.kind {
        RTN_LOCAL => {
            r.oif = 1; // delivered through lo
            RTCF_LOCAL
        }
        RTN_BROADCAST => RTCF_BROADCAST | RTCF_LOCAL,
        _ if dst == Ipv4Addr::BROADCAST => {
            r.kind = RTN_BROADCAST;
            r.gateway = None;
            RTCF_BROADCAST | RTCF_LOCAL
        }
        _ if dst.is_multicast() => {
            r.kind = RTN_MULTICAST;
            r.gateway = None;
            // Every multicast link has joined the all-hosts group.
            RTCF_MULTICAST
                | if dst == Ipv4Addr::new(224, 0, 0, 1) {
                    RTCF_LOCAL
                } else {
                    0
                }
        }
        _ => 0,
    };
    if r.prefsrc.is_none() {
        r.prefsrc = select_v4_src(&all_v4, r.oif, r.gateway);
    }
    Ok(cached_v4(q, &r, flags, src, ctx))
}

/// `inet_select_addr()`: a primary address of the output link, one on the
/// gateway's subnet first; else one of another link that is not host-scoped.
fn select_v4_src(all: &[(Iface, V4Addr)], oif: u32, gateway: Option<IpAddr>) -> Option<Ipv4Addr> {
    let on_link = |(i, a): &&(Iface, V4Addr)| i.index == oif && !a.secondary;
    let in_subnet = |(_, a): &&(Iface, V4Addr)| match gateway {
        Some(IpAddr::V4(gw)) => v4_network(gw, a.prefix_len) == u32::from(a.network()),
        _ => false,
    };
    all.iter()
        .filter(on_link)
        .find(in_subnet)
        .or_else(|| all.iter().find(on_link))
        .or_else(|| all.iter().find(|(_, a)| !a.addr.is_loopback()))
        .map(|(_, a)| a.addr)
}

/// The IPv4 answer: a route cache entry (`rt_fill_info()`).
fn cached_v4(q: &RouteQuery, r: &Route, rtcf: u32, src: Option<Ipv4Addr>, ctx: Ctx) -> Vec<u8> {
    let mut m = MsgWriter::new(RTM_NEWROUTE, 0, ctx.seq, ctx.port_id);
    let src_len = if src.is_some() { 32 } else { 0 };
    m.raw(&[
        AF_INET,
        32,
        src_len,
        0,
        RT_TABLE_MAIN,
        0,
        RT_SCOPE_UNIVERSE,
        r.kind,
    ]);
    m.raw(&(RTM_F_CLONED | rtcf).to_ne_bytes());
    m.u32(RTA_TABLE, u32::from(RT_TABLE_MAIN));
    m.ip(RTA_DST, q.dst);
    if let Some(s) = src {
        m.attr(RTA_SRC, &s.octets());
    }
    m.u32(RTA_OIF, r.oif);
    if let (None, Some(p)) = (src, r.prefsrc) {
        m.attr(RTA_PREFSRC, &p.octets());
    }
    if let Some(gw) = r.gateway {
        m.ip(RTA_GATEWAY, gw);
    }
    m.u32(RTA_UID, q.uid);
    m.attr(RTA_CACHEINFO, &rta_cacheinfo());
    m.finish()
}

fn get_route_v6(
    q: &RouteQuery,
    dst: Ipv6Addr,
    src: Option<Ipv6Addr>,
    nics: &[NicInfo],
    ctx: Ctx,
) -> Result<Vec<u8>, Errno> {
    let routes = v6_routes(nics);
    let dst_ip = IpAddr::V6(dst);
    let route = longest_match(&routes, RT_TABLE_LOCAL, dst_ip, None)
        .or_else(|| longest_match(&routes, RT_TABLE_MAIN, dst_ip, q.oif))
        .ok_or(Errno::ENETUNREACH)?;
    if q.fib_match {
        return Ok(fib_entry_msg(route, route.table, 0, ctx));
    }
    let oif = if route.kind == RTN_LOCAL {
        1
    } else {
        route.oif
    };
    let prefsrc = select_v6_src(nics, route.oif, dst);
    let mut m = MsgWriter::new(RTM_NEWROUTE, 0, ctx.seq, ctx.port_id);
    m.raw(&[
        AF_INET6,
        128,
        128,
        0,
        route.table,
        route.protocol,
        RT_SCOPE_UNIVERSE,
        route.kind,
    ]);
    m.raw(&0u32.to_ne_bytes());
    m.u32(RTA_TABLE, u32::from(route.table));
    m.attr(RTA_DST, &dst.octets());
    m.attr(RTA_SRC, &src.unwrap_or(Ipv6Addr::UNSPECIFIED).octets());
    if let Some(p) = prefsrc {
        m.attr(RTA_PREFSRC, &p.octets());
    }
    m.u32(RTA_PRIORITY, route.metric);
    if let Some(gw) = route.gateway {
        m.ip(RTA_GATEWAY, gw);
    }
    m.u32(RTA_OIF, oif);
    m.attr(RTA_CACHEINFO, &rta_cacheinfo());
    m.u8(RTA_PREF, 0);
    Ok(m.finish())
}

/// The scope of an IPv6 destination, as RFC 6724 ranks them: a multicast
/// address's own scope field, else that of the unicast address.
fn v6_dst_scope(addr: &Ipv6Addr) -> u8 {
    let seg0 = addr.segments()[0];
    if seg0 >> 8 == 0xff {
        (seg0 & 0xf) as u8
    } else {
        v6_src_scope(addr)
    }
}

/// The policy table's label (Linux's default `ip addrlabel` table).
fn v6_label(addr: &Ipv6Addr) -> u8 {
    const TABLE: [(u128, u8, u8); 10] = [
        (1, 128, 0),                // ::1/128
        (0x2001_0010 << 96, 28, 7), // 2001:10::/28
        (0x2001 << 112, 32, 6),     // 2001::/32
        (0x0000_ffff << 32, 96, 4), // ::ffff:0:0/96
        (0, 96, 3),                 // ::/96
        (0x3ffe << 112, 16, 12),    // 3ffe::/16
        (0x2002 << 112, 16, 2),     // 2002::/16
        (0xfec0 << 112, 10, 11),    // fec0::/10
        (0xfc00 << 112, 7, 5),      // fc00::/7
        (0, 0, 1),                  // ::/0
    ];
    let bits = u128::from(*addr);
    TABLE
        .iter()
        .filter(|(prefix, len, _)| bits & v6_mask(*len) == *prefix)
        .max_by_key(|(_, len, _)| *len)
        .map_or(1, |(_, _, label)| *label)
}

/// `ipv6_dev_get_saddr()`: the dst itself if it is ours; then RFC 6724's
/// rules as Linux applies them: appropriate scope, the outgoing link, the
/// same label, the longest matching prefix (up to the address's prefix).
/// Link-scoped destinations only consider the outgoing link.
fn select_v6_src(nics: &[NicInfo], oif: u32, dst: Ipv6Addr) -> Option<Ipv6Addr> {
    let dst_scope = v6_dst_scope(&dst);
    let dst_label = v6_label(&dst);
    let link_scoped = dst_scope <= 0x2;
    let candidates = ifaces(nics)
        .filter(|i| !link_scoped || i.index == oif)
        .flat_map(|i| {
            i.v6_addrs()
                .into_iter()
                .map(move |(a, len)| (i.index, a, len))
        });
    let score = |&(index, a, len): &(u32, Ipv6Addr, u8)| {
        let scope = v6_src_scope(&a);
        // Prefer the smallest scope that reaches dst, else the largest.
        let scope_rank = if scope >= dst_scope {
            (1, Reverse(scope), 0)
        } else {
            (0, Reverse(0), scope)
        };
        let common = (u128::from(a) ^ u128::from(dst))
            .leading_zeros()
            .min(u32::from(len));
        (
            a == dst,
            scope_rank,
            index == oif,
            v6_label(&a) == dst_label,
            common,
        )
    };
    // The first of the best, as the kernel keeps a candidate until one beats it.
    let mut best: Option<(u32, Ipv6Addr, u8)> = None;
    for c in candidates {
        if best.is_none_or(|b| score(&c) > score(&b)) {
            best = Some(c);
        }
    }
    best.map(|(_, a, _)| a)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use netstack::{GatewayRoute, IfAddr, NicInfo};

    use super::*;

    const PORT: u32 = 0x1234;
    const SEQ: u32 = 42;

    fn ifaddr(addr: &str, prefix_len: u8) -> IfAddr {
        IfAddr {
            addr: addr.parse().unwrap(),
            prefix_len,
        }
    }

    /// Linux's `lo` in a new namespace.
    pub(crate) fn lo() -> NicInfo {
        NicInfo {
            name: "lo".into(),
            mtu: 65536,
            mac: None,
            addrs: vec![ifaddr("127.0.0.1", 8), ifaddr("::1", 128)],
            gateway_v4: None,
            gateway_v6: None,
            routes: vec![],
            onlink: vec![],
        }
    }

    /// The NIC the golden captures were taken with (a veth in a namespace,
    /// configured with `ip` to match).
    pub(crate) fn eth0() -> NicInfo {
        NicInfo {
            name: "eth0".into(),
            mtu: 1500,
            mac: Some([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
            addrs: vec![
                ifaddr("10.0.2.15", 24),
                ifaddr("fd00::15", 64),
                ifaddr("fe80::42:acff:fe11:2", 64),
            ],
            gateway_v4: Some(Ipv4Addr::new(10, 0, 2, 2)),
            gateway_v6: Some("fd00::2".parse().unwrap()),
            routes: vec![
                GatewayRoute {
                    dst: ifaddr("192.168.5.0", 24),
                    gateway: "10.0.2.3".parse().unwrap(),
                },
                GatewayRoute {
                    dst: ifaddr("2001:db8:1::", 48),
                    gateway: "fd00::3".parse().unwrap(),
                },
            ],
            onlink: vec![],
        }
    }

    pub(crate) fn nics() -> Vec<NicInfo> {
        vec![lo(), eth0()]
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// One request message.
    fn req(ty: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        req_seq(ty, flags, SEQ, payload)
    }

    fn req_seq(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = MsgWriter::new(ty, flags, seq, 0);
        m.buf.extend_from_slice(payload);
        m.finish()
    }

    fn nla(ty: u16, value: &[u8]) -> Vec<u8> {
        let mut m = MsgWriter { buf: Vec::new() };
        m.attr(ty, value);
        m.buf
    }

    fn ifinfo(family: u8, index: i32) -> Vec<u8> {
        let mut b = vec![family, 0, 0, 0];
        b.extend_from_slice(&index.to_ne_bytes());
        b.extend_from_slice(&[0; 8]);
        b
    }

    /// A reply message, split into its header fields and payload.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Reply {
        ty: u16,
        flags: u16,
        seq: u32,
        pid: u32,
        payload: Vec<u8>,
    }

    impl Reply {
        fn errno(&self) -> i32 {
            assert_eq!(self.ty, NLMSG_ERROR);
            i32::from_ne_bytes(self.payload[..4].try_into().unwrap())
        }
    }

    /// Splits a datagram into its messages, checking that they tile it.
    fn split(dgram: &[u8]) -> Vec<Reply> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < dgram.len() {
            let len = read_u32(dgram, off).unwrap() as usize;
            assert!(
                len >= NLMSG_HDRLEN && off + len <= dgram.len(),
                "bad framing"
            );
            assert_eq!(len % 4, 0, "messages are padded");
            let m = &dgram[off..off + len];
            out.push(Reply {
                ty: read_u16(m, 4).unwrap(),
                flags: read_u16(m, 6).unwrap(),
                seq: read_u32(m, 8).unwrap(),
                pid: read_u32(m, 12).unwrap(),
                payload: m[16..].to_vec(),
            });
            off += len;
        }
        out
    }

    fn all(dgrams: &[Vec<u8>]) -> Vec<Reply> {
        dgrams.iter().flat_map(|d| split(d)).collect()
    }

    fn attr_list(b: &[u8]) -> Vec<(u16, Vec<u8>)> {
        attrs(b).map(|(t, v)| (t, v.to_vec())).collect()
    }

    fn is_done(r: &Reply) -> bool {
        r.ty == NLMSG_DONE && r.flags == NLM_F_MULTI && r.payload == [0; 4]
    }

    // --- golden bytes from Linux 6.18 (pid set to PORT, address time stamps zeroed) ---

    const KERNEL_ADDR_DUMP: [&str; 2] = [
        "4c000000140002002a00000034120000020880fe01000000080001007f000001080002007f000001070003006c6f0000080008008000000014000600ffffffffffffffff000000000000000058000000140002002a000000341200000218800002000000080001000a00020f080002000a00020f080004000a0002ff090003006574683000000000080008008000000014000600ffffffffffffffff000000000000000050000000140002002a000000341200000a8080fe01000000140001000000000000000000000000000000000114000600ffffffffffffffff0000000000000000080008008000000005000b000100000048000000140002002a000000341200000a4080000200000014000100fd00000000000000000000000000001514000600ffffffffffffffff0000000000000000080008008000000050000000140002002a000000341200000a4080fd0200000014000100fe800000000000000042acfffe11000214000600ffffffffffffffff0000000000000000080008008000000005000b0003000000",
        "14000000030002002a0000003412000000000000",
    ];

    const KERNEL_ADDR6_DUMP: &str = "50000000140002002a000000341200000a8080fe01000000140001000000000000000000000000000000000114000600ffffffffffffffff0000000000000000080008008000000005000b000100000048000000140002002a000000341200000a4080000200000014000100fd00000000000000000000000000001514000600ffffffffffffffff0000000000000000080008008000000050000000140002002a000000341200000a4080fd0200000014000100fe800000000000000042acfffe11000214000600ffffffffffffffff0000000000000000080008008000000005000b000300000014000000030002002a0000003412000000000000";

    const KERNEL_ROUTE_DUMP: [&str; 2] = [
        "34000000180002002a0000003412000002000000fe0300010000000008000f00fe000000080005000a00020208000400020000003c000000180002002a0000003412000002180000fe02fd010000000008000f00fe000000080001000a000200080007000a00020f08000400020000003c000000180002002a0000003412000002180000fe0300010000000008000f00fe00000008000100c0a80500080005000a00020308000400020000003c000000180002002a0000003412000002200000ff02fe020000000008000f00ff000000080001000a00020f080007000a00020f08000400020000003c000000180002002a0000003412000002200000ff02fd030000000008000f00ff000000080001000a0002ff080007000a00020f08000400020000003c000000180002002a0000003412000002080000ff02fe020000000008000f00ff000000080001007f000000080007007f00000108000400010000003c000000180002002a0000003412000002200000ff02fe020000000008000f00ff000000080001007f000001080007007f00000108000400010000003c000000180002002a0000003412000002200000ff02fd030000000008000f00ff000000080001007fffffff080007007f000001080004000100000088000000180002002a000000341200000a300000fe0300010000000008000f00fe0000001400010020010db8000100000000000000000000080006000004000014000500fd000000000000000000000000000003080004000200000024000c000000000000000000000000000000000000000000000000000000000000000000050014000000000074000000180002002a000000341200000a400000fe0200010000000008000f00fe00000014000100fd0000000000000000000000000000000800060000010000080004000200000024000c000000000000000000000000000000000000000000000000000000000000000000050014000000000074000000180002002a000000341200000a400000fe0200010000000008000f00fe00000014000100fe8000000000000000000000000000000800060000010000080004000200000024000c000000000000000000000000000000000000000000000000000000000000000000050014000000000074000000180002002a000000341200000a000000fe0300010000000008000f00fe000000080006000004000014000500fd000000000000000000000000000002080004000200000024000c000000000000000000000000000000000000000000000000000000000000000000050014000000000074000000180002002a000000341200000a800000ff0200020000000008000f00ff00000014000100000000000000000000000000000000010800060000000000080004000100000024000c000000000000000000000000000000000000000000000000000000000000000000050014000000000074000000180002002a000000341200000a800000ff0200020000000008000f00ff00000014000100fd0000000000000000000000000000150800060000000000080004000200000024000c000000000000000000000000000000000000000000000000000000000000000000050014000000000074000000180002002a000000341200000a800000ff0200020000000008000f00ff00000014000100fe800000000000000042acfffe1100020800060000000000080004000200000024000c000000000000000000000000000000000000000000000000000000000000000000050014000000000074000000180002002a000000341200000a080000ff0200050000000008000f00ff00000014000100ff0000000000000000000000000000000800060000010000080004000200000024000c0000000000000000000000000000000000000000000000000000000000000000000500140000000000",
        "14000000030002002a0000003412000000000000",
    ];

    /// The kernel's link dump restricted to the attributes we send, in its
    /// order (counters zeroed).
    const KERNEL_LINKS: [(&str, &[(u16, &str)]); 2] = [
        (
            "00000403010000004900010000000000",
            &[
                (3, "6c6f00"),
                (13, "e8030000"),
                (16, "00"),
                (17, "00"),
                (4, "00000100"),
                (50, "00000000"),
                (51, "00000000"),
                (27, "00000000"),
                (30, "00000000"),
                (61, "00000000"),
                (31, "01000000"),
                (40, "ffff0000"),
                (41, "00000100"),
                (58, "00000100"),
                (63, "00000100"),
                (64, "00000100"),
                (59, "f8ff0700"),
                (60, "ffff0000"),
                (32, "01000000"),
                (33, "01"),
                (35, "00000000"),
                (47, "00000000"),
                (48, "00000000"),
                (39, "00"),
                (1, "000000000000"),
                (2, "000000000000"),
                (23, ""),
                (7, ""),
                (6, "6e6f717565756500"),
                (26, ""),
                (
                    14,
                    "0000000000000000000000000000000000000000000000000000000000000000",
                ),
            ],
        ),
        (
            "00000100020000004310010000000000",
            // A veth: two queues and a carrier that went down and up once.
            &[
                (3, "6574683000"),
                (13, "e8030000"),
                (16, "06"),
                (17, "00"),
                (4, "dc050000"),
                (50, "44000000"),
                (51, "ffff0000"),
                (27, "00000000"),
                (30, "00000000"),
                (61, "00000000"),
                (31, "02000000"),
                (40, "ffff0000"),
                (41, "00000100"),
                (58, "00000100"),
                (63, "00000100"),
                (64, "00000100"),
                (59, "f8ff0700"),
                (60, "ffff0000"),
                (32, "02000000"),
                (33, "01"),
                (35, "02000000"),
                (47, "01000000"),
                (48, "01000000"),
                (39, "00"),
                (1, "0242ac110002"),
                (2, "ffffffffffff"),
                (23, ""),
                (7, ""),
                (6, "6e6f717565756500"),
                (26, ""),
                (
                    14,
                    "0000000000000000000000000000000000000000000000000000000000000000",
                ),
            ],
        ),
    ];

    #[test]
    fn address_dump_matches_the_kernel_byte_for_byte() {
        let got = respond(&req(RTM_GETADDR, 0x301, &[0; 8]), &nics(), PORT);
        let want: Vec<Vec<u8>> = KERNEL_ADDR_DUMP.iter().map(|h| unhex(h)).collect();
        assert_eq!(got, want);
        // AF_INET6 alone: DONE appended, as the kernel's IPv6 dump does.
        let got = respond(
            &req(RTM_GETADDR, 0x301, &[AF_INET6, 0, 0, 0, 0, 0, 0, 0]),
            &nics(),
            PORT,
        );
        assert_eq!(got, vec![unhex(KERNEL_ADDR6_DUMP)]);
    }

    #[test]
    fn address_dump_filters_by_family() {
        let v4 = all(&respond(
            &req(RTM_GETADDR, 0x301, &[AF_INET]),
            &nics(),
            PORT,
        ));
        assert_eq!(v4.len(), 3);
        assert!(
            v4[..2]
                .iter()
                .all(|r| r.ty == RTM_NEWADDR && r.payload[0] == AF_INET)
        );
        // Any other family is all of them (rtnl_dump_all).
        let any = all(&respond(&req(RTM_GETADDR, 0x301, &[17]), &nics(), PORT));
        assert_eq!(any.len(), 6);
    }

    #[test]
    fn route_dump_matches_the_kernel_byte_for_byte() {
        let got = respond(&req(RTM_GETROUTE, 0x301, &[0; 12]), &nics(), PORT);
        let want: Vec<Vec<u8>> = KERNEL_ROUTE_DUMP.iter().map(|h| unhex(h)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn route_dump_by_family_and_prefix_flag() {
        let v4 = all(&respond(
            &req(RTM_GETROUTE, 0x301, &[AF_INET]),
            &nics(),
            PORT,
        ));
        assert_eq!(v4.len(), 9);
        assert!(v4[..8].iter().all(|r| r.payload[0] == AF_INET));
        let v6 = all(&respond(
            &req(RTM_GETROUTE, 0x301, &[AF_INET6]),
            &nics(),
            PORT,
        ));
        assert_eq!(v6.len(), 9);
        assert!(v6[..8].iter().all(|r| r.payload[0] == AF_INET6));
        let mut prefix = [0; 12];
        prefix[8..].copy_from_slice(&RTM_F_PREFIX.to_ne_bytes());
        let got = respond(&req(RTM_GETROUTE, 0x301, &prefix), &nics(), PORT);
        assert_eq!(got.len(), 1);
        assert!(is_done(&split(&got[0])[0]));
    }

    #[test]
    fn link_dump_matches_the_kernel_attributes() {
        let got = respond(&req(RTM_GETLINK, 0x301, &ifinfo(0, 0)), &nics(), PORT);
        // Links, then DONE alone (RTNL_FLAG_DUMP_SPLIT_NLM_DONE).
        assert_eq!(got.len(), 2);
        assert_eq!(split(&got[1]).len(), 1);
        let links = split(&got[0]);
        assert_eq!(links.len(), 2);
        for (link, (hdr, want)) in links.iter().zip(KERNEL_LINKS) {
            assert_eq!(
                (link.ty, link.flags, link.seq, link.pid),
                (RTM_NEWLINK, NLM_F_MULTI, SEQ, PORT)
            );
            assert_eq!(link.payload[..16], unhex(hdr));
            let ours = attr_list(&link.payload[16..]);
            assert_eq!(ours.len(), want.len());
            for ((ty, value), (want_ty, want_value)) in ours.iter().zip(want) {
                assert_eq!(ty, want_ty);
                match *ty {
                    IFLA_STATS64 => assert_eq!(value, &[0; STATS64_LEN]),
                    IFLA_STATS => assert_eq!(value, &[0; STATS_LEN]),
                    // The kernel sends more (AF_INET's sysctls, IPv6 sysctls
                    // and counters); the IPv6 flags and address generation
                    // mode are as it sends them.
                    IFLA_AF_SPEC => {
                        let families = attr_list(value);
                        assert_eq!(families.len(), 1);
                        assert_eq!(families[0].0, u16::from(AF_INET6));
                        let inner = attr_list(&families[0].1);
                        let flags = if link.payload[4] == 1 {
                            "00000080"
                        } else {
                            "10000080"
                        };
                        assert_eq!(inner[0], (IFLA_INET6_FLAGS, unhex(flags)));
                        assert_eq!(inner[3], (IFLA_INET6_ADDR_GEN_MODE, vec![0]));
                    }
                    // Queues and carrier history are the veth's own.
                    IFLA_NUM_TX_QUEUES | IFLA_NUM_RX_QUEUES => {
                        assert_eq!(value, &1u32.to_ne_bytes());
                    }
                    IFLA_CARRIER_CHANGES | IFLA_CARRIER_UP_COUNT | IFLA_CARRIER_DOWN_COUNT => {
                        assert_eq!(value, &0u32.to_ne_bytes());
                    }
                    _ => assert_eq!(value, &unhex(want_value), "attribute {ty}"),
                }
            }
        }
    }

    #[test]
    fn link_dump_filters() {
        let nics = nics();
        let count =
            |payload: &[u8]| all(&respond(&req(RTM_GETLINK, 0x301, payload), &nics, PORT)).len();
        // rtgenmsg-only requests (glibc sends 4 bytes) dump everything.
        assert_eq!(count(&[0]), 3);
        assert_eq!(count(&[17, 0, 0, 0]), 3);
        // Bridge ports: none.
        assert_eq!(count(&ifinfo(AF_BRIDGE, 0)), 1);
        // A master or a kind: none of ours has one.
        assert_eq!(
            count(&[ifinfo(0, 0), nla(IFLA_MASTER, &3u32.to_ne_bytes())].concat()),
            1
        );
        assert_eq!(
            count(&[ifinfo(0, 0), nla(IFLA_MASTER, &0u32.to_ne_bytes())].concat()),
            3
        );
        let kind = nla(IFLA_LINKINFO, &nla(IFLA_INFO_KIND, b"veth\0"));
        assert_eq!(count(&[ifinfo(0, 0), kind].concat()), 1);
        // A filter that does not parse is ignored, skip-stats included.
        let skip = nla(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
        let bad_master = nla(IFLA_MASTER, &[1, 0]);
        let got = all(&respond(
            &req(
                RTM_GETLINK,
                0x301,
                &[ifinfo(0, 0), skip.clone(), bad_master].concat(),
            ),
            &nics,
            PORT,
        ));
        assert!(
            attr_list(&got[0].payload[16..])
                .iter()
                .any(|(t, _)| *t == IFLA_STATS64)
        );
        let got = all(&respond(
            &req(RTM_GETLINK, 0x301, &[ifinfo(0, 0), skip].concat()),
            &nics,
            PORT,
        ));
        assert!(
            !attr_list(&got[0].payload[16..])
                .iter()
                .any(|(t, _)| *t == IFLA_STATS64 || *t == IFLA_STATS)
        );
    }

    #[test]
    fn inet6_link_dump_is_the_ipv6_view() {
        let got = respond(
            &req(RTM_GETLINK, 0x301, &ifinfo(AF_INET6, 0)),
            &nics(),
            PORT,
        );
        assert_eq!(got.len(), 1, "DONE appended");
        let msgs = split(&got[0]);
        assert_eq!(msgs.len(), 3);
        assert_eq!(
            msgs[1].payload[..16],
            unhex("0a000100020000004310010000000000")
        );
        let attrs = attr_list(&msgs[1].payload[16..]);
        let types: Vec<u16> = attrs.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            types,
            [
                IFLA_IFNAME,
                IFLA_ADDRESS,
                IFLA_MTU,
                IFLA_OPERSTATE,
                IFLA_PROTINFO
            ]
        );
        let inner = attr_list(&attrs[4].1);
        assert_eq!(
            inner[0],
            (
                IFLA_INET6_FLAGS,
                (IF_READY | IF_RS_SENT).to_ne_bytes().to_vec()
            )
        );
        assert!(is_done(&msgs[2]));
    }

    #[test]
    fn get_link_by_index_and_by_name() {
        let nics = nics();
        let one =
            |payload: Vec<u8>, flags: u16| respond(&req(RTM_GETLINK, flags, &payload), &nics, PORT);
        let got = one(ifinfo(0, 2), NLM_F_REQUEST);
        assert_eq!(got.len(), 1);
        let m = &split(&got[0])[0];
        assert_eq!((m.ty, m.flags, m.seq, m.pid), (RTM_NEWLINK, 0, SEQ, PORT));
        assert_eq!(read_u32(&m.payload, 4), Some(2));
        // The index wins over the name.
        let by_both = one(
            [ifinfo(0, 2), nla(IFLA_IFNAME, b"lo\0")].concat(),
            NLM_F_REQUEST,
        );
        assert_eq!(by_both, got);
        for name in [&b"eth0\0"[..], b"eth0", b"eth0\0junk"] {
            assert_eq!(
                one(
                    [ifinfo(0, 0), nla(IFLA_IFNAME, name)].concat(),
                    NLM_F_REQUEST
                ),
                got
            );
        }
        assert_eq!(
            one(
                [ifinfo(0, -1), nla(IFLA_ALT_IFNAME, b"eth0\0")].concat(),
                NLM_F_REQUEST
            ),
            got
        );
        // With NLM_F_ACK: the reply, then the acknowledgement.
        let acked = one(ifinfo(0, 1), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(acked.len(), 2);
        let ack = &split(&acked[1])[0];
        assert_eq!(
            (ack.flags, ack.errno(), ack.payload.len()),
            (NLM_F_CAPPED, 0, 20)
        );
    }

    #[test]
    fn get_link_errors_are_the_kernels() {
        let nics = nics();
        let err = |payload: Vec<u8>| {
            let got = respond(&req(RTM_GETLINK, NLM_F_REQUEST, &payload), &nics, PORT);
            assert_eq!(got.len(), 1);
            -split(&got[0])[0].errno()
        };
        assert_eq!(err(ifinfo(0, 99)), Errno::ENODEV as i32);
        assert_eq!(err(ifinfo(0, 0)), Errno::EINVAL as i32);
        assert_eq!(err(vec![0; 8]), Errno::EINVAL as i32);
        assert_eq!(
            err([ifinfo(0, 0), nla(IFLA_IFNAME, b"nosuch\0")].concat()),
            Errno::ENODEV as i32
        );
        assert_eq!(
            err([ifinfo(0, 0), nla(IFLA_IFNAME, &[b'x'; 15])].concat()),
            Errno::ENODEV as i32
        );
        assert_eq!(
            err([ifinfo(0, 0), nla(IFLA_IFNAME, &[b'x'; 16])].concat()),
            Errno::ERANGE as i32
        );
        assert_eq!(
            err([ifinfo(0, 0), nla(IFLA_IFNAME, b"")].concat()),
            Errno::ERANGE as i32
        );
        assert_eq!(
            err([ifinfo(0, 1), nla(IFLA_EXT_MASK, &[8, 0])].concat()),
            Errno::ERANGE as i32
        );
        // Malformed attributes end the list without an error.
        let ok = respond(
            &req(
                RTM_GETLINK,
                NLM_F_REQUEST,
                &[ifinfo(0, 1), vec![0x30, 0, 3, 0, 1, 2]].concat(),
            ),
            &nics,
            PORT,
        );
        assert_eq!(split(&ok[0])[0].ty, RTM_NEWLINK);
    }

    #[test]
    fn errors_carry_the_request_and_acks_only_its_header() {
        // Like the kernel: nlmsg_len 31, padded to 32 in the copy.
        let mut r = req(RTM_GETLINK, NLM_F_REQUEST, &ifinfo(0, 1)[..15]);
        r.push(0);
        let got = respond(&r, &nics(), PORT);
        assert_eq!(
            got,
            vec![unhex(
                "34000000020000002a00000034120000eaffffff1f000000120001002a0000000000000000000000010000000000000000000000"
            )]
        );
        let got = respond(
            &req(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK, &[0; 8]),
            &nics(),
            PORT,
        );
        let e = &split(&got[0])[0];
        assert_eq!(
            (e.flags, e.errno(), e.payload.len()),
            (0, -(Errno::EOPNOTSUPP as i32), 4 + 16 + 8)
        );
    }

    #[test]
    fn acknowledgements_follow_netlink_rcv_skb() {
        let nics = nics();
        let only_ack = |r: Vec<u8>| {
            let got = respond(&r, &nics, PORT);
            assert_eq!(got.len(), 1);
            let m = split(&got[0]);
            assert_eq!((m.len(), m[0].errno(), m[0].flags), (1, 0, NLM_F_CAPPED));
        };
        only_ack(req(RTM_GETLINK, NLM_F_DUMP | NLM_F_ACK, &ifinfo(0, 0))); // not a request
        only_ack(req(1, NLM_F_REQUEST | NLM_F_ACK, &[])); // NLMSG_NOOP
        only_ack(req(
            RTM_GETLINK,
            NLM_F_REQUEST | NLM_F_DUMP | NLM_F_ACK,
            &[],
        )); // empty payload
        only_ack(req(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, &[]));
        only_ack(req(RTM_MAX, NLM_F_REQUEST | NLM_F_ACK, &[]));
        // Without NLM_F_ACK those are silent.
        assert!(respond(&req(RTM_GETLINK, NLM_F_DUMP, &ifinfo(0, 0)), &nics, PORT).is_empty());
        assert!(respond(&req(1, NLM_F_REQUEST, &[]), &nics, PORT).is_empty());
        // Dumps are not acknowledged.
        let got = all(&respond(
            &req(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP | NLM_F_ACK, &[0]),
            &nics,
            PORT,
        ));
        assert!(is_done(got.last().unwrap()));
        assert!(got.iter().all(|m| m.ty != NLMSG_ERROR));
    }

    #[test]
    fn unsupported_and_modifying_requests_are_eopnotsupp() {
        let nics = nics();
        let errno = |ty: u16, flags: u16, payload: &[u8]| {
            let got = respond(&req(ty, flags, payload), &nics, PORT);
            split(&got[0])[0].errno()
        };
        let e = -(Errno::EOPNOTSUPP as i32);
        for ty in [
            RTM_NEWLINK,
            17,
            19,
            RTM_NEWADDR,
            21,
            RTM_NEWROUTE,
            25,
            28,
            32,
            36,
            100,
            120,
        ] {
            assert_eq!(
                errno(ty, NLM_F_REQUEST | NLM_F_ACK, &[0; 16]),
                e,
                "type {ty}"
            );
        }
        assert_eq!(errno(RTM_MAX + 1, NLM_F_REQUEST, &[]), e);
        assert_eq!(errno(200, NLM_F_REQUEST, &[0; 8]), e);
        assert_eq!(errno(0x1000, NLM_F_REQUEST, &[0; 8]), e);
        assert_eq!(errno(RTM_GETADDR, NLM_F_REQUEST, &[0; 8]), e); // no doit
        assert_eq!(errno(RTM_GETROUTE, NLM_F_REQUEST, &[0; 12]), e);
        assert_eq!(errno(RTM_GETNEIGH, NLM_F_REQUEST, &[0; 12]), e);
        assert_eq!(errno(122, NLM_F_REQUEST | NLM_F_DUMP, &[0; 8]), e); // no tunnel dumps
    }

    #[test]
    fn empty_dumps_are_a_lone_done() {
        for ty in EMPTY_DUMPS {
            let got = respond(
                &req(ty, NLM_F_REQUEST | NLM_F_DUMP, &[0; 12]),
                &nics(),
                PORT,
            );
            assert_eq!(got.len(), 1);
            let m = split(&got[0]);
            assert_eq!(m.len(), 1);
            assert!(is_done(&m[0]));
            assert_eq!((m[0].seq, m[0].pid), (SEQ, PORT));
        }
    }

    #[test]
    fn framing_errors_end_processing_silently() {
        let nics = nics();
        let good = req(RTM_GETLINK, NLM_F_REQUEST, &ifinfo(0, 1));
        assert!(respond(&[1, 2, 3], &nics, PORT).is_empty());
        assert!(respond(&[], &nics, PORT).is_empty());
        let mut short = good.clone();
        short[0..4].copy_from_slice(&15u32.to_ne_bytes());
        assert!(respond(&short, &nics, PORT).is_empty());
        let mut long = good.clone();
        long[0..4].copy_from_slice(&100u32.to_ne_bytes());
        assert!(respond(&long, &nics, PORT).is_empty());
        // iproute2 pads its requests with zeros: a zero nlmsg_len ends the list.
        let padded = [good.clone(), vec![0; 128]].concat();
        assert_eq!(respond(&padded, &nics, PORT).len(), 1);
        // Two requests, two replies; a trailing fragment is ignored.
        let two = [
            good.clone(),
            req_seq(RTM_GETLINK, NLM_F_REQUEST, 43, &ifinfo(0, 2)),
            vec![0, 0],
        ]
        .concat();
        let got = respond(&two, &nics, PORT);
        assert_eq!(got.len(), 2);
        assert_eq!(split(&got[1])[0].seq, 43);
    }

    #[test]
    fn a_second_dump_while_one_runs_is_ebusy() {
        let nics = nics();
        let two = [
            req_seq(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 7, &ifinfo(0, 0)),
            req_seq(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 8, &[0; 8]),
            req_seq(RTM_GETLINK, NLM_F_REQUEST, 9, &ifinfo(0, 1)),
        ]
        .concat();
        let got = respond(&two, &nics, PORT);
        // The kernel queues: the dump's first datagram, the EBUSY, the single
        // link, then (as the guest reads) the rest of the dump.
        let seqs: Vec<Vec<(u16, u32)>> = got
            .iter()
            .map(|d| split(d).iter().map(|m| (m.ty, m.seq)).collect())
            .collect();
        assert_eq!(
            seqs,
            [
                vec![(RTM_NEWLINK, 7), (RTM_NEWLINK, 7)],
                vec![(NLMSG_ERROR, 8)],
                vec![(RTM_NEWLINK, 9)],
                vec![(NLMSG_DONE, 7)],
            ]
        );
        assert_eq!(split(&got[1])[0].errno(), -(Errno::EBUSY as i32));
        // A dump that completed in one datagram does not block the next.
        let two = [
            req_seq(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 7, &[AF_INET6]),
            req_seq(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 8, &[0]),
        ]
        .concat();
        let got = all(&respond(&two, &nics, PORT));
        assert!(got.iter().all(|m| m.ty != NLMSG_ERROR));
    }

    #[test]
    fn large_dumps_are_split_in_kernel_sized_datagrams() {
        let mut eth = eth0();
        for i in 0..200u16 {
            eth.addrs.push(IfAddr {
                addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)),
                prefix_len: 64,
            });
            eth.addrs.push(IfAddr {
                addr: IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)),
                prefix_len: 32,
            });
        }
        let nics = vec![lo(), eth];
        for ty in [RTM_GETADDR, RTM_GETROUTE, RTM_GETLINK] {
            let got = respond(&req(ty, NLM_F_REQUEST | NLM_F_DUMP, &[0; 16]), &nics, PORT);
            assert!(got.iter().all(|d| d.len() <= DUMP_DATAGRAM_MAX));
            // Full: a datagram ends only when the next message would not fit.
            for pair in got.windows(2) {
                let next = split(&pair[1])[0].clone();
                assert!(
                    pair[0].len() + 16 + next.payload.len() > DUMP_DATAGRAM_MAX || is_done(&next)
                );
            }
            let msgs = all(&got);
            assert!(is_done(msgs.last().unwrap()));
            assert_eq!(msgs.iter().filter(|m| m.ty == NLMSG_DONE).count(), 1);
        }
        let addrs = all(&respond(&req(RTM_GETADDR, 0x301, &[0]), &nics, PORT));
        assert_eq!(addrs.len(), 2 + 3 + 400 + 1);
    }

    #[test]
    fn ipv4_secondaries_and_small_prefixes_route_like_linux() {
        let mut eth = eth0();
        eth.addrs = vec![
            ifaddr("10.0.2.15", 24),
            ifaddr("10.0.2.16", 24), // secondary
            ifaddr("10.0.3.1", 24),
            ifaddr("10.0.2.17", 32),
            ifaddr("10.9.0.1", 31),
            ifaddr("10.0.2.15", 24), // duplicate: dropped
        ];
        eth.gateway_v6 = None;
        eth.routes.clear();
        let iface = Iface {
            index: 2,
            nic: &eth,
        };
        let order: Vec<(String, bool)> = iface
            .v4_addrs()
            .iter()
            .map(|a| (a.addr.to_string(), a.secondary))
            .collect();
        assert_eq!(
            order,
            [
                ("10.0.2.15", false),
                ("10.0.3.1", false),
                ("10.0.2.17", false),
                ("10.9.0.1", false),
                ("10.0.2.16", true)
            ]
            .map(|(a, s)| (a.to_string(), s))
        );
        let show: Vec<String> = v4_routes(&[lo(), eth])
            .iter()
            .filter(|r| r.oif == 2)
            .map(|r| {
                format!(
                    "{} {} {}/{} {:?} {:?}",
                    r.table, r.kind, r.dst, r.dst_len, r.prefsrc, r.gateway
                )
            })
            .collect();
        // As `ip route show table all dev eth0` lists them on Linux.
        assert_eq!(
            show,
            [
                "254 1 0.0.0.0/0 None Some(10.0.2.2)",
                "254 1 10.0.2.0/24 Some(10.0.2.15) None",
                "254 1 10.0.3.0/24 Some(10.0.3.1) None",
                "254 1 10.9.0.0/31 Some(10.9.0.1) None",
                "255 2 10.0.2.15/32 Some(10.0.2.15) None",
                "255 2 10.0.2.16/32 Some(10.0.2.15) None",
                "255 2 10.0.2.17/32 Some(10.0.2.17) None",
                "255 3 10.0.2.255/32 Some(10.0.2.15) None",
                "255 2 10.0.3.1/32 Some(10.0.3.1) None",
                "255 3 10.0.3.255/32 Some(10.0.3.1) None",
                "255 2 10.9.0.1/32 Some(10.9.0.1) None",
            ]
        );
    }

    #[test]
    fn ipv6_addresses_are_listed_widest_scope_first() {
        let mut eth = eth0();
        eth.addrs = vec![
            ifaddr("fe80::1", 64),
            ifaddr("fd00::16", 64),
            ifaddr("fd00::15", 64),
            ifaddr("fd00::16", 64),
        ];
        let iface = Iface {
            index: 2,
            nic: &eth,
        };
        let order: Vec<String> = iface
            .v6_addrs()
            .iter()
            .map(|(a, _)| a.to_string())
            .collect();
        assert_eq!(order, ["fd00::16", "fd00::15", "fe80::1"]);
        // One prefix route per prefix.
        let main: Vec<String> = v6_routes(&[eth])
            .iter()
            .filter(|r| r.table == RT_TABLE_MAIN)
            .map(|r| format!("{}/{}", r.dst, r.dst_len))
            .collect();
        assert_eq!(main, ["2001:db8:1::/48", "fd00::/64", "fe80::/64", "::/0"]);
    }

    /// `ip route get` answers of Linux 6.18 in the golden namespace: (dst,
    /// src, rtm_flags, oif, rtmsg, attributes); `12:*` is the cache info,
    /// whose use counters are the kernel's own.
    const KERNEL_ROUTE_GETS: &[(&str, &str, u32, u32, &str, &str)] = &[
        (
            "8.8.8.8",
            "",
            0,
            0,
            "02200000fe00000100020000",
            "15:fe000000 1:08080808 4:02000000 7:0a00020f 5:0a000202 25:00000000 12:*",
        ),
        (
            "10.0.2.7",
            "",
            0,
            0,
            "02200000fe00000100020000",
            "15:fe000000 1:0a000207 4:02000000 7:0a00020f 25:00000000 12:*",
        ),
        (
            "192.168.5.9",
            "",
            0,
            0,
            "02200000fe00000100020000",
            "15:fe000000 1:c0a80509 4:02000000 7:0a00020f 5:0a000203 25:00000000 12:*",
        ),
        (
            "10.0.2.15",
            "",
            0,
            0,
            "02200000fe00000200020080",
            "15:fe000000 1:0a00020f 4:01000000 7:0a00020f 25:00000000 12:*",
        ),
        (
            "127.0.0.1",
            "",
            0,
            0,
            "02200000fe00000200020080",
            "15:fe000000 1:7f000001 4:01000000 7:7f000001 25:00000000 12:*",
        ),
        (
            "127.1.2.3",
            "",
            0,
            0,
            "02200000fe00000200020080",
            "15:fe000000 1:7f010203 4:01000000 7:7f000001 25:00000000 12:*",
        ),
        (
            "10.0.2.255",
            "",
            0,
            0,
            "02200000fe00000300020090",
            "15:fe000000 1:0a0002ff 4:02000000 7:0a00020f 25:00000000 12:*",
        ),
        (
            "255.255.255.255",
            "",
            0,
            0,
            "02200000fe00000300020090",
            "15:fe000000 1:ffffffff 4:02000000 7:0a00020f 25:00000000 12:*",
        ),
        (
            "0.0.0.0",
            "",
            0,
            0,
            "02200000fe00000200020080",
            "15:fe000000 1:00000000 4:01000000 7:7f000001 25:00000000 12:*",
        ),
        (
            "10.0.2.0",
            "",
            0,
            0,
            "02200000fe00000100020000",
            "15:fe000000 1:0a000200 4:02000000 7:0a00020f 25:00000000 12:*",
        ),
        (
            "224.0.0.1",
            "",
            0,
            0,
            "02200000fe000005000200a0",
            "15:fe000000 1:e0000001 4:02000000 7:0a00020f 25:00000000 12:*",
        ),
        (
            "239.1.2.3",
            "",
            0,
            0,
            "02200000fe00000500020020",
            "15:fe000000 1:ef010203 4:02000000 7:0a00020f 25:00000000 12:*",
        ),
        (
            "8.8.8.8",
            "10.0.2.15",
            0,
            0,
            "02202000fe00000100020000",
            "15:fe000000 1:08080808 2:0a00020f 4:02000000 5:0a000202 25:00000000 12:*",
        ),
        (
            "8.8.8.8",
            "",
            0x1000,
            0,
            "02200000fe00000100020000",
            "15:fe000000 1:08080808 4:02000000 7:0a00020f 5:0a000202 25:00000000 12:*",
        ),
        (
            "10.0.2.7",
            "",
            0,
            2,
            "02200000fe00000100020000",
            "15:fe000000 1:0a000207 4:02000000 7:0a00020f 25:00000000 12:*",
        ),
        (
            "8.8.8.8",
            "",
            0x2000,
            0,
            "02000000fe03000100000000",
            "15:fe000000 5:0a000202 4:02000000",
        ),
        (
            "10.0.2.15",
            "",
            0x2000,
            0,
            "02200000fe02fe0200000000",
            "15:fe000000 1:0a00020f 7:0a00020f 4:02000000",
        ),
        (
            "2001:db8::1",
            "",
            0,
            0,
            "0a808000fe03000100000000",
            "15:fe000000 1:20010db8000000000000000000000001 2:00000000000000000000000000000000 7:fd000000000000000000000000000015 6:00040000 5:fd000000000000000000000000000002 4:02000000 12:* 20:00",
        ),
        (
            "2001:db8:1::5",
            "",
            0,
            0,
            "0a808000fe03000100000000",
            "15:fe000000 1:20010db8000100000000000000000005 2:00000000000000000000000000000000 7:fd000000000000000000000000000015 6:00040000 5:fd000000000000000000000000000003 4:02000000 12:* 20:00",
        ),
        (
            "fd00::7",
            "",
            0,
            0,
            "0a808000fe02000100000000",
            "15:fe000000 1:fd000000000000000000000000000007 2:00000000000000000000000000000000 7:fd000000000000000000000000000015 6:00010000 4:02000000 12:* 20:00",
        ),
        (
            "fe80::1",
            "",
            0,
            0,
            "0a808000fe02000100000000",
            "15:fe000000 1:fe800000000000000000000000000001 2:00000000000000000000000000000000 7:fe800000000000000042acfffe110002 6:00010000 4:02000000 12:* 20:00",
        ),
        (
            "fd00::15",
            "",
            0,
            0,
            "0a808000ff02000200000000",
            "15:ff000000 1:fd000000000000000000000000000015 2:00000000000000000000000000000000 7:fd000000000000000000000000000015 6:00000000 4:01000000 12:* 20:00",
        ),
        (
            "::1",
            "",
            0,
            0,
            "0a808000ff02000200000000",
            "15:ff000000 1:00000000000000000000000000000001 2:00000000000000000000000000000000 7:00000000000000000000000000000001 6:00000000 4:01000000 12:* 20:00",
        ),
        (
            "ff02::1",
            "",
            0,
            0,
            "0a808000ff02000500000000",
            "15:ff000000 1:ff020000000000000000000000000001 2:00000000000000000000000000000000 7:fe800000000000000042acfffe110002 6:00010000 4:02000000 12:* 20:00",
        ),
        (
            "fe80::42:acff:fe11:2",
            "",
            0,
            0,
            "0a808000ff02000200000000",
            "15:ff000000 1:fe800000000000000042acfffe110002 2:00000000000000000000000000000000 7:fe800000000000000042acfffe110002 6:00000000 4:01000000 12:* 20:00",
        ),
        (
            "2001:db8::1",
            "fd00::15",
            0,
            0,
            "0a808000fe03000100000000",
            "15:fe000000 1:20010db8000000000000000000000001 2:fd000000000000000000000000000015 7:fd000000000000000000000000000015 6:00040000 5:fd000000000000000000000000000002 4:02000000 12:* 20:00",
        ),
        (
            "2001:db8::1",
            "fd00::99",
            0,
            0,
            "0a808000fe03000100000000",
            "15:fe000000 1:20010db8000000000000000000000001 2:fd000000000000000000000000000099 7:fd000000000000000000000000000015 6:00040000 5:fd000000000000000000000000000002 4:02000000 12:* 20:00",
        ),
        (
            "2001:db8::1",
            "",
            0x2000,
            0,
            "0a000000fe03000100000000",
            "15:fe000000 6:00040000 5:fd000000000000000000000000000002 4:02000000 12:0000000000000000000000000000000000000000000000000000000000000000 20:00",
        ),
        (
            "fd00::15",
            "",
            0x2000,
            0,
            "0a800000ff02000200000000",
            "15:ff000000 1:fd000000000000000000000000000015 6:00000000 4:02000000 12:0000000000000000000000000000000000000000000000000000000000000000 20:00",
        ),
    ];

    fn route_get(nics: &[NicInfo], dst: &str, src: &str, flags: u32, oif: u32) -> Vec<Vec<u8>> {
        let dst: IpAddr = dst.parse().unwrap();
        let octets = |a: IpAddr| match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let family = if dst.is_ipv4() { AF_INET } else { AF_INET6 };
        let bits = if dst.is_ipv4() { 32 } else { 128 };
        let src_len = if src.is_empty() { 0 } else { bits };
        let mut p = vec![family, bits, src_len, 0, 0, 0, 0, 0];
        p.extend_from_slice(&flags.to_ne_bytes());
        p.extend(nla(RTA_DST, &octets(dst)));
        if !src.is_empty() {
            p.extend(nla(RTA_SRC, &octets(src.parse().unwrap())));
        }
        if oif != 0 {
            p.extend(nla(RTA_OIF, &oif.to_ne_bytes()));
        }
        respond(&req(RTM_GETROUTE, NLM_F_REQUEST, &p), nics, PORT)
    }

    #[test]
    fn route_get_matches_the_kernel() {
        let nics = nics();
        for &(dst, src, flags, oif, hdr, want) in KERNEL_ROUTE_GETS {
            let got = route_get(&nics, dst, src, flags, oif);
            assert_eq!(got.len(), 1, "{dst}");
            let m = &split(&got[0])[0];
            assert_eq!(
                (m.ty, m.flags, m.seq, m.pid),
                (RTM_NEWROUTE, 0, SEQ, PORT),
                "{dst}"
            );
            assert_eq!(
                m.payload[..12],
                unhex(hdr),
                "{dst} from {src:?} flags {flags:#x}"
            );
            let attrs: Vec<String> = attr_list(&m.payload[12..])
                .iter()
                .map(|(t, v)| match *t {
                    RTA_CACHEINFO if v.len() == RTA_CACHEINFO_LEN && want.contains("12:*") => {
                        "12:*".to_string()
                    }
                    t => format!(
                        "{t}:{}",
                        v.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    ),
                })
                .collect();
            assert_eq!(attrs.join(" "), want, "{dst} from {src:?} flags {flags:#x}");
        }
    }

    #[test]
    fn route_get_errors() {
        let nics = nics();
        let errno = |got: Vec<Vec<u8>>| -split(&got[0])[0].errno();
        // The source must be ours; the output link must exist.
        assert_eq!(
            errno(route_get(&nics, "8.8.8.8", "10.9.9.9", 0, 0)),
            Errno::ENETUNREACH as i32
        );
        assert_eq!(
            errno(route_get(&nics, "10.0.2.7", "", 0, 5)),
            Errno::ENODEV as i32
        );
        // No route.
        let only_lo = [lo()];
        assert_eq!(
            errno(route_get(&only_lo, "8.8.8.8", "", 0, 0)),
            Errno::ENETUNREACH as i32
        );
        assert_eq!(
            errno(route_get(&only_lo, "2001:db8::1", "", 0, 0)),
            Errno::ENETUNREACH as i32
        );
        assert_eq!(
            split(&route_get(&only_lo, "127.0.0.1", "", 0, 0)[0])[0].ty,
            RTM_NEWROUTE
        );
        // An oif without a route through it.
        assert_eq!(
            errno(route_get(&nics, "8.8.8.8", "", 0, 1)),
            Errno::ENETUNREACH as i32
        );
        // Not for AF_UNSPEC; a short rtmsg; input routes.
        let e = |payload: &[u8]| {
            errno(respond(
                &req(RTM_GETROUTE, NLM_F_REQUEST, payload),
                &nics,
                PORT,
            ))
        };
        assert_eq!(e(&[0; 12]), Errno::EOPNOTSUPP as i32);
        assert_eq!(e(&[AF_INET, 0, 0, 0]), Errno::EINVAL as i32);
        let iif = [
            vec![AF_INET, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            nla(RTA_IIF, &2u32.to_ne_bytes()),
        ]
        .concat();
        assert_eq!(e(&iif), Errno::EOPNOTSUPP as i32);
        let short_dst = [
            vec![AF_INET6, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            nla(RTA_DST, &[0xfd; 4]),
        ]
        .concat();
        assert_eq!(e(&short_dst), Errno::EINVAL as i32);
        // RTA_UID is echoed.
        let uid = [
            vec![AF_INET, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            nla(RTA_DST, &[8, 8, 8, 8]),
            nla(RTA_UID, &1000u32.to_ne_bytes()),
        ]
        .concat();
        let got = respond(
            &req(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_ACK, &uid),
            &nics,
            PORT,
        );
        assert_eq!(got.len(), 2, "the answer, then the acknowledgement");
        let attrs = attr_list(&split(&got[0])[0].payload[12..]);
        assert!(attrs.contains(&(RTA_UID, 1000u32.to_ne_bytes().to_vec())));
    }

    #[test]
    fn ipv6_source_selection_follows_rfc_6724() {
        let mut eth = eth0();
        eth.addrs = vec![
            ifaddr("fe80::1", 64),
            ifaddr("fd00::15", 64),
            ifaddr("2001:db8:5::7", 64),
            ifaddr("2001:db8:6::7", 48),
        ];
        let nics = [lo(), eth];
        let src = |dst: &str| select_v6_src(&nics, 2, dst.parse().unwrap()).map(|a| a.to_string());
        // Same label and the longest prefix, within the prefix length.
        assert_eq!(src("2001:db8:6::1").as_deref(), Some("2001:db8:6::7"));
        assert_eq!(src("2001:db8:5::1").as_deref(), Some("2001:db8:5::7"));
        assert_eq!(src("2606:4700::1").as_deref(), Some("2001:db8:5::7"));
        assert_eq!(src("fd00:1::1").as_deref(), Some("fd00::15"));
        // Scope: link-local for link-scoped destinations.
        assert_eq!(src("fe80::9").as_deref(), Some("fe80::1"));
        assert_eq!(src("ff02::1").as_deref(), Some("fe80::1"));
        assert_eq!(src("ff0e::1").as_deref(), Some("2001:db8:5::7"));
        // Our own address.
        assert_eq!(src("fd00::15").as_deref(), Some("fd00::15"));
        // Only link-local: better than ::1 for a global destination.
        let mut ll = eth0();
        ll.addrs = vec![ifaddr("fe80::1", 64)];
        let nics = [lo(), ll];
        assert_eq!(
            select_v6_src(&nics, 2, "2001:db8::1".parse().unwrap()),
            Some("fe80::1".parse().unwrap())
        );
    }

    #[test]
    fn sockaddr_nl_layout() {
        assert_eq!(
            sockaddr_nl(0x0102_0304),
            [16, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0]
        );
        assert_eq!(sockaddr_nl(0)[4..], [0; 8]);
    }

    /// xorshift64*: deterministic noise for the robustness tests.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn check_well_formed(out: &[Vec<u8>]) {
        for d in out {
            assert!(d.len() <= DUMP_DATAGRAM_MAX.max(NLMSG_HDRLEN + 4 + 70_000));
            for m in split(d) {
                assert_eq!(m.pid, PORT);
            }
        }
    }

    #[test]
    fn random_and_mangled_requests_never_panic() {
        let nics = nics();
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let valid: Vec<Vec<u8>> = vec![
            req(RTM_GETLINK, 0x301, &ifinfo(0, 0)),
            req(
                RTM_GETLINK,
                NLM_F_REQUEST,
                &[
                    ifinfo(0, 0),
                    nla(IFLA_IFNAME, b"eth0\0"),
                    nla(IFLA_EXT_MASK, &[8, 0, 0, 0]),
                ]
                .concat(),
            ),
            req(
                RTM_GETLINK,
                0x301,
                &[
                    ifinfo(0, 0),
                    nla(IFLA_LINKINFO, &nla(IFLA_INFO_KIND, b"veth\0")),
                ]
                .concat(),
            ),
            req(RTM_GETADDR, 0x301, &[0; 8]),
            req(RTM_GETROUTE, 0x301, &[0; 12]),
            req(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK, &[0; 24]),
        ];
        for round in 0..20_000 {
            let mut d = match round % 4 {
                // Pure noise, any length.
                0 => (0..noise.below(200)).map(|_| noise.next() as u8).collect(),
                // A valid request, truncated.
                1 => {
                    let v = &valid[noise.below(valid.len())];
                    v[..noise.below(v.len() + 1)].to_vec()
                }
                // A valid request with bytes flipped (lengths included).
                2 => {
                    let mut v = valid[noise.below(valid.len())].clone();
                    for _ in 0..=noise.below(4) {
                        let i = noise.below(v.len());
                        v[i] = noise.next() as u8;
                    }
                    v
                }
                // Several requests back to back with noise between.
                _ => {
                    let mut v = Vec::new();
                    for _ in 0..=noise.below(4) {
                        v.extend_from_slice(&valid[noise.below(valid.len())]);
                        v.extend((0..noise.below(3) * 4).map(|_| noise.next() as u8));
                    }
                    v
                }
            };
            if round % 7 == 0 && d.len() >= 16 {
                // A plausible header over noise: the parsers past framing get exercised.
                let len = d.len() as u32;
                d[0..4].copy_from_slice(&len.to_ne_bytes());
                d[4..6].copy_from_slice(
                    &[RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE, RTM_NEWLINK][noise.below(4)]
                        .to_ne_bytes(),
                );
                d[6..8]
                    .copy_from_slice(&[NLM_F_REQUEST, 0x301, 0x305][noise.below(3)].to_ne_bytes());
            }
            check_well_formed(&respond(&d, &nics, PORT));
        }
    }
}
