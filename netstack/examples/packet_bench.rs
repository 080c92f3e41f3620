//! Throughput of the AF_PACKET link: one TCP flow between a stack over a
//! veth and the kernel's TCP in a peer namespace, beside the same flow
//! between the two kernels, in one run and with the same sink and source.
//!
//! Two throw-away namespaces A and B are joined by a veth (`va`, `vb`), B
//! holds 10.88.0.2/24. Native: `va` holds 10.88.0.1/24 and a kernel socket
//! in A talks to B. Ours: the address leaves `va`, a [`PacketLink`] opens on
//! it, and a stack with 10.88.0.1/24 and `va`'s MAC talks to B, as the
//! `sandbox` mode does after taking the interface over. "up" is A → B, "down"
//! is B → A; B's sink counts the bytes from the first to the last. With
//! `--iperf3`, iperf3's native numbers are printed too, for reference;
//! `--no-tso` sends only MTU-sized segments with checksums computed by the
//! stack; `--no-trust` has smoltcp verify every received checksum;
//! `--ours-only` skips the native runs; `--up` or `--down` runs one
//! direction only.
//!
//! Run with `cargo run --release -p netstack --example packet_bench --
//! [--secs N] [--iperf3] [--ours-only] [--no-tso] [--no-trust] [--up|--down]` as root.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown as NetShutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant as StdInstant};

use netstack::link::PacketLink;
use netstack::testbed::netns::{Netns, Step, drive, veth, wall_clock};
use netstack::{
    Domain, IfAddr, NetError, NicConfig, Protocol, RecvFlags, Shutdown, SockOpt, Stack, StackConfig,
};

const A: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
const CHUNK: usize = 256 << 10;
const SOCKET_BUFFER: usize = 4 << 20;

type BoxError = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let mut secs = 5u64;
    let mut iperf3 = false;
    let mut ours_only = false;
    let mut tso = true;
    let mut trust = true;
    let mut dirs = (true, true);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => match args.next().and_then(|v| v.parse().ok()) {
                Some(v) if v > 0 => secs = v,
                _ => return usage(),
            },
            "--iperf3" => iperf3 = true,
            "--ours-only" => ours_only = true,
            "--no-tso" => tso = false,
            "--no-trust" => trust = false,
            "--up" => dirs = (true, false),
            "--down" => dirs = (false, true),
            _ => return usage(),
        }
    }
    match run(
        Duration::from_secs(secs),
        iperf3,
        ours_only,
        (tso, trust),
        dirs,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("packet_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: packet_bench [--secs N] [--iperf3] [--ours-only] [--no-tso] [--no-trust] [--up|--down]"
    );
    ExitCode::from(2)
}

fn gbits(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}

fn run(
    secs: Duration,
    iperf3: bool,
    ours_only: bool,
    (tso, trust): (bool, bool),
    (up, down): (bool, bool),
) -> Result<(), BoxError> {
    let a = Netns::new("pbench-a")?;
    let b = Netns::new("pbench-b")?;
    veth(&a, "va", &b, "vb")?;
    b.ip(&["addr", "add", "10.88.0.2/24", "dev", "vb"])?;
    a.ip(&["addr", "add", "10.88.0.1/24", "dev", "va"])?;

    if iperf3 {
        for (dir, flag) in [("up", None), ("down", Some("-R"))] {
            println!(
                "iperf3 native {dir}: {:.2} Gbit/s",
                iperf3_run(&a, &b, secs, flag)?
            );
        }
    }
    let native_up = if up && !ours_only {
        native_up(&a, &b, secs)?
    } else {
        f64::NAN
    };
    let native_down = if down && !ours_only {
        native_down(&a, &b, secs)?
    } else {
        f64::NAN
    };

    a.ip(&["addr", "flush", "dev", "va"])?;
    let mac = mac_of(&a, "va")?;
    let index = a.ifindex("va")?;
    let mut link = a.run(|| PacketLink::open(index, 1500))??;
    if !tso {
        link = link.without_segmentation();
    }
    if !trust {
        link = link.without_checksum_trust();
    }
    let mut stack = Stack::new(StackConfig::default(), wall_clock());
    stack.add_nic(
        Box::new(link),
        NicConfig {
            name: "va".into(),
            mac,
            addrs: vec![IfAddr {
                addr: IpAddr::V4(A),
                prefix_len: 24,
            }],
            gateway_v4: None,
            gateway_v6: None,
        },
    )?;
    let ours_up = if up {
        ours_up(&mut stack, &b, secs)?
    } else {
        f64::NAN
    };
    let ours_down = if down {
        ours_down(&mut stack, &b, secs)?
    } else {
        f64::NAN
    };
    println!("native up:   {native_up:.2} Gbit/s");
    println!("native down: {native_down:.2} Gbit/s");
    println!(
        "ours up:     {ours_up:.2} Gbit/s ({:.2}x)",
        ours_up / native_up
    );
    println!(
        "ours down:   {ours_down:.2} Gbit/s ({:.2}x)",
        ours_down / native_down
    );
    Ok(())
}

fn mac_of(ns: &Netns, ifname: &str) -> Result<[u8; 6], BoxError> {
    let out = ns.ip(&["-o", "link", "show", ifname])?;
    let hex = out.split("link/ether ").nth(1).ok_or("no MAC")?;
    let mut mac = [0u8; 6];
    for (m, h) in mac
        .iter_mut()
        .zip(hex.get(..17).ok_or("short MAC")?.split(':'))
    {
        *m = u8::from_str_radix(h, 16)?;
    }
    Ok(mac)
}

fn iperf3_run(a: &Netns, b: &Netns, secs: Duration, flag: Option<&str>) -> Result<f64, BoxError> {
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            b.name(),
            "iperf3",
            "-s",
            "-1",
            "-B",
            "10.88.0.2",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let t = secs.as_secs().to_string();
    let mut args = vec![
        "netns",
        "exec",
        a.name(),
        "iperf3",
        "-c",
        "10.88.0.2",
        "-t",
        &t,
        "-f",
        "g",
    ];
    args.extend(flag);
    let out = Command::new("ip").args(&args).output()?;
    server.wait()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The receiver's summary line: "... N Gbits/sec ... receiver".
    let line = text
        .lines()
        .find(|l| l.contains("receiver"))
        .ok_or_else(|| format!("no iperf3 summary in {text}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| *w == "Gbits/sec")
        .ok_or("no rate in the iperf3 summary")?;
    Ok(words[i - 1].parse()?)
}

/// A sink in B: accepts one connection on `port`, reads to the end; the
/// rate from the first byte to the last.
fn sink(b: &Netns, port: u16) -> Result<std::thread::JoinHandle<std::io::Result<f64>>, BoxError> {
    let l = b.run(|| TcpListener::bind((B, port)))??;
    Ok(std::thread::spawn(move || {
        let (mut c, _) = l.accept()?;
        let mut buf = vec![0u8; CHUNK];
        let mut n = c.read(&mut buf)? as u64;
        let start = StdInstant::now();
        let mut total = 0;
        while n > 0 {
            total += n;
            n = c.read(&mut buf)? as u64;
        }
        Ok(gbits(total, start.elapsed()))
    }))
}

/// A source in B: accepts one connection on `port`, writes for `secs`, closes.
fn source(
    b: &Netns,
    port: u16,
    secs: Duration,
) -> Result<std::thread::JoinHandle<std::io::Result<()>>, BoxError> {
    let l = b.run(|| TcpListener::bind((B, port)))??;
    Ok(std::thread::spawn(move || {
        let (mut c, _) = l.accept()?;
        let buf = vec![0x5au8; CHUNK];
        let end = StdInstant::now() + secs;
        while StdInstant::now() < end {
            c.write_all(&buf)?;
        }
        c.shutdown(NetShutdown::Write)
    }))
}

fn native_up(a: &Netns, b: &Netns, secs: Duration) -> Result<f64, BoxError> {
    let s = sink(b, 5201)?;
    a.run(|| -> std::io::Result<()> {
        let mut c = TcpStream::connect((B, 5201))?;
        let buf = vec![0x5au8; CHUNK];
        let end = StdInstant::now() + secs;
        while StdInstant::now() < end {
            c.write_all(&buf)?;
        }
        Ok(())
    })??;
    Ok(s.join().map_err(|_| "sink panicked")??)
}

fn native_down(a: &Netns, b: &Netns, secs: Duration) -> Result<f64, BoxError> {
    let s = source(b, 5202, secs)?;
    let rate = a.run(|| -> std::io::Result<f64> {
        let mut c = TcpStream::connect((B, 5202))?;
        let mut buf = vec![0u8; CHUNK];
        let mut n = c.read(&mut buf)? as u64;
        let start = StdInstant::now();
        let mut total = 0;
        while n > 0 {
            total += n;
            n = c.read(&mut buf)? as u64;
        }
        Ok(gbits(total, start.elapsed()))
    })??;
    s.join().map_err(|_| "source panicked")??;
    Ok(rate)
}

fn stack_socket(stack: &mut Stack, port: u16) -> Result<netstack::SocketId, BoxError> {
    let s = stack.socket(Domain::Ipv4, Protocol::Tcp)?;
    stack.set_option(s, SockOpt::SendBuffer(SOCKET_BUFFER))?;
    stack.set_option(s, SockOpt::RecvBuffer(SOCKET_BUFFER))?;
    match stack.connect(s, SocketAddr::from((B, port))) {
        Ok(()) | Err(NetError::InProgress) => Ok(s),
        Err(e) => Err(e.into()),
    }
}

fn ours_up(stack: &mut Stack, b: &Netns, secs: Duration) -> Result<f64, BoxError> {
    let sink = sink(b, 5203)?;
    let s = stack_socket(stack, 5203)?;
    let buf = vec![0x5au8; CHUNK];
    let mut end = None;
    let mut shut = false;
    let mut err = None;
    let ok = drive(stack, secs + Duration::from_secs(30), |st| {
        if !shut {
            let end = *end.get_or_insert_with(|| StdInstant::now() + secs);
            if StdInstant::now() >= end {
                let _ = st.shutdown(s, Shutdown::Write);
                shut = true;
                return Step::Busy;
            }
            return match st.send(s, &buf) {
                Ok(n) if n > 0 => Step::Busy,
                Ok(_) | Err(NetError::WouldBlock) => Step::Idle,
                Err(e) => {
                    err = Some(e);
                    Step::Done
                }
            };
        }
        // Done once the peer closed too.
        match st.recv(s, &mut [0u8; 16], RecvFlags::default()) {
            Ok(0) => Step::Done,
            _ => Step::Idle,
        }
    });
    if let Some(e) = err {
        return Err(format!("send: {e}").into());
    }
    let _ = stack.close(s);
    if !ok {
        return Err("upload did not finish".into());
    }
    Ok(sink.join().map_err(|_| "sink panicked")??)
}

fn ours_down(stack: &mut Stack, b: &Netns, secs: Duration) -> Result<f64, BoxError> {
    let src = source(b, 5204, secs)?;
    let s = stack_socket(stack, 5204)?;
    let mut buf = vec![0u8; CHUNK];
    let mut start = None;
    let mut total = 0u64;
    let mut err = None;
    let ok = drive(stack, secs + Duration::from_secs(30), |st| {
        match st.recv(s, &mut buf, RecvFlags::default()) {
            Ok(0) => Step::Done,
            Ok(n) => {
                if start.is_none() {
                    start = Some(StdInstant::now());
                } else {
                    total += n as u64;
                }
                Step::Busy
            }
            Err(NetError::WouldBlock | NetError::NotConnected) => Step::Idle,
            Err(e) => {
                err = Some(e);
                Step::Done
            }
        }
    });
    let elapsed = start.map(|t| t.elapsed()).unwrap_or_default();
    if let Some(e) = err {
        return Err(format!("recv: {e}").into());
    }
    let _ = stack.close(s);
    src.join().map_err(|_| "source panicked")??;
    if !ok {
        return Err("download did not finish".into());
    }
    Ok(gbits(total, elapsed))
}
