//! TCP between two stacks over an in-memory cable, on a simulated clock.

mod common;

use common::*;
use netstack::{Domain, NetError, Protocol, RecvFlags};

#[test]
fn handshake_and_echo() {
    let mut net = Net::new();
    let l = net.b.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    net.b.bind(l, sa(B4, 80)).unwrap();
    net.b.listen(l, 16).unwrap();
    let (c, s) = connect_pair(&mut net, l, sa(B4, 80), Domain::Ipv4);
    assert_eq!(net.a.peer_addr(c).unwrap(), sa(B4, 80));
    assert_eq!(net.b.local_addr(s).unwrap(), sa(B4, 80));
    assert_eq!(net.b.peer_addr(s).unwrap(), net.a.local_addr(c).unwrap());
    assert_eq!(net.a.send(c, b"hello").unwrap(), 5);
    let mut buf = [0u8; 16];
    net.run_until(netstack::Duration::from_secs(1), |n| {
        n.b.recv_queue(s).unwrap() == 5
    });
    assert_eq!(net.b.recv(s, &mut buf, RecvFlags::default()).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(
        net.b.recv(s, &mut buf, RecvFlags::default()),
        Err(NetError::WouldBlock)
    );
}
