//! The Gofer's process: started by `smolvisor do` once the guest's tree is
//! built, as `smolvisor gofer` (a role of this binary, run afresh with
//! `execve` so that it inherits nothing of the runtime's threads).
//!
//! In: on its standard input, one end of a SOCK_SEQPACKET pair whose first
//! message carries the writable tree (the `open_tree` clone) and the host's
//! `/proc`; its standard output is the file log (`--file-log`) or
//! `/dev/null`. It then confines itself — a network namespace of its own
//! with nothing in it, a root that is the tree, the capabilities of a file
//! server only, and [`sentry::filter_files::gofer_table`] — and serves the
//! Sentry's requests on that same socket until the Sentry closes it.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use caps::Capability;
use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, unshare};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::sys::stat::Mode;

type Error = Box<dyn std::error::Error>;

/// What the Gofer may do as root: act on files whatever their owner and
/// mode, as the guest's root would, and set `trusted.*` xattrs (which
/// takes CAP_SYS_ADMIN; its filter leaves nothing else of that capability
/// reachable: no mount, namespace or handle call). Each request is made
/// with the calling thread's credentials instead (`gofer::creds`): its
/// effective capabilities within these, its fsuid, fsgid and groups, which
/// CAP_SETUID and CAP_SETGID let the Gofer take on (its filter allows only
/// `setfsuid`, `setfsgid` and `setgroups` of those calls).
const KEPT: &[Capability] = &[
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_SYS_ADMIN,
];

/// The first message's bytes (with the tree and /proc beside it).
const HELLO: &[u8] = b"gofer 1";

/// A running Gofer, and the Sentry's end of its channel.
#[derive(Debug)]
pub struct Started {
    pub child: Child,
    pub channel: OwnedFd,
}

/// Starts a Gofer serving `tree`, logging to `log`.
pub fn start(tree: OwnedFd, log: Option<&Path>) -> Result<Started, Error> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let proc = open(
        "/proc",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let out = match log {
        Some(p) => Stdio::from(
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("opening the file log {}: {e}", p.display()))?,
        ),
        None => Stdio::null(),
    };
    let child = Command::new("/proc/self/exe")
        .arg("gofer")
        .stdin(Stdio::from(theirs))
        .stdout(out)
        .spawn()
        .map_err(|e| format!("starting the Gofer: {e}"))?;
    let logging = [u8::from(log.is_some())];
    let hello = [HELLO, &logging].concat();
    gofer::sys::send(ours.as_fd(), &hello, &[tree.as_raw_fd(), proc.as_raw_fd()]).map_err(|e| {
        format!(
            "handing the tree to the Gofer: {}",
            nix::errno::Errno::from_raw(e)
        )
    })?;
    // Only the Gofer keeps a writable handle on the guest's files.
    drop(tree);
    Ok(Started {
        child,
        channel: ours,
    })
}

/// `smolvisor gofer`: the Gofer's whole life.
pub fn serve() -> Result<i32, Error> {
    let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
    let mut buf = [0u8; 64];
    let (len, mut fds) = gofer::sys::recv(stdin.as_fd(), &mut buf, 2)
        .map_err(nix::errno::Errno::from_raw)?
        .ok_or("the runtime closed the Gofer's channel")?;
    if len != HELLO.len() + 1 || &buf[..HELLO.len()] != HELLO || fds.len() != 2 {
        return Err("the Gofer's first message is not the runtime's".into());
    }
    let logging = buf[HELLO.len()] == 1;
    let proc = fds.pop().ok_or("no /proc")?;
    let tree = fds.pop().ok_or("no tree")?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    let _ = nix::sys::prctl::set_name(c"smolvisor-gofer");
    // No network: not even a loopback it could reach.
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)?;
    // Its root is the tree: a path that slips past openat2's checks still
    // names nothing of the host's.
    nix::unistd::fchdir(&tree)?;
    nix::unistd::chroot(".")?;
    nix::unistd::chdir("/")?;
    // The guest's umask is applied to each mode it asks for; the Gofer's
    // own must take nothing more away.
    nix::sys::stat::umask(Mode::empty());
    sentry::privileges::shed_thread(KEPT)?;
    nix::sys::prctl::set_dumpable(false)?;
    let log = logging.then(|| {
        File::from(
            std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .expect("standard output"),
        )
    });
    // Its own credentials (taken back after each request) are read before
    // its filter shuts capget and getgroups out.
    let mut g = gofer::Gofer::new(tree, proc, log).map_err(nix::errno::Errno::from_raw)?;
    let filter = sentry::filter::compile(&sentry::filter_files::gofer_table())?;
    filter.load().map_err(|e| e.to_string())?;
    match g.serve(stdin.as_fd()) {
        Ok(()) => Ok(0),
        Err(e) => Err(format!("the Gofer stopped: {}", nix::errno::Errno::from_raw(e)).into()),
    }
}
