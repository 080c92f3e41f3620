//! Criterion benches of the netstack: two stacks in one process on an
//! in-memory cable, driven by the real clock, beside native Linux in the same
//! run.
//!
//! - `native/loopback_bulk`, `native/connect_accept_close`: the kernel's TCP
//!   over 127.0.0.1, in a private network namespace (a normal ephemeral port
//!   range; needs root or user namespaces), to compare with `loopback/bulk`
//!   and `connections/...`. The kernel flow has a writer and a reader thread;
//!   the stack runs both ends on one thread.
//! - `bulk/mtu_1500`, `bulk/mtu_65535`: one TCP flow's throughput.
//! - `loopback/bulk`: one TCP flow between two sockets of one stack over `lo`
//!   (the path of guest-to-guest traffic inside one sandbox).
//! - `connections/connect_accept_close`: connection setup and teardown rate.
//! - `idle/0`, `idle/10000`: one flow's throughput with that many idle
//!   established connections open; the ratio of the two is the target (≥ 0.8).
//! - `capture/mtu_1500`: `bulk/mtu_1500` with host a's NICs wrapped in
//!   sniffers writing pcapng to a ring of two 64 MiB files in the temporary
//!   directory; the ratio to `bulk/mtu_1500` is the cost of `--pcap-log`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netstack::link::{Capture, CaptureConfig, Loopback, Ring, pair};
use netstack::{
    Domain, Instant, NetError, Protocol, RecvFlags, SockOpt, SocketId, Stack, StackConfig, testbed,
};

const B: Ipv4Addr = testbed::host_v4(2);

struct Hosts {
    a: Stack,
    b: Stack,
    start: StdInstant,
}

impl Hosts {
    fn new(mtu: usize) -> Hosts {
        let (a, b) = testbed::two_hosts(mtu, netstack::Duration::ZERO, Instant::from_micros(0));
        Hosts {
            a,
            b,
            start: StdInstant::now(),
        }
    }

    /// Like [`Hosts::new`], with host a's `lo` and `eth0` recorded into `cap`.
    fn captured(mtu: usize, cap: &Capture) -> Hosts {
        let now = Instant::from_micros(0);
        let (ea, eb) = pair(mtu, netstack::Duration::ZERO, false);
        let cfg = StackConfig::default();
        let lo = cap.wrap(Loopback::new(), "lo").sent_only();
        let mut a = Stack::with_loopback(
            StackConfig {
                random_seed: cfg.random_seed ^ 1,
                ..cfg.clone()
            },
            now,
            Box::new(lo),
        );
        a.add_nic(Box::new(cap.wrap(ea, "eth0")), testbed::host_nic(1))
            .unwrap();
        Hosts {
            a,
            b: testbed::host(2, Box::new(eb), &cfg, now),
            start: StdInstant::now(),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX))
    }

    fn poll(&mut self) {
        let now = self.now();
        self.a.poll(now);
        self.b.poll(now);
    }

    fn listen(&mut self, port: u16) -> SocketId {
        let l = self.b.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
        self.b.set_option(l, SockOpt::ReuseAddr(true)).unwrap();
        self.b.bind(l, SocketAddr::new(B.into(), port)).unwrap();
        self.b.listen(l, 4096).unwrap();
        l
    }

    /// Opens one connection and returns (client, server).
    fn connect(&mut self, l: SocketId, port: u16) -> (SocketId, SocketId) {
        let to = SocketAddr::new(B.into(), port);
        let c = self.a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
        assert_eq!(self.a.connect(c, to), Err(NetError::InProgress));
        loop {
            self.poll();
            if let Ok((s, _)) = self.b.accept(l) {
                while self.a.connect(c, to).is_err() {
                    self.poll();
                }
                return (c, s);
            }
        }
    }
}

/// Where a benchmarked flow runs: two stacks on a cable, or one over loopback.
trait Path {
    fn send(&mut self, c: SocketId, data: &[u8]) -> Result<usize, NetError>;
    fn recv(&mut self, s: SocketId, buf: &mut [u8]) -> Result<usize, NetError>;
    fn poll(&mut self);
}

impl Path for Hosts {
    fn send(&mut self, c: SocketId, data: &[u8]) -> Result<usize, NetError> {
        self.a.send(c, data)
    }
    fn recv(&mut self, s: SocketId, buf: &mut [u8]) -> Result<usize, NetError> {
        self.b.recv(s, buf, RecvFlags::default())
    }
    fn poll(&mut self) {
        Hosts::poll(self);
    }
}

/// One stack, both ends of the flow on its loopback.
struct Lo {
    stack: Stack,
    start: StdInstant,
}

impl Path for Lo {
    fn send(&mut self, c: SocketId, data: &[u8]) -> Result<usize, NetError> {
        self.stack.send(c, data)
    }
    fn recv(&mut self, s: SocketId, buf: &mut [u8]) -> Result<usize, NetError> {
        self.stack.recv(s, buf, RecvFlags::default())
    }
    fn poll(&mut self) {
        let us = i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX);
        self.stack.poll(Instant::from_micros(us));
    }
}

/// Moves `total` bytes from `c` to `s`.
fn transfer(path: &mut impl Path, c: SocketId, s: SocketId, total: usize) {
    let chunk = vec![0x5au8; 256 << 10];
    let mut buf = vec![0u8; 256 << 10];
    let (mut sent, mut got) = (0, 0);
    while got < total {
        while sent < total {
            match path.send(c, &chunk[..chunk.len().min(total - sent)]) {
                Ok(n) => sent += n,
                Err(NetError::WouldBlock) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        path.poll();
        loop {
            match path.recv(s, &mut buf) {
                Ok(0) => panic!("early EOF"),
                Ok(n) => got += n,
                Err(NetError::WouldBlock) => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }
    black_box(&buf);
}

const BULK: usize = 64 << 20;

fn bulk(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulk");
    g.throughput(Throughput::Bytes(BULK as u64));
    g.sample_size(10);
    for mtu in [1500, 65535] {
        g.bench_function(format!("mtu_{mtu}"), |bench| {
            let mut h = Hosts::new(mtu);
            let l = h.listen(5001);
            let (cl, sv) = h.connect(l, 5001);
            bench.iter_custom(|iters| {
                let t = StdInstant::now();
                for _ in 0..iters {
                    transfer(&mut h, cl, sv, BULK);
                }
                t.elapsed()
            });
        });
    }
    g.finish();
}

/// `bulk/mtu_1500` with a pcapng capture of host a on disk.
fn capture(c: &mut Criterion) {
    let mut g = c.benchmark_group("capture");
    g.throughput(Throughput::Bytes(BULK as u64));
    g.sample_size(10);
    let path = std::env::temp_dir().join(format!("smolvisor-bench-{}.pcapng", std::process::id()));
    let cfg = CaptureConfig {
        ring: Some(Ring {
            max_size: 64 << 20,
            max_files: 2,
        }),
        ..CaptureConfig::default()
    };
    let cap = Capture::create(&path, cfg).unwrap();
    g.bench_function("mtu_1500", |bench| {
        let mut h = Hosts::captured(1500, &cap);
        let l = h.listen(5005);
        let (cl, sv) = h.connect(l, 5005);
        bench.iter_custom(|iters| {
            let t = StdInstant::now();
            for _ in 0..iters {
                transfer(&mut h, cl, sv, BULK);
            }
            t.elapsed()
        });
    });
    g.finish();
    let sum = cap.finish();
    assert_eq!(sum.dropped(), 0, "{sum:?}");
    for f in sum.files {
        let _ = std::fs::remove_file(f.path.unwrap());
    }
}

fn connections(c: &mut Criterion) {
    let mut g = c.benchmark_group("connections");
    g.throughput(Throughput::Elements(1));
    g.bench_function("connect_accept_close", |bench| {
        let mut h = Hosts::new(1500);
        let l = h.listen(5002);
        bench.iter_custom(|iters| {
            let t = StdInstant::now();
            for _ in 0..iters {
                let (cl, sv) = h.connect(l, 5002);
                // The client closes first, so TIME_WAIT stays on the client side, as with Linux.
                h.a.close(cl).unwrap();
                h.poll();
                h.b.close(sv).unwrap();
                h.poll();
            }
            t.elapsed()
        });
    });
    g.finish();
}

fn idle(c: &mut Criterion) {
    let mut g = c.benchmark_group("idle");
    g.throughput(Throughput::Bytes(BULK as u64));
    g.sample_size(10);
    g.measurement_time(StdDuration::from_secs(10));
    for idle in [0usize, 10_000] {
        g.bench_function(idle.to_string(), |bench| {
            let mut h = Hosts::new(1500);
            let l = h.listen(5003);
            let mut keep = Vec::with_capacity(idle);
            for _ in 0..idle {
                keep.push(h.connect(l, 5003));
            }
            let (cl, sv) = h.connect(l, 5003);
            bench.iter_custom(|iters| {
                let t = StdInstant::now();
                for _ in 0..iters {
                    transfer(&mut h, cl, sv, BULK);
                }
                t.elapsed()
            });
            assert_eq!(
                h.b.socket_count(),
                idle + 2,
                "listener, idle connections and the measured one"
            );
            black_box(keep);
        });
    }
    g.finish();
}

/// Guest-to-guest inside one sandbox: both ends in one stack, over `lo`.
fn loopback(c: &mut Criterion) {
    let mut g = c.benchmark_group("loopback");
    g.throughput(Throughput::Bytes(BULK as u64));
    g.sample_size(10);
    g.bench_function("bulk", |bench| {
        let mut lo = Lo {
            stack: Stack::new(StackConfig::default(), Instant::from_micros(0)),
            start: StdInstant::now(),
        };
        let to: SocketAddr = "127.0.0.1:5004".parse().unwrap();
        let l = lo.stack.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
        lo.stack.bind(l, to).unwrap();
        lo.stack.listen(l, 8).unwrap();
        let cl = lo.stack.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
        assert_eq!(lo.stack.connect(cl, to), Err(NetError::InProgress));
        let sv = loop {
            lo.poll();
            if let Ok((s, _)) = lo.stack.accept(l) {
                break s;
            }
        };
        bench.iter_custom(|iters| {
            let t = StdInstant::now();
            for _ in 0..iters {
                transfer(&mut lo, cl, sv, BULK);
            }
            t.elapsed()
        });
    });
    g.finish();
}

/// Moves the bench into a new network namespace with `lo` up, so the kernel's
/// side of the comparison has the full ephemeral port range (the host's may be
/// narrowed) and nothing else on its loopback. The namespace goes with the process.
fn private_netns() {
    let entered = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
        && Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .is_ok_and(|s| s.success());
    if !entered {
        eprintln!("native benches: no private network namespace (not root?); using the host's");
    }
}

/// The kernel's TCP over 127.0.0.1, as the baseline for the stack's figures.
fn native(c: &mut Criterion) {
    private_netns();
    let mut g = c.benchmark_group("native");
    g.throughput(Throughput::Bytes(BULK as u64));
    g.sample_size(10);
    g.bench_function("loopback_bulk", |bench| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut rx, _) = l.accept().unwrap();
        let (go, wanted) = mpsc::channel::<usize>();
        let (finished, done) = mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 << 10];
            while let Ok(total) = wanted.recv() {
                let mut got = 0;
                while got < total {
                    got += rx.read(&mut buf).unwrap();
                }
                finished.send(()).unwrap();
            }
        });
        let chunk = vec![0x5au8; 256 << 10];
        bench.iter_custom(|iters| {
            let t = StdInstant::now();
            for _ in 0..iters {
                go.send(BULK).unwrap();
                let mut sent = 0;
                while sent < BULK {
                    let n = chunk.len().min(BULK - sent);
                    tx.write_all(&chunk[..n]).unwrap();
                    sent += n;
                }
                done.recv().unwrap();
            }
            t.elapsed()
        });
        drop(go);
        reader.join().unwrap();
    });
    g.throughput(Throughput::Elements(1));
    g.sample_size(100);
    g.bench_function("connect_accept_close", |bench| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = l.local_addr().unwrap();
        bench.iter(|| {
            let c = TcpStream::connect(to).unwrap();
            let (s, _) = l.accept().unwrap();
            // The client closes first, as in `connections/connect_accept_close`.
            drop(c);
            drop(s);
        });
    });
    g.finish();
}

criterion_group!(benches, native, bulk, capture, loopback, connections, idle);
criterion_main!(benches);
