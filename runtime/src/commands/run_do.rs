//! `smolvisor do`: run a command sandboxed, with the host's root file system
//! behind a copy-on-write layer.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use netstack::link::{Capture, CaptureConfig, CaptureSummary, Loopback, Ring, TapLink};
use netstack::nat::{Nat, NatConfig};
use netstack::{Link, NicConfig};
use sentry::{Sentry, SentryConfig, SentryNetwork, SentryNic};

use crate::cli::{DoArgs, Network};
use crate::sandbox::{self, GuestSpec};

type Error = Box<dyn std::error::Error>;

pub fn run(args: DoArgs) -> Result<i32, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err("`smolvisor do` must run as root (it creates namespaces and mounts)".into());
    }
    args.check()?;
    let capture = open_capture(&args)?;
    let mut files = Vec::new();
    let net = network(&args, capture.as_ref(), &mut files)?;
    let spec = GuestSpec {
        argv: args.command,
        cwd: std::env::current_dir()?,
        files,
    };
    let guest = match sandbox::spawn(&spec) {
        Ok(g) => g,
        Err(e) => {
            // 127/126 for a command that cannot run, as shells and runsc answer.
            eprintln!("smolvisor: {e}");
            return Ok(e.exit_code());
        }
    };
    let cfg = SentryConfig {
        debug_log: args.debug_log,
        confine: true,
    };
    let pidfd = guest.pidfd.try_clone()?;
    let sentry = match Sentry::new(&cfg, net, guest.listener, guest.pid, guest.pidfd) {
        Ok(s) => s,
        Err(e) => {
            // Never leave a guest running without its Sentry.
            let _ = sentry::sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
            let _ = nix::sys::wait::waitpid(guest.pid, None);
            return Err(format!("starting the Sentry: {e}").into());
        }
    };
    let code = sentry.run()?;
    if let (Some(c), Some(to)) = (capture, &args.pcap_log) {
        report_capture(&c.finish(), to);
    }
    Ok(code)
}

/// The pcapng capture of `--pcap-log`, opened before anything runs (the
/// Sentry cannot open files once confined).
fn open_capture(args: &DoArgs) -> Result<Option<Capture>, Error> {
    let Some(path) = &args.pcap_log else {
        return Ok(None);
    };
    let cfg = CaptureConfig {
        snaplen: args.pcap_snaplen,
        ring: args.pcap_max_size.map(|max_size| Ring {
            max_size,
            max_files: args.pcap_max_files,
        }),
        ..CaptureConfig::default()
    };
    if path != Path::new("-") {
        return Ok(Some(Capture::create(path, cfg)?));
    }
    if cfg.ring.is_some() {
        return Err("--pcap-max-size needs a file, not standard output".into());
    }
    let out = std::io::stdout().as_fd().try_clone_to_owned()?;
    // The capture owns standard output now; the guest writes to standard error.
    nix::unistd::dup2_stdout(std::io::stderr())?;
    Ok(Some(Capture::from_file(File::from(out), cfg)?))
}

/// One line on standard error, as tcpdump gives at exit; dropped frames
/// (a full disk, a reader gone) are said loudly.
fn report_capture(summary: &CaptureSummary, to: &Path) {
    let written: u64 = summary.interfaces.iter().map(|i| i.written).sum();
    let per_nic: Vec<String> = summary
        .interfaces
        .iter()
        .map(|i| format!("{} {}", i.name, i.written))
        .collect();
    eprintln!(
        "smolvisor: captured {written} frames ({}) to {}",
        per_nic.join(", "),
        to.display()
    );
    let dropped = summary.dropped();
    if dropped > 0 {
        let why = summary
            .error
            .as_ref()
            .map_or_else(String::new, |e| format!(": {e}"));
        eprintln!("smolvisor: {dropped} frames could not be written to the capture{why}");
    }
}

/// The NICs for `--network`, set up before the guest starts, so that a
/// busy published port or a missing device fails before anything runs.
/// Files the guest needs (its resolver) go into `files`.
fn network(
    args: &DoArgs,
    capture: Option<&Capture>,
    files: &mut Vec<(PathBuf, Vec<u8>)>,
) -> Result<SentryNetwork, Error> {
    let sniff = |link: Box<dyn Link>, name: &str| -> Box<dyn Link> {
        match capture {
            Some(c) => Box::new(c.wrap(link, name)),
            None => link,
        }
    };
    let mut net = SentryNetwork {
        // Loopback hands each frame straight back: one copy per packet.
        loopback: capture.map(|c| Box::new(c.wrap(Loopback::new(), "lo").sent_only()) as _),
        ..SentryNetwork::default()
    };
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
            net.nics.push(SentryNic {
                link: sniff(Box::new(link), &config.name),
                config,
                routes: Vec::new(),
            });
            net.nat = Some(nat);
            files.push((
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
            net.nics.push(SentryNic {
                link: sniff(Box::new(link), "eth0"),
                config,
                routes: Vec::new(),
            });
        }
        Network::Sandbox => return Err("network mode sandbox is not available yet".into()),
    }
    Ok(net)
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
