//! The Gofer: the one process that changes a sandboxed guest's files.
//!
//! The guest sees its file tree read-only; the Gofer holds a writable
//! clone of the same mounts (same superblocks), so every change it makes
//! shows in the guest's view at once. The guest's calls that would write
//! trap to the Sentry, which asks the Gofer over a SOCK_SEQPACKET pair
//! ([`protocol`]; the Sentry holds a [`client::Client`]); the Gofer
//! ([`server`]) resolves every path inside its root and acts, and an
//! opened file goes back as a descriptor the Sentry installs in the guest.
//!
//! - [`protocol`]: the messages, parsed in one checked step;
//! - [`server`]: path resolution and the changes themselves, the file log;
//! - [`creds`]: the calling guest thread's credentials, which each change is made with;
//! - [`client`]: the Sentry's side;
//! - [`ALLOWED`]: the Gofer's own seccomp allow-list, as data;
//! - [`sys`]: the only module with `unsafe`.

pub mod client;
pub mod creds;
pub mod protocol;
pub mod server;
pub mod sys;

pub use client::Client;
pub use server::Gofer;

/// Every system call the Gofer makes once it serves, and why; the runtime
/// loads them as its filter (anything else fails with EPERM). No socket can
/// be made, no program run, nothing mounted.
pub const ALLOWED: &[(&str, &str)] = &[
    ("recvmsg", CHANNEL),
    ("sendmsg", CHANNEL),
    ("openat2", TREE),
    (
        "openat",
        "a guest thread's umask (/proc/TID/status), a file reopened for its xattrs",
    ),
    (
        "readlinkat",
        "the path of a directory the guest named (/proc/self/fd)",
    ),
    (
        "newfstatat",
        "a guest directory and its copy in the tree are the same inode",
    ),
    (
        "fstat",
        "a guest directory and its copy in the tree are the same inode",
    ),
    ("read", "a guest thread's umask"),
    ("write", "the file log"),
    ("fcntl", "an opened file gets the guest's O_NONBLOCK back"),
    ("close", "descriptors it is done with"),
    ("mkdirat", CHANGE),
    ("mknodat", CHANGE),
    ("unlinkat", CHANGE),
    ("renameat2", CHANGE),
    ("linkat", CHANGE),
    ("symlinkat", CHANGE),
    ("fchmodat2", CHANGE),
    ("fchownat", CHANGE),
    ("utimensat", CHANGE),
    ("ftruncate", CHANGE),
    ("fsetxattr", CHANGE),
    (
        "faccessat2",
        "access(W_OK) asked of the tree, which is writable where the guest's view is not",
    ),
    (
        "fchdir",
        "bind and l*xattr have no *at form: they act from inside the directory",
    ),
    (
        "bind",
        "the guest's AF_UNIX sockets bound to a path in the tree (it makes none of its own)",
    ),
    ("umask", "a socket's inode gets the guest's umask"),
    ("setfsuid", CREDS),
    ("setfsgid", CREDS),
    ("setgroups", CREDS),
    ("capset", CREDS),
    (
        "lsetxattr",
        "a symlink's own xattrs, from inside its directory",
    ),
    (
        "lremovexattr",
        "a symlink's own xattrs, from inside its directory",
    ),
    ("fremovexattr", CHANGE),
    ("brk", MEMORY),
    ("mmap", MEMORY),
    ("munmap", MEMORY),
    ("mremap", MEMORY),
    ("madvise", MEMORY),
    ("mprotect", MEMORY),
    ("futex", "the standard library's locks"),
    ("getrandom", "the standard library's hash seeds"),
    ("rt_sigprocmask", SIGNALS),
    ("rt_sigreturn", SIGNALS),
    ("sigaltstack", SIGNALS),
    ("getpid", "a panic aborts the process"),
    ("gettid", "a panic aborts the process"),
    ("tgkill", "a panic aborts the process"),
    ("exit", "its end"),
    ("exit_group", "its end"),
];
const CHANNEL: &str = "requests and answers, descriptors beside them, with the Sentry";
const TREE: &str = "every path is resolved in the tree (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)";
const CHANGE: &str = "the changes it makes for the guest, on descriptors in the tree";
const CREDS: &str =
    "each change is made with the calling guest thread's fsuid, fsgid, groups and capabilities";
const MEMORY: &str = "the allocator";
const SIGNALS: &str = "signal delivery and the standard library's start-up";
