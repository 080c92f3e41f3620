//! A private Docker engine for the tests: `dockerd` (with the `containerd`
//! it starts itself) in a network namespace of its own and a mount
//! namespace of its own, every file under one temporary directory, and a
//! cgroup parent of its own; removed on drop, also after a panic.
//!
//! The network namespace `smolvisor-docker-<pid>` holds `docker0`, the
//! iptables rules Docker writes, `docker-proxy` and the namespaces of the
//! containers' sandboxes hang off it: the host's own interfaces and
//! iptables are never touched. The mount namespace (`unshare --mount
//! --propagation slave`, so the host's mounts, `/sys/fs/cgroup` among them,
//! are all seen) keeps the overlay mounts and the `nsfs` bind mounts of
//! the network sandboxes off the host's mount table; [`Dockerd::nsenter`]
//! enters it. (`ip netns exec` cannot start dockerd: it remounts `/sys`,
//! hiding the cgroup file systems.)
//!
//! Layout of the directory `/tmp/smv<pid>`: `data/` (`--data-root`),
//! `e/` (`--exec-root`, holding `containerd/`, `netns/` and the runtimes'
//! state roots: Docker 20.10 passes `--root EXEC_ROOT/runtime-runc/moby`
//! whatever the runtime's name), `docker.sock`, `docker.pid`,
//! `daemon.json`, `dockerd.log` (dockerd's and containerd's logs: a
//! runtime's errors appear there as `OCI runtime create failed: ...`),
//! `client/` (the client's `DOCKER_CONFIG`), `pcap/`. The exec root is
//! `/tmp/smvNNNNN/e`, no longer than Docker's default `/var/run/docker`, so
//! the paths under the runtime's `--root` (Unix sockets among them, at most
//! 107 bytes) are as long as in a real installation, not longer. When the
//! test panicked, `dockerd.log` is kept as
//! `target/tmp/docker-<pid>-dockerd.log`.
//!
//! Every client command is a [`Guest`]: it has a deadline.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::{Guest, Mode, Outcome};

/// Marks a directory as a test daemon's (for [`sweep_stale`]).
const MARKER: &str = ".smolvisor-docker-test";

/// The Docker client: Debian's, which matches the daemon, when installed
/// (a newer one may shadow it in `/usr/local/bin`).
pub fn client() -> PathBuf {
    let debian = Path::new("/usr/bin/docker");
    if debian.exists() {
        debian.to_owned()
    } else {
        PathBuf::from("docker")
    }
}

/// A running private dockerd; stopped and cleaned away on drop.
#[derive(Debug)]
pub struct Dockerd {
    /// The network namespace (`/run/netns/NAME`).
    pub ns: String,
    /// Everything of the daemon's lives under here.
    pub dir: PathBuf,
    /// The cgroup parent of the containers (a directory in every hierarchy).
    pub cgroup_parent: String,
    child: Option<Child>,
}

impl Dockerd {
    /// Makes the namespace and the directory, lets `configure` write
    /// `daemon.json` (its argument; the directory is its parent), starts
    /// dockerd and waits until it answers.
    pub fn start(configure: impl FnOnce(&Path)) -> Dockerd {
        sweep_stale();
        let mut daemon = Dockerd::named(std::process::id());
        // Left by an earlier process with our pid that was killed outright.
        daemon.clean_up();
        // From here on, Drop removes whatever was made.
        for sub in ["client", "pcap"] {
            fs::create_dir_all(daemon.dir.join(sub)).expect("create dockerd dir");
        }
        fs::write(daemon.path(MARKER), "").expect("mark dockerd dir");
        run_quiet("ip", &["netns", "add", &daemon.ns]);
        run_quiet("ip", &["-n", &daemon.ns, "link", "set", "lo", "up"]);
        configure(&daemon.path("daemon.json"));

        let overlay = fs::read_to_string("/proc/filesystems")
            .is_ok_and(|f| f.lines().any(|l| l.ends_with("\toverlay")));
        let driver = if overlay { "overlay2" } else { "vfs" };
        let log = File::create(daemon.path("dockerd.log")).expect("create dockerd.log");
        let netns = format!("--net=/run/netns/{}", daemon.ns);
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "slave",
            "nsenter",
            &netns,
            "dockerd",
        ])
        .arg("--data-root")
        .arg(daemon.path("data"))
        .arg("--exec-root")
        .arg(daemon.path("e"))
        .arg("--pidfile")
        .arg(daemon.path("docker.pid"))
        .arg("-H")
        .arg(daemon.host())
        .arg("--config-file")
        .arg(daemon.path("daemon.json"))
        .args(["--storage-driver", driver])
        .args(["--cgroup-parent", &daemon.cgroup_parent])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .current_dir(&daemon.dir);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        daemon.child = Some(
            cmd.spawn()
                .expect("start dockerd (is docker.io installed?)"),
        );

        let started = Instant::now();
        loop {
            let out = daemon
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .deadline(Duration::from_secs(10))
                .run();
            if out.status.success() {
                break;
            }
            let exited = daemon.child.as_mut().unwrap().try_wait().expect("try_wait");
            if exited.is_some() || started.elapsed() > Duration::from_secs(60) {
                panic!(
                    "dockerd did not come up ({exited:?})\n{out}\n--- dockerd.log:\n{}",
                    daemon.log_tail(60)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        daemon
    }

    /// The names of test process `pid`'s daemon (not started).
    fn named(pid: u32) -> Dockerd {
        Dockerd {
            ns: format!("smolvisor-docker-{pid}"),
            dir: PathBuf::from(format!("/tmp/smv{pid}")),
            cgroup_parent: format!("smvd-{pid}"),
            child: None,
        }
    }

    /// A path under the daemon's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// `unix://DIR/docker.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.path("docker.sock").display())
    }

    /// dockerd's pid (the `unshare` and `nsenter` before it exec).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("dockerd started").id()
    }

    /// `docker -H ... ARGS` (30 s deadline unless changed).
    pub fn docker<S: AsRef<str>>(&self, args: &[S]) -> Guest {
        let mut argv = vec![client().display().to_string(), "-H".to_owned(), self.host()];
        argv.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self.native(Guest::new(&argv))
            .env("DOCKER_CONFIG", &self.path("client").display().to_string())
    }

    /// Runs `docker ARGS`; panics with its output and the daemon log's
    /// tail unless it exits 0; returns its stdout, trimmed.
    pub fn ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        let out = self.docker(args).run();
        self.assert_success(&out);
        out.stdout.trim().to_owned()
    }

    /// Panics with the output and the daemon log's tail unless `out`
    /// exited 0 in time.
    pub fn assert_success(&self, out: &Outcome) {
        assert!(
            !out.timed_out && out.status.success(),
            "command failed\n{out}{}",
            self.diagnostics()
        );
    }

    /// `docker inspect -f FORMAT ID`, trimmed.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, id])
    }

    /// `cmd` run natively in the daemon's network namespace (the "host"
    /// the containers see: docker0's side).
    pub fn native(&self, cmd: Guest) -> Guest {
        cmd.mode(Mode::Native).netns(&self.ns)
    }

    /// `nsenter --mount=<dockerd's> ARGS...`: a command that sees the
    /// daemon's mounts, e.g. `nsenter --net=SANDBOXKEY ip addr` (a second
    /// nsenter: the first opens every namespace file before entering any,
    /// and the `SandboxKey` bind mounts exist only in dockerd's namespace).
    pub fn nsenter<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.pid()));
        cmd.args(args.iter().map(AsRef::as_ref));
        cmd
    }

    /// The daemon's mount table as it sees it.
    pub fn mountinfo(&self) -> String {
        fs::read_to_string(format!("/proc/{}/mountinfo", self.pid())).unwrap_or_default()
    }

    /// The last `n` lines of dockerd.log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = fs::read_to_string(self.path("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The last errors and warnings in dockerd.log (containerd's among
    /// them) and the tail of the runtime trace, if there is one: what to
    /// print when a command failed.
    pub fn diagnostics(&self) -> String {
        let log = fs::read_to_string(self.path("dockerd.log")).unwrap_or_default();
        let noise = [
            "does not support cgroup",
            "deprecated",
            "devmapper",
            "Unable to find",
        ];
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| {
                ["level=error", "level=fatal", "level=panic", "level=warning"]
                    .iter()
                    .any(|lvl| l.contains(lvl))
                    && !noise.iter().any(|n| l.contains(n))
            })
            .collect();
        let mut text = format!(
            "--- dockerd.log, errors and warnings (last 12 of {}):\n{}\n",
            errors.len(),
            errors[errors.len().saturating_sub(12)..].join("\n")
        );
        if let Ok(trace) = fs::read_to_string(self.path("runtime-trace.log")) {
            let lines: Vec<&str> = trace.lines().collect();
            text.push_str(&format!(
                "--- runtime-trace.log (last 40 lines):\n{}\n",
                lines[lines.len().saturating_sub(40)..].join("\n")
            ));
        }
        text
    }

    /// Imports the root file system in `rootfs` as the image `tag`, with
    /// `changes` (Dockerfile lines such as `ENV PATH=...`).
    pub fn import(&self, rootfs: &Path, tag: &str, changes: &[&str]) {
        let tar = self.path("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(status.success(), "tar of {} failed", rootfs.display());
        let mut args = vec!["import".to_owned()];
        for change in changes {
            args.extend(["-c".to_owned(), (*change).to_owned()]);
        }
        args.extend([tar.display().to_string(), tag.to_owned()]);
        let out = self.docker(&args).deadline(Duration::from_secs(120)).run();
        self.assert_success(&out);
        let _ = fs::remove_file(tar);
    }

    /// Removes every container (while dockerd runs), stops dockerd, kills
    /// whatever of its is left, and removes the namespace, the cgroups, the
    /// mounts and the directory.
    fn clean_up(&mut self) {
        let alive = self
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none());
        if alive {
            let ids = self.docker(&["ps", "-aq"]).run();
            let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args).deadline(Duration::from_secs(60)).run();
            }
        }
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let started = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if started.elapsed() > Duration::from_secs(20) {
                    let _ = killpg(pid, Signal::SIGKILL);
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            // containerd and docker-proxy, if dockerd left them.
            let _ = killpg(pid, Signal::SIGKILL);
        }
        // Shims (in sessions of their own) and runtimes name the directory
        // on their command lines.
        let dir = format!("{}/", self.dir.display());
        for pid in pids_mentioning(&dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        self.remove_cgroups();
        if Path::new("/run/netns").join(&self.ns).exists() {
            if let Ok(out) = Command::new("ip")
                .args(["netns", "pids", &self.ns])
                .output()
            {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        }
        // Nothing should be mounted here in the host's namespace; if it is,
        // innermost first.
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&dir) || *m == dir.trim_end_matches('/'))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        if thread::panicking() && self.path("dockerd.log").exists() {
            let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("docker-{}-dockerd.log", std::process::id()));
            let _ = fs::copy(self.path("dockerd.log"), &keep);
            eprintln!("dockerd's log is kept in {}", keep.display());
        }
        if self.path("runtime-trace.log").exists() {
            let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("docker-{}-runtime-trace.log", std::process::id()));
            let _ = fs::copy(self.path("runtime-trace.log"), &keep);
            eprintln!("the runtime trace is kept in {}", keep.display());
        }
        if self.path(MARKER).exists() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// Kills what is left in the containers' cgroups and removes them,
    /// deepest first, in every hierarchy.
    fn remove_cgroups(&self) {
        let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.flatten() {
            let top = h.path().join(&self.cgroup_parent);
            if !top.is_dir() {
                continue;
            }
            let mut dirs = Vec::new();
            walk_dirs(&top, 0, 8, &mut dirs);
            for dir in &dirs {
                for pid in fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .split_whitespace()
                {
                    if let Ok(pid) = pid.parse() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                for _ in 0..50 {
                    if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// A shell script that runs `binary`, logging each call's arguments,
/// stderr, exit status and `--log` file to `DIR/runtime-trace.log`
/// ([`Dockerd::diagnostics`] prints its tail): register
/// it in place of the runtime to see what the shim asked and what the
/// runtime said. Returns its path.
pub fn trace_wrapper(dir: &Path, name: &str, binary: &Path) -> PathBuf {
    let path = dir.join(format!("trace-{name}"));
    let trace = dir.join("runtime-trace.log");
    let script = format!(
        r#"#!/bin/sh
# Written by the Docker tests (SMOLVISOR_DOCKER_TRACE=1).
trace={trace}
log=; prev=
for a in "$@"; do [ "$prev" = --log ] && log=$a; prev=$a; done
echo "$(date +%T.%N) [$$] {name}: $*" >>"$trace"
{binary} "$@" 2>>"$trace"
rc=$?
echo "$(date +%T.%N) [$$] exit $rc" >>"$trace"
if [ "$rc" != 0 ] && [ -n "$log" ] && [ -f "$log" ]; then
echo "--- $log (tail):" >>"$trace"; tail -n 5 "$log" >>"$trace"
fi
exit $rc
"#,
        trace = trace.display(),
        binary = binary.display()
    );
    fs::write(&path, script).expect("write trace wrapper");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    fs::set_permissions(&path, mode).expect("chmod trace wrapper");
    path
}

/// Cleans away the daemons of earlier test processes that were killed
/// before their `Drop` ran (a CI timeout's SIGKILL): every namespace,
/// directory or cgroup named after a pid that is no longer a test of ours.
fn sweep_stale() {
    let mut pids = Vec::new();
    let names = |dir: &str, prefix: &str| -> Vec<u32> {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    pids.extend(
        names("/tmp", "smv")
            .into_iter()
            .filter(|pid| Path::new(&format!("/tmp/smv{pid}/{MARKER}")).exists()),
    );
    pids.extend(names("/run/netns", "smolvisor-docker-"));
    pids.extend(names("/sys/fs/cgroup/pids", "smvd-"));
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        let alive = fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("/deps/docker-"));
        if !alive && pid != std::process::id() {
            eprintln!("docker: cleaning away the daemon of dead test process {pid}");
            Dockerd::named(pid).clean_up();
        }
    }
}

/// `dir` and the directories under it, down to `max_depth` levels.
pub fn walk_dirs(dir: &Path, depth: usize, max_depth: usize, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    if depth >= max_depth {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk_dirs(&e.path(), depth + 1, max_depth, out);
            }
        }
    }
}

/// The processes (other than this one) whose command line contains `text`.
pub fn pids_mentioning(text: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(text))
        })
        .collect()
}

/// Runs a command, panicking with its stderr if it fails.
fn run_quiet(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
