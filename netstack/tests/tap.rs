//! A stack on a TAP device talks to the kernel on the device's other side:
//! ARP, ping both ways, and a 1 MiB TCP echo, with and without offload.
//!
//! Each test makes its own network namespace (root needed, as in CI) with a
//! TAP device at 10.77.0.1/24 on the kernel's side; the stack is 10.77.0.2.
//! Nothing outside the namespace is touched, and the namespace is deleted at
//! the end even when the test fails.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use netstack::link::{Link, LinkCaps, TapError, TapLink};
use netstack::{
    Domain, IfAddr, Instant, NetError, NicConfig, Protocol, RecvFlags, Shutdown, Stack, StackConfig,
};

const KERNEL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const STACK: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const STACK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x02];
const TAP: &str = "tap0";

// ---- the namespace ----------------------------------------------------------

/// A network namespace of our own, deleted on drop.
struct Netns {
    name: String,
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Netns {
    fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "smv-tap-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS`.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend(args);
        run(&all)
    }

    /// A TAP device at 10.77.0.1/24, up, with `mtu`.
    fn with_tap(self, mtu: u16) -> Netns {
        self.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"]);
        self.ip(&["link", "set", TAP, "mtu", &mtu.to_string()]);
        self.ip(&["addr", "add", "10.77.0.1/24", "dev", TAP]);
        self.ip(&["link", "set", TAP, "up"]);
        self
    }

    /// Runs `f` on a thread that entered the namespace (sockets and devices
    /// it opens belong there, and keep working from any thread after).
    fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let ns = File::open(format!("/run/netns/{}", self.name)).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }

    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

// ---- the stack on the TAP ---------------------------------------------------

/// The TAP link, shared with the test so that its counters stay readable.
#[derive(Clone)]
/// The device's descriptor is duplicated, so `fd` can lend it without the lock.
struct SharedTap(Arc<Mutex<TapLink>>, Arc<OwnedFd>);

impl SharedTap {
    fn get(&self) -> std::sync::MutexGuard<'_, TapLink> {
        self.0.lock().unwrap()
    }
}

impl Link for SharedTap {
    fn caps(&self) -> LinkCaps {
        self.get().caps()
    }
    fn recv(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.get().recv(now)
    }
    fn send(&mut self, now: Instant, frame: Vec<u8>) {
        self.get().send(now, frame);
    }
    fn buffer(&mut self) -> Vec<u8> {
        self.get().buffer()
    }
    fn recycle(&mut self, frame: Vec<u8>) {
        self.get().recycle(frame);
    }
    fn poll_at(&self) -> Option<Instant> {
        self.get().poll_at()
    }
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.1.as_fd())
    }
    fn flush(&mut self, now: Instant) {
        self.get().flush(now);
    }
}

/// A stack whose one NIC is the TAP, driven by the real clock.
struct Host {
    stack: Stack,
    tap: SharedTap,
    /// A duplicate of the TAP's descriptor, to wait on.
    wait: OwnedFd,
    start: StdInstant,
}

impl Host {
    fn new(tap: TapLink) -> Host {
        let wait = tap.as_fd().try_clone_to_owned().unwrap();
        let fd = AsFd::as_fd(&tap).try_clone_to_owned().unwrap();
        let tap = SharedTap(Arc::new(Mutex::new(tap)), Arc::new(fd));
        let mut stack = Stack::new(StackConfig::default(), Instant::ZERO);
        let nic = NicConfig {
            name: "eth0".into(),
            mac: STACK_MAC,
            addrs: vec![IfAddr {
                addr: STACK.into(),
                prefix_len: 24,
            }],
            gateway_v4: None,
            gateway_v6: None,
        };
        stack.add_nic(Box::new(tap.clone()), nic).unwrap();
        assert_eq!(stack.link_fds().len(), 1, "the TAP names its descriptor");
        Host {
            stack,
            tap,
            wait,
            start: StdInstant::now(),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(i64::try_from(self.start.elapsed().as_micros()).unwrap())
    }

    /// Polls the stack and waits on the TAP until `done` holds (30 s at most).
    fn drive(&mut self, what: &str, mut done: impl FnMut(&mut Stack) -> bool) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let deadline = StdInstant::now() + StdDuration::from_secs(30);
        loop {
            let now = self.now();
            self.stack.poll(now);
            if done(&mut self.stack) {
                return;
            }
            assert!(StdInstant::now() < deadline, "timed out: {what}");
            let wait = self
                .stack
                .poll_at()
                .map_or(10_000, |t| (t - now.min(t)).total_micros().min(10_000));
            let mut fds = [PollFd::new(self.wait.as_fd(), PollFlags::POLLIN)];
            let ms = u16::try_from(wait / 1000).unwrap();
            poll(&mut fds, PollTimeout::from(ms)).unwrap();
        }
    }
}

/// Opens the namespace's TAP from inside it.
fn open_tap(ns: &Netns, offload: bool) -> TapLink {
    ns.enter(move || {
        if offload {
            TapLink::open(TAP)
        } else {
            TapLink::open_without_offload(TAP)
        }
    })
    .unwrap()
}

// ---- tests ------------------------------------------------------------------

#[test]
fn tap_link_answers_arp_and_ping_both_ways() {
    let ns = Netns::new().with_tap(1400);
    let tap = open_tap(&ns, true);
    // The device's own settings are read, and none were changed.
    assert_eq!(tap.mtu(), 1400);
    assert_eq!(tap.name(), TAP);
    let link = ns.ip(&["-o", "link", "show", TAP]);
    assert!(link.contains("mtu 1400") && link.contains(",UP"), "{link}");
    let addrs = ns.ip(&["-o", "-4", "addr", "show", "dev", TAP]);
    assert_eq!(addrs.matches("inet ").count(), 1, "{addrs}");
    assert!(addrs.contains("10.77.0.1/24"), "{addrs}");
    let mut host = Host::new(tap);

    // The kernel pings the stack: ARP first, then echo requests.
    let mut ping = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "ping", "-n", "-c", "3", "-i", "0.2",
        ])
        .args(["-W", "5", &STACK.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    host.drive("the kernel's ping", |_| {
        status = ping.try_wait().unwrap();
        status.is_some()
    });
    let mut out = String::new();
    ping.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.unwrap().success(), "{out}");
    assert!(out.contains("3 received"), "{out}");
    let neigh = ns.ip(&["neigh", "show", "dev", TAP, &STACK.to_string()]);
    assert!(neigh.contains("lladdr 02:00:00:00:77:02"), "{neigh}");

    // The stack pings the kernel.
    let p = host.stack.socket(Domain::Ipv4, Protocol::Icmp).unwrap();
    let mut req = vec![8, 0, 0, 0, 0, 0, 0, 1];
    req.extend_from_slice(b"from the stack");
    let to = SocketAddr::new(KERNEL.into(), 0);
    assert_eq!(host.stack.send_to(p, &req, to), Ok(req.len()));
    host.drive("the stack's ping", |s| s.readiness(p).unwrap().readable);
    let mut buf = [0u8; 256];
    let d = host
        .stack
        .recv_from(p, &mut buf, RecvFlags::default())
        .unwrap();
    assert_eq!(d.from, to);
    assert_eq!(buf[0], 0, "echo reply");
    assert_eq!(&buf[8..d.copied], b"from the stack");
    let stats = host.tap.get().stats();
    assert!(stats.rx_frames >= 4 && stats.tx_frames >= 4, "{stats:?}");
    assert_eq!(stats.rx_errors + stats.tx_dropped, 0, "{stats:?}");
}

/// A TCP echo server in the namespace, for one connection.
fn echo_server(ns: &Netns) -> JoinHandle<usize> {
    let (ready, listening) = mpsc::channel();
    let server = ns.spawn(move || {
        let l = TcpListener::bind((KERNEL, 7777)).unwrap();
        ready.send(()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(StdDuration::from_secs(30)))
            .unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0;
        loop {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                c.shutdown(std::net::Shutdown::Write).unwrap();
                return total;
            }
            c.write_all(&buf[..n]).unwrap();
            total += n;
        }
    });
    listening.recv().unwrap();
    server
}

/// Sends 1 MiB to the kernel's echo server and checks every byte comes back.
fn echo_1_mib(offload: bool) -> netstack::link::TapStats {
    let ns = Netns::new().with_tap(1500);
    let server = echo_server(&ns);
    let mut host = Host::new(open_tap(&ns, offload));
    assert_eq!(host.tap.get().offload(), offload);

    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let c = host.stack.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    let to = SocketAddr::new(KERNEL.into(), 7777);
    assert_eq!(host.stack.connect(c, to), Err(NetError::InProgress));
    host.drive("connect", |s| s.connect(c, to).is_ok());

    let (mut sent, mut echoed) = (0, Vec::with_capacity(data.len()));
    let mut buf = vec![0u8; 64 << 10];
    let mut eof = false;
    host.drive("the echo", |s| {
        while sent < data.len() {
            match s.send(c, &data[sent..]) {
                Ok(n) => sent += n,
                Err(NetError::WouldBlock) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        if sent == data.len() {
            // Idempotent: the half-close goes out once.
            let _ = s.shutdown(c, Shutdown::Write);
        }
        loop {
            match s.recv(c, &mut buf, RecvFlags::default()) {
                Ok(0) => eof = true,
                Ok(n) => {
                    echoed.extend_from_slice(&buf[..n]);
                    continue;
                }
                Err(NetError::WouldBlock) => {}
                Err(e) => panic!("recv: {e}"),
            }
            break;
        }
        eof
    });
    assert_eq!(server.join().unwrap(), data.len(), "the server got it all");
    assert!(echoed == data, "the echo differs from what was sent");
    host.stack.close(c).unwrap();
    let stats = host.tap.get().stats();
    eprintln!("offload {offload}: {stats:?}");
    assert_eq!(stats.rx_errors + stats.tx_dropped, 0, "{stats:?}");
    stats
}

#[test]
fn tcp_echo_of_1_mib_through_a_tap_with_offload() {
    let stats = echo_1_mib(true);
    // The kernel handed over TCP segments larger than the MTU, with their
    // checksum left for the link to complete, and the stream came through.
    assert!(stats.rx_gso_frames > 0, "{stats:?}");
    assert!(stats.rx_checksums_completed > 0, "{stats:?}");
}

#[test]
fn tcp_echo_of_1_mib_through_a_tap_without_offload() {
    let stats = echo_1_mib(false);
    assert_eq!(stats.rx_gso_frames + stats.rx_checksums_completed, 0);
    // 1 MiB in at most 1460-byte segments.
    assert!(stats.rx_frames > 700, "{stats:?}");
}

#[test]
fn opening_a_missing_tap_creates_nothing() {
    let ns = Netns::new();
    let r = ns.enter(|| TapLink::open("nosuchtap0").map(|_| ()));
    assert!(matches!(r, Err(TapError::NotFound { ref name }) if name == "nosuchtap0"));
    let links = ns.ip(&["-o", "link", "show"]);
    assert!(!links.contains("nosuchtap0"), "{links}");
    // An interface that is no TAP is refused too.
    let r = ns.enter(|| TapLink::open("lo").map(|_| ()));
    assert!(matches!(r, Err(TapError::Attach { .. })), "{r:?}");
}
