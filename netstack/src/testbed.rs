//! Two hosts on one in-memory cable: the set-up the demo, the benches and
//! the tests share. Host `n` has MAC 02:00:00:00:00:n, 10.0.0.n/24 and
//! fd00::n/64. [`netns`] does the same with real namespaces and veths, for
//! the links backed by the host.

pub mod netns;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::link::{Link, pair};
use crate::{Duration, IfAddr, Instant, NicConfig, Stack, StackConfig};

/// Host `n`'s IPv4 address.
pub const fn host_v4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

/// Host `n`'s IPv6 address.
pub const fn host_v6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n as u16)
}

/// The `eth0` of host `n`.
pub fn host_nic(n: u8) -> NicConfig {
    NicConfig {
        name: "eth0".into(),
        mac: [0x02, 0, 0, 0, 0, n],
        addrs: vec![
            IfAddr {
                addr: IpAddr::V4(host_v4(n)),
                prefix_len: 24,
            },
            IfAddr {
                addr: IpAddr::V6(host_v6(n)),
                prefix_len: 64,
            },
        ],
        gateway_v4: None,
        gateway_v6: None,
    }
}

/// Host `n` with `cfg` (its seed made distinct per host) and its NIC on `link`.
pub fn host(n: u8, link: Box<dyn Link>, cfg: &StackConfig, now: Instant) -> Stack {
    let mut stack = Stack::new(
        StackConfig {
            random_seed: cfg.random_seed ^ u64::from(n),
            ..cfg.clone()
        },
        now,
    );
    stack
        .add_nic(link, host_nic(n))
        .expect("a host NIC configuration is valid");
    stack
}

/// Hosts 1 and 2 joined by a cable of `mtu` with a one-way `delay`
/// (checksums computed and verified, as on a wire).
pub fn two_hosts(mtu: usize, delay: Duration, now: Instant) -> (Stack, Stack) {
    let (ea, eb) = pair(mtu, delay, false);
    let cfg = StackConfig::default();
    (
        host(1, Box::new(ea), &cfg, now),
        host(2, Box::new(eb), &cfg, now),
    )
}

/// Frames queued between a test and a [`Wiretap`].
pub type Frames = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Vec<u8>>>>;

/// A cable end that also yields the frames a test pushes into `inject` (as
/// if from the wire, before the cable's own), and keeps a copy of the first
/// 4096 frames it sends in `sent`: for hostile-input tests and the fuzz
/// targets.
#[derive(Debug)]
pub struct Wiretap {
    pub inner: crate::link::PairEnd,
    pub inject: Frames,
    pub sent: Frames,
}

impl Link for Wiretap {
    fn caps(&self) -> crate::link::LinkCaps {
        self.inner.caps()
    }
    fn recv(&mut self, now: Instant) -> Option<Vec<u8>> {
        let injected = self.inject.lock().ok()?.pop_front();
        injected.or_else(|| self.inner.recv(now))
    }
    fn send(&mut self, now: Instant, frame: Vec<u8>) {
        if let Ok(mut sent) = self.sent.lock()
            && sent.len() < 4096
        {
            sent.push_back(frame.clone());
        }
        self.inner.send(now, frame);
    }
}
