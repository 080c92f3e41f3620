//! The OCI commands besides `create`: each loads the container's state from
//! `--root/ID` and acts through libcontainer.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt, create_cgroup_manager};
use libcontainer::container::Container;
use libcontainer::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Spec};

use super::create::{self, handoff_channel};
use super::executor::Launch;
use super::{Error, Meta, container_dir, daemon, load, pod, status_word};
use crate::cli::{
    DeleteArgs, ExecArgs, GlobalArgs, KillArgs, ListArgs, PsArgs, RunArgs, SpecArgs, UpdateArgs,
};

/// The OCI runtime spec version this runtime follows.
const OCI_VERSION: &str = "1.2.0";

pub fn start(global: &GlobalArgs, id: &str) -> Result<i32, Error> {
    let mut c = load(&global.root, id)?;
    c.start()
        .map_err(|e| format!("starting container {id}: {e}"))?;
    Ok(0)
}

/// runc's `state` JSON.
fn state_json(c: &Container, meta: Option<&Meta>) -> serde_json::Value {
    let stopped = status_word(c) == "stopped";
    let pid = if stopped {
        0
    } else {
        c.pid().map_or(0, i32::from)
    };
    let owner = c
        .creator()
        .map(|o| o.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut v = serde_json::json!({
        "ociVersion": OCI_VERSION,
        "id": c.id(),
        "pid": pid,
        "status": status_word(c),
        "bundle": meta.map_or_else(|| c.bundle().clone(), |m| m.bundle.clone()),
        "rootfs": meta.map(|m| m.rootfs.clone()).unwrap_or_default(),
        "created": c.created().map(|t| t.to_rfc3339()).unwrap_or_default(),
        "owner": owner,
    });
    if let Some(a) = &c.state.annotations
        && !a.is_empty()
    {
        v["annotations"] = serde_json::json!(a);
    }
    v
}

pub fn state(global: &GlobalArgs, id: &str) -> Result<i32, Error> {
    let c = load(&global.root, id)?;
    let meta = Meta::load(&container_dir(&global.root, id)?).ok();
    println!(
        "{}",
        serde_json::to_string_pretty(&state_json(&c, meta.as_ref()))?
    );
    Ok(0)
}

pub fn kill(global: &GlobalArgs, args: &KillArgs) -> Result<i32, Error> {
    let mut c = load(&global.root, &args.id)?;
    let signal = Signal::try_from(args.signal.as_str())
        .map_err(|_| format!("unknown signal {:?}", args.signal))?;
    let sentry = Meta::load(&container_dir(&global.root, &args.id)?).map_or(0, |m| m.sentry_pid);
    if args.all
        && status_word(&c) == "running"
        && !pod::other_members(&global.root, &args.id, sentry).is_empty()
    {
        // Every process of the container's, but not the pod's Sentry,
        // which may share its cgroups and serves the other containers.
        let signal = nix_signal(&args.signal)?;
        for pid in guest_pids(&c, sentry)? {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
        }
        return Ok(0);
    }
    c.kill(signal, args.all)
        .map_err(|e| format!("signalling container {}: {e}", args.id))?;
    Ok(0)
}

/// A signal as `kill` takes it (`9`, `KILL`, `SIGKILL`), for nix; the
/// caller checked it with libcontainer's parser.
fn nix_signal(word: &str) -> Result<nix::sys::signal::Signal, Error> {
    use std::str::FromStr;
    if let Ok(n) = word.parse::<i32>() {
        return Ok(nix::sys::signal::Signal::try_from(n)?);
    }
    let upper = word.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Ok(nix::sys::signal::Signal::from_str(&name)?)
}

pub fn delete(global: &GlobalArgs, args: &DeleteArgs) -> Result<i32, Error> {
    let dir = container_dir(&global.root, &args.id)?;
    let mut c = match load(&global.root, &args.id) {
        Ok(c) => c,
        // As runc: forcing the removal of what is not there succeeds, and
        // clears what an aborted create may have left.
        Err(_) if args.force => {
            let _ = fs::remove_dir_all(&dir);
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    let meta = Meta::load(&dir).ok();
    // A created container's process has not run its program yet: runc
    // kills it without being forced (containerd deletes after a failed start).
    let created = status_word(&c) == "created";
    if !args.force && !created && !c.can_delete() {
        return Err(format!(
            "cannot delete container {} that is {} (stop it, or use --force)",
            args.id,
            status_word(&c)
        )
        .into());
    }
    // Other containers of the pod keep the Sentry: if it (with its
    // helpers) is in this container's cgroups, whose removal kills what is
    // left in them, it moves to a live member's first.
    let members = meta.as_ref().map_or_else(Vec::new, |m| {
        pod::other_members(&global.root, &args.id, m.sentry_pid)
    });
    if let Some(m) = &meta {
        move_sentry_off(&c, &args.id, m.sentry_pid, &members);
    }
    let last = members.is_empty();
    // A stopped container's Sentry first finishes (its capture written
    // out) by itself.
    if last
        && status_word(&c) == "stopped"
        && let Some(m) = &meta
    {
        end_sentry(m);
    }
    c.delete(args.force || created)
        .map_err(|e| format!("deleting container {}: {e}", args.id))?;
    if last && let Some(m) = &meta {
        end_sentry(m);
        // The Sentry cannot unlink its socket once confined.
        let _ = fs::remove_file(
            global
                .root
                .join(super::sentry_socket_name(m.first(&args.id))),
        );
    }
    // libcontainer leaves nothing in the directory but may leave it.
    let _ = fs::remove_dir_all(&dir);
    Ok(0)
}

/// The Sentry daemon ends with the container's init (in a pod, with the
/// last member's); one that lingers (an init killed before `start`, say)
/// is stopped here.
fn end_sentry(meta: &Meta) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pod::sentry_alive(meta) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if pod::sentry_alive(meta) {
        let pid = Pid::from_raw(meta.sentry_pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

pub fn exec(global: &GlobalArgs, args: &ExecArgs) -> Result<i32, Error> {
    let c = load(&global.root, &args.id)?;
    if status_word(&c) != "running" {
        return Err(format!("container {} is not running ({})", args.id, status_word(&c)).into());
    }
    let dir = container_dir(&global.root, &args.id)?;
    if args.process.is_none() && args.command.is_empty() {
        return Err("exec needs --process FILE or a command".into());
    }
    let socket = super::sentry_socket_name(Meta::load(&dir)?.first(&args.id));
    let (ours, theirs) = handoff_channel()?;
    // libcontainer returns once the process executed its program, which it
    // does only after the Sentry took its listener: relay it meanwhile.
    let relay = {
        let root = global.root.clone();
        std::thread::spawn(move || -> Result<(), String> {
            match daemon::take_listener(ours.as_fd(), None).map_err(|e| e.to_string())? {
                Some(listener) => daemon::give_listener(&root, &socket, listener.as_fd())
                    .map_err(|e| e.to_string()),
                None => Err("the process ended before it could run".into()),
            }
        })
    };
    let env: HashMap<String, String> = args
        .env
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let launch = Launch {
        root: &global.root,
        id: &args.id,
        pid_file: args.pid_file.as_ref(),
        console_socket: args.console_socket.as_ref(),
        preserve_fds: args.preserve_fds,
    };
    let built = launch.builder(theirs.as_raw_fd()).and_then(|b| {
        b.as_tenant()
            .with_detach(args.detach)
            .with_cwd(args.cwd.as_ref())
            .with_env(env)
            .with_process(args.process.as_ref())
            .with_container_args(args.command.clone())
            .build()
    });
    // The relay sees end-of-file if the process never got to announce.
    drop(theirs);
    let relayed = relay
        .join()
        .unwrap_or_else(|_| Err("the relay thread panicked".into()));
    let pid = built.map_err(|e| format!("exec in container {}: {e}", args.id))?;
    relayed.map_err(|e| format!("exec in container {}: {e}", args.id))?;
    let pid = Pid::from_raw(pid.as_raw());
    if args.detach {
        return Ok(0);
    }
    Ok(wait_exit(pid))
}

/// The exit status of child `pid`, as a shell gives it.
fn wait_exit(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

fn cgroup_manager(c: &Container) -> Result<libcgroups::common::AnyCgroupManager, Error> {
    let cfg = c.spec()?;
    Ok(create_cgroup_manager(CgroupConfig {
        cgroup_path: cfg.cgroup_path,
        systemd_cgroup: c.systemd(),
        container_name: c.id().to_owned(),
    })?)
}

/// The container's processes: its cgroups' but for the Sentry and its
/// helpers, which share them (with the pod's first container).
fn guest_pids(c: &Container, sentry: i32) -> Result<Vec<i32>, Error> {
    Ok(cgroup_manager(c)?
        .get_all_pids()?
        .into_iter()
        .map(i32::from)
        .filter(|&p| !pod::is_sentrys(p, sentry))
        .collect())
}

pub fn ps(global: &GlobalArgs, args: &PsArgs) -> Result<i32, Error> {
    let c = load(&global.root, &args.id)?;
    let sentry = Meta::load(&container_dir(&global.root, &args.id)?)
        .map(|m| m.sentry_pid)
        .unwrap_or(0);
    let pids = guest_pids(&c, sentry)?;
    if args.format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(0);
    }
    if args.format != "table" {
        return Err(format!("unknown format {:?} (table or json)", args.format).into());
    }
    let ps_args = if args.ps_args.is_empty() {
        vec!["-ef".to_owned()]
    } else {
        args.ps_args.clone()
    };
    let out = std::process::Command::new("ps").args(&ps_args).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_column = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or("ps printed no PID column")?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_column)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p: i32| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(0)
}

pub fn list(global: &GlobalArgs, args: &ListArgs) -> Result<i32, Error> {
    let mut rows = Vec::new();
    if let Ok(entries) = fs::read_dir(&global.root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.path().join("state.json").exists() {
                continue;
            }
            if let Ok(c) = Container::load(e.path()) {
                let meta = Meta::load(&e.path()).ok();
                rows.push(state_json(&c, meta.as_ref()));
            }
        }
    }
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    if args.quiet {
        for r in &rows {
            println!("{}", r["id"].as_str().unwrap_or_default());
        }
    } else if args.format == "json" {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER")?;
        for r in &rows {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}",
                r["id"].as_str().unwrap_or_default(),
                r["pid"],
                r["status"].as_str().unwrap_or_default(),
                r["bundle"].as_str().unwrap_or_default(),
                r["created"].as_str().unwrap_or_default(),
                r["owner"].as_str().unwrap_or_default()
            )?;
        }
    }
    Ok(0)
}

/// If the pod's Sentry (with its helpers) is in container `c`'s cgroups,
/// moves it into those of another member, a running one if there is one
/// (a frozen cgroup would freeze it).
fn move_sentry_off(c: &Container, id: &str, sentry: i32, members: &[pod::Member]) {
    let Some(target) = members
        .iter()
        .find(|m| m.running)
        .or_else(|| members.first())
    else {
        return;
    };
    let Ok(pids) = cgroup_manager(c).and_then(|g| Ok(g.get_all_pids()?)) else {
        return;
    };
    for p in pids.into_iter().map(i32::from) {
        if pod::is_sentrys(p, sentry)
            && let Err(e) = super::cgroups::join_cgroups_of(target.init, p)
        {
            tracing::warn!("the pod's Sentry stays in container {id}'s cgroups: {e}");
        }
    }
}

pub fn pause(global: &GlobalArgs, id: &str) -> Result<i32, Error> {
    let mut c = load(&global.root, id)?;
    // Pausing one container of a pod must not freeze the others' network.
    if let Ok(m) = Meta::load(&container_dir(&global.root, id)?) {
        let members = pod::other_members(&global.root, id, m.sentry_pid);
        if members.iter().any(|m| m.running) {
            move_sentry_off(&c, id, m.sentry_pid, &members);
        }
    }
    c.pause()
        .map_err(|e| format!("pausing container {id}: {e}"))?;
    Ok(0)
}

pub fn resume(global: &GlobalArgs, id: &str) -> Result<i32, Error> {
    load(&global.root, id)?
        .resume()
        .map_err(|e| format!("resuming container {id}: {e}"))?;
    Ok(0)
}

pub fn update(global: &GlobalArgs, args: &UpdateArgs) -> Result<i32, Error> {
    let c = load(&global.root, &args.id)?;
    let mut resources: LinuxResources = match &args.resources {
        Some(p) if p == Path::new("-") => serde_json::from_reader(std::io::stdin().lock())?,
        Some(p) => serde_json::from_slice(&fs::read(p)?)
            .map_err(|e| format!("resources {}: {e}", p.display()))?,
        None => LinuxResources::default(),
    };
    if args.memory.is_some() || args.memory_swap.is_some() {
        let mut m = (*resources.memory()).unwrap_or_default();
        if let Some(v) = args.memory {
            m.set_limit(Some(v));
        }
        if let Some(v) = args.memory_swap {
            m.set_swap(Some(v));
        }
        resources.set_memory(Some(m));
    }
    if let Some(v) = args.pids_limit {
        let mut p = (*resources.pids()).unwrap_or_default();
        p.set_limit(v);
        resources.set_pids(Some(p));
    }
    if args.cpu_share.is_some()
        || args.cpu_quota.is_some()
        || args.cpu_period.is_some()
        || args.cpuset_cpus.is_some()
    {
        let mut cpu = resources.cpu().clone().unwrap_or_default();
        if let Some(v) = args.cpu_share {
            cpu.set_shares(Some(v));
        }
        if let Some(v) = args.cpu_quota {
            cpu.set_quota(Some(v));
        }
        if let Some(v) = args.cpu_period {
            cpu.set_period(Some(v));
        }
        if let Some(v) = &args.cpuset_cpus {
            cpu.set_cpus(Some(v.clone()));
        }
        resources.set_cpu(Some(cpu));
    }
    cgroup_manager(&c)?
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| format!("updating container {}: {e}", args.id))?;
    Ok(0)
}

pub fn features() -> Result<i32, Error> {
    let v = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "iversion", "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime",
            "noexec", "noiversion", "nolazytime", "nomand", "norelatime", "nostrictatime",
            "nosuid", "nosymfollow", "private", "ratime", "rbind", "rdev", "rdiratime",
            "relatime", "remount", "rexec", "rnoatime", "rnodev", "rnodiratime", "rnoexec",
            "rnorelatime", "rnostrictatime", "rnosuid", "rnosymfollow", "ro", "rprivate",
            "rrelatime", "rro", "rrw", "rshared", "rslave", "rstrictatime", "rsuid",
            "rsymfollow", "runbindable", "rw", "shared", "silent", "slave", "strictatime",
            "suid", "symfollow", "sync", "tmpcopyup", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "cgroup": { "v1": true, "v2": true, "systemd": true, "systemdUser": false },
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                    "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                    "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64"]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": {
            "dev.smolvisor.network": "sandbox | none",
            "dev.smolvisor.pcap-log": "FILE (%ID% is the container's id)",
            "dev.smolvisor.debug-log": "FILE (%ID% is the container's id)",
            "dev.smolvisor.impair": "[NIC:]KEY=VALUE,... as do --impair (several joined by ;)",
            "dev.smolvisor.tcp-memory": "SIZE as do --tcp-memory"
        }
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}

pub fn spec(args: &SpecArgs) -> Result<i32, Error> {
    let path = args.bundle.join("config.json");
    if path.exists() {
        return Err(format!("{} already exists; remove it first", path.display()).into());
    }
    let spec = Spec::default();
    fs::write(&path, serde_json::to_string_pretty(&spec)?)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(0)
}

pub fn run(global: &GlobalArgs, args: &RunArgs) -> Result<i32, Error> {
    let created = create::create(global, &args.create)?;
    let mut c = created.container;
    let id = &args.create.id;
    if let Err(e) = c.start() {
        let _ = c.delete(true);
        return Err(format!("starting container {id}: {e}").into());
    }
    if args.detach {
        return Ok(0);
    }
    let pid = c.pid().map(|p| Pid::from_raw(p.as_raw()));
    let code = pid.map_or(255, wait_exit);
    if !args.keep {
        delete(
            global,
            &DeleteArgs {
                force: true,
                id: id.clone(),
            },
        )?;
    }
    Ok(code)
}
