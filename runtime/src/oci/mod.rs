//! The OCI runtime: runc's command-line contract, as containerd's shim and
//! Docker call it, on top of youki's `libcontainer`.
//!
//! ```text
//! smolvisor create ID ──┬─ sentry-daemon   in the container's network namespace
//!                       │                  (new, or the spec's path): takes over
//!                       │                  its interfaces, serves the guest
//!                       └─ libcontainer ── init (the container's process) in a NEW,
//!                                          EMPTY network namespace; at `start` it
//!                                          loads our filter, hands the listener to
//!                                          the Sentry, and executes the process
//! ```
//!
//! The spec's `prestart` and `createRuntime` hooks (Docker's network
//! set-up) run with the Sentry's pid, so they configure the namespace the
//! Sentry lives in. `exec` connects to the Sentry's control socket and hands
//! it the new process's listener.
//!
//! A pod is the containers of one network namespace: one Sentry serves
//! them all ([`pod`]). A container whose spec names a namespace a running
//! Sentry serves does not start one; its init joins that Sentry.
//!
//! State lives in `--root/ID`: libcontainer's `state.json` and ours,
//! `smolvisor.json` ([`Meta`]); a Sentry's control socket is
//! `--root/.ID.sentry.sock`, named after the container that started it, so
//! that it outlives that container's state while the pod lives.

mod cgroups;
pub mod commands;
pub mod create;
pub mod daemon;
pub mod executor;
pub mod install;
pub mod pod;
pub(crate) mod sys;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;

use crate::cli::{GlobalArgs, OciNetwork};
use crate::network::impair::ImpairSpec;

pub type Error = Box<dyn std::error::Error>;

/// Our record of a container, beside libcontainer's state.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// The bundle the caller gave (libcontainer sees a rewritten copy).
    pub bundle: PathBuf,
    /// The root file system, absolute.
    pub rootfs: PathBuf,
    /// The Sentry daemon's pid.
    pub sentry_pid: i32,
    /// The container whose `create` started the Sentry: this one, unless it
    /// joined a pod.
    #[serde(default)]
    pub sentry_of: Option<String>,
    /// The network namespace the Sentry serves.
    #[serde(default)]
    pub netns: Option<pod::NsId>,
    /// The init's own, empty, network namespace: what `/proc/PID/ns/net`
    /// of this container's init names (Docker's `container:X`).
    #[serde(default)]
    pub guest_netns: Option<pod::NsId>,
}

/// The file holding [`Meta`].
const META_FILE: &str = "smolvisor.json";

/// The control socket, in `--root`, of the Sentry that container `first`
/// started: `exec`s and pod members hand it their listeners.
pub fn sentry_socket_name(first: &str) -> String {
    format!(".{first}.sentry.sock")
}

/// A Sentry's socket `name` in the directory `dir`, held open: a Unix
/// socket's path may not exceed 107 bytes, and Docker's state directories
/// (`/run/docker/runtime-runc/moby/` and a 64-digit id) come close, so the
/// socket is named through the directory's descriptor.
#[derive(Debug)]
pub struct SocketPath {
    _dir: std::os::fd::OwnedFd,
    short: PathBuf,
}

impl SocketPath {
    pub fn new(dir: &Path, name: &str) -> Result<SocketPath, Error> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|e| format!("state directory {}: {e}", dir.display()))?;
        let short = PathBuf::from(format!("/proc/self/fd/{}/{name}", file.as_raw_fd()));
        Ok(SocketPath {
            _dir: file.into(),
            short,
        })
    }

    /// The path to bind or connect to (in this process).
    pub fn path(&self) -> &Path {
        &self.short
    }
}

impl Meta {
    pub fn load(dir: &Path) -> Result<Meta, Error> {
        let text = std::fs::read(dir.join(META_FILE))?;
        Ok(serde_json::from_slice(&text)?)
    }

    /// The container whose `create` started this container's Sentry.
    pub fn first<'a>(&'a self, id: &'a str) -> &'a str {
        self.sentry_of.as_deref().unwrap_or(id)
    }

    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        let tmp = dir.join(format!(".{META_FILE}"));
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(tmp, dir.join(META_FILE))?;
        Ok(())
    }
}

/// smolvisor's own options for one container: the global flags, then the
/// spec's `dev.smolvisor.*` annotations, which win.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub network: Option<OciNetwork>,
    pub pcap_log: Option<PathBuf>,
    pub debug_log: Option<PathBuf>,
    pub impair: Vec<ImpairSpec>,
    pub tcp_memory: Option<usize>,
}

/// The annotations' prefix.
pub const ANNOTATION_PREFIX: &str = "dev.smolvisor.";

impl Options {
    pub fn resolve(
        global: &GlobalArgs,
        annotations: Option<&HashMap<String, String>>,
        id: &str,
    ) -> Result<Options, Error> {
        let mut network = global.network;
        let mut pcap = global.pcap_log.clone();
        let mut debug = global.debug_log.clone();
        let mut impair = global.impair.clone();
        let mut tcp_memory = global.tcp_memory;
        for (key, value) in annotations.into_iter().flatten() {
            let Some(name) = key.strip_prefix(ANNOTATION_PREFIX) else {
                continue;
            };
            match name {
                "network" => {
                    network = Some(
                        <OciNetwork as clap::ValueEnum>::from_str(value, false).map_err(|_| {
                            format!("annotation {key}: unknown network mode {value:?}")
                        })?,
                    );
                }
                "pcap-log" => pcap = Some(value.clone()),
                "debug-log" => debug = Some(value.clone()),
                "impair" => {
                    impair = crate::network::impair::parse_list(value)
                        .map_err(|e| format!("annotation {key}: {e}"))?;
                }
                "tcp-memory" => {
                    tcp_memory = Some(
                        crate::cli::memory_size(value)
                            .map_err(|e| format!("annotation {key}: {e}"))?,
                    );
                }
                _ => return Err(format!("unknown annotation {key}").into()),
            }
        }
        let expand = |p: String| PathBuf::from(p.replace("%ID%", id));
        Ok(Options {
            network,
            pcap_log: pcap.map(expand),
            debug_log: debug.map(expand),
            impair,
            tcp_memory,
        })
    }
}

/// A container id as runc takes it: letters, digits and `_ + - .`, not
/// `.` or `..` alone.
pub fn check_id(id: &str) -> Result<(), Error> {
    let fine = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if fine {
        Ok(())
    } else {
        Err(
            format!("invalid container id {id:?}: use letters, digits, '_', '+', '-' and '.'")
                .into(),
        )
    }
}

/// The state directory of container `id`.
pub fn container_dir(root: &Path, id: &str) -> Result<PathBuf, Error> {
    check_id(id)?;
    Ok(root.join(id))
}

/// Loads an existing container, or says clearly that there is none.
pub fn load(root: &Path, id: &str) -> Result<Container, Error> {
    let dir = container_dir(root, id)?;
    if !dir.join("state.json").exists() {
        return Err(format!("container {id} does not exist").into());
    }
    Container::load(dir).map_err(|e| format!("container {id}: {e}").into())
}

/// runc's word for a status.
pub fn status_word(c: &Container) -> &'static str {
    use libcontainer::container::ContainerStatus as S;
    match c.status() {
        S::Creating => "creating",
        S::Created => "created",
        S::Running => "running",
        S::Stopped => "stopped",
        S::Paused => "paused",
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn global(line: &[&str]) -> GlobalArgs {
        let mut argv = vec!["smolvisor"];
        argv.extend_from_slice(line);
        argv.push("features");
        Cli::try_parse_from(argv).unwrap().global
    }

    #[test]
    fn annotations_win_over_flags_and_id_is_substituted() {
        let g = global(&["--network", "none", "--pcap-log", "/cap/%ID%.pcapng"]);
        let o = Options::resolve(&g, None, "abc").unwrap();
        assert_eq!(o.network, Some(OciNetwork::None));
        assert_eq!(o.pcap_log, Some(PathBuf::from("/cap/abc.pcapng")));
        assert_eq!(o.debug_log, None);

        let notes = HashMap::from([
            ("dev.smolvisor.network".to_owned(), "sandbox".to_owned()),
            ("dev.smolvisor.debug-log".to_owned(), "/d/%ID%".to_owned()),
            ("org.other.key".to_owned(), "ignored".to_owned()),
        ]);
        let o = Options::resolve(&g, Some(&notes), "x1").unwrap();
        assert_eq!(o.network, Some(OciNetwork::Sandbox));
        assert_eq!(o.pcap_log, Some(PathBuf::from("/cap/x1.pcapng")));
        assert_eq!(o.debug_log, Some(PathBuf::from("/d/x1")));
        assert!(o.impair.is_empty());

        let g = global(&["--impair", "delay=5ms"]);
        assert_eq!(Options::resolve(&g, None, "i").unwrap().impair.len(), 1);
        let notes = HashMap::from([(
            "dev.smolvisor.impair".to_owned(),
            "dir=out,loss=1%;eth0:delay=20ms".to_owned(),
        )]);
        let o = Options::resolve(&g, Some(&notes), "i").unwrap();
        let texts: Vec<String> = o.impair.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["dir=out,loss=1%", "eth0:delay=20ms"]);

        let g = global(&["--tcp-memory", "64mb"]);
        assert_eq!(
            Options::resolve(&g, None, "i").unwrap().tcp_memory,
            Some(64 << 20)
        );
        let notes = HashMap::from([("dev.smolvisor.tcp-memory".to_owned(), "1gb".to_owned())]);
        let o = Options::resolve(&g, Some(&notes), "i").unwrap();
        assert_eq!(o.tcp_memory, Some(1 << 30));
    }

    #[test]
    fn bad_annotations_are_refused_by_name() {
        let g = global(&[]);
        for (key, value) in [
            ("dev.smolvisor.network", "nat"),
            ("dev.smolvisor.pcap", "/x"),
            ("dev.smolvisor.impair", "loss=lots"),
            ("dev.smolvisor.tcp-memory", "1kb"),
        ] {
            let notes = HashMap::from([(key.to_owned(), value.to_owned())]);
            let e = Options::resolve(&g, Some(&notes), "i")
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn ids_are_checked_as_runc_does() {
        for good in ["a", "0123abcdef", "my_ctr.1+x-y"] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a b", "é"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            container_dir(Path::new("/run/s"), "c1").unwrap(),
            PathBuf::from("/run/s/c1")
        );
    }
}
