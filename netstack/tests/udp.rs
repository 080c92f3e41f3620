//! UDP between two stacks over an in-memory cable, on a simulated clock:
//! addressing, autobind, truncation, connect filtering, fragmentation,
//! broadcast and errors, all as Linux behaves.

mod common;

use std::net::Ipv4Addr;

use common::*;
use netstack::{
    Datagram, Domain, Duration, IpMarks, NetError, Protocol, SockOpt, SockOptName, SocketId,
};

/// The IP marks of a datagram sent with the default hop limit and class.
const SENT_AS_IS: IpMarks = IpMarks {
    hop_limit: Some(64),
    class: Some(0),
};

/// A server socket on `b` bound to 10.0.0.2:5000 and a client on `a` bound
/// to 10.0.0.1:4000, as (server, client).
fn udp_pair(net: &mut Net) -> (SocketId, SocketId) {
    let server = udp_socket(&mut net.b, Some(sa(B4, 5000)));
    let client = udp_socket(&mut net.a, Some(sa(A4, 4000)));
    (server, client)
}

#[test]
fn sendto_recvfrom_reports_source_addresses() {
    let mut net = Net::new();
    let server = udp_socket(&mut net.b, Some(sa(Ipv4Addr::UNSPECIFIED, 5000)));
    let client = udp_socket(&mut net.a, Some(sa(A4, 4000)));
    assert_eq!(net.a.local_addr(client).unwrap(), sa(A4, 4000));
    assert_eq!(
        net.b.local_addr(server).unwrap(),
        sa(Ipv4Addr::UNSPECIFIED, 5000)
    );

    let mut buf = [0u8; 64];
    assert_eq!(
        net.b.recv_from(server, &mut buf, NONE),
        Err(NetError::WouldBlock)
    );
    let r = net.b.readiness(server).unwrap();
    assert!(!r.readable && r.writable && !r.error && !r.hangup);

    assert_eq!(net.a.send_to(client, b"ping", sa(B4, 5000)), Ok(4));
    wait_b(&mut net, server);
    assert_eq!(net.b.recv_queue(server), Ok(4));
    let d = net.b.recv_from(server, &mut buf, NONE).unwrap();
    assert_eq!(
        d,
        Datagram {
            copied: 4,
            len: 4,
            from: sa(A4, 4000),
            to: Some(std::net::IpAddr::V4(B4)),
            marks: SENT_AS_IS,
        }
    );
    assert_eq!(&buf[..4], b"ping");
    assert!(!net.b.readiness(server).unwrap().readable);

    // The reply goes back to where the request came from.
    assert_eq!(net.b.send_to(server, b"pong!", d.from), Ok(5));
    wait_a(&mut net, client);
    expect_datagram(&mut net.a, client, b"pong!", sa(B4, 5000));
    assert_eq!(take(&mut net.a, client), None);
}

#[test]
fn first_sendto_autobinds_an_ephemeral_port() {
    let mut net = Net::new();
    let server = udp_socket(&mut net.b, Some(sa(B4, 5000)));
    let client = udp_socket(&mut net.a, None);
    assert_eq!(
        net.a.local_addr(client).unwrap(),
        sa(Ipv4Addr::UNSPECIFIED, 0)
    );
    net.a.send_to(client, b"x", sa(B4, 5000)).unwrap();
    let local = net.a.local_addr(client).unwrap();
    assert_eq!(
        local.ip(),
        Ipv4Addr::UNSPECIFIED,
        "unconnected: wildcard address"
    );
    assert!(
        (32768..=60999).contains(&local.port()),
        "ephemeral port {} outside 32768-60999",
        local.port()
    );
    wait_b(&mut net, server);
    let (data, from) = take(&mut net.b, server).unwrap();
    assert_eq!(data, b"x");
    assert_eq!(from, sa(A4, local.port()));
    // The port stays: a second datagram leaves from it too.
    net.a.send_to(client, b"y", sa(B4, 5000)).unwrap();
    assert_eq!(net.a.local_addr(client).unwrap(), local);
    wait_b(&mut net, server);
    expect_datagram(&mut net.b, server, b"y", from);
}

#[test]
fn truncated_datagram_reports_full_length_and_discards_the_rest() {
    let mut net = Net::new();
    let (server, client) = udp_pair(&mut net);
    let big = tagged_bytes(1, 100);
    net.a.send_to(client, &big, sa(B4, 5000)).unwrap();
    net.a.send_to(client, b"next", sa(B4, 5000)).unwrap();
    net.run_until(Duration::from_secs(1), |n| {
        n.b.recv_queue(server) == Ok(100)
    });
    net.run_for(Duration::from_millis(10));

    let mut small = [0u8; 10];
    let d = net.b.recv_from(server, &mut small, NONE).unwrap();
    assert_eq!(
        d,
        Datagram {
            copied: 10,
            len: 100,
            from: sa(A4, 4000),
            to: Some(std::net::IpAddr::V4(B4)),
            marks: SENT_AS_IS,
        }
    );
    assert_eq!(small[..], big[..10]);
    // The other 90 bytes are gone: the next read is the next datagram.
    assert_eq!(net.b.recv_queue(server), Ok(4));
    let mut buf = [0u8; 100];
    let d = net.b.recv_from(server, &mut buf, NONE).unwrap();
    assert_eq!((d.copied, d.len), (4, 4));
    assert_eq!(&buf[..4], b"next");
    assert_eq!(
        net.b.recv_from(server, &mut buf, NONE),
        Err(NetError::WouldBlock)
    );
}

#[test]
fn peek_leaves_the_datagram_queued() {
    let mut net = Net::new();
    let (server, client) = udp_pair(&mut net);
    net.a
        .send_to(client, b"first datagram", sa(B4, 5000))
        .unwrap();
    net.a.send_to(client, b"second", sa(B4, 5000)).unwrap();
    net.run_until(Duration::from_secs(1), |n| {
        n.b.readiness(server).unwrap().readable
    });
    net.run_for(Duration::from_millis(10));

    let mut buf = [0u8; 5];
    for _ in 0..2 {
        let d = net.b.recv_from(server, &mut buf, PEEK).unwrap();
        assert_eq!(
            d,
            Datagram {
                copied: 5,
                len: 14,
                from: sa(A4, 4000),
                to: Some(std::net::IpAddr::V4(B4)),
                marks: SENT_AS_IS,
            }
        );
        assert_eq!(&buf, b"first");
        assert!(net.b.readiness(server).unwrap().readable);
    }
    let mut full = [0u8; 64];
    let d = net.b.recv_from(server, &mut full, NONE).unwrap();
    assert_eq!((d.copied, d.len), (14, 14));
    assert_eq!(&full[..14], b"first datagram");
    assert_eq!(net.b.recv(server, &mut full, PEEK), Ok(6));
    assert_eq!(net.b.recv(server, &mut full, NONE), Ok(6));
    assert_eq!(&full[..6], b"second");
    assert_eq!(
        net.b.recv(server, &mut full, PEEK),
        Err(NetError::WouldBlock)
    );
}

#[test]
fn datagram_boundaries_are_preserved() {
    let mut net = Net::new();
    let (server, client) = udp_pair(&mut net);
    let sizes = [1usize, 300, 2, 1472, 7];
    for (i, &n) in sizes.iter().enumerate() {
        let d = tagged_bytes(i as u32, n);
        assert_eq!(net.a.send_to(client, &d, sa(B4, 5000)), Ok(n));
    }
    let mut got = Vec::new();
    net.run_until(Duration::from_secs(2), |n| {
        while let Some((d, _)) = take(&mut n.b, server) {
            got.push(d);
        }
        got.len() == sizes.len()
    });
    for (i, &n) in sizes.iter().enumerate() {
        assert_eq!(got[i], tagged_bytes(i as u32, n), "datagram {i}");
    }
}

#[test]
fn zero_length_datagram_is_delivered() {
    let mut net = Net::new();
    let (server, client) = udp_pair(&mut net);
    assert_eq!(net.a.send_to(client, b"", sa(B4, 5000)), Ok(0));
    net.a.send_to(client, b"after", sa(B4, 5000)).unwrap();
    wait_b(&mut net, server);
    let mut buf = [0u8; 16];
    let d = net.b.recv_from(server, &mut buf, NONE).unwrap();
    assert_eq!(
        d,
        Datagram {
            copied: 0,
            len: 0,
            from: sa(A4, 4000),
            to: Some(std::net::IpAddr::V4(B4)),
            marks: SENT_AS_IS,
        }
    );
    net.run_until(Duration::from_secs(1), |n| {
        n.b.readiness(server).unwrap().readable
    });
    assert_eq!(net.b.recv(server, &mut buf, NONE), Ok(5));
}

#[test]
fn connected_socket_filters_sources_and_sends_to_its_peer() {
    let mut net = Net::new();
    let s = udp_socket(&mut net.b, Some(sa(Ipv4Addr::UNSPECIFIED, 5000)));
    let x = udp_socket(&mut net.a, Some(sa(A4, 4000)));
    let y = udp_socket(&mut net.a, Some(sa(A4, 4001)));
    net.b.connect(s, sa(A4, 4000)).unwrap();
    assert_eq!(net.b.peer_addr(s), Ok(sa(A4, 4000)));
    // getsockname shows the source address chosen by connect.
    assert_eq!(net.b.local_addr(s), Ok(sa(B4, 5000)));

    // From the wrong port: ignored.
    net.a.send_to(y, b"intruder", sa(B4, 5000)).unwrap();
    net.run_for(Duration::from_millis(50));
    assert!(!net.b.readiness(s).unwrap().readable);
    let mut buf = [0u8; 32];
    assert_eq!(net.b.recv(s, &mut buf, NONE), Err(NetError::WouldBlock));

    // From the peer: delivered.
    net.a.send_to(x, b"peer", sa(B4, 5000)).unwrap();
    wait_b(&mut net, s);
    expect_datagram(&mut net.b, s, b"peer", sa(A4, 4000));

    // send without an address goes to the peer.
    assert_eq!(net.b.send(s, b"to peer"), Ok(7));
    wait_a(&mut net, x);
    expect_datagram(&mut net.a, x, b"to peer", sa(B4, 5000));

    // Linux lets a connected UDP socket still sendto another address.
    assert_eq!(net.b.send_to(s, b"explicit", sa(A4, 4001)), Ok(8));
    wait_a(&mut net, y);
    expect_datagram(&mut net.a, y, b"explicit", sa(B4, 5000));
    assert_eq!(take(&mut net.a, x), None);
}

#[test]
fn send_without_peer_or_address_needs_a_destination() {
    let mut net = Net::new();
    let s = udp_socket(&mut net.a, None);
    assert_eq!(net.a.send(s, b"where?"), Err(NetError::DestinationRequired));
    let s = udp_socket(&mut net.a, Some(sa(A4, 4000)));
    assert_eq!(net.a.send(s, b"where?"), Err(NetError::DestinationRequired));
    assert_eq!(net.a.peer_addr(s), Err(NetError::NotConnected));
}

#[test]
fn disconnect_dissolves_the_association() {
    let mut net = Net::new();
    let s = udp_socket(&mut net.b, Some(sa(Ipv4Addr::UNSPECIFIED, 5000)));
    let x = udp_socket(&mut net.a, Some(sa(A4, 4000)));
    let y = udp_socket(&mut net.a, Some(sa(A4, 4001)));
    net.b.connect(s, sa(A4, 4000)).unwrap();
    net.b.disconnect(s).unwrap();
    assert_eq!(net.b.peer_addr(s), Err(NetError::NotConnected));
    assert_eq!(net.b.send(s, b"?"), Err(NetError::DestinationRequired));
    // An explicitly bound port stays; the address chosen by connect goes.
    assert_eq!(net.b.local_addr(s), Ok(sa(Ipv4Addr::UNSPECIFIED, 5000)));

    // Any source is accepted again.
    net.a.send_to(y, b"from y", sa(B4, 5000)).unwrap();
    wait_b(&mut net, s);
    expect_datagram(&mut net.b, s, b"from y", sa(A4, 4001));
    net.a.send_to(x, b"from x", sa(B4, 5000)).unwrap();
    wait_b(&mut net, s);
    expect_datagram(&mut net.b, s, b"from x", sa(A4, 4000));

    // And the socket can connect again, elsewhere.
    net.b.connect(s, sa(A4, 4001)).unwrap();
    assert_eq!(net.b.peer_addr(s), Ok(sa(A4, 4001)));
    net.b.send(s, b"again").unwrap();
    wait_a(&mut net, y);
    expect_datagram(&mut net.a, y, b"again", sa(B4, 5000));
}

#[test]
fn disconnect_releases_a_port_bound_by_connect() {
    // Linux (udp_disconnect): a port the socket did not bind explicitly is
    // unhashed on disconnect, and getsockname shows 0.0.0.0:0 again.
    let mut net = Net::new();
    let s = udp_socket(&mut net.a, None);
    net.a.connect(s, sa(B4, 5000)).unwrap();
    let local = net.a.local_addr(s).unwrap();
    assert_eq!(local.ip(), A4);
    assert!((32768..=60999).contains(&local.port()));
    net.a.disconnect(s).unwrap();
    assert_eq!(net.a.local_addr(s), Ok(sa(Ipv4Addr::UNSPECIFIED, 0)));
    // The port is free for others.
    let other = udp_socket(&mut net.a, None);
    assert_eq!(net.a.bind(other, sa(A4, local.port())), Ok(()));
}

fn big_round_trip(net: &mut Net, size: usize) {
    let (server, client) = udp_pair(net);
    let out = tagged_bytes(size as u32, size);
    assert_eq!(net.a.send_to(client, &out, sa(B4, 5000)), Ok(size));
    wait_b(net, server);
    let mut buf = vec![0u8; 70_000];
    let d = net.b.recv_from(server, &mut buf, NONE).unwrap();
    assert_eq!((d.copied, d.len, d.from), (size, size, sa(A4, 4000)));
    assert!(
        buf[..size] == out[..],
        "{size}-byte datagram corrupted a → b"
    );

    let back = tagged_bytes(!(size as u32), size);
    assert_eq!(net.b.send_to(server, &back, d.from), Ok(size));
    wait_a(net, client);
    let d = net.a.recv_from(client, &mut buf, NONE).unwrap();
    assert_eq!((d.copied, d.len, d.from), (size, size, sa(B4, 5000)));
    assert!(
        buf[..size] == back[..],
        "{size}-byte datagram corrupted b → a"
    );
    net.a.close(client).unwrap();
    net.b.close(server).unwrap();
}

#[test]
fn datagram_larger_than_mtu_is_fragmented_both_ways() {
    let mut net = Net::new();
    big_round_trip(&mut net, 8000);
}

#[test]
fn largest_ipv4_datagram_is_fragmented_both_ways() {
    let mut net = Net::new();
    big_round_trip(&mut net, 65507);
}

#[test]
fn datagram_over_the_ipv4_limit_is_too_long() {
    let mut net = Net::new();
    let s = udp_socket(&mut net.a, None);
    assert_eq!(
        net.a.send_to(s, &vec![0; 65508], sa(B4, 5000)),
        Err(NetError::MessageTooLong)
    );
    assert_eq!(
        net.a.send_to(s, &vec![0; 100_000], sa(B4, 5000)),
        Err(NetError::MessageTooLong)
    );
    // Still usable afterwards.
    let server = udp_socket(&mut net.b, Some(sa(B4, 5000)));
    net.a.send_to(s, b"ok", sa(B4, 5000)).unwrap();
    wait_b(&mut net, server);
    assert_eq!(take(&mut net.b, server).unwrap().0, b"ok");
}

#[test]
fn broadcast_needs_so_broadcast() {
    let mut net = Net::new();
    let server = udp_socket(&mut net.b, Some(sa(Ipv4Addr::UNSPECIFIED, 6000)));
    let client = udp_socket(&mut net.a, Some(sa(Ipv4Addr::UNSPECIFIED, 4000)));
    let bcast = Ipv4Addr::new(10, 0, 0, 255);
    assert_eq!(
        net.a.option(client, SockOptName::Broadcast),
        Ok(SockOpt::Broadcast(false))
    );
    assert_eq!(
        net.a.send_to(client, b"all", sa(bcast, 6000)),
        Err(NetError::BroadcastNotAllowed)
    );
    assert_eq!(
        net.a.send_to(client, b"all", sa(Ipv4Addr::BROADCAST, 6000)),
        Err(NetError::BroadcastNotAllowed)
    );
    net.run_for(Duration::from_millis(50));
    assert!(!net.b.readiness(server).unwrap().readable);

    net.a.set_option(client, SockOpt::Broadcast(true)).unwrap();
    assert_eq!(
        net.a.option(client, SockOptName::Broadcast),
        Ok(SockOpt::Broadcast(true))
    );
    assert_eq!(net.a.send_to(client, b"all", sa(bcast, 6000)), Ok(3));
    wait_b(&mut net, server);
    expect_datagram(&mut net.b, server, b"all", sa(A4, 4000));
}

#[test]
fn datagram_to_an_unbound_port_is_not_delivered() {
    let mut net = Net::new();
    let client = udp_socket(&mut net.a, Some(sa(A4, 4000)));
    net.a.send_to(client, b"nobody", sa(B4, 7777)).unwrap();
    net.run_for(Duration::from_millis(100));
    // Binding the port afterwards must not surface the old datagram.
    let late = udp_socket(&mut net.b, Some(sa(B4, 7777)));
    net.run_for(Duration::from_millis(100));
    assert_eq!(take(&mut net.b, late), None);
    // An unconnected sender hears nothing (Linux needs IP_RECVERR for that).
    assert_eq!(take(&mut net.a, client), None);
    assert_eq!(net.a.take_error(client), Ok(None));
    assert!(!net.a.readiness(client).unwrap().error);
    // Both stacks carry on.
    net.a.send_to(client, b"now", sa(B4, 7777)).unwrap();
    wait_b(&mut net, late);
    expect_datagram(&mut net.b, late, b"now", sa(A4, 4000));
}

#[test]
fn connected_socket_learns_the_port_is_closed() {
    // Linux: the ICMP port unreachable answering a connected UDP socket's
    // datagram makes the next call fail with ECONNREFUSED, once.
    let mut net = Net::new();
    let client = udp_socket(&mut net.a, None);
    net.a.connect(client, sa(B4, 7777)).unwrap();
    net.a.send(client, b"anyone?").unwrap();
    net.run_until(Duration::from_secs(1), |n| {
        n.a.readiness(client).unwrap().error
    });
    let mut buf = [0u8; 16];
    assert_eq!(
        net.a.recv(client, &mut buf, NONE),
        Err(NetError::ConnectionRefused)
    );
    assert_eq!(
        net.a.recv(client, &mut buf, NONE),
        Err(NetError::WouldBlock)
    );
    assert_eq!(net.a.take_error(client), Ok(None));
}

#[test]
fn fragmented_datagrams_arrive_whole_or_not_at_all_under_loss_and_reorder() {
    let mut net = Net::lossy();
    let (server, client) = udp_pair(&mut net);
    const N: u32 = 400;
    let size = |i: u32| 3000 + (i as usize * 37) % 3000;
    let mut seen = vec![false; N as usize];
    let mut got = 0;
    let mut drain = |net: &mut Net| {
        while let Some((d, from)) = take(&mut net.b, server) {
            assert_eq!(from, sa(A4, 4000));
            assert!(d.len() >= 4, "runt datagram of {} bytes", d.len());
            let i = u32::from_be_bytes(d[..4].try_into().unwrap());
            assert!(i < N, "datagram with bad index {i}");
            let mut want = i.to_be_bytes().to_vec();
            want.extend(tagged_bytes(i, size(i) - 4));
            assert!(d == want, "datagram {i} corrupted ({} bytes)", d.len());
            assert!(!seen[i as usize], "datagram {i} delivered twice");
            seen[i as usize] = true;
            got += 1;
        }
    };
    // Resolve the neighbour first (its ARP may be lost too), on another port.
    let warm = udp_socket(&mut net.b, Some(sa(B4, 5001)));
    let mut tries = 0;
    while take(&mut net.b, warm).is_none() {
        tries += 1;
        assert!(tries < 20, "b never heard a");
        net.a.send_to(client, b"warm", sa(B4, 5001)).unwrap();
        net.run_for(Duration::from_millis(1500));
    }
    for i in 0..N {
        let mut d = i.to_be_bytes().to_vec();
        d.extend(tagged_bytes(i, size(i) - 4));
        net.a.send_to(client, &d, sa(B4, 5000)).unwrap();
        net.run_for(Duration::from_millis(2));
        drain(&mut net);
    }
    net.run_for(Duration::from_secs(2));
    drain(&mut net);
    // Each datagram is 3 to 5 fragments: at 1% loss, most arrive.
    assert!(got >= N * 85 / 100, "only {got} of {N} datagrams arrived");
    assert!(got < N, "no loss happened: the impairments did not apply");
}

/// A SO_REUSEPORT group of UDP sockets shares the senders between its
/// members, and one sender always reaches the same member (Linux hashes the
/// 4-tuple).
#[test]
fn reuseport_group_spreads_senders_and_keeps_each_on_one_socket() {
    let mut net = Net::new();
    let addr = sa(B4, 9100);
    let group: Vec<SocketId> = (0..2)
        .map(|_| {
            let u = net.b.socket(Domain::Ipv4, Protocol::Udp).unwrap();
            net.b.set_option(u, SockOpt::ReusePort(true)).unwrap();
            assert_eq!(net.b.bind(u, addr), Ok(()));
            u
        })
        .collect();
    let senders: Vec<SocketId> = (0..32).map(|_| udp_socket(&mut net.a, None)).collect();
    for round in 0..2u8 {
        for (i, &s) in senders.iter().enumerate() {
            net.a.send_to(s, &[i as u8, round], addr).unwrap();
        }
        net.run_for(Duration::from_millis(5));
    }
    let mut member_of = [None::<usize>; 32];
    let mut per_member = [0usize; 2];
    for (m, &u) in group.iter().enumerate() {
        while let Some((data, _)) = take(&mut net.b, u) {
            let sender = usize::from(data[0]);
            assert!(
                member_of[sender].is_none_or(|x| x == m),
                "sender {sender} reached both members"
            );
            member_of[sender] = Some(m);
            per_member[m] += 1;
        }
    }
    assert_eq!(
        per_member[0] + per_member[1],
        64,
        "every datagram arrived once"
    );
    assert!(per_member.iter().all(|&n| n > 0), "spread: {per_member:?}");
}
