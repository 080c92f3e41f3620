//! Memory per idle TCP connection: opens `N` connections (default 10,000)
//! between two stacks, sends 64 bytes over each, and reports how much the
//! process's resident set grew per connection (both ends counted).
//!
//! Run with `cargo run --release -p netstack --example conn_memory -- [N]`.

use std::net::SocketAddr;
use std::process::ExitCode;

use netstack::{Domain, Duration, Instant, NetError, Protocol, RecvFlags, SocketId, testbed};

/// The resident set size in KiB, from /proc/self/status.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let n: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 10_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: conn_memory [N]");
            return ExitCode::from(2);
        }
    };
    let mut now = Instant::from_secs(1);
    let (mut a, mut b) = testbed::two_hosts(1500, Duration::from_micros(20), now);
    let to = SocketAddr::new(testbed::host_v4(2).into(), 80);
    let l = b.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    b.bind(l, to).unwrap();
    b.listen(l, 4096).unwrap();
    let before = rss_kib();

    let mut clients: Vec<SocketId> = Vec::with_capacity(n);
    for _ in 0..n {
        let c = a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
        assert_eq!(a.connect(c, to), Err(NetError::InProgress));
        clients.push(c);
    }
    let mut servers = Vec::with_capacity(n);
    let mut sent = vec![false; n];
    let mut got = 0;
    let mut buf = [0u8; 128];
    for _ in 0..200_000 {
        now += Duration::from_millis(1);
        a.poll(now);
        b.poll(now);
        while let Ok((s, _)) = b.accept(l) {
            servers.push(s);
        }
        for (i, &c) in clients.iter().enumerate() {
            if !sent[i] && a.send(c, &[7u8; 64]) == Ok(64) {
                sent[i] = true;
            }
        }
        for &s in &servers {
            if let Ok(k) = b.recv(s, &mut buf, RecvFlags::default()) {
                got += k;
            }
        }
        if got == 64 * n {
            break;
        }
    }
    if got != 64 * n {
        eprintln!("only {got} of {} bytes arrived", 64 * n);
        return ExitCode::FAILURE;
    }
    let after = rss_kib();
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    println!(
        "{n} connections established, 64 bytes each: resident set grew {} KiB, \
         {:.1} KiB per connection (both ends), {:.1} KiB per socket",
        after.saturating_sub(before),
        per_conn / 1024.0,
        per_conn / 2048.0
    );
    ExitCode::SUCCESS
}
