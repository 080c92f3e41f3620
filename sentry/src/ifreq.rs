//! Interface ioctls (`SIOCGIF*`, `SIOCGIFCONF`) answered from the netstack's
//! interface list.
//!
//! Data enters as the command and the 40 bytes of the guest's `struct ifreq`
//! (x86_64: a 16-byte name, then a 24-byte union) and leaves as the bytes to
//! copy back, or an errno ([`ifreq_ioctl`]); `SIOCGIFCONF` has its own entry
//! points ([`ifconf`], [`ifconf_len`]). The caller reads and writes guest
//! memory: it copies the whole `ifreq` back only on success, as Linux does, so
//! every byte the kernel would leave alone is left alone here too.
//!
//! Semantics are Linux 6.18's (`dev_ioctl`, `devinet_ioctl`), checked on a real
//! kernel for AF_INET, AF_INET6, AF_NETLINK and AF_UNIX sockets:
//!
//! - The name is read as the kernel does: byte 15 is forced to NUL (and is
//!   zero in the copy returned), so a 16-byte unterminated name is cut to 15;
//!   an alias suffix (`eth0:1`) is ignored for the device lookup. Unknown name:
//!   `ENODEV`.
//! - `SIOCGIFADDR`, `SIOCGIFDSTADDR`, `SIOCGIFBRDADDR`, `SIOCGIFNETMASK` exist
//!   on AF_INET sockets only (others: `ENOTTY`). They pick the address whose
//!   label is the full name (so `eth0:1` finds none: `EADDRNOTAVAIL`), the one
//!   equal to the given address when the union holds an AF_INET address,
//!   otherwise the first; none: `EADDRNOTAVAIL`.
//! - Every configuring ioctl answers `EPERM`, as Linux does for a caller without
//!   `CAP_NET_ADMIN` over the interfaces (with each socket family's quirks: a
//!   few answer `ENOTTY`, `EINVAL` or `ENODEV` first). The guest is root in its
//!   namespace, but its interfaces are the Sentry's and cannot be changed from
//!   inside; `EPERM` is the answer programs already expect in containers.
//!   (Over netlink the same requests get `EOPNOTSUPP`, see [`crate::netlink`].)
//! - Device-specific ioctls (`SIOCETHTOOL`, `SIOCDEVPRIVATE`..., `SIOCWANDEV`,
//!   `SIOCGHWTSTAMP`, bonding queries) answer `EOPNOTSUPP` for an existing
//!   device, like a driver without those operations, else `ENODEV`.
//! - Anything else: `ENOTTY`, as Linux answers an unknown socket ioctl.

use std::net::Ipv4Addr;

use netstack::NicInfo;
use nix::errno::Errno;

use crate::netlink::{Iface, TX_QUEUE_LEN, V4Addr, iface_by_index, iface_by_name, ifaces};

/// Size of `struct ifreq` on x86_64.
pub const IFREQ_SIZE: usize = 40;
/// Size of the name field (`IFNAMSIZ`).
pub const IFNAMSIZ: usize = 16;

/// Get the name of the interface whose index is `ifr_ifindex`.
pub const SIOCGIFNAME: u32 = 0x8910;
/// List the IPv4 addresses (`struct ifconf`; see [`ifconf`]).
pub const SIOCGIFCONF: u32 = 0x8912;
/// Get the flags (`ifr_flags`, a short: no `IFF_LOWER_UP`).
pub const SIOCGIFFLAGS: u32 = 0x8913;
/// Set the flags.
pub const SIOCSIFFLAGS: u32 = 0x8914;
/// Get the IPv4 address.
pub const SIOCGIFADDR: u32 = 0x8915;
/// Set the IPv4 address.
pub const SIOCSIFADDR: u32 = 0x8916;
/// Get the point-to-point destination (the address itself on other links).
pub const SIOCGIFDSTADDR: u32 = 0x8917;
/// Set the point-to-point destination.
pub const SIOCSIFDSTADDR: u32 = 0x8918;
/// Get the IPv4 broadcast address.
pub const SIOCGIFBRDADDR: u32 = 0x8919;
/// Set the IPv4 broadcast address.
pub const SIOCSIFBRDADDR: u32 = 0x891a;
/// Get the IPv4 netmask.
pub const SIOCGIFNETMASK: u32 = 0x891b;
/// Set the IPv4 netmask.
pub const SIOCSIFNETMASK: u32 = 0x891c;
/// Get the metric (always 0).
pub const SIOCGIFMETRIC: u32 = 0x891d;
/// Set the metric.
pub const SIOCSIFMETRIC: u32 = 0x891e;
/// Get the MTU.
pub const SIOCGIFMTU: u32 = 0x8921;
/// Set the MTU.
pub const SIOCSIFMTU: u32 = 0x8922;
/// Rename the interface.
pub const SIOCSIFNAME: u32 = 0x8923;
/// Set the hardware address.
pub const SIOCSIFHWADDR: u32 = 0x8924;
/// Get the hardware address (`sa_family` is the `ARPHRD_*` type).
pub const SIOCGIFHWADDR: u32 = 0x8927;
/// Bonding: get the slave (always `EINVAL` for an existing device).
pub const SIOCGIFSLAVE: u32 = 0x8929;
/// Bonding: set the slave.
pub const SIOCSIFSLAVE: u32 = 0x8930;
/// Join a link-layer multicast group.
pub const SIOCADDMULTI: u32 = 0x8931;
/// Leave a link-layer multicast group.
pub const SIOCDELMULTI: u32 = 0x8932;
/// Get the ifindex of the named interface.
pub const SIOCGIFINDEX: u32 = 0x8933;
/// Set the private flags (AF_INET answers `EINVAL`).
pub const SIOCSIFPFLAGS: u32 = 0x8934;
/// Get the private flags (AF_INET answers `EINVAL`).
pub const SIOCGIFPFLAGS: u32 = 0x8935;
/// Delete an IPv6 address (AF_INET6 sockets, `struct in6_ifreq`).
pub const SIOCDIFADDR: u32 = 0x8936;
/// Set the hardware broadcast address.
pub const SIOCSIFHWBROADCAST: u32 = 0x8937;
/// Get the transmit queue length.
pub const SIOCGIFTXQLEN: u32 = 0x8942;
/// Set the transmit queue length.
pub const SIOCSIFTXQLEN: u32 = 0x8943;
/// ethtool (its command sits behind `ifr_data`).
pub const SIOCETHTOOL: u32 = 0x8946;
/// MII: get the PHY address.
pub const SIOCGMIIPHY: u32 = 0x8947;
/// MII: read a register.
pub const SIOCGMIIREG: u32 = 0x8948;
/// MII: write a register.
pub const SIOCSMIIREG: u32 = 0x8949;
/// WAN device configuration.
pub const SIOCWANDEV: u32 = 0x894a;
/// Get the hardware parameters (`struct ifmap`: all zero).
pub const SIOCGIFMAP: u32 = 0x8970;
/// Set the hardware parameters.
pub const SIOCSIFMAP: u32 = 0x8971;
/// Bonding: enslave a device.
pub const SIOCBONDENSLAVE: u32 = 0x8990;
/// Bonding: release a device.
pub const SIOCBONDRELEASE: u32 = 0x8991;
/// Bonding: set the hardware address.
pub const SIOCBONDSETHWADDR: u32 = 0x8992;
/// Bonding: query a slave.
pub const SIOCBONDSLAVEINFOQUERY: u32 = 0x8993;
/// Bonding: query the bond.
pub const SIOCBONDINFOQUERY: u32 = 0x8994;
/// Bonding: change the active slave.
pub const SIOCBONDCHANGEACTIVE: u32 = 0x8995;
/// Bridge: add an interface to a bridge.
pub const SIOCBRADDIF: u32 = 0x89a2;
/// Bridge: remove an interface from a bridge.
pub const SIOCBRDELIF: u32 = 0x89a3;
/// Set hardware time stamping.
pub const SIOCSHWTSTAMP: u32 = 0x89b0;
/// Get hardware time stamping.
pub const SIOCGHWTSTAMP: u32 = 0x89b1;
/// First of the 16 driver-private ioctls.
pub const SIOCDEVPRIVATE: u32 = 0x89f0;

const AF_INET: u16 = 2;
/// Offset of the union in `struct ifreq`.
const UNION: usize = IFNAMSIZ;

/// The family of the socket an ioctl was issued on: the address ioctls
/// differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketFamily {
    /// AF_INET.
    Inet,
    /// AF_INET6.
    Inet6,
    /// AF_NETLINK, AF_UNIX: families whose own ioctl code leaves the
    /// interface ioctls to `dev_ioctl` (glibc's `if_nametoindex` and
    /// `if_indextoname` use an AF_UNIX socket).
    Other,
}

/// Answers an interface ioctl issued on an AF_INET socket.
///
/// `req` is the guest's `struct ifreq`; on `Ok` it holds the bytes to copy
/// back (only the fields Linux writes differ, and byte 15 is zeroed); on `Err`
/// it is unchanged and nothing is copied back. Unknown commands, and
/// `SIOCGIFCONF` (whose argument is a `struct ifconf`; see [`ifconf`]), are
/// `ENOTTY`.
pub fn ifreq_ioctl(cmd: u32, req: &mut [u8; IFREQ_SIZE], nics: &[NicInfo]) -> Result<(), Errno> {
    ifreq_ioctl_on(SocketFamily::Inet, cmd, req, nics)
}

/// [`ifreq_ioctl`] on a socket of the given family.
pub fn ifreq_ioctl_on(
    family: SocketFamily,
    cmd: u32,
    req: &mut [u8; IFREQ_SIZE],
    nics: &[NicInfo],
) -> Result<(), Errno> {
    let mut r = *req;
    answer(family, cmd, &mut r, nics)?;
    *req = r;
    Ok(())
}

/// Whether `cmd` takes a `struct ifreq` that [`ifreq_ioctl_on`] answers for
/// `family` (it answers `ENOTTY` to the rest of the 0x89xx range, which Linux
/// also reads as an `ifreq` first; the non-`ifreq` ones, such as
/// `SIOCGIFCONF`, `SIOCADDRT`, the ARP ioctls and the socket-level ones, are
/// not covered).
pub fn is_ifreq_ioctl(family: SocketFamily, cmd: u32) -> bool {
    let inet_only = matches!(
        cmd,
        SIOCGIFADDR
            | SIOCGIFDSTADDR
            | SIOCGIFBRDADDR
            | SIOCGIFNETMASK
            | SIOCSIFBRDADDR
            | SIOCSIFNETMASK
            | SIOCGIFPFLAGS
            | SIOCSIFPFLAGS
    );
    match cmd {
        _ if inet_only => family == SocketFamily::Inet,
        SIOCSIFADDR | SIOCSIFDSTADDR => family != SocketFamily::Other,
        SIOCDIFADDR => family == SocketFamily::Inet6,
        _ => {
            matches!(
                cmd,
                SIOCGIFNAME
                    | SIOCGIFFLAGS
                    | SIOCGIFMETRIC
                    | SIOCGIFMTU
                    | SIOCGIFHWADDR
                    | SIOCGIFSLAVE
                    | SIOCGIFINDEX
                    | SIOCGIFTXQLEN
                    | SIOCGIFMAP
            ) || configuring(cmd)
                || device_specific(cmd)
        }
    }
}

/// Configuring ioctls that every socket family passes to `dev_ioctl`, which
/// checks `CAP_NET_ADMIN` first.
fn configuring(cmd: u32) -> bool {
    matches!(
        cmd,
        SIOCSIFFLAGS
            | SIOCSIFMETRIC
            | SIOCSIFMTU
            | SIOCSIFNAME
            | SIOCSIFHWADDR
            | SIOCSIFSLAVE
            | SIOCADDMULTI
            | SIOCDELMULTI
            | SIOCSIFHWBROADCAST
            | SIOCSIFTXQLEN
            | SIOCGMIIPHY
            | SIOCGMIIREG
            | SIOCSMIIREG
            | SIOCSIFMAP
            | SIOCBONDENSLAVE
            | SIOCBONDRELEASE
            | SIOCBONDSETHWADDR
            | SIOCBONDCHANGEACTIVE
            | SIOCBRADDIF
            | SIOCBRDELIF
            | SIOCSHWTSTAMP
    )
}

/// Ioctls a device driver would answer; ours have no such operations.
fn device_specific(cmd: u32) -> bool {
    matches!(
        cmd,
        SIOCETHTOOL | SIOCWANDEV | SIOCBONDSLAVEINFOQUERY | SIOCBONDINFOQUERY | SIOCGHWTSTAMP
    ) || (SIOCDEVPRIVATE..SIOCDEVPRIVATE + 16).contains(&cmd)
}

/// The records `SIOCGIFCONF` writes into a buffer of `buf_len` bytes, and the
/// `ifc_len` to report (their length).
///
/// One record per IPv4 address of every interface, in Linux's order; each is
/// a 40-byte `ifreq` holding the label and an AF_INET `sockaddr_in`. Only whole
/// records that fit are written. A negative `ifc_len` is passed as 0 (Linux
/// then writes nothing and reports 0). When `ifc_buf` is NULL, use
/// [`ifconf_len`] instead: Linux ignores `ifc_len` then.
pub fn ifconf(nics: &[NicInfo], buf_len: usize) -> (Vec<u8>, usize) {
    let room = buf_len / IFREQ_SIZE;
    let mut out = Vec::new();
    for iface in ifaces(nics) {
        for a in iface.v4_addrs() {
            if out.len() / IFREQ_SIZE == room {
                break;
            }
            let mut rec = [0; IFREQ_SIZE];
            rec[..iface.name().len()].copy_from_slice(iface.name());
            put_sockaddr_in(&mut rec, a.addr);
            out.extend_from_slice(&rec);
        }
    }
    let len = out.len();
    (out, len)
}

/// The `ifc_len` `SIOCGIFCONF` reports when `ifc_buf` is NULL: the bytes all
/// records need.
pub fn ifconf_len(nics: &[NicInfo]) -> usize {
    ifaces(nics).map(|i| i.v4_addrs().len() * IFREQ_SIZE).sum()
}

// ---------------------------------------------------------------------------

/// `sock_do_ioctl()` → `inet_ioctl()`/`inet6_ioctl()`/`netlink_ioctl()` →
/// `dev_ioctl()`, with the guest lacking `CAP_NET_ADMIN` over its links.
fn answer(
    family: SocketFamily,
    cmd: u32,
    r: &mut [u8; IFREQ_SIZE],
    nics: &[NicInfo],
) -> Result<(), Errno> {
    use SocketFamily::{Inet, Inet6, Other};
    match (family, cmd) {
        (Inet, SIOCGIFADDR | SIOCGIFDSTADDR | SIOCGIFBRDADDR | SIOCGIFNETMASK) => {
            devinet_get(cmd, r, nics)
        }
        (Inet, SIOCSIFADDR | SIOCSIFDSTADDR | SIOCSIFBRDADDR | SIOCSIFNETMASK)
        | (Inet6, SIOCSIFADDR | SIOCDIFADDR) => Err(Errno::EPERM),
        (Inet, SIOCGIFPFLAGS | SIOCSIFPFLAGS) => Err(Errno::EINVAL),
        // addrconf_set_dstaddr() serves SIT tunnels only.
        (Inet6, SIOCSIFDSTADDR) => Err(Errno::ENODEV),
        (
            Inet6 | Other,
            SIOCGIFADDR | SIOCGIFDSTADDR | SIOCGIFBRDADDR | SIOCGIFNETMASK | SIOCSIFBRDADDR
            | SIOCSIFNETMASK | SIOCGIFPFLAGS | SIOCSIFPFLAGS,
        )
        | (Inet | Other, SIOCDIFADDR)
        | (Other, SIOCSIFADDR | SIOCSIFDSTADDR) => Err(Errno::ENOTTY),
        (_, SIOCGIFNAME) => {
            // dev_ifname(): strcpy over the name, the rest left as it was.
            r[IFNAMSIZ - 1] = 0;
            let index = i32::from_ne_bytes([r[UNION], r[UNION + 1], r[UNION + 2], r[UNION + 3]]);
            let iface = iface_by_index(nics, index).ok_or(Errno::ENODEV)?;
            let name = iface.name();
            r[..name.len()].copy_from_slice(name);
            r[name.len()] = 0;
            Ok(())
        }
        _ if configuring(cmd) => Err(Errno::EPERM),
        (_, SIOCGIFFLAGS | SIOCGIFMETRIC | SIOCGIFMTU | SIOCGIFHWADDR | SIOCGIFINDEX) => {
            dev_get(cmd, r, nics)
        }
        (_, SIOCGIFTXQLEN | SIOCGIFMAP | SIOCGIFSLAVE) => dev_get(cmd, r, nics),
        _ if device_specific(cmd) => {
            lookup(r, nics)?;
            Err(Errno::EOPNOTSUPP)
        }
        _ => Err(Errno::ENOTTY),
    }
}

/// The `dev_ioctl()` prelude: byte 15 forced to NUL, the device named by what
/// precedes any `:`.
fn lookup<'a>(r: &mut [u8; IFREQ_SIZE], nics: &'a [NicInfo]) -> Result<Iface<'a>, Errno> {
    r[IFNAMSIZ - 1] = 0;
    let name = &r[..IFNAMSIZ];
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    let device = name.split(|&b| b == b':').next().unwrap_or_default();
    iface_by_name(nics, device).ok_or(Errno::ENODEV)
}

/// The full name, alias suffix included, after [`lookup`].
fn full_name(r: &[u8; IFREQ_SIZE]) -> &[u8] {
    r[..IFNAMSIZ].split(|&b| b == 0).next().unwrap_or_default()
}

/// `dev_ifsioc_locked()` and `dev_get_mac_address()`.
fn dev_get(cmd: u32, r: &mut [u8; IFREQ_SIZE], nics: &[NicInfo]) -> Result<(), Errno> {
    let iface = lookup(r, nics)?;
    let u = &mut r[UNION..];
    match cmd {
        SIOCGIFFLAGS => {
            // ifr_flags is a short: IFF_LOWER_UP (bit 16) does not fit.
            let flags = iface.flags().to_le_bytes();
            u[..2].copy_from_slice(&u16::from_le_bytes([flags[0], flags[1]]).to_ne_bytes());
        }
        SIOCGIFMETRIC => u[..4].copy_from_slice(&0i32.to_ne_bytes()),
        SIOCGIFMTU => u[..4].copy_from_slice(&iface.mtu().to_ne_bytes()),
        SIOCGIFINDEX => u[..4].copy_from_slice(&iface.index.to_ne_bytes()),
        SIOCGIFTXQLEN => u[..4].copy_from_slice(&TX_QUEUE_LEN.to_ne_bytes()),
        // struct ifmap: mem_start, mem_end, base_addr, irq, dma, port (21
        // bytes written field by field; the padding is left alone).
        SIOCGIFMAP => u[..21].fill(0),
        SIOCGIFHWADDR => {
            // sa_family, then the 6 address bytes; the rest of sa_data is left alone.
            u[..2].copy_from_slice(&iface.arphrd().to_ne_bytes());
            u[2..8].copy_from_slice(&iface.hw_addr());
        }
        _ => return Err(Errno::EINVAL), // SIOCGIFSLAVE: no bonding
    }
    Ok(())
}

/// `devinet_ioctl()` for the four reads.
fn devinet_get(cmd: u32, r: &mut [u8; IFREQ_SIZE], nics: &[NicInfo]) -> Result<(), Errno> {
    let given_family = u16::from_ne_bytes([r[UNION], r[UNION + 1]]);
    let given_addr = Ipv4Addr::new(r[UNION + 4], r[UNION + 5], r[UNION + 6], r[UNION + 7]);
    let iface = lookup(r, nics)?;
    // Addresses are labelled with the device name: an alias names none.
    let addrs: Vec<V4Addr> = if full_name(r) == iface.name() {
        iface.v4_addrs()
    } else {
        Vec::new()
    };
    let chosen = addrs
        .iter()
        .find(|a| given_family == AF_INET && a.addr == given_addr)
        .or(addrs.first())
        .ok_or(Errno::EADDRNOTAVAIL)?;
    let value = match cmd {
        SIOCGIFADDR | SIOCGIFDSTADDR => chosen.addr,
        SIOCGIFBRDADDR => chosen.broadcast.unwrap_or(Ipv4Addr::UNSPECIFIED),
        _ => chosen.netmask(),
    };
    put_sockaddr_in(r, value);
    Ok(())
}

/// A `struct sockaddr_in` (16 bytes) at the union.
fn put_sockaddr_in(r: &mut [u8; IFREQ_SIZE], addr: Ipv4Addr) {
    let sin = &mut r[UNION..UNION + 16];
    sin.fill(0);
    sin[..2].copy_from_slice(&AF_INET.to_ne_bytes());
    sin[4..8].copy_from_slice(&addr.octets());
}

#[cfg(test)]
mod tests {
    use netstack::IfAddr;

    use super::*;
    use crate::netlink::tests::{eth0, lo, nics};

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// An ifreq as the probe programs built it: the name, the rest 0xAA.
    fn ifr(name: &[u8]) -> [u8; IFREQ_SIZE] {
        let mut r = [0xaa; IFREQ_SIZE];
        r[..IFNAMSIZ].fill(0);
        r[..name.len()].copy_from_slice(name);
        r
    }

    fn run(family: SocketFamily, cmd: u32, mut r: [u8; IFREQ_SIZE]) -> Result<String, Errno> {
        ifreq_ioctl_on(family, cmd, &mut r, &nics())
            .map(|()| r.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Linux 6.18, unprivileged, every 0x89xx command on each socket family,
    /// naming an existing device, then an unknown one (one character per
    /// command from 0x8900: `o` success, `P` EPERM, `D` ENODEV, `I` EINVAL,
    /// `N` EOPNOTSUPP, `.` ENOTTY, `-` not an ifreq ioctl).
    const KERNEL_ERRNOS: [(SocketFamily, [&str; 2]); 3] = [
        (
            SocketFamily::Inet,
            [
                ".-------...---..o.-oPoPoPoPoPoP..oPPP..o.I......PPPoII.P........--oP..-PPPN.-......---..........................oP................--............PPPNNP..........--PP............PN..............................................................NNNNNNNNNNNNNNNN",
                ".-------...---..o.-DPDPDPDPDPDP..DPPP..D.D......PPPDII.P........--DP..-PPPD.-......---..........................DP................--............PPPDDP..........--PP............PD..............................................................DDDDDDDDDDDDDDDD",
            ],
        ),
        (
            SocketFamily::Inet6,
            [
                ".-------...---..o.-oP.P.D....oP..oPPP..o.I......PPPo..PP........--oP..-PPPN.-......---..........................oP................--............PPPNNP..........--PP............PN..............................................................NNNNNNNNNNNNNNNN",
                ".-------...---..o.-DP.P.D....DP..DPPP..D.D......PPPD..PP........--DP..-PPPD.-......---..........................DP................--............PPPDDP..........--PP............PD..............................................................DDDDDDDDDDDDDDDD",
            ],
        ),
        (
            SocketFamily::Other,
            [
                ".-------...---..o.-oP........oP..oPPP..o.I......PPPo...P........--oP..-PPPN.-......---..........................oP................--............PPPNNP..........--PP............PN..............................................................NNNNNNNNNNNNNNNN",
                ".-------...---..o.-DP........DP..DPPP..D.D......PPPD...P........--DP..-PPPD.-......---..........................DP................--............PPPDDP..........--PP............PD..............................................................DDDDDDDDDDDDDDDD",
            ],
        ),
    ];

    #[test]
    fn every_command_answers_what_linux_answers_without_cap_net_admin() {
        for (family, sweeps) in KERNEL_ERRNOS {
            for (sweep, name) in sweeps.iter().zip([&b"eth0"[..], b"nosuchdev"]) {
                for (cmd, code) in (0x8900..).zip(sweep.chars()) {
                    let want = match code {
                        '-' => continue,
                        'o' => Ok(()),
                        'P' => Err(Errno::EPERM),
                        'D' => Err(Errno::ENODEV),
                        'I' => Err(Errno::EINVAL),
                        'N' => Err(Errno::EOPNOTSUPP),
                        _ => Err(Errno::ENOTTY),
                    };
                    let mut r = ifr(name);
                    r[UNION..UNION + 4].copy_from_slice(&1i32.to_ne_bytes()); // for SIOCGIFNAME
                    let got = ifreq_ioctl_on(family, cmd, &mut r, &nics());
                    assert_eq!(
                        got,
                        want,
                        "{family:?} {cmd:#x} {:?}",
                        String::from_utf8_lossy(name)
                    );
                    if sweep == &sweeps[0] {
                        assert_eq!(
                            is_ifreq_ioctl(family, cmd),
                            code != '.',
                            "{family:?} {cmd:#x}"
                        );
                    }
                }
            }
        }
        // The brief's entry point is the AF_INET one.
        assert_eq!(ifreq_ioctl(SIOCGIFADDR, &mut ifr(b"lo"), &nics()), Ok(()));
        assert_eq!(
            ifreq_ioctl(0x8900, &mut ifr(b"lo"), &nics()),
            Err(Errno::ENOTTY)
        );
        assert_eq!(
            ifreq_ioctl(SIOCGIFCONF, &mut ifr(b"lo"), &nics()),
            Err(Errno::ENOTTY)
        );
    }

    #[test]
    fn reads_match_the_kernel_byte_for_byte() {
        // (command, lo, eth0) as Linux wrote them over 0xAA, on an AF_INET socket.
        let golden = [
            (
                SIOCGIFFLAGS,
                "6c6f00000000000000000000000000004900aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "657468300000000000000000000000004310aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            (
                SIOCGIFADDR,
                "6c6f0000000000000000000000000000020000007f0000010000000000000000aaaaaaaaaaaaaaaa",
                "65746830000000000000000000000000020000000a00020f0000000000000000aaaaaaaaaaaaaaaa",
            ),
            (
                SIOCGIFDSTADDR,
                "6c6f0000000000000000000000000000020000007f0000010000000000000000aaaaaaaaaaaaaaaa",
                "65746830000000000000000000000000020000000a00020f0000000000000000aaaaaaaaaaaaaaaa",
            ),
            (
                SIOCGIFBRDADDR,
                "6c6f000000000000000000000000000002000000000000000000000000000000aaaaaaaaaaaaaaaa",
                "65746830000000000000000000000000020000000a0002ff0000000000000000aaaaaaaaaaaaaaaa",
            ),
            (
                SIOCGIFNETMASK,
                "6c6f000000000000000000000000000002000000ff0000000000000000000000aaaaaaaaaaaaaaaa",
                "6574683000000000000000000000000002000000ffffff000000000000000000aaaaaaaaaaaaaaaa",
            ),
            (
                SIOCGIFMETRIC,
                "6c6f000000000000000000000000000000000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "6574683000000000000000000000000000000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            (
                SIOCGIFMTU,
                "6c6f000000000000000000000000000000000100aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "65746830000000000000000000000000dc050000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            (
                SIOCGIFHWADDR,
                "6c6f00000000000000000000000000000403000000000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "6574683000000000000000000000000001000242ac110002aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            (
                SIOCGIFINDEX,
                "6c6f000000000000000000000000000001000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "6574683000000000000000000000000002000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            (
                SIOCGIFTXQLEN,
                "6c6f0000000000000000000000000000e8030000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "65746830000000000000000000000000e8030000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            (
                SIOCGIFMAP,
                "6c6f0000000000000000000000000000000000000000000000000000000000000000000000aaaaaa",
                "65746830000000000000000000000000000000000000000000000000000000000000000000aaaaaa",
            ),
        ];
        for (cmd, lo, eth) in golden {
            assert_eq!(
                run(SocketFamily::Inet, cmd, ifr(b"lo")).as_deref(),
                Ok(lo),
                "{cmd:#x}"
            );
            assert_eq!(
                run(SocketFamily::Inet, cmd, ifr(b"eth0")).as_deref(),
                Ok(eth),
                "{cmd:#x}"
            );
        }
        // The device reads are the same on the other families.
        assert_eq!(
            run(SocketFamily::Other, SIOCGIFHWADDR, ifr(b"eth0")).unwrap(),
            golden[7].2
        );
    }

    #[test]
    fn names_are_read_as_dev_ioctl_reads_them() {
        let inet = SocketFamily::Inet;
        // Bytes after the NUL survive, but byte 15 is zeroed.
        let got = run(inet, SIOCGIFFLAGS, ifr(b"lo\0ZZZZZZZZZZZZZ"));
        assert_eq!(
            got.unwrap(),
            "6c6f005a5a5a5a5a5a5a5a5a5a5a5a004900aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        );
        // An alias finds the device, not an address.
        let alias = ifr(b"eth0:1\0ZZZZZZZZZ");
        assert_eq!(
            run(inet, SIOCGIFFLAGS, alias).unwrap(),
            "657468303a31005a5a5a5a5a5a5a5a004310aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        );
        assert_eq!(
            run(inet, SIOCGIFHWADDR, alias).unwrap(),
            "657468303a31005a5a5a5a5a5a5a5a0001000242ac110002aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        );
        assert_eq!(run(inet, SIOCGIFADDR, alias), Err(Errno::EADDRNOTAVAIL));
        assert_eq!(
            run(inet, SIOCGIFADDR, ifr(b"eth0:")),
            Err(Errno::EADDRNOTAVAIL)
        );
        assert_eq!(run(inet, SIOCGIFFLAGS, ifr(b":")), Err(Errno::ENODEV));
        assert_eq!(run(inet, SIOCGIFFLAGS, ifr(b"")), Err(Errno::ENODEV));
        // Sixteen bytes without a NUL: cut to fifteen.
        assert_eq!(
            run(inet, SIOCGIFFLAGS, ifr(b"abcdefghijklmnop")),
            Err(Errno::ENODEV)
        );
        let mut long = eth0();
        long.name = "dum0123456789ab".into();
        let nics = [lo(), long];
        let mut r = ifr(b"dum0123456789abX");
        assert_eq!(ifreq_ioctl(SIOCGIFINDEX, &mut r, &nics), Ok(()));
        assert_eq!(unhex("64756d30313233343536373839616200"), r[..16]);
        assert_eq!(r[16..20], 2i32.to_ne_bytes());
    }

    #[test]
    fn address_reads_pick_the_given_address_or_the_first() {
        let mut eth = eth0();
        eth.addrs.push(IfAddr {
            addr: "10.0.2.16".parse().unwrap(),
            prefix_len: 24,
        });
        let nics = [lo(), eth];
        let with = |family: u16, addr: [u8; 4], cmd: u32| {
            let mut r = ifr(b"eth0");
            r[16..18].copy_from_slice(&family.to_ne_bytes());
            r[20..24].copy_from_slice(&addr);
            ifreq_ioctl(cmd, &mut r, &nics).map(|()| r[16..32].to_vec())
        };
        let sin = |a: [u8; 4]| [vec![2, 0, 0, 0], a.to_vec(), vec![0; 8]].concat();
        assert_eq!(
            with(2, [10, 0, 2, 16], SIOCGIFADDR),
            Ok(sin([10, 0, 2, 16]))
        );
        assert_eq!(with(2, [10, 9, 9, 9], SIOCGIFADDR), Ok(sin([10, 0, 2, 15])));
        assert_eq!(
            with(10, [10, 0, 2, 16], SIOCGIFADDR),
            Ok(sin([10, 0, 2, 15]))
        );
        assert_eq!(
            with(2, [10, 0, 2, 16], SIOCGIFNETMASK),
            Ok(sin([255, 255, 255, 0]))
        );
        assert_eq!(
            with(2, [10, 0, 2, 16], SIOCGIFBRDADDR),
            Ok(sin([10, 0, 2, 255]))
        );
        // No IPv4 address at all.
        let mut v6only = eth0();
        v6only.addrs.retain(|a| a.addr.is_ipv6());
        let nics = [lo(), v6only];
        for cmd in [SIOCGIFADDR, SIOCGIFBRDADDR, SIOCGIFNETMASK, SIOCGIFDSTADDR] {
            assert_eq!(
                ifreq_ioctl(cmd, &mut ifr(b"eth0"), &nics),
                Err(Errno::EADDRNOTAVAIL)
            );
        }
        assert_eq!(ifreq_ioctl(SIOCGIFFLAGS, &mut ifr(b"eth0"), &nics), Ok(()));
    }

    #[test]
    fn siocgifname_looks_up_the_index() {
        let by_index = |index: i32, name: &[u8]| {
            let mut r = ifr(name);
            r[..IFNAMSIZ].fill(0xaa);
            r[..name.len()].copy_from_slice(name);
            r[16..20].copy_from_slice(&index.to_ne_bytes());
            run(SocketFamily::Inet, SIOCGIFNAME, r)
        };
        assert_eq!(
            by_index(2, b"").unwrap(),
            "6574683000aaaaaaaaaaaaaaaaaaaa0002000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        );
        assert_eq!(by_index(1, b"eth0").unwrap()[..16], *"6c6f0030aaaaaaaa");
        for index in [0, -1, 3, 99, i32::MIN] {
            assert_eq!(by_index(index, b""), Err(Errno::ENODEV));
        }
    }

    #[test]
    fn errors_leave_the_request_alone() {
        let mut r = ifr(b"nosuch\0ZZZZZZZZZ");
        let before = r;
        assert_eq!(
            ifreq_ioctl(SIOCGIFFLAGS, &mut r, &nics()),
            Err(Errno::ENODEV)
        );
        assert_eq!(r, before);
    }

    #[test]
    fn ifconf_lists_whole_records_that_fit() {
        let mut eth = eth0();
        eth.addrs.push(IfAddr {
            addr: "10.0.3.1".parse().unwrap(),
            prefix_len: 24,
        });
        eth.addrs.push(IfAddr {
            addr: "10.0.2.16".parse().unwrap(),
            prefix_len: 24,
        });
        let nics = [lo(), eth];
        // As Linux listed the same addresses: primaries, then the secondary.
        let records = [
            "6c6f0000000000000000000000000000020000007f00000100000000000000000000000000000000",
            "65746830000000000000000000000000020000000a00020f00000000000000000000000000000000",
            "65746830000000000000000000000000020000000a00030100000000000000000000000000000000",
            "65746830000000000000000000000000020000000a00021000000000000000000000000000000000",
        ];
        assert_eq!(ifconf_len(&nics), 160);
        for (buf_len, n) in [
            (0, 0),
            (39, 0),
            (40, 1),
            (100, 2),
            (159, 3),
            (160, 4),
            (500, 4),
        ] {
            let (bytes, len) = ifconf(&nics, buf_len);
            assert_eq!(len, n * IFREQ_SIZE, "buf_len {buf_len}");
            assert_eq!(bytes, unhex(&records[..n].concat()));
        }
        assert_eq!(ifconf_len(&[]), 0);
    }

    #[test]
    fn random_requests_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let nics = nics();
        let families = [SocketFamily::Inet, SocketFamily::Inet6, SocketFamily::Other];
        for _ in 0..50_000 {
            let mut r = [0u8; IFREQ_SIZE];
            r.iter_mut().for_each(|b| *b = next() as u8);
            if next() % 2 == 0 {
                let name: &[u8] = [&b"lo\0"[..], b"eth0\0", b"eth0:1\0"][(next() % 3) as usize];
                r[..name.len()].copy_from_slice(name);
            }
            let cmd = if next() % 4 == 0 {
                next() as u32
            } else {
                0x8900 + (next() % 256) as u32
            };
            let _ = ifreq_ioctl_on(families[(next() % 3) as usize], cmd, &mut r, &nics);
        }
        let _ = ifconf(&nics, usize::MAX);
    }
}
