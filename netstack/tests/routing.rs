//! A stack with several NICs picks the NIC by on-link subnet, then by default
//! gateway, and sends nothing anywhere when no route fits.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use common::{Filtered, filtered};
use netstack::link::{PairEnd, pair};
use netstack::{
    Domain, Duration, GatewayRoute, IfAddr, Instant, NetError, NicConfig, Protocol, RecvFlags,
    Stack, StackConfig,
};

type Sent = Arc<Mutex<Vec<Vec<u8>>>>;

/// A link that passes every frame on and keeps a copy in `sent`.
fn recorder(inner: PairEnd, sent: &Sent) -> Box<Filtered<PairEnd>> {
    let sent = Arc::clone(sent);
    Box::new(filtered(
        inner,
        Box::new(move |_, frame: &[u8]| {
            sent.lock().unwrap().push(frame.to_vec());
            true
        }),
    ))
}

fn nic(name: &str, last: u8, ip: Ipv4Addr, gw: Option<Ipv4Addr>) -> NicConfig {
    NicConfig {
        name: name.into(),
        mac: [2, 0, 0, 0, 9, last],
        addrs: vec![IfAddr {
            addr: IpAddr::V4(ip),
            prefix_len: 24,
        }],
        gateway_v4: gw,
        gateway_v6: None,
    }
}

fn stack(seed: u64) -> Stack {
    Stack::new(
        StackConfig {
            random_seed: seed,
            ..StackConfig::default()
        },
        Instant::from_secs(1),
    )
}

fn ipv4_dst(frame: &[u8]) -> Option<Ipv4Addr> {
    (frame.len() >= 34 && frame[12..14] == [0x08, 0x00])
        .then(|| Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]))
}

#[test]
fn nic_chosen_by_subnet_then_default_gateway() {
    // a: eth0 10.0.0.1/24 to b; eth1 10.1.0.1/24 to c, default route via c (10.1.0.2).
    let (a0, b0) = pair(1500, Duration::from_micros(10), false);
    let (a1, c1) = pair(1500, Duration::from_micros(10), false);
    let sent0 = Sent::default();
    let sent1 = Sent::default();
    let mut a = stack(1);
    a.add_nic(
        recorder(a0, &sent0),
        nic("eth0", 1, Ipv4Addr::new(10, 0, 0, 1), None),
    )
    .unwrap();
    let gw = Ipv4Addr::new(10, 1, 0, 2);
    a.add_nic(
        recorder(a1, &sent1),
        nic("eth1", 2, Ipv4Addr::new(10, 1, 0, 1), Some(gw)),
    )
    .unwrap();
    let mut b = stack(2);
    b.add_nic(
        Box::new(b0),
        nic("eth0", 3, Ipv4Addr::new(10, 0, 0, 2), None),
    )
    .unwrap();
    let mut c = stack(3);
    c.add_nic(Box::new(c1), nic("eth0", 4, gw, None)).unwrap();
    let names: Vec<String> = a.nics().map(|n| n.name.clone()).collect();
    assert_eq!(names, ["lo", "eth0", "eth1"]);

    // UDP to each peer arrives, each through its own NIC.
    let mut now = Instant::from_secs(1);
    let mut run = |a: &mut Stack, b: &mut Stack, c: &mut Stack| {
        for _ in 0..200 {
            now += Duration::from_millis(1);
            a.poll(now);
            b.poll(now);
            c.poll(now);
        }
    };
    let ub = b.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    b.bind(ub, "0.0.0.0:9".parse().unwrap()).unwrap();
    let uc = c.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    c.bind(uc, "0.0.0.0:9".parse().unwrap()).unwrap();
    let ua = a.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    a.send_to(ua, b"to b", "10.0.0.2:9".parse().unwrap())
        .unwrap();
    a.send_to(ua, b"to c", "10.1.0.2:9".parse().unwrap())
        .unwrap();
    run(&mut a, &mut b, &mut c);
    let mut buf = [0u8; 16];
    let got = b.recv_from(ub, &mut buf, RecvFlags::default()).unwrap();
    assert_eq!(&buf[..got.copied], b"to b");
    assert_eq!(got.from.ip(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    let got = c.recv_from(uc, &mut buf, RecvFlags::default()).unwrap();
    assert_eq!(&buf[..got.copied], b"to c");
    assert_eq!(got.from.ip(), IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)));

    // An off-link destination leaves through eth1, towards the gateway's MAC,
    // with eth1's address as the source.
    let far: SocketAddr = "192.0.2.5:80".parse().unwrap();
    let t = a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    assert_eq!(a.connect(t, far), Err(NetError::InProgress));
    assert_eq!(
        a.local_addr(t).unwrap().ip(),
        IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1))
    );
    run(&mut a, &mut b, &mut c);
    let to_far = |frames: &Vec<Vec<u8>>| {
        frames
            .iter()
            .filter(|f| ipv4_dst(f) == Some(Ipv4Addr::new(192, 0, 2, 5)))
            .cloned()
            .collect::<Vec<_>>()
    };
    let on_eth1 = to_far(&sent1.lock().unwrap());
    assert!(!on_eth1.is_empty(), "the SYN went out on eth1");
    assert_eq!(
        on_eth1[0][..6],
        [2, 0, 0, 0, 9, 4],
        "addressed to the gateway's MAC"
    );
    assert!(
        to_far(&sent0.lock().unwrap()).is_empty(),
        "nothing for it on eth0"
    );

    // A gateway route on eth0 beats the default route on eth1 for its network.
    let via_b = GatewayRoute {
        dst: IfAddr {
            addr: "192.168.50.0".parse().unwrap(),
            prefix_len: 24,
        },
        gateway: "10.0.0.2".parse().unwrap(),
    };
    assert_eq!(a.add_route(1, via_b), Ok(()));
    assert_eq!(a.nics().nth(1).unwrap().routes, [via_b]);
    let routed: SocketAddr = "192.168.50.7:80".parse().unwrap();
    let t2 = a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    assert_eq!(a.connect(t2, routed), Err(NetError::InProgress));
    assert_eq!(
        a.local_addr(t2).unwrap().ip(),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
    );
    run(&mut a, &mut b, &mut c);
    let to_routed = |frames: &Vec<Vec<u8>>| {
        frames
            .iter()
            .filter(|f| ipv4_dst(f) == Some(Ipv4Addr::new(192, 168, 50, 7)))
            .map(|f| f[..6].to_vec())
            .collect::<Vec<_>>()
    };
    let on_eth0 = to_routed(&sent0.lock().unwrap());
    assert!(!on_eth0.is_empty(), "the SYN went out on eth0");
    assert_eq!(
        on_eth0[0],
        [2, 0, 0, 0, 9, 3],
        "to b's MAC, the route's gateway"
    );
    assert!(
        to_routed(&sent1.lock().unwrap()).is_empty(),
        "nothing on eth1"
    );
    // Linux refuses a gateway that is not on-link, or of the other family.
    let off_link = GatewayRoute {
        gateway: "10.9.9.9".parse().unwrap(),
        ..via_b
    };
    assert_eq!(a.add_route(1, off_link), Err(NetError::NetworkUnreachable));
    let mixed = GatewayRoute {
        gateway: "fd00::2".parse().unwrap(),
        ..via_b
    };
    assert_eq!(a.add_route(1, mixed), Err(NetError::InvalidInput));

    // A ping socket sends each request through the NIC its route names, even
    // while a request for an unresolved neighbour waits on another NIC.
    let p = a.socket(Domain::Ipv4, Protocol::Icmp).unwrap();
    let echo = [8, 0, 0, 0, 0, 0, 0, 1, 0xab];
    a.send_to(p, &echo, "10.0.0.77:0".parse().unwrap()).unwrap();
    a.send_to(p, &echo, "10.1.0.2:0".parse().unwrap()).unwrap();
    run(&mut a, &mut b, &mut c);
    let mut reply = [0u8; 64];
    let got = a.recv_from(p, &mut reply, RecvFlags::default()).unwrap();
    assert_eq!(got.from.ip(), IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2)));
    assert_eq!(reply[0], 0, "an echo reply");
    let absent = Ipv4Addr::new(10, 0, 0, 77);
    assert!(
        !sent1
            .lock()
            .unwrap()
            .iter()
            .any(|f| ipv4_dst(f) == Some(absent)),
        "the request for 10.0.0.77 must not leave through eth1"
    );
    let arp_for_absent =
        |f: &Vec<u8>| f.len() >= 42 && f[12..14] == [8, 6] && f[38..42] == absent.octets();
    assert!(
        sent0.lock().unwrap().iter().any(arp_for_absent),
        "ARP for 10.0.0.77 on eth0"
    );

    // IPv6 has no route at all here.
    let v6 = a.socket(Domain::Ipv6, Protocol::Udp).unwrap();
    assert_eq!(
        a.send_to(v6, b"x", "[2001:db8::1]:9".parse().unwrap()),
        Err(NetError::NetworkUnreachable)
    );
    let t6 = a.socket(Domain::Ipv6, Protocol::Tcp).unwrap();
    assert_eq!(
        a.connect(t6, "[2001:db8::1]:80".parse().unwrap()),
        Err(NetError::NetworkUnreachable)
    );
}

#[test]
fn onlink_route_wider_than_the_address_reaches_its_neighbours() {
    // a holds 10.5.0.1/32 and "10.5.0.0/24 dev eth0"; b holds 10.5.0.2/24.
    let (la, lb) = pair(1500, Duration::from_micros(10), false);
    let mut a = stack(1);
    let mut cfg = nic("eth0", 1, Ipv4Addr::new(10, 5, 0, 1), None);
    cfg.addrs[0].prefix_len = 32;
    let eth0 = a.add_nic(Box::new(la), cfg).unwrap();
    let mut b = stack(2);
    b.add_nic(
        Box::new(lb),
        nic("eth0", 2, Ipv4Addr::new(10, 5, 0, 2), None),
    )
    .unwrap();
    let peer: SocketAddr = "10.5.0.2:80".parse().unwrap();
    let t = a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    assert_eq!(a.connect(t, peer), Err(NetError::NetworkUnreachable));

    let subnet = IfAddr {
        addr: IpAddr::V4(Ipv4Addr::new(10, 5, 0, 0)),
        prefix_len: 24,
    };
    a.add_onlink_route(eth0, subnet).unwrap();
    assert_eq!(a.nics().nth(1).unwrap().onlink, [subnet]);
    // A prefix holding none of the NIC's addresses cannot be learnt from.
    let elsewhere = IfAddr {
        addr: IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1)),
        prefix_len: 32,
    };
    assert_eq!(
        a.add_onlink_route(eth0, elsewhere),
        Err(NetError::NotSupported)
    );

    let l = b.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    b.bind(l, peer).unwrap();
    b.listen(l, 4).unwrap();
    let t = a.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    assert_eq!(a.connect(t, peer), Err(NetError::InProgress));
    assert_eq!(
        a.local_addr(t).unwrap().ip(),
        IpAddr::V4(Ipv4Addr::new(10, 5, 0, 1))
    );
    let mut now = Instant::from_secs(1);
    for _ in 0..300 {
        now += Duration::from_millis(1);
        a.poll(now);
        b.poll(now);
    }
    assert_eq!(a.connect(t, peer), Ok(()));
    let (c, from) = b.accept(l).unwrap();
    assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::new(10, 5, 0, 1)));
    assert_eq!(a.send(t, b"on-link").unwrap(), 7);
    for _ in 0..50 {
        now += Duration::from_millis(1);
        a.poll(now);
        b.poll(now);
    }
    let mut buf = [0u8; 16];
    assert_eq!(b.recv(c, &mut buf, RecvFlags::default()).unwrap(), 7);
    assert_eq!(&buf[..7], b"on-link");
}
