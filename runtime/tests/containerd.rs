//! containerd (Debian's 1.6) with smolvisor as the binary of its runc
//! shim (`io.containerd.runc.v2`): the README's configuration as containerd
//! itself reads it (`containerd config dump`), and `ctr run` through the
//! shim, a pod included: a second task whose spec names the first's network
//! namespace (`--with-ns`, as the CRI plugin does) and a third marked by
//! the CRI annotations only.
//!
//! The test starts a containerd of its own: state, root and socket under
//! one directory, the CRI plugin off (no kubelet here), a namespace of its
//! own for the tasks; the tasks get new network namespaces (no `--net-host`),
//! so no interface of the host is touched. The containers' root file system
//! is a busybox tree (`ctr run --rootfs`), so no image and no snapshotter.
//!
//! Needs root, containerd, ctr and busybox-static.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Ran as Out, ScratchDir, rootfs, run_timed};

/// `/www/index.html` in the root file system.
const PAGE: &str = "smolvisor containerd test: index\n";

/// A containerd of the test's own; stopped and removed on drop.
struct Containerd {
    dir: PathBuf,
    child: Child,
    /// ctr's namespace for the test's tasks.
    ns: String,
    _scratch: ScratchDir,
}

/// `argv` with a deadline of 60 s.
fn run(argv: &[&str]) -> Out {
    run_timed(argv, &[])
}

impl Containerd {
    fn start() -> Containerd {
        let scratch = ScratchDir::new("containerd");
        // Short: the shims' sockets are named under the state directory.
        let dir = PathBuf::from(format!("/tmp/smvctd{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create containerd dir");
        let d = dir.display();
        let config = format!(
            "version = 2\n\
             root = \"{d}/root\"\n\
             state = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n"
        );
        fs::write(dir.join("config.toml"), config).expect("write config.toml");
        let log = fs::File::create(dir.join("containerd.log")).expect("containerd.log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            dir,
            child,
            ns: format!("smv-test-{}", std::process::id()),
            _scratch: scratch,
        };
        let started = Instant::now();
        while !c.ctr(&["version"]).ok {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "containerd did not come up\n{}",
                fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// `ctr --address SOCK -n NS ARGS`.
    fn ctr(&self, args: &[&str]) -> Out {
        let address = format!("{}/containerd.sock", self.dir.display());
        let mut argv = vec!["ctr", "--address", &address, "-n", &self.ns];
        argv.extend_from_slice(args);
        run(&argv)
    }

    /// `ctr ARGS`, which must succeed; its stdout, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.ok,
            "ctr failed\n{out}\n--- containerd.log (tail):\n{}",
            self.log_tail()
        );
        out.stdout.trim().to_owned()
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Task `id`'s pid, from `ctr task ls`.
    fn task_pid(&self, id: &str) -> i32 {
        let listed = self.ok(&["task", "ls"]);
        listed
            .lines()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some(id)).then(|| words.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no task {id} in\n{listed}"))
    }

    /// The Sentry daemons of this test's tasks (their `--root` names the
    /// shim's namespace directory), not their signal watchers.
    fn sentries(&self) -> Vec<i32> {
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
                continue;
            };
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if comm.trim_end() == "smolvisor-sentr"
                && String::from_utf8_lossy(&cmdline).contains(&format!("/{}\0", self.ns))
            {
                found.push(pid);
            }
        }
        let parent = |p: i32| {
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
            after.split(' ').nth(1).and_then(|v| v.parse::<i32>().ok())
        };
        let all = found.clone();
        found.retain(|&p: &i32| parent(p).is_none_or(|pp| !all.contains(&pp)));
        found
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let listed = self.ctr(&["task", "ls", "-q"]).stdout;
        for id in listed.split_whitespace() {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        }
        let started = Instant::now();
        while !self.ctr(&["task", "ls", "-q"]).stdout.trim().is_empty()
            && started.elapsed() < Duration::from_secs(10)
        {
            for id in self.ctr(&["task", "ls", "-q"]).stdout.split_whitespace() {
                let _ = self.ctr(&["task", "delete", "-f", id]);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let listed = self.ctr(&["container", "ls", "-q"]).stdout;
        for id in listed.split_whitespace() {
            let _ = self.ctr(&["container", "rm", id]);
        }
        let _ = self.ctr(&["namespace", "rm", &self.ns]);
        // The shim's runtime root for the namespace (empty by now).
        let _ = fs::remove_dir(format!("/run/containerd/runc/{}", self.ns));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The README's containerd configuration, with BinaryName pointed at the
/// binary under test, as `containerd config dump` reads it: the runtime
/// `smolvisor`, of the runc shim's type, with that binary.
#[test]
fn the_readmes_containerd_config_names_smolvisor_as_the_shims_binary() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let block = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(toml, _)| toml))
        .find(|toml| toml.contains("runtimes.smolvisor"))
        .expect("the README shows a containerd configuration with runtimes.smolvisor");
    let bin = env!("CARGO_BIN_EXE_smolvisor");
    assert!(block.contains("BinaryName = \"/usr/local/bin/smolvisor\""));
    let config = block.replace("/usr/local/bin/smolvisor", bin);
    let scratch = ScratchDir::new("containerd-config");
    let path = scratch.path().join("config.toml");
    fs::write(&path, config).expect("write config.toml");
    let out = run(&[
        "containerd",
        "--config",
        path.to_str().unwrap(),
        "config",
        "dump",
    ]);
    assert!(out.ok, "{out}");
    let dump = out.stdout;
    let section = |name: &str| -> String {
        let head = format!("[{name}]");
        let start = dump
            .find(&head)
            .unwrap_or_else(|| panic!("no {head} in the dump:\n{dump}"));
        let rest = &dump[start + head.len()..];
        let end = rest.find("\n\n").unwrap_or(rest.len());
        rest[..end].to_owned()
    };
    let runtime = r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes.smolvisor"#;
    let own = section(runtime);
    assert!(
        own.contains(r#"runtime_type = "io.containerd.runc.v2""#),
        "{own}"
    );
    let options = section(&format!("{runtime}.options"));
    assert!(
        options.contains(&format!("BinaryName = \"{bin}\"")),
        "{options}"
    );
}

/// `ctr run` through the runc shim with smolvisor as its binary: a server
/// task; a second task in its network namespace (`--with-ns`) fetches its
/// page over 127.0.0.1 through the same Sentry; a third, in a namespace of
/// its own but marked by the CRI annotations as a container of the first's
/// sandbox, joins it too.
#[test]
fn ctr_runs_a_pod_through_the_runc_shim() {
    let c = Containerd::start();
    let bin = env!("CARGO_BIN_EXE_smolvisor");
    let tree = ScratchDir::new("containerd-rootfs");
    rootfs::assemble(tree.path(), false);
    rootfs::write(tree.path(), "www/index.html", PAGE);
    let root = tree.path().to_str().unwrap();
    let path = format!("PATH={}", rootfs::PATH);
    let with = |extra: &[&str], id: &str, argv: &[&str]| -> Vec<String> {
        let mut a = vec!["run", "--runc-binary", bin, "--env", &path, "--rootfs"];
        a.extend_from_slice(extra);
        a.push(root);
        a.push(id);
        a.extend_from_slice(argv);
        a.iter().map(|s| (*s).to_owned()).collect()
    };
    let args = with(
        &[
            "-d",
            "--null-io",
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
        ],
        "srv",
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );
    c.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let pid = c.task_pid("srv");
    let netns = format!("network:/proc/{pid}/ns/net");
    let fetch = ["wget", "-qO-", "http://127.0.0.1/index.html"];
    let started = Instant::now();
    loop {
        let args = with(&["--rm", "--with-ns", &netns], "member", &fetch);
        let out = c.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if out.ok && out.stdout == PAGE {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the member's fetch\n{out}\n--- containerd.log (tail):\n{}",
            c.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let args = with(
        &[
            "--rm",
            "--annotation",
            "io.kubernetes.cri.container-type=container",
            "--annotation",
            "io.kubernetes.cri.sandbox-id=srv",
        ],
        "annotated",
        &[
            "sh",
            "-c",
            "wget -qO- http://127.0.0.1/index.html && cat /proc/net/dev",
        ],
    );
    let out = c.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.ok && out.stdout.starts_with(PAGE),
        "the annotated container's fetch\n{out}"
    );
    // Its kernel namespace is its own, empty one: the page came through the
    // pod's Sentry.
    assert!(
        out.stdout.contains("lo:") && !out.stdout.contains("eth"),
        "{out}"
    );
    let sentries = c.sentries();
    assert_eq!(sentries.len(), 1, "Sentries of the pod: {sentries:?}");
}
