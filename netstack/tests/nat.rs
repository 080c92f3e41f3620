//! The NAT gateway with real host sockets on the host's loopback: a guest
//! stack behind it reaches host servers through the gateway's address (with
//! `host_loopback`), and published ports reach the guest.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use common::tagged_bytes;
use netstack::nat::{Nat, NatConfig, Publish};
use netstack::{Domain, Instant, NetError, Protocol, RecvFlags, SocketId, Stack, StackConfig};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

struct Sandbox {
    guest: Stack,
    nat: Nat,
    start: StdInstant,
}

impl Sandbox {
    fn new(cfg: NatConfig) -> Sandbox {
        let now = Instant::from_micros(0);
        let (nat, link, nic) = Nat::new(cfg, now).unwrap();
        let mut guest = Stack::new(StackConfig::default(), now);
        guest.add_nic(Box::new(link), nic).unwrap();
        Sandbox {
            guest,
            nat,
            start: StdInstant::now(),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    /// One round: both stacks, then a short wait for the host sockets.
    fn turn(&mut self) {
        let now = self.now();
        self.guest.poll(now);
        self.nat.poll(now);
        self.guest.poll(now);
        let mut fds = [PollFd::new(self.nat.fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(1u8));
    }

    fn until<T>(&mut self, what: &str, mut f: impl FnMut(&mut Self) -> Option<T>) -> T {
        let end = StdInstant::now() + StdDuration::from_secs(10);
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(StdInstant::now() < end, "timed out: {what}");
            self.turn();
        }
    }

    fn connect(&mut self, to: SocketAddr) -> Result<SocketId, NetError> {
        let c = self.guest.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
        assert_eq!(self.guest.connect(c, to), Err(NetError::InProgress));
        self.until("connect", |s| match s.guest.connect(c, to) {
            Err(NetError::Already) => None,
            Ok(()) => Some(Ok(c)),
            Err(e) => Some(Err(e)),
        })
    }

    fn echo(&mut self, c: SocketId, data: &[u8]) -> Vec<u8> {
        let (mut sent, mut got) = (0, Vec::new());
        let mut buf = vec![0u8; 65536];
        self.until("echo", |s| {
            if sent < data.len() {
                sent += s.guest.send(c, &data[sent..]).unwrap_or(0);
            }
            while let Ok(n @ 1..) = s.guest.recv(c, &mut buf, RecvFlags::default()) {
                got.extend_from_slice(&buf[..n]);
            }
            (got.len() >= data.len()).then_some(())
        });
        got
    }
}

fn echo_server() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn gateway(port: u16) -> SocketAddr {
    SocketAddr::from((NatConfig::default().gateway, port))
}

#[test]
fn tcp_reaches_the_hosts_loopback_through_the_gateway_when_allowed() {
    let server = echo_server();
    let mut sb = Sandbox::new(NatConfig {
        host_loopback: true,
        ..NatConfig::default()
    });
    let c = sb.connect(gateway(server.port())).unwrap();
    let data = tagged_bytes(3, 3 << 20);
    assert!(sb.echo(c, &data) == data, "echo differs");
    // Closing ends the flow on both sides.
    sb.guest.close(c).unwrap();
    sb.until("flow closed", |s| (s.nat.flow_count() == 0).then_some(()));
}

#[test]
fn the_hosts_loopback_is_refused_by_default_and_closed_ports_refuse() {
    let server = echo_server();
    let mut sb = Sandbox::new(NatConfig::default());
    assert_eq!(
        sb.connect(gateway(server.port())),
        Err(NetError::ConnectionRefused)
    );
    let mut sb = Sandbox::new(NatConfig {
        host_loopback: true,
        ..NatConfig::default()
    });
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert_eq!(sb.connect(gateway(port)), Err(NetError::ConnectionRefused));
}

#[test]
fn udp_goes_out_and_answers_come_back() {
    let host = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = host.local_addr().unwrap().port();
    let mut sb = Sandbox::new(NatConfig {
        host_loopback: true,
        ..NatConfig::default()
    });
    let u = sb.guest.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    sb.guest.send_to(u, b"ping", gateway(port)).unwrap();
    host.set_read_timeout(Some(StdDuration::from_millis(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = sb.until("datagram at the host", |_| host.recv_from(&mut buf).ok());
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from.ip(), std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
    host.send_to(b"pong", from).unwrap();
    let mut got = [0u8; 64];
    let d = sb.until("datagram at the guest", |s| {
        s.guest.recv_from(u, &mut got, RecvFlags::default()).ok()
    });
    assert_eq!(&got[..d.copied], b"pong");
    assert_eq!(
        d.from,
        gateway(port),
        "the host's loopback shows as the gateway"
    );
}

#[test]
fn published_ports_reach_the_guest() {
    let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let hport = probe.local_addr().unwrap().port();
    drop(probe);
    let uprobe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let uport = uprobe.local_addr().unwrap().port();
    drop(uprobe);
    let publish = vec![
        format!("127.0.0.1:{hport}:80").parse::<Publish>().unwrap(),
        format!("127.0.0.1:{uport}:53/udp")
            .parse::<Publish>()
            .unwrap(),
    ];
    let mut sb = Sandbox::new(NatConfig {
        publish,
        ..NatConfig::default()
    });
    let l = sb.guest.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    sb.guest.bind(l, "0.0.0.0:80".parse().unwrap()).unwrap();
    sb.guest.listen(l, 8).unwrap();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", hport)).unwrap();
        s.write_all(b"hello guest").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        back
    });
    let (a, peer) = sb.until("accept", |s| s.guest.accept(l).ok());
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(NatConfig::default().gateway)
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    sb.until("request", |s| {
        match s.guest.recv(a, &mut buf, RecvFlags::default()) {
            Ok(0) => Some(()),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                None
            }
            Err(_) => None,
        }
    });
    assert_eq!(got, b"hello guest");
    sb.guest.send(a, b"hello host").unwrap();
    sb.guest.close(a).unwrap();
    while !client.is_finished() {
        sb.turn();
    }
    assert_eq!(client.join().unwrap(), b"hello host");

    // UDP: a host peer writes to the published port; the guest's reply
    // comes back from that port.
    let u = sb.guest.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    sb.guest.bind(u, "0.0.0.0:53".parse().unwrap()).unwrap();
    let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    peer.send_to(b"query", ("127.0.0.1", uport)).unwrap();
    let mut q = [0u8; 64];
    let d = sb.until("query at the guest", |s| {
        s.guest.recv_from(u, &mut q, RecvFlags::default()).ok()
    });
    assert_eq!(&q[..d.copied], b"query");
    sb.guest.send_to(u, b"answer", d.from).unwrap();
    peer.set_read_timeout(Some(StdDuration::from_millis(10)))
        .unwrap();
    let (n, from) = sb.until("answer at the peer", |_| peer.recv_from(&mut q).ok());
    assert_eq!(&q[..n], b"answer");
    assert_eq!(from.port(), uport);
}

#[test]
fn a_host_sender_outrunning_the_guest_loses_nothing() {
    // The host writes far more than the gateway's buffers hold while the
    // guest reads nothing; the flow must wait, not end.
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let data = tagged_bytes(9, 8 << 20);
    let expect = data.clone();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(&data).unwrap();
    });
    let mut sb = Sandbox::new(NatConfig {
        host_loopback: true,
        ..NatConfig::default()
    });
    let c = sb.connect(gateway(port)).unwrap();
    let stall = StdInstant::now() + StdDuration::from_millis(300);
    while StdInstant::now() < stall {
        sb.turn();
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    sb.until("all bytes and end of file", |s| {
        loop {
            match s.guest.recv(c, &mut buf, RecvFlags::default()) {
                Ok(0) => return Some(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return None,
            }
        }
    });
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "bytes differ");
}

#[test]
fn an_icmp_error_for_a_relayed_datagram_reaches_the_guest() {
    let closed = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut sb = Sandbox::new(NatConfig {
        host_loopback: true,
        ..NatConfig::default()
    });
    let u = sb.guest.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    sb.guest.connect(u, gateway(port)).unwrap();
    sb.guest.send(u, b"anyone?").unwrap();
    let err = sb.until("the port unreachable error", |s| {
        s.guest.take_error(u).ok().flatten()
    });
    assert_eq!(err, NetError::ConnectionRefused);
}
