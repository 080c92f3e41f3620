//! A transparent NIC (a NAT gateway's far side) holds SYNs to any address
//! for its owner, who accepts them as connections or refuses them with RST.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::{Net, Sim, domain_of, sa, tagged_bytes};
use netstack::{
    Duration, Instant, Intercepted, NetError, NicConfig, Protocol, RecvFlags, SocketId, Stack,
    StackConfig, testbed,
};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Host a routes everything through b, and b is transparent.
fn gateway_net() -> Net {
    let now = Instant::from_secs(1);
    let (ea, eb) = netstack::link::pair(1500, Duration::from_micros(50), false);
    let cfg = StackConfig::default();
    let mut a = Stack::new(cfg.clone(), now);
    let nic = NicConfig {
        gateway_v4: Some(GATEWAY),
        ..testbed::host_nic(1)
    };
    a.add_nic(Box::new(ea), nic).unwrap();
    let mut b = testbed::host(2, Box::new(eb), &cfg, now);
    b.set_transparent(1).unwrap();
    Net { a, b, now }
}

fn syns(st: &mut Stack) -> Vec<Intercepted> {
    let mut v = Vec::new();
    st.take_intercepted(&mut v);
    v
}

/// `a` connects to `to`; its socket and the SYNs `b` holds 5 ms later.
fn connect_held(net: &mut Net, to: SocketAddr) -> (SocketId, Vec<Intercepted>) {
    let c = net.a.socket(domain_of(to), Protocol::Tcp).unwrap();
    assert_eq!(net.a.connect(c, to), Err(NetError::InProgress));
    net.run_for(Duration::from_millis(5));
    (c, syns(&mut net.b))
}

#[test]
fn a_syn_to_any_address_is_held_then_accepted() {
    let mut net = gateway_net();
    // Off-subnet: a sends it to its gateway b, which takes it as its own.
    let far = sa(Ipv4Addr::new(192, 0, 2, 80), 80);
    let (c, held) = connect_held(&mut net, far);
    assert_eq!(held.len(), 1, "one SYN held");
    assert_eq!(held[0].local, far);
    assert_eq!(held[0].remote.ip(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    // Still connecting: nothing answered it.
    assert_eq!(net.a.connect(c, far), Err(NetError::Already));
    let s = net.b.accept_intercepted(&held[0]).unwrap();
    net.run_until(Duration::from_secs(2), |n| n.a.connect(c, far).is_ok());
    let data = tagged_bytes(7, 200_000);
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    net.run_until(Duration::from_secs(10), |n| {
        if sent < data.len() {
            sent += n.a.send(c, &data[sent..]).unwrap_or(0);
        }
        while let Ok(k) = n.b.recv(s, &mut buf, RecvFlags::default()) {
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
        }
        got.len() == data.len()
    });
    assert_eq!(got, data);
    assert_eq!(net.b.local_addr(s).unwrap(), far);
    assert_eq!(net.b.peer_addr(s).unwrap(), net.a.local_addr(c).unwrap());
    // The same 4-tuple cannot be accepted twice.
    assert_eq!(net.b.accept_intercepted(&held[0]), Err(NetError::AddrInUse));
}

#[test]
fn a_refused_syn_is_answered_with_rst() {
    let mut net = gateway_net();
    let far = sa(Ipv4Addr::new(192, 0, 2, 9), 9);
    let (c, held) = connect_held(&mut net, far);
    assert_eq!(held.len(), 1);
    net.b.refuse_intercepted(&held[0]);
    net.run_for(Duration::from_millis(5));
    assert_eq!(net.a.connect(c, far), Err(NetError::ConnectionRefused));
}

#[test]
fn a_listener_still_gets_its_own_port() {
    let mut net = gateway_net();
    let l = common::listen_on(&mut net.b, sa(GATEWAY, 7000), 8);
    let to = sa(GATEWAY, 7000);
    let (_c, _s) = common::connect_pair(&mut net, l, to);
    assert!(syns(&mut net.b).is_empty(), "an owned SYN is not held");
}

#[test]
fn the_gateways_own_address_is_intercepted_too() {
    let mut net = gateway_net();
    let to = sa(GATEWAY, 8000);
    let (_c, held) = connect_held(&mut net, to);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].local, to);
}
