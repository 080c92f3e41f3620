//! podman (Debian's 4.3, with catatonit) running pods under smolvisor: the
//! runtime registered in `containers.conf` (`[engine.runtimes]`, and as the
//! default runtime), `podman pod create` with two containers that talk
//! over the pod's 127.0.0.1, and `podman kube play` of a two-container pod
//! whose client fetches from its server over localhost.
//!
//! Everything podman keeps is under one directory (`--root`, `--runroot`,
//! `--tmpdir`, vfs storage), and every podman command runs in a network
//! namespace of the test's own (`nsenter --net`, not `ip netns exec`, which
//! remounts `/sys` and hides the cgroups), so netavark's bridge and rules
//! are made there, never on the host's interfaces. `containers.conf` comes
//! through `CONTAINERS_CONF`; its `default_ulimits` fit a host without
//! CAP_SYS_RESOURCE, where podman's defaults fail even under runc.
//!
//! Needs root, podman, catatonit and busybox-static.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Ran as Out, ScratchDir, rootfs, run_timed};

/// The image, imported from a busybox root file system.
const IMAGE: &str = "localhost/smolvisor-podman-test:1";
/// `/www/index.html` in the image.
const PAGE: &str = "smolvisor podman test: index\n";

/// A podman of the test's own, removed on drop.
struct Podman {
    dir: PathBuf,
    ns: String,
    _scratch: ScratchDir,
}

impl Podman {
    fn new(label: &str) -> Podman {
        let scratch = ScratchDir::new(label);
        // Short: podman's sockets live under its run root.
        let dir = PathBuf::from(format!("/tmp/smvpm{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create podman dir");
        let ns = format!("smolvisor-podman-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let made = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .expect("ip netns add");
        assert!(made.success(), "ip netns add {ns}");
        let conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{dir}/events.log\"\n\
             runtime = \"smolvisor\"\n\
             [engine.runtimes]\n\
             smolvisor = [\"{bin}\"]\n",
            dir = dir.display(),
            bin = env!("CARGO_BIN_EXE_smolvisor"),
        );
        fs::write(dir.join("containers.conf"), conf).expect("write containers.conf");
        let podman = Podman {
            dir,
            ns,
            _scratch: scratch,
        };
        let tree = ScratchDir::new("podman-rootfs");
        rootfs::assemble(tree.path(), false);
        rootfs::write(tree.path(), "www/index.html", PAGE);
        let tar = podman.dir.join("rootfs.tar");
        let tarred = Command::new("tar")
            .arg("-C")
            .arg(tree.path())
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(tarred.success(), "tar of the rootfs");
        let path = format!("ENV PATH={}", rootfs::PATH);
        let tar = tar.display().to_string();
        podman.ok(&["import", "-c", &path, &tar, IMAGE]);
        podman
    }

    /// `podman ARGS` in the test's namespace, with a deadline.
    fn run(&self, args: &[&str]) -> Out {
        let d = self.dir.display();
        let mut argv: Vec<String> = [
            "nsenter",
            &format!("--net=/run/netns/{}", self.ns),
            "podman",
            "--root",
            &format!("{d}/storage"),
            "--runroot",
            &format!("{d}/run"),
            "--tmpdir",
            &format!("{d}/tmp"),
            "--storage-driver",
            "vfs",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        argv.extend(args.iter().map(|s| (*s).to_owned()));
        run_timed(
            &argv,
            &[("CONTAINERS_CONF", &self.dir.join("containers.conf"))],
        )
    }

    /// `podman ARGS`, which must succeed; its stdout, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.ok, "podman failed\n{out}");
        out.stdout.trim().to_owned()
    }

    /// The Sentry daemons serving this podman's containers.
    fn sentries(&self) -> Vec<i32> {
        let ids: Vec<String> = self
            .ok(&["ps", "-q", "--no-trunc"])
            .lines()
            .map(str::to_owned)
            .collect();
        let mut found: Vec<i32> = Vec::new();
        for entry in fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
                continue;
            };
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end() != "smolvisor-sentr" {
                continue;
            }
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if ids.iter().any(|id| cmdline.contains(id.as_str())) {
                found.push(pid);
            }
        }
        // Not the Sentries' own signal watchers (forked, same name).
        let parent = |p: i32| {
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
            after.split(' ').nth(1).and_then(|v| v.parse::<i32>().ok())
        };
        let all = found.clone();
        found.retain(|&p| parent(p).is_none_or(|pp| !all.contains(&pp)));
        found
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["pod", "rm", "-f", "-a"]);
        let _ = self.run(&["rm", "-f", "-a"]);
        let _ = self.run(&["system", "reset", "-f"]);
        // Mounts podman may have left under its directory (shm, netns).
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = format!("{}/", self.dir.display());
        for point in mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
        {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Retries `f` until it gives Ok, or panics after `limit`.
fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if started.elapsed() > limit => {
                panic!("{what}: not within {limit:?}; the last attempt:\n{e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn is_under(path: &str, dir: &Path) -> bool {
    Path::new(path).starts_with(dir)
}

/// `podman pod create`, then a server and a client in the pod, each with
/// `--runtime` naming the binary: one Sentry serves the pod, the client
/// fetches the server's page over 127.0.0.1 and finds its port taken, the
/// guests' own kernel namespaces are empty (smolvisor's, not runc's), and
/// a third container still joins once the second is gone. Then `podman
/// kube play` of a two-container pod under the default runtime,
/// `containers.conf`'s smolvisor: its client's log is the server's page.
#[test]
fn podman_pods_share_one_sentry() {
    let p = Podman::new("podman");
    let bin = env!("CARGO_BIN_EXE_smolvisor");
    assert!(!is_under(bin, &p.dir));
    p.ok(&["pod", "create", "--name", "smv-pod"]);
    let run = |extra: &[&str], argv: &[&str]| -> Out {
        let mut args = vec!["--runtime", bin, "run", "--pod", "smv-pod"];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.extend_from_slice(argv);
        p.run(&args)
    };
    let server = run(&["-d"], &["httpd", "-f", "-p", "80", "-h", "/www"]);
    assert!(server.ok, "the server did not start\n{server}");
    let server = server.stdout.trim().to_owned();
    assert_eq!(
        p.ok(&["inspect", "--format", "{{.OCIRuntime}}", &server]),
        bin,
        "the server's runtime"
    );
    eventually("the client's fetch", Duration::from_secs(20), || {
        let out = run(&["--rm"], &["wget", "-qO-", "http://127.0.0.1/index.html"]);
        if out.ok && out.stdout == PAGE {
            Ok(())
        } else {
            Err(out.to_string())
        }
    });
    let taken = run(&["--rm"], &["timeout", "2", "nc", "-l", "-p", "80"]);
    assert!(
        taken.stderr.contains("in use"),
        "a second container could listen on the server's port\n{taken}"
    );
    // The guest's own kernel namespace has nothing but lo: its eth0 is the
    // Sentry's.
    let devices = run(&["--rm"], &["cat", "/proc/net/dev"]);
    assert!(devices.ok, "{devices}");
    let names: Vec<&str> = devices
        .stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"], "the guest's kernel interfaces\n{devices}");
    let side = run(&["-d"], &["sleep", "1000"]);
    assert!(side.ok, "{side}");
    let side = side.stdout.trim().to_owned();
    let sentries = p.sentries();
    assert_eq!(sentries.len(), 1, "Sentries of the pod: {sentries:?}");
    p.ok(&["rm", "-f", &side]);
    let out = run(&["--rm"], &["wget", "-qO-", "http://127.0.0.1/index.html"]);
    assert!(out.ok && out.stdout == PAGE, "a third container\n{out}");
    p.ok(&["pod", "rm", "-f", "smv-pod"]);

    let yaml = p.dir.join("pod.yaml");
    fs::write(
        &yaml,
        format!(
            "apiVersion: v1\n\
             kind: Pod\n\
             metadata:\n  name: smv-kube\n\
             spec:\n  restartPolicy: Never\n  containers:\n\
             \x20 - name: server\n    image: {IMAGE}\n\
             \x20   command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n\
             \x20 - name: client\n    image: {IMAGE}\n\
             \x20   command: [\"sh\", \"-c\", \"n=0; until wget -qO- http://127.0.0.1:8080/index.html; \
             do n=$((n+1)); [ $n -gt 100 ] && exit 1; sleep 0.1; done\"]\n"
        ),
    )
    .expect("write pod.yaml");
    let yaml = yaml.display().to_string();
    p.ok(&["kube", "play", &yaml]);
    assert_eq!(p.ok(&["wait", "smv-kube-client"]), "0", "the client's exit");
    assert_eq!(p.ok(&["logs", "smv-kube-client"]), PAGE.trim_end());
    assert_eq!(
        p.ok(&["inspect", "--format", "{{.OCIRuntime}}", "smv-kube-server"]),
        "smolvisor",
        "kube play's runtime"
    );
    p.ok(&["kube", "down", &yaml]);
}
