//! Hostile wire input: mutated and random frames never panic or stall a stack,
//! and a stack that swallowed them still serves new connections and datagrams.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use common::{Rng, domain_of, listen_on, udp_socket};
use netstack::link::{Link, pair};
use netstack::testbed::{Frames, Wiretap};
use netstack::{
    Domain, Duration, Instant, NetError, Protocol, RecvFlags, SocketId, Stack, StackConfig, testbed,
};

fn host(link: Box<dyn Link>, n: u8, seed: u64) -> Stack {
    let cfg = StackConfig {
        random_seed: seed,
        ..StackConfig::default()
    };
    testbed::host(n, link, &cfg, Instant::from_secs(1))
}

struct World {
    a: Stack,
    b: Stack,
    now: Instant,
}

/// The frames a test feeds host b, and what each host sent.
struct Wires {
    inject_b: Frames,
    sent_a: Frames,
    sent_b: Frames,
}

impl World {
    /// Hosts a (1) and b (2) on a cable, b taking frames from the test.
    fn wired(seed: u64) -> (World, Wires) {
        let (ea, eb) = pair(1500, Duration::ZERO, false);
        let wires = Wires {
            inject_b: Arc::default(),
            sent_a: Arc::default(),
            sent_b: Arc::default(),
        };
        let a = Wiretap {
            inner: ea,
            inject: Arc::default(),
            sent: Arc::clone(&wires.sent_a),
        };
        let b = Wiretap {
            inner: eb,
            inject: Arc::clone(&wires.inject_b),
            sent: Arc::clone(&wires.sent_b),
        };
        let w = World {
            a: host(Box::new(a), 1, seed),
            b: host(Box::new(b), 2, seed + 1),
            now: Instant::from_secs(1),
        };
        (w, wires)
    }

    fn poll(&mut self) {
        self.now += Duration::from_millis(1);
        self.a.poll(self.now);
        self.b.poll(self.now);
    }

    fn until(&mut self, mut done: impl FnMut(&mut World) -> bool) {
        for _ in 0..200_000 {
            if done(self) {
                return;
            }
            self.poll();
        }
        panic!(
            "stalled at {:?}",
            std::backtrace::Backtrace::force_capture()
        );
    }

    /// A full TCP exchange and a UDP datagram from a to b.
    fn exchange(&mut self, port: u16) {
        let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), port);
        let l = listen_on(&mut self.b, to, 8);
        let c = self.a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
        assert_eq!(self.a.connect(c, to), Err(NetError::InProgress));
        let mut s: Option<SocketId> = None;
        self.until(|w| {
            if s.is_none() {
                s = w.b.accept(l).ok().map(|(x, _)| x);
            }
            s.is_some() && w.a.connect(c, to).is_ok()
        });
        let s = s.unwrap();
        assert_eq!(self.a.send(c, b"still alive").unwrap(), 11);
        let mut buf = [0u8; 64];
        let mut n = 0;
        self.until(|w| {
            n = w.b.recv(s, &mut buf, RecvFlags::default()).unwrap_or(0);
            n > 0
        });
        assert_eq!(&buf[..n], b"still alive");

        let u = udp_socket(&mut self.b, Some(to));
        let v = udp_socket(&mut self.a, None);
        self.a.send_to(v, b"datagram", to).unwrap();
        let mut got = None;
        self.until(|w| {
            got = w.b.recv_from(u, &mut buf, RecvFlags::default()).ok();
            got.is_some()
        });
        assert_eq!(&buf[..got.unwrap().copied], b"datagram");
        self.a.close(c).unwrap();
        self.a.close(v).unwrap();
        for id in [s, l, u] {
            self.b.close(id).unwrap();
        }
    }
}

#[test]
fn mutated_and_random_frames_do_not_break_the_stack() {
    let (
        mut w,
        Wires {
            inject_b, sent_a, ..
        },
    ) = World::wired(11);
    // Real traffic first, so there are genuine frames to mutate.
    w.exchange(7000);
    // Fragmented datagrams of both families, and pings, as more seeds.
    let big = vec![0xabu8; 3000];
    for dst in ["10.0.0.2:7002", "[fd00::2]:7002"] {
        let dst: SocketAddr = dst.parse().unwrap();
        let domain = domain_of(dst);
        let s = w.a.socket(domain, Protocol::Udp).unwrap();
        w.a.send_to(s, &big, dst).unwrap();
        let p = w.a.socket(domain, Protocol::Icmp).unwrap();
        let echo = [if dst.is_ipv4() { 8 } else { 128 }, 0, 0, 0, 0, 0, 0, 1, 42];
        w.a.send_to(p, &echo, dst).unwrap();
        for _ in 0..20 {
            w.poll();
        }
    }
    let seeds: Vec<Vec<u8>> = sent_a.lock().unwrap().iter().cloned().collect();
    assert!(seeds.len() > 5, "captured {} frames", seeds.len());

    // Keep a listener and a UDP socket open on b while it is fed garbage.
    let l = listen_on(&mut w.b, "10.0.0.2:7001".parse().unwrap(), 8);
    let u = udp_socket(&mut w.b, Some("[::]:7002".parse().unwrap()));

    let mut rng = Rng(0x1234_5678_9abc_def1);
    for round in 0..200_000 {
        let mut f = if round % 10 == 0 {
            let len = rng.below(1600);
            (0..len).map(|_| rng.next_u64() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..=rng.below(4) {
            if f.is_empty() {
                break;
            }
            let i = rng.below(f.len());
            match rng.below(4) {
                0 => f[i] ^= 1 << rng.below(8),
                1 => f[i] = rng.next_u64() as u8,
                2 => f.truncate(i),
                _ => f.extend((0..rng.below(64)).map(|_| rng.next_u64() as u8)),
            }
        }
        inject_b.lock().unwrap().push_back(f);
        if round % 64 == 0 {
            w.poll();
        }
    }
    w.until(|_| inject_b.lock().unwrap().is_empty());
    // Let every timer the garbage may have armed run out.
    for _ in 0..200 {
        w.now += Duration::from_secs(1);
        w.a.poll(w.now);
        w.b.poll(w.now);
    }
    w.exchange(7003);
    // The sockets kept open through the storm still answer.
    assert!(w.b.readiness(l).is_ok());
    assert!(w.b.readiness(u).is_ok());
    w.b.close(l).unwrap();
    w.b.close(u).unwrap();
}

/// A SYN from an address on the subnet where no host answers (spoofed, or
/// a host that went away) leaves a SYN-ACK waiting for a neighbour that
/// never answers. smoltcp keeps such a packet at the head of the queue that
/// carries TCP segments through its interface, with every later one behind
/// it; the stack must not let it hold them: new connections still
/// complete, over IPv4 once their peer's ARP entry has aged (so that their
/// segments take that queue too) and over IPv6 (whose segments always do).
/// The stack fuzzer (`fuzz/`, target `stack_frames`) found this.
#[test]
fn a_syn_from_a_silent_address_does_not_stall_later_connections() {
    for (v6, aged) in [(false, 70), (true, 0)] {
        let (mut w, Wires { inject_b, .. }) = World::wired(21);
        let (b_ip, silent): (IpAddr, IpAddr) = if v6 {
            ("fd00::2".parse().unwrap(), "fd00::3".parse().unwrap())
        } else {
            ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap())
        };
        let to = SocketAddr::new(b_ip, 80);
        let l = listen_on(&mut w.b, to, 8);

        // The SYN from the silent address, well formed.
        let frame = syn_frame(silent, b_ip, [0x02, 0, 0, 0, 0, 2]);
        inject_b.lock().unwrap().push_back(frame);
        for _ in 0..10 {
            w.poll();
        }
        // B's entry for A ages (IPv4), while the SYN-ACK for the silent
        // address is retransmitted.
        for _ in 0..aged {
            w.now += Duration::from_secs(1);
            w.a.poll(w.now);
            w.b.poll(w.now);
        }

        // A new connection from A completes within 3 s.
        let c = w.a.socket(domain_of(to), Protocol::Tcp).unwrap();
        assert_eq!(w.a.connect(c, to), Err(NetError::InProgress));
        let start = w.now;
        let (mut accepted, mut connected) = (None, false);
        while w.now < start + Duration::from_secs(3) && !(connected && accepted.is_some()) {
            w.poll();
            if accepted.is_none() {
                accepted = w.b.accept(l).ok();
            }
            connected = connected || w.a.connect(c, to).is_ok();
        }
        assert!(
            connected && accepted.is_some(),
            "v6 {v6} aged {aged}: the connection did not complete within 3 s"
        );
    }
}

/// A well-formed TCP SYN to port 80 of `dst` from `src` (port 40000), in an
/// Ethernet frame to `dst_mac` from 02:00:00:00:00:33.
fn syn_frame(src: IpAddr, dst: IpAddr, dst_mac: [u8; 6]) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
        Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    };
    let v6 = dst.is_ipv6();
    let (src, dst) = (IpAddress::from(src), IpAddress::from(dst));
    let tcp = TcpRepr {
        src_port: 40_000,
        dst_port: 80,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 65_535,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ip_len = if v6 { 40 } else { 20 };
    let mut frame = vec![0u8; 14 + ip_len + tcp.header_len()];
    EthernetRepr {
        src_addr: EthernetAddress([0x02, 0, 0, 0, 0, 0x33]),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: if v6 {
            EthernetProtocol::Ipv6
        } else {
            EthernetProtocol::Ipv4
        },
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
    let csum = ChecksumCapabilities::default();
    match (src, dst) {
        (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => Ipv4Repr {
            src_addr: s,
            dst_addr: d,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.header_len(),
            hop_limit: 64,
        }
        .emit(&mut Ipv4Packet::new_unchecked(&mut frame[14..34]), &csum),
        (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => Ipv6Repr {
            src_addr: s,
            dst_addr: d,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.header_len(),
            hop_limit: 64,
        }
        .emit(&mut Ipv6Packet::new_unchecked(&mut frame[14..54])),
        _ => unreachable!("one family"),
    }
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut frame[14 + ip_len..]),
        &src,
        &dst,
        &csum,
    );
    frame
}

/// A frame addressed to another host's MAC (a bridge floods unknown
/// unicast) is not ours: Linux drops it as PACKET_OTHERHOST, so a SYN in
/// it gets no SYN-ACK and no connection; the same SYN to our MAC does.
#[test]
fn frames_for_another_mac_are_not_ours() {
    for (mac, answered) in [
        ([0x02, 0, 0, 0, 0, 0x44], false),
        ([0x02, 0, 0, 0, 0, 2], true),
    ] {
        let (
            mut w,
            Wires {
                inject_b, sent_b, ..
            },
        ) = World::wired(31);
        let b_ip: IpAddr = "10.0.0.2".parse().unwrap();
        let l = listen_on(&mut w.b, SocketAddr::new(b_ip, 80), 8);
        // From A's address, so that B knows where to answer.
        let a_ip: IpAddr = "10.0.0.1".parse().unwrap();
        inject_b
            .lock()
            .unwrap()
            .push_back(syn_frame(a_ip, b_ip, mac));
        for _ in 0..20 {
            w.poll();
        }
        let syn_acks = sent_b
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f.len() >= 54 && f[12..14] == [0x08, 0x00] && f[47] == 0x12)
            .count();
        assert_eq!(
            syn_acks > 0,
            answered,
            "to {mac:02x?}: SYN-ACKs sent {syn_acks}"
        );
        assert!(!w.b.readiness(l).unwrap().readable);
    }
}
