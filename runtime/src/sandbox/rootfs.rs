//! The guest's file tree, built by the guest's init in its own, private mount
//! namespace, then entered with `pivot_root`. The host's mounts never change.
//!
//! In: the host's mount table (`/proc/self/mountinfo`) and the working
//! directory. Out: a root where the host's files are seen through overlayfs
//! with the upper layers on a tmpfs (writes land in memory and vanish with the
//! namespace), a fresh `/proc` and read-only `/sys`, and a minimal `/dev`.
//!
//! Every lower layer is opened as an `O_PATH` descriptor before the scratch
//! tmpfs is mounted anywhere and is named as `/proc/self/fd/N`, so mounting
//! the scratch space cannot shadow a layer. Failures come back as text for the
//! runtime ([`SetupFailure`]); things the user should know about but that do not
//! stop the start-up go to `warn`.

use std::ffi::OsStr;
use std::fmt::Display;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, pivot_root};

use super::mountinfo::{self, MountEntry};
use super::sys;

/// Why the guest's file tree could not be built; sent to the runtime as text.
pub(super) type SetupFailure = String;

/// Directories that may hold the scratch tmpfs while the tree is built. The
/// mount shadows the directory only inside the init's private namespace and is
/// detached together with the old root.
const SCRATCH_MOUNT_POINTS: &[&str] = &["/tmp", "/mnt", "/dev"];

/// Host device nodes the guest's `/dev` gets, as bind mounts.
const DEVICE_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// `/proc` entries that reach host-wide kernel state; read-only for the guest,
/// as Docker has them.
const READ_ONLY_PROC_PATHS: &[&str] = &["bus", "fs", "irq", "sys", "sysrq-trigger"];

const NONE: Option<&str> = None;

/// Builds the guest's root and enters it, then changes to `cwd`. With
/// `gofer`, the guest's mounts are read-only, and a writable clone of them
/// (`/proc` and `/sys` aside) is returned for the Gofer.
pub(super) fn build(
    cwd: &Path,
    files: &[(PathBuf, Vec<u8>)],
    gofer: bool,
    warn: &mut dyn FnMut(String),
) -> Result<Option<OwnedFd>, SetupFailure> {
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(failed("making the mount tree private"))?;
    let table = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let entries = mountinfo::parse(&table).map_err(|e| e.to_string())?;
    let lowers = open_lowers(&entries)?;
    let devices = HostDevices::open();

    let scratch = mount_scratch()?;
    let new_root = scratch.join("root");
    fs::create_dir(&new_root).map_err(|e| format!("creating {}: {e}", new_root.display()))?;
    for (index, lower) in lowers.iter().enumerate() {
        let upper = scratch.join(format!("layers/{index}"));
        copy_on_write(lower, &upper, &new_root, warn)?;
    }
    mount_dev(&new_root, &devices)?;
    place_files(&scratch, &new_root, files)?;
    let tree = if gofer {
        Some(split_for_gofer(&new_root)?)
    } else {
        None
    };
    mount_proc(&new_root)?;
    mount_sys(&new_root)?;
    drop(lowers);
    drop(devices);

    enter(&new_root)?;
    chdir(cwd).map_err(failed(format!(
        "changing to the working directory {}",
        cwd.display()
    )))?;
    Ok(tree)
}

/// Takes the Gofer's writable clone of the tree built so far, then makes
/// the guest's own mounts read-only. `/proc` and `/sys` are mounted after,
/// in the guest's view only (their mount points are made first, while the
/// root can still be written).
fn split_for_gofer(new_root: &Path) -> Result<OwnedFd, SetupFailure> {
    for dir in ["proc", "sys"] {
        create_dir(&new_root.join(dir))?;
    }
    let tree = super::sys_tree::clone_tree(new_root)
        .map_err(|e| format!("cloning the file tree for the Gofer: {e}"))?;
    super::sys_tree::make_read_only(new_root)
        .map_err(|e| format!("making the guest's file tree read-only: {e}"))?;
    Ok(tree)
}

/// A host mount to show through a copy-on-write layer, held open.
#[derive(Debug)]
struct Lower<'a> {
    entry: &'a MountEntry,
    fd: OwnedFd,
    is_dir: bool,
}

impl Lower<'_> {
    fn is_root(&self) -> bool {
        self.entry.mount_point == Path::new("/")
    }

    fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }

    /// The per-mount flags that carry over to the guest's view of it.
    fn flags(&self) -> MsFlags {
        let mut flags = MsFlags::empty();
        flags.set(MsFlags::MS_NOSUID, self.entry.nosuid);
        flags.set(MsFlags::MS_NODEV, self.entry.nodev);
        flags.set(MsFlags::MS_NOEXEC, self.entry.noexec);
        flags
    }
}

/// Opens the candidates that are really reachable at their mount point (the
/// mount id behind the path is theirs): a mount hidden under a later mount
/// is left out.
fn open_lowers(entries: &[MountEntry]) -> Result<Vec<Lower<'_>>, SetupFailure> {
    let mut lowers = Vec::new();
    for entry in mountinfo::copy_on_write_candidates(entries) {
        let path = &entry.mount_point;
        let flags = OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let Ok(fd) = open(path, flags, Mode::empty()) else {
            continue;
        };
        let placement = sys::placement(fd.as_fd())
            .map_err(|e| format!("looking up the mount at {}: {e}", path.display()))?;
        if placement.mount_id != entry.id {
            continue;
        }
        let is_dir = match placement.file_type {
            libc::S_IFDIR => true,
            libc::S_IFREG => false,
            _ => continue,
        };
        lowers.push(Lower { entry, fd, is_dir });
    }
    match lowers.first() {
        Some(root) if root.is_root() && root.is_dir => Ok(lowers),
        _ => Err("the root directory is not a mount of its own (a chroot?)".to_owned()),
    }
}

/// `O_PATH` descriptors of the host's device nodes and its devpts.
#[derive(Debug)]
struct HostDevices {
    nodes: Vec<(&'static str, OwnedFd)>,
    pts: Option<OwnedFd>,
}

impl HostDevices {
    fn open() -> HostDevices {
        let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
        let nodes = DEVICE_NODES
            .iter()
            .filter_map(|name| {
                let fd = open(&Path::new("/dev").join(name), flags, Mode::empty()).ok()?;
                Some((*name, fd))
            })
            .collect();
        let pts = open("/dev/pts", flags | OFlag::O_DIRECTORY, Mode::empty()).ok();
        HostDevices { nodes, pts }
    }
}

/// Mounts the tmpfs that holds the new root's mount point and every upper
/// layer, and returns where.
fn mount_scratch() -> Result<PathBuf, SetupFailure> {
    let at = SCRATCH_MOUNT_POINTS
        .iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .ok_or("no directory to hold the sandbox's scratch file system")?;
    mount(
        Some("smolvisor"),
        at,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(failed(format!(
        "mounting the scratch tmpfs on {}",
        at.display()
    )))?;
    Ok(at.to_owned())
}

/// Shows `lower` at its place under `new_root` through overlayfs with its
/// upper layer under `layer`; read-only bind mount when overlayfs refuses it,
/// and for mounted files (which overlayfs cannot stack).
fn copy_on_write(
    lower: &Lower<'_>,
    layer: &Path,
    new_root: &Path,
    warn: &mut dyn FnMut(String),
) -> Result<(), SetupFailure> {
    let mount_point = lower.entry.mount_point.display();
    let target = under(new_root, &lower.entry.mount_point);
    if !lower.is_root()
        && let Err(e) = ensure_mount_point(&target, lower.is_dir)
    {
        warn(format!("{mount_point} is not shown in the sandbox: {e}"));
        return Ok(());
    }
    if !lower.is_dir {
        return bind_read_only(lower, &target)
            .map_err(failed(format!("bind-mounting the file {mount_point}")));
    }

    let upper = layer.join("upper");
    let work = layer.join("work");
    for dir in [&upper, &work] {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.proc_path(),
        upper.display(),
        work.display()
    );
    let Err(refused) = mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        lower.flags(),
        Some(options.as_str()),
    ) else {
        return Ok(());
    };
    match bind_read_only(lower, &target) {
        Ok(()) => {
            warn(format!(
                "overlayfs refused {mount_point} ({}): {}; the sandbox sees it read-only",
                lower.entry.fs_type,
                refused.desc()
            ));
            Ok(())
        }
        Err(e) if lower.is_root() => Err(format!(
            "showing the root file system: overlayfs refused it ({}), and a read-only bind \
             mount failed too ({})",
            refused.desc(),
            e.desc()
        )),
        Err(e) => {
            warn(format!(
                "{mount_point} is not shown in the sandbox: overlayfs refused it ({}), and a \
                 read-only bind mount failed too ({})",
                refused.desc(),
                e.desc()
            ));
            Ok(())
        }
    }
}

/// Writes each file on the scratch tmpfs and binds it over its place in the
/// new tree, so it shows whether the host's file there is a plain one, a
/// mount of its own (as `ip netns exec` binds resolv.conf), or missing.
fn place_files(
    scratch: &Path,
    new_root: &Path,
    files: &[(PathBuf, Vec<u8>)],
) -> Result<(), SetupFailure> {
    for (index, (path, contents)) in files.iter().enumerate() {
        let source = scratch.join(format!("file-{index}"));
        fs::write(&source, contents).map_err(|e| format!("writing {}: {e}", source.display()))?;
        let target = under(new_root, path);
        // A symbolic link (to systemd-resolved's file, say) would be followed
        // from the host's root: replace it in the upper layer.
        if fs::symlink_metadata(&target).is_ok_and(|m| m.is_symlink()) {
            fs::remove_file(&target)
                .map_err(|e| format!("replacing the link {}: {e}", path.display()))?;
        }
        ensure_mount_point(&target, false)
            .map_err(|e| format!("making a place for {}: {e}", path.display()))?;
        mount(Some(&source), &target, NONE, MsFlags::MS_BIND, NONE)
            .map_err(failed(format!("placing {}", path.display())))?;
    }
    Ok(())
}

/// Makes sure the mount point exists in the new tree. Creating one writes to
/// an upper layer in memory only, never to the host.
fn ensure_mount_point(target: &Path, is_dir: bool) -> std::io::Result<()> {
    if is_dir {
        return fs::create_dir_all(target);
    }
    if fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::File::create_new(target).map(drop)
}

fn bind_read_only(lower: &Lower<'_>, target: &Path) -> nix::Result<()> {
    let source = lower.proc_path();
    mount(Some(source.as_str()), target, NONE, MsFlags::MS_BIND, NONE)?;
    remount_read_only(target, lower.flags())
}

fn remount_read_only(target: &Path, flags: MsFlags) -> nix::Result<()> {
    let flags = flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(NONE, target, NONE, flags, NONE)
}

/// A fresh procfs: the init runs inside the new PID and network namespaces,
/// so it shows the guest's processes and network.
fn mount_proc(new_root: &Path) -> Result<(), SetupFailure> {
    let proc = new_root.join("proc");
    create_dir(&proc)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), &proc, Some("proc"), flags, NONE).map_err(failed("mounting /proc"))?;
    for name in READ_ONLY_PROC_PATHS {
        let path = proc.join(name);
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        mount(
            Some(&path),
            &path,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        )
        .and_then(|()| remount_read_only(&path, flags))
        .map_err(failed(format!("making /proc/{name} read-only")))?;
    }
    Ok(())
}

/// A fresh sysfs, read-only; it shows the guest's (empty) network namespace.
fn mount_sys(new_root: &Path) -> Result<(), SetupFailure> {
    let sys = new_root.join("sys");
    create_dir(&sys)?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("sysfs"), &sys, Some("sysfs"), flags, NONE).map_err(failed("mounting /sys"))
}

/// A minimal `/dev` on tmpfs: a few host device nodes, the host's devpts (so an
/// inherited terminal keeps its name), `/dev/shm`, and the usual symlinks.
fn mount_dev(new_root: &Path, devices: &HostDevices) -> Result<(), SetupFailure> {
    let dev = new_root.join("dev");
    create_dir(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=0755,size=65536k"),
    )
    .map_err(failed("mounting /dev"))?;

    for (name, fd) in &devices.nodes {
        let node = dev.join(name);
        fs::File::create_new(&node).map_err(|e| format!("creating /dev/{name}: {e}"))?;
        // Read-only mounts: the nodes still open for writing (a device is
        // not written through its mount), but the host's inodes cannot be
        // chmod-ed or chown-ed from the sandbox.
        bind(fd, &node)
            .and_then(|()| remount_read_only(&node, MsFlags::empty()))
            .map_err(failed(format!("bind-mounting /dev/{name}")))?;
    }
    let pts = dev.join("pts");
    create_dir(&pts)?;
    if let Some(fd) = &devices.pts {
        bind(fd, &pts).map_err(failed("bind-mounting /dev/pts"))?;
    }
    let shm = dev.join("shm");
    create_dir(&shm)?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .map_err(failed("mounting /dev/shm"))?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link))
            .map_err(|e| format!("creating /dev/{link}: {e}"))?;
    }
    Ok(())
}

fn bind(fd: &OwnedFd, target: &Path) -> nix::Result<()> {
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(Some(source.as_str()), target, NONE, MsFlags::MS_BIND, NONE)
}

/// Makes `new_root` the root. `pivot_root(".", ".")` stacks the old root on
/// top of the new one, so it can be detached without a directory to put it in.
fn enter(new_root: &Path) -> Result<(), SetupFailure> {
    chdir(new_root).map_err(failed("changing to the new root"))?;
    pivot_root(".", ".").map_err(failed("pivot_root into the new root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(failed("detaching the host's root"))?;
    chdir("/").map_err(failed("changing to the new root"))
}

fn create_dir(path: &Path) -> Result<(), SetupFailure> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("creating {}: {e}", path.display())),
    }
}

/// `path` (absolute, from the host's mount table) placed under `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix("/") {
        Ok(relative) if relative != OsStr::new("") => root.join(relative),
        _ => root.to_owned(),
    }
}

/// Turns a failed step into the message sent to the runtime.
fn failed(step: impl Display) -> impl FnOnce(Errno) -> SetupFailure {
    move |errno| format!("{step}: {}", errno.desc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_placed_under_the_new_root() {
        let root = Path::new("/tmp/root");
        assert_eq!(under(root, Path::new("/")), root);
        assert_eq!(
            under(root, Path::new("/home/a b")),
            Path::new("/tmp/root/home/a b")
        );
    }
}
