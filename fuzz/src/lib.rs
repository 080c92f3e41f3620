//! What the fuzz targets share: a world of two stacks on a simulated clock
//! whose second host takes the fuzzer's frames, with sockets in the TCP
//! states a peer can reach, and checksum repair so that mutated frames get
//! past the checksum checks into the protocol code.

pub mod frames;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use netstack::link::pair;
use netstack::testbed::{Frames, Wiretap};
use netstack::{
    Domain, Duration, Instant, NetError, Protocol, RecvFlags, Shutdown, SocketId, Stack,
    StackConfig, testbed,
};

/// Host 1 (`a`, the well-behaved peer) and host 2 (`b`, fed the frames).
pub struct World {
    pub a: Stack,
    pub b: Stack,
    pub now: Instant,
    inject: Frames,
    /// Frames `a` sent while the sockets below were set up.
    pub seeds: Vec<Vec<u8>>,
}

/// B's port with a listener (and the connections below).
pub const PORT: u16 = 80;
/// B's UDP port.
pub const UDP_PORT: u16 = 53;

impl World {
    /// Two hosts with, on b: a listener on `PORT` (IPv4 and IPv6), an
    /// established connection, one b closed first (FIN-WAIT-2), one that a
    /// closed first (CLOSE-WAIT on b), one in TIME-WAIT, a UDP socket and
    /// data queued both ways.
    pub fn new() -> World {
        let (ea, eb) = pair(1500, Duration::ZERO, false);
        let sent: Frames = Arc::default();
        let inject: Frames = Arc::default();
        let cfg = StackConfig {
            random_seed: 7,
            ..StackConfig::default()
        };
        let now = Instant::from_secs(1);
        let a = testbed::host(
            1,
            Box::new(Wiretap {
                inner: ea,
                inject: Arc::default(),
                sent: Arc::clone(&sent),
            }),
            &cfg,
            now,
        );
        let b = testbed::host(
            2,
            Box::new(Wiretap {
                inner: eb,
                inject: Arc::clone(&inject),
                sent: Arc::default(),
            }),
            &cfg,
            now,
        );
        let mut w = World {
            a,
            b,
            now,
            inject,
            seeds: Vec::new(),
        };
        let v4 = SocketAddr::new(IpAddr::V4(testbed::host_v4(2)), PORT);
        let v6 = SocketAddr::new(IpAddr::V6(testbed::host_v6(2)), PORT);
        let l4 = w.listen(v4);
        let l6 = w.listen(v6);
        // Established, with data both ways.
        let (c, s) = w.connect(v4, l4);
        let _ = w.a.send(c, b"request");
        let _ = w.b.send(s, b"answer");
        // b closes first: FIN-WAIT-2 on b.
        let (_, s) = w.connect(v4, l4);
        let _ = w.b.close(s);
        // a closes first: CLOSE-WAIT on b.
        let (c, _) = w.connect(v6, l6);
        let _ = w.a.shutdown(c, Shutdown::Write);
        // Both closed, b first: TIME-WAIT on b.
        let (c, s) = w.connect(v4, l4);
        let _ = w.b.close(s);
        w.settle();
        let _ = w.a.close(c);
        let u = w.b.socket(Domain::Ipv4, Protocol::Udp).ok();
        if let Some(u) = u {
            let _ = w.b.bind(
                u,
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), UDP_PORT),
            );
        }
        let v = w.a.socket(Domain::Ipv4, Protocol::Udp).ok();
        if let Some(v) = v {
            let to = SocketAddr::new(IpAddr::V4(testbed::host_v4(2)), UDP_PORT);
            let _ = w.a.send_to(v, b"datagram", to);
        }
        w.settle();
        w.seeds = sent.lock().map(|s| s.iter().cloned().collect()).unwrap_or_default();
        w
    }

    fn listen(&mut self, addr: SocketAddr) -> SocketId {
        let domain = if addr.is_ipv4() { Domain::Ipv4 } else { Domain::Ipv6 };
        let l = self.b.socket(domain, Protocol::Tcp).expect("socket");
        self.b.bind(l, addr).expect("bind");
        self.b.listen(l, 64).expect("listen");
        l
    }

    /// Connects a to `to`; returns a's socket and b's accepted one.
    fn connect(&mut self, to: SocketAddr, listener: SocketId) -> (SocketId, SocketId) {
        let domain = if to.is_ipv4() { Domain::Ipv4 } else { Domain::Ipv6 };
        let c = self.a.socket(domain, Protocol::Tcp).expect("socket");
        assert_eq!(self.a.connect(c, to), Err(NetError::InProgress));
        let mut s = None;
        for _ in 0..1000 {
            self.poll(Duration::from_millis(1));
            if s.is_none() {
                s = self.b.accept(listener).ok().map(|(x, _)| x);
            }
            if s.is_some() && self.a.connect(c, to).is_ok() {
                break;
            }
        }
        (c, s.expect("the set-up connection was accepted"))
    }

    /// Lets the clock run `d` and polls both hosts.
    pub fn poll(&mut self, d: Duration) {
        self.now += d;
        self.a.poll(self.now);
        self.b.poll(self.now);
    }

    fn settle(&mut self) {
        for _ in 0..50 {
            self.poll(Duration::from_millis(1));
        }
    }

    /// Hands `frame` to b as if from the wire.
    pub fn inject(&mut self, frame: Vec<u8>) {
        if let Ok(mut q) = self.inject.lock() {
            q.push_back(frame);
        }
    }

    /// After the storm: let every timer the frames armed run out, then b
    /// must still accept a new connection and move bytes both ways. A
    /// panic here is a stack that the frames broke or stalled.
    pub fn check_still_serving(&mut self) {
        for _ in 0..100 {
            self.poll(Duration::from_millis(1));
        }
        for _ in 0..130 {
            self.poll(Duration::from_secs(1));
        }
        let to = SocketAddr::new(IpAddr::V4(testbed::host_v4(2)), 8080);
        let l = self.listen(to);
        let (c, s) = self.connect(to, l);
        assert_eq!(self.a.send(c, b"still alive"), Ok(11));
        let mut buf = [0u8; 16];
        let mut got = 0;
        for _ in 0..1000 {
            self.poll(Duration::from_millis(1));
            if let Ok(n) = self.b.recv(s, &mut buf, RecvFlags::default()) {
                got = n;
                break;
            }
        }
        assert_eq!(&buf[..got], b"still alive", "b stopped moving bytes");
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

/// Recomputes the IPv4 header checksum and the TCP or UDP checksum of an
/// Ethernet frame wherever its headers still parse, so that a mutation
/// reaches the code behind the checksum checks.
pub fn fix_checksums(frame: &mut [u8]) {
    netstack::link::fill_checksums(netstack::link::Medium::Ethernet, frame);
}

/// The NICs of host 2 (with loopback), as the Sentry's netlink and ioctl
/// answers see them (made once: they are plain data).
pub fn nics() -> &'static [netstack::NicInfo] {
    static NICS: std::sync::OnceLock<Vec<netstack::NicInfo>> = std::sync::OnceLock::new();
    NICS.get_or_init(|| {
        let (ea, _eb) = pair(1500, Duration::ZERO, false);
        let stack = testbed::host(2, Box::new(ea), &StackConfig::default(), Instant::from_secs(1));
        stack.nics().cloned().collect()
    })
}
