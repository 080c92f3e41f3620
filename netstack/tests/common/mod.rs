//! Two stacks joined by an in-memory cable, driven by a simulated clock.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netstack::link::{Impaired, Impairments, pair};
use netstack::{Duration, IfAddr, Instant, NicConfig, SocketId, Stack, StackConfig};

pub const A4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const B4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// Two hosts, `a` and `b`, on one subnet, with a simulated clock.
pub struct Net {
    pub a: Stack,
    pub b: Stack,
    pub now: Instant,
}

pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn nic(name: &str, mac_last: u8, v4: Ipv4Addr, v6: Ipv6Addr) -> NicConfig {
    NicConfig {
        name: name.into(),
        mac: [0x02, 0, 0, 0, 0, mac_last],
        addrs: vec![
            IfAddr {
                addr: v4.into(),
                prefix_len: 24,
            },
            IfAddr {
                addr: v6.into(),
                prefix_len: 64,
            },
        ],
        gateway_v4: None,
        gateway_v6: None,
    }
}

impl Net {
    pub fn new() -> Net {
        Net::with(
            1500,
            Duration::from_micros(50),
            Impairments::default(),
            StackConfig::default(),
        )
    }

    #[allow(clippy::needless_pass_by_value)] // `cfg` is moved into `b`'s config.
    pub fn with(mtu: usize, delay: Duration, imp: Impairments, cfg: StackConfig) -> Net {
        let now = Instant::from_secs(1);
        let (ea, eb) = pair(mtu, delay, false);
        let mut a = Stack::new(
            StackConfig {
                random_seed: 1,
                ..cfg.clone()
            },
            now,
        );
        let mut b = Stack::new(
            StackConfig {
                random_seed: 2,
                ..cfg
            },
            now,
        );
        let imp_b = Impairments {
            seed: imp.seed.wrapping_add(7),
            ..imp
        };
        a.add_nic(Box::new(Impaired::new(ea, imp)), nic("eth0", 1, A4, A6))
            .unwrap();
        b.add_nic(Box::new(Impaired::new(eb, imp_b)), nic("eth0", 2, B4, B6))
            .unwrap();
        Net { a, b, now }
    }

    /// Polls both stacks once at the current time.
    pub fn poll(&mut self) {
        self.a.poll(self.now);
        self.b.poll(self.now);
    }

    /// Advances the clock to the next deadline of either stack (at most `max`) and polls.
    pub fn step(&mut self, max: Duration) {
        self.poll();
        let next = [self.a.poll_at(), self.b.poll_at()]
            .into_iter()
            .flatten()
            .min();
        let limit = self.now + max;
        self.now = match next {
            Some(t) if t > self.now => t.min(limit),
            Some(_) => self.now,
            None => limit,
        };
        self.poll();
    }

    /// Steps until `done` holds; panics after `budget` of simulated time.
    pub fn run_until(&mut self, budget: Duration, mut done: impl FnMut(&mut Net) -> bool) {
        let end = self.now + budget;
        while !done(self) {
            assert!(self.now < end, "condition not reached within {budget}");
            self.step(Duration::from_millis(100));
        }
    }

    /// Runs for a stretch of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(end - self.now);
        }
    }
}

/// Connects `a` → `b`'s listener and returns (client, accepted server socket).
pub fn connect_pair(
    net: &mut Net,
    listener: SocketId,
    to: SocketAddr,
    domain: netstack::Domain,
) -> (SocketId, SocketId) {
    let c = net.a.socket(domain, netstack::Protocol::Tcp).unwrap();
    assert_eq!(net.a.connect(c, to), Err(netstack::NetError::InProgress));
    let mut server = None;
    net.run_until(Duration::from_secs(10), |n| {
        if server.is_none() {
            server = n.b.accept(listener).ok().map(|(s, _)| s);
        }
        server.is_some() && n.a.connect(c, to).is_ok()
    });
    (c, server.unwrap())
}

/// One stack alone (only `lo`), with a simulated clock.
pub struct Solo {
    pub s: Stack,
    pub now: Instant,
}

impl Solo {
    pub fn new() -> Solo {
        let now = Instant::from_secs(1);
        Solo {
            s: Stack::new(
                StackConfig {
                    random_seed: 3,
                    ..StackConfig::default()
                },
                now,
            ),
            now,
        }
    }

    /// Advances the clock to the stack's next deadline (at most `max`) and polls.
    pub fn step(&mut self, max: Duration) {
        self.s.poll(self.now);
        let limit = self.now + max;
        self.now = match self.s.poll_at() {
            Some(t) if t > self.now => t.min(limit),
            Some(_) => self.now,
            None => limit,
        };
        self.s.poll(self.now);
    }

    /// Steps until `done` holds; panics after `budget` of simulated time.
    pub fn run_until(&mut self, budget: Duration, mut done: impl FnMut(&mut Solo) -> bool) {
        let end = self.now + budget;
        while !done(self) {
            assert!(self.now < end, "condition not reached within {budget}");
            self.step(Duration::from_millis(100));
        }
    }

    /// Runs for a stretch of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(end - self.now);
        }
    }
}

/// Deterministic bytes for datagram `tag`, so that any mix-up shows.
pub fn tagged_bytes(tag: u32, len: usize) -> Vec<u8> {
    let mut x = tag.wrapping_mul(0x9e37_79b9) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// An ICMP or ICMPv6 echo request as a ping socket takes it: header (checksum
/// and identifier left zero, the stack fills them) and payload.
pub fn echo_request(ty: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![ty, 0, 0, 0, 0, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Decides whether a frame sent on a link at the given time goes through
/// (`true`) or is dropped; it may also just watch the frames go by.
pub type FrameFilter = Box<dyn FnMut(Instant, &[u8]) -> bool + Send>;

/// A link that passes on only the frames its filter accepts, as a firewall
/// with a DROP rule would.
pub struct Filtered<L> {
    inner: L,
    keep: FrameFilter,
}

impl<L> Filtered<L> {
    pub fn new(inner: L, keep: FrameFilter) -> Self {
        Filtered { inner, keep }
    }
}

impl<L: netstack::Link> netstack::Link for Filtered<L> {
    fn caps(&self) -> netstack::link::LinkCaps {
        self.inner.caps()
    }
    fn recv(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.inner.recv(now)
    }
    fn send(&mut self, now: Instant, frame: Vec<u8>) {
        if (self.keep)(now, &frame) {
            self.inner.send(now, frame);
        } else {
            self.inner.recycle(frame);
        }
    }
    fn buffer(&mut self) -> Vec<u8> {
        self.inner.buffer()
    }
    fn recycle(&mut self, frame: Vec<u8>) {
        self.inner.recycle(frame);
    }
    fn poll_at(&self) -> Option<Instant> {
        self.inner.poll_at()
    }
}

/// Whether an Ethernet frame carries an IPv4 or IPv6 TCP segment (no extension headers).
pub fn is_tcp_frame(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.get(14 + 9) == Some(&6),
        Some([0x86, 0xdd]) => frame.get(14 + 6) == Some(&6),
        _ => false,
    }
}

impl Net {
    /// Like [`Net::with`] without impairments, but every frame each side sends
    /// first passes its filter (`None` lets everything through).
    pub fn with_filters(
        mtu: usize,
        delay: Duration,
        cfg: &StackConfig,
        filter_a: Option<FrameFilter>,
        filter_b: Option<FrameFilter>,
    ) -> Net {
        let now = Instant::from_secs(1);
        let (ea, eb) = pair(mtu, delay, false);
        let mut a = Stack::new(
            StackConfig {
                random_seed: 1,
                ..cfg.clone()
            },
            now,
        );
        let mut b = Stack::new(
            StackConfig {
                random_seed: 2,
                ..cfg.clone()
            },
            now,
        );
        let keep_all = || -> FrameFilter { Box::new(|_, _: &[u8]| true) };
        let la = Filtered::new(ea, filter_a.unwrap_or_else(keep_all));
        let lb = Filtered::new(eb, filter_b.unwrap_or_else(keep_all));
        a.add_nic(Box::new(la), nic("eth0", 1, A4, A6)).unwrap();
        b.add_nic(Box::new(lb), nic("eth0", 2, B4, B6)).unwrap();
        Net { a, b, now }
    }
}
