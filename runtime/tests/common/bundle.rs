//! Driving an OCI runtime through runc's command line, for the CLI tests
//! without Docker (`tests/oci_cli.rs`).
//!
//! The runtime under test is `smolvisor`, or whatever `SMOLVISOR_OCI_BINARY`
//! names (`/usr/sbin/runc` validates the tests against the reference).
//!
//! - [`Oci`]: one runtime state directory (`--root`, fresh per test, short so
//!   that sockets under it fit in `sun_path`), one `--log` file in JSON.
//!   Every command has a deadline (the process group is killed and the test
//!   fails instead of hanging); stdout and stderr go to files, which a
//!   container created by `create` inherits (runc passes its stdio through),
//!   so they can be read again later. Dropped (also on a panic), it runs
//!   `delete --force` on every container it created or finds under its root,
//!   reaps their init processes and removes the root.
//! - [`Bundle`]: a bundle whose `config.json` comes from the runtime's own
//!   `spec`, edited with serde_json, and whose rootfs is busybox-static with
//!   its applets ([`super::rootfs::assemble`], as the Docker tests' image).
//! - [`Traces`]: what a container may leave behind (state directories,
//!   processes, mounts, cgroups), to check that a failed or deleted one left
//!   nothing.
//!
//! The test process makes itself a child subreaper, as containerd's shim
//! does: the container's init is reparented to it when `create` exits, and
//! the tests reap it to learn how it ended.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::Value;

use super::ScratchDir;

/// The deadline of one runtime command.
pub const CMD_DEADLINE: Duration = Duration::from_secs(30);

/// The runtime under test: `$SMOLVISOR_OCI_BINARY`, else our own binary.
pub fn oci_binary() -> String {
    match std::env::var("SMOLVISOR_OCI_BINARY") {
        Ok(v) if !v.is_empty() => v,
        _ => env!("CARGO_BIN_EXE_smolvisor").to_owned(),
    }
}

/// Whether the runtime under test is runc (the reference run).
pub fn is_runc() -> bool {
    Path::new(&oci_binary())
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("runc"))
}

/// Whether to skip a check because the runtime under test is runc; if so,
/// says what is skipped and why ([`super::note_skipped`]), so a validation
/// run lists every check it did not make.
pub fn skipped_under_runc(what: &str, why: &str) -> bool {
    let runc = is_runc();
    if runc {
        super::note_skipped("runc", what, why);
    }
    runc
}

/// A name unique to this test process: `svt-PID-N-label`.
pub fn unique_id(label: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("svt-{}-{n}-{label}", std::process::id())
}

/// Makes the test process a child subreaper (once), like containerd's shim.
pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// One finished runtime command.
#[derive(Debug)]
pub struct CmdOut {
    pub label: String,
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
    /// What the command appended to the `--log` file.
    pub log: String,
    /// The command's stdout file (a created container writes there too).
    pub stdout_path: PathBuf,
}

impl CmdOut {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with the whole story unless the command exited 0 (and what
    /// it logged is JSON lines).
    pub fn assert_ok(&self) -> &Self {
        assert!(self.success(), "command failed\n{self}");
        self.log_entries();
        self
    }

    /// stdout parsed as JSON (panics with the story if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }

    /// The stdout file as it is now (a running container may have added to it).
    pub fn stdout_now(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// The `--log` lines this command wrote, each parsed as JSON (panics if
    /// one is not JSON: `--log-format json` was given).
    pub fn log_entries(&self) -> Vec<Value> {
        self.log
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("--log line is not JSON ({e}): {l:?}\n{self}"))
            })
            .collect()
    }

    /// The `msg` of every `"level":"error"` line this command logged.
    pub fn log_errors(&self) -> Vec<String> {
        self.log_entries()
            .iter()
            .filter(|v| v["level"] == "error")
            .map(|v| v["msg"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl fmt::Display for CmdOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- command: {}", self.label)?;
        writeln!(f, "--- status: {} after {:.1?}", self.status, self.elapsed)?;
        writeln!(f, "--- stdout:\n{}", self.stdout.trim_end())?;
        writeln!(f, "--- stderr:\n{}", self.stderr.trim_end())?;
        writeln!(f, "--- log:\n{}", self.log.trim_end())
    }
}

/// How a process ended, from `waitpid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(Signal),
}

/// One runtime state directory and log, and the containers made in it.
#[derive(Debug)]
pub struct Oci {
    pub bin: String,
    root: PathBuf,
    log: PathBuf,
    scratch: ScratchDir,
    seq: AtomicUsize,
    /// Containers to `delete --force` when dropped.
    ids: RefCell<Vec<String>>,
    /// Init processes (reparented to us) to reap when dropped.
    pids: RefCell<Vec<i32>>,
    /// The bundles' directories, removed after the containers are deleted.
    bundles: RefCell<Vec<ScratchDir>>,
}

impl Oci {
    pub fn new(label: &str) -> Self {
        become_subreaper();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = PathBuf::from(format!("/tmp/svoci-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create --root dir");
        let scratch = ScratchDir::new(&format!("oci-{label}"));
        let log = scratch.path().join("runtime.log");
        Self {
            bin: oci_binary(),
            root,
            log,
            scratch,
            seq: AtomicUsize::new(0),
            ids: RefCell::new(Vec::new()),
            pids: RefCell::new(Vec::new()),
            bundles: RefCell::new(Vec::new()),
        }
    }

    /// The `--root` directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `--log` file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A scratch directory for this test's files (pid files, process.json).
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// `delete --force ID` when dropped.
    pub fn track(&self, id: &str) {
        let mut ids = self.ids.borrow_mut();
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_owned());
        }
    }

    /// Reap `pid` when dropped (if nobody did).
    pub fn track_pid(&self, pid: i32) {
        self.pids.borrow_mut().push(pid);
    }

    /// Runs `BIN --root R --log L --log-format json ARGS...` to completion.
    /// Panics (after killing its process group) at the deadline.
    pub fn cmd<S: AsRef<str>>(&self, args: &[S]) -> CmdOut {
        self.cmd_deadline(args, CMD_DEADLINE)
    }

    pub fn cmd_deadline<S: AsRef<str>>(&self, args: &[S], deadline: Duration) -> CmdOut {
        self.try_cmd(args, deadline)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_cmd<S: AsRef<str>>(&self, args: &[S], deadline: Duration) -> Result<CmdOut, String> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let label = format!(
            "{} --root {} --log {} --log-format json {}",
            self.bin,
            self.root.display(),
            self.log.display(),
            args.iter()
                .map(|a| if a.is_empty() { "''" } else { a })
                .collect::<Vec<_>>()
                .join(" ")
        );
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let stdout_path = self.scratch.path().join(format!("cmd{n}.stdout"));
        let stderr_path = self.scratch.path().join(format!("cmd{n}.stderr"));
        let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let file = |p: &Path| File::create(p).map_err(|e| format!("create {}: {e}", p.display()));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .args(["--log-format", "json"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(file(&stdout_path)?)
            .stderr(file(&stderr_path)?)
            .process_group(0);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| format!("spawn {label}: {e}"))?;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(format!("wait for {label}: {e}")),
            }
            if started.elapsed() > deadline {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "--- TIMED OUT after {deadline:?} (process group killed): {label}\n\
                     --- stdout:\n{}\n--- stderr:\n{}",
                    fs::read_to_string(&stdout_path).unwrap_or_default(),
                    fs::read_to_string(&stderr_path).unwrap_or_default(),
                ));
            }
            thread::sleep(Duration::from_millis(5));
        };
        let log = fs::read(&self.log).unwrap_or_default();
        let from = usize::try_from(log_start).unwrap_or(0).min(log.len());
        Ok(CmdOut {
            label,
            status,
            elapsed: started.elapsed(),
            stdout: fs::read_to_string(&stdout_path).unwrap_or_default(),
            stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
            log: String::from_utf8_lossy(&log[from..]).into_owned(),
            stdout_path,
        })
    }

    /// `create --bundle DIR --pid-file FILE ID` (tracked for clean-up
    /// before it runs). The pid, if the pid file was written, is tracked too.
    pub fn create(&self, bundle: &Bundle, id: &str) -> (CmdOut, Option<i32>) {
        self.track(id);
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let pid_file = self.scratch.path().join(format!("create{n}.pid"));
        let out = self.cmd(&[
            "create",
            "--bundle",
            path_str(bundle.path()),
            "--pid-file",
            path_str(&pid_file),
            id,
        ]);
        let pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            self.track_pid(pid);
        }
        (out, pid)
    }

    /// `create` that must succeed; returns its output and the init's pid.
    pub fn create_ok(&self, bundle: &Bundle, id: &str) -> (CmdOut, i32) {
        let (out, pid) = self.create(bundle, id);
        out.assert_ok();
        let pid = pid.unwrap_or_else(|| panic!("create wrote no pid to --pid-file\n{out}"));
        (out, pid)
    }

    /// `state ID` parsed (panics unless it succeeds with JSON).
    pub fn state(&self, id: &str) -> Value {
        self.cmd(&["state", id]).assert_ok().json()
    }

    /// `state ID`'s status.
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Polls `state ID` until its status is `want` (panics after `within`).
    pub fn wait_status(&self, id: &str, want: &str, within: Duration) {
        let started = Instant::now();
        loop {
            let state = self.state(id);
            if state["status"] == want {
                return;
            }
            assert!(
                started.elapsed() < within,
                "container {id} did not become {want:?} within {within:?}; state: {state:#}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The names under `--root`.
    pub fn root_entries(&self) -> BTreeSet<String> {
        fs::read_dir(&self.root)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Oci {
    fn drop(&mut self) {
        let mut ids = self.ids.borrow().clone();
        for name in self.root_entries() {
            if !ids.contains(&name) {
                ids.push(name);
            }
        }
        // Our processes are reaped while `delete --force` runs, as
        // containerd's shim does: a pid namespace's init does not finish
        // dying (and its cgroup cannot go) while an exec'd process of it is
        // an unreaped zombie.
        let pids: Vec<i32> = self.pids.borrow().iter().rev().copied().collect();
        let deleting = AtomicBool::new(true);
        thread::scope(|scope| {
            scope.spawn(|| {
                let mut left = pids.clone();
                while deleting.load(Ordering::Relaxed) && !left.is_empty() {
                    left.retain(|&pid| reap(pid, Duration::ZERO).is_err());
                    thread::sleep(Duration::from_millis(20));
                }
            });
            for id in ids.iter().filter(|id| !id.is_empty()) {
                let _ = self.try_cmd(&["delete", "--force", id], Duration::from_secs(20));
            }
            deleting.store(false, Ordering::Relaxed);
        });
        for &pid in &pids {
            // Deleted: the process is dead or dying; reap it if it is ours.
            let _ = reap(pid, Duration::from_secs(2));
        }
        let _ = fs::remove_dir_all(&self.root);
        // A mount left under a bundle could be a bind of a host path:
        // removing the directory would remove through it. Keep such bundles.
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for dir in self.bundles.borrow_mut().drain(..) {
            if mountinfo.contains(path_str(dir.path())) {
                eprintln!(
                    "NOTE: mounts remain under {}: not removing it",
                    dir.path().display()
                );
                std::mem::forget(dir);
            }
        }
    }
}

/// A bundle directory: `config.json` from the runtime's `spec`, rootfs of
/// busybox. Removed by the [`Oci`] that made it, after its containers are
/// deleted (kept when the test panics).
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    /// `spec --bundle DIR`, then `process.terminal=false`,
    /// `process.args=ARGS`, `root.path="rootfs"`, `root.readonly=false`.
    pub fn new(oci: &Oci, label: &str, args: &[&str]) -> Self {
        let scratch = ScratchDir::new(&format!("bundle-{label}"));
        let dir = scratch.path().join("bundle");
        fs::create_dir_all(&dir).expect("create bundle dir");
        let dir = dir.canonicalize().expect("canonicalize bundle dir");
        super::rootfs::assemble(&dir.join("rootfs"), false);
        oci.cmd(&["spec", "--bundle", path_str(&dir)]).assert_ok();
        oci.bundles.borrow_mut().push(scratch);
        let bundle = Self { dir };
        bundle.edit(|c| {
            c["process"]["terminal"] = Value::Bool(false);
            c["process"]["args"] = args.iter().map(|&a| Value::from(a)).collect();
            c["root"]["path"] = Value::from("rootfs");
            c["root"]["readonly"] = Value::Bool(false);
        });
        bundle
    }

    /// The bundle directory (absolute, canonical).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    pub fn config(&self) -> Value {
        let text = fs::read_to_string(self.config_path()).expect("read config.json");
        serde_json::from_str(&text).expect("config.json is JSON")
    }

    pub fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut config = self.config();
        f(&mut config);
        let text = serde_json::to_string_pretty(&config).expect("serialize config.json");
        fs::write(self.config_path(), text).expect("write config.json");
    }

    /// Writes a `process.json` for `exec --process`: the spec's `process`
    /// with `args` replaced. Returns its path.
    pub fn process_file(&self, oci: &Oci, args: &[&str]) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut process = self.config()["process"].clone();
        process["terminal"] = Value::Bool(false);
        process["args"] = args.iter().map(|&a| Value::from(a)).collect();
        let path = oci.scratch().join(format!("process-{n}.json"));
        fs::write(&path, serde_json::to_string_pretty(&process).unwrap())
            .expect("write process.json");
        path
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    // The state is the first field after the parenthesised command name.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// The parent pid of `pid` (from /proc/PID/status).
pub fn ppid(pid: i32) -> Option<i32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// /proc/PID/cmdline with the NULs turned into spaces.
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .unwrap_or_default()
}

/// Waits for our child (or reparented orphan) `pid` to end, up to `within`.
pub fn reap(pid: i32, within: Duration) -> Result<Ended, String> {
    let started = Instant::now();
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Ended::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Ended::Signaled(sig)),
            Ok(_) => {}
            Err(Errno::ECHILD) => {
                return Err(format!(
                    "pid {pid} is not our child (ECHILD): was it reparented to the caller? \
                     alive: {}, ppid: {:?}",
                    alive(pid),
                    ppid(pid)
                ));
            }
            Err(e) => return Err(format!("waitpid({pid}): {e}")),
        }
        if started.elapsed() > within {
            return Err(format!(
                "pid {pid} did not end within {within:?} (cmdline {:?})",
                cmdline(pid)
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// What a container may leave behind, as matched by its id(s) and bundle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Traces {
    /// Entries under `--root` named like an id.
    pub state_dirs: BTreeSet<String>,
    /// Processes whose command line or cgroup names an id, or that live in
    /// another mount namespace whose mounts name the bundle: "PID cmdline".
    pub processes: BTreeSet<String>,
    /// Lines of our /proc/self/mountinfo that name the bundle or an id.
    pub mounts: BTreeSet<String>,
    /// Directories under /sys/fs/cgroup named after an id.
    pub cgroups: BTreeSet<String>,
}

impl Traces {
    /// Looks for traces of `ids` (ids shorter than 8 characters are only
    /// matched as whole names: state and cgroup directories) and `bundle`.
    pub fn find(oci: &Oci, ids: &[&str], bundle: &Path) -> Self {
        let ids: Vec<&str> = ids.iter().copied().filter(|id| !id.is_empty()).collect();
        let long: Vec<&str> = ids.iter().copied().filter(|id| id.len() >= 8).collect();
        let bundle = path_str(bundle);
        let mut traces = Traces::default();
        for name in oci.root_entries() {
            if ids
                .iter()
                .any(|id| name == *id || (id.len() >= 8 && name.contains(id)))
            {
                traces.state_dirs.insert(name);
            }
        }
        let me = std::process::id().to_string();
        let my_mnt = fs::read_link("/proc/self/ns/mnt").ok();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(pid) = name.parse::<i32>() else {
                continue;
            };
            if name == me {
                continue;
            }
            let cmd = cmdline(pid);
            let named = long.iter().any(|id| cmd.contains(id))
                || fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|cg| {
                    cg.lines().any(|l| {
                        l.rsplit(':')
                            .next()
                            .unwrap_or_default()
                            .split('/')
                            .any(|part| ids.iter().any(|id| cgroup_named(part, id)))
                    })
                });
            let contained = !named
                && fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() != my_mnt
                && fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                    .is_ok_and(|m| m.contains(bundle));
            if (named || contained) && alive(pid) {
                traces.processes.insert(format!("{pid} {cmd}"));
            }
        }
        if let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") {
            for line in mountinfo.lines() {
                if line.contains(bundle) || long.iter().any(|id| line.contains(id)) {
                    traces.mounts.insert(line.to_owned());
                }
            }
        }
        walk_cgroups(Path::new("/sys/fs/cgroup"), 0, &ids, &mut traces.cgroups);
        traces
    }

    /// What is in `self` but not in `before`.
    pub fn since(&self, before: &Traces) -> Traces {
        let diff = |a: &BTreeSet<String>, b: &BTreeSet<String>| a.difference(b).cloned().collect();
        Traces {
            state_dirs: diff(&self.state_dirs, &before.state_dirs),
            processes: diff(&self.processes, &before.processes),
            mounts: diff(&self.mounts, &before.mounts),
            cgroups: diff(&self.cgroups, &before.cgroups),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.state_dirs.is_empty()
            && self.processes.is_empty()
            && self.mounts.is_empty()
            && self.cgroups.is_empty()
    }

    /// Panics unless, within a few seconds, nothing matching `ids` and
    /// `bundle` exists that was not in `before`.
    pub fn assert_none_since(oci: &Oci, ids: &[&str], bundle: &Path, before: &Traces, what: &str) {
        let started = Instant::now();
        loop {
            let new = Traces::find(oci, ids, bundle).since(before);
            if new.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{what} left something behind (ids {ids:?}, bundle {}):\n{new:#?}",
                bundle.display()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn walk_cgroups(dir: &Path, depth: usize, ids: &[&str], found: &mut BTreeSet<String>) {
    if depth > 6 {
        return;
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if ids.iter().any(|id| cgroup_named(&name, id)) {
            found.insert(path.display().to_string());
        }
        walk_cgroups(&path, depth + 1, ids, found);
    }
}

/// Whether a cgroup directory `name` is named after container `id`.
fn cgroup_named(name: &str, id: &str) -> bool {
    name == id || (id.len() >= 8 && name.contains(id))
}

/// Seconds since the epoch of an RFC 3339 timestamp
/// (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`), or None if it is not one.
pub fn rfc3339_to_unix(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, min, sec) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let off = digits(i + 1, 2)? * 3600 + digits(i + 4, 2)? * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether `text` mentions `word`, ignoring case.
pub fn mentions(text: &str, word: &str) -> bool {
    text.to_lowercase().contains(&word.to_lowercase())
}

/// Panics unless `out` failed the way the contract wants a failure: a
/// non-zero exit, a message on stderr and an `"level":"error"` line with a
/// `msg` in the `--log` file, both mentioning every word of `words`
/// (ignoring case). `runc_gap` names the words runc 1.1.5 is known not to
/// mention: under runc, their absence is printed as a note, not a failure.
pub fn assert_clear_error(out: &CmdOut, words: &[&str], runc_gap: &[&str]) {
    assert!(
        !out.success(),
        "the command should have failed (non-zero exit)\n{out}"
    );
    assert!(
        out.status.signal().is_none(),
        "the command died of a signal instead of failing cleanly\n{out}"
    );
    assert!(
        !out.stderr.trim().is_empty(),
        "no error message on stderr\n{out}"
    );
    let errors = out.log_errors();
    assert!(
        errors.iter().any(|m| !m.trim().is_empty()),
        "no {{\"level\":\"error\",\"msg\":...}} line in the --log file\n{out}"
    );
    let log_msgs = errors.join("\n");
    for word in words {
        let missing: Vec<&str> = [
            ("stderr", out.stderr.as_str()),
            ("the --log error", &log_msgs),
        ]
        .into_iter()
        .filter(|(_, text)| !mentions(text, word))
        .map(|(what, _)| what)
        .collect();
        if missing.is_empty() {
            continue;
        }
        if runc_gap.contains(word)
            && skipped_under_runc(
                &format!("the check that {} mention {word:?}", missing.join(" and ")),
                &format!("runc's message does not: {:?}", out.stderr.trim()),
            )
        {
            continue;
        }
        panic!("{} does not mention {word:?}\n{out}", missing.join(" and "));
    }
}
