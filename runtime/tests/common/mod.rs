//! Running guest programs for the end-to-end tests: under `smolvisor do
//! --network none`, or natively in a fresh network namespace whose only
//! interface is `lo` (set `SMOLVISOR_E2E_NATIVE=1`), which is how the guest
//! programs themselves are validated against Linux.
//!
//! Every run has a deadline: a hang kills the process group and fails the
//! test instead of blocking CI. stdout and stderr go to files (not pipes), so
//! a stray grandchild holding them open cannot stall the test either.
//!
//! Set `SMOLVISOR_E2E_DEBUG_LOG=1` to pass `--debug-log` to every sandbox and
//! print the log's tail when a run fails.
//!
//! [`Guest::netns`] runs the command (or `smolvisor` itself) inside a named
//! network namespace that the test made (`ip netns exec`), and
//! [`Guest::do_args`] replaces `--network none`: the nat tests use both,
//! with the namespaces of [`netns`]. [`pcap`] reads captures back.
//! [`rootfs`] assembles small root file systems from the host's programs,
//! [`docker`] runs a private Docker engine.

#![allow(dead_code)] // each test binary uses a different subset

pub mod bundle;
pub mod docker;
pub mod netns;
pub mod pcap;
pub mod rootfs;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The binary under test.
pub const SMOLVISOR: &str = env!("CARGO_BIN_EXE_smolvisor");

/// Says that a check was skipped under `runtime` (runc, in a validation
/// run), what it was and why. Written to the process's standard error
/// directly, past the test harness's capture, so that even a run whose
/// tests all pass lists what it did not check.
pub fn note_skipped(runtime: &str, what: &str, why: &str) {
    let line = format!("skipped under {runtime}: {what}: {why}\n");
    let _ = io::stderr().lock().write_all(line.as_bytes());
}
/// Guest programs (Python scripts, C sources, shell scripts).
pub const GUEST_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/guest");
/// The default deadline of one guest run.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Where a guest program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `smolvisor do --network none -- CMD`.
    Sandbox,
    /// `unshare --net` with `lo` up: the reference behaviour of Linux.
    Native,
}

/// The mode the suite runs in (`SMOLVISOR_E2E_NATIVE=1` selects native).
pub fn mode() -> Mode {
    match std::env::var("SMOLVISOR_E2E_NATIVE") {
        Ok(v) if !v.is_empty() && v != "0" => Mode::Native,
        _ => Mode::Sandbox,
    }
}

/// The path of a file under `tests/guest/`.
pub fn guest_file(name: &str) -> String {
    format!("{GUEST_DIR}/{name}")
}

/// A directory removed when dropped (kept when the thread panics, to look
/// at). Lives under Cargo's per-target scratch directory.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("e2e-{}-{n}-{label}", std::process::id()));
        fs::create_dir_all(&path).expect("create scratch dir");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Compiles `tests/guest/<name>.c` once per test process and returns the
/// executable's path. The guest reads it through its overlay of the host's
/// file system.
pub fn compile_c(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-guest-bin");
    fs::create_dir_all(&dir).expect("create guest bin dir");
    let out = dir.join(name);
    // Concurrent test processes (nextest) each build their own copy and
    // rename it into place, so nobody runs a half-written file.
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let src = guest_file(&format!("{name}.c"));
    let status = Command::new("cc")
        .args(["-O1", "-g", "-Wall", "-Wno-unused-result", "-o"])
        .arg(&tmp)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(status.success(), "compiling {src} failed: {status}");
    fs::rename(&tmp, &out).expect("rename compiled guest");
    built.insert(name.to_owned(), out.clone());
    out
}

/// A guest command, not started yet.
#[derive(Debug)]
pub struct Guest {
    argv: Vec<String>,
    mode: Mode,
    deadline: Duration,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
    netns: Option<String>,
    do_args: Vec<String>,
}

impl Guest {
    /// `argv` run in the suite's mode.
    pub fn new<S: AsRef<str>>(argv: &[S]) -> Self {
        Self {
            argv: argv.iter().map(|s| s.as_ref().to_owned()).collect(),
            mode: mode(),
            deadline: DEADLINE,
            cwd: None,
            env: Vec::new(),
            netns: None,
            do_args: vec!["--network".to_owned(), "none".to_owned()],
        }
    }

    /// `python3 tests/guest/<script> ARGS...`.
    pub fn python<S: AsRef<str>>(script: &str, args: &[S]) -> Self {
        let mut argv = vec!["python3".to_owned(), "-u".to_owned(), guest_file(script)];
        argv.extend(args.iter().map(|s| s.as_ref().to_owned()));
        Self::new(&argv)
    }

    /// `sh -c SCRIPT`.
    pub fn sh(script: &str) -> Self {
        Self::new(&["sh", "-c", script])
    }

    /// Overrides the suite's mode (e.g. the native half of a differential test).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs inside the named network namespace (`ip netns exec NS`): in
    /// sandbox mode `smolvisor` itself starts there; natively the command
    /// runs there as is, without a fresh namespace of its own.
    pub fn netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_owned());
        self
    }

    /// The options of `smolvisor do` (in place of `--network none`).
    pub fn do_args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.do_args = args.iter().map(|s| s.as_ref().to_owned()).collect();
        self
    }

    fn label(&self) -> String {
        let mut words = Vec::new();
        if let Some(ns) = &self.netns {
            words.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        match (self.mode, &self.netns) {
            (Mode::Sandbox, _) => {
                words.extend(["smolvisor", "do"].map(String::from));
                words.extend(self.do_args.iter().cloned());
                words.push("--".to_owned());
            }
            (Mode::Native, None) => words.push("unshare --net (lo up) --".to_owned()),
            (Mode::Native, Some(_)) => {}
        }
        format!("{} {}", words.join(" "), shell_words(&self.argv))
    }

    /// Starts the guest with stdin piped (closing it is the guest's cue to
    /// finish, in the interactive tests).
    pub fn spawn(self) -> Running {
        let scratch = ScratchDir::new("run");
        let stdout_path = scratch.path().join("stdout");
        let stderr_path = scratch.path().join("stderr");
        let debug_log = scratch.path().join("debug.log");
        let mut cmd = match (self.mode, &self.netns) {
            (Mode::Sandbox, netns) => {
                let mut cmd = match netns {
                    Some(ns) => {
                        let mut cmd = Command::new("ip");
                        cmd.args(["netns", "exec", ns, SMOLVISOR]);
                        cmd
                    }
                    None => Command::new(SMOLVISOR),
                };
                cmd.arg("do").args(&self.do_args);
                if std::env::var_os("SMOLVISOR_E2E_DEBUG_LOG").is_some() {
                    cmd.arg("--debug-log").arg(&debug_log);
                }
                cmd.arg("--").args(&self.argv);
                cmd
            }
            (Mode::Native, Some(ns)) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).args(&self.argv);
                cmd
            }
            (Mode::Native, None) => {
                let mut cmd = Command::new("unshare");
                cmd.args([
                    "--net",
                    "--",
                    "sh",
                    "-c",
                    "ip link set lo up && exec \"$@\"",
                    "sh",
                ])
                .args(&self.argv);
                cmd
            }
        };
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(File::create(&stdout_path).expect("create stdout file"))
            .stderr(File::create(&stderr_path).expect("create stderr file"))
            .process_group(0);
        let label = self.label();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {label}: {e}"));
        Running {
            stdin: child.stdin.take(),
            child,
            label,
            mode: self.mode,
            started: Instant::now(),
            deadline: self.deadline,
            stdout_path,
            stderr_path,
            debug_log,
            finished: false,
            _scratch: scratch,
        }
    }

    /// Runs the guest to completion with stdin closed at once.
    pub fn run(self) -> Outcome {
        let mut running = self.spawn();
        running.close_stdin();
        running.wait()
    }
}

/// A started guest.
#[derive(Debug)]
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    label: String,
    mode: Mode,
    started: Instant,
    deadline: Duration,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    debug_log: PathBuf,
    /// Reaped: its process group id may belong to someone else now.
    finished: bool,
    _scratch: ScratchDir,
}

/// A guest dropped without being waited for (a background server, or a test
/// that panicked) is killed with its process group.
impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// The process id of what was started: `smolvisor` itself (`ip netns
    /// exec` execs it), or the native command.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The guest's stdout so far.
    pub fn stdout_so_far(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// The guest's stderr so far.
    pub fn stderr_so_far(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until the guest's stdout has a line starting with `prefix` and
    /// returns that line; panics (after killing the guest) if the guest
    /// exits or the deadline passes first.
    pub fn wait_for_line(&mut self, prefix: &str) -> String {
        loop {
            if let Some(line) = self.stdout_so_far().lines().find(|l| l.starts_with(prefix)) {
                return line.to_owned();
            }
            let exited = self.child.try_wait().expect("try_wait").is_some();
            if exited || self.started.elapsed() > self.deadline {
                let outcome = self.finish(exited);
                panic!("guest never printed a line starting with {prefix:?}\n{outcome}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes to the guest's stdin.
    pub fn send(&mut self, data: &str) {
        if let Some(stdin) = &mut self.stdin {
            let _ = stdin.write_all(data.as_bytes());
            let _ = stdin.flush();
        }
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the guest to exit (killing it at the deadline).
    pub fn wait(mut self) -> Outcome {
        self.close_stdin();
        loop {
            if self.child.try_wait().expect("try_wait").is_some() {
                return self.finish(true);
            }
            if self.started.elapsed() > self.deadline {
                return self.finish(false);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(&mut self, exited: bool) -> Outcome {
        let pgid = Pid::from_raw(self.child.id() as i32);
        if !exited {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        let status = self.child.wait().expect("wait");
        self.finished = true;
        // Whatever the guest left behind in our process group (a native
        // background server, say) goes too.
        let _ = killpg(pgid, Signal::SIGKILL);
        let debug_tail = fs::read_to_string(&self.debug_log)
            .map(|log| {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(60)..].join("\n")
            })
            .unwrap_or_default();
        Outcome {
            label: self.label.clone(),
            mode: self.mode,
            status,
            timed_out: !exited,
            elapsed: self.started.elapsed(),
            stdout: fs::read_to_string(&self.stdout_path).unwrap_or_default(),
            stdout_bytes: fs::read(&self.stdout_path).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr_path).unwrap_or_default(),
            debug_tail,
        }
    }
}

/// How a guest run ended.
#[derive(Debug)]
pub struct Outcome {
    pub label: String,
    pub mode: Mode,
    pub status: ExitStatus,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// Empty when stdout is not UTF-8 (binary output: see `stdout_bytes`).
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
    pub debug_tail: String,
}

impl Outcome {
    /// The shell's view of the status: the exit code, or 128+N for signal N.
    pub fn shell_status(&self) -> i32 {
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => -1,
        }
    }

    /// Panics with the whole story unless the guest exited 0 in time.
    pub fn assert_success(&self) -> &Self {
        assert!(
            !self.timed_out && self.status.code() == Some(0),
            "guest did not exit 0\n{self}"
        );
        self
    }

    /// Panics unless stdout has a line equal to `line`.
    pub fn assert_line(&self, line: &str) -> &Self {
        assert!(
            self.stdout.lines().any(|l| l == line),
            "expected the line {line:?} in the guest's stdout\n{self}"
        );
        self
    }

    /// Panics unless stdout has a line starting with `prefix`; returns it.
    pub fn line_starting(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("expected a line starting with {prefix:?}\n{self}"))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- command: {}", self.label)?;
        if self.timed_out {
            writeln!(
                f,
                "--- TIMED OUT after {:.1?} (process group killed)",
                self.elapsed
            )?;
        } else {
            writeln!(f, "--- status: {} after {:.1?}", self.status, self.elapsed)?;
        }
        writeln!(f, "--- stdout:\n{}", tail(&self.stdout, 150))?;
        writeln!(f, "--- stderr:\n{}", tail(&self.stderr, 80))?;
        if !self.debug_tail.is_empty() {
            writeln!(f, "--- debug log (tail):\n{}", self.debug_tail)?;
        }
        Ok(())
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skipped = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skipped > 0 {
        out.push_str(&format!("[... {skipped} lines ...]\n"));
    }
    out.push_str(&lines[skipped..].join("\n"));
    out
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a TCP connection from the host to `127.0.0.1:port` is refused.
pub fn host_connect(port: u16) -> io::Result<std::net::TcpStream> {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )
}

/// Checks what the Sentry process `pid` may still do once it serves
/// (`sentry::privileges`): per thread, the capabilities it keeps by its
/// name (the event loop CAP_KILL and CAP_SYS_PTRACE, a gateway CAP_NET_RAW
/// and CAP_NET_BIND_SERVICE, an OCI control thread CAP_SYS_PTRACE, every other
/// thread none), a bounding set of
/// their union, nothing inheritable or ambient, no_new_privs and a seccomp
/// filter. Returns the threads' names.
pub fn assert_sentry_privileges(pid: u32) -> Vec<String> {
    const KILL_PTRACE: u64 = (1 << 5) | (1 << 19);
    const RAW_BIND: u64 = (1 << 13) | (1 << 10);
    const PTRACE: u64 = 1 << 19;
    let mut names = Vec::new();
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).expect("the Sentry's threads");
    for task in tasks {
        let dir = task.expect("a thread").path();
        let (Ok(comm), Ok(status)) = (
            fs::read_to_string(dir.join("comm")),
            fs::read_to_string(dir.join("status")),
        ) else {
            continue; // a thread that just ended
        };
        let comm = comm.trim().to_owned();
        let field = |name: &str| -> u64 {
            let line = status
                .lines()
                .find(|l| l.starts_with(&format!("{name}:")))
                .unwrap_or_else(|| panic!("no {name} in the status of {comm}"));
            let value = line.split_whitespace().nth(1).expect("a value");
            u64::from_str_radix(value, if name.starts_with("Cap") { 16 } else { 10 })
                .unwrap_or_else(|_| panic!("bad {line:?}"))
        };
        let want = match comm.as_str() {
            "nat" => RAW_BIND,
            // Takes pod members' listeners with pidfd_getfd.
            "sentry-control" => PTRACE,
            c if c.starts_with("smolvisor") => KILL_PTRACE,
            _ => 0,
        };
        let what = format!("thread {comm} of the Sentry {pid}:\n{status}");
        assert_eq!(field("CapEff"), want, "CapEff of {what}");
        assert_eq!(field("CapPrm"), want, "CapPrm of {what}");
        assert_eq!(field("CapInh"), 0, "CapInh of {what}");
        assert_eq!(field("CapAmb"), 0, "CapAmb of {what}");
        assert_eq!(field("NoNewPrivs"), 1, "NoNewPrivs of {what}");
        assert_eq!(field("Seccomp"), 2, "Seccomp of {what}");
        if want == KILL_PTRACE {
            assert_eq!(field("CapBnd"), KILL_PTRACE | RAW_BIND, "CapBnd of {what}");
        }
        names.push(comm);
    }
    names.sort();
    names
}

/// What a command run by [`run_timed`] gave.
pub struct Ran {
    /// The command line.
    pub line: String,
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Ran {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--- command: {}\n--- ok: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.line, self.ok, self.stdout, self.stderr
        )
    }
}

/// Runs `argv` with `envs` added, killed after 60 s (`timeout -k 5 60`).
pub fn run_timed<S: AsRef<str>>(argv: &[S], envs: &[(&str, &Path)]) -> Ran {
    let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "60"]).args(&argv);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run a command");
    Ran {
        line: argv.join(" "),
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A process's resident memory, in KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in status")
}
