//! Starts the guest of `smolvisor do`: the user's command in its own PID,
//! mount, UTS, IPC and (empty) network namespaces, on a copy-on-write view of
//! the host's files, under the seccomp filter whose listener the Sentry holds.
//!
//! ```text
//! P  (the caller, later the Sentry; stays in the host's namespaces)
//! └── init   pid 1 of a new PID namespace: new mount/UTS/IPC/net namespaces,
//!     │      the file tree (rootfs), then reaps and forwards signals
//!     └── command   filter loaded, listener handed to P, then execvp
//! ```
//!
//! In: a [`GuestSpec`]. Out: a [`Guest`] — the init's pid and pidfd (its exit
//! status is the sandbox's) and the seccomp listener, taken from the command
//! with `pidfd_getfd` over the start-up channel ([`handoff`]). Any failure
//! before the command runs comes back as a [`SandboxError`], with nothing left
//! behind: no process, no zombie, and never a mount in the host's namespace.

pub(crate) mod handoff;
mod init;
mod mountinfo;
mod rootfs;
pub(crate) mod sys;
mod sys_tree;
#[cfg(test)]
mod tests;

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, send, setsockopt, socketpair, sockopt,
};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use handoff::{Received, Report};

/// How long a guest that reported a failure may take to exit by itself
/// before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// What to run in the sandbox.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// The command and its arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<OsString>,
    /// The working directory inside the sandbox (the host's path; the guest
    /// sees the host's tree).
    pub cwd: PathBuf,
    /// Files the guest sees instead of the host's (absolute path, contents),
    /// such as `/etc/resolv.conf` naming the NAT's DNS forwarder. Each is a
    /// writable file in the sandbox's memory.
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// Whether a Gofer makes the guest's file changes: the guest's view is
    /// then read-only, and [`Guest::tree`] the Gofer's writable clone.
    pub gofer: bool,
}

/// A started guest: its command has been executed under the filter.
#[derive(Debug)]
pub struct Guest {
    /// Host pid of the guest's init (pid 1 of its PID namespace), a direct
    /// child of the caller. It exits with the command's status (128+N when a
    /// signal N killed it), which ends the sandbox.
    pub pid: Pid,
    /// pidfd of that init.
    pub pidfd: OwnedFd,
    /// The guest's seccomp user-notification listener. The guest holds no
    /// copy of it.
    pub listener: OwnedFd,
    /// With [`GuestSpec::gofer`]: the writable clone of the guest's mounts
    /// (a detached tree from `open_tree`), for the Gofer alone.
    pub tree: Option<OwnedFd>,
}

/// Why a guest could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The command line is empty.
    #[error("no command to run")]
    NoCommand,
    /// An argument holds a NUL byte, which `execve` cannot pass on.
    #[error("argument {0:?} contains a NUL byte")]
    NulInArgument(OsString),
    /// A system call of the runtime's own failed while starting the guest.
    #[error("{step}: {}", errno.desc())]
    Host {
        /// What the runtime was doing.
        step: &'static str,
        /// How it failed.
        errno: Errno,
    },
    /// The runtime could not take the guest's seccomp listener.
    #[error("taking the seccomp listener from the sandboxed command: {0}")]
    Listener(std::io::Error),
    /// Setting up the sandbox failed inside it: namespaces, file tree,
    /// seccomp filter (the text says which step, and why).
    #[error("setting up the sandbox: {0}")]
    Setup(String),
    /// The command could not be executed (`execvp` failed), e.g. not found.
    #[error("{program}: {}", errno.desc())]
    Exec {
        /// The command's `argv[0]`.
        program: String,
        /// Why `execvp` failed.
        errno: Errno,
    },
    /// The guest ended during start-up without saying why.
    #[error("the sandbox ended during start-up ({0})")]
    Ended(String),
    /// The guest's start-up messages made no sense.
    #[error("unexpected message from the sandbox during start-up")]
    Protocol,
}

impl SandboxError {
    /// The exit status for `smolvisor do`, as shells and runsc have it: 127
    /// when the command was not found, 126 when it could not be executed,
    /// 125 when the sandbox itself failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            SandboxError::Exec { errno, .. } => init::exec_failure_status(*errno),
            _ => init::SETUP_FAILED_STATUS,
        }
    }
}

/// Starts `spec.argv` in a new sandbox and returns once the command has been
/// executed (or could not be).
///
/// The calling thread must outlive the guest: the init dies with it
/// (`PR_SET_PDEATHSIG` follows the thread that forked). The caller stays in
/// its own namespaces; only the init is created in the new PID namespace.
pub fn spawn(spec: &GuestSpec) -> Result<Guest, SandboxError> {
    let command = prepare_command(spec)?;
    let program = spec.argv[0].to_string_lossy().into_owned();

    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(host("creating the start-up channel"))?;
    setsockopt(&ours, sockopt::PassCred, &true)
        .map_err(host("asking for credentials on the start-up channel"))?;

    let init = fork_init(&command, theirs)?;
    let pidfd = match sentry::sys::pidfd_open(init.pid.as_raw(), false) {
        Ok(fd) => fd,
        Err(e) => {
            drop(init);
            return Err(host("opening a pidfd for the sandbox's init")(errno_of(&e)));
        }
    };
    match take_listener(ours.as_fd(), init.pid, &program) {
        Ok((listener, tree)) => Ok(Guest {
            pid: init.disarm(),
            pidfd,
            listener,
            tree,
        }),
        Err(Failure::GuestEnded(reason)) => {
            let ended = init.reap(pidfd.as_fd());
            tracing::debug!("the sandbox's init ended during start-up: {ended}");
            Err(reason.unwrap_or(SandboxError::Ended(ended)))
        }
        Err(Failure::Runtime(error)) => {
            drop(init);
            Err(error)
        }
    }
}

fn prepare_command(spec: &GuestSpec) -> Result<init::Command, SandboxError> {
    if spec.argv.is_empty() {
        return Err(SandboxError::NoCommand);
    }
    let argv = spec
        .argv
        .iter()
        .map(|arg| {
            CString::new(arg.as_bytes()).map_err(|_| SandboxError::NulInArgument(arg.clone()))
        })
        .collect::<Result<_, _>>()?;
    Ok(init::Command {
        argv,
        cwd: spec.cwd.clone(),
        files: spec.files.clone(),
        gofer: spec.gofer,
    })
}

/// Forks the init into a new PID namespace. Only the init goes there: the
/// calling thread's namespace for children is restored right after the fork,
/// so its later children, and a later sandbox, are unaffected.
fn fork_init(command: &init::Command, channel: OwnedFd) -> Result<StartingInit, SandboxError> {
    let own = open(
        "/proc/thread-self/ns/pid",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(host("opening the runtime's PID namespace"))?;
    unshare(CloneFlags::CLONE_NEWPID).map_err(host("creating the sandbox's PID namespace"))?;
    let forked = match sys::fork() {
        Ok(ForkResult::Child) => init::run(channel, command),
        Ok(ForkResult::Parent { child }) => Ok(child),
        Err(e) => Err(e),
    };
    let restored = setns(&own, CloneFlags::CLONE_NEWPID);
    let init = StartingInit {
        pid: forked.map_err(host("forking the sandbox's init"))?,
        armed: true,
    };
    restored.map_err(host("returning to the runtime's PID namespace"))?;
    Ok(init)
}

/// An init that has not been handed to the caller yet: dropping it kills and
/// reaps it, so a failed start leaves nothing behind.
#[derive(Debug)]
struct StartingInit {
    pid: Pid,
    armed: bool,
}

impl StartingInit {
    /// Hands the init over to the caller.
    fn disarm(mut self) -> Pid {
        self.armed = false;
        self.pid
    }

    /// Waits for an init that reported a failure to exit by itself (so its
    /// status is the one it chose), killing it after a grace period; returns
    /// how it ended.
    fn reap(mut self, pidfd: BorrowedFd<'_>) -> String {
        self.armed = false;
        let pid = self.pid;
        let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(EXIT_GRACE).unwrap_or(PollTimeout::NONE);
        if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        describe(wait_for(pid))
    }
}

impl Drop for StartingInit {
    fn drop(&mut self) {
        if self.armed {
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
            wait_for(self.pid);
        }
    }
}

fn wait_for(pid: Pid) -> Option<WaitStatus> {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            result => return result.ok(),
        }
    }
}

fn describe(status: Option<WaitStatus>) -> String {
    match status {
        Some(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
        Some(WaitStatus::Signaled(_, signal, _)) => format!("killed by {signal}"),
        _ => "status unknown".to_owned(),
    }
}

/// How taking the listener failed.
#[derive(Debug)]
enum Failure {
    /// The guest is on its way out by itself, having said why (or not).
    GuestEnded(Option<SandboxError>),
    /// The runtime gave up; the guest must be killed.
    Runtime(SandboxError),
}

/// Reads the guest's reports until the command has been executed: takes the
/// listener the command announces, acknowledges it, and returns it at the
/// end-of-file that the command's exec causes.
fn take_listener(
    channel: BorrowedFd<'_>,
    init: Pid,
    program: &str,
) -> Result<(OwnedFd, Option<OwnedFd>), Failure> {
    let mut listener = None;
    let mut tree = None;
    loop {
        let received = handoff::receive(channel)
            .map_err(|e| Failure::Runtime(host("reading the start-up channel")(e)))?;
        let Some(Received { report, sender }) = received else {
            return match listener {
                Some(l) => Ok((l, tree)),
                None => Err(Failure::GuestEnded(None)),
            };
        };
        match report {
            Some(Report::Warning(text)) => tracing::warn!("{text}"),
            Some(Report::SetupFailed(text)) => {
                return Err(Failure::GuestEnded(Some(SandboxError::Setup(text))));
            }
            Some(Report::ExecFailed(errno)) => {
                return Err(Failure::GuestEnded(Some(SandboxError::Exec {
                    program: program.to_owned(),
                    errno,
                })));
            }
            Some(Report::Listener(number)) if listener.is_none() => {
                // The kernel's credentials name the command (not the init,
                // which never has a listener).
                let command = sender
                    .filter(|pid| pid.as_raw() > 0 && *pid != init)
                    .ok_or(Failure::Runtime(SandboxError::Protocol))?;
                let fd = fetch_fd(command, number).map_err(Failure::Runtime)?;
                tracing::debug!(%command, number, "took the guest's seccomp listener");
                listener = Some(fd);
                acknowledge(channel).map_err(Failure::Runtime)?;
            }
            Some(Report::Tree(number)) if tree.is_none() && listener.is_none() => {
                // Only the init holds the tree (the command does not exist yet).
                if sender != Some(init) {
                    return Err(Failure::Runtime(SandboxError::Protocol));
                }
                tree = Some(fetch_fd(init, number).map_err(Failure::Runtime)?);
                acknowledge(channel).map_err(Failure::Runtime)?;
            }
            _ => return Err(Failure::Runtime(SandboxError::Protocol)),
        }
    }
}

/// A copy of descriptor `number` of process `pid`.
pub(crate) fn fetch_fd(pid: Pid, number: i32) -> Result<OwnedFd, SandboxError> {
    let pidfd = sentry::sys::pidfd_open(pid.as_raw(), false).map_err(SandboxError::Listener)?;
    sentry::sys::pidfd_getfd(pidfd.as_fd(), number).map_err(SandboxError::Listener)
}

pub(crate) fn acknowledge(channel: BorrowedFd<'_>) -> Result<(), SandboxError> {
    loop {
        match send(
            std::os::fd::AsRawFd::as_raw_fd(&channel),
            &[handoff::ACK],
            MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(host("answering the sandboxed command")(e)),
        }
    }
}

fn host(step: &'static str) -> impl Fn(Errno) -> SandboxError {
    move |errno| SandboxError::Host { step, errno }
}

fn errno_of(error: &std::io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO))
}
