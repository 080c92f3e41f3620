//! The guest filter's rules for a sandbox whose files the Gofer changes:
//! every call that writes or creates through a path traps (the Sentry
//! passes it to the Gofer, `syscalls/files.rs`); plain reads and `O_PATH`
//! opens never do.
//!
//! An open traps when its flags ask to write or create. The flags are
//! tested one bit at a time, each rule requiring the bits before it clear,
//! so no two rules match the same value.

use crate::filter::{Action, Cond, Rule};

/// The open flags that make an open a change, in the order the rules test
/// them (`__O_TMPFILE` is O_TMPFILE without O_DIRECTORY).
const WRITE_BITS: [u64; 5] = [
    libc::O_WRONLY as u64,
    libc::O_RDWR as u64,
    libc::O_CREAT as u64,
    libc::O_TRUNC as u64,
    (libc::O_TMPFILE & !libc::O_DIRECTORY) as u64,
];

/// Calls that always trap: each names a path (or a descriptor) to change.
const ALWAYS: &[&str] = &[
    "creat",
    "openat2",
    "mkdir",
    "mkdirat",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "lchown",
    "fchown",
    "fchownat",
    "truncate",
    "utime",
    "utimes",
    "futimesat",
    "utimensat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
];

const WHY: &str =
    "the guest's files are read-only to it: the Gofer makes the change inside the root";

fn trap(call: &str, when: Vec<Cond>, why: &str) -> Rule {
    Rule {
        call: call.to_owned(),
        when,
        action: Action::Trap,
        why: why.to_owned(),
    }
}

/// The rules the Gofer adds to the guest's filter.
pub fn rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for (call, arg) in [("open", 1), ("openat", 2)] {
        let mut before = libc::O_PATH as u64;
        for bit in WRITE_BITS {
            rules.push(trap(
                call,
                vec![Cond::Masked(arg, before | bit, bit)],
                "an open that writes or creates is the Gofer's; reads and O_PATH stay native",
            ));
            before |= bit;
        }
    }
    for call in ALWAYS {
        rules.push(trap(call, Vec::new(), WHY));
    }
    for (call, arg) in [("access", 1), ("faccessat", 2), ("faccessat2", 2)] {
        rules.push(trap(
            call,
            vec![Cond::Masked(arg, libc::W_OK as u64, libc::W_OK as u64)],
            "W_OK is answered from the tree (the guest's view would say EROFS)",
        ));
    }
    // Device nodes stay refused by the guest's own rules.
    for (call, arg) in [("mknod", 1), ("mknodat", 2)] {
        for kind in [0, libc::S_IFREG, libc::S_IFIFO, libc::S_IFSOCK] {
            rules.push(trap(
                call,
                vec![Cond::Masked(arg, u64::from(libc::S_IFMT), u64::from(kind))],
                "regular files, FIFOs and sockets are made by the Gofer",
            ));
        }
    }
    rules
}

/// The Gofer's own filter: [`gofer::ALLOWED`] and nothing else (EPERM).
/// Its ioctl-free, socket-free list means a Gofer subverted by a request
/// still cannot reach the network, run a program or mount anything.
pub fn gofer_table() -> crate::filter::Table {
    crate::filter::Table {
        name: "gofer".into(),
        default: Action::Errno(libc::EPERM),
        rules: gofer::ALLOWED
            .iter()
            .map(|(call, why)| Rule {
                call: (*call).to_owned(),
                when: Vec::new(),
                action: Action::Allow,
                why: (*why).to_owned(),
            })
            .collect(),
    }
}
