//! `create` (and `run`): the Sentry daemon first, in the container's
//! network namespace; then Docker's hooks with the daemon's pid; then the
//! container through libcontainer, its network namespace swapped for an
//! empty one. A container of a pod whose Sentry runs already (see
//! [`pod`](super::pod)) starts none: its init joins that Sentry.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use libcontainer::container::{Container, ContainerStatus, State};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt};
use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

use super::executor::Launch;
use super::pod::{self, NsId, Pod};
use super::{Error, Meta, Options, container_dir, sys};
use crate::cli::{CreateArgs, GlobalArgs, OciNetwork};

/// How long the daemon may take to set the network up.
const DAEMON_DEADLINE: Duration = Duration::from_secs(30);

/// Where the Sentry lives, from the spec's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SentryNetns {
    /// A new namespace: the runtime's hooks (Docker's) configure it.
    New,
    /// The namespace at this path.
    Join(PathBuf),
    /// The host's: the spec shares it, and the sandbox gets loopback only.
    Host,
}

/// A created container, for `run`.
#[derive(Debug)]
pub struct Created {
    pub container: Container,
}

pub fn create(global: &GlobalArgs, args: &CreateArgs) -> Result<Created, Error> {
    let dir = container_dir(&global.root, &args.id)?;
    if dir.exists() {
        return Err(format!("container {} already exists", args.id).into());
    }
    let bundle = fs::canonicalize(&args.bundle)
        .map_err(|e| format!("bundle {}: {e}", args.bundle.display()))?;
    let config = bundle.join("config.json");
    let text = fs::read(&config).map_err(|e| format!("reading {}: {e}", config.display()))?;
    // serde's own message says where: line and column.
    let mut spec: Spec =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    if spec.process().is_none() {
        return Err(format!("{}: the spec has no process", config.display()).into());
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| format!("{}: the spec has no root", config.display()))?;
    let rootfs = fs::canonicalize(bundle.join(root.path()))
        .map_err(|e| format!("rootfs {}: {e}", bundle.join(root.path()).display()))?;
    if !rootfs.is_dir() {
        return Err(format!("rootfs {} is not a directory", rootfs.display()).into());
    }
    let options = Options::resolve(global, spec.annotations().as_ref(), &args.id)?;
    let netns = sentry_netns(&spec)?;

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&global.root)
        .map_err(|e| format!("state directory {}: {e}", global.root.display()))?;
    // The private bundle doubles as the id's reservation: of two creates of
    // one id at once, the second fails here, before it touches anything.
    let private = global.root.join(format!(".{}.bundle", args.id));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("container {} already exists (being created)", args.id)
            }
            _ => format!("state directory {}: {e}", private.display()),
        })?;
    let _private_guard = RemoveOnDrop(private.clone());

    // The guest's own network namespace: new and empty, whatever the spec
    // says. libcontainer enters it through this process's descriptor.
    let guest_ns = sys::new_netns()?;
    let guest_ns_path = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        guest_ns.as_raw_fd()
    ));

    let named = match &netns {
        SentryNetns::Join(p) => Some(p.as_path()),
        SentryNetns::New | SentryNetns::Host => None,
    };
    let pod = pod::find(&global.root, spec.annotations().as_ref(), named)?;
    // The pod's Sentry, or a new one.
    let mut sentry = match pod {
        Some(pod) => {
            tracing::debug!(sentry = pod.sentry_pid, first = %pod.first, "joining a pod");
            let own = spec.annotations().iter().flatten();
            if own
                .into_iter()
                .any(|(k, _)| k.starts_with(super::ANNOTATION_PREFIX))
            {
                tracing::warn!(
                    "container {} joins the pod of {}: that container's smolvisor \
                     options apply, not its own",
                    args.id,
                    pod.first
                );
            }
            SentryOf::Pod(pod)
        }
        None => {
            let daemon = Daemon::spawn(global, &args.id, &netns, &options)?;
            SentryOf::Own(daemon)
        }
    };
    if let SentryOf::Own(daemon) = &mut sentry {
        daemon.expect("ns")?;
    }

    // Docker's network set-up (libnetwork-setkey) is a prestart hook: it
    // configures the namespace of the pid it is given, the Sentry's.
    let hooks = spec.hooks_mut().as_mut();
    let (prestart, create_runtime) = match hooks {
        Some(h) => (h.prestart_mut().take(), h.create_runtime_mut().take()),
        None => (None, None),
    };
    let mut state = State::new(
        &args.id,
        ContainerStatus::Creating,
        Some(sentry.pid()),
        bundle.clone(),
    );
    state.annotations = spec.annotations().clone();
    for hooks in [&prestart, &create_runtime] {
        libcontainer::hooks::run_hooks(hooks.as_ref(), Some(&state), Some(&bundle), None, None)
            .map_err(|e| format!("running the spec's hooks: {e}"))?;
    }
    let sentry_netns = match &mut sentry {
        SentryOf::Own(daemon) => {
            daemon.say("go")?;
            daemon.expect("ready")?;
            NsId::of(Path::new(&format!("/proc/{}/ns/net", daemon.pid()))).ok()
        }
        SentryOf::Pod(pod) => pod.netns,
    };

    // libcontainer reads a copy of the spec: the guest's namespace, no
    // runtime hooks (they ran), an absolute root.
    set_guest_netns(&mut spec, &guest_ns_path)?;
    if let Some(r) = spec.root_mut() {
        r.set_path(rootfs.clone());
    }
    spec.save(private.join("config.json"))?;

    let (ours, theirs) = handoff_channel()?;
    let launch = Launch {
        root: &global.root,
        id: &args.id,
        pid_file: args.pid_file.as_ref(),
        console_socket: args.console_socket.as_ref(),
        preserve_fds: args.preserve_fds,
    };
    let built = launch.builder(theirs.as_raw_fd()).and_then(|b| {
        b.as_init(&private)
            .with_systemd(global.systemd_cgroup)
            .with_detach(true)
            .with_no_pivot(args.no_pivot)
            .build()
    });
    drop(theirs);
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            remove_partial(&dir);
            return Err(format!("creating container {}: {e}", args.id).into());
        }
    };
    let pid = container.pid().map_or(0, i32::from);
    let finish = (|| -> Result<(), Error> {
        match &mut sentry {
            SentryOf::Own(daemon) => {
                // Before the daemon forks its warden, which then follows it.
                if let Err(e) = super::cgroups::join_cgroups_of(pid, daemon.pid()) {
                    tracing::warn!("the Sentry stays outside the container's cgroups: {e}");
                }
                daemon.give(&ours)?;
                daemon.say(&format!("init {pid}"))?;
                daemon.expect("served")?;
            }
            SentryOf::Pod(pod) => {
                let socket = super::sentry_socket_name(&pod.first);
                super::daemon::join(&global.root, &socket, ours.as_fd(), pid)?;
            }
        }
        // The caller's bundle, not the private copy, is the container's.
        let mut state = State::load(&dir)?;
        state.bundle = bundle.clone();
        state.save(&dir)?;
        container.refresh_state()?;
        Meta {
            bundle: bundle.clone(),
            rootfs,
            sentry_pid: sentry.pid(),
            sentry_of: match &sentry {
                SentryOf::Own(_) => None,
                SentryOf::Pod(pod) => Some(pod.first.clone()),
            },
            netns: sentry_netns,
            guest_netns: NsId::of(&guest_ns_path).ok(),
        }
        .save(&dir)
    })();
    if let Err(e) = finish {
        let _ = container.delete(true);
        remove_partial(&dir);
        return Err(e);
    }
    if let SentryOf::Own(daemon) = sentry {
        daemon.release();
    }
    drop(guest_ns);
    Ok(Created { container })
}

/// Where the Sentry goes: the spec's network namespace, unless that is the
/// host's own (never taken over).
fn sentry_netns(spec: &Spec) -> Result<SentryNetns, Error> {
    let ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|all| all.iter().find(|n| n.typ() == LinuxNamespaceType::Network));
    let Some(ns) = ns else {
        tracing::warn!(
            "the spec shares the host's network namespace; the sandbox gets loopback only"
        );
        return Ok(SentryNetns::Host);
    };
    let Some(path) = ns.path() else {
        return Ok(SentryNetns::New);
    };
    let theirs =
        fs::metadata(path).map_err(|e| format!("network namespace {}: {e}", path.display()))?;
    let ours = fs::metadata("/proc/self/ns/net")?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        tracing::warn!(
            "the spec's network namespace {} is the host's; the sandbox gets loopback only",
            path.display()
        );
        return Ok(SentryNetns::Host);
    }
    Ok(SentryNetns::Join(path.clone()))
}

fn set_guest_netns(spec: &mut Spec, path: &Path) -> Result<(), Error> {
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let namespaces = linux.namespaces_mut().get_or_insert_with(Vec::new);
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(path)
            .build()?,
    );
    Ok(())
}

/// The channel over which the container's process announces its seccomp
/// listener: the receiving end asks for the sender's credentials before
/// anyone can write, so the sender's pid comes with every message.
pub(super) fn handoff_channel() -> Result<(OwnedFd, OwnedFd), Error> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    setsockopt(&ours, sockopt::PassCred, &true)?;
    Ok((ours, theirs))
}

/// Removes what a failed create left in the state directory.
fn remove_partial(dir: &Path) {
    if dir.join("state.json").exists()
        && let Ok(mut c) = Container::load(dir.to_path_buf())
    {
        let _ = c.delete(true);
    }
    let _ = fs::remove_dir_all(dir);
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The Sentry a new container gets.
enum SentryOf {
    /// Its own, started now.
    Own(Daemon),
    /// Its pod's, running already.
    Pod(Pod),
}

impl SentryOf {
    fn pid(&self) -> i32 {
        match self {
            SentryOf::Own(d) => d.pid(),
            SentryOf::Pod(p) => p.sentry_pid,
        }
    }
}

/// The Sentry daemon while `create` talks to it; killed if `create` fails.
struct Daemon {
    child: Option<Child>,
    ctl: OwnedFd,
    pid: i32,
}

impl Daemon {
    fn spawn(
        global: &GlobalArgs,
        id: &str,
        netns: &SentryNetns,
        options: &Options,
    ) -> Result<Daemon, Error> {
        let (ctl, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--root").arg(&global.root);
        if let Some(log) = &global.log {
            cmd.arg("--log").arg(log);
            cmd.arg("--log-format").arg(match global.log_format {
                crate::cli::LogFormat::Json => "json",
                crate::cli::LogFormat::Text => "text",
            });
        }
        if global.debug {
            cmd.arg("--debug");
        }
        let network = match (netns, options.network) {
            (SentryNetns::Host, _) | (_, Some(OciNetwork::None)) => "none",
            (_, Some(OciNetwork::Relay)) => "relay",
            _ => "sandbox",
        };
        cmd.arg("--network").arg(network);
        if let Some(p) = &options.pcap_log {
            cmd.arg("--pcap-log").arg(p);
        }
        if let Some(p) = &options.debug_log {
            cmd.arg("--debug-log").arg(p);
        }
        for spec in &options.impair {
            cmd.arg("--impair").arg(spec.to_string());
        }
        if let Some(bytes) = options.tcp_memory {
            cmd.arg("--tcp-memory").arg(bytes.to_string());
        }
        cmd.arg("sentry-daemon").arg("--id").arg(id).arg("--netns");
        match netns {
            // Sharing the host's namespace, the Sentry would make its
            // sockets (the resolver relay's) there: it gets an empty one.
            SentryNetns::New | SentryNetns::Host => cmd.arg("new"),
            SentryNetns::Join(p) => cmd.arg(p),
        };
        // The container's standard streams (the shim's pipes) are not the
        // daemon's: it must not hold them open.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        sys::pass_fd_and_detach(&mut cmd, theirs.as_fd());
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting the Sentry: {e}"))?;
        let pid = child.id() as i32;
        Ok(Daemon {
            child: Some(child),
            ctl,
            pid,
        })
    }

    fn pid(&self) -> i32 {
        self.pid
    }

    fn say(&self, line: &str) -> Result<(), Error> {
        let mut f = fs::File::from(self.ctl.try_clone()?);
        f.write_all(line.as_bytes())
            .map_err(|e| format!("talking to the Sentry: {e}").into())
    }

    /// Hands the daemon the listener channel's receiving end.
    fn give(&self, fd: &OwnedFd) -> Result<(), Error> {
        sys::send_fd(self.ctl.as_fd(), fd.as_fd(), b"channel")
            .map_err(|e| format!("handing the Sentry its channel: {e}").into())
    }

    /// Waits for `word`; an `error: ...` from the daemon, its end, or a
    /// deadline is an error.
    fn expect(&mut self, word: &str) -> Result<(), Error> {
        sys::set_recv_timeout(self.ctl.as_fd(), DAEMON_DEADLINE)?;
        let mut f = fs::File::from(self.ctl.try_clone()?);
        let mut buf = vec![0u8; 4096];
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) => return Err(format!("waiting for the Sentry: {e}").into()),
        };
        let got = String::from_utf8_lossy(&buf[..n]);
        if got == word {
            return Ok(());
        }
        if let Some(why) = got.strip_prefix("error: ") {
            return Err(why.to_owned().into());
        }
        if n == 0 {
            return Err("the Sentry ended during start-up".into());
        }
        Err(format!("unexpected word from the Sentry: {got:?}").into())
    }

    /// The container exists: the daemon lives on by itself.
    fn release(mut self) {
        self.child = None;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
