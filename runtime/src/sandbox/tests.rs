//! Starts real guests (as root, like CI) running commands that make no socket
//! calls, so nobody needs to answer the listener: the tests just hold it.
//! The guests report through their exit status only, since their writes never
//! reach the host.

use std::ffi::OsString;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use super::*;

/// The checks below look at the process's children and mount table, so the
/// guests of different tests must not overlap.
static ONE_SANDBOX_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_SANDBOX_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn spec(cwd: &Path, argv: &[&str]) -> GuestSpec {
    GuestSpec {
        argv: argv.iter().map(OsString::from).collect(),
        cwd: cwd.to_owned(),
        files: Vec::new(),
        gofer: false,
    }
}

/// The host's mount table, less named network namespaces (`nsfs` mounts
/// under /run/netns) and what is mounted under `/tmp/smv*` (the Docker,
/// podman and containerd suites' own daemons): other programs on the
/// machine add and remove those while the tests run, and the sandbox never
/// makes one.
fn mount_table() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| !line.contains(" - nsfs "))
        // The private dockerd, podman and containerd of other suites that
        // run at the same time mount under their scratch directories.
        .filter(|line| {
            line.split(' ')
                .nth(4)
                .is_none_or(|at| !at.starts_with("/tmp/smv"))
        })
        .map(str::to_owned)
        .collect()
}

/// Our children that are sandbox inits (alive or zombie).
fn leftover_inits() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = tail.split_whitespace().nth(1);
        if ppid == Some(me.as_str()) && head.ends_with("(smolvisor-init") {
            found.push(stat);
        }
    }
    found
}

fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        other => panic!("unexpected wait status {other:?}"),
    }
}

/// Runs `argv` in a sandbox to the end and returns the init's exit code,
/// checking that the host's mount table did not change.
fn run_in(cwd: &Path, argv: &[&str]) -> i32 {
    let before = mount_table();
    let guest = spawn(&spec(cwd, argv)).unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
    let status = waitpid(guest.pid, None).unwrap();
    drop(guest);
    assert_eq!(mount_table(), before, "the host's mount table changed");
    exit_code(status)
}

fn sh(script: &str) -> i32 {
    run_in(Path::new("/"), &["sh", "-c", script])
}

/// A fresh directory under /tmp on the host, removed on drop.
struct HostDir(PathBuf);

impl HostDir {
    fn new(tag: &str) -> HostDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = Path::new("/tmp").join(format!(
            "smolvisor-sandbox-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&path).unwrap();
        HostDir(path)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn exit_codes_and_signals_come_back_as_the_inits_status() {
    let _serial = serial();
    assert_eq!(sh("exit 0"), 0);
    assert_eq!(sh("exit 42"), 42);
    assert_eq!(sh("kill -KILL $$"), 128 + 9);
    assert_eq!(sh("kill -TERM $$"), 128 + 15);
}

#[test]
fn the_init_forwards_signals_but_not_the_terminals() {
    let _serial = serial();
    let before = mount_table();
    let guest = spawn(&spec(Path::new("/"), &["sleep", "10"])).unwrap();
    let started = Instant::now();
    // SIGINT comes from the terminal to the whole process group: the init
    // must not pass it on (the command would get it twice).
    sentry::sys::pidfd_send_signal(guest.pidfd.as_fd(), libc::SIGINT).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        waitpid(guest.pid, Some(WaitPidFlag::WNOHANG)).unwrap(),
        WaitStatus::StillAlive
    );
    sentry::sys::pidfd_send_signal(guest.pidfd.as_fd(), libc::SIGTERM).unwrap();
    assert_eq!(exit_code(waitpid(guest.pid, None).unwrap()), 128 + 15);
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(guest);
    assert_eq!(mount_table(), before);
}

#[test]
fn a_forwarded_signal_reaches_the_commands_handler() {
    let _serial = serial();
    // SIGWINCH is ignored by default, so sending it before the trap is set
    // is harmless: keep sending until the command leaves through the trap.
    let script = "trap 'exit 7' WINCH; while :; do sleep 0.02; done";
    let guest = spawn(&spec(Path::new("/"), &["sh", "-c", script])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let _ = sentry::sys::pidfd_send_signal(guest.pidfd.as_fd(), libc::SIGWINCH);
        match waitpid(guest.pid, Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            status => break status,
        }
    };
    assert_eq!(exit_code(status), 7);
}

#[test]
fn writes_stay_in_the_sandbox() {
    let _serial = serial();
    let dir = HostDir::new("writes");
    fs::write(dir.0.join("existing"), "host\n").unwrap();
    let etc_name = format!("smolvisor-test-{}", std::process::id());
    let etc_file = Path::new("/etc").join(&etc_name);
    let script = format!(
        "echo guest > /etc/{etc_name} || exit 10
         test \"$(cat /etc/{etc_name})\" = guest || exit 11
         echo guest > new || exit 12
         test \"$(cat {cwd}/new)\" = guest || exit 13
         test \"$(cat existing)\" = host || exit 14
         echo changed > existing || exit 15
         test \"$(cat existing)\" = changed || exit 16
         mkdir sub && rm existing || exit 17
         test ! -e existing || exit 18
         test \"$(pwd)\" = {cwd} || exit 19",
        cwd = dir.0.display()
    );
    assert_eq!(run_in(&dir.0, &["sh", "-c", &script]), 0);
    assert!(
        !etc_file.exists(),
        "the guest's write to /etc reached the host"
    );
    assert!(!dir.0.join("new").exists());
    assert!(!dir.0.join("sub").exists());
    assert_eq!(
        fs::read_to_string(dir.0.join("existing")).unwrap(),
        "host\n"
    );
}

/// Exit 23: the guest, started by root, loads its filter without
/// no_new_privs, so setuid programs work in it as under runc (the filter
/// holds all the same: exit 24).
#[test]
fn the_guest_has_its_own_processes_network_and_devices() {
    let _serial = serial();
    let host_net = fs::read_link("/proc/self/ns/net").unwrap();
    let host_name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let script = format!(
        "test $$ -eq 2 || exit 10
         test $PPID -eq 1 || exit 11
         test \"$(cat /proc/1/comm)\" = smolvisor-init || exit 12
         test \"$(readlink /proc/self/ns/net)\" != '{net}' || exit 13
         test \"$(ls /sys/class/net)\" = lo || exit 14
         test \"$(cat /sys/class/net/lo/flags)\" = 0x8 || exit 15
         test \"$(cat /proc/sys/kernel/hostname)\" = '{name}' || exit 16
         (echo guest > /proc/sys/kernel/hostname) 2>/dev/null && exit 17
         grep -q '^sysfs /sys sysfs ro,' /proc/self/mounts || exit 18
         test -c /dev/null && echo x > /dev/null || exit 19
         test \"$(head -c 3 /dev/zero | od -An -tx1 | tr -d ' ')\" = 000000 || exit 20
         test -L /dev/ptmx && test -d /dev/pts || exit 21
         echo x > /dev/shm/x && test -L /dev/fd || exit 22
         grep -q '^NoNewPrivs:.0' /proc/self/status || exit 23
         grep -q '^Seccomp:.2' /proc/self/status || exit 24
         for fd in /proc/$$/fd/*; do
             case \"$(readlink $fd)\" in *seccomp*) exit 25;; esac
         done
         exit 0",
        net = host_net.display(),
        name = host_name.trim(),
    );
    assert_eq!(sh(&script), 0);
}

#[test]
fn the_caller_gets_the_listener() {
    let _serial = serial();
    let guest = spawn(&spec(Path::new("/"), &["true"])).unwrap();
    let link = fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&guest.listener)
    ))
    .unwrap();
    assert_eq!(link, Path::new("anon_inode:seccomp notify"));
    assert_eq!(exit_code(waitpid(guest.pid, None).unwrap()), 0);
}

#[test]
fn a_missing_command_fails_like_a_shell() {
    let _serial = serial();
    let before = mount_table();
    let error = spawn(&spec(Path::new("/"), &["smolvisor-no-such-command"])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "smolvisor-no-such-command: No such file or directory"
    );
    assert_eq!(error.exit_code(), 127);
    let error = spawn(&spec(Path::new("/"), &["/etc/passwd"])).unwrap_err();
    assert_eq!(error.to_string(), "/etc/passwd: Permission denied");
    assert_eq!(error.exit_code(), 126);
    assert_eq!(leftover_inits(), Vec::<String>::new());
    assert_eq!(mount_table(), before);
}

#[test]
fn a_setup_failure_is_reported_and_leaves_nothing_behind() {
    let _serial = serial();
    let before = mount_table();
    let error = spawn(&spec(Path::new("/smolvisor-no-such-dir"), &["true"])).unwrap_err();
    assert!(matches!(error, SandboxError::Setup(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "setting up the sandbox: changing to the working directory /smolvisor-no-such-dir: \
         No such file or directory"
    );
    assert_eq!(error.exit_code(), 125);
    assert_eq!(leftover_inits(), Vec::<String>::new());
    assert_eq!(mount_table(), before);
}

#[test]
fn bad_command_lines_are_refused_before_anything_starts() {
    assert!(matches!(
        spawn(&spec(Path::new("/"), &[])),
        Err(SandboxError::NoCommand)
    ));
    assert!(matches!(
        spawn(&spec(Path::new("/"), &["a\0b"])),
        Err(SandboxError::NulInArgument(_))
    ));
}

#[test]
fn the_runtime_stays_in_its_pid_namespace() {
    let _serial = serial();
    let ours = fs::read_link("/proc/thread-self/ns/pid_for_children").unwrap();
    assert_eq!(sh("exit 0"), 0);
    assert_eq!(
        fs::read_link("/proc/thread-self/ns/pid_for_children").unwrap(),
        ours
    );
    // And a second sandbox from the same thread works.
    assert_eq!(sh("test $$ -eq 2"), 0);
}

/// In a forked child: of six descriptors, the kept ones (and stdio, even
/// when a kept one is stdio) stay open, every other one is closed.
#[test]
fn close_descriptors_except_keeps_exactly_what_it_is_told() {
    use std::os::fd::{AsRawFd, OwnedFd};
    let _one = serial();
    let fds: Vec<OwnedFd> = (0..6)
        .map(|_| fs::File::open("/dev/null").expect("/dev/null").into())
        .collect();
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    match sys::fork().expect("fork") {
        ForkResult::Child => {
            let stderr = std::io::stderr();
            let keep = [
                fds[4].as_fd(),
                fds[1].as_fd(),
                fds[4].as_fd(),
                stderr.as_fd(),
            ];
            if sys::close_descriptors_except(&keep).is_err() {
                sys::exit_now(100);
            }
            // Asked without opening anything (which would reuse a number).
            let open = |fd: i32| fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_ok();
            let kept = [raw[1], raw[4]];
            let mut status = 0;
            for (i, &fd) in raw.iter().enumerate() {
                if open(fd) != kept.contains(&fd) {
                    status |= 1 << i;
                }
            }
            if !(0..3).all(open) {
                status |= 64;
            }
            if (3..256).any(|fd| open(fd) && !kept.contains(&fd)) {
                status |= 128;
            }
            sys::exit_now(status)
        }
        ForkResult::Parent { child } => {
            assert_eq!(waitpid(child, None), Ok(WaitStatus::Exited(child, 0)));
        }
    }
}
