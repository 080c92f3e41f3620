//! The guest's init (pid 1 of the sandbox's PID namespace) and the start of
//! the command it runs.
//!
//! The runtime forks the init right after `unshare(CLONE_NEWPID)`. The init
//! takes its own mount, UTS, IPC and network namespaces, builds the file tree
//! ([`rootfs`](super::rootfs)), forks the command, then only reaps children
//! and forwards signals, and exits with the command's status. The command
//! loads the seccomp filter, hands its listener to the runtime
//! ([`handoff`](super::handoff)) and executes the user's program.
//!
//! Both processes are forks of the runtime: they report failures over the
//! hand-off channel and leave through `_exit`, never by returning (or
//! unwinding) into the runtime's code.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{ForkResult, Pid, execvp};

use super::handoff::{self, Report};
use super::{rootfs, sys};

/// Exit status of the init when the sandbox could not be set up.
pub(super) const SETUP_FAILED_STATUS: i32 = 125;

/// Exit status for a command that `execvp` could not run, as shells have it:
/// 127 when it was not found, 126 otherwise (e.g. permission denied).
pub(super) fn exec_failure_status(errno: Errno) -> i32 {
    if errno == Errno::ENOENT { 127 } else { 126 }
}

/// The command, prepared before the fork so the children only read it.
#[derive(Debug)]
pub(super) struct Command {
    /// `argv`, `argv[0]` being the program looked up in `PATH`.
    pub argv: Vec<CString>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    /// Files placed over the host's (see `GuestSpec::files`).
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// Whether a Gofer makes the guest's file changes (see `GuestSpec::gofer`).
    pub gofer: bool,
}

/// Signals that the init leaves alone: the terminal sends them to the whole
/// foreground process group, so the command already gets them.
const TERMINAL_SIGNALS: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// Signals that only ever concern the process that caused them.
const SYNCHRONOUS_SIGNALS: [Signal; 7] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGSYS,
    Signal::SIGABRT,
];

/// The init's whole life, in the child of the fork. Never returns.
pub(super) fn run(channel: OwnedFd, command: &Command) -> ! {
    let status =
        catch_unwind(AssertUnwindSafe(|| init(channel, command))).unwrap_or(SETUP_FAILED_STATUS);
    sys::exit_now(status)
}

fn init(channel: OwnedFd, command: &Command) -> i32 {
    let tree = match prepare(&channel, command) {
        Ok(tree) => tree,
        Err(message) => {
            report(&channel, &Report::SetupFailed(message));
            return SETUP_FAILED_STATUS;
        }
    };
    // The Gofer's writable tree goes to the runtime and must be closed
    // here before the command exists: the guest must never hold it.
    if let Some(tree) = tree {
        if handoff::send(channel.as_fd(), &Report::Tree(tree.as_raw_fd())).is_err()
            || !handoff::wait_for_ack(channel.as_fd())
        {
            return SETUP_FAILED_STATUS;
        }
        drop(tree);
    }
    // Block exactly what the init waits for, before the command exists, so
    // that neither its SIGCHLD nor a signal to forward can be lost (and
    // nothing the runtime happened to block stays blocked).
    let waited = waited_signals();
    if let Err(e) = waited.thread_set_mask() {
        report(&channel, &failure("blocking signals in the init", e));
        return SETUP_FAILED_STATUS;
    }
    match sys::fork() {
        Err(e) => {
            report(&channel, &failure("forking the command", e));
            SETUP_FAILED_STATUS
        }
        Ok(ForkResult::Child) => exec_command(&channel, command),
        Ok(ForkResult::Parent { child }) => {
            // Only the command may keep the channel: at its exec the runtime
            // must see end-of-file.
            drop(channel);
            supervise(child, &waited)
        }
    }
}

/// Everything between the fork and the command: namespaces and file tree
/// (and the Gofer's writable clone of it).
fn prepare(channel: &OwnedFd, command: &Command) -> Result<Option<OwnedFd>, String> {
    prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("setting the parent-death signal: {}", e.desc()))?;
    if runtime_gone(channel) {
        return Err("the runtime exited".to_owned());
    }
    // Best effort: the name only helps `ps`.
    let _ = prctl::set_name(c"smolvisor-init");
    sys::close_descriptors_except(&[channel.as_fd()])
        .map_err(|e| format!("closing inherited descriptors: {e}"))?;
    sys::reset_signal_dispositions();
    for signal in TERMINAL_SIGNALS {
        sys::ignore_signal(signal)
            .map_err(|e| format!("ignoring {signal} in the init: {}", e.desc()))?;
    }
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET,
    )
    .map_err(|e| format!("creating the sandbox's namespaces: {}", e.desc()))?;
    rootfs::build(
        &command.cwd,
        &command.files,
        command.gofer,
        &mut |warning| {
            report(channel, &Report::Warning(warning));
        },
    )
}

/// Whether the runtime died before the parent-death signal was armed: its
/// end of the channel is then closed.
fn runtime_gone(channel: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(channel.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

/// Every signal the init takes with `sigwait`: SIGCHLD and the ones it
/// forwards to the command (all but the terminal's and the synchronous ones).
fn waited_signals() -> SigSet {
    let mut set = SigSet::all();
    for signal in TERMINAL_SIGNALS.iter().chain(&SYNCHRONOUS_SIGNALS) {
        set.remove(*signal);
    }
    set
}

/// The init's loop: reap every child, forward signals to the command, and
/// return the command's status once it ended (128+N for signal N).
fn supervise(command: Pid, waited: &SigSet) -> i32 {
    loop {
        loop {
            match sys::reap_any() {
                Ok(Some((pid, ended))) if pid == command => {
                    return match ended {
                        sys::Ended::Exited(code) => code,
                        sys::Ended::Killed(signal) => 128 + signal,
                    };
                }
                Ok(Some(_)) | Err(Errno::EINTR) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        match sys::wait_for_signal(waited) {
            Ok(libc::SIGCHLD) | Err(_) => {}
            Ok(signal) => {
                // The command may just have exited; the next reap sees it.
                let _ = sys::send_signal(command, signal);
            }
        }
    }
}

/// The command's side, in the init's child. Never returns.
fn exec_command(channel: &OwnedFd, command: &Command) -> ! {
    sys::reset_signal_dispositions();
    if let Err(e) = SigSet::empty().thread_set_mask() {
        report(channel, &failure("unblocking signals in the command", e));
        sys::exit_now(SETUP_FAILED_STATUS);
    }
    let installed = if command.gofer {
        sentry::filter::install_with_gofer()
    } else {
        sentry::filter::install()
    };
    let listener = match installed {
        Ok(fd) => fd,
        Err(e) => {
            report(
                channel,
                &Report::SetupFailed(format!("loading the seccomp filter: {e}")),
            );
            sys::exit_now(SETUP_FAILED_STATUS);
        }
    };
    // The filter is in force from here on: socket calls would trap to a
    // Sentry that does not serve us yet. Only write, read, close, execve.
    if handoff::send(channel.as_fd(), &Report::Listener(listener)).is_err()
        || !handoff::wait_for_ack(channel.as_fd())
    {
        sys::exit_now(SETUP_FAILED_STATUS);
    }
    // The runtime holds its own copy now; the guest must never keep one.
    if nix::unistd::close(listener).is_err() {
        sys::exit_now(SETUP_FAILED_STATUS);
    }
    let Err(errno) = execvp(&command.argv[0], &command.argv);
    report(channel, &Report::ExecFailed(errno));
    sys::exit_now(exec_failure_status(errno))
}

fn failure(step: &str, errno: Errno) -> Report {
    Report::SetupFailed(format!("{step}: {}", errno.desc()))
}

/// Sends a report; if the runtime is gone there is no one left to tell.
fn report(channel: &OwnedFd, report: &Report) {
    let _ = handoff::send(channel.as_fd(), report);
}
