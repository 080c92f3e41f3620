//! The Sentry's resources count as the container's: its daemon joins every
//! cgroup the container's init is in (cgroup v1 hierarchies and v2), as
//! runsc charges its sandbox. A guest that makes the Sentry allocate (many
//! sockets, deep buffers) meets its own memory limit, `pause` freezes its
//! network too, and the container's cgroup ends with the Sentry in it.

use std::fs;
use std::path::PathBuf;

use super::Error;

/// A mounted cgroup hierarchy.
#[derive(Debug)]
struct Hierarchy {
    mount_point: PathBuf,
    /// v1's controllers and `name=` options; empty for v2.
    options: Vec<String>,
    v2: bool,
}

fn hierarchies() -> Result<Vec<Hierarchy>, Error> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let (fstype, _source, options) = (right.next(), right.next(), right.next());
        let v2 = match fstype {
            Some("cgroup2") => true,
            Some("cgroup") => false,
            _ => continue,
        };
        out.push(Hierarchy {
            mount_point: PathBuf::from(mount_point.replace("\\040", " ")),
            options: options
                .unwrap_or_default()
                .split(',')
                .map(str::to_owned)
                .collect(),
            v2,
        });
    }
    Ok(out)
}

/// Moves process `pid` (all its threads) into the cgroups of process
/// `like`, hierarchy by hierarchy; ones the host does not mount, and the
/// root cgroups, are left as they are.
pub fn join_cgroups_of(like: i32, pid: i32) -> Result<(), Error> {
    let mounted = hierarchies()?;
    let membership = fs::read_to_string(format!("/proc/{like}/cgroup"))?;
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if path == "/" {
            continue;
        }
        let hierarchy = mounted.iter().find(|h| {
            if controllers.is_empty() {
                h.v2
            } else {
                !h.v2
                    && controllers
                        .split(',')
                        .all(|c| h.options.iter().any(|o| o == c))
            }
        });
        let Some(h) = hierarchy else {
            continue;
        };
        let procs = h
            .mount_point
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs");
        fs::write(&procs, pid.to_string())
            .map_err(|e| format!("moving the Sentry into {}: {e}", procs.display()))?;
    }
    Ok(())
}
