//! The command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, Subcommand};

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
    /// Network mode: none (loopback only). Coming: nat, tap:NAME, sandbox.
    #[arg(long, default_value = "none", value_name = "MODE")]
    pub network: Network,
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
}
