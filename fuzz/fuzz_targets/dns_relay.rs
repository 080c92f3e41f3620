//! The DNS relay (`lo` wrapped in a `DnsRelay`, as under OCI): the guest's
//! packets on `lo` (queries to 127.0.0.11:53 from several sources, and
//! packets that must pass untouched: TCP to port 53, other ports,
//! fragments, IPv6, malformed ones), an upstream resolver that answers
//! any relay socket with any bytes, strangers that write to the relay
//! sockets, evictions, and time passing (idle sockets close). Checks: no
//! panic; each query reaches the resolver with its payload; each packet
//! the relay hands the guest is either a packet the guest sent to someone
//! else (the loopback's own) or an answer from 127.0.0.11:53, to the
//! source that asked, carrying bytes the resolver sent that source; no
//! stranger's bytes ever; at most as many sockets as allowed.
#![no_main]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netstack::link::{DnsRelay, Loopback, MAX_RELAYS, Medium, fill_checksums};
use netstack::{Duration, Instant, Link};
use smolvisor_fuzz::frames::Edit;

const LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 53);

#[derive(Debug, Arbitrary)]
enum Op {
    /// A query from guest source `src` (one of a few addresses and ports).
    Query {
        src: u8,
        payload: Vec<u8>,
    },
    /// A packet from the templates below, edited.
    Mutate {
        template: u8,
        edits: Vec<Edit>,
        fix: bool,
    },
    Raw(Vec<u8>),
    /// The resolver sends `payload` to the relay socket of the `to`-th
    /// source it has heard from.
    Answer {
        to: u8,
        payload: Vec<u8>,
    },
    /// Someone else sends to a relay socket: never to reach the guest.
    Stranger {
        to: u8,
        payload: Vec<u8>,
    },
    /// The guest's stack reads what the relay has for it.
    Drain,
    Wait(u16),
    MaxRelays(u8),
}

fn source(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(127, 0, 0, 1 + i % 3),
        40000 + u16::from(i % 5),
    )
}

/// An IPv4 UDP packet (medium IP, as on `lo`), checksums made.
fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    fill_checksums(Medium::Ip, &mut p);
    p
}

fn templates() -> Vec<Vec<u8>> {
    let q =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
    let mut tcp = udp(source(0), LISTEN, q);
    tcp[9] = 6;
    fill_checksums(Medium::Ip, &mut tcp);
    let mut frag = udp(source(1), LISTEN, q);
    frag[6] = 0x20;
    fill_checksums(Medium::Ip, &mut frag);
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8 + q.len() as u8, 17, 64];
    v6.extend_from_slice(&[0; 15]);
    v6.push(1);
    v6.extend_from_slice(&[0; 15]);
    v6.push(1);
    v6.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 8 + q.len() as u8, 0, 0]);
    v6.extend_from_slice(q);
    vec![
        udp(source(0), LISTEN, q),
        udp(source(2), SocketAddrV4::new(*LISTEN.ip(), 54), q),
        udp(source(3), SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53), q),
        tcp,
        frag,
        v6,
    ]
}

fuzz_target!(|ops: Vec<Op>| {
    let Ok(resolver) = UdpSocket::bind("127.0.0.1:0") else {
        return;
    };
    let Ok(stranger) = UdpSocket::bind("127.0.0.1:0") else {
        return;
    };
    let _ = resolver.set_nonblocking(true);
    let upstream = resolver.local_addr().expect("the resolver's address");
    let Ok(mut relay) = DnsRelay::new(Loopback::new(), LISTEN, upstream) else {
        return;
    };
    let templates = templates();
    let mut now = Instant::from_secs(1);
    let mut max = MAX_RELAYS;
    // Packets sent that the loopback must hand back as they were.
    let mut passed: Vec<Vec<u8>> = Vec::new();
    // The relay sockets the resolver heard from, and which source each serves.
    let mut heard: Vec<(SocketAddr, SocketAddrV4)> = Vec::new();
    // Queries on their way: payload by source.
    let mut asked: HashMap<SocketAddrV4, Vec<Vec<u8>>> = HashMap::new();
    // What the resolver sent each source.
    let mut answers: HashMap<SocketAddrV4, Vec<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    for op in ops.iter().take(128) {
        match op {
            Op::Query { src, payload } => {
                let src = source(*src);
                let payload = &payload[..payload.len().min(1400)];
                asked.entry(src).or_default().push(payload.to_vec());
                relay.send(now, udp(src, LISTEN, payload));
            }
            Op::Mutate {
                template,
                edits,
                fix,
            } => {
                let mut p = templates[usize::from(*template) % templates.len()].clone();
                for e in edits.iter().take(8) {
                    e.apply(&mut p);
                }
                if *fix {
                    fill_checksums(Medium::Ip, &mut p);
                }
                // Whether it is a query is the relay's to decide: it may
                // come back from the loopback, or go to the resolver.
                passed.push(p.clone());
                relay.send(now, p);
            }
            Op::Raw(bytes) => {
                passed.push(bytes.clone());
                relay.send(now, bytes.clone());
            }
            Op::Answer { to, payload } => {
                if !heard.is_empty() {
                    let (sock, src) = heard[usize::from(*to) % heard.len()];
                    let payload = &payload[..payload.len().min(1400)];
                    if resolver.send_to(payload, sock).is_ok() {
                        answers.entry(src).or_default().push(payload.to_vec());
                    }
                }
            }
            Op::Stranger { to, payload } => {
                if !heard.is_empty() {
                    let (sock, _) = heard[usize::from(*to) % heard.len()];
                    let _ = stranger.send_to(payload, sock);
                }
            }
            Op::Drain => {
                while let Some(p) = relay.recv(now) {
                    check_from_relay(&p, &passed, &answers);
                    relay.recycle(p);
                }
            }
            Op::Wait(ms) => now += Duration::from_millis(u64::from(*ms) * 10),
            Op::MaxRelays(n) => {
                max = usize::from(*n).clamp(1, MAX_RELAYS);
                relay = relay.with_max_relays(max);
            }
        }
        relay.flush(now);
        now += Duration::from_millis(1);
        assert!(
            relay.relay_count() <= max,
            "{} relay sockets",
            relay.relay_count()
        );
        // The resolver hears each query once, with its payload, from the
        // socket of the source that asked.
        while let Ok((n, from)) = resolver.recv_from(&mut buf) {
            let got = &buf[..n];
            let src = asked
                .iter()
                .find(|(_, qs)| qs.iter().any(|q| q == got))
                .map(|(s, _)| *s);
            let src = match src {
                Some(s) => s,
                // A mutated packet that the relay took for a query.
                None if passed.iter().any(|p| holds(p, got)) => continue,
                None => panic!("the resolver got bytes nobody asked: {got:02x?}"),
            };
            if let Some(qs) = asked.get_mut(&src)
                && let Some(i) = qs.iter().position(|q| q == got)
            {
                qs.remove(i);
            }
            if let Some(h) = heard.iter_mut().find(|(s, _)| *s == from) {
                h.1 = src;
            } else {
                heard.push((from, src));
            }
        }
    }
});

/// Whether `part` lies within `p` past its first 20 bytes.
fn holds(p: &[u8], part: &[u8]) -> bool {
    part.is_empty()
        || p.get(20..)
            .is_some_and(|rest| rest.windows(part.len()).any(|w| w == part))
}

/// A packet the relay handed up: the loopback's own, or an answer.
fn check_from_relay(p: &[u8], passed: &[Vec<u8>], answers: &HashMap<SocketAddrV4, Vec<Vec<u8>>>) {
    if passed.iter().any(|q| q == p) {
        return;
    }
    assert!(p.len() >= 28, "a short packet from the relay: {p:02x?}");
    assert_eq!(
        &p[12..16],
        &LISTEN.ip().octets(),
        "not from the relay's address"
    );
    assert_eq!(u16::from_be_bytes([p[20], p[21]]), LISTEN.port());
    let dst = SocketAddrV4::new(
        Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        u16::from_be_bytes([p[22], p[23]]),
    );
    let sent = answers.get(&dst).map(Vec::as_slice).unwrap_or_default();
    assert!(
        sent.iter().any(|a| a[..] == p[28..]),
        "an answer to {dst} that the resolver never sent it"
    );
}
