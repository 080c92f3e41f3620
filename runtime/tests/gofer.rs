//! The Gofer (`smolvisor do`'s file changes): changes made inside land in
//! the sandbox's tree and vanish with it, the host's files never change,
//! attempts to get out of the root get Linux's errno (or the sandbox's own
//! copy), the guest's own view stays read-only, `--file-log` records each
//! change, and real programs (git, CPython's file tests) work as natively.
//!
//! Sandbox only: natively these changes would land on the host. Needs root,
//! python3 (with its test suite) and git.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{Guest, Mode, ScratchDir, guest_file, mode};

fn sandbox_only() -> bool {
    mode() == Mode::Sandbox
}

/// Every file under `dir`, relative, with its contents (directories empty).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
                out.push((rel + "/", Vec::new()));
            } else if meta.is_file() {
                out.push((rel, fs::read(&p).unwrap()));
            } else {
                out.push((rel, b"(special)".to_vec()));
            }
        }
    }
    out.sort();
    out
}

/// Runs the probe's `sections` in a scratch directory holding
/// `existing.txt`; checks that every check held and the host saw nothing.
fn probe(sections: &[&str], expected: &[&str]) {
    if !sandbox_only() {
        return;
    }
    let dir = ScratchDir::new("gofer");
    let outside = ScratchDir::new("gofer-outside");
    fs::write(dir.path().join("existing.txt"), "original\n").unwrap();
    let before = snapshot(dir.path());
    let passwd = fs::read("/etc/passwd").unwrap();
    let mut argv = vec![
        "python3".to_owned(),
        "-u".to_owned(),
        guest_file("gofer_probe.py"),
        dir.path().display().to_string(),
        outside.path().display().to_string(),
    ];
    argv.extend(sections.iter().map(|s| (*s).to_owned()));
    let out = Guest::new(&argv).deadline(Duration::from_secs(60)).run();
    out.assert_success().assert_line("done");
    for line in expected {
        out.assert_line(&format!("ok {line}"));
    }
    assert!(
        !out.stdout.lines().any(|l| l.starts_with("FAIL")),
        "a check failed\n{out}"
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "the host's directory changed\n{out}"
    );
    assert!(
        fs::read_dir(outside.path()).unwrap().next().is_none(),
        "a file appeared in the host's directory the race aimed at\n{out}"
    );
    assert_eq!(
        fs::read("/etc/passwd").unwrap(),
        passwd,
        "the host's /etc/passwd changed"
    );
    let leaked: Vec<_> = fs::read_dir("/etc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("smolvisor-dotdot-")
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "{leaked:?} appeared in the host's /etc\n{out}"
    );
}

#[test]
fn writes_creates_and_removals_work_inside_and_vanish_afterwards() {
    probe(
        &["basics"],
        &[
            "create",
            "append",
            "mkdir",
            "rename",
            "symlink",
            "link",
            "chmod",
            "chown",
            "truncate",
            "utime",
            "mkfifo",
            "setxattr",
            "unlink and rmdir",
            "unlink a host file",
            "umask",
            "dirfd",
            "access W_OK",
            "fchmod on a read-only descriptor",
        ],
    );
}

#[test]
fn failed_changes_give_linux_errnos() {
    probe(
        &["errnos"],
        &[
            "mkdir existing: EEXIST",
            "O_EXCL existing: EEXIST",
            "missing parent: ENOENT",
            "unlink missing: ENOENT",
            "file as directory: ENOTDIR",
            "rmdir non-empty: ENOTEMPTY",
            "unlink a directory: EISDIR",
            "open a directory for writing: EISDIR",
            "rename into itself: EINVAL",
            "hard link to a directory: EPERM",
            "rename across mounts: EXDEV",
            "device node: EPERM",
            "symlink loop: ELOOP",
            "O_NOFOLLOW on a symlink: ELOOP",
        ],
    );
}

#[test]
fn escapes_stay_inside_the_root_and_the_guest_view_stays_read_only() {
    probe(
        &["escapes"],
        &[
            "symlink to /etc/passwd writes the sandbox's copy",
            "dotdot chain stays inside",
            "dotdot symlink stays inside",
            "/proc/self/root: EROFS",
            "/proc/self/cwd: EROFS",
            "/proc/self/fd reopens the sandbox's copy",
            "symlink to a magic link: EROFS",
            "mkdir through /proc/self/root: EROFS",
            "write to a read-only descriptor: EBADF",
            "root mount is read-only",
        ],
    );
}

#[test]
fn a_symlink_swapped_in_a_loop_never_lets_a_change_out() {
    probe(&["race"], &["race"]);
}

#[test]
fn unix_sockets_bind_to_paths() {
    probe(&["unix_socket"], &["AF_UNIX bind to a path"]);
}

#[test]
fn file_log_has_one_line_per_change() {
    if !sandbox_only() {
        return;
    }
    let dir = ScratchDir::new("file-log");
    let log = ScratchDir::new("file-log-out");
    let log_file = log.path().join("files.log");
    let script = "set -e; echo a > f; mkdir d; mv f d/g; ln -s d/g l; chmod 600 d/g; rm l; \
                  rm -f missing";
    let out = Guest::sh(script)
        .cwd(dir.path())
        .do_args(&[
            "--network",
            "none",
            "--file-log",
            log_file.to_str().unwrap(),
        ])
        .run();
    out.assert_success();
    let text = fs::read_to_string(&log_file).unwrap();
    let d = dir.path().display();
    for want in [
        format!("open {d}/f O_WRONLY|O_CREAT|O_TRUNC = fd"),
        format!("mkdir {d}/d 777 = 0"),
        format!("rename {d}/f {d}/d/g = 0"),
        format!("symlink {d}/l -> d/g = 0"),
        format!("chmod {d}/d/g 600 = 0"),
        format!("unlink {d}/l = 0"),
        format!("unlink {d}/missing = -1 ENOENT: No such file or directory"),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "no line {want:?} in the file log:\n{text}"
        );
    }
}

#[test]
fn git_init_and_commit_work_inside() {
    if !sandbox_only() {
        return;
    }
    let dir = ScratchDir::new("git");
    let script = "set -e; git init -q r; cd r; echo hello > f; git add f; \
                  git -c user.name=t -c user.email=t@e commit -qm first; \
                  git log --format=%s; git status --porcelain | wc -l";
    let out = Guest::sh(script).cwd(dir.path()).run();
    out.assert_success().assert_line("first").assert_line("0");
    assert!(
        !dir.path().join("r").exists(),
        "the repository appeared on the host\n{out}"
    );
}

/// The tests of CPython's file suites that fail, run inside.
fn cpython_failures(extra: &[&str]) -> (BTreeSet<String>, String) {
    let mut args = vec!["--network", "none"];
    args.extend_from_slice(extra);
    let out = Guest::new(&[
        "python3",
        "-m",
        "test",
        "-v",
        "test_os",
        "test_shutil",
        "test_tempfile",
        "test_pathlib",
    ])
    .do_args(&args)
    .deadline(Duration::from_secs(600))
    .run();
    let failed = out
        .stdout
        .lines()
        .filter_map(|l| {
            l.strip_prefix("FAIL: ")
                .or_else(|| l.strip_prefix("ERROR: "))
        })
        .map(str::to_owned)
        .collect();
    let total = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Total tests:"))
        .unwrap_or("")
        .to_owned();
    (failed, total)
}

#[test]
fn cpython_file_suites_pass_as_without_the_gofer() {
    if !sandbox_only() {
        return;
    }
    let (with, total_with) = cpython_failures(&[]);
    let (without, total_without) = cpython_failures(&["--no-gofer"]);
    assert_eq!(
        with, without,
        "failures with the Gofer differ from the copy-on-write tree's own"
    );
    assert_eq!(total_with, total_without, "counts differ");
    // What fails at all is overlayfs's, not the Gofer's: d_ino against
    // st_ino, and statfs showing the upper layer.
    let known: BTreeSet<String> = [
        "test_attributes (test.test_os.TestScandir.test_attributes)",
        "test_disk_usage (test.test_shutil.TestMisc.test_disk_usage)",
    ]
    .map(String::from)
    .into();
    assert!(with.is_subset(&known), "unexpected failures: {with:?}");
}

/// The Gofer process of the sandbox whose `smolvisor` is `pid`.
fn gofer_of(pid: u32) -> Option<i32> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .find(|c: &i32| {
            fs::read_to_string(format!("/proc/{c}/comm"))
                .is_ok_and(|n| n.trim() == "smolvisor-gofer")
        })
}

#[test]
fn the_sandbox_ends_when_its_gofer_dies() {
    if !sandbox_only() {
        return;
    }
    let dir = ScratchDir::new("gofer-dies");
    let mut running = Guest::sh("echo ready; while true; do echo x > f; sleep 0.05; done")
        .cwd(dir.path())
        .deadline(Duration::from_secs(20))
        .spawn();
    running.wait_for_line("ready");
    // The guest may print before the Gofer has named itself (under load).
    let gofer = (0..100)
        .find_map(|_| {
            gofer_of(running.pid()).or_else(|| {
                std::thread::sleep(Duration::from_millis(50));
                None
            })
        })
        .expect("the sandbox has a Gofer");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gofer),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = running.wait();
    assert!(!out.timed_out, "the sandbox outlived its Gofer\n{out}");
    assert_eq!(out.status.code(), Some(137), "{out}");
    assert!(
        out.stderr.contains("the Gofer did not answer"),
        "the end was not said\n{out}"
    );
}

/// A directory under /tmp that every user may reach (the scratch
/// directories' parents are root's own), removed at the end.
struct Fixture(std::path::PathBuf);

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The same scripts as root, as nobody, as nobody with a group, and as root
/// without CAP_DAC_OVERRIDE, over files of several owners.
fn credentials_fixture() -> Fixture {
    use std::os::unix::fs::{PermissionsExt, chown};
    let dir = std::env::temp_dir().join(format!("smolvisor-creds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).unwrap();
    let fx = Fixture(dir.clone());
    let mode = |p: &str, m: u32| {
        fs::set_permissions(dir.join(p), fs::Permissions::from_mode(m)).unwrap();
    };
    let own = |p: &str, u: u32, g: u32| chown(dir.join(p), Some(u), Some(g)).unwrap();
    mode(".", 0o755);
    for (d, m) in [("rootdir", 0o755), ("tmp", 0o1777), ("grpdir", 0o2775)] {
        fs::create_dir(dir.join(d)).unwrap();
        mode(d, m);
    }
    own("grpdir", 0, 4242);
    fs::create_dir(dir.join("otherdir")).unwrap();
    own("otherdir", 1234, 1234);
    mode("otherdir", 0o700);
    fs::write(dir.join("rootfile"), "root's\n").unwrap();
    mode("rootfile", 0o644);
    fs::write(dir.join("tmp/other"), "another's\n").unwrap();
    own("tmp/other", 1234, 1234);
    fs::write(dir.join("other600"), "another's\n").unwrap();
    own("other600", 1234, 1234);
    mode("other600", 0o600);
    let t = "t() { name=$1; shift; if out=$(\"$@\" 2>&1); then echo \"$name: ok\"; \
             else echo \"$name: ${out##*: }\"; fi; }\n";
    let scripts = [
        (
            "nobody.sh",
            "sum=$(md5sum < /etc/passwd)\n\
             t 'write /etc/passwd' sh -c 'echo x >> /etc/passwd'\n\
             [ \"$(md5sum < /etc/passwd)\" = \"$sum\" ] && echo '/etc/passwd unchanged'\n\
             t 'create in a root 0755 dir' sh -c ': > rootdir/new'\n\
             t 'mkdir in a root 0755 dir' mkdir rootdir/d\n\
             t 'create in a 1777 dir' sh -c ': > tmp/mine'\n\
             echo \"its owner: $(stat -c %u:%g tmp/mine)\"\n\
             t 'mkdir in a 1777 dir' mkdir tmp/mydir\n\
             echo \"its owner: $(stat -c %u:%g tmp/mydir)\"\n\
             t 'chmod a root file' chmod 600 rootfile\n\
             t 'chown a root file' chown 65534 rootfile\n\
             t 'chgrp to a group not held' chgrp 4242 tmp/mine\n\
             t 'set times of a root file' touch -d @0 rootfile\n\
             t 'truncate a root file' truncate -s 0 rootfile\n\
             t \"unlink another's file in a sticky dir\" rm -f tmp/other\n\
             t \"rename another's file in a sticky dir\" mv tmp/other tmp/moved\n\
             t 'create in a group dir without the group' sh -c ': > grpdir/g0'\n\
             t 'chmod its own file' chmod 600 tmp/mine\n\
             t 'unlink its own file' rm tmp/mine\n",
        ),
        (
            "group.sh",
            "t 'create in a group dir with the group' sh -c ': > grpdir/g'\n\
             echo \"its owner: $(stat -c %u:%g grpdir/g)\"\n\
             t 'mkdir in a setgid group dir' mkdir grpdir/sub\n\
             echo \"its owner and mode: $(stat -c '%u:%g %A' grpdir/sub)\"\n",
        ),
        (
            "root.sh",
            "t 'root writes its file' sh -c 'echo x >> rootfile'\n\
             t \"root writes another's 0600 file\" sh -c 'echo x >> tmp/other'\n\
             t 'root creates in its dir' sh -c ': > rootdir/r'\n\
             echo \"its owner: $(stat -c %u:%g rootdir/r)\"\n\
             t \"root creates in another's 0700 dir\" sh -c ': > otherdir/r'\n\
             t \"root chowns\" chown 1234:1234 rootdir/r\n",
        ),
        (
            "nodac.sh",
            "t \"no DAC_OVERRIDE: write another's 0600 file\" sh -c 'echo x >> other600'\n\
             t \"no DAC_OVERRIDE: create in another's 0700 dir\" sh -c ': > otherdir/x'\n\
             t 'no DAC_OVERRIDE: chown (CAP_CHOWN kept)' chown 0:0 other600\n",
        ),
    ];
    for (name, body) in scripts {
        fs::write(dir.join(name), format!("{t}{body}")).unwrap();
        mode(name, 0o644);
    }
    fx
}

const AS_USERS: &str = "set -u; \
    setpriv --reuid=65534 --regid=65534 --clear-groups sh nobody.sh; \
    setpriv --reuid=65534 --regid=65534 --groups=4242 sh group.sh; \
    sh root.sh; \
    setpriv --inh-caps=-dac_override --bounding-set=-dac_override sh nodac.sh";

#[test]
fn changes_are_made_with_the_callers_credentials_as_natively() {
    if !sandbox_only() {
        return;
    }
    let fx = credentials_fixture();
    let passwd = fs::read("/etc/passwd").unwrap();
    // Inside first (its changes vanish), then natively on the same files.
    let inside = Guest::sh(AS_USERS).cwd(&fx.0).run();
    inside.assert_success();
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd);
    assert_eq!(fs::read(fx.0.join("rootfile")).unwrap(), b"root's\n");
    let native = Guest::sh(AS_USERS).cwd(&fx.0).mode(Mode::Native).run();
    native.assert_success();
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd);
    for line in [
        "write /etc/passwd: Permission denied",
        "/etc/passwd unchanged",
        "create in a root 0755 dir: Permission denied",
        "mkdir in a root 0755 dir: Permission denied",
        "create in a 1777 dir: ok",
        "its owner: 65534:65534",
        "mkdir in a 1777 dir: ok",
        "chmod a root file: Operation not permitted",
        "chown a root file: Operation not permitted",
        "chgrp to a group not held: Operation not permitted",
        "set times of a root file: Permission denied",
        "truncate a root file: Permission denied",
        "unlink another's file in a sticky dir: Operation not permitted",
        "rename another's file in a sticky dir: Operation not permitted",
        "create in a group dir without the group: Permission denied",
        "chmod its own file: ok",
        "unlink its own file: ok",
        "create in a group dir with the group: ok",
        "its owner: 65534:4242",
        "its owner and mode: 65534:4242 drwxr-sr-x",
        "root writes its file: ok",
        "root writes another's 0600 file: ok",
        "root creates in its dir: ok",
        "its owner: 0:0",
        "root creates in another's 0700 dir: ok",
        "root chowns: ok",
        "no DAC_OVERRIDE: write another's 0600 file: Permission denied",
        "no DAC_OVERRIDE: create in another's 0700 dir: Permission denied",
        "no DAC_OVERRIDE: chown (CAP_CHOWN kept): ok",
    ] {
        inside.assert_line(line);
    }
    assert_eq!(
        inside.stdout, native.stdout,
        "inside and native differ\n{inside}\n{native}"
    );
}
