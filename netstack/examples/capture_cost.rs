//! What pcapng capture costs: two stacks on an in-memory cable, host a's
//! NICs without a sniffer, with one writing to /dev/null (encoding only) and
//! with one writing a ring of files in the temporary directory.
//!
//! `cargo run --release -p netstack --example capture_cost [ROUNDS]`
//!
//! Prints the best of ROUNDS (default 7) runs of each case, alternating, as
//! wall time and as the thread's CPU time (user + system), which other
//! processes on a shared machine disturb much less: a 64 MiB TCP transfer,
//! and 20,000 request/response round trips of 100 bytes.

use std::fs::File;
use std::net::SocketAddr;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use netstack::link::{Capture, CaptureConfig, Loopback, Ring, pair};
use netstack::{
    Domain, Instant, NetError, Protocol, RecvFlags, SockOpt, SocketId, Stack, StackConfig, testbed,
};

const BULK: usize = 64 << 20;

/// A measured piece of work on a connection (client, server).
type Work = fn(&mut Hosts, SocketId, SocketId);
const ROUND_TRIPS: usize = 20_000;

fn thread_cpu() -> StdDuration {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    StdDuration::from_micros(us(u.user_time()) + us(u.system_time()))
}

struct Hosts {
    a: Stack,
    b: Stack,
    start: StdInstant,
}

impl Hosts {
    fn new(cap: Option<&Capture>) -> Hosts {
        let now = Instant::ZERO;
        let (ea, eb) = pair(1500, netstack::Duration::ZERO, false);
        let cfg = StackConfig::default();
        let a = match cap {
            Some(cap) => {
                let lo = cap.wrap(Loopback::new(), "lo").sent_only();
                let acfg = StackConfig {
                    random_seed: cfg.random_seed ^ 1,
                    ..cfg.clone()
                };
                let mut a = Stack::with_loopback(acfg, now, Box::new(lo));
                a.add_nic(Box::new(cap.wrap(ea, "eth0")), testbed::host_nic(1))
                    .unwrap();
                a
            }
            None => testbed::host(1, Box::new(ea), &cfg, now),
        };
        let b = testbed::host(2, Box::new(eb), &cfg, now);
        Hosts {
            a,
            b,
            start: StdInstant::now(),
        }
    }

    fn poll(&mut self) {
        let us = i64::try_from(self.start.elapsed().as_micros()).unwrap();
        self.a.poll(Instant::from_micros(us));
        self.b.poll(Instant::from_micros(us));
    }

    /// A connection a → b, with Nagle off: (client, server).
    fn connect(&mut self) -> (SocketId, SocketId) {
        let to = SocketAddr::new(testbed::host_v4(2).into(), 5001);
        let l = self.b.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
        self.b.bind(l, to).unwrap();
        self.b.listen(l, 8).unwrap();
        let c = self.a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
        assert_eq!(self.a.connect(c, to), Err(NetError::InProgress));
        let s = loop {
            self.poll();
            if let Ok((s, _)) = self.b.accept(l) {
                break s;
            }
        };
        while self.a.connect(c, to).is_err() {
            self.poll();
        }
        self.a.set_option(c, SockOpt::NoDelay(true)).unwrap();
        self.b.set_option(s, SockOpt::NoDelay(true)).unwrap();
        (c, s)
    }
}

fn bulk(h: &mut Hosts, c: SocketId, s: SocketId) {
    let chunk = vec![0x5a_u8; 256 << 10];
    let mut buf = vec![0_u8; 256 << 10];
    let (mut sent, mut got) = (0, 0);
    while got < BULK {
        while sent < BULK {
            match h.a.send(c, &chunk[..chunk.len().min(BULK - sent)]) {
                Ok(n) => sent += n,
                Err(NetError::WouldBlock) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        h.poll();
        while let Ok(n) = h.b.recv(s, &mut buf, RecvFlags::default()) {
            got += n;
        }
    }
}

fn round_trips(h: &mut Hosts, c: SocketId, s: SocketId) {
    let msg = [7_u8; 100];
    let mut buf = [0_u8; 1000];
    for _ in 0..ROUND_TRIPS {
        for (from, to) in [(c, s), (s, c)] {
            let (tx, rx) = if from == c { (0, 1) } else { (1, 0) };
            let stacks = [&mut h.a, &mut h.b];
            stacks[tx].send(from, &msg).unwrap();
            let mut got = 0;
            while got < msg.len() {
                h.poll();
                let stacks = [&mut h.a, &mut h.b];
                if let Ok(n) = stacks[rx].recv(to, &mut buf, RecvFlags::default()) {
                    got += n;
                }
            }
        }
    }
}

/// (wall, cpu) of `work` on a fresh pair of hosts captured into `cap`.
fn measure(cap: Option<&Capture>, work: Work) -> (StdDuration, StdDuration) {
    let mut h = Hosts::new(cap);
    let (c, s) = h.connect();
    let (wall, cpu) = (StdInstant::now(), thread_cpu());
    work(&mut h, c, s);
    if let Some(cap) = cap {
        cap.flush();
    }
    (wall.elapsed(), thread_cpu() - cpu)
}

fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(7, |s| s.parse().unwrap());
    let path = std::env::temp_dir().join(format!("capture-cost-{}.pcapng", std::process::id()));
    let ring = CaptureConfig {
        ring: Some(Ring {
            max_size: 64 << 20,
            max_files: 2,
        }),
        ..CaptureConfig::default()
    };
    let cases = ["no capture", "/dev/null", "file"];
    let works: [(&str, Work); 2] = [("bulk 64 MiB", bulk), ("100 B round trips", round_trips)];
    for (name, work) in works {
        let mut best = [(StdDuration::MAX, StdDuration::MAX); 3];
        for _ in 0..rounds {
            for (i, case) in cases.iter().enumerate() {
                let cap = match i {
                    0 => None,
                    1 => {
                        let null = File::options().write(true).open("/dev/null").unwrap();
                        Some(Capture::from_file(null, CaptureConfig::default()).unwrap())
                    }
                    _ => Some(Capture::create(&path, ring).unwrap()),
                };
                let (wall, cpu) = measure(cap.as_ref(), work);
                if let Some(cap) = cap {
                    assert_eq!(cap.finish().dropped(), 0, "{case}");
                }
                best[i] = (best[i].0.min(wall), best[i].1.min(cpu));
            }
        }
        for (case, (wall, cpu)) in cases.iter().zip(best) {
            let per = |d: StdDuration| {
                if name.starts_with("bulk") {
                    format!("{:6.0} MiB/s", 64.0 / d.as_secs_f64())
                } else {
                    format!("{:6.2} us/rt", d.as_secs_f64() * 1e6 / ROUND_TRIPS as f64)
                }
            };
            println!(
                "{name:18} {case:11} wall {:8.1} ms ({})  cpu {:8.1} ms ({})",
                wall.as_secs_f64() * 1e3,
                per(wall),
                cpu.as_secs_f64() * 1e3,
                per(cpu)
            );
        }
    }
    for i in 0..2 {
        let mut p = path.clone().into_os_string();
        if i > 0 {
            p.push(format!(".{i}"));
        }
        let _ = std::fs::remove_file(p);
    }
}
