//! The sandbox's network for `--network`: the NICs, and where their frames
//! go (a NAT gateway, a TAP device, or the interfaces of a namespace taken
//! over for the sandbox, [`takeover`]), all set up before the guest starts
//! and handed to the Sentry.

pub mod impair;
pub mod takeover;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use netstack::link::{Capture, CaptureInterface, DnsRelay, Impairer, Layered, Loopback, TapLink};
use netstack::nat::{Nat, NatConfig};
use netstack::{Link, NicConfig, NicSetup};
use sentry::SentryNetwork;

use self::impair::ImpairSpec;
use crate::cli::{DoArgs, Network, OciNetwork};

type Error = Box<dyn std::error::Error>;

/// Docker's embedded DNS resolver, on user-defined networks.
const DOCKER_DNS: std::net::SocketAddrV4 =
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(127, 0, 0, 11), 53);

/// What `--network` set up.
#[derive(Debug)]
pub struct Networking {
    /// The NICs and the gateway, for the Sentry.
    pub sentry: SentryNetwork,
    /// Files the guest sees instead of the host's (the NAT's resolver).
    pub guest_files: Vec<(PathBuf, Vec<u8>)>,
    /// In sandbox mode, the process that gives the namespace its addresses back.
    pub restore: Option<Restorer>,
}

/// Gives a namespace taken over by `sandbox` mode its addresses and routes
/// back when smolvisor ends, however it ends: a [`watcher`](crate::watcher)
/// child, forked before the Sentry confines itself (after which it may not
/// enter a namespace).
#[derive(Debug)]
pub struct Restorer(crate::watcher::Watcher);

impl Restorer {
    fn spawn(restore: takeover::Restore) -> Result<Restorer, Error> {
        match crate::watcher::fork(c"smolvisor-restor", &[])? {
            crate::watcher::Forked::Parent(watcher) => {
                // The child's copy does the work; this one must not, on drop.
                restore.disarm();
                Ok(Restorer(watcher))
            }
            crate::watcher::Forked::Child => {
                let status = match restore.restore() {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("smolvisor: putting the namespace's addresses back: {e}");
                        1
                    }
                };
                crate::sandbox::sys::exit_now(status)
            }
        }
    }

    /// Lets the child restore now, and waits until it has.
    pub fn finish(self) -> Result<(), Error> {
        match self.0.finish()? {
            nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
            other => Err(format!("restoring the namespace failed ({other:?})").into()),
        }
    }
}

/// The NICs for `--network`, set up before the guest starts, so that a
/// busy published port or a missing device fails before anything runs.
pub fn build(args: &DoArgs, capture: Option<&Capture>) -> Result<Networking, Error> {
    let wrap = NicWrap {
        capture,
        impair: &args.impair,
    };
    let sniff = |link: Box<dyn Link>, name: &str| wrap.wrap(link, name).0;
    // Loopback hands each frame straight back: one copy per packet.
    let loopback = (capture.is_some() || impair::for_nic(&args.impair, "lo").is_some())
        .then(|| sniff(Box::new(Loopback::new()), "lo"));
    let mut out = Networking {
        sentry: SentryNetwork {
            loopback,
            ..SentryNetwork::default()
        },
        guest_files: Vec::new(),
        restore: None,
    };
    let net = &mut out.sentry;
    match &args.network {
        Network::None => {}
        Network::Nat => {
            let cfg = NatConfig {
                dns_upstream: host_resolver(),
                host_loopback: args.allow_host_loopback,
                publish: args.publish.clone(),
                ..NatConfig::default()
            };
            let dns = cfg.dns;
            let (nat, link, config) = Nat::new(cfg, netstack::Instant::from_micros(0))?;
            net.nics.push(NicSetup {
                link: sniff(Box::new(link), &config.name),
                config,
                routes: Vec::new(),
                onlink: Vec::new(),
            });
            net.gateways.push(nat);
            out.guest_files.push((
                PathBuf::from("/etc/resolv.conf"),
                format!("nameserver {dns}\n").into_bytes(),
            ));
        }
        Network::Tap(name) => {
            let link = TapLink::open(name)?;
            let config = NicConfig {
                name: "eth0".into(),
                mac: guest_mac(link.device_mac()),
                addrs: args.addresses.iter().map(|a| a.0).collect(),
                gateway_v4: args.gateways.iter().find_map(|g| match g {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                }),
                gateway_v6: args.gateways.iter().find_map(|g| match g {
                    IpAddr::V6(v6) => Some(*v6),
                    IpAddr::V4(_) => None,
                }),
            };
            net.nics.push(NicSetup {
                link: sniff(Box::new(link), "eth0"),
                config,
                routes: Vec::new(),
                onlink: Vec::new(),
            });
        }
        Network::Sandbox => {
            let path = args
                .netns
                .as_deref()
                .ok_or("--network sandbox needs --netns PATH")?;
            let restore = take_over(net, path, &sniff)?;
            out.restore = Some(Restorer::spawn(restore)?);
        }
        Network::Relay => {
            let path = args
                .netns
                .as_deref()
                .ok_or("--network relay needs --netns PATH")?;
            relay(net, path, true, &sniff)?;
        }
    }
    check_impaired_nics(&args.impair, &out.sentry)?;
    Ok(out)
}

/// How each NIC's link is wrapped: impaired as `--impair` says, and
/// recorded into the capture, when there is one (by its impairer, which
/// marks the frames it drops, or else by a sniffer).
struct NicWrap<'a> {
    capture: Option<&'a Capture>,
    impair: &'a [ImpairSpec],
}

impl NicWrap<'_> {
    /// The link of NIC `name`, wrapped, and its interface in the capture.
    fn wrap(&self, link: Box<dyn Link>, name: &str) -> (Box<dyn Link>, Option<CaptureInterface>) {
        // On lo every frame sent comes back received: recorded once, when sent.
        let lo = name == "lo";
        match (impair::for_nic(self.impair, name), self.capture) {
            (Some((out, to_guest)), capture) => {
                let mut layer = Impairer::both(out, to_guest);
                let mut iface = None;
                if let Some(c) = capture {
                    let id = c.add_interface(name, link.caps().medium);
                    layer = layer.record_into(c.clone(), id);
                    if lo {
                        layer = layer.sent_only();
                    }
                    iface = Some(id);
                }
                tracing::info!("{name}: impaired, from the guest {out:?}, to it {to_guest:?}");
                (Box::new(Layered::wrap(link, layer)), iface)
            }
            (None, Some(c)) => {
                let mut s = c.wrap(link, name);
                if lo {
                    s = s.sent_only();
                }
                let iface = s.interface();
                (Box::new(s), Some(iface))
            }
            (None, None) => (link, None),
        }
    }
}

/// A `--impair` that names a NIC the sandbox does not have is an error.
fn check_impaired_nics(specs: &[ImpairSpec], net: &SentryNetwork) -> Result<(), Error> {
    let mut names: Vec<&str> = net.nics.iter().map(|n| n.config.name.as_str()).collect();
    names.push("lo");
    if !specs.is_empty() && names.iter().all(|n| impair::for_nic(specs, n).is_none()) {
        tracing::warn!(
            "--impair changes nothing: it names no NIC of the sandbox's ({}; lo only when named)",
            names.join(", ")
        );
    }
    match impair::unknown_nics(specs, &names)[..] {
        [] => Ok(()),
        [first, ..] => Err(format!(
            "--impair names {first}, but the sandbox's NICs are {}",
            names.join(", ")
        )
        .into()),
    }
}

/// `relay`: a gateway per interface of the namespace at `path` that is up
/// (IPv4 only), each serving a guest NIC with the interface's name, MAC,
/// first IPv4 address and routes, and making its host sockets in that
/// namespace (`enter`: from a thread that enters it; otherwise the caller
/// is there already). Nothing in the namespace is changed.
fn relay(net: &mut SentryNetwork, path: &Path, enter: bool, sniff: Sniff<'_>) -> Result<(), Error> {
    let seen = takeover::read_interfaces(path)?;
    if seen.is_empty() {
        tracing::warn!(
            "no interface is up in {}; the sandbox has only lo",
            path.display()
        );
    }
    for nic in seen {
        let name = nic.config.name.clone();
        let v4 = nic.config.addrs.iter().find_map(|a| match a.addr {
            IpAddr::V4(v4) => Some((v4, a.prefix_len)),
            IpAddr::V6(_) => None,
        });
        let Some((guest, prefix_len)) = v4 else {
            tracing::warn!("{name}: no IPv4 address; relay mode is IPv4 only, left out");
            continue;
        };
        if nic.config.addrs.len() > 1 {
            tracing::warn!("{name}: relay mode serves only its first IPv4 address, {guest}");
        }
        let cfg = NatConfig {
            guest,
            prefix_len,
            gateway: nic
                .config
                .gateway_v4
                .unwrap_or_else(|| stand_in_gateway(guest, prefix_len)),
            guest_mac: nic.config.mac,
            gateway_mac: guest_mac(nic.config.mac),
            relay: true,
            ..NatConfig::default()
        };
        let (mut nat, link, mut config) = Nat::new(cfg, netstack::Instant::from_micros(0))?;
        config.name = name;
        if enter {
            let ns = std::fs::File::open(path)
                .map_err(|e| format!("network namespace {}: {e}", path.display()))?;
            nat.sockets_in(ns);
        }
        let routes = nic
            .routes
            .into_iter()
            .filter(|r| r.dst.addr.is_ipv4())
            .collect();
        let onlink = nic
            .onlink
            .into_iter()
            .filter(|r| r.addr.is_ipv4())
            .collect();
        net.nics.push(NicSetup {
            link: sniff(Box::new(link), &config.name),
            config,
            routes,
            onlink,
        });
        net.gateways.push(nat);
    }
    Ok(())
}

/// A gateway address for a relay whose interface has no default route:
/// the subnet's last host (the first, when that is the guest), which a
/// subnet's real hosts rarely hold. The guest never learns it (it has no
/// route through it); the gateway stack needs one, and whoever does hold it
/// is still reached through the relay like any other address.
fn stand_in_gateway(guest: std::net::Ipv4Addr, prefix_len: u8) -> std::net::Ipv4Addr {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    let net = u32::from(guest) & mask;
    let last = (net | !mask).saturating_sub(1).max(net | 1);
    let first = net | 1;
    let pick = [last, first, u32::from(guest) ^ 1]
        .into_iter()
        .find(|&a| a != u32::from(guest))
        .unwrap_or(last);
    std::net::Ipv4Addr::from(pick)
}

/// The network of an OCI container's sandbox, from the Sentry's own
/// network namespace: its interfaces taken over (`sandbox`), relayed
/// through (`relay`), or loopback only (`none`). With `restore`, they get their addresses back at the end
/// (a namespace that outlives the container, given by path).
pub fn build_oci(
    mode: OciNetwork,
    restore: bool,
    capture: Option<&Capture>,
    impair: &[ImpairSpec],
) -> Result<Networking, Error> {
    let wrap = NicWrap { capture, impair };
    let sniff = |link: Box<dyn Link>, name: &str| wrap.wrap(link, name).0;
    // Docker's embedded resolver answers at 127.0.0.11 in the container's
    // namespace, where the Sentry lives: the guest's queries there go out
    // through host sockets (the capture still records them on lo).
    let (lo, iface) = wrap.wrap(Box::new(Loopback::new()), "lo");
    let relay_lo = DnsRelay::new(lo, DOCKER_DNS, DOCKER_DNS.into())?;
    let loopback: Box<dyn Link> = match (capture, iface) {
        (Some(c), Some(iface)) => Box::new(relay_lo.record_into(c.clone(), iface)),
        _ => Box::new(relay_lo),
    };
    let mut out = Networking {
        sentry: SentryNetwork {
            loopback: Some(loopback),
            host_sockets: true,
            ..SentryNetwork::default()
        },
        guest_files: Vec::new(),
        restore: None,
    };
    let here = Path::new("/proc/self/ns/net");
    match mode {
        OciNetwork::None => {}
        OciNetwork::Sandbox => {
            let taken = take_over(&mut out.sentry, here, &sniff)?;
            if restore {
                out.restore = Some(Restorer::spawn(taken)?);
            } else {
                // The namespace ends with the container: nothing to give back.
                taken.disarm();
            }
        }
        // The Sentry lives in the container's namespace: its gateways'
        // sockets are made there without entering it.
        OciNetwork::Relay => relay(&mut out.sentry, here, false, &sniff)?,
    }
    check_impaired_nics(impair, &out.sentry)?;
    Ok(out)
}

/// Wraps a NIC's link as [`NicWrap`] does: impaired, captured, or as it is.
type Sniff<'a> = &'a dyn Fn(Box<dyn Link>, &str) -> Box<dyn Link>;

/// Takes over the interfaces of the namespace at `path` for the Sentry.
fn take_over(
    net: &mut SentryNetwork,
    path: &Path,
    sniff: Sniff<'_>,
) -> Result<takeover::Restore, Error> {
    let taken = takeover::take_over(path)?;
    if taken.nics.is_empty() {
        tracing::warn!(
            "no interface is up in {}; the sandbox has only lo",
            path.display()
        );
    }
    for nic in taken.nics {
        for why in &nic.ignored {
            tracing::warn!("{why}");
        }
        let name = nic.config.name.clone();
        net.nics.push(nic.into_setup(|link| sniff(link, &name)));
    }
    Ok(taken.restore)
}

/// The guest's MAC on a TAP: the device's own (the host's side of the
/// wire) with its last byte changed, locally administered and unicast.
fn guest_mac(device: [u8; 6]) -> [u8; 6] {
    let mut mac = device;
    mac[0] = (mac[0] | 0x02) & !0x01;
    mac[5] ^= 0x01;
    mac
}

/// The host's first IPv4 resolver (`nameserver` in /etc/resolv.conf), which
/// the NAT's DNS forwarder passes queries to. The Sentry lives in the host's
/// network namespace, so a resolver on the host's loopback works too.
fn host_resolver() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse::<IpAddr>().ok())
            .flatten()
            .filter(IpAddr::is_ipv4)
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

#[cfg(test)]
mod tests {
    use super::stand_in_gateway;

    #[test]
    fn a_relay_without_a_gateway_stands_in_with_the_subnets_last_host() {
        let g = |guest: &str, len| stand_in_gateway(guest.parse().unwrap(), len).to_string();
        assert_eq!(g("172.18.0.2", 16), "172.18.255.254");
        assert_eq!(g("10.201.7.1", 24), "10.201.7.254");
        assert_eq!(g("10.201.7.254", 24), "10.201.7.1");
        assert_eq!(g("10.0.0.1", 31), "10.0.0.0");
        assert_eq!(g("10.0.0.9", 32), "10.0.0.8");
    }
}
