//! The Sentry of one OCI container, as a process of its own (`smolvisor
//! sentry-daemon`, started by `create`).
//!
//! It enters the container's network namespace, tells `create`, waits for
//! the runtime's hooks (Docker's network set-up) to have run, takes the
//! namespace's interfaces over, and then waits for the container's init to
//! announce its seccomp listener (at `start`). It serves the container
//! until the init ends, and in a pod until every member's init has ended;
//! `exec` hands it one more listener per process through its control socket
//! ([`sentry_socket_name`](super::sentry_socket_name)), and `create` of a
//! pod's later container hands it that container's hand-off channel there.
//!
//! On the control socket, one connection per request, each one message
//! with a descriptor and answered with one byte: `listener` (an `exec`'s
//! listener, served at once) or `member PID` (the hand-off channel of a
//! pod member whose init is PID: the Sentry lives while PID does, the
//! warden kills it with the Sentry, and its listener is taken from the
//! channel at its `start`).
//!
//! The conversation with `create`, one SOCK_SEQPACKET message each:
//! daemon `ns` · create `go` · daemon `ready` (or `error: WHY`) · create
//! `channel` (with the hand-off channel's receiving end) and `init PID` ·
//! daemon `served`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use netstack::link::{Capture, CaptureConfig};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::Pid;
use sentry::{ListenerSender, Sentry, SentryConfig};

use super::{Error, SocketPath, sentry_socket_name, sys};
use crate::cli::{GlobalArgs, OciNetwork, SentryDaemonArgs};
use crate::network;
use crate::sandbox::handoff::{self, Report};

pub fn run(global: &GlobalArgs, args: &SentryDaemonArgs) -> Result<i32, Error> {
    let ctl = sys::daemon_ctl()?;
    let _ = nix::sys::prctl::set_name(c"smolvisor-sentry");
    // Threads the set-up starts (a link's writer, the control socket's)
    // keep no privileges.
    sentry::privileges::install_thread_hook();
    match serve(global, args, &ctl) {
        Ok(code) => Ok(code),
        Err(e) => {
            // `create` may still be listening; if not, the log has it.
            let _ = say(&ctl, &format!("error: {e}"));
            Err(e)
        }
    }
}

fn serve(global: &GlobalArgs, args: &SentryDaemonArgs, ctl: &OwnedFd) -> Result<i32, Error> {
    let joined = match args.netns.as_str() {
        "new" => {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("creating a network namespace: {e}"))?;
            false
        }
        path => {
            let ns = File::open(path).map_err(|e| format!("network namespace {path}: {e}"))?;
            setns(ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("entering the network namespace {path}: {e}"))?;
            true
        }
    };
    say(ctl, "ns")?;
    if hear(ctl)?.is_none_or(|w| w != "go") {
        return Ok(0);
    }
    let capture = match &global.pcap_log {
        Some(path) => Some(Capture::create(Path::new(path), CaptureConfig::default())?),
        None => None,
    };
    let mode = global.network.unwrap_or(OciNetwork::Sandbox);
    let net = network::build_oci(mode, joined, capture.as_ref(), &global.impair)?;
    say(ctl, "ready")?;

    // The hand-off channel, then the init's pid, once libcontainer made it.
    let mut buf = [0u8; 64];
    let (n, channel) = sys::recv_fd(ctl.as_fd(), &mut buf)?;
    let Some(channel) = channel.filter(|_| &buf[..n] == b"channel") else {
        return Ok(0);
    };
    let Some(init) = hear(ctl)?.and_then(|w| w.strip_prefix("init ")?.parse::<i32>().ok()) else {
        return Ok(0);
    };
    let init = Pid::from_raw(init);
    let pidfd = sentry::sys::pidfd_open(init.as_raw(), false)?;
    // The pod members' pidfds reach the warden through this pair.
    let (to_warden, warden_inbox) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    // Held until this process ends, whichever way.
    let _warden = spawn_warden(pidfd.as_fd(), warden_inbox.as_fd())?;
    drop(warden_inbox);
    let name = sentry_socket_name(&args.id);
    let socket = SocketPath::new(&global.root, &name)?;
    let socket_path = socket.path();
    let _ = std::fs::remove_file(socket_path);
    let control = UnixListener::bind(socket_path)
        .map_err(|e| format!("binding {}: {e}", global.root.join(&name).display()))?;
    // Pod members may join before the init's `start`: the control socket
    // is served from now on, and what it brings waits in the inbox.
    let (sender, inbox) = sentry::listener_channel()?;
    netstack::spawn_started("sentry-control", move || {
        serve_control(&control, &sender, &to_warden);
    })?;
    say(ctl, "served")?;

    // Until `start`, the init waits; it may also be deleted unstarted.
    let Some(listener) = first_listener(channel.as_fd(), init, pidfd.as_fd())? else {
        let _ = std::fs::remove_file(socket_path);
        return Ok(0);
    };
    let cfg = SentryConfig {
        debug_log: global.debug_log.as_ref().map(Into::into),
        confine: true,
        tcp_memory: global.tcp_memory,
    };
    let mut net = net;
    // The control socket's thread accepts connections.
    net.sentry.host_sockets = true;
    let guard = pidfd.try_clone()?;
    let result = Sentry::new(&cfg, net.sentry, listener, init, pidfd).and_then(|mut s| {
        s.accept_listeners(inbox)?;
        s.run()
    });
    if let Err(e) = &result {
        // Never leave a container running without its Sentry.
        let _ = sentry::sys::pidfd_send_signal(guard.as_fd(), libc::SIGKILL);
        tracing::error!("the Sentry of container {} failed: {e}", args.id);
    }
    if let Some(c) = capture {
        let summary = c.finish();
        let written: u64 = summary.interfaces.iter().map(|i| i.written).sum();
        tracing::info!(
            "captured {written} frames ({} dropped) of container {}",
            summary.dropped(),
            args.id
        );
    }
    if let Some(r) = net.restore {
        r.finish()?;
    }
    let _ = std::fs::remove_file(socket_path);
    Ok(result.map_or(1, |_| 0))
}

/// A container must not outlive its Sentry: its socket calls would fail
/// with ENOSYS, a sandbox half gone. A child forked before the Sentry
/// confines itself waits for the end of a pipe that only the Sentry holds,
/// so a Sentry that crashes or is killed outright is noticed, and then
/// kills the container's init through its pidfd (a no-op once the init has
/// ended: the pidfd names that process only), and every pod member's init:
/// the Sentry's control thread sends their pidfds on `members` as they
/// join, and the warden holds those whose process lives. The caller holds
/// what it returns until it ends.
fn spawn_warden(
    init: BorrowedFd<'_>,
    members: BorrowedFd<'_>,
) -> Result<crate::watcher::Watcher, Error> {
    match crate::watcher::fork_collecting(c"smolvisor-warden", &[init, members], members)? {
        crate::watcher::Collected::Parent(watcher) => Ok(watcher),
        crate::watcher::Collected::Child(members) => {
            let _ = sentry::sys::pidfd_send_signal(init, libc::SIGKILL);
            for member in &members {
                let _ = sentry::sys::pidfd_send_signal(member.as_fd(), libc::SIGKILL);
            }
            crate::sandbox::sys::exit_now(0)
        }
    }
}

/// Waits for the init's listener (or its end, when it is deleted before
/// `start`): the announced descriptor is taken from the sender with
/// `pidfd_getfd`, then acknowledged.
fn first_listener(
    channel: BorrowedFd<'_>,
    init: Pid,
    pidfd: BorrowedFd<'_>,
) -> Result<Option<OwnedFd>, Error> {
    loop {
        let mut fds = [
            PollFd::new(channel, PollFlags::POLLIN),
            PollFd::new(pidfd, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let readable = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
        if readable(&fds[0]) {
            return take_listener(channel, Some(init));
        }
        if readable(&fds[1]) {
            return Ok(None);
        }
    }
}

/// Reads one listener announcement from a hand-off channel; `expected`
/// names the process that must have sent it.
pub(super) fn take_listener(
    channel: BorrowedFd<'_>,
    expected: Option<Pid>,
) -> Result<Option<OwnedFd>, Error> {
    let Some(received) = handoff::receive(channel)? else {
        return Ok(None);
    };
    let (Some(Report::Listener(number)), Some(sender)) = (received.report, received.sender) else {
        return Err("unexpected message on the hand-off channel".into());
    };
    if expected.is_some_and(|p| p != sender) {
        return Err(format!("a listener announced by {sender}, not the container's init").into());
    }
    tracing::debug!(%sender, number, "a seccomp listener was announced");
    let fd = crate::sandbox::fetch_fd(sender, number)?;
    crate::sandbox::acknowledge(channel)?;
    Ok(Some(fd))
}

/// A pod member created but not started: its init announces its
/// listener on `channel` at `start`.
struct Joining {
    init: Pid,
    channel: OwnedFd,
}

/// The control socket's thread: requests on the socket (see the module's
/// text), and the channels of pod members waiting for their `start`. It
/// ends when the Sentry does.
fn serve_control(control: &UnixListener, sender: &ListenerSender, warden: &OwnedFd) {
    let mut joining: Vec<Joining> = Vec::new();
    loop {
        let mut fds = vec![PollFd::new(control.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            joining
                .iter()
                .map(|j| PollFd::new(j.channel.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::error!("the Sentry's control socket failed: {e}");
                return;
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        // Announced listeners first (their processes wait for the answer).
        for i in (0..joining.len()).rev() {
            if !ready[i + 1] {
                continue;
            }
            let j = joining.swap_remove(i);
            match take_listener(j.channel.as_fd(), Some(j.init)) {
                Ok(Some(listener)) => {
                    if sender.send(listener).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("pod member {}: {e}", j.init),
            }
        }
        if !ready[0] {
            continue;
        }
        let Ok((conn, _)) = control.accept() else {
            continue;
        };
        match request(conn, sender, warden) {
            Ok(Some(j)) => joining.push(j),
            Ok(None) => {}
            Err(Ended) => return,
        }
    }
}

/// The Sentry has ended.
struct Ended;

/// Answers one connection to the control socket.
fn request(
    mut conn: UnixStream,
    sender: &ListenerSender,
    warden: &OwnedFd,
) -> Result<Option<Joining>, Ended> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 32];
    let Ok((n, Some(fd))) = sys::recv_fd(conn.as_fd(), &mut buf) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf[..n]);
    let mut joined = None;
    if text == "listener" {
        sender.send(fd).map_err(|_| Ended)?;
    } else if let Some(pid) = text.strip_prefix("member ").and_then(|p| p.parse().ok()) {
        let Ok(pidfd) = sentry::sys::pidfd_open(pid, false) else {
            return Ok(None);
        };
        if let Err(e) = sys::send_fd(warden.as_fd(), pidfd.as_fd(), b"member") {
            // Without its warden a member could outlive the Sentry.
            tracing::warn!("pod member {pid}: the warden cannot take it: {e}");
            return Ok(None);
        }
        sender.send_member(pidfd).map_err(|_| Ended)?;
        tracing::debug!(pid, channel = fd.as_raw_fd(), "a pod member joins");
        joined = Some(Joining {
            init: Pid::from_raw(pid),
            channel: fd,
        });
    } else {
        return Ok(None);
    }
    let _ = conn.write_all(&[handoff::ACK]);
    Ok(joined)
}

/// Hands the Sentry behind `socket` (a path in `root`) a listener (for
/// `exec`).
pub(super) fn give_listener(
    root: &Path,
    socket: &str,
    listener: BorrowedFd<'_>,
) -> Result<(), Error> {
    ask(root, socket, listener, "listener")
        .map_err(|e| format!("the container's Sentry did not take the new process: {e}").into())
}

/// Makes the process `init` a member of the pod whose Sentry is behind
/// `socket` (a path in `root`); `channel` is its hand-off channel.
pub(super) fn join(
    root: &Path,
    socket: &str,
    channel: BorrowedFd<'_>,
    init: i32,
) -> Result<(), Error> {
    ask(root, socket, channel, &format!("member {init}"))
        .map_err(|e| format!("joining the pod's Sentry: {e}").into())
}

fn ask(root: &Path, socket: &str, fd: BorrowedFd<'_>, what: &str) -> Result<(), Error> {
    let path = SocketPath::new(root, socket)?;
    let mut conn = UnixStream::connect(path.path())
        .map_err(|e| format!("reaching {}: {e}", root.join(socket).display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    sys::send_fd(conn.as_fd(), fd, what.as_bytes())?;
    let mut ack = [0u8; 1];
    match conn.read(&mut ack) {
        Ok(1) if ack[0] == handoff::ACK => Ok(()),
        Ok(_) => Err("it refused".into()),
        Err(e) => Err(e.into()),
    }
}

fn say(ctl: &OwnedFd, word: &str) -> Result<(), Error> {
    File::from(ctl.try_clone()?).write_all(word.as_bytes())?;
    Ok(())
}

/// The next word from `create`; None at its end.
fn hear(ctl: &OwnedFd) -> Result<Option<String>, Error> {
    let mut buf = [0u8; 256];
    let n = File::from(ctl.try_clone()?).read(&mut buf)?;
    Ok((n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned()))
}
