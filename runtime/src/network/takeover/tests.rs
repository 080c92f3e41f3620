//! Take-over of real interfaces in throw-away namespaces joined by veths to
//! peers in others (needs root): what is copied, what the host keeps, that
//! a stack over the result talks with the peers both ways, and that the
//! namespace is restored as it was.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration as StdDuration;

use netstack::testbed::netns::{Netns, Step, drive, echo_server, echo_through, veth, wall_clock};
use netstack::{
    Domain, GatewayRoute, IfAddr, NetError, Protocol, RecvFlags, SocketId, Stack, StackConfig,
};

use super::take_over;

fn ifaddr(s: &str) -> IfAddr {
    let (a, p) = s.split_once('/').unwrap();
    IfAddr {
        addr: a.parse().unwrap(),
        prefix_len: p.parse().unwrap(),
    }
}

fn sorted(mut v: Vec<IfAddr>) -> Vec<String> {
    let mut s: Vec<String> = v
        .drain(..)
        .map(|a| format!("{}/{}", a.addr, a.prefix_len))
        .collect();
    s.sort();
    s
}

/// Namespaces `<tag>a` and `<tag>b`, joined by `va` (in a) and `vb`.
fn peered(tag: &str) -> (Netns, Netns) {
    let a = Netns::new(&format!("{tag}a")).unwrap();
    let b = Netns::new(&format!("{tag}b")).unwrap();
    veth(&a, "va", &b, "vb").unwrap();
    (a, b)
}

/// What `ip` shows of `dev` in `ns`: brief addresses and both route tables.
fn snapshot(ns: &Netns, dev: &str) -> (String, String, String) {
    (
        ns.ip(&["-br", "addr", "show", "dev", dev]).unwrap(),
        ns.ip(&["-4", "route", "show", "table", "main"]).unwrap(),
        ns.ip(&["-6", "route", "show", "table", "main"]).unwrap(),
    )
}

#[test]
fn take_over_copies_the_interface_clears_the_host_and_restores_it() {
    // `_b` holds the peer namespace (and so the veth) to the end.
    let (a, _b) = peered("tko1");
    for args in [
        &["link", "set", "va", "mtu", "1400"][..],
        &["link", "set", "va", "address", "02:00:00:aa:00:01"],
        &["addr", "add", "10.60.0.1/24", "dev", "va"],
        &["addr", "add", "10.60.0.5/24", "dev", "va"],
        &["addr", "add", "fd60::1/64", "dev", "va", "nodad"],
        &["route", "add", "default", "via", "10.60.0.2"],
        &["route", "add", "192.168.77.0/24", "via", "10.60.0.3"],
        &["route", "add", "10.99.0.0/16", "dev", "va"],
        &["route", "add", "fd61::/64", "via", "fd60::2"],
        &["route", "add", "default", "via", "fd60::2"],
        // Down, so left alone.
        &["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
    ] {
        a.ip(args).unwrap();
    }
    let before = snapshot(&a, "va");

    let taken = take_over(&a.path()).unwrap();
    assert_eq!(taken.nics.len(), 1);
    let nic = &taken.nics[0];
    assert_eq!(nic.config.name, "va");
    assert_eq!(nic.config.mac, [2, 0, 0, 0xaa, 0, 1]);
    assert_eq!(netstack::Link::caps(&nic.link).mtu, 1400);
    assert_eq!(
        sorted(nic.config.addrs.clone()),
        ["10.60.0.1/24", "10.60.0.5/24", "fd60::1/64"]
    );
    assert_eq!(nic.config.gateway_v4, Some(Ipv4Addr::new(10, 60, 0, 2)));
    assert_eq!(nic.config.gateway_v6, Some("fd60::2".parse().unwrap()));
    let mut routes = nic.routes.clone();
    routes.sort_by_key(|r| r.dst.addr.is_ipv6());
    assert_eq!(
        routes,
        [
            GatewayRoute {
                dst: ifaddr("192.168.77.0/24"),
                gateway: "10.60.0.3".parse().unwrap(),
            },
            GatewayRoute {
                dst: ifaddr("fd61::/64"),
                gateway: "fd60::2".parse().unwrap(),
            },
        ]
    );
    assert_eq!(nic.onlink, [ifaddr("10.99.0.0/16")]);
    assert!(nic.ignored.is_empty(), "{:?}", nic.ignored);

    // The host interface is up, and answers for nothing any more.
    let host = a.ip(&["addr", "show", "dev", "va"]).unwrap();
    assert!(host.contains("UP"), "{host}");
    assert!(!host.contains("inet "), "{host}");
    assert!(!host.contains("fd60"), "{host}");
    assert_eq!(a.ip(&["-4", "route", "show"]).unwrap().trim(), "");
    let v6 = a.ip(&["-6", "route", "show"]).unwrap();
    assert!(!v6.contains("fd6") && !v6.contains("default"), "{v6}");

    taken.restore.restore().unwrap();
    assert_eq!(snapshot(&a, "va"), before);
}

#[test]
fn dropping_the_take_over_restores_the_namespace_too() {
    let (a, _b) = peered("tko2");
    a.ip(&["addr", "add", "10.63.0.1/24", "dev", "va"]).unwrap();
    a.ip(&["route", "add", "default", "via", "10.63.0.2"])
        .unwrap();
    let before = snapshot(&a, "va");
    let taken = take_over(&a.path()).unwrap();
    assert_ne!(snapshot(&a, "va"), before);
    drop(taken);
    assert_eq!(snapshot(&a, "va"), before);
}

/// A deterministic byte pattern that never lines up with segment sizes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

fn connect(stack: &mut Stack, to: SocketAddr) -> SocketId {
    let s = stack.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    match stack.connect(s, to) {
        Ok(()) | Err(NetError::InProgress) => s,
        Err(e) => panic!("connect {to}: {e:?}"),
    }
}

#[test]
fn stack_on_the_taken_interface_talks_with_the_peer_both_ways() {
    let (a, b) = peered("tko3");
    a.ip(&["addr", "add", "10.61.0.1/24", "dev", "va"]).unwrap();
    b.ip(&["addr", "add", "10.61.0.2/24", "dev", "vb"]).unwrap();

    let taken = take_over(&a.path()).unwrap();
    let mut stack = Stack::new(StackConfig::default(), wall_clock());
    for nic in taken.nics {
        stack.add_nic_setup(nic.into_setup(|link| link)).unwrap();
    }

    // Out: 4 MiB to an echo server in `b`, and back.
    let server = echo_server(&b, "10.61.0.2:5000".parse().unwrap()).unwrap();
    let data = pattern(4 << 20);
    let s = connect(&mut stack, "10.61.0.2:5000".parse().unwrap());
    let back = echo_through(&mut stack, s, &data);
    assert!(
        back == data,
        "echoed bytes differ ({} bytes back)",
        back.len()
    );
    server.join().unwrap().unwrap();

    // In: `b` reaches a listener on the stack.
    let l = stack.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    stack.bind(l, "10.61.0.1:7000".parse().unwrap()).unwrap();
    stack.listen(l, 4).unwrap();
    let client = b
        .spawn(|| {
            let mut c = TcpStream::connect(("10.61.0.1", 7000)).unwrap();
            c.write_all(b"ping").unwrap();
            let mut got = [0u8; 4];
            c.read_exact(&mut got).unwrap();
            got
        })
        .unwrap();
    let mut conn = None;
    let served = drive(&mut stack, StdDuration::from_secs(10), |st| {
        let c = match conn {
            Some(c) => c,
            None => match st.accept(l) {
                Ok((c, from)) => {
                    assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::new(10, 61, 0, 2)));
                    *conn.insert(c)
                }
                Err(_) => return Step::Idle,
            },
        };
        let mut buf = [0u8; 4];
        match st.recv(c, &mut buf, RecvFlags::default()) {
            Ok(4) => {
                assert_eq!(&buf, b"ping");
                st.send(c, b"pong").unwrap();
                Step::Done
            }
            _ => Step::Idle,
        }
    });
    assert!(served, "no connection from the peer");
    // Let the answer out.
    drive(&mut stack, StdDuration::from_millis(200), |_| Step::Idle);
    assert_eq!(&client.join().unwrap().unwrap(), b"pong");
    taken.restore.restore().unwrap();
}

#[test]
fn two_interfaces_one_through_a_gateway_one_by_an_onlink_route() {
    let a = Netns::new("tko4a").unwrap();
    let b1 = Netns::new("tko4b").unwrap();
    let b2 = Netns::new("tko4c").unwrap();
    veth(&a, "va1", &b1, "vb1").unwrap();
    veth(&a, "va2", &b2, "vb2").unwrap();
    for args in [
        &["addr", "add", "10.62.1.1/24", "dev", "va1"][..],
        &["route", "add", "10.70.0.0/16", "via", "10.62.1.2"],
        // A lone address, and a route with no gateway to its /24.
        &["addr", "add", "10.62.2.1/32", "dev", "va2"],
        &["route", "add", "10.62.2.0/24", "dev", "va2"],
    ] {
        a.ip(args).unwrap();
    }
    // b1 is the gateway to 10.70.0.0/16 (it holds 10.70.0.9 itself).
    b1.ip(&["addr", "add", "10.62.1.2/24", "dev", "vb1"])
        .unwrap();
    b1.ip(&["addr", "add", "10.70.0.9/32", "dev", "lo"])
        .unwrap();
    b2.ip(&["addr", "add", "10.62.2.2/24", "dev", "vb2"])
        .unwrap();

    let taken = take_over(&a.path()).unwrap();
    let names: Vec<&str> = taken.nics.iter().map(|n| n.config.name.as_str()).collect();
    assert_eq!(names, ["va1", "va2"]);
    assert_eq!(
        taken.nics[0].routes,
        [GatewayRoute {
            dst: ifaddr("10.70.0.0/16"),
            gateway: "10.62.1.2".parse().unwrap(),
        }]
    );
    assert_eq!(taken.nics[1].onlink, [ifaddr("10.62.2.0/24")]);
    let mut stack = Stack::new(StackConfig::default(), wall_clock());
    for nic in taken.nics {
        stack.add_nic_setup(nic.into_setup(|link| link)).unwrap();
    }

    let far: SocketAddr = "10.70.0.9:5001".parse().unwrap();
    let near: SocketAddr = "10.62.2.2:5002".parse().unwrap();
    let s1 = echo_server(&b1, far).unwrap();
    let s2 = echo_server(&b2, near).unwrap();
    let data = pattern(256 << 10);
    let c1 = connect(&mut stack, far);
    assert_eq!(
        stack.local_addr(c1).unwrap().ip(),
        IpAddr::V4(Ipv4Addr::new(10, 62, 1, 1))
    );
    let c2 = connect(&mut stack, near);
    assert_eq!(
        stack.local_addr(c2).unwrap().ip(),
        IpAddr::V4(Ipv4Addr::new(10, 62, 2, 1))
    );
    assert!(
        echo_through(&mut stack, c1, &data) == data,
        "through the gateway"
    );
    assert!(echo_through(&mut stack, c2, &data) == data, "on-link");
    s1.join().unwrap().unwrap();
    s2.join().unwrap().unwrap();
    taken.restore.restore().unwrap();
}
