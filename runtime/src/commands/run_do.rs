//! `smolvisor do`: run a command sandboxed, with the host's root file system
//! behind a copy-on-write layer.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;

use netstack::nat::{Nat, NatConfig};
use sentry::{Sentry, SentryConfig, SentryNetwork, SentryNic};

use crate::cli::{DoArgs, Network};
use crate::sandbox::{self, GuestSpec};

type Error = Box<dyn std::error::Error>;

pub fn run(args: DoArgs) -> Result<i32, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err("`smolvisor do` must run as root (it creates namespaces and mounts)".into());
    }
    args.check()?;
    let mut files = Vec::new();
    let net = network(&args, &mut files)?;
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
    Ok(sentry.run()?)
}

/// The NICs for `--network`, set up before the guest starts, so that a
/// busy published port or a missing device fails before anything runs.
/// Files the guest needs (its resolver) go into `files`.
fn network(args: &DoArgs, files: &mut Vec<(PathBuf, Vec<u8>)>) -> Result<SentryNetwork, Error> {
    let mut net = SentryNetwork::default();
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
                link: Box::new(link),
                config,
                routes: Vec::new(),
            });
            net.nat = Some(nat);
            files.push((
                PathBuf::from("/etc/resolv.conf"),
                format!("nameserver {dns}\n").into_bytes(),
            ));
        }
        other => return Err(format!("network mode {other} is not available yet").into()),
    }
    Ok(net)
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
