//! Traffic a stack sends to itself: over `lo` (127.0.0.0/8, ::1), and to its
//! own Ethernet addresses, which Linux also routes through loopback.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use common::*;
use netstack::link::Impairments;
use netstack::{Domain, Duration, IfAddr, LOOPBACK, NetError, Protocol, Shutdown, SocketId};
use sha2::{Digest, Sha256};

/// A listener at `at` and a connected (client, server) pair, all in `solo`.
fn tcp_pair(solo: &mut Solo, at: SocketAddr) -> (SocketId, SocketId, SocketId) {
    let l = listen_on(&mut solo.s, at, 8);
    let (c, s, peer) = connect_between(
        solo,
        Solo::stack,
        Solo::stack,
        l,
        at,
        Duration::from_secs(5),
    );
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

/// A request from `c` to `s` and a response back.
fn exchange(solo: &mut Solo, c: SocketId, s: SocketId) {
    deliver(solo, Solo::stack, c, Solo::stack, s, b"request");
    deliver(solo, Solo::stack, s, Solo::stack, c, b"response");
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
    assert_eq!(nics[0].mtu, 65536, "lo's MTU as `ip link` shows it");
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
        read_ready(&mut n.s, s, &mut buf, |d| {
            hash.update(d);
            got += d.len();
        })
    });
    assert_eq!(got, TOTAL);
    assert_eq!(hash.finalize(), want, "SHA-256 of the received stream");
    assert!(solo.s.readiness(s).unwrap().read_hangup);
}

#[test]
fn udp_over_127_0_0_1_and_ipv6_loopback() {
    let mut solo = Solo::new();
    for at in [sa(Ipv4Addr::LOCALHOST, 5000), sa(Ipv6Addr::LOCALHOST, 5000)] {
        let server = udp_socket(&mut solo.s, Some(at));
        let client = solo.s.socket(domain_of(at), Protocol::Udp).unwrap();
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
        expect_datagram(&mut solo.s, client, &big, at);
        solo.s.close(server).unwrap();
        solo.s.close(client).unwrap();
    }
}

#[test]
fn dual_stack_udp_over_loopback_sees_mapped_source() {
    let mut solo = Solo::new();
    let server = udp_socket(&mut solo.s, Some(sa(Ipv6Addr::UNSPECIFIED, 5300)));
    let client = udp_socket(&mut solo.s, None);
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
    expect_datagram(&mut solo.s, server, b"v4", mapped);
}

#[test]
fn connect_to_own_ethernet_address_goes_over_loopback() {
    // Every frame put on the cable is lost: only loopback can carry this.
    let imp = Impairments {
        loss_ppm: 1_000_000,
        ..Impairments::default()
    };
    let mut net = Net::impaired(imp);
    let l = listen_on(&mut net.a, sa(Ipv4Addr::UNSPECIFIED, 80), 8);
    let (c, s, peer) = connect_between(
        &mut net,
        side_a,
        side_a,
        l,
        sa(A4, 80),
        Duration::from_secs(5),
    );
    let local = net.a.local_addr(c).unwrap();
    assert_eq!(local.ip(), A4, "the source is the address connected to");
    assert_eq!(peer, local);
    assert_eq!(net.a.local_addr(s), Ok(sa(A4, 80)));
    deliver(&mut net, side_a, c, side_a, s, b"to myself");

    // UDP and IPv6 too.
    let u = udp_socket(&mut net.a, Some(sa(A6, 5000)));
    let v = net.a.socket(Domain::Ipv6, Protocol::Udp).unwrap();
    net.a.send_to(v, b"self6", sa(A6, 5000)).unwrap();
    let port = net.a.local_addr(v).unwrap().port();
    net.run_until(Duration::from_secs(1), |n| {
        n.a.readiness(u).unwrap().readable
    });
    expect_datagram(&mut net.a, u, b"self6", sa(A6, port));
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
    let c = udp_socket(&mut solo.s, None);
    solo.s
        .send_to(c, b"void", sa(Ipv4Addr::LOCALHOST, 9999))
        .unwrap();
    solo.run_for(Duration::from_millis(100));
    let late = udp_socket(&mut solo.s, Some(sa(Ipv4Addr::LOCALHOST, 9999)));
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
    let server = udp_socket(&mut solo.s, Some(at));
    let client = udp_socket(&mut solo.s, None);
    solo.s.send_to(client, b"far end of lo", at).unwrap();
    let port = solo.s.local_addr(client).unwrap().port();
    solo.run_for(Duration::from_millis(50));
    expect_datagram(
        &mut solo.s,
        server,
        b"far end of lo",
        sa(Ipv4Addr::LOCALHOST, port),
    );
    solo.s
        .send_to(server, b"back", sa(Ipv4Addr::LOCALHOST, port))
        .unwrap();
    solo.run_for(Duration::from_millis(50));
    expect_datagram(&mut solo.s, client, b"back", at);

    let l = listen_on(&mut solo.s, sa(Ipv4Addr::UNSPECIFIED, 80), 8);
    let c = solo.s.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    let to = sa(Ipv4Addr::new(127, 0, 0, 53), 80);
    assert_eq!(solo.s.connect(c, to), Err(NetError::InProgress));
    solo.run_for(Duration::from_millis(50));
    assert_eq!(solo.s.connect(c, to), Ok(()));
    let (_s, peer) = solo.s.accept(l).unwrap();
    assert_eq!(peer, solo.s.local_addr(c).unwrap());
}

/// The largest datagrams of each family cross lo, whose MTU (65536) is
/// still smaller than an IPv6 packet carrying 65527 bytes of UDP payload:
/// that one goes in IPv6 fragments.
#[test]
fn largest_datagrams_cross_loopback() {
    let mut solo = Solo::new();
    for (at, len) in [
        (sa(Ipv4Addr::LOCALHOST, 5001), 65_507),
        (sa(Ipv6Addr::LOCALHOST, 5001), 65_527),
    ] {
        let server = udp_socket(&mut solo.s, Some(at));
        let client = solo.s.socket(domain_of(at), Protocol::Udp).unwrap();
        let big = tagged_bytes(9, len);
        assert_eq!(solo.s.send_to(client, &big, at), Ok(len));
        let from = solo.s.local_addr(client).unwrap();
        solo.run_until(Duration::from_secs(1), |n| {
            n.s.readiness(server).unwrap().readable
        });
        expect_datagram(
            &mut solo.s,
            server,
            &big,
            SocketAddr::new(at.ip(), from.port()),
        );
        solo.s.close(server).unwrap();
        solo.s.close(client).unwrap();
    }
}
