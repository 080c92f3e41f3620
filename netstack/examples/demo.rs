//! The netstack's demo: one TCP bulk transfer between two stacks.
//!
//! Two stacks, 10.0.0.1/24 (client) and 10.0.0.2/24 (server), are joined by an
//! in-memory Ethernet cable and driven by the real clock in one thread. The
//! client sends `--mib` MiB of a deterministic pattern to 10.0.0.2:5001; the
//! server reads it all and compares its digest of the stream with the
//! client's. Throughput is printed for MTU 1500 and 65535 (or `--mtu` only).
//!
//! Run with `cargo run --release -p netstack --example demo -- [--mib N] [--mtu M]`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use netstack::{
    Domain, Instant, NetError, Protocol, RecvFlags, Shutdown, SocketId, Stack, testbed,
};

const CLIENT: Ipv4Addr = testbed::host_v4(1);
const SERVER: Ipv4Addr = testbed::host_v4(2);
const PORT: u16 = 5001;
const RECV_BUF: usize = 256 << 10;
/// Length of the repeating pattern: odd, so it never lines up with segments.
const PATTERN_LEN: usize = (1 << 20) + 7;
/// Real time without any progress after which the run counts as stalled.
const STALL: StdDuration = StdDuration::from_secs(10);

const USAGE: &str = "usage: demo [--mib N] [--mtu M]
  --mib N   MiB to transfer per run (default 1024)
  --mtu M   run only this MTU (default: 1500, then 65535)";

#[derive(Debug)]
struct Args {
    mib: u64,
    mtus: Vec<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mib: 1024,
        mtus: vec![1500, 65535],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        if flag != "--mib" && flag != "--mtu" {
            return Err(format!("unknown argument {arg:?}"));
        }
        let Some(value) = inline.or_else(|| it.next()) else {
            return Err(format!("{flag} needs a value"));
        };
        let bad = || format!("bad value {value:?} for {flag}");
        if flag == "--mib" {
            args.mib = value.parse().map_err(|_| bad())?;
            if args.mib == 0 || args.mib > (1 << 40) {
                return Err(bad());
            }
        } else {
            let mtu: usize = value.parse().map_err(|_| bad())?;
            if !(576..=65535).contains(&mtu) {
                return Err(format!("--mtu must be within 576..=65535, not {mtu}"));
            }
            args.mtus = vec![mtu];
        }
    }
    Ok(args)
}

/// The real clock, as the stack's `Instant`: microseconds since the start.
#[derive(Debug)]
struct Clock(StdInstant);

impl Clock {
    fn now(&self) -> Instant {
        Instant::from_micros(self.0.elapsed().as_micros() as i64)
    }
}

/// The bytes the client sends: byte `i` of the stream is `pattern[i % PATTERN_LEN]`.
fn make_pattern() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..PATTERN_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// A position-dependent 64-bit digest of a byte stream that gives the same
/// value however the stream is split into chunks. Eight independent lanes
/// (an FNV-style multiply and a rotation per 8-byte word) keep the CPU's
/// multipliers busy, so checking costs little next to the stack's own work;
/// a trailing partial block waits for the rest of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Digest {
    lanes: [u64; LANES],
    tail: [u8; BLOCK],
    tail_len: usize,
    len: u64,
}

const LANES: usize = 8;
const BLOCK: usize = 8 * LANES;
const PRIME: u64 = 0x0000_0100_0000_01b3;

fn mix(state: u64, word: u64) -> u64 {
    (state ^ word).wrapping_mul(PRIME).rotate_left(29)
}

impl Digest {
    fn new() -> Digest {
        let mut lanes = [0; LANES];
        for (i, l) in lanes.iter_mut().enumerate() {
            *l = 0xcbf2_9ce4_8422_2325 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        Digest {
            lanes,
            tail: [0; BLOCK],
            tail_len: 0,
            len: 0,
        }
    }

    /// Absorbs whole blocks; `data.len()` is a multiple of [`BLOCK`].
    fn blocks(&mut self, data: &[u8]) {
        let mut s = self.lanes;
        for block in data.chunks_exact(BLOCK) {
            for (lane, word) in s.iter_mut().zip(block.chunks_exact(8)) {
                let mut w = [0; 8];
                w.copy_from_slice(word);
                *lane = mix(*lane, u64::from_le_bytes(w));
            }
        }
        self.lanes = s;
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.tail_len > 0 {
            let take = (BLOCK - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&data[..take]);
            self.tail_len += take;
            data = &data[take..];
            if self.tail_len < BLOCK {
                return;
            }
            let tail = self.tail;
            self.blocks(&tail);
            self.tail_len = 0;
        }
        let whole = data.len() - data.len() % BLOCK;
        self.blocks(&data[..whole]);
        let rest = &data[whole..];
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    fn finish(&self) -> u64 {
        let mut last = [0; BLOCK];
        last[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        let mut d = self.clone();
        d.blocks(&last);
        d.lanes
            .iter()
            .fold(mix(0, d.len), |acc, &lane| mix(acc, lane))
    }
}

/// What went wrong in one run.
#[derive(Debug)]
enum Failure {
    /// A socket call failed.
    Net(&'static str, NetError),
    /// No progress for [`STALL`].
    Stall(String),
    /// The server received something other than what the client sent.
    Mismatch(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Net(what, e) => write!(f, "{what}: {e}"),
            Failure::Stall(s) => write!(f, "stalled: {s}"),
            Failure::Mismatch(s) => write!(f, "verification failed: {s}"),
        }
    }
}

fn net(what: &'static str) -> impl FnOnce(NetError) -> Failure {
    move |e| Failure::Net(what, e)
}

/// One socket's state, for a stall report.
fn describe(stack: &mut Stack, id: SocketId) -> String {
    format!(
        "readiness {:?}, recv queue {:?}, send queue {:?}",
        stack.readiness(id),
        stack.recv_queue(id),
        stack.send_queue(id)
    )
}

/// Sends `total` bytes from client to server at `mtu` and verifies them.
fn run(mtu: usize, total: u64, pattern: &[u8]) -> Result<(), Failure> {
    let clock = Clock(StdInstant::now());
    let (mut client, mut server) = testbed::two_hosts(mtu, netstack::Duration::ZERO, clock.now());

    let to = SocketAddr::new(IpAddr::V4(SERVER), PORT);
    let listener = server
        .socket(Domain::Ipv4, Protocol::Tcp)
        .map_err(net("socket"))?;
    server.bind(listener, to).map_err(net("bind"))?;
    server.listen(listener, 16).map_err(net("listen"))?;

    // Handshake.
    let c = client
        .socket(Domain::Ipv4, Protocol::Tcp)
        .map_err(net("socket"))?;
    match client.connect(c, to) {
        Err(NetError::InProgress) | Ok(()) => {}
        Err(e) => return Err(Failure::Net("connect", e)),
    }
    let t0 = StdInstant::now();
    let mut accepted = None;
    let mut connected = false;
    while accepted.is_none() || !connected {
        let now = clock.now();
        client.poll(now);
        server.poll(now);
        if accepted.is_none() {
            match server.accept(listener) {
                Ok((s, _peer)) => accepted = Some(s),
                Err(NetError::WouldBlock) => {}
                Err(e) => return Err(Failure::Net("accept", e)),
            }
        }
        if !connected {
            match client.connect(c, to) {
                Ok(()) => connected = true,
                Err(NetError::Already | NetError::InProgress) => {}
                Err(e) => return Err(Failure::Net("connect", e)),
            }
        }
        if t0.elapsed() > STALL {
            return Err(Failure::Stall(format!(
                "handshake: accepted {}, connected {connected}",
                accepted.is_some()
            )));
        }
    }
    let s = accepted.ok_or(Failure::Stall("no accepted socket".into()))?;
    let handshake = t0.elapsed();
    let peer = server.peer_addr(s).map_err(net("getpeername"))?;
    println!(
        "MTU {mtu}: handshake done in {:.3} ms ({peer} -> {to})",
        handshake.as_secs_f64() * 1e3
    );

    // Bulk transfer.
    let mut buf = vec![0u8; RECV_BUF];
    let mut sent: u64 = 0;
    let mut received: u64 = 0;
    let mut tx = Digest::new();
    let mut rx = Digest::new();
    let mut shut = false;
    let mut eof = false;
    let start = StdInstant::now();
    let mut last_progress = start;
    while !eof {
        let now = clock.now();
        client.poll(now);
        server.poll(now);
        let before = (sent, received, shut);

        while sent < total {
            let off = (sent % PATTERN_LEN as u64) as usize;
            let want = (PATTERN_LEN - off).min((total - sent).min(usize::MAX as u64) as usize);
            let chunk = &pattern[off..off + want];
            match client.send(c, chunk) {
                Ok(n) => {
                    tx.update(&chunk[..n]);
                    sent += n as u64;
                }
                Err(NetError::WouldBlock) => break,
                Err(e) => return Err(Failure::Net("send", e)),
            }
        }
        if sent == total && !shut {
            client
                .shutdown(c, Shutdown::Write)
                .map_err(net("shutdown"))?;
            shut = true;
        }

        loop {
            match server.recv(s, &mut buf, RecvFlags::default()) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    rx.update(&buf[..n]);
                    received += n as u64;
                }
                Err(NetError::WouldBlock) => break,
                Err(e) => return Err(Failure::Net("recv", e)),
            }
        }

        let t = StdInstant::now();
        if (sent, received, shut) != before {
            last_progress = t;
        } else if t - last_progress > STALL {
            return Err(Failure::Stall(format!(
                "sent {sent}, received {received} of {total}; client: {}; server: {}",
                describe(&mut client, c),
                describe(&mut server, s)
            )));
        }
    }
    let secs = start.elapsed().as_secs_f64();

    if received != total {
        return Err(Failure::Mismatch(format!(
            "received {received} bytes, expected {total}"
        )));
    }
    if tx.finish() != rx.finish() {
        return Err(Failure::Mismatch(format!(
            "digest {:#018x} received, {:#018x} sent",
            rx.finish(),
            tx.finish()
        )));
    }
    let gbits = received as f64 * 8.0 / secs / 1e9;
    println!(
        "MTU {mtu}: {received} bytes in {secs:.3} s = {gbits:.2} Gbit/s, \
         digest {:#018x} verified",
        rx.finish()
    );

    // Teardown: the server closes its side; the client must see end of file.
    server.close(s).map_err(net("close"))?;
    let t1 = StdInstant::now();
    loop {
        let now = clock.now();
        client.poll(now);
        server.poll(now);
        match client.recv(c, &mut buf, RecvFlags::default()) {
            Ok(0) => break,
            Ok(n) => {
                return Err(Failure::Mismatch(format!(
                    "client received {n} unexpected bytes"
                )));
            }
            Err(NetError::WouldBlock) => {}
            Err(e) => return Err(Failure::Net("recv at teardown", e)),
        }
        if t1.elapsed() > STALL {
            return Err(Failure::Stall(format!(
                "teardown: client {}",
                describe(&mut client, c)
            )));
        }
    }
    client.close(c).map_err(net("close"))?;
    server.close(listener).map_err(net("close"))?;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("demo: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let total = args.mib << 20;
    let pattern = make_pattern();
    println!(
        "smolvisor netstack demo: {} MiB over TCP, {CLIENT} -> {SERVER}:{PORT}, \
         in-memory cable, real clock",
        args.mib
    );
    let mut failed = false;
    for &mtu in &args.mtus {
        if let Err(e) = run(mtu, total, &pattern) {
            eprintln!("MTU {mtu}: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
