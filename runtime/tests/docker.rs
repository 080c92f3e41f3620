//! `docker run --runtime=smolvisor` end to end, with a real Docker engine
//! (Debian's `docker.io`) started by the test in namespaces of its own
//! ([`common::docker::Dockerd`]) and an image imported from a root file
//! system the test assembles (busybox and Python 3, [`common::rootfs`]).
//!
//! One dockerd serves all the checks, so they run in sequence inside one
//! `#[test]`: each is named, a failing one does not stop the others, every
//! container is removed after each, and the test fails at the end with the
//! list of failed checks (each with the command, its output and the tail
//! of dockerd's log, where a runtime's errors show up as `OCI runtime ...
//! failed`).
//!
//! Environment:
//! - `SMOLVISOR_DOCKER_RUNTIME=PATH` registers another binary under the
//!   names `smolvisor`, `smolvisor-pcap` and `smolvisor-relay` (e.g.
//!   `/usr/sbin/runc`, to check
//!   the harness itself). The checks of what only smolvisor does (the
//!   capture file; in `sandbox` mode, eth0's address gone from the host
//!   side of the veth) then
//!   check that the harness sees the plain runtime's behaviour instead, or,
//!   where there is nothing to see (no capture file), print `skipped under
//!   NAME: WHAT: WHY`.
//! - `SMOLVISOR_DOCKER_CHECKS=echo,publish,...` runs only those checks.
//! - `SMOLVISOR_DOCKER_TRACE=1` registers a wrapper that logs every call of
//!   the runtime (arguments, stderr, exit status, the `--log` file's tail
//!   when it fails); a failed check prints the trace's tail, and the whole
//!   trace is kept as `target/tmp/docker-<pid>-runtime-trace.log`.
//!
//! Needs root, docker.io, busybox-static, python3, curl, ping, tshark,
//! script (util-linux) and nsenter.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::docker::{Dockerd, client, pids_mentioning, trace_wrapper, walk_dirs};
use common::netns::http_server;
use common::pcap::fields;
use common::{Guest, Running, ScratchDir, rootfs};

/// The image every check runs.
const IMAGE: &str = "smolvisor-test:1";
/// `/www/index.html` in the image.
const INDEX: &str = "smolvisor docker test: index\n";
/// The port of the server on docker0's address, outside the containers.
const HOST_PORT: u16 = 8000;

/// What the checks share.
struct Ctx {
    d: Dockerd,
    /// The registered binary is smolvisor (not, say, runc).
    smolvisor: bool,
    /// docker0's address: the host as the containers see it.
    gateway: String,
    /// `/www/big.txt` in the image.
    big: String,
    /// `host.txt`, served on the gateway's address.
    host_body: String,
    _host_server: Running,
    _host_dir: ScratchDir,
}

type Check = fn(&Ctx);

const CHECKS: &[(&str, Check)] = &[
    ("echo", echo),
    ("exit_code", exit_code),
    ("fetch_from_gateway", fetch_from_gateway),
    ("publish", publish),
    ("dns_by_name", dns_by_name),
    ("exec_loopback", exec_loopback),
    ("network_container", network_container),
    ("pod_capture", pod_capture),
    ("tty", tty),
    ("stop_and_rm", stop_and_rm),
    ("pcap", pcap),
    ("relay_keeps_the_address", relay_keeps_the_address),
    ("sandbox_moves_the_address", sandbox_moves_the_address),
];

#[test]
fn docker_end_to_end() {
    let selected: Option<Vec<String>> = std::env::var("SMOLVISOR_DOCKER_CHECKS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(|c| c.trim().to_owned()).collect());
    if let Some(names) = &selected {
        for name in names {
            assert!(
                CHECKS.iter().any(|(n, _)| n == name),
                "SMOLVISOR_DOCKER_CHECKS names an unknown check {name:?}"
            );
        }
    }
    let started = Instant::now();
    let ctx = setup();
    eprintln!("docker: set up in {:.1?}", started.elapsed());
    let mut failures = Vec::new();
    // A failing check's message goes into the summary below (once, without
    // a backtrace per check).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for (name, check) in CHECKS {
        if selected
            .as_ref()
            .is_some_and(|s| !s.iter().any(|n| n == name))
        {
            continue;
        }
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| check(&ctx)));
        remove_all(&ctx.d);
        match result {
            Ok(()) => eprintln!("docker: check {name}: ok ({:.1?})", t.elapsed()),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "(no message)".to_owned());
                eprintln!("docker: check {name}: FAILED ({:.1?})", t.elapsed());
                failures.push(format!("=== check {name} FAILED:\n{msg}"));
            }
        }
    }
    std::panic::set_hook(hook);
    eprintln!("docker: all checks in {:.1?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The binary to register, and whether it is smolvisor.
fn runtime() -> (PathBuf, bool) {
    match std::env::var("SMOLVISOR_DOCKER_RUNTIME") {
        Ok(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            let is_smolvisor = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("smolvisor"));
            (path, is_smolvisor)
        }
        _ => (PathBuf::from(common::SMOLVISOR), true),
    }
}

/// The registered binary's file name, as the skip notes name it (`runc`).
fn runtime_name() -> String {
    let (path, _) = runtime();
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Starts dockerd with `smolvisor` and `smolvisor-pcap` registered, imports
/// the image and serves `host.txt` on docker0's address.
fn setup() -> Ctx {
    let (binary, smolvisor) = runtime();
    let d = Dockerd::start(|daemon_json| register(daemon_json, &binary, smolvisor));

    let rootfs_dir = ScratchDir::new("docker-rootfs");
    rootfs::assemble(rootfs_dir.path(), true);
    rootfs::write(rootfs_dir.path(), "www/index.html", INDEX);
    let big = text(256 * 1024, "big.txt");
    rootfs::write(rootfs_dir.path(), "www/big.txt", &big);
    let t = Instant::now();
    d.import(
        rootfs_dir.path(),
        IMAGE,
        &[&format!("ENV PATH={}", rootfs::PATH)],
    );
    eprintln!("docker: image imported in {:.1?}", t.elapsed());

    let addrs = common::netns::ip_out(&["-n", &d.ns, "-4", "-o", "addr", "show", "docker0"]);
    let gateway = addrs
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("docker0 has no IPv4 address: {addrs}"))
        .to_owned();
    let host_dir = ScratchDir::new("docker-host-www");
    let host_body = text(100 * 1000, "host.txt");
    std::fs::write(host_dir.path().join("host.txt"), &host_body).expect("write host.txt");
    let host_server = http_server(|g| d.native(g), &gateway, HOST_PORT, &host_dir);
    Ctx {
        d,
        smolvisor,
        gateway,
        big,
        host_body,
        _host_server: host_server,
        _host_dir: host_dir,
    }
}

/// Writes `daemon.json` with `smolvisor install` (which keeps the keys
/// already there): `smolvisor`, and `smolvisor-pcap` with runtimeArgs
/// `--pcap-log DIR/pcap/%ID%.pcapng` (none when `binary` is not smolvisor:
/// runc knows no such flag). When `binary` is not the smolvisor under test,
/// or with `SMOLVISOR_DOCKER_TRACE`, the entries' paths are then pointed at
/// `binary` or at a tracing wrapper.
fn register(daemon_json: &Path, binary: &Path, smolvisor: bool) {
    let dir = daemon_json.parent().expect("daemon.json has a directory");
    std::fs::write(daemon_json, "{\"log-level\": \"info\"}\n").expect("write daemon.json");
    let pcap = format!("{}/pcap/%ID%.pcapng", dir.display());
    let (pcap_args, relay_args): (&[&str], &[&str]) = if smolvisor {
        (&["--pcap-log", &pcap], &["--network", "relay"])
    } else {
        (&[], &[])
    };
    for (name, args) in [
        ("smolvisor", &[][..]),
        ("smolvisor-pcap", pcap_args),
        ("smolvisor-relay", relay_args),
    ] {
        let out = std::process::Command::new(common::SMOLVISOR)
            .arg("install")
            .arg("--config")
            .arg(daemon_json)
            .args(["--runtime", name])
            .args(args)
            .output()
            .expect("run smolvisor install");
        assert!(
            out.status.success(),
            "smolvisor install --runtime {name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(daemon_json).expect("read daemon.json");
    let mut config: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("smolvisor install wrote bad JSON ({e}):\n{text}"));
    let installed = std::fs::canonicalize(common::SMOLVISOR).expect("smolvisor exists");
    let want = serde_json::json!({
        "log-level": "info",
        "runtimes": {
            "smolvisor": {"path": installed},
            "smolvisor-pcap": if smolvisor {
                serde_json::json!({"path": installed, "runtimeArgs": pcap_args})
            } else {
                serde_json::json!({"path": installed})
            },
            "smolvisor-relay": if smolvisor {
                serde_json::json!({"path": installed, "runtimeArgs": relay_args})
            } else {
                serde_json::json!({"path": installed})
            },
        },
    });
    assert_eq!(config, want, "daemon.json after smolvisor install");
    let path = if std::env::var_os("SMOLVISOR_DOCKER_TRACE").is_some() {
        trace_wrapper(dir, "smolvisor", binary)
    } else {
        binary.to_owned()
    };
    if path != installed {
        for name in ["smolvisor", "smolvisor-pcap", "smolvisor-relay"] {
            config["runtimes"][name]["path"] = serde_json::json!(path);
        }
        let json = serde_json::to_string_pretty(&config).expect("JSON");
        std::fs::write(daemon_json, json).expect("write daemon.json");
    }
}

/// About `len` bytes of numbered text lines.
fn text(len: usize, name: &str) -> String {
    let mut body = String::new();
    let mut i = 0;
    while body.len() < len {
        body.push_str(&format!("line {i:06} of {name}: the quick brown fox\n"));
        i += 1;
    }
    body
}

/// Removes every container (between checks; failures leave some behind).
fn remove_all(d: &Dockerd) {
    let ids = d.docker(&["ps", "-aq"]).run();
    let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        let _ = d.docker(&args).deadline(Duration::from_secs(60)).run();
    }
}

/// Calls `f` until it returns `Ok` or `limit` passes; then panics with
/// the last error.
fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if started.elapsed() > limit => {
                panic!("{what}: not within {limit:?}; the last attempt:\n{e}")
            }
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `docker run --rm --runtime=smolvisor EXTRA... IMAGE ARGV...`.
fn run_rm(ctx: &Ctx, extra: &[&str], argv: &[&str]) -> Guest {
    let mut args = vec!["run", "--rm", "--runtime=smolvisor"];
    args.extend_from_slice(extra);
    args.push(IMAGE);
    args.extend_from_slice(argv);
    ctx.d.docker(&args)
}

/// `docker run -d --runtime=smolvisor EXTRA... IMAGE ARGV...`; the
/// container's full id.
fn run_detached(ctx: &Ctx, extra: &[&str], argv: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--runtime=smolvisor"];
    args.extend_from_slice(extra);
    args.push(IMAGE);
    args.extend_from_slice(argv);
    let id = ctx.d.ok(&args);
    assert!(
        id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "docker run -d printed {id:?}, not a container id"
    );
    id
}

/// busybox httpd serving the image's `/www` on port 80, in the foreground.
const HTTPD: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/www"];

/// `curl URL` natively in dockerd's namespace: Ok(body) if it printed
/// exactly `want`.
fn curl_expect(ctx: &Ctx, url: &str, want: &str) -> Result<(), String> {
    let out = ctx
        .d
        .native(Guest::new(&["curl", "-sS", "--max-time", "5", url]))
        .run();
    if out.status.success() && out.stdout == want {
        Ok(())
    } else {
        Err(format!(
            "got {} bytes, expected {}\n{out}",
            out.stdout.len(),
            want.len()
        ))
    }
}

/// Panics unless `out` succeeded and printed exactly `want`.
fn assert_output(ctx: &Ctx, out: &common::Outcome, want: &str) {
    ctx.d.assert_success(out);
    assert!(
        out.stdout == want,
        "stdout differs: {} bytes, expected {} ({:?}...)\n{out}",
        out.stdout.len(),
        want.len(),
        want.get(..want.len().min(40)).unwrap_or_default()
    );
}

// ---------------------------------------------------------------- checks

/// `docker run --rm IMAGE echo hi` prints exactly `hi`.
fn echo(ctx: &Ctx) {
    let out = run_rm(ctx, &[], &["echo", "hi"]).run();
    assert_output(ctx, &out, "hi\n");
}

/// The container's exit code is `docker run`'s.
fn exit_code(ctx: &Ctx) {
    for code in [7, 0, 255] {
        let script = format!("exit {code}");
        let out = run_rm(ctx, &[], &["sh", "-c", &script]).run();
        assert!(
            !out.timed_out && out.status.code() == Some(code),
            "expected exit code {code}\n{out}{}",
            ctx.d.diagnostics()
        );
    }
}

/// The container fetches a file from a server on docker0's address, with
/// busybox wget and with Python's urllib.
fn fetch_from_gateway(ctx: &Ctx) {
    let url = format!("http://{}:{HOST_PORT}/host.txt", ctx.gateway);
    let out = run_rm(ctx, &[], &["wget", "-qO-", &url]).run();
    assert_output(ctx, &out, &ctx.host_body);
    let py = format!(
        "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen({url:?}).read().decode())"
    );
    let out = run_rm(ctx, &[], &["python3", "-c", &py]).run();
    assert_output(ctx, &out, &ctx.host_body);
}

/// `-p 18080:80` reaches busybox httpd in the container from 127.0.0.1
/// (docker-proxy) and from docker0's address (iptables DNAT).
fn publish(ctx: &Ctx) {
    run_detached(ctx, &["-p", "18080:80"], HTTPD);
    eventually(
        "GET 127.0.0.1:18080/big.txt",
        Duration::from_secs(20),
        || curl_expect(ctx, "http://127.0.0.1:18080/big.txt", &ctx.big),
    );
    let url = format!("http://{}:18080/index.html", ctx.gateway);
    eventually(
        "GET docker0:18080/index.html",
        Duration::from_secs(10),
        || curl_expect(ctx, &url, INDEX),
    );
}

/// Two containers on a user-defined network reach each other by name
/// (Docker's embedded DNS at 127.0.0.11).
fn dns_by_name(ctx: &Ctx) {
    let d = &ctx.d;
    let _ = d.docker(&["network", "rm", "smv-net"]).run();
    d.ok(&["network", "create", "smv-net"]);
    let net = ["--network", "smv-net"];
    let result = catch_unwind(AssertUnwindSafe(|| {
        let srv = run_detached(ctx, &[&net[..], &["--name", "srv"]].concat(), HTTPD);
        let srv_ip = d.inspect(
            &srv,
            r#"{{(index .NetworkSettings.Networks "smv-net").IPAddress}}"#,
        );
        assert!(!srv_ip.is_empty(), "srv has no address on smv-net");

        let out = run_rm(ctx, &net, &["cat", "/etc/resolv.conf"]).run();
        d.assert_success(&out);
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim() == "nameserver 127.0.0.11"),
            "the container's resolver is not Docker's embedded DNS\n{out}"
        );
        eventually("wget http://srv/big.txt", Duration::from_secs(20), || {
            let out = run_rm(ctx, &net, &["wget", "-qO-", "http://srv/big.txt"]).run();
            if out.status.success() && out.stdout == ctx.big {
                Ok(())
            } else {
                Err(format!("{out}"))
            }
        });
        let py = "import socket, urllib.request\n\
                  print(socket.gethostbyname('srv'))\n\
                  print(urllib.request.urlopen('http://srv/index.html').read().decode(), end='')";
        let out = run_rm(ctx, &net, &["python3", "-c", py]).run();
        assert_output(ctx, &out, &format!("{srv_ip}\n{INDEX}"));
        let out = run_rm(ctx, &net, &["nslookup", "srv"]).run();
        d.assert_success(&out);
        // The answer's "Address: IP", after the server's own lines.
        let answer = out
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("Name:"))
            .any(|l| l.starts_with("Address") && l.split_whitespace().last() == Some(&srv_ip));
        assert!(answer, "nslookup srv did not answer {srv_ip}\n{out}");
    }));
    remove_all(d);
    let _ = d.docker(&["network", "rm", "smv-net"]).run();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// `docker exec` joins the container: a server its command started is on
/// its 127.0.0.1.
fn exec_loopback(ctx: &Ctx) {
    let id = run_detached(ctx, &[], HTTPD);
    eventually("exec wget 127.0.0.1:80", Duration::from_secs(20), || {
        let out = ctx
            .d
            .docker(&[
                "exec",
                &id,
                "wget",
                "-qO-",
                "http://127.0.0.1:80/index.html",
            ])
            .run();
        if out.status.success() && out.stdout == INDEX {
            Ok(())
        } else {
            Err(format!("{out}"))
        }
    });
    let out = ctx.d.docker(&["exec", &id, "cat", "/www/big.txt"]).run();
    assert_output(ctx, &out, &ctx.big);
}

/// `docker exec ID wget -qO- URL`: Ok if it printed exactly `want`.
fn exec_fetch(ctx: &Ctx, id: &str, url: &str, want: &str) -> Result<(), String> {
    let out = ctx.d.docker(&["exec", id, "wget", "-qO-", url]).run();
    if out.status.success() && out.stdout == want {
        Ok(())
    } else {
        Err(format!("{out}"))
    }
}

/// The Sentry daemons of this test's dockerd (by their `--root`; not
/// their signal watchers, forked children of the same name).
fn sentries_of(d: &Dockerd) -> Vec<i32> {
    let named: Vec<i32> = pids_mentioning(&format!("{}/", d.dir.display()))
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim_end() == "smolvisor-sentr")
        })
        .collect();
    let parent = |p: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
        after.split(' ').nth(1).and_then(|v| v.parse::<i32>().ok())
    };
    named
        .iter()
        .copied()
        .filter(|&p| parent(p).is_none_or(|pp| !named.contains(&pp)))
        .collect()
}

/// What binding TCP port 80 gives in a container: `bound`, or the errno's
/// name.
const BIND_80: &str = "import errno, socket\n\
    try:\n    socket.socket().bind(('0.0.0.0', 80)); print('bound')\n\
    except OSError as e:\n    print(errno.errorcode[e.errno])";

/// `--network container:SRV` puts a container in SRV's network stack (one
/// Sentry for the pod under smolvisor): it reaches SRV's server on
/// 127.0.0.1 and on SRV's address, finds SRV's port taken, and SRV reaches
/// its server on 127.0.0.1 in turn. Removing a member leaves SRV serving
/// and a third still joins; removing SRV leaves the other member serving.
fn network_container(ctx: &Ctx) {
    let d = &ctx.d;
    let srv = run_detached(ctx, &["--name", "pod-srv"], HTTPD);
    let srv_ip = d.inspect(&srv, "{{.NetworkSettings.IPAddress}}");
    assert!(!srv_ip.is_empty(), "pod-srv has no address");
    let pod = ["--network", "container:pod-srv"];
    eventually(
        "a pod member's wget 127.0.0.1/index.html",
        Duration::from_secs(20),
        || {
            let out = run_rm(ctx, &pod, &["wget", "-qO-", "http://127.0.0.1/index.html"]).run();
            if out.status.success() && out.stdout == INDEX {
                Ok(())
            } else {
                Err(format!("{out}"))
            }
        },
    );
    let url = format!("http://{srv_ip}/big.txt");
    let out = run_rm(ctx, &pod, &["wget", "-qO-", &url]).run();
    assert_output(ctx, &out, &ctx.big);
    let out = run_rm(ctx, &pod, &["python3", "-c", BIND_80]).run();
    assert_output(ctx, &out, "EADDRINUSE\n");

    // A member's own server, reached from pod-srv.
    let side = run_detached(
        ctx,
        &[&pod[..], &["--name", "pod-side"]].concat(),
        &["httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    eventually(
        "pod-srv's wget 127.0.0.1:8080 (pod-side's server)",
        Duration::from_secs(20),
        || exec_fetch(ctx, &srv, "http://127.0.0.1:8080/index.html", INDEX),
    );
    if ctx.smolvisor {
        let sentries = sentries_of(&ctx.d);
        assert_eq!(sentries.len(), 1, "Sentries of the pod: {sentries:?}");
    }
    d.ok(&["rm", "-f", &side]);
    let out = run_rm(ctx, &pod, &["wget", "-qO-", "http://127.0.0.1/index.html"]).run();
    assert_output(ctx, &out, INDEX);
    exec_fetch(ctx, &srv, "http://127.0.0.1/index.html", INDEX)
        .unwrap_or_else(|e| panic!("pod-srv after pod-side's removal: {e}"));

    // The first container goes; the member it left keeps the pod's stack.
    let side = run_detached(
        ctx,
        &[&pod[..], &["--name", "pod-side2"]].concat(),
        &["httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    eventually(
        "pod-side2's wget 127.0.0.1:8080",
        Duration::from_secs(20),
        || exec_fetch(ctx, &side, "http://127.0.0.1:8080/index.html", INDEX),
    );
    d.ok(&["rm", "-f", &srv]);
    exec_fetch(ctx, &side, "http://127.0.0.1:8080/big.txt", &ctx.big)
        .unwrap_or_else(|e| panic!("pod-side2 after pod-srv's removal: {e}"));
    assert_eq!(d.inspect(&side, "{{.State.Running}}"), "true");
}

/// `docker run -it` under `script`: the shell has a terminal of the client's
/// size, and a line typed into the client reaches it.
fn tty(ctx: &Ctx) {
    let inner = "tty; n=0; \
        while [ \"$(stty size 2>/dev/null)\" != \"33 99\" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done; \
        echo size:$(stty size); read line; echo got:$line";
    let docker = format!(
        "{} -H {} run -it --rm --runtime=smolvisor {IMAGE} sh -c '{inner}'",
        client().display(),
        ctx.d.host()
    );
    let cmd = format!("stty rows 33 cols 99; {docker}");
    let mut running = ctx
        .d
        .native(Guest::new(&["script", "-qec", &cmd, "/dev/null"]))
        .env("DOCKER_CONFIG", &ctx.d.path("client").display().to_string())
        .spawn();
    running.wait_for_line("size:");
    running.send("typed-by-the-test\n");
    let out = running.wait();
    let lines: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect();
    let is_pts = |l: &String| {
        l.strip_prefix("/dev/pts/")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    assert!(
        !out.timed_out && out.status.success(),
        "docker run -it failed\n{out}"
    );
    assert!(
        lines.iter().any(is_pts),
        "tty did not print /dev/pts/N\n{out}"
    );
    assert!(
        lines.iter().any(|l| l == "size:33 99"),
        "the terminal is not 33x99\n{out}"
    );
    assert!(
        lines.iter().any(|l| l == "got:typed-by-the-test"),
        "the typed line did not reach the shell\n{out}"
    );
}

/// `docker stop -t 3` ends `sleep 1000` within the timeout; after `docker
/// rm` no state directory, process, mount or cgroup names the container.
fn stop_and_rm(ctx: &Ctx) {
    let d = &ctx.d;
    let id = run_detached(ctx, &[], &["sleep", "1000"]);
    let key = d.inspect(&id, "{{.NetworkSettings.SandboxKey}}");
    let pid = d.inspect(&id, "{{.State.Pid}}");
    let before = paths_naming(&d.dir, &id);
    assert!(
        before.iter().any(|p| p.contains("/runtime-")),
        "no runtime state directory for the running container under the runtime's --root \
         (EXEC_ROOT/runtime-*/moby): paths naming it: {before:#?}"
    );

    let t = Instant::now();
    let out = d.docker(&["stop", "-t", "3", &id]).run();
    let took = t.elapsed();
    d.assert_success(&out);
    assert!(
        took < Duration::from_secs(3 + 7),
        "docker stop -t 3 took {took:.1?}\n{out}"
    );
    assert_eq!(d.inspect(&id, "{{.State.Running}}"), "false");
    d.ok(&["rm", &id]);

    eventually(
        "nothing left of the container",
        Duration::from_secs(10),
        || {
            let mut left = Vec::new();
            for p in paths_naming(&d.dir, &id) {
                left.push(format!("path {p}"));
            }
            for p in pids_mentioning(&id) {
                let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                left.push(format!(
                    "process {p}: {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                ));
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline == b"sleep\x001000\x00" {
                left.push(format!("the container's process {pid} (sleep 1000)"));
            }
            let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            for (whose, table) in [("host", ours), ("dockerd", d.mountinfo())] {
                for line in table.lines() {
                    if line.contains(&id) || (!key.is_empty() && line.contains(&key)) {
                        left.push(format!("{whose} mount: {line}"));
                    }
                }
            }
            if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
                for h in hierarchies.flatten() {
                    let mut dirs = Vec::new();
                    walk_dirs(&h.path(), 0, 4, &mut dirs);
                    for dir in dirs.iter().filter(|p| p.ends_with(&id)) {
                        left.push(format!("cgroup {}", dir.display()));
                    }
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join("\n"))
            }
        },
    );
}

/// Paths under `dir` (not inside image layers) whose name contains `id`.
fn paths_naming(dir: &Path, id: &str) -> Vec<String> {
    fn walk(p: &Path, id: &str, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().contains(id) {
                out.push(path.display().to_string());
            }
            let skip = path.ends_with("data/overlay2") || path.ends_with("data/vfs");
            if depth < 7 && !skip && e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, id, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, id, 0, &mut out);
    out
}

/// `--runtime=smolvisor-pcap` (runtimeArgs `--pcap-log DIR/pcap/%ID%.pcapng`)
/// captures the container's HTTP exchange with the host.
fn pcap(ctx: &Ctx) {
    let d = &ctx.d;
    let url = format!("http://{}:{HOST_PORT}/host.txt", ctx.gateway);
    let script = format!("wget -qO- {url} | wc -c");
    let out = d
        .docker(&[
            "run",
            "-d",
            "--runtime=smolvisor-pcap",
            IMAGE,
            "sh",
            "-c",
            &script,
        ])
        .run();
    d.assert_success(&out);
    let id = out.stdout.trim().to_owned();
    let code = d.ok(&["wait", &id]);
    let logs = d.ok(&["logs", &id]);
    assert_eq!(
        (code.as_str(), logs.as_str()),
        ("0", ctx.host_body.len().to_string().as_str()),
        "the container's exit code and the byte count it fetched"
    );
    d.ok(&["rm", &id]);
    let file = d.path(&format!("pcap/{id}.pcapng"));
    if !ctx.smolvisor {
        common::note_skipped(
            &runtime_name(),
            "docker check pcap's capture file",
            "only smolvisor writes one (--pcap-log); the container's fetch was checked",
        );
        return;
    }
    assert!(
        file.exists(),
        "no capture at {} (the pcap dir holds {:?})",
        file.display(),
        std::fs::read_dir(d.path("pcap"))
            .map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default()
    );
    let requests = fields(&file, "http.request", &["ip.dst", "http.request.uri"]);
    assert!(
        requests
            .iter()
            .any(|r| r[0] == ctx.gateway && r[1] == "/host.txt"),
        "no GET /host.txt to {} in {}: {requests:?}",
        ctx.gateway,
        file.display()
    );
    let port = HOST_PORT.to_string();
    let from_server = fields(&file, &format!("tcp.srcport == {port}"), &["tcp.len"]);
    let bytes: usize = from_server
        .iter()
        .map(|r| r[0].parse::<usize>().unwrap_or(0))
        .sum();
    assert!(
        bytes >= ctx.host_body.len(),
        "the capture holds {bytes} bytes from the server, the body alone is {}",
        ctx.host_body.len()
    );
}

/// One capture per pod: a server under `smolvisor-pcap`, and a member
/// under plain `smolvisor` in its network (the pod's options are its first
/// container's): the member's request to 127.0.0.1 is in the server's
/// capture file.
fn pod_capture(ctx: &Ctx) {
    let d = &ctx.d;
    let out = d
        .docker(
            &[
                &[
                    "run",
                    "-d",
                    "--runtime=smolvisor-pcap",
                    "--name",
                    "pod-cap",
                    IMAGE,
                ][..],
                HTTPD,
            ]
            .concat(),
        )
        .run();
    d.assert_success(&out);
    let srv = out.stdout.trim().to_owned();
    eventually(
        "the member's wget 127.0.0.1/index.html",
        Duration::from_secs(20),
        || {
            let out = run_rm(
                ctx,
                &["--network", "container:pod-cap"],
                &["wget", "-qO-", "http://127.0.0.1/index.html"],
            )
            .run();
            if out.status.success() && out.stdout == INDEX {
                Ok(())
            } else {
                Err(format!("{out}"))
            }
        },
    );
    d.ok(&["stop", "-t", "3", &srv]);
    d.ok(&["rm", &srv]);
    if !ctx.smolvisor {
        common::note_skipped(
            &runtime_name(),
            "docker check pod_capture's capture file",
            "only smolvisor writes one (--pcap-log); the member's fetch was checked",
        );
        return;
    }
    let file = d.path(&format!("pcap/{srv}.pcapng"));
    let requests = fields(&file, "http.request", &["ip.dst", "http.request.uri"]);
    assert!(
        requests
            .iter()
            .any(|r| r[0] == "127.0.0.1" && r[1] == "/index.html"),
        "no GET /index.html to 127.0.0.1 in {}: {requests:?}",
        file.display()
    );
}

/// The IPv4 addresses on the interfaces of a container's network namespace,
/// as the kernel there sees them (`ip -4 -o addr show`), and its address.
fn namespace_addresses(ctx: &Ctx, id: &str) -> (String, String) {
    let d = &ctx.d;
    let ip = d.inspect(id, "{{.NetworkSettings.IPAddress}}");
    let key = d.inspect(id, "{{.NetworkSettings.SandboxKey}}");
    assert!(
        !ip.is_empty() && !key.is_empty(),
        "no address ({ip:?}) or sandbox ({key:?})"
    );
    let net = format!("--net={key}");
    let out = d
        .nsenter(&["nsenter", &net, "ip", "-4", "-o", "addr", "show"])
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "nsenter into {key} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (ip, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The container answers HTTP and ping at its address.
fn answers_at(ctx: &Ctx, ip: &str) {
    let url = format!("http://{ip}/big.txt");
    eventually("GET container-ip/big.txt", Duration::from_secs(20), || {
        curl_expect(ctx, &url, &ctx.big)
    });
    let out = ctx
        .d
        .native(Guest::new(&["ping", "-c", "1", "-W", "2", ip]))
        .run();
    assert!(out.status.success(), "ping {ip} failed\n{out}");
}

/// `docker run -d --runtime=RUNTIME IMAGE ARGV...`; the container's id.
fn run_detached_on(ctx: &Ctx, runtime: &str, argv: &[&str]) -> String {
    let flag = format!("--runtime={runtime}");
    let mut args = vec!["run", "-d", &flag, IMAGE];
    args.extend_from_slice(argv);
    ctx.d.ok(&args)
}

/// `--network relay` (runtime `smolvisor-relay`): the container's eth0
/// address stays on the host side of the veth (the guest's flows leave as
/// sockets there), the container answers at it, and a guest server sees
/// the real peer's address (a container of the default mode), not the
/// gateway's.
fn relay_keeps_the_address(ctx: &Ctx) {
    let id = run_detached_on(ctx, "smolvisor-relay", HTTPD);
    let (ip, addrs) = namespace_addresses(ctx, &id);
    assert!(
        addrs.contains(&format!("inet {ip}/")),
        "{ip} is not on the host side of the veth:\n{addrs}"
    );
    answers_at(ctx, &ip);
    // A server in a second container prints its peer's address.
    let py = "import socket\n\
              s = socket.create_server(('', 7000))\n\
              while True:\n\
              \x20   c, a = s.accept()\n\
              \x20   c.sendall(a[0].encode())\n\
              \x20   c.close()\n";
    let server = run_detached_on(ctx, "smolvisor-relay", &["python3", "-c", py]);
    let (server_ip, _) = namespace_addresses(ctx, &server);
    let seen = eventually("a peer address from :7000", Duration::from_secs(20), || {
        let out = run_rm(ctx, &[], &["nc", &server_ip, "7000"]).run();
        let seen = out.stdout.trim().to_owned();
        if seen.is_empty() {
            Err(format!("nothing from the server\n{out}"))
        } else {
            Ok(seen)
        }
    });
    assert!(
        seen != ctx.gateway && seen != server_ip && seen.starts_with(&ip[..ip.rfind('.').unwrap()]),
        "the server saw its peer as {seen:?} (gateway {}, itself {server_ip}, subnet of {ip})",
        ctx.gateway
    );
}

/// `sandbox`, the default: the container's eth0 address is not on any
/// interface of its network namespace as the kernel sees it (the Sentry
/// took the veth over), yet the container answers at that address.
fn sandbox_moves_the_address(ctx: &Ctx) {
    let id = run_detached(ctx, &[], HTTPD);
    let (ip, addrs) = namespace_addresses(ctx, &id);
    let present = addrs.contains(&format!("inet {ip}/"));
    if ctx.smolvisor {
        assert!(
            !present,
            "{ip} is still on the host side of the veth:\n{addrs}"
        );
    } else {
        assert!(
            present,
            "the harness does not see {ip} in {key}:\n{addrs}",
            key = id
        );
    }
    answers_at(ctx, &ip);
}
