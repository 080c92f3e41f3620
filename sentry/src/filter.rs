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

/// Calls that always trap to the Sentry.
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

/// Calls refused with an errno, as Linux refuses an unprivileged process.
const DENIED: &[(&str, i32)] = &[
    ("io_uring_setup", libc::EPERM),
    ("io_uring_enter", libc::EPERM),
    ("io_uring_register", libc::EPERM),
    ("ptrace", libc::EPERM),
    ("process_vm_readv", libc::EPERM),
    ("process_vm_writev", libc::EPERM),
    ("pidfd_getfd", libc::EPERM),
    ("bpf", libc::EPERM),
    ("perf_event_open", libc::EACCES),
    ("userfaultfd", libc::EPERM),
    ("mount", libc::EPERM),
    ("umount2", libc::EPERM),
    ("pivot_root", libc::EPERM),
    ("fsopen", libc::EPERM),
    ("fsconfig", libc::EPERM),
    ("fsmount", libc::EPERM),
    ("fspick", libc::EPERM),
    ("open_tree", libc::EPERM),
    ("move_mount", libc::EPERM),
    ("mount_setattr", libc::EPERM),
    ("kexec_load", libc::EPERM),
    ("kexec_file_load", libc::EPERM),
    ("init_module", libc::EPERM),
    ("finit_module", libc::EPERM),
    ("delete_module", libc::EPERM),
    ("keyctl", libc::EPERM),
    ("add_key", libc::EPERM),
    ("request_key", libc::EPERM),
    ("unshare", libc::EPERM),
    ("setns", libc::EPERM),
    ("open_by_handle_at", libc::EPERM),
    ("name_to_handle_at", libc::EPERM),
    ("iopl", libc::EPERM),
    ("ioperm", libc::EPERM),
    ("syslog", libc::EPERM),
    // Its flags sit behind a pointer the filter cannot read; libc falls back
    // to clone(2), whose flags the filter checks.
    ("clone3", libc::ENOSYS),
];

/// Builds the filter described in the module documentation.
pub fn build() -> io::Result<ScmpFilterContext> {
    let mut f = ScmpFilterContext::new_filter(ScmpAction::Allow).map_err(other)?;
    // Any other architecture (i386 via int 0x80, x32) would be a way around
    // every rule below: kill.
    f.set_act_badarch(ScmpAction::KillProcess).map_err(other)?;
    f.add_arch(ScmpArch::Native).map_err(other)?;
    f.set_ctl_nnp(true).map_err(other)?;

    let notify = ScmpAction::Notify;
    for name in TRAPPED {
        f.add_rule(notify, sys(name)?).map_err(other)?;
    }
    // sendto/recvfrom trap only with an address; without one they are plain
    // send/recv on the pair end.
    for name in ["sendto", "recvfrom"] {
        f.add_rule_conditional(notify, sys(name)?, &[ne(4, 0)])
            .map_err(other)?;
    }
    f.add_rule_conditional(
        notify,
        sys("ioctl")?,
        &[ScmpArgCompare::new(
            1,
            ScmpCompareOp::MaskedEqual(0xffff_ff00),
            SIOC_GROUP,
        )],
    )
    .map_err(other)?;
    // FIONREAD (SIOCINQ) and TIOCOUTQ (SIOCOUTQ): on a guest socket the
    // pair alone would answer wrongly (what the stack holds is not in it).
    for cmd in [libc::FIONREAD, libc::TIOCOUTQ] {
        f.add_rule_conditional(
            notify,
            sys("ioctl")?,
            &[ScmpArgCompare::new(
                1,
                ScmpCompareOp::MaskedEqual(0xffff_ffff),
                cmd,
            )],
        )
        .map_err(other)?;
    }

    // socket(2) by family.
    let socket = sys("socket")?;
    for family in [libc::AF_INET, libc::AF_INET6] {
        f.add_rule_conditional(notify, socket, &[eq(0, family as u64)])
            .map_err(other)?;
    }
    let netlink = libc::AF_NETLINK as u64;
    f.add_rule_conditional(notify, socket, &[eq(0, netlink), eq(2, NETLINK_ROUTE)])
        .map_err(other)?;
    f.add_rule_conditional(
        ScmpAction::Errno(libc::EPROTONOSUPPORT),
        socket,
        &[eq(0, netlink), ne(2, NETLINK_ROUTE)],
    )
    .map_err(other)?;
    f.add_rule_conditional(
        ScmpAction::Errno(libc::EPERM),
        socket,
        &[eq(0, libc::AF_PACKET as u64)],
    )
    .map_err(other)?;
    let native = [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
        libc::AF_PACKET,
    ];
    for family in 0..AF_MAX {
        if !native.contains(&family) {
            f.add_rule_conditional(
                ScmpAction::Errno(libc::EAFNOSUPPORT),
                socket,
                &[eq(0, family as u64)],
            )
            .map_err(other)?;
        }
    }
    // Any larger value, including one with garbage in the high half.
    f.add_rule_conditional(
        ScmpAction::Errno(libc::EAFNOSUPPORT),
        socket,
        &[ScmpArgCompare::new(
            0,
            ScmpCompareOp::GreaterEqual,
            AF_MAX as u64,
        )],
    )
    .map_err(other)?;

    for (name, errno) in DENIED {
        f.add_rule(ScmpAction::Errno(*errno), sys(name)?)
            .map_err(other)?;
    }
    f.add_rule_conditional(
        ScmpAction::Errno(libc::EBUSY),
        sys("seccomp")?,
        &[ScmpArgCompare::new(
            1,
            ScmpCompareOp::MaskedEqual(NEW_LISTENER),
            NEW_LISTENER,
        )],
    )
    .map_err(other)?;
    let clone = sys("clone")?;
    for flag in CLONE_NEW_FLAGS {
        f.add_rule_conditional(
            ScmpAction::Errno(libc::EPERM),
            clone,
            &[ScmpArgCompare::new(
                0,
                ScmpCompareOp::MaskedEqual(flag),
                flag,
            )],
        )
        .map_err(other)?;
    }
    // Device nodes (character or block); FIFOs and sockets stay allowed.
    for (name, mode_arg) in [("mknod", 1), ("mknodat", 2)] {
        for kind in [libc::S_IFCHR, libc::S_IFBLK] {
            f.add_rule_conditional(
                ScmpAction::Errno(libc::EPERM),
                sys(name)?,
                &[ScmpArgCompare::new(
                    mode_arg,
                    ScmpCompareOp::MaskedEqual(u64::from(libc::S_IFMT)),
                    u64::from(kind),
                )],
            )
            .map_err(other)?;
        }
    }
    Ok(f)
}

/// Loads the filter on the calling thread (with `no_new_privs`) and returns
/// the new user-notification listener's descriptor number. Called by the
/// guest's first process right before `execve`.
///
/// Where the kernel has it (5.19), the filter makes a received call wait
/// killably (`SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`): a signal can then no
/// longer take away a call the Sentry is acting on, and the Sentry ends
/// blocked calls for signals itself (`sigwatch.rs`). libseccomp 2.5 cannot
/// set that flag, so its program is exported and loaded here.
pub fn install() -> io::Result<RawFd> {
    let f = build()?;
    let bpf = export(&f)?;
    nix::sys::prctl::set_no_new_privs()?;
    let mut flags = crate::sys::SECCOMP_NEW_LISTENER;
    if crate::sigwatch::waits_killable() {
        flags |= crate::sys::SECCOMP_WAIT_KILLABLE_RECV;
    }
    let fd = crate::sys::seccomp_load(&bpf, flags)?;
    RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))
}

/// A filter as the kernel takes it: `struct sock_filter` records.
pub(crate) fn export(f: &ScmpFilterContext) -> io::Result<Vec<u8>> {
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
const SENTRY_ALLOWED: &[&str] = &[
    // The event loop and the pairs.
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "recvfrom",
    "recvmsg",
    "sendto",
    "sendmsg",
    "getsockopt",
    "setsockopt",
    "shutdown",
    "fcntl",
    // Links' batched frames (AF_PACKET) and the pcap capture's files,
    // opened before confinement (a ring of them is reused in place).
    "recvmmsg",
    "sendmmsg",
    "readv",
    "lseek",
    "ftruncate",
    "pwrite64",
    "fsync",
    "fdatasync",
    "close",
    "poll",
    "ppoll",
    "read",
    "write",
    "writev",
    // The guest: descriptors, memory, signals, its end.
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "process_vm_readv",
    "process_vm_writev",
    "wait4",
    "waitid",
    // Memory, threads' primitives, time, exit.
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "madvise",
    "mprotect",
    "futex",
    "getrandom",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "getpid",
    "gettid",
    "rt_sigprocmask",
    "rt_sigaction",
    "rt_sigreturn",
    "sigaltstack",
    "tgkill",
    "sched_yield",
    "exit",
    "exit_group",
];

/// The Sentry's only ioctls: the seccomp user-notification commands,
/// FIONREAD (queue lengths for the guest's FIONREAD and SIOCOUTQ), and
/// FIONBIO (the standard library's `set_nonblocking`).
const SENTRY_IOCTLS: [u64; 7] = [
    libc::FIONREAD,
    libc::FIONBIO,
    libc::SECCOMP_IOCTL_NOTIF_RECV,
    libc::SECCOMP_IOCTL_NOTIF_SEND,
    libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
    libc::SECCOMP_IOCTL_NOTIF_ADDFD,
    libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
];

/// The calls a NAT gateway adds: it makes host sockets (TCP, UDP, ICMP;
/// IPv4 and IPv6 only), connects them, and listens and accepts on
/// published ports and on the relay's mirrors of the guest's listeners.
const SENTRY_NAT: &[&str] = &[
    "connect",
    "bind",
    "listen",
    "accept4",
    "getsockname",
    "getpeername",
];

/// Confines the calling process (the Sentry) to [`SENTRY_ALLOWED`], the
/// ioctls in [`SENTRY_IOCTLS`], and AF_UNIX `socketpair`; with
/// `host_sockets` (the NAT gateway), also [`SENTRY_NAT`] and `socket` for
/// AF_INET and AF_INET6.
pub fn confine_sentry(host_sockets: bool) -> io::Result<()> {
    let mut f = ScmpFilterContext::new_filter(ScmpAction::Errno(libc::EPERM)).map_err(other)?;
    f.set_act_badarch(ScmpAction::KillProcess).map_err(other)?;
    f.set_ctl_nnp(true).map_err(other)?;
    // Every thread, not only the caller: links may write from threads of
    // their own, started before (the AF_PACKET link's sender).
    f.set_ctl_tsync(true).map_err(other)?;
    for name in SENTRY_ALLOWED {
        f.add_rule(ScmpAction::Allow, sys(name)?).map_err(other)?;
    }
    for cmd in SENTRY_IOCTLS {
        f.add_rule_conditional(
            ScmpAction::Allow,
            sys("ioctl")?,
            &[ScmpArgCompare::new(
                1,
                ScmpCompareOp::MaskedEqual(0xffff_ffff),
                cmd,
            )],
        )
        .map_err(other)?;
    }
    f.add_rule_conditional(
        ScmpAction::Allow,
        sys("socketpair")?,
        &[eq(0, libc::AF_UNIX as u64)],
    )
    .map_err(other)?;
    if host_sockets {
        for name in SENTRY_NAT {
            f.add_rule(ScmpAction::Allow, sys(name)?).map_err(other)?;
        }
        for family in [libc::AF_INET, libc::AF_INET6] {
            f.add_rule_conditional(ScmpAction::Allow, sys("socket")?, &[eq(0, family as u64)])
                .map_err(other)?;
        }
    }
    f.load().map_err(other)
}

fn sys(name: &str) -> io::Result<ScmpSyscall> {
    ScmpSyscall::from_name(name).map_err(other)
}

fn eq(arg: u32, value: u64) -> ScmpArgCompare {
    ScmpArgCompare::new(arg, ScmpCompareOp::Equal, value)
}

fn ne(arg: u32, value: u64) -> ScmpArgCompare {
    ScmpArgCompare::new(arg, ScmpCompareOp::NotEqual, value)
}

#[allow(clippy::needless_pass_by_value)] // used as map_err(other)
fn other(e: libseccomp::error::SeccompError) -> io::Error {
    io::Error::other(e.to_string())
}
