//! `/proc/self/mountinfo`, parsed once into plain data, and the choice of the
//! mounts whose files the guest sees through a copy-on-write layer.
//!
//! Text comes in from the kernel ([`parse`]); out goes the list of
//! [`MountEntry`]s to copy, parents before children ([`copy_on_write_candidates`]).
//! Whether a candidate is really reachable at its mount point (not hidden by a
//! later mount) is checked by the caller on the live tree.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

/// File system types that hold no files of their own: kernel interfaces, or
/// mounts that the guest gets fresh (proc, sysfs, devpts) or never.
const PSEUDO_FILE_SYSTEMS: &[&str] = &[
    "autofs",
    "binder",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nfsd",
    "nsfs",
    "proc",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tracefs",
];

/// Trees the guest gets fresh instances of; nothing below them is copied.
const FRESH_TREES: &[&str] = &["/proc", "/sys", "/dev"];

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MountEntry {
    /// Mount id (first field), as `statx(STATX_MNT_ID)` reports it.
    pub id: u64,
    /// Where the mount sits, escapes decoded.
    pub mount_point: PathBuf,
    /// The per-mount `nosuid` flag.
    pub nosuid: bool,
    /// The per-mount `nodev` flag.
    pub nodev: bool,
    /// The per-mount `noexec` flag.
    pub noexec: bool,
    /// File system type, e.g. `ext4` or `fuse.sshfs`.
    pub fs_type: String,
}

/// A line that does not have the layout proc(5) describes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected line in /proc/self/mountinfo: {line:?}")]
pub(super) struct MountInfoError {
    line: String,
}

/// Parses the whole of `/proc/self/mountinfo`.
pub(super) fn parse(text: &str) -> Result<Vec<MountEntry>, MountInfoError> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            parse_line(line).ok_or_else(|| MountInfoError {
                line: line.to_owned(),
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let id = fields.next()?.parse().ok()?;
    let _parent: u64 = fields.next()?.parse().ok()?;
    let _device = fields.next()?;
    let _root = fields.next()?;
    let mount_point = unescape(fields.next()?)?;
    let options = fields.next()?;
    let fs_type = after.split(' ').next().filter(|t| !t.is_empty())?;
    if !mount_point.is_absolute() {
        return None;
    }
    let has = |flag: &str| options.split(',').any(|o| o == flag);
    Some(MountEntry {
        id,
        nosuid: has("nosuid"),
        nodev: has("nodev"),
        noexec: has("noexec"),
        mount_point,
        fs_type: fs_type.to_owned(),
    })
}

/// Decodes the kernel's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`).
fn unescape(field: &str) -> Option<PathBuf> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let digits = bytes.get(i + 1..i + 4)?;
            let text = std::str::from_utf8(digits).ok()?;
            out.push(u8::from_str_radix(text, 8).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(OsString::from_vec(out)))
}

/// The mounts whose files the guest should see through a copy-on-write layer:
/// the root and every mount of a real file system outside `/proc`, `/sys` and
/// `/dev`, ordered so that a mount comes after every mount above it.
pub(super) fn copy_on_write_candidates(entries: &[MountEntry]) -> Vec<&MountEntry> {
    let mut chosen: Vec<&MountEntry> = entries
        .iter()
        .filter(|e| !PSEUDO_FILE_SYSTEMS.contains(&e.fs_type.as_str()))
        .filter(|e| {
            !FRESH_TREES
                .iter()
                .any(|tree| e.mount_point.starts_with(tree))
        })
        .collect();
    // A mount point is deeper than every mount point above it; the sort is
    // stable, so stacked mounts keep their order (only the top one is
    // reachable, which the caller checks).
    chosen.sort_by_key(|e| depth(&e.mount_point));
    chosen
}

fn depth(path: &Path) -> usize {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334492k,mode=755
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
28 27 0:25 / /mnt/tools ro,nosuid,nodev,relatime - tmpfs none ro,size=4k,mode=755
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
42 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
43 42 0:4 net:[4026532177] /run/netns/ref rw shared:2 - nsfs nsfs rw
50 27 0:40 / /home/my\\040files rw,noexec master:3 - fuse.sshfs me@host:/x rw
51 27 0:41 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let entries = parse(SAMPLE).unwrap();
        assert_eq!(entries.len(), 11);
        let root = &entries[4];
        assert_eq!(root.id, 27);
        assert_eq!(root.mount_point, Path::new("/"));
        assert_eq!(root.fs_type, "ext4");
        assert!(!root.nosuid && !root.nodev && !root.noexec);
        let tools = &entries[5];
        assert!(tools.nosuid && tools.nodev && !tools.noexec);
        let home = &entries[9];
        assert_eq!(home.mount_point, Path::new("/home/my files"));
        assert_eq!(home.fs_type, "fuse.sshfs");
        assert!(home.noexec);
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(parse("27 1 254:0 / / rw,relatime ext4 /dev/vda rw\n").is_err());
        assert!(parse("x 1 254:0 / / rw - ext4 /dev/vda rw\n").is_err());
        assert!(parse("27 1 254:0 / relative rw - ext4 /dev/vda rw\n").is_err());
        assert!(parse("27 1 254:0 / /a\\04 rw - ext4 /dev/vda rw\n").is_err());
    }

    #[test]
    fn candidates_skip_pseudo_and_fresh_trees_and_put_parents_first() {
        let entries = parse(SAMPLE).unwrap();
        let chosen: Vec<&Path> = copy_on_write_candidates(&entries)
            .into_iter()
            .map(|e| e.mount_point.as_path())
            .collect();
        assert_eq!(
            chosen,
            [
                Path::new("/"),
                Path::new("/tmp"),
                Path::new("/mnt/tools"),
                Path::new("/run/netns"),
                Path::new("/home/my files"),
            ]
        );
    }

    #[test]
    fn fresh_trees_match_whole_components_only() {
        let entries =
            parse("1 0 1:1 / / rw - ext4 a rw\n2 1 1:2 / /devel rw - ext4 b rw\n").unwrap();
        assert_eq!(copy_on_write_candidates(&entries).len(), 2);
    }
}
