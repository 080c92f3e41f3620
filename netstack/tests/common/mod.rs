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
