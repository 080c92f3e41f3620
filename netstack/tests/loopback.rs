//! Traffic a stack sends to itself: over `lo` (127.0.0.0/8, ::1), and to its
//! own Ethernet addresses, which Linux also routes through loopback.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use common::*;
use netstack::link::Impairments;
use netstack::{
    Domain, Duration, IfAddr, LOOPBACK, NetError, Protocol, RecvFlags, Shutdown, SocketId, Stack,
    StackConfig,
};
use sha2::{Digest, Sha256};

const NONE: RecvFlags = RecvFlags { peek: false };

fn domain_of(addr: SocketAddr) -> Domain {
    match addr {
        SocketAddr::V4(_) => Domain::Ipv4,
        SocketAddr::V6(_) => Domain::Ipv6,
    }
}

fn take(s: &mut Stack, id: SocketId) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70_000];
    match s.recv_from(id, &mut buf, NONE) {
        Ok(d) => {
            assert_eq!(d.copied, d.len);
            buf.truncate(d.copied);
            Some((buf, d.from))
        }
        Err(NetError::WouldBlock) => None,
        Err(e) => panic!("recv_from failed: {e:?}"),
    }
}

/// A listener at `at` and a connected (client, server) pair, all in `solo`.
fn tcp_pair(solo: &mut Solo, at: SocketAddr) -> (SocketId, SocketId, SocketId) {
    let domain = domain_of(at);
    let l = solo.s.socket(domain, Protocol::Tcp).unwrap();
    solo.s.bind(l, at).unwrap();
    solo.s.listen(l, 8).unwrap();
    let c = solo.s.socket(domain, Protocol::Tcp).unwrap();
    assert_eq!(solo.s.connect(c, at), Err(NetError::InProgress));
    let mut server = None;
    solo.run_until(Duration::from_secs(5), |n| {
        if server.is_none() {
            server = n.s.accept(l).ok();
        }
        server.is_some() && n.s.connect(c, at).is_ok()
    });
    let (s, peer) = server.unwrap();
    assert_eq!(
        solo.s.local_addr(c),
        Ok(peer),
        "accept reports the client's address"
    );
    assert_eq!(solo.s.peer_addr(s), Ok(peer));
    assert_eq!(solo.s.peer_addr(c), Ok(at));
    assert_eq!(solo.s.local_addr(s), Ok(at));
    (l, c, s)
}

fn exchange(solo: &mut Solo, c: SocketId, s: SocketId) {
    assert_eq!(solo.s.send(c, b"request"), Ok(7));
    solo.run_until(Duration::from_secs(1), |n| n.s.recv_queue(s) == Ok(7));
    let mut buf = [0u8; 32];
    assert_eq!(solo.s.recv(s, &mut buf, NONE), Ok(7));
    assert_eq!(&buf[..7], b"request");
    assert_eq!(solo.s.send(s, b"response"), Ok(8));
    solo.run_until(Duration::from_secs(1), |n| n.s.recv_queue(c) == Ok(8));
    assert_eq!(solo.s.recv(c, &mut buf, NONE), Ok(8));
    assert_eq!(&buf[..8], b"response");
}

#[test]
fn nics_lists_lo_first() {
    let solo = Solo::new();
    let nics: Vec<_> = solo.s.nics().collect();
    assert_eq!(nics.len(), 1);
    let lo = nics[LOOPBACK];
    assert_eq!(lo.name, "lo");
    assert_eq!(lo.mac, None);
    assert_eq!(
        lo.addrs,
        vec![
            IfAddr {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                prefix_len: 8
            },
            IfAddr {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix_len: 128
            },
        ]
    );

    // With an Ethernet NIC, lo is still first and keeps only its own addresses.
    let net = Net::new();
    let nics: Vec<_> = net.a.nics().collect();
    assert_eq!(
        nics.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["lo", "eth0"]
    );
    assert_eq!(nics[0].addrs, lo.addrs);
    assert_eq!(nics[1].mac, Some([2, 0, 0, 0, 0, 1]));
    assert_eq!(nics[1].mtu, 1500);
    assert_eq!(
        nics[1].addrs,
        vec![
            IfAddr {
                addr: IpAddr::V4(A4),
                prefix_len: 24
            },
            IfAddr {
                addr: IpAddr::V6(A6),
                prefix_len: 64
            },
        ]
    );
}

#[test]
fn tcp_over_127_0_0_1() {
    let mut solo = Solo::new();
    let (_l, c, s) = tcp_pair(&mut solo, sa(Ipv4Addr::LOCALHOST, 80));
    let local = solo.s.local_addr(c).unwrap();
    assert_eq!(local.ip(), Ipv4Addr::LOCALHOST);
    assert!((32768..=60999).contains(&local.port()));
    exchange(&mut solo, c, s);
}

#[test]
fn tcp_over_ipv6_loopback() {
    let mut solo = Solo::new();
    let (_l, c, s) = tcp_pair(&mut solo, sa(Ipv6Addr::LOCALHOST, 80));
    assert_eq!(solo.s.local_addr(c).unwrap().ip(), Ipv6Addr::LOCALHOST);
    exchange(&mut solo, c, s);
}

#[test]
fn tcp_10_mib_over_loopback_is_intact() {
    const TOTAL: usize = 10 << 20;
    let mut solo = Solo::new();
    let (_l, c, s) = tcp_pair(&mut solo, sa(Ipv4Addr::LOCALHOST, 9000));
    let data = tagged_bytes(10, TOTAL);
    let want = Sha256::digest(&data);
    let mut sent = 0;
    let mut got = 0;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut eof = false;
    solo.run_until(Duration::from_secs(120), |n| {
        while sent < TOTAL {
            match n.s.send(c, &data[sent..(sent + (64 << 10)).min(TOTAL)]) {
                Ok(k) => sent += k,
                Err(NetError::WouldBlock) => break,
                Err(e) => panic!("send: {e:?}"),
            }
            if sent == TOTAL {
                n.s.shutdown(c, Shutdown::Write).unwrap();
            }
        }
        loop {
            match n.s.recv(s, &mut buf, NONE) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => {
                    hash.update(&buf[..k]);
                    got += k;
                }
                Err(NetError::WouldBlock) => break,
                Err(e) => panic!("recv: {e:?}"),
            }
        }
        eof
    });
    assert_eq!(got, TOTAL);
    assert_eq!(hash.finalize(), want, "SHA-256 of the received stream");
    assert!(solo.s.readiness(s).unwrap().read_hangup);
}

#[test]
fn udp_over_127_0_0_1_and_ipv6_loopback() {
    let mut solo = Solo::new();
    for at in [sa(Ipv4Addr::LOCALHOST, 5000), sa(Ipv6Addr::LOCALHOST, 5000)] {
        let domain = domain_of(at);
        let server = solo.s.socket(domain, Protocol::Udp).unwrap();
        solo.s.bind(server, at).unwrap();
        let client = solo.s.socket(domain, Protocol::Udp).unwrap();
        assert_eq!(solo.s.send_to(client, b"hello lo", at), Ok(8));
        let port = solo.s.local_addr(client).unwrap().port();
        solo.run_until(Duration::from_secs(1), |n| {
            n.s.readiness(server).unwrap().readable
        });
        let (data, from) = take(&mut solo.s, server).unwrap();
        assert_eq!(data, b"hello lo");
        assert_eq!(
            from,
            SocketAddr::new(at.ip(), port),
            "source seen over {at}"
        );
        // A datagram far above an Ethernet MTU fits lo's MTU.
        let big = tagged_bytes(7, 60_000);
        solo.s.send_to(server, &big, from).unwrap();
        solo.run_until(Duration::from_secs(1), |n| {
            n.s.readiness(client).unwrap().readable
        });
        assert_eq!(take(&mut solo.s, client), Some((big, at)));
        solo.s.close(server).unwrap();
        solo.s.close(client).unwrap();
    }
}

#[test]
fn dual_stack_udp_over_loopback_sees_mapped_source() {
    let mut solo = Solo::new();
    let server = solo.s.socket(Domain::Ipv6, Protocol::Udp).unwrap();
    solo.s
        .bind(server, sa(Ipv6Addr::UNSPECIFIED, 5300))
        .unwrap();
    let client = solo.s.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    solo.s
        .send_to(client, b"v4", sa(Ipv4Addr::LOCALHOST, 5300))
        .unwrap();
    let port = solo.s.local_addr(client).unwrap().port();
    solo.run_until(Duration::from_secs(1), |n| {
        n.s.readiness(server).unwrap().readable
    });
    let mapped = SocketAddr::V6(SocketAddrV6::new(
        Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
        port,
        0,
        0,
    ));
    assert_eq!(take(&mut solo.s, server), Some((b"v4".to_vec(), mapped)));
}

#[test]
fn connect_to_own_ethernet_address_goes_over_loopback() {
    // Every frame put on the cable is lost: only loopback can carry this.
    let imp = Impairments {
        loss_ppm: 1_000_000,
        ..Impairments::default()
    };
    let mut net = Net::with(1500, Duration::from_micros(50), imp, StackConfig::default());
    let l = net.a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    net.a.bind(l, sa(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    net.a.listen(l, 8).unwrap();
    let c = net.a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    assert_eq!(net.a.connect(c, sa(A4, 80)), Err(NetError::InProgress));
    let mut server = None;
    net.run_until(Duration::from_secs(5), |n| {
        if server.is_none() {
            server = n.a.accept(l).ok();
        }
        server.is_some() && n.a.connect(c, sa(A4, 80)).is_ok()
    });
    let (s, peer) = server.unwrap();
    let local = net.a.local_addr(c).unwrap();
    assert_eq!(local.ip(), A4, "the source is the address connected to");
    assert_eq!(peer, local);
    assert_eq!(net.a.local_addr(s), Ok(sa(A4, 80)));
    net.a.send(c, b"to myself").unwrap();
    net.run_until(Duration::from_secs(1), |n| n.a.recv_queue(s) == Ok(9));
    let mut buf = [0u8; 16];
    assert_eq!(net.a.recv(s, &mut buf, NONE), Ok(9));
    assert_eq!(&buf[..9], b"to myself");

    // UDP and IPv6 too.
    let u = net.a.socket(Domain::Ipv6, Protocol::Udp).unwrap();
    net.a.bind(u, sa(A6, 5000)).unwrap();
    let v = net.a.socket(Domain::Ipv6, Protocol::Udp).unwrap();
    net.a.send_to(v, b"self6", sa(A6, 5000)).unwrap();
    let port = net.a.local_addr(v).unwrap().port();
    net.run_until(Duration::from_secs(1), |n| {
        n.a.readiness(u).unwrap().readable
    });
    assert_eq!(take(&mut net.a, u), Some((b"self6".to_vec(), sa(A6, port))));
}

#[test]
fn connect_to_closed_loopback_port_is_refused() {
    let mut solo = Solo::new();
    for to in [sa(Ipv4Addr::LOCALHOST, 81), sa(Ipv6Addr::LOCALHOST, 81)] {
        let c = solo.s.socket(domain_of(to), Protocol::Tcp).unwrap();
        assert_eq!(solo.s.connect(c, to), Err(NetError::InProgress));
        solo.run_until(Duration::from_secs(1), |n| n.s.readiness(c).unwrap().error);
        // As Linux polls a refused connect: IN, OUT, RDHUP, HUP and ERR.
        let r = solo.s.readiness(c).unwrap();
        assert!(
            r.readable && r.writable && r.read_hangup && r.hangup && r.error,
            "{r:?}"
        );
        assert_eq!(solo.s.connect(c, to), Err(NetError::ConnectionRefused));
        assert!(
            !solo.s.readiness(c).unwrap().error,
            "the error is reported once"
        );
    }
}

#[test]
fn udp_to_a_closed_loopback_port_is_dropped() {
    let mut solo = Solo::new();
    let c = solo.s.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    solo.s
        .send_to(c, b"void", sa(Ipv4Addr::LOCALHOST, 9999))
        .unwrap();
    solo.run_for(Duration::from_millis(100));
    let late = solo.s.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    solo.s.bind(late, sa(Ipv4Addr::LOCALHOST, 9999)).unwrap();
    solo.run_for(Duration::from_millis(100));
    assert_eq!(take(&mut solo.s, late), None);
    assert_eq!(take(&mut solo.s, c), None);
    assert_eq!(solo.s.take_error(c), Ok(None));
}

#[test]
fn all_of_127_0_0_0_8_is_local() {
    // Linux routes the whole 127.0.0.0/8 to lo; an unbound sender's source is 127.0.0.1.
    let mut solo = Solo::new();
    let at = sa(Ipv4Addr::new(127, 1, 2, 3), 5000);
    let server = solo.s.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    solo.s.bind(server, at).unwrap();
    let client = solo.s.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    solo.s.send_to(client, b"far end of lo", at).unwrap();
    let port = solo.s.local_addr(client).unwrap().port();
    solo.run_for(Duration::from_millis(50));
    assert_eq!(
        take(&mut solo.s, server),
        Some((b"far end of lo".to_vec(), sa(Ipv4Addr::LOCALHOST, port)))
    );
    solo.s
        .send_to(server, b"back", sa(Ipv4Addr::LOCALHOST, port))
        .unwrap();
    solo.run_for(Duration::from_millis(50));
    assert_eq!(take(&mut solo.s, client), Some((b"back".to_vec(), at)));

    let l = solo.s.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    solo.s.bind(l, sa(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    solo.s.listen(l, 8).unwrap();
    let c = solo.s.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    let to = sa(Ipv4Addr::new(127, 0, 0, 53), 80);
    assert_eq!(solo.s.connect(c, to), Err(NetError::InProgress));
    solo.run_for(Duration::from_millis(50));
    assert_eq!(solo.s.connect(c, to), Ok(()));
    let (_s, peer) = solo.s.accept(l).unwrap();
    assert_eq!(peer, solo.s.local_addr(c).unwrap());
}
