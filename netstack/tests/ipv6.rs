//! IPv6, and IPv6 sockets meeting IPv4: TCP and UDP over IPv6, dual-stack
//! sockets with IPv4-mapped addresses, `IPV6_V6ONLY`, and family checks.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use common::*;
use netstack::{Domain, Duration, NetError, Protocol, SockOpt, SockOptName, SocketId, Stack};

fn mapped(v4: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(v4.to_ipv6_mapped(), port, 0, 0))
}

/// Sends `data` from `a`'s `c` to `b`'s `s` and reads it back out, in order.
fn stream_a_to_b(net: &mut Net, c: SocketId, s: SocketId, data: &[u8]) {
    let mut sent = 0;
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 << 10];
    net.run_until(Duration::from_secs(30), |n| {
        if sent < data.len() {
            match n.a.send(c, &data[sent..]) {
                Ok(k) => sent += k,
                Err(NetError::WouldBlock) => {}
                Err(e) => panic!("send: {e:?}"),
            }
        }
        let eof = read_ready(&mut n.b, s, &mut buf, |d| got.extend_from_slice(d));
        assert!(!eof, "unexpected end of stream");
        got.len() == data.len()
    });
    assert!(got == data, "stream corrupted");
}

#[test]
fn tcp_over_ipv6() {
    let mut net = Net::new();
    let l = listen_on(&mut net.b, sa(B6, 80), 16);
    let (c, s) = connect_pair(&mut net, l, sa(B6, 80));
    assert_eq!(net.a.peer_addr(c), Ok(sa(B6, 80)));
    let local = net.a.local_addr(c).unwrap();
    assert_eq!(local.ip(), A6);
    assert!((32768..=60999).contains(&local.port()));
    assert_eq!(net.b.local_addr(s), Ok(sa(B6, 80)));
    assert_eq!(net.b.peer_addr(s), Ok(local));

    let data = tagged_bytes(6, 300_000);
    stream_a_to_b(&mut net, c, s, &data);
    // And back.
    deliver(&mut net, side_b, s, side_a, c, b"reply over v6");
}

#[test]
fn udp_over_ipv6() {
    let mut net = Net::new();
    let server = udp_socket(&mut net.b, Some(sa(B6, 5000)));
    let client = net.a.socket(Domain::Ipv6, Protocol::Udp).unwrap();
    assert_eq!(net.a.send_to(client, b"hello v6", sa(B6, 5000)), Ok(8));
    let local = net.a.local_addr(client).unwrap();
    assert_eq!(local.ip(), Ipv6Addr::UNSPECIFIED);
    assert!((32768..=60999).contains(&local.port()));
    wait_b(&mut net, server);
    let (data, from) = take(&mut net.b, server).unwrap();
    assert_eq!(data, b"hello v6");
    assert_eq!(from, sa(A6, local.port()));

    // A datagram larger than the MTU, each way (IPv6 fragment headers).
    let big = tagged_bytes(66, 8000);
    net.b.send_to(server, &big, from).unwrap();
    wait_a(&mut net, client);
    expect_datagram(&mut net.a, client, &big, sa(B6, 5000));
    net.a.send_to(client, &big, sa(B6, 5000)).unwrap();
    wait_b(&mut net, server);
    expect_datagram(&mut net.b, server, &big, from);
}

#[test]
fn largest_ipv6_udp_datagram() {
    let mut net = Net::new();
    let server = udp_socket(&mut net.b, Some(sa(B6, 5000)));
    let client = udp_socket(&mut net.a, Some(sa(A6, 4000)));
    assert_eq!(
        net.a.send_to(client, &vec![0; 65528], sa(B6, 5000)),
        Err(NetError::MessageTooLong)
    );
    // A dual-stack socket sending to an IPv4 peer has the IPv4 limit.
    assert_eq!(
        net.a.send_to(client, &vec![0; 65508], mapped(B4, 5000)),
        Err(NetError::MessageTooLong)
    );
    let big = tagged_bytes(65527, 65527);
    assert_eq!(net.a.send_to(client, &big, sa(B6, 5000)), Ok(65527));
    wait_b(&mut net, server);
    expect_datagram(&mut net.b, server, &big, sa(A6, 4000));
}

#[test]
fn dual_stack_listener_accepts_ipv4_with_mapped_peer() {
    let mut net = Net::new();
    let l = listen_on(&mut net.b, sa(Ipv6Addr::UNSPECIFIED, 80), 16);
    assert_eq!(
        net.b.option(l, SockOptName::V6Only),
        Ok(SockOpt::V6Only(false))
    );
    let (c, s, peer) = connect_accept(&mut net, l, sa(B4, 80));
    let client = net.a.local_addr(c).unwrap();
    assert_eq!(client.ip(), A4);
    assert_eq!(peer, mapped(A4, client.port()));
    assert_eq!(net.b.peer_addr(s), Ok(peer));
    assert_eq!(net.b.local_addr(s), Ok(mapped(B4, 80)));
    assert_eq!(net.b.domain(s), Ok(Domain::Ipv6));
    assert_eq!(net.a.peer_addr(c), Ok(sa(B4, 80)));
    stream_a_to_b(&mut net, c, s, &tagged_bytes(4, 50_000));

    // The same listener still takes IPv6 connections.
    let (c6, s6) = connect_pair(&mut net, l, sa(B6, 80));
    assert_eq!(net.b.peer_addr(s6), net.a.local_addr(c6));
}

#[test]
fn v6only_listener_refuses_ipv4() {
    let mut net = Net::new();
    let l = net.b.socket(Domain::Ipv6, Protocol::Tcp).unwrap();
    net.b.set_option(l, SockOpt::V6Only(true)).unwrap();
    net.b.bind(l, sa(Ipv6Addr::UNSPECIFIED, 80)).unwrap();
    net.b.listen(l, 16).unwrap();
    assert_eq!(
        net.b.option(l, SockOptName::V6Only),
        Ok(SockOpt::V6Only(true))
    );
    let c = net.a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    assert_eq!(net.a.connect(c, sa(B4, 80)), Err(NetError::InProgress));
    net.run_until(Duration::from_secs(5), |n| n.a.readiness(c).unwrap().error);
    assert_eq!(
        net.a.connect(c, sa(B4, 80)),
        Err(NetError::ConnectionRefused)
    );
    assert_eq!(net.b.accept(l), Err(NetError::WouldBlock));

    // IPv6 still connects.
    let (c6, _s6) = connect_pair(&mut net, l, sa(B6, 80));
    assert_eq!(net.a.peer_addr(c6), Ok(sa(B6, 80)));
}

#[test]
fn dual_stack_client_connects_to_a_mapped_address() {
    let mut net = Net::new();
    let l = listen_on(&mut net.b, sa(B4, 80), 16);
    // A mapped address makes the client an IPv6 socket.
    let to = mapped(B4, 80);
    let (c, s, peer) = connect_accept(&mut net, l, to);
    assert_eq!(net.a.domain(c), Ok(Domain::Ipv6));
    let local = net.a.local_addr(c).unwrap();
    assert_eq!(local, mapped(A4, peer.port()));
    assert_eq!(peer, sa(A4, local.port()));
    assert_eq!(net.a.peer_addr(c), Ok(to));
    stream_a_to_b(&mut net, c, s, b"mapped");
}

#[test]
fn dual_stack_udp_socket_receives_ipv4_with_mapped_source() {
    let mut net = Net::new();
    let server = udp_socket(&mut net.b, Some(sa(Ipv6Addr::UNSPECIFIED, 5000)));
    let client = udp_socket(&mut net.a, Some(sa(A4, 4000)));
    net.a.send_to(client, b"from v4", sa(B4, 5000)).unwrap();
    wait_b(&mut net, server);
    let (data, from) = take(&mut net.b, server).unwrap();
    assert_eq!(data, b"from v4");
    assert_eq!(from, mapped(A4, 4000));

    // Replying to the mapped address reaches the IPv4 socket.
    net.b.send_to(server, b"to v4", from).unwrap();
    wait_a(&mut net, client);
    expect_datagram(&mut net.a, client, b"to v4", sa(B4, 5000));

    // IPv6 senders reach it too.
    let c6 = udp_socket(&mut net.a, Some(sa(A6, 4006)));
    net.a.send_to(c6, b"from v6", sa(B6, 5000)).unwrap();
    wait_b(&mut net, server);
    expect_datagram(&mut net.b, server, b"from v6", sa(A6, 4006));
}

#[test]
fn v6only_udp_socket_ignores_ipv4_and_refuses_mapped_addresses() {
    let mut net = Net::new();
    let server = net.b.socket(Domain::Ipv6, Protocol::Udp).unwrap();
    net.b.set_option(server, SockOpt::V6Only(true)).unwrap();
    net.b.bind(server, sa(Ipv6Addr::UNSPECIFIED, 5000)).unwrap();
    // Setting it once bound is refused (EINVAL).
    assert_eq!(
        net.b.set_option(server, SockOpt::V6Only(false)),
        Err(NetError::InvalidInput)
    );
    let client = udp_socket(&mut net.a, None);
    net.a.send_to(client, b"v4", sa(B4, 5000)).unwrap();
    net.run_for(Duration::from_millis(100));
    assert_eq!(take(&mut net.b, server), None);
    // ENETUNREACH for a mapped destination, EINVAL for a mapped bind.
    assert_eq!(
        net.b.send_to(server, b"x", mapped(A4, 4000)),
        Err(NetError::NetworkUnreachable)
    );
    let other = net.b.socket(Domain::Ipv6, Protocol::Udp).unwrap();
    net.b.set_option(other, SockOpt::V6Only(true)).unwrap();
    assert_eq!(
        net.b.bind(other, mapped(B4, 5001)),
        Err(NetError::InvalidInput)
    );
}

#[test]
fn ipv4_socket_rejects_ipv6_addresses() {
    let mut net = Net::new();
    let u = net.a.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    assert_eq!(
        net.a.bind(u, sa(A6, 4000)),
        Err(NetError::AddrFamilyNotSupported)
    );
    assert_eq!(
        net.a.send_to(u, b"x", sa(B6, 5000)),
        Err(NetError::AddrFamilyNotSupported)
    );
    assert_eq!(
        net.a.connect(u, sa(B6, 5000)),
        Err(NetError::AddrFamilyNotSupported)
    );
    // Even the mapped form of an IPv4 address is the wrong family.
    assert_eq!(
        net.a.send_to(u, b"x", mapped(B4, 5000)),
        Err(NetError::AddrFamilyNotSupported)
    );
    let t = net.a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    assert_eq!(
        net.a.bind(t, sa(Ipv6Addr::UNSPECIFIED, 80)),
        Err(NetError::AddrFamilyNotSupported)
    );
    assert_eq!(
        net.a.connect(t, sa(B6, 80)),
        Err(NetError::AddrFamilyNotSupported)
    );
    // IPV6_V6ONLY is not an option of IPv4 sockets.
    assert_eq!(
        net.a.set_option(t, SockOpt::V6Only(true)),
        Err(NetError::NoProtocolOption)
    );
    // Still usable with the right family.
    assert_eq!(net.a.bind(u, sa(A4, 4000)), Ok(()));
    assert_eq!(net.a.local_addr(u), Ok(sa(A4, 4000)));
}

fn bind_pair(
    s: &mut Stack,
    proto: Protocol,
    v6only: bool,
    v6_first: bool,
    port: u16,
) -> (netstack::Result<()>, SocketId, SocketId) {
    let s6 = s.socket(Domain::Ipv6, proto).unwrap();
    s.set_option(s6, SockOpt::V6Only(v6only)).unwrap();
    let s4 = s.socket(Domain::Ipv4, proto).unwrap();
    let any6 = sa(Ipv6Addr::UNSPECIFIED, port);
    let any4 = sa(Ipv4Addr::UNSPECIFIED, port);
    let second = if v6_first {
        s.bind(s6, any6).unwrap();
        s.bind(s4, any4)
    } else {
        s.bind(s4, any4).unwrap();
        s.bind(s6, any6)
    };
    (second, s6, s4)
}

/// Each protocol and bind order for [`bind_pair`], with ports from `base + 1` on.
fn bind_cases(base: u16) -> impl Iterator<Item = (Protocol, bool, u16)> {
    [Protocol::Udp, Protocol::Tcp]
        .into_iter()
        .flat_map(|proto| [(proto, true), (proto, false)])
        .zip(base + 1..)
        .map(|((proto, v6_first), port)| (proto, v6_first, port))
}

#[test]
fn dual_stack_wildcard_conflicts_with_ipv4_wildcard() {
    let mut net = Net::new();
    for (proto, v6_first, port) in bind_cases(7000) {
        let (r, s6, s4) = bind_pair(&mut net.b, proto, false, v6_first, port);
        assert_eq!(
            r,
            Err(NetError::AddrInUse),
            "{proto:?}, v6 bound first: {v6_first}"
        );
        net.b.close(s6).unwrap();
        net.b.close(s4).unwrap();
    }
}

#[test]
fn v6only_wildcard_coexists_with_ipv4_wildcard() {
    let mut net = Net::new();
    for (proto, v6_first, port) in bind_cases(7100) {
        let (r, _s6, _s4) = bind_pair(&mut net.b, proto, true, v6_first, port);
        assert_eq!(r, Ok(()), "{proto:?}, v6 bound first: {v6_first}");
    }

    // Each family's UDP datagrams go to its own socket.
    let (r, s6, s4) = bind_pair(&mut net.b, Protocol::Udp, true, true, 7200);
    r.unwrap();
    let c4 = net.a.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    let c6 = net.a.socket(Domain::Ipv6, Protocol::Udp).unwrap();
    net.a.send_to(c4, b"four", sa(B4, 7200)).unwrap();
    net.a.send_to(c6, b"six", sa(B6, 7200)).unwrap();
    net.run_until(Duration::from_secs(2), |n| {
        n.b.readiness(s4).unwrap().readable && n.b.readiness(s6).unwrap().readable
    });
    assert_eq!(take(&mut net.b, s4).unwrap().0, b"four");
    assert_eq!(take(&mut net.b, s6).unwrap().0, b"six");
    assert_eq!(take(&mut net.b, s4), None);
    assert_eq!(take(&mut net.b, s6), None);
}

/// A link whose received frames the test writes by hand.
struct Injector {
    rx: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Vec<u8>>>>,
}

impl netstack::Link for Injector {
    fn caps(&self) -> netstack::link::LinkCaps {
        netstack::link::LinkCaps {
            medium: netstack::link::Medium::Ethernet,
            mtu: 1500,
            checksum_offload: false,
        }
    }
    fn recv(&mut self, _now: netstack::Instant) -> Option<Vec<u8>> {
        self.rx.lock().unwrap().pop_front()
    }
    fn send(&mut self, _now: netstack::Instant, _frame: Vec<u8>) {}
}

fn csum_add(sum: &mut u32, data: &[u8]) {
    for c in data.chunks(2) {
        *sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
}

/// Ethernet frames carrying one UDP datagram from [fd00::1]:4000 to
/// [fd00::2]:5000: as IPv6 fragments of at most `chunk` bytes (a multiple
/// of 8), or whole without a fragment header when `chunk` is `None`.
fn v6_udp_frames(payload: &[u8], chunk: Option<usize>, ident: u32) -> Vec<Vec<u8>> {
    let mut udp = Vec::with_capacity(payload.len() + 8);
    udp.extend_from_slice(&4000u16.to_be_bytes());
    udp.extend_from_slice(&5000u16.to_be_bytes());
    udp.extend_from_slice(&(payload.len() as u16 + 8).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut sum = 0u32;
    csum_add(&mut sum, &A6.octets());
    csum_add(&mut sum, &B6.octets());
    csum_add(&mut sum, &(udp.len() as u32).to_be_bytes());
    csum_add(&mut sum, &[0, 0, 0, 17]);
    csum_add(&mut sum, &udp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());

    let eth_ip = |payload_len: usize, next: u8| {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(payload_len as u16).to_be_bytes());
        f.extend_from_slice(&[next, 64]);
        f.extend_from_slice(&A6.octets());
        f.extend_from_slice(&B6.octets());
        f
    };
    let Some(chunk) = chunk else {
        let mut f = eth_ip(udp.len(), 17);
        f.extend_from_slice(&udp);
        return vec![f];
    };
    let mut frames = Vec::new();
    for (i, part) in udp.chunks(chunk).enumerate() {
        let offset = i * chunk;
        let more = offset + part.len() < udp.len();
        let mut f = eth_ip(part.len() + 8, 44);
        f.extend_from_slice(&[17, 0]);
        f.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
        f.extend_from_slice(&ident.to_be_bytes());
        f.extend_from_slice(part);
        frames.push(f);
    }
    frames
}

#[test]
fn incoming_ipv6_fragments_are_reassembled() {
    let rx = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let mut now = netstack::Instant::from_secs(1);
    let mut b = Stack::new(netstack::StackConfig::default(), now);
    b.add_nic(
        Box::new(Injector { rx: rx.clone() }),
        netstack::NicConfig {
            name: "eth0".into(),
            mac: [2, 0, 0, 0, 0, 2],
            addrs: vec![netstack::IfAddr {
                addr: B6.into(),
                prefix_len: 64,
            }],
            gateway_v4: None,
            gateway_v6: None,
        },
    )
    .unwrap();
    let server = b.socket(Domain::Ipv6, Protocol::Udp).unwrap();
    b.bind(server, sa(B6, 5000)).unwrap();

    // The frames are well formed: the same datagram, small and whole, arrives.
    let small = tagged_bytes(1, 1000);
    rx.lock().unwrap().extend(v6_udp_frames(&small, None, 0));
    now += Duration::from_millis(1);
    b.poll(now);
    expect_datagram(&mut b, server, &small, sa(A6, 4000));

    for (round, size) in [3000usize, 8000, 65527].into_iter().enumerate() {
        let payload = tagged_bytes(size as u32, size);
        let mut frames = v6_udp_frames(&payload, Some(1448), 77 + round as u32);
        if round == 1 {
            // Out of order: the last fragment first, the first one last.
            frames.reverse();
        }
        rx.lock().unwrap().extend(frames);
        now += Duration::from_millis(1);
        b.poll(now);
        let got = take(&mut b, server);
        assert!(
            got.as_ref()
                .is_some_and(|(d, from)| *d == payload && *from == sa(A6, 4000)),
            "{size}-byte datagram in IPv6 fragments: {:?}",
            got.map(|(d, from)| (d.len(), from))
        );
    }
}
