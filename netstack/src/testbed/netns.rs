//! Throw-away network namespaces joined by veths, and a real-time loop that
//! drives a [`Stack`] over host links: what the tests and benches of the
//! AF_PACKET link and of the `sandbox` take-over share, with the kernel echo
//! server they talk to and the client loop that talks to it. Needs root
//! (the `ip` command, `setns`).
//!
//! A [`Netns`] is made with `ip netns add` under a name unique to the
//! process and deleted on drop, which also destroys the veths in it, so a
//! failing test leaves nothing behind. Nothing here touches the caller's
//! own namespace or interfaces.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns};

use crate::{Instant, NetError, RecvFlags, Shutdown, SocketId, Stack};

/// A network namespace that lives as long as this value.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes a namespace named `<tag>-<pid>-<n>` with its `lo` up.
    pub fn new(tag: &str) -> io::Result<Netns> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{tag}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name, for `ip -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bind mount, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <name> ARGS`; its standard output, or an error with its
    /// standard error when it fails.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// The index of interface `ifname`.
    pub fn ifindex(&self, ifname: &str) -> io::Result<u32> {
        let out = self.ip(&["-o", "link", "show", ifname])?;
        out.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("no index in {out:?}")))
    }

    /// Runs `f` on a thread that has entered the namespace, and waits for it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let file = File::open(self.path())?;
        std::thread::scope(|s| {
            s.spawn(move || {
                enter(&file)?;
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("thread in the namespace panicked"))?
        })
    }

    /// Starts `f` on a thread that has entered the namespace (a server, say).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<JoinHandle<io::Result<T>>> {
        let file = File::open(self.path())?;
        Ok(std::thread::spawn(move || {
            enter(&file)?;
            Ok(f())
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

fn enter(file: &File) -> io::Result<()> {
    setns(file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

fn run(cmd: &str, args: &[&str]) -> io::Result<String> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Joins `a` and `b` with a veth pair: `a_if` in `a`, `b_if` in `b`, both
/// up, without addresses, and with the kernel's default offloads.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> io::Result<()> {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// The real clock as the stack counts time, from a process-wide origin.
pub fn wall_clock() -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = ORIGIN.get_or_init(std::time::Instant::now);
    Instant::from_micros(origin.elapsed().as_micros() as i64)
}

/// Polls `stack` at the real time and calls `step` after each poll, until
/// `step` returns true (then true) or `timeout` passes (then false).
/// Between polls it sleeps on the stack's link descriptors until one is
/// readable or the stack's next deadline, unless `step` made progress.
pub fn drive(
    stack: &mut Stack,
    timeout: std::time::Duration,
    mut step: impl FnMut(&mut Stack) -> Step,
) -> bool {
    let end = std::time::Instant::now() + timeout;
    // Copies of the links' descriptors, to wait on while the stack is polled.
    let fds: Vec<OwnedFd> = stack
        .link_fds()
        .into_iter()
        .map(|(_, fd)| {
            fd.try_clone_to_owned()
                .expect("a link's descriptor can be duplicated")
        })
        .collect();
    loop {
        stack.poll(wall_clock());
        let busy = match step(stack) {
            Step::Done => return true,
            Step::Busy => true,
            Step::Idle => false,
        };
        if std::time::Instant::now() >= end {
            return false;
        }
        if busy {
            continue;
        }
        let now = wall_clock();
        let wait_ms = match stack.poll_at() {
            Some(t) if t <= now => 0,
            Some(t) => ((t - now).total_millis()).clamp(1, 10),
            None => 10,
        };
        if wait_ms == 0 {
            continue;
        }
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let _ = poll(&mut pfds, PollTimeout::from(wait_ms as u16));
    }
}

/// What a [`drive`] step reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The goal is reached.
    Done,
    /// Progress was made: poll again at once.
    Busy,
    /// Nothing to do until a frame arrives or a timer fires.
    Idle,
}

/// A kernel TCP echo server on `at` in `ns`, listening once this returns,
/// for one connection: it sends back all it reads until the peer
/// half-closes.
pub fn echo_server(ns: &Netns, at: SocketAddr) -> io::Result<JoinHandle<io::Result<()>>> {
    let listener = ns.run(move || TcpListener::bind(at))??;
    Ok(std::thread::spawn(move || {
        let (mut c, _) = listener.accept()?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = c.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            c.write_all(&buf[..n])?;
        }
    }))
}

/// Sends `data` on the stack's connected (or connecting) TCP socket `s`,
/// half-closes it, and returns all that comes back before the peer closes.
///
/// # Panics
/// On a socket error, or unless the peer closes within 60 s.
pub fn echo_through(stack: &mut Stack, s: SocketId, data: &[u8]) -> Vec<u8> {
    let (mut off, mut back, mut shut) = (0, Vec::with_capacity(data.len()), false);
    let mut buf = vec![0u8; 256 << 10];
    let done = drive(stack, std::time::Duration::from_secs(60), |st| {
        let mut busy = false;
        if off < data.len() {
            match st.send(s, &data[off..]) {
                Ok(n) => {
                    off += n;
                    busy |= n > 0;
                }
                Err(NetError::WouldBlock | NetError::NotConnected) => {}
                Err(e) => panic!("send: {e:?}"),
            }
        } else if !shut {
            st.shutdown(s, Shutdown::Write).unwrap();
            shut = true;
        }
        loop {
            match st.recv(s, &mut buf, RecvFlags::default()) {
                Ok(0) => return Step::Done,
                Ok(n) => {
                    back.extend_from_slice(&buf[..n]);
                    busy = true;
                }
                Err(NetError::WouldBlock | NetError::NotConnected) => break,
                Err(e) => panic!("recv: {e:?}"),
            }
        }
        if busy { Step::Busy } else { Step::Idle }
    });
    assert!(done, "echo incomplete: sent {off}, got back {}", back.len());
    back
}
