//! `smolvisor do`: run a command sandboxed, with the host's root file system
//! behind a copy-on-write layer.

use std::os::fd::AsFd;

use sentry::{Sentry, SentryConfig};

use crate::cli::{DoArgs, Network};
use crate::sandbox::{self, GuestSpec};

pub fn run(args: DoArgs) -> Result<i32, Box<dyn std::error::Error>> {
    if !nix::unistd::geteuid().is_root() {
        return Err("`smolvisor do` must run as root (it creates namespaces and mounts)".into());
    }
    if args.network != Network::None {
        return Err(format!(
            "network mode {} is not available yet; use --network none",
            args.network
        )
        .into());
    }
    let cwd = std::env::current_dir()?;
    let spec = GuestSpec {
        argv: args.command,
        cwd,
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
    let sentry = match Sentry::new(&cfg, guest.listener, guest.pid, guest.pidfd) {
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
