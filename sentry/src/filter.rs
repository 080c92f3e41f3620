//! The guest's seccomp filter: which system calls trap to the Sentry, which
//! are refused, and (by default) which run natively. docs/design.md
//! ("Syscall interception", "What traps") sums it up as a table.
//!
//! Rules for one call never overlap: every argument value matches at most
//! one rule, so libseccomp's ordering cannot change an answer. `socket`'s
//! family is compared on all 64 bits; a value with garbage in the high half
//! (which the kernel would truncate to a real family) is refused.

use std::io;
use std::os::fd::RawFd;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
const NEW_LISTENER: u64 = 8;
/// `NETLINK_ROUTE`.
const NETLINK_ROUTE: u64 = 0;
/// Every `CLONE_NEW*` flag: a namespace made by the guest would escape the
/// empty network namespace and the read-only mounts.
const CLONE_NEW_FLAGS: [u64; 8] = [
    0x0000_0080, // CLONE_NEWTIME
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];
/// One past the highest address family Linux knows (`AF_MAX`, Linux 6.x).
const AF_MAX: i32 = 46;
/// Socket ioctls (`SIOC*`) share the 0x89 command group.
const SIOC_GROUP: u64 = 0x8900;

/// What a rule does with the calls it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Runs natively.
    Allow,
    /// Traps to the Sentry (user notification).
    Trap,
    /// Fails with this errno.
    Errno(i32),
    /// Kills the process.
    Kill,
}

/// A condition on one argument of a call (all 64 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// `argN == value`.
    Eq(u32, u64),
    /// `argN != value`.
    Ne(u32, u64),
    /// `argN & mask == value`.
    Masked(u32, u64, u64),
    /// `argN >= value`.
    AtLeast(u32, u64),
}

/// One entry of a filter: the call, when it matches (every condition), what
/// happens, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub call: String,
    pub when: Vec<Cond>,
    pub action: Action,
    pub why: String,
}

/// A filter as data: its default, its rules, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// What a call that no rule matches gets.
    pub default: Action,
    pub rules: Vec<Rule>,
}

fn rule(call: &str, when: &[Cond], action: Action, why: &str) -> Rule {
    Rule {
        call: call.to_owned(),
        when: when.to_vec(),
        action,
        why: why.to_owned(),
    }
}

/// The socket calls that always trap: the socket layer is the Sentry's.
const TRAPPED: &[&str] = &[
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "shutdown",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
];

/// Calls refused with an errno, as Linux refuses an unprivileged process,
/// and why.
const DENIED: &[(&str, i32, &str)] = &[
    ("io_uring_setup", libc::EPERM, IO_URING),
    ("io_uring_enter", libc::EPERM, IO_URING),
    ("io_uring_register", libc::EPERM, IO_URING),
    ("ptrace", libc::EPERM, OTHERS),
    ("process_vm_readv", libc::EPERM, OTHERS),
    ("process_vm_writev", libc::EPERM, OTHERS),
    ("pidfd_getfd", libc::EPERM, OTHERS),
    ("bpf", libc::EPERM, KERNEL),
    ("perf_event_open", libc::EACCES, KERNEL),
    ("userfaultfd", libc::EPERM, KERNEL),
    ("mount", libc::EPERM, MOUNTS),
    ("umount2", libc::EPERM, MOUNTS),
    ("pivot_root", libc::EPERM, MOUNTS),
    ("fsopen", libc::EPERM, MOUNTS),
    ("fsconfig", libc::EPERM, MOUNTS),
    ("fsmount", libc::EPERM, MOUNTS),
    ("fspick", libc::EPERM, MOUNTS),
    ("open_tree", libc::EPERM, MOUNTS),
    ("move_mount", libc::EPERM, MOUNTS),
    ("mount_setattr", libc::EPERM, MOUNTS),
    ("kexec_load", libc::EPERM, HOST),
    ("kexec_file_load", libc::EPERM, HOST),
    ("init_module", libc::EPERM, HOST),
    ("finit_module", libc::EPERM, HOST),
    ("delete_module", libc::EPERM, HOST),
    ("keyctl", libc::EPERM, HOST),
    ("add_key", libc::EPERM, HOST),
    ("request_key", libc::EPERM, HOST),
    ("iopl", libc::EPERM, HOST),
    ("ioperm", libc::EPERM, HOST),
    ("syslog", libc::EPERM, HOST),
    ("unshare", libc::EPERM, NAMESPACES),
    ("setns", libc::EPERM, NAMESPACES),
    ("open_by_handle_at", libc::EPERM, HANDLES),
    ("name_to_handle_at", libc::EPERM, HANDLES),
    (
        "clone3",
        libc::ENOSYS,
        "its flags sit behind a pointer the filter cannot read; libc falls back to clone, whose flags it checks",
    ),
];
const IO_URING: &str = "its submissions would make socket calls the filter never sees";
const OTHERS: &str =
    "would reach into other processes' memory and descriptors (the Sentry's pair ends)";
const KERNEL: &str = "kernel attack surface a sandboxed program has no use for";
const MOUNTS: &str = "the guest's mounts are fixed (read-only where the spec says so)";
const HOST: &str = "acts on the host's kernel, not the guest's own processes";
const NAMESPACES: &str = "a namespace of its own would escape the empty network namespace";
const HANDLES: &str = "file handles resolve outside the guest's root";

/// The guest's filter as data (see the module's documentation).
pub fn guest_table() -> Table {
    let mut rules = Vec::new();
    let sockets = "the socket layer is the Sentry's: it answers from the netstack";
    for name in TRAPPED {
        rules.push(rule(name, &[], Action::Trap, sockets));
    }
    for name in ["sendto", "recvfrom"] {
        rules.push(rule(
            name,
            &[Cond::Ne(4, 0)],
            Action::Trap,
            "with an address the Sentry must see it; without, it is plain I/O on the pair end",
        ));
    }
    rules.push(rule(
        "recvfrom",
        &[Cond::Masked(
            3,
            libc::MSG_TRUNC as u64,
            libc::MSG_TRUNC as u64,
        )],
        Action::Trap,
        "MSG_TRUNC on TCP drops bytes without copying them; a stream pair end would copy them",
    ));
    rules.push(rule(
        "ioctl",
        &[Cond::Masked(1, 0xffff_ff00, SIOC_GROUP)],
        Action::Trap,
        "interface ioctls (SIOC*) are answered from the netstack's NICs",
    ));
    for cmd in [libc::FIONREAD, libc::TIOCOUTQ] {
        rules.push(rule(
            "ioctl",
            &[Cond::Masked(1, 0xffff_ffff, cmd)],
            Action::Trap,
            "queue lengths (SIOCINQ, SIOCOUTQ) count what the netstack holds too",
        ));
    }
    for family in [libc::AF_INET, libc::AF_INET6] {
        rules.push(rule(
            "socket",
            &[Cond::Eq(0, family as u64)],
            Action::Trap,
            "the Sentry makes the socket in its netstack and hands back a pair end",
        ));
    }
    let netlink = libc::AF_NETLINK as u64;
    rules.push(rule(
        "socket",
        &[Cond::Eq(0, netlink), Cond::Eq(2, NETLINK_ROUTE)],
        Action::Trap,
        "NETLINK_ROUTE is answered from the netstack's interfaces",
    ));
    rules.push(rule(
        "socket",
        &[Cond::Eq(0, netlink), Cond::Ne(2, NETLINK_ROUTE)],
        Action::Errno(libc::EPROTONOSUPPORT),
        "only NETLINK_ROUTE is served",
    ));
    rules.push(rule(
        "socket",
        &[Cond::Eq(0, libc::AF_PACKET as u64)],
        Action::Errno(libc::EPERM),
        "raw frames would go around the netstack (Linux refuses them without CAP_NET_RAW)",
    ));
    let native = [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
        libc::AF_PACKET,
    ];
    for family in (0..AF_MAX).filter(|f| !native.contains(f)) {
        rules.push(rule(
            "socket",
            &[Cond::Eq(0, family as u64)],
            Action::Errno(libc::EAFNOSUPPORT),
            "a family the sandbox does not serve",
        ));
    }
    rules.push(rule(
        "socket",
        &[Cond::AtLeast(0, AF_MAX as u64)],
        Action::Errno(libc::EAFNOSUPPORT),
        "no such family; garbage in the high half must not alias a real one",
    ));
    for (name, errno, why) in DENIED {
        rules.push(rule(name, &[], Action::Errno(*errno), why));
    }
    rules.push(rule(
        "seccomp",
        &[Cond::Masked(1, NEW_LISTENER, NEW_LISTENER)],
        Action::Errno(libc::EBUSY),
        "a second listener would take the guest's calls away from the Sentry",
    ));
    for flag in CLONE_NEW_FLAGS {
        rules.push(rule(
            "clone",
            &[Cond::Masked(0, flag, flag)],
            Action::Errno(libc::EPERM),
            NAMESPACES,
        ));
    }
    // Device nodes (character or block); FIFOs and sockets stay allowed.
    for (name, mode_arg) in [("mknod", 1), ("mknodat", 2)] {
        for kind in [libc::S_IFCHR, libc::S_IFBLK] {
            rules.push(rule(
                name,
                &[Cond::Masked(
                    mode_arg,
                    u64::from(libc::S_IFMT),
                    u64::from(kind),
                )],
                Action::Errno(libc::EPERM),
                "device nodes would reach the host's devices",
            ));
        }
    }
    Table {
        name: "guest".into(),
        default: Action::Allow,
        rules,
    }
}

/// Builds the filter described in the module documentation.
pub fn build() -> io::Result<ScmpFilterContext> {
    compile(&guest_table())
}

/// The guest's filter when a Gofer changes its files: [`guest_table`] and
/// the file calls that trap (`filter_files.rs`).
pub fn guest_table_with_gofer() -> Table {
    let mut t = guest_table();
    t.name = "guest (with a Gofer)".into();
    t.rules.extend(crate::filter_files::rules());
    t
}

/// A libseccomp filter of `table`: any other architecture (i386 through int
/// 0x80, x32) would be a way around every rule, so it kills; no_new_privs.
pub fn compile(table: &Table) -> io::Result<ScmpFilterContext> {
    let mut f = ScmpFilterContext::new_filter(scmp(table.default)).map_err(other)?;
    f.set_act_badarch(ScmpAction::KillProcess).map_err(other)?;
    f.add_arch(ScmpArch::Native).map_err(other)?;
    f.set_ctl_nnp(true).map_err(other)?;
    for r in &table.rules {
        let when: Vec<ScmpArgCompare> = r
            .when
            .iter()
            .map(|c| match *c {
                Cond::Eq(arg, v) => ScmpArgCompare::new(arg, ScmpCompareOp::Equal, v),
                Cond::Ne(arg, v) => ScmpArgCompare::new(arg, ScmpCompareOp::NotEqual, v),
                Cond::Masked(arg, mask, v) => {
                    ScmpArgCompare::new(arg, ScmpCompareOp::MaskedEqual(mask), v)
                }
                Cond::AtLeast(arg, v) => ScmpArgCompare::new(arg, ScmpCompareOp::GreaterEqual, v),
            })
            .collect();
        f.add_rule_conditional(scmp(r.action), sys(&r.call)?, &when)
            .map_err(other)?;
    }
    Ok(f)
}

fn scmp(action: Action) -> ScmpAction {
    match action {
        Action::Allow => ScmpAction::Allow,
        Action::Trap => ScmpAction::Notify,
        Action::Errno(e) => ScmpAction::Errno(e),
        Action::Kill => ScmpAction::KillProcess,
    }
}

/// Loads the filter on the calling thread and returns the new
/// user-notification listener's descriptor number. Called by the guest's
/// first process right before `execve`.
///
/// `no_new_privs` is set only where the kernel demands it, for a thread
/// without CAP_SYS_ADMIN (an OCI container's process, after its
/// capabilities were set). A thread that holds it (`do`'s, run by root)
/// loads the filter without, so setuid programs and file capabilities
/// work in the guest as under runc; the filter stays on them all the same,
/// since a filter outlives every `execve`.
///
/// Where the kernel has it (5.19), the filter makes a received call wait
/// killably (`SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`): a signal can then no
/// longer take away a call the Sentry is acting on, and the Sentry ends
/// blocked calls for signals itself (`sigwatch.rs`). libseccomp 2.5 cannot
/// set that flag, so its program is exported and loaded here.
pub fn install() -> io::Result<RawFd> {
    install_table(&guest_table())
}

/// [`install`] with [`guest_table_with_gofer`].
pub fn install_with_gofer() -> io::Result<RawFd> {
    install_table(&guest_table_with_gofer())
}

fn install_table(table: &Table) -> io::Result<RawFd> {
    let f = compile(table)?;
    let bpf = export(&f)?;
    let privileged = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    )
    .unwrap_or(false);
    if !privileged {
        nix::sys::prctl::set_no_new_privs()?;
    }
    let mut flags = crate::sys::SECCOMP_NEW_LISTENER;
    if crate::sigwatch::waits_killable() {
        flags |= crate::sys::SECCOMP_WAIT_KILLABLE_RECV;
    }
    let fd = crate::sys::seccomp_load(&bpf, flags)?;
    RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))
}

/// A filter as the kernel takes it: `struct sock_filter` records.
pub fn export(f: &ScmpFilterContext) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let memfd =
        nix::sys::memfd::memfd_create(c"seccomp-bpf", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    let mut memfd = memfd;
    f.export_bpf(&mut memfd).map_err(other)?;
    let mut file = std::fs::File::from(memfd);
    file.rewind()?;
    let mut bpf = Vec::new();
    file.read_to_end(&mut bpf)?;
    Ok(bpf)
}

/// What the Sentry itself may do once it serves the guest: the calls its
/// event loop, allocator, and error paths make, and nothing else. No file
/// can be opened, no network socket made (pairs are AF_UNIX), no program
/// run, no mount or namespace touched; anything else fails with EPERM. So a
/// Sentry subverted by guest input still cannot reach the host's network
/// or files.
const SENTRY_ALLOWED: &[(&str, &str)] = &[
    ("epoll_wait", LOOP),
    ("epoll_pwait", LOOP),
    ("epoll_pwait2", LOOP),
    ("epoll_ctl", LOOP),
    ("recvfrom", PAIRS),
    ("recvmsg", PAIRS),
    ("sendto", PAIRS),
    ("sendmsg", PAIRS),
    ("getsockopt", PAIRS),
    ("setsockopt", PAIRS),
    ("shutdown", PAIRS),
    ("fcntl", PAIRS),
    (
        "accept4",
        "a guest TCP socket joins its pair when it connects or listens: the connector connects it to a listener of the Sentry's (sentry/src/connector.rs)",
    ),
    ("recvmmsg", LINKS),
    ("sendmmsg", LINKS),
    ("readv", LINKS),
    ("lseek", CAPTURE),
    ("ftruncate", CAPTURE),
    ("pwrite64", CAPTURE),
    ("fsync", CAPTURE),
    ("fdatasync", CAPTURE),
    ("close", "descriptors it is done with"),
    ("poll", LOOP),
    ("ppoll", LOOP),
    ("read", PAIRS),
    ("write", PAIRS),
    ("writev", LINKS),
    (
        "readlink",
        "a guest thread's cwd (/proc/TID/cwd) for a file change that is relative to it",
    ),
    (
        "readlinkat",
        "a guest thread's cwd (/proc/TID/cwd) for a file change that is relative to it",
    ),
    ("pidfd_open", GUEST),
    ("pidfd_getfd", GUEST),
    ("pidfd_send_signal", GUEST),
    ("process_vm_readv", GUEST),
    ("process_vm_writev", GUEST),
    ("wait4", GUEST),
    ("waitid", GUEST),
    ("brk", MEMORY),
    ("mmap", MEMORY),
    ("munmap", MEMORY),
    ("mremap", MEMORY),
    ("madvise", MEMORY),
    ("mprotect", MEMORY),
    ("futex", THREADS),
    (
        "getrandom",
        "the stack's initial sequence numbers and ports",
    ),
    ("clock_gettime", TIME),
    ("clock_getres", TIME),
    ("gettimeofday", TIME),
    ("getpid", THREADS),
    ("gettid", THREADS),
    ("rt_sigprocmask", SIGNALS),
    ("rt_sigaction", SIGNALS),
    ("rt_sigreturn", SIGNALS),
    ("sigaltstack", SIGNALS),
    ("tgkill", "a panicking thread aborts the process"),
    ("sched_yield", THREADS),
    (
        "restart_syscall",
        "a call the freezer (`pause`) or a stop interrupted resumes through it (poll does)",
    ),
    ("exit", THREADS),
    ("exit_group", THREADS),
];
const LOOP: &str = "the event loop waits on pair ends, links, the listener and timers";
const PAIRS: &str = "the pumps move bytes and datagrams between pair ends and the netstack";
const LINKS: &str = "links move frames in batches (AF_PACKET, TAP) and write capture records";
const CAPTURE: &str = "the capture's ring of files, opened before confinement, is reused in place";
const GUEST: &str = "the guest's descriptors, memory and processes (the trapped calls' arguments)";
const MEMORY: &str = "the allocator";
const THREADS: &str = "threads' own primitives (locks, ids, their end)";
const TIME: &str = "the netstack's clock";
const SIGNALS: &str = "SIGTERM and SIGHUP are taken by a signalfd and passed on to the guest";

/// The Sentry's only ioctls: the seccomp user-notification commands,
/// FIONREAD (queue lengths for the guest's FIONREAD and SIOCOUTQ), and
/// FIONBIO (the standard library's `set_nonblocking`).
const SENTRY_IOCTLS: [(u64, &str); 7] = [
    (
        libc::FIONREAD,
        "queue lengths for the guest's FIONREAD and SIOCOUTQ",
    ),
    (libc::FIONBIO, "the standard library's set_nonblocking"),
    (libc::SECCOMP_IOCTL_NOTIF_RECV, NOTIFY),
    (libc::SECCOMP_IOCTL_NOTIF_SEND, NOTIFY),
    (libc::SECCOMP_IOCTL_NOTIF_ID_VALID, NOTIFY),
    (libc::SECCOMP_IOCTL_NOTIF_ADDFD, NOTIFY),
    (libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, NOTIFY),
];
const NOTIFY: &str = "seccomp user notification: the guest's trapped calls";

/// The calls a NAT gateway adds: it makes host sockets (TCP, UDP, ICMP;
/// IPv4 and IPv6 only), connects them, and listens and accepts on
/// published ports and on the relay's mirrors of the guest's listeners.
const SENTRY_NAT: &[&str] = &["connect", "bind", "listen", "getsockname", "getpeername"];

/// The Sentry's own filter as data: [`SENTRY_ALLOWED`], the ioctls in
/// [`SENTRY_IOCTLS`], and AF_UNIX `socketpair`; with `host_sockets` (a NAT
/// gateway, a relay, an OCI daemon's control socket), also [`SENTRY_NAT`]
/// and `socket` for AF_INET and AF_INET6. Anything else fails with EPERM.
pub fn sentry_table(host_sockets: bool) -> Table {
    let mut rules: Vec<Rule> = SENTRY_ALLOWED
        .iter()
        .map(|(name, why)| rule(name, &[], Action::Allow, why))
        .collect();
    for (cmd, why) in SENTRY_IOCTLS {
        rules.push(rule(
            "ioctl",
            &[Cond::Masked(1, 0xffff_ffff, cmd)],
            Action::Allow,
            why,
        ));
    }
    rules.push(rule(
        "socketpair",
        &[Cond::Eq(0, libc::AF_UNIX as u64)],
        Action::Allow,
        "each guest socket is a pair of AF_UNIX ends",
    ));
    if !host_sockets {
        // With host sockets, `connect` is allowed whatever the address.
        rules.push(rule(
            "connect",
            &[Cond::Masked(2, 0xffff_ffff, crate::connector::ADDRESS_LEN as u64)],
            Action::Allow,
            "a guest TCP socket joins its pair: connected to the connector's listener, whose address is the only one this length reaches (paths of two bytes aside) (sentry/src/connector.rs)",
        ));
    }
    if host_sockets {
        let why = "host sockets of a gateway, a relay or an OCI daemon's control socket";
        for name in SENTRY_NAT {
            rules.push(rule(name, &[], Action::Allow, why));
        }
        for family in [libc::AF_INET, libc::AF_INET6] {
            rules.push(rule(
                "socket",
                &[Cond::Eq(0, family as u64)],
                Action::Allow,
                why,
            ));
        }
    }
    Table {
        name: if host_sockets {
            "sentry (with host sockets)".into()
        } else {
            "sentry".into()
        },
        default: Action::Errno(libc::EPERM),
        rules,
    }
}

/// Confines the calling process (the Sentry), every thread of it, to
/// [`sentry_table`].
pub fn confine_sentry(host_sockets: bool) -> io::Result<()> {
    let mut f = compile(&sentry_table(host_sockets))?;
    // Every thread, not only the caller: links may write from threads of
    // their own, started before (the AF_PACKET link's sender).
    f.set_ctl_tsync(true).map_err(other)?;
    f.load().map_err(other)
}

fn sys(name: &str) -> io::Result<ScmpSyscall> {
    ScmpSyscall::from_name(name).map_err(other)
}

#[allow(clippy::needless_pass_by_value)] // used as map_err(other)
fn other(e: libseccomp::error::SeccompError) -> io::Error {
    io::Error::other(e.to_string())
}

/// The native architecture's number of the system call `name`.
pub fn syscall_number(name: &str) -> Option<i32> {
    ScmpSyscall::from_name(name).ok().map(i32::from)
}

/// Every filter smolvisor installs, as [`render`] prints them (`smolvisor
/// filters`): the guest's (without and with a Gofer), the Sentry's without
/// and with host sockets, and the Gofer's.
pub fn tables() -> Vec<Table> {
    vec![
        guest_table(),
        guest_table_with_gofer(),
        sentry_table(false),
        sentry_table(true),
        crate::filter_files::gofer_table(),
    ]
}

fn action_text(a: Action) -> String {
    match a {
        Action::Allow => "allow".into(),
        Action::Trap => "trap".into(),
        Action::Kill => "kill".into(),
        Action::Errno(e) => format!("errno {e} ({})", nix::errno::Errno::from_raw(e)),
    }
}

fn cond_text(c: Cond) -> String {
    match c {
        Cond::Eq(a, v) => format!("arg{a} == {v:#x}"),
        Cond::Ne(a, v) => format!("arg{a} != {v:#x}"),
        Cond::Masked(a, m, v) => format!("arg{a} & {m:#x} == {v:#x}"),
        Cond::AtLeast(a, v) => format!("arg{a} >= {v:#x}"),
    }
}

/// A table as Markdown: a heading with its name and default, then one row
/// per rule (call, condition, action, reason). [`parse`] reads it back.
pub fn render(t: &Table) -> String {
    let mut out = format!(
        "## {} filter (default: {}; other architectures: kill)\n\n\
         | call | when | action | why |\n|---|---|---|---|\n",
        t.name,
        action_text(t.default)
    );
    for r in &t.rules {
        let when = if r.when.is_empty() {
            "always".to_owned()
        } else {
            r.when
                .iter()
                .map(|c| cond_text(*c))
                .collect::<Vec<_>>()
                .join(" && ")
        };
        out.push_str(&format!(
            "| {} | {when} | {} | {} |\n",
            r.call,
            action_text(r.action),
            r.why
        ));
    }
    out
}

fn parse_action(text: &str) -> Result<Action, String> {
    match text {
        "allow" => Ok(Action::Allow),
        "trap" => Ok(Action::Trap),
        "kill" => Ok(Action::Kill),
        _ => {
            let n = text
                .strip_prefix("errno ")
                .and_then(|t| t.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("bad action {text:?}"))?;
            Ok(Action::Errno(n))
        }
    }
}

fn parse_cond(text: &str) -> Result<Cond, String> {
    let bad = || format!("bad condition {text:?}");
    let words: Vec<&str> = text.split_whitespace().collect();
    let arg = |w: &str| -> Result<u32, String> {
        w.strip_prefix("arg")
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)
    };
    let num = |w: &str| -> Result<u64, String> {
        u64::from_str_radix(w.trim_start_matches("0x"), 16).map_err(|_| bad())
    };
    match words[..] {
        [a, "==", v] => Ok(Cond::Eq(arg(a)?, num(v)?)),
        [a, "!=", v] => Ok(Cond::Ne(arg(a)?, num(v)?)),
        [a, ">=", v] => Ok(Cond::AtLeast(arg(a)?, num(v)?)),
        [a, "&", m, "==", v] => Ok(Cond::Masked(arg(a)?, num(m)?, num(v)?)),
        _ => Err(bad()),
    }
}

/// Reads back what [`render`] printed (several tables in a row).
pub fn parse(text: &str) -> Result<Vec<Table>, String> {
    let mut tables: Vec<Table> = Vec::new();
    for line in text.lines() {
        if let Some(head) = line.strip_prefix("## ") {
            let (name, rest) = head
                .split_once(" filter (default: ")
                .ok_or_else(|| format!("bad heading {line:?}"))?;
            let default = rest
                .split_once(';')
                .map(|(d, _)| d)
                .ok_or_else(|| format!("bad heading {line:?}"))?;
            tables.push(Table {
                name: name.to_owned(),
                default: parse_action(default)?,
                rules: Vec::new(),
            });
            continue;
        }
        let Some(row) = line.strip_prefix("| ").and_then(|r| r.strip_suffix(" |")) else {
            continue;
        };
        let cells: Vec<&str> = row.splitn(4, " | ").collect();
        if cells[0] == "call" || cells.len() < 4 {
            continue;
        }
        let table = tables.last_mut().ok_or("a row before any heading")?;
        let when = match cells[1] {
            "always" => Vec::new(),
            w => w.split(" && ").map(parse_cond).collect::<Result<_, _>>()?,
        };
        table.rules.push(Rule {
            call: cells[0].to_owned(),
            when,
            action: parse_action(cells[2])?,
            why: cells[3].to_owned(),
        });
    }
    Ok(tables)
}

#[cfg(test)]
mod table_tests {
    use super::*;

    /// What is printed is what is installed: each table, printed and read
    /// back, compiles to the very program the guest and the Sentry load.
    #[test]
    fn printed_tables_compile_to_the_installed_programs() {
        let text: String = tables().iter().map(render).collect::<Vec<_>>().join("\n");
        let back = parse(&text).unwrap();
        assert_eq!(back, tables());
        let installed = [
            export(&build().unwrap()).unwrap(),
            export(&compile(&guest_table_with_gofer()).unwrap()).unwrap(),
            export(&compile(&sentry_table(false)).unwrap()).unwrap(),
            export(&compile(&sentry_table(true)).unwrap()).unwrap(),
            export(&compile(&crate::filter_files::gofer_table()).unwrap()).unwrap(),
        ];
        for (t, program) in back.iter().zip(installed) {
            assert_eq!(export(&compile(t).unwrap()).unwrap(), program, "{}", t.name);
        }
        // Every rule says why.
        for t in &back {
            assert!(t.rules.iter().all(|r| !r.why.trim().is_empty()));
        }
    }
}
