//! The command line.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, Subcommand};
use netstack::nat::Publish;

/// A network-centric container sandbox: every socket of the guest is served
/// by a user-space TCP/IP stack.
#[derive(Debug, Parser)]
#[command(name = "smolvisor", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a sandbox (new namespaces, copy-on-write root file
    /// system, sockets served by the Sentry).
    Do(DoArgs),
}

#[derive(Debug, clap::Args)]
pub struct DoArgs {
    /// Network mode: nat (a user-mode gateway in the Sentry: the guest's
    /// eth0 is 10.0.2.15/24, the gateway 10.0.2.2, DNS 10.0.2.3), none
    /// (loopback only), tap:NAME (an existing TAP device), or sandbox (take
    /// over the interfaces of --netns).
    #[arg(long, default_value = "nat", value_name = "MODE")]
    pub network: Network,
    /// With --network sandbox: the network namespace whose interfaces the
    /// sandbox takes over (their addresses move into the sandbox until it ends).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// With nat: forward a host port into the guest, as
    /// [HOSTIP:]HOSTPORT:GUESTPORT[/udp] (repeatable; every address by default).
    #[arg(short = 'p', long = "publish", value_name = "MAPPING")]
    pub publish: Vec<Publish>,
    /// With nat: the gateway's address (10.0.2.2) reaches the host's
    /// 127.0.0.1, which is otherwise out of the guest's reach.
    #[arg(long)]
    pub allow_host_loopback: bool,
    /// With tap:NAME: the NIC's address, as ADDR/PREFIX (repeatable).
    #[arg(long = "address", value_name = "ADDR/PREFIX")]
    pub addresses: Vec<IfAddrArg>,
    /// With tap:NAME: the default gateway (IPv4 or IPv6; repeatable, one per family).
    #[arg(long = "gateway", value_name = "ADDR")]
    pub gateways: Vec<IpAddr>,
    /// Capture every frame of every NIC, loopback included, both
    /// directions, as pcapng to FILE (`-` for standard output; the guest's
    /// standard output then goes to standard error).
    #[arg(long, value_name = "FILE")]
    pub pcap_log: Option<PathBuf>,
    /// Bytes kept of each captured frame (0: whole frames).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub pcap_snaplen: u32,
    /// Rotate the capture when a file would grow past BYTES: a ring of
    /// --pcap-max-files files, FILE, FILE.1, ..., reused in turn.
    #[arg(long, value_name = "BYTES")]
    pub pcap_max_size: Option<u64>,
    /// Files in the capture's ring (with --pcap-max-size).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub pcap_max_files: usize,
    /// Record every trapped system call, its arguments and its answer.
    #[arg(long, value_name = "FILE")]
    pub debug_log: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// How the sandbox reaches the network (`--network`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Loopback only.
    None,
    /// A user-mode NAT gateway.
    Nat,
    /// An existing TAP device.
    Tap(String),
    /// Take over the interfaces of the current network namespace.
    Sandbox,
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Network::None => f.write_str("none"),
            Network::Nat => f.write_str("nat"),
            Network::Tap(name) => write!(f, "tap:{name}"),
            Network::Sandbox => f.write_str("sandbox"),
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Network::None),
            "nat" => Ok(Network::Nat),
            "sandbox" => Ok(Network::Sandbox),
            _ => match s.strip_prefix("tap:") {
                Some(name) if !name.is_empty() => Ok(Network::Tap(name.to_owned())),
                _ => Err(format!(
                    "unknown network mode {s:?} (expected none, nat, tap:NAME or sandbox)"
                )),
            },
        }
    }
}

/// An interface address, `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddrArg(pub netstack::IfAddr);

impl FromStr for IfAddrArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad address {s:?} (expected ADDR/PREFIX, e.g. 192.168.7.2/24)");
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        if prefix_len > if addr.is_ipv4() { 32 } else { 128 } {
            return Err(bad());
        }
        Ok(IfAddrArg(netstack::IfAddr { addr, prefix_len }))
    }
}

impl DoArgs {
    /// Flags that only mean something in another network mode are errors.
    pub fn check(&self) -> Result<(), String> {
        if self.pcap_max_size.is_some() && self.pcap_log.is_none() {
            return Err("--pcap-max-size needs --pcap-log FILE".into());
        }
        let tap = matches!(self.network, Network::Tap(_));
        if !tap && (!self.addresses.is_empty() || !self.gateways.is_empty()) {
            return Err("--address and --gateway need --network tap:NAME".into());
        }
        if tap && self.addresses.is_empty() {
            return Err("--network tap:NAME needs --address ADDR/PREFIX".into());
        }
        let nat = self.network == Network::Nat;
        if !nat && (!self.publish.is_empty() || self.allow_host_loopback) {
            return Err("--publish and --allow-host-loopback need --network nat".into());
        }
        match (&self.network, &self.netns) {
            (Network::Sandbox, None) => Err("--network sandbox needs --netns PATH".into()),
            (Network::Sandbox, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err("--netns needs --network sandbox".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes_parse_and_print_back() {
        for text in ["none", "nat", "sandbox", "tap:tap0"] {
            let mode: Network = text.parse().unwrap();
            assert_eq!(mode.to_string(), text);
        }
        assert_eq!("tap:x".parse(), Ok(Network::Tap("x".into())));
        for bad in ["", "tap:", "host", "NAT"] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?}");
        }
    }

    fn args(line: &[&str]) -> Result<DoArgs, String> {
        let cli = Cli::try_parse_from(line).map_err(|e| e.to_string())?;
        let Command::Do(a) = cli.command;
        a.check()?;
        Ok(a)
    }

    #[test]
    fn nat_is_the_default_and_mode_flags_must_match_the_mode() {
        let a = args(&["smolvisor", "do", "true"]).unwrap();
        assert_eq!(a.network, Network::Nat);
        let a = args(&[
            "smolvisor",
            "do",
            "-p",
            "8080:80",
            "-p",
            "53:53/udp",
            "true",
        ])
        .unwrap();
        assert_eq!(a.publish.len(), 2);
        assert!(a.publish[1].udp);
        assert!(args(&["smolvisor", "do", "--network", "none", "-p", "1:1", "true"]).is_err());
        assert!(args(&["smolvisor", "do", "--network", "sandbox", "true"]).is_err());
        assert!(args(&["smolvisor", "do", "--netns", "/run/netns/x", "true"]).is_err());
        assert!(args(&["smolvisor", "do", "-p", "80", "true"]).is_err());
        let a = args(&[
            "smolvisor",
            "do",
            "--network",
            "sandbox",
            "--netns",
            "/x",
            "true",
        ]);
        assert_eq!(a.unwrap().netns, Some(PathBuf::from("/x")));
    }
}
