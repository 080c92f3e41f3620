//! Ping sockets (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)` and the ICMPv6
//! kind): echo requests out, echo replies in, with Linux's rules.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::*;
use netstack::{Domain, Duration, NetError, Protocol, SocketId, Stack};

fn ping_socket(s: &mut Stack, domain: Domain) -> SocketId {
    s.socket(domain, Protocol::Icmp).unwrap()
}

/// The Internet checksum over `parts`, folded; 0 when the data includes a correct checksum.
fn inet_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for c in part.chunks(2) {
            let w = u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]);
            sum += u32::from(w);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ident(s: &Stack, id: SocketId) -> u16 {
    s.local_addr(id).unwrap().port()
}

/// Sends `req` from `a`'s ping socket `p` to `to`, waits for the answer and
/// checks it came from `to`; returns the reply.
fn ping(net: &mut Net, p: SocketId, req: &[u8], to: SocketAddr) -> Vec<u8> {
    assert_eq!(net.a.send_to(p, req, to), Ok(req.len()));
    wait_a(net, p);
    let (reply, from) = take(&mut net.a, p).unwrap();
    assert_eq!(from, to, "echo reply source");
    reply
}

/// Checks an echo reply: type, code, identifier, sequence, payload.
fn check_reply(reply: &[u8], ty: u8, ident: u16, seq: u16, payload: &[u8]) {
    assert!(reply.len() >= 8, "reply of {} bytes", reply.len());
    assert_eq!(reply[0], ty, "type");
    assert_eq!(reply[1], 0, "code");
    assert_eq!(
        u16::from_be_bytes([reply[4], reply[5]]),
        ident,
        "identifier"
    );
    assert_eq!(u16::from_be_bytes([reply[6], reply[7]]), seq, "sequence");
    assert_eq!(&reply[8..], payload, "payload");
}

#[test]
fn ping_peer_gets_echo_reply() {
    let mut net = Net::new();
    let p = ping_socket(&mut net.a, Domain::Ipv4);
    assert_eq!(net.a.local_addr(p), Ok(sa(Ipv4Addr::UNSPECIFIED, 0)));
    let mut req = echo_request(8, 7, b"hello, b");
    // Whatever identifier the caller writes, the socket's own is used.
    req[4..6].copy_from_slice(&0xbeef_u16.to_be_bytes());
    assert_eq!(net.a.send_to(p, &req, sa(B4, 0)), Ok(req.len()));
    let id = ident(&net.a, p);
    assert_ne!(id, 0, "sending gives the socket an identifier");
    assert_eq!(net.a.local_addr(p).unwrap().ip(), Ipv4Addr::UNSPECIFIED);

    wait_a(&mut net, p);
    let (reply, from) = take(&mut net.a, p).unwrap();
    assert_eq!(from, sa(B4, 0));
    check_reply(&reply, 0, id, 7, b"hello, b");
    assert_eq!(inet_sum(&[&reply]), 0, "ICMP checksum of the reply");
    assert_eq!(take(&mut net.a, p), None);
    assert!(!net.a.readiness(p).unwrap().readable);

    // A second ping, with another sequence number, reuses the identifier.
    let reply = ping(&mut net, p, &echo_request(8, 8, b"again"), sa(B4, 0));
    assert_eq!(ident(&net.a, p), id);
    check_reply(&reply, 0, id, 8, b"again");
}

#[test]
fn invalid_echo_requests_are_rejected() {
    let mut net = Net::new();
    let p = ping_socket(&mut net.a, Domain::Ipv4);
    let to = sa(B4, 0);
    // Shorter than an ICMP header.
    assert_eq!(
        net.a.send_to(p, &[8, 0, 0, 0, 0, 0, 0], to),
        Err(NetError::InvalidInput)
    );
    assert_eq!(net.a.send_to(p, &[], to), Err(NetError::InvalidInput));
    // Not an echo request: an echo reply, a timestamp request, the ICMPv6 type.
    for ty in [0u8, 13, 128] {
        assert_eq!(
            net.a.send_to(p, &echo_request(ty, 1, b"x"), to),
            Err(NetError::InvalidInput),
            "type {ty}"
        );
    }
    // An echo request with a non-zero code.
    let mut req = echo_request(8, 1, b"x");
    req[1] = 1;
    assert_eq!(net.a.send_to(p, &req, to), Err(NetError::InvalidInput));

    let p6 = ping_socket(&mut net.a, Domain::Ipv6);
    assert_eq!(
        net.a.send_to(p6, &echo_request(8, 1, b"x"), sa(B6, 0)),
        Err(NetError::InvalidInput)
    );
    assert_eq!(
        net.a.send_to(p6, &[128, 0, 0, 0], sa(B6, 0)),
        Err(NetError::InvalidInput)
    );

    // Nothing went out, and a header-only request is valid.
    net.run_for(Duration::from_millis(50));
    assert_eq!(take(&mut net.a, p), None);
    let reply = ping(&mut net, p, &echo_request(8, 2, b""), to);
    check_reply(&reply, 0, ident(&net.a, p), 2, b"");
}

#[test]
fn ping_over_loopback_to_127_0_0_1_and_own_address() {
    let mut net = Net::new();
    ping_self(&mut net, Ipv4Addr::LOCALHOST, 100);
    ping_self(&mut net, A4, 101);
    // Nothing crossed the cable: b never saw a request.
    assert_eq!(net.b.poll_at(), None);
}

#[test]
fn ping_anywhere_in_127_0_0_0_8() {
    // Linux answers for the whole 127.0.0.0/8 on lo, from the address pinged.
    let mut net = Net::new();
    ping_self(&mut net, Ipv4Addr::new(127, 1, 2, 3), 102);
}

fn ping_self(net: &mut Net, dst: Ipv4Addr, seq: u16) {
    let p = ping_socket(&mut net.a, Domain::Ipv4);
    net.a
        .send_to(p, &echo_request(8, seq, b"me?"), sa(dst, 0))
        .unwrap();
    net.run_for(Duration::from_millis(100));
    let Some((reply, from)) = take(&mut net.a, p) else {
        panic!("no echo reply from {dst}");
    };
    assert_eq!(from, sa(dst, 0), "reply to a ping of {dst}");
    check_reply(&reply, 0, ident(&net.a, p), seq, b"me?");
    net.a.close(p).unwrap();
}

#[test]
fn ping_ipv6_peer() {
    let mut net = Net::new();
    let p = ping_socket(&mut net.a, Domain::Ipv6);
    let payload = b"over IPv6";
    net.a
        .send_to(p, &echo_request(128, 42, payload), sa(B6, 0))
        .unwrap();
    let id = ident(&net.a, p);
    assert_ne!(id, 0);
    net.run_until(Duration::from_secs(3), |n| {
        n.a.readiness(p).unwrap().readable
    });
    let (reply, from) = take(&mut net.a, p).unwrap();
    assert_eq!(from, sa(B6, 0));
    check_reply(&reply, 129, id, 42, payload);
    // ICMPv6 checksum, over the pseudo-header.
    let len = (reply.len() as u32).to_be_bytes();
    let pseudo_tail = [0, 0, 0, 58];
    assert_eq!(
        inet_sum(&[&B6.octets(), &A6.octets(), &len, &pseudo_tail, &reply]),
        0,
        "ICMPv6 checksum of the reply"
    );
}

#[test]
fn ping_ipv6_loopback() {
    let mut net = Net::new();
    for dst in [Ipv6Addr::LOCALHOST, A6] {
        let p = ping_socket(&mut net.a, Domain::Ipv6);
        let reply = ping(&mut net, p, &echo_request(128, 5, b"me6"), sa(dst, 0));
        check_reply(&reply, 129, ident(&net.a, p), 5, b"me6");
    }
}

#[test]
fn replies_go_to_the_socket_whose_identifier_they_carry() {
    let mut net = Net::new();
    let p1 = ping_socket(&mut net.a, Domain::Ipv4);
    let p2 = ping_socket(&mut net.a, Domain::Ipv4);
    net.a
        .send_to(p1, &echo_request(8, 1, b"one"), sa(B4, 0))
        .unwrap();
    net.a
        .send_to(p2, &echo_request(8, 2, b"two"), sa(B4, 0))
        .unwrap();
    assert_ne!(ident(&net.a, p1), ident(&net.a, p2));
    net.run_until(Duration::from_secs(2), |n| {
        n.a.readiness(p1).unwrap().readable && n.a.readiness(p2).unwrap().readable
    });
    net.run_for(Duration::from_millis(10));
    let (r1, _) = take(&mut net.a, p1).unwrap();
    let (r2, _) = take(&mut net.a, p2).unwrap();
    check_reply(&r1, 0, ident(&net.a, p1), 1, b"one");
    check_reply(&r2, 0, ident(&net.a, p2), 2, b"two");
    assert_eq!(take(&mut net.a, p1), None);
    assert_eq!(take(&mut net.a, p2), None);
}

#[test]
fn bound_identifier_is_used_and_exclusive() {
    let mut net = Net::new();
    let p = ping_socket(&mut net.a, Domain::Ipv4);
    net.a.bind(p, sa(A4, 777)).unwrap();
    assert_eq!(net.a.local_addr(p), Ok(sa(A4, 777)));
    let q = ping_socket(&mut net.a, Domain::Ipv4);
    assert_eq!(net.a.bind(q, sa(A4, 777)), Err(NetError::AddrInUse));
    // Not one of the stack's addresses.
    assert_eq!(
        net.a.bind(q, sa(Ipv4Addr::new(10, 0, 0, 9), 0)),
        Err(NetError::AddrNotAvailable)
    );
    let reply = ping(&mut net, p, &echo_request(8, 3, b"id"), sa(B4, 0));
    check_reply(&reply, 0, 777, 3, b"id");
}

#[test]
fn connected_ping_socket_and_peek() {
    let mut net = Net::new();
    let p = ping_socket(&mut net.a, Domain::Ipv4);
    assert_eq!(
        net.a.send(p, &echo_request(8, 1, b"x")),
        Err(NetError::DestinationRequired)
    );
    net.a.connect(p, sa(B4, 0)).unwrap();
    assert_eq!(net.a.peer_addr(p), Ok(sa(B4, 0)));
    net.a.send(p, &echo_request(8, 9, b"peekaboo")).unwrap();
    wait_a(&mut net, p);

    let mut small = [0u8; 4];
    for _ in 0..2 {
        let d = net.a.recv_from(p, &mut small, PEEK).unwrap();
        assert_eq!((d.copied, d.len, d.from), (4, 16, sa(B4, 0)));
        assert_eq!(small[0], 0);
    }
    // Truncated: the rest of the reply is dropped.
    let d = net.a.recv_from(p, &mut small, NONE).unwrap();
    assert_eq!((d.copied, d.len), (4, 16));
    assert_eq!(take(&mut net.a, p), None);
    assert_eq!(net.a.recv(p, &mut small, NONE), Err(NetError::WouldBlock));
}

#[test]
fn ping_socket_rejects_the_other_family() {
    let mut net = Net::new();
    let p = ping_socket(&mut net.a, Domain::Ipv4);
    assert_eq!(
        net.a.send_to(
            p,
            &echo_request(8, 1, b""),
            SocketAddr::new(IpAddr::V6(B6), 0)
        ),
        Err(NetError::AddrFamilyNotSupported)
    );
}
