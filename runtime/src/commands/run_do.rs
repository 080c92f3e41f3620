//! `smolvisor do`: run a command sandboxed, with the host's root file system
//! behind a copy-on-write layer.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use netstack::link::{Capture, CaptureConfig, CaptureSummary, Ring};
use sentry::{Sentry, SentryConfig};

use crate::cli::DoArgs;
use crate::network;
use crate::sandbox::{self, GuestSpec};

type Error = Box<dyn std::error::Error>;

pub fn run(args: DoArgs) -> Result<i32, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err("`smolvisor do` must run as root (it creates namespaces and mounts)".into());
    }
    args.check()?;
    // Threads the set-up starts (a link's writer) keep no privileges.
    sentry::privileges::install_thread_hook();
    let capture = open_capture(&args)?;
    let net = network::build(&args, capture.as_ref())?;
    let spec = GuestSpec {
        argv: args.command,
        cwd: std::env::current_dir()?,
        files: net.guest_files,
        gofer: !args.no_gofer,
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
        tcp_memory: args.tcp_memory,
    };
    let pidfd = guest.pidfd.try_clone()?;
    let kill_guest = || {
        // Never leave a guest running without its Sentry or its Gofer.
        let _ = sentry::sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
        let _ = nix::sys::wait::waitpid(guest.pid, None);
    };
    let gofer = match guest
        .tree
        .map(|t| crate::gofer::start(t, args.file_log.as_deref()))
    {
        Some(Ok(g)) => Some(g),
        Some(Err(e)) => {
            kill_guest();
            return Err(e);
        }
        None => None,
    };
    let mut sentry = match Sentry::new(&cfg, net.sentry, guest.listener, guest.pid, guest.pidfd) {
        Ok(s) => s,
        Err(e) => {
            kill_guest();
            return Err(format!("starting the Sentry: {e}").into());
        }
    };
    let mut gofer_child = None;
    if let Some(g) = gofer {
        sentry.set_gofer(gofer::Client::new(g.channel));
        gofer_child = Some(g.child);
    }
    let code = sentry.run()?;
    if let Some(mut child) = gofer_child {
        // The Sentry's end is closed: the Gofer is on its way out.
        let _ = child.wait();
    }
    if let (Some(c), Some(to)) = (capture, &args.pcap_log) {
        report_capture(&c.finish(), to);
    }
    if let Some(r) = net.restore {
        r.finish()?;
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
