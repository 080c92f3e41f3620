//! Pods: the containers that share one network namespace share its Sentry.
//!
//! The first container of a namespace starts the Sentry; `create` of any
//! later one finds it here, by the identity (device and inode of the nsfs
//! file) of the namespace its spec names, or by the CRI annotations where
//! containerd's CRI plugin wrote them. Docker's `--network container:X`
//! names `/proc/PID/ns/net` of X's init, which under smolvisor is the
//! init's own empty namespace: each container's [`Meta`] records both that
//! one and the Sentry's.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;

use super::{Error, Meta};

/// The CRI plugin's annotation: `sandbox` for the pod's pause container,
/// `container` for the others.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The CRI plugin's annotation naming the pod's sandbox (pause) container.
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// A namespace's identity: the device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    /// The identity of the namespace file at `path`.
    pub fn of(path: &Path) -> Result<NsId, Error> {
        let m =
            fs::metadata(path).map_err(|e| format!("network namespace {}: {e}", path.display()))?;
        Ok(NsId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// A running Sentry that a new container joins.
#[derive(Debug, Clone)]
pub struct Pod {
    pub sentry_pid: i32,
    /// The container that started it (its socket is named after it).
    pub first: String,
    pub netns: Option<NsId>,
}

/// The running Sentry whose pod a new container with these annotations
/// and this network namespace (None: a new one, or the host's) belongs to.
pub fn find(
    root: &Path,
    annotations: Option<&std::collections::HashMap<String, String>>,
    netns: Option<&Path>,
) -> Result<Option<Pod>, Error> {
    let note = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    match note(CRI_CONTAINER_TYPE) {
        // A pod's sandbox always starts its Sentry.
        Some("sandbox") => return Ok(None),
        Some("container") => {
            if let Some(sandbox) = note(CRI_SANDBOX_ID)
                && super::check_id(sandbox).is_ok()
                && let Ok(meta) = Meta::load(&root.join(sandbox))
                && sentry_alive(&meta)
            {
                return Ok(Some(Pod {
                    sentry_pid: meta.sentry_pid,
                    first: meta.first(sandbox).to_owned(),
                    netns: meta.netns,
                }));
            }
        }
        _ => {}
    }
    let Some(path) = netns else {
        return Ok(None);
    };
    let wanted = NsId::of(path)?;
    for (id, meta) in metas(root) {
        // A live Sentry keeps its namespace, whose identity cannot then
        // be another's; an init's own namespace counts while it runs.
        let named = meta.netns == Some(wanted)
            || (meta.guest_netns == Some(wanted) && runs(&root.join(&id)));
        if named && sentry_alive(&meta) {
            return Ok(Some(Pod {
                sentry_pid: meta.sentry_pid,
                first: meta.first(&id).to_owned(),
                netns: meta.netns,
            }));
        }
    }
    Ok(None)
}

/// Whether the container in `dir` has an init that has not ended.
fn runs(dir: &Path) -> bool {
    Container::load(dir.to_path_buf()).is_ok_and(|c| super::status_word(&c) != "stopped")
}

/// Every container's id and record under `root`.
fn metas(root: &Path) -> Vec<(String, Meta)> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_owned();
            if id.starts_with('.') {
                return None;
            }
            Some((id, Meta::load(&e.path()).ok()?))
        })
        .collect()
}

/// Another container of a pod, not stopped.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    pub init: i32,
    /// Running, not paused or created: its cgroups are not frozen.
    pub running: bool,
}

/// The other containers served by Sentry `sentry_pid` whose inits have
/// not ended.
pub fn other_members(root: &Path, id: &str, sentry_pid: i32) -> Vec<Member> {
    metas(root)
        .into_iter()
        .filter(|(other, meta)| other != id && meta.sentry_pid == sentry_pid)
        .filter_map(|(other, _)| {
            let c = Container::load(PathBuf::from(root).join(&other)).ok()?;
            let status = super::status_word(&c);
            if status == "stopped" {
                return None;
            }
            Some(Member {
                init: c.pid().map(i32::from)?,
                running: status == "running",
            })
        })
        .collect()
}

/// Whether the Sentry `meta` names is alive (not a zombie its reaper has
/// yet to collect), and is that Sentry: a Sentry daemon in the namespace
/// recorded, not another that took its pid.
pub fn sentry_alive(meta: &Meta) -> bool {
    let pid = meta.sentry_pid;
    let named = pid > 0
        && fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            let (name, rest) = s.split_once(") ").unwrap_or_default();
            name.ends_with("(smolvisor-sentr") && !rest.starts_with('Z')
        });
    named
        && meta.netns.is_none_or(|ns| {
            NsId::of(Path::new(&format!("/proc/{pid}/ns/net"))).is_ok_and(|n| n == ns)
        })
}

/// The parent of process `pid`.
pub fn parent_of(pid: i32) -> Option<i32> {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")?
                .1
                .split(' ')
                .nth(1)?
                .parse::<i32>()
                .ok()
        })
}

/// Whether `pid` is Sentry `sentry`'s or one of its helpers (the warden,
/// the signal watcher), which share a container's cgroups but are not the
/// container's processes.
pub fn is_sentrys(pid: i32, sentry: i32) -> bool {
    sentry != 0 && (pid == sentry || parent_of(pid) == Some(sentry))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::mpsc;

    use super::*;

    /// A thread named as a Sentry daemon is (its tid has a `/proc/TID`),
    /// standing in for one until `done` drops.
    fn stand_in_sentry() -> (i32, mpsc::Sender<()>) {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (done, wait) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _ = nix::sys::prctl::set_name(c"smolvisor-sentry");
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = wait.recv();
        });
        (tid_rx.recv().unwrap(), done)
    }

    fn meta(sentry_pid: i32, netns: &str, guest: &str) -> Meta {
        Meta {
            bundle: PathBuf::from("/b"),
            rootfs: PathBuf::from("/b/rootfs"),
            sentry_pid,
            sentry_of: None,
            netns: Some(NsId::of(Path::new(netns)).unwrap()),
            guest_netns: Some(NsId::of(Path::new(guest)).unwrap()),
        }
    }

    #[test]
    fn a_pod_is_found_by_its_namespace_or_the_cri_sandbox_and_only_while_its_sentry_lives() {
        let root = std::env::temp_dir().join(format!("smv-pod-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (sentry, done) = stand_in_sentry();
        // The Sentry's namespace: ours; the init's own: a stand-in identity.
        let (net, guest) = ("/proc/self/ns/net", "/proc/self/ns/uts");
        fs::create_dir_all(root.join("first")).unwrap();
        meta(sentry, net, guest).save(&root.join("first")).unwrap();

        let found = find(&root, None, Some(Path::new(net))).unwrap().unwrap();
        assert_eq!((found.sentry_pid, found.first.as_str()), (sentry, "first"));
        // The init's own namespace counts only while the init runs (no state
        // here): an nsfs inode is reused once its namespace is gone.
        assert!(find(&root, None, Some(Path::new(guest))).unwrap().is_none());
        assert!(find(&root, None, None).unwrap().is_none());

        let cri = |kind: &str, sandbox: &str| {
            HashMap::from([
                (CRI_CONTAINER_TYPE.to_owned(), kind.to_owned()),
                (CRI_SANDBOX_ID.to_owned(), sandbox.to_owned()),
            ])
        };
        let notes = cri("container", "first");
        let found = find(&root, Some(&notes), None).unwrap().unwrap();
        assert_eq!(found.first, "first");
        // A sandbox starts its own, whatever its namespace.
        let notes = cri("sandbox", "first");
        assert!(
            find(&root, Some(&notes), Some(Path::new(net)))
                .unwrap()
                .is_none()
        );
        // A sandbox id that is not an id is not a path either.
        let notes = cri("container", "../first");
        assert!(find(&root, Some(&notes), None).unwrap().is_none());

        // A Sentry in another namespace than recorded is not the pod's.
        meta(sentry, "/proc/self/ns/ipc", guest)
            .save(&root.join("first"))
            .unwrap();
        assert!(
            find(&root, None, Some(Path::new("/proc/self/ns/ipc")))
                .unwrap()
                .is_none()
        );
        meta(sentry, net, guest).save(&root.join("first")).unwrap();

        drop(done);
        let gone = std::time::Instant::now();
        while find(&root, None, Some(Path::new(net))).unwrap().is_some() {
            assert!(gone.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        fs::remove_dir_all(&root).unwrap();
    }
}
