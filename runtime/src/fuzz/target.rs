//! The server under test, sandboxed as `smolvisor do` runs a command: a
//! child process of the fuzzer becomes its Sentry (confined, with the
//! guest's init below it), and the sandbox's only NIC besides `lo` is
//! `eth0`, 10.0.2.15/24, cabled to the fuzzer ([`super::link`]). The
//! fuzzer holds the cable's other end and the child's pidfd; the child's
//! exit status is the guest's (128+N when a signal N killed the server).

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use netstack::{IfAddr, NicConfig, NicSetup};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt::RcvBuf, sockopt::SndBuf,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use sentry::{Sentry, SentryConfig, SentryNetwork};

use super::FuzzError;
use super::link::SeqpacketLink;
use super::wire;
use crate::sandbox::{self, GuestSpec};

/// Status of a child whose sandbox could not be set up.
const SETUP_FAILED: i32 = 125;

/// How a sandboxed server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server was killed by this signal: a crash.
    Signal(i32),
    /// It exited with this status.
    Exit(i32),
    /// The Sentry itself died by a signal (a bug of ours, not the guest's).
    SentryDied(i32),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name =
            |n: i32| Signal::try_from(n).map_or_else(|_| format!("signal {n}"), |s| s.to_string());
        match *self {
            Ended::Signal(n) => write!(f, "killed by {}", name(n)),
            Ended::Exit(c) => write!(f, "exited with status {c}"),
            Ended::SentryDied(n) => write!(f, "its Sentry died by {}", name(n)),
        }
    }
}

/// A running sandboxed server.
#[derive(Debug)]
pub struct Target {
    pid: Pid,
    pidfd: OwnedFd,
    /// The fuzzer's end of the cable (non-blocking `SOCK_SEQPACKET`).
    pub cable: OwnedFd,
    ended: Option<Ended>,
}

impl Target {
    /// Starts `argv` in a new sandbox; its output goes to `log`.
    pub fn start(argv: &[OsString], log: &File) -> Result<Target, FuzzError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(FuzzError::host("creating the cable"))?;
        for end in [&ours, &theirs] {
            // Room for a few hundred frames each way, so that neither side
            // waits for the other within one round.
            let _ = setsockopt(end, SndBuf, &(4 << 20));
            let _ = setsockopt(end, RcvBuf, &(4 << 20));
        }
        let log = log
            .try_clone()
            .map_err(|e| FuzzError::Io("the server's log".into(), e))?;
        match super::sys::fork_single_threaded().map_err(FuzzError::host("forking the Sentry"))? {
            ForkResult::Child => {
                drop(ours);
                let code = serve(argv, theirs, log);
                sandbox::sys::exit_now(code)
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                let pidfd = sentry::sys::pidfd_open(child.as_raw(), false)
                    .map_err(|e| FuzzError::Io("a pidfd for the Sentry".into(), e))?;
                Ok(Target {
                    pid: child,
                    pidfd,
                    cable: ours,
                    ended: None,
                })
            }
        }
    }

    /// The Sentry's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Turns readable when the sandbox has ended.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// How the sandbox ended, if it has (never blocks).
    pub fn ended(&mut self) -> Option<Ended> {
        if self.ended.is_none() {
            self.ended = match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) if (129..=192).contains(&code) => {
                    Some(Ended::Signal(code - 128))
                }
                Ok(WaitStatus::Exited(_, code)) => Some(Ended::Exit(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => Some(Ended::SentryDied(sig as i32)),
                _ => None,
            };
        }
        self.ended
    }

    /// How the sandbox ended, waiting up to `wait` for it to end.
    pub fn wait_end(&mut self, wait: std::time::Duration) -> Option<Ended> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if self.ended().is_none() {
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
            let _ = poll(&mut fds, PollTimeout::from(ms));
        }
        self.ended()
    }

    /// Ends the sandbox (its init and server die with the Sentry) and
    /// reaps it; returns how it ended, if it had by itself.
    pub fn stop(mut self) -> Option<Ended> {
        let ended = self.ended();
        if ended.is_none() {
            let _ = sentry::sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
        ended
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.ended.is_none() {
            let _ = sentry::sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// The child: becomes the sandbox's Sentry; returns its exit status.
fn serve(argv: &[OsString], cable: OwnedFd, log: File) -> i32 {
    // The sandbox ends with the fuzzer.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let _ = nix::unistd::dup2_stdout(&log);
    let _ = nix::unistd::dup2_stderr(&log);
    drop(log);
    match serve_guest(argv, cable) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smolvisor fuzz: {e}");
            SETUP_FAILED
        }
    }
}

fn serve_guest(argv: &[OsString], cable: OwnedFd) -> Result<i32, Box<dyn std::error::Error>> {
    sentry::privileges::install_thread_hook();
    let nic = NicSetup {
        link: Box::new(SeqpacketLink::new(cable)),
        config: NicConfig {
            name: "eth0".into(),
            mac: wire::GUEST_MAC,
            addrs: vec![IfAddr {
                addr: wire::GUEST_IP.into(),
                prefix_len: 24,
            }],
            gateway_v4: Some(wire::PEER_IP),
            gateway_v6: None,
        },
        routes: Vec::new(),
        onlink: Vec::new(),
    };
    let net = SentryNetwork {
        nics: vec![nic],
        ..SentryNetwork::default()
    };
    // Through the shim, which makes the coverage map in the sandbox.
    let mut shimmed = vec![
        std::env::current_exe()?.into_os_string(),
        "afl-shim".into(),
        "--".into(),
    ];
    shimmed.extend_from_slice(argv);
    let spec = GuestSpec {
        argv: shimmed,
        cwd: std::env::current_dir()?,
        files: Vec::new(),
        // The server's file changes stay in its overlay, as `do --no-gofer`.
        gofer: false,
    };
    let guest = match sandbox::spawn(&spec) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("smolvisor fuzz: {e}");
            return Ok(e.exit_code());
        }
    };
    let cfg = SentryConfig {
        debug_log: None,
        confine: true,
        tcp_memory: None,
    };
    Ok(Sentry::new(&cfg, net, guest.listener, guest.pid, guest.pidfd)?.run()?)
}
