//! The NAT gateway's frame path: frames from the guest's side of the cable
//! (raw, or mutated from real ones: the golden captures' frames moved onto
//! the gateway's subnet, ARP, DNS, pings, SYNs in and out of reach), the
//! guest answering what the gateway sent (so connections get spliced and
//! carry data), the host side writing and closing, and time passing. The
//! gateway's host sockets live in a network namespace of the fuzzer's own,
//! whose loopback holds a TCP server and a UDP echo that 10.0.2.2 reaches
//! (`host_loopback`); everything else is unreachable, so no frame leaves
//! the machine. No input may panic the gateway; every frame it sends goes
//! to a MAC that the guest's side named (as a frame's source, an ARP
//! sender, a neighbour option…) or a multicast one: it answers who asked
//! and never makes up a host; its flows stay bounded.
#![no_main]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netstack::nat::{Nat, NatConfig};
use netstack::{Duration, Instant, Link};
use smolvisor_fuzz::fix_checksums;
use smolvisor_fuzz::frames::{self, Edit};

/// The host's TCP server and UDP echo port (the ports of the golden
/// captures' exchanges, so their frames reach them).
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 34567;

#[derive(Debug, Arbitrary)]
enum Op {
    Raw(Vec<u8>),
    Mutate {
        template: u8,
        edits: Vec<Edit>,
        fix: bool,
    },
    /// The guest answers the last TCP segment the gateway sent it: an ACK
    /// with the right numbers, maybe data, maybe FIN or RST.
    Answer {
        data: Vec<u8>,
        flags: u8,
    },
    /// The host's side of the newest accepted connection writes, or closes.
    Host {
        write: Vec<u8>,
        close: bool,
    },
    Wait(u16),
}

struct HostSide {
    tcp: TcpListener,
    udp: UdpSocket,
}

/// The namespace of our own, with loopback up and the host's servers.
fn host_side() -> &'static HostSide {
    static SIDE: OnceLock<HostSide> = OnceLock::new();
    SIDE.get_or_init(|| {
        // SAFETY: unshare takes no pointers; it moves this thread, the one
        // libFuzzer runs inputs on, into a new network namespace.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare(CLONE_NEWNET) needs root");
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip link set lo up");
        assert!(up.success());
        let tcp = TcpListener::bind(("127.0.0.1", TCP_PORT)).expect("the host's TCP server");
        tcp.set_nonblocking(true).unwrap();
        let udp = UdpSocket::bind(("127.0.0.1", UDP_PORT)).expect("the host's UDP echo");
        udp.set_nonblocking(true).unwrap();
        HostSide { tcp, udp }
    })
}

fn templates(cfg: &NatConfig) -> &'static [Vec<u8>] {
    static T: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    T.get_or_init(|| {
        let g = frames::Addrs {
            mac: cfg.guest_mac,
            ip: cfg.guest,
            peer_mac: cfg.gateway_mac,
            peer_ip: cfg.gateway,
        };
        let mut t = frames::from_golden_captures(&g);
        t.push(frames::arp_request(&g, cfg.gateway));
        t.push(frames::tcp(&g, cfg.gateway, 40000, TCP_PORT, 0x02, b""));
        t.push(frames::tcp(&g, [10, 0, 0, 2].into(), 40001, 80, 0x02, b""));
        t.push(frames::udp(
            &g,
            cfg.dns,
            5353,
            53,
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",
        ));
        t.push(frames::udp(&g, cfg.gateway, 40002, UDP_PORT, b"datagram"));
        t.push(frames::udp(&g, [10, 0, 0, 2].into(), 40003, 9, b"away"));
        t.push(frames::ping(&g, cfg.gateway, 7, 1));
        t.push(frames::ping(&g, [10, 0, 0, 2].into(), 8, 1));
        t
    })
}

fuzz_target!(|ops: Vec<Op>| {
    let host = host_side();
    let cfg = NatConfig {
        host_loopback: true,
        ..NatConfig::default()
    };
    let mut now = Instant::from_secs(1);
    let Ok((mut nat, mut guest, _)) = Nat::new(cfg.clone(), now) else {
        return;
    };
    let templates = templates(&cfg);
    let mut last_from_gw: Option<Vec<u8>> = None;
    let mut accepted: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 2048];
    // Every 6 bytes the guest's side sent: a MAC it could have named.
    let mut named: std::collections::HashSet<[u8; 6]> = [cfg.guest_mac].into();
    for op in ops.iter().take(128) {
        let mut out = None;
        match op {
            Op::Raw(bytes) => out = Some(bytes.clone()),
            Op::Mutate {
                template,
                edits,
                fix,
            } => {
                let mut f = templates[usize::from(*template) % templates.len()].clone();
                for e in edits.iter().take(16) {
                    e.apply(&mut f);
                }
                if *fix {
                    fix_checksums(&mut f);
                }
                out = Some(f);
            }
            Op::Answer { data, flags } => {
                out = last_from_gw
                    .as_deref()
                    .and_then(|f| frames::reply(f, data, *flags));
            }
            Op::Host { write, close } => {
                if let Some(s) = accepted.last_mut() {
                    let _ = s.write(write);
                    if *close {
                        accepted.pop();
                    }
                }
            }
            Op::Wait(ms) => now += Duration::from_millis(u64::from(*ms)),
        }
        if let Some(f) = out {
            named.extend(f.windows(6).filter_map(|w| <[u8; 6]>::try_from(w).ok()));
            guest.send(now, f);
        }
        nat.poll(now);
        while let Some(f) = guest.recv(now) {
            // The gateway answers who spoke to it, or multicasts.
            let dst = &f[..6.min(f.len())];
            assert!(
                <[u8; 6]>::try_from(dst).is_ok_and(|m| named.contains(&m))
                    || dst.first().is_some_and(|b| b & 1 == 1),
                "a frame for {dst:02x?}"
            );
            if f.get(23) == Some(&6) {
                last_from_gw = Some(f.clone());
            }
            guest.recycle(f);
        }
        // The host's servers: accept, drain, echo.
        while let Ok((s, _)) = host.tcp.accept() {
            let _ = s.set_nonblocking(true);
            accepted.push(s);
        }
        for s in &mut accepted {
            let _ = s.read(&mut buf);
        }
        while let Ok((n, from)) = host.udp.recv_from(&mut buf) {
            let _ = host.udp.send_to(&buf[..n], from);
        }
        assert!(nat.flow_count() <= 1024, "{} flows", nat.flow_count());
    }
});
