//! Two stacks joined by an in-memory cable (or one stack alone), driven by a
//! simulated clock, and the socket helpers the tests share.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netstack::link::{Impaired, Impairments, Layer, Layered, Link, pair, pass_on};
use netstack::{
    Domain, Duration, Instant, NetError, Protocol, RecvFlags, SocketId, Stack, StackConfig, testbed,
};

pub const A4: Ipv4Addr = testbed::host_v4(1);
pub const B4: Ipv4Addr = testbed::host_v4(2);
pub const A6: Ipv6Addr = testbed::host_v6(1);
pub const B6: Ipv6Addr = testbed::host_v6(2);

/// Plain receive flags.
pub const NONE: RecvFlags = RecvFlags { peek: false };
/// `MSG_PEEK`.
pub const PEEK: RecvFlags = RecvFlags { peek: true };

/// The socket address `ip`:`port`.
pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The socket domain of `addr`'s family.
pub fn domain_of(addr: SocketAddr) -> Domain {
    match addr {
        SocketAddr::V4(_) => Domain::Ipv4,
        SocketAddr::V6(_) => Domain::Ipv6,
    }
}

// ---- the simulated clock ----------------------------------------------------

/// Stacks sharing one simulated clock, and the loops that drive them.
pub trait Sim: Sized {
    /// The simulated clock.
    fn clock(&mut self) -> &mut Instant;

    /// Every stack the clock drives.
    fn stacks(&mut self) -> impl Iterator<Item = &mut Stack>;

    /// Polls every stack once at the current time.
    fn poll(&mut self) {
        let now = *self.clock();
        for s in self.stacks() {
            s.poll(now);
        }
    }

    /// Advances the clock to the next deadline of any stack (at most `max`) and polls.
    fn step(&mut self, max: Duration) {
        self.poll();
        let now = *self.clock();
        let next = self.stacks().filter_map(|s| s.poll_at()).min();
        let limit = now + max;
        *self.clock() = match next {
            Some(t) if t > now => t.min(limit),
            Some(_) => now,
            None => limit,
        };
        self.poll();
    }

    /// Steps until `done` holds; panics after `budget` of simulated time.
    fn run_until(&mut self, budget: Duration, mut done: impl FnMut(&mut Self) -> bool) {
        let end = *self.clock() + budget;
        while !done(self) {
            assert!(*self.clock() < end, "condition not reached within {budget}");
            self.step(Duration::from_millis(100));
        }
    }

    /// Runs for a stretch of simulated time.
    fn run_for(&mut self, d: Duration) {
        let end = *self.clock() + d;
        while *self.clock() < end {
            let left = end - *self.clock();
            self.step(left);
        }
    }
}

/// Picks the stack a helper works on out of a simulation.
pub type Side<S> = fn(&mut S) -> &mut Stack;

/// Host `a` of a [`Net`], as a [`Side`].
pub fn side_a(n: &mut Net) -> &mut Stack {
    &mut n.a
}

/// Host `b` of a [`Net`], as a [`Side`].
pub fn side_b(n: &mut Net) -> &mut Stack {
    &mut n.b
}

// ---- two hosts on a cable, or one alone -------------------------------------

/// Two hosts, `a` and `b`, on one subnet, with a simulated clock.
pub struct Net {
    pub a: Stack,
    pub b: Stack,
    pub now: Instant,
}

impl Sim for Net {
    fn clock(&mut self) -> &mut Instant {
        &mut self.now
    }
    fn stacks(&mut self) -> impl Iterator<Item = &mut Stack> {
        [&mut self.a, &mut self.b].into_iter()
    }
}

impl Net {
    /// A clean 1500-byte MTU cable with a 50 us delay.
    pub fn new() -> Net {
        Net::impaired(Impairments::default())
    }

    /// A 1500-byte MTU cable with a 50 us delay and the given impairments.
    pub fn impaired(imp: Impairments) -> Net {
        Net::with(1500, Duration::from_micros(50), imp, StackConfig::default())
    }

    /// Like [`Net::new`], but with 1% loss and 1% reordering each way.
    pub fn lossy() -> Net {
        Net::impaired(Impairments {
            loss_ppm: 10_000,
            reorder_ppm: 10_000,
            duplicate_ppm: 0,
            seed: 42,
            ..Impairments::default()
        })
    }

    #[allow(clippy::needless_pass_by_value)] // Callers build `cfg` in the call.
    /// A cable of `mtu` bytes and one-way `delay`, impaired by `imp`, between hosts configured from `cfg`.
    pub fn with(mtu: usize, delay: Duration, imp: Impairments, cfg: StackConfig) -> Net {
        let (ea, eb) = pair(mtu, delay, false);
        let imp_b = Impairments {
            seed: imp.seed.wrapping_add(7),
            ..imp
        };
        Net::joined(&cfg, Impaired::new(ea, imp), Impaired::new(eb, imp_b))
    }

    /// Like [`Net::with`] without impairments, but every frame each side sends
    /// first passes its filter (`None` lets everything through).
    pub fn with_filters(
        mtu: usize,
        delay: Duration,
        cfg: &StackConfig,
        filter_a: Option<FrameFilter>,
        filter_b: Option<FrameFilter>,
    ) -> Net {
        let (ea, eb) = pair(mtu, delay, false);
        let keep_all = || -> FrameFilter { Box::new(|_, _: &[u8]| true) };
        let la = filtered(ea, filter_a.unwrap_or_else(keep_all));
        let lb = filtered(eb, filter_b.unwrap_or_else(keep_all));
        Net::joined(cfg, la, lb)
    }

    /// Hosts `a` (testbed host 1) and `b` (host 2), configured from `cfg`
    /// with seeds 1 and 2, on the cable ends `la` and `lb`.
    fn joined(cfg: &StackConfig, la: impl Link + 'static, lb: impl Link + 'static) -> Net {
        let now = Instant::from_secs(1);
        let seeded = StackConfig {
            random_seed: 0,
            ..cfg.clone()
        };
        let a = testbed::host(1, Box::new(la), &seeded, now);
        let b = testbed::host(2, Box::new(lb), &seeded, now);
        Net { a, b, now }
    }
}

/// One stack alone (only `lo`), with a simulated clock.
pub struct Solo {
    pub s: Stack,
    pub now: Instant,
}

impl Sim for Solo {
    fn clock(&mut self) -> &mut Instant {
        &mut self.now
    }
    fn stacks(&mut self) -> impl Iterator<Item = &mut Stack> {
        std::iter::once(&mut self.s)
    }
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

    /// The one stack, as a [`Side`].
    pub fn stack(&mut self) -> &mut Stack {
        &mut self.s
    }
}

// ---- sockets ----------------------------------------------------------------

/// A TCP listener of `addr`'s family, bound to `addr`.
pub fn listen_on(st: &mut Stack, addr: SocketAddr, backlog: i32) -> SocketId {
    let l = st.socket(domain_of(addr), Protocol::Tcp).unwrap();
    st.bind(l, addr).unwrap();
    st.listen(l, backlog).unwrap();
    l
}

/// A UDP socket of `bind`'s family bound to it, or an unbound IPv4 one.
pub fn udp_socket(st: &mut Stack, bind: Option<SocketAddr>) -> SocketId {
    let domain = bind.map_or(Domain::Ipv4, domain_of);
    let id = st.socket(domain, Protocol::Udp).unwrap();
    if let Some(addr) = bind {
        st.bind(id, addr).unwrap();
    }
    id
}

/// Connects a new socket on `client`'s stack to `to` and steps, for at most
/// `budget`, until `server`'s `listener` accepted it and the connect
/// completed; returns (client, accepted socket, the peer `accept` reported).
pub fn connect_between<S: Sim>(
    sim: &mut S,
    client: Side<S>,
    server: Side<S>,
    listener: SocketId,
    to: SocketAddr,
    budget: Duration,
) -> (SocketId, SocketId, SocketAddr) {
    let c = client(sim).socket(domain_of(to), Protocol::Tcp).unwrap();
    assert_eq!(client(sim).connect(c, to), Err(NetError::InProgress));
    let mut accepted = None;
    sim.run_until(budget, |n| {
        if accepted.is_none() {
            accepted = server(n).accept(listener).ok();
        }
        accepted.is_some() && client(n).connect(c, to).is_ok()
    });
    let (s, peer) = accepted.unwrap();
    (c, s, peer)
}

/// Connects a new socket on `a` to `b`'s `listener` at `to`, and returns
/// (client, accepted socket, the peer address `accept` reported).
pub fn connect_accept(
    net: &mut Net,
    listener: SocketId,
    to: SocketAddr,
) -> (SocketId, SocketId, SocketAddr) {
    connect_between(net, side_a, side_b, listener, to, Duration::from_secs(10))
}

/// Connects `a` → `b`'s listener and returns (client, accepted server socket).
pub fn connect_pair(net: &mut Net, listener: SocketId, to: SocketAddr) -> (SocketId, SocketId) {
    let (c, s, _) = connect_accept(net, listener, to);
    (c, s)
}

/// Receives one whole datagram, or `None` if none is queued.
pub fn take(st: &mut Stack, id: SocketId) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70_000];
    match st.recv_from(id, &mut buf, NONE) {
        Ok(d) => {
            assert_eq!(d.copied, d.len, "a 70000-byte buffer truncated a datagram");
            buf.truncate(d.copied);
            Some((buf, d.from))
        }
        Err(NetError::WouldBlock) => None,
        Err(e) => panic!("recv_from failed: {e:?}"),
    }
}

/// Checks that the next datagram queued on `id` is `data`, from `from`.
pub fn expect_datagram(st: &mut Stack, id: SocketId, data: &[u8], from: SocketAddr) {
    assert_eq!(take(st, id), Some((data.to_vec(), from)));
}

/// Runs the net until `id` on `a` is readable.
pub fn wait_a(net: &mut Net, id: SocketId) {
    net.run_until(Duration::from_secs(2), |n| {
        n.a.readiness(id).unwrap().readable
    });
}

/// Runs the net until `id` on `b` is readable.
pub fn wait_b(net: &mut Net, id: SocketId) {
    net.run_until(Duration::from_secs(2), |n| {
        n.b.readiness(id).unwrap().readable
    });
}

/// Reads everything readable now from `id` through `buf`, without waiting,
/// handing each piece to `sink`; returns whether end of file was seen.
pub fn read_ready(
    st: &mut Stack,
    id: SocketId,
    buf: &mut [u8],
    mut sink: impl FnMut(&[u8]),
) -> bool {
    loop {
        match st.recv(id, buf, NONE) {
            Ok(0) => return true,
            Ok(n) => sink(&buf[..n]),
            Err(NetError::WouldBlock) => return false,
            Err(e) => panic!("recv failed with {e:?}"),
        }
    }
}

/// Sends `msg` on `from`'s stream socket `c` and checks that exactly it
/// arrives at `to`'s socket `s` within a second.
pub fn deliver<S: Sim>(
    sim: &mut S,
    from: Side<S>,
    c: SocketId,
    to: Side<S>,
    s: SocketId,
    msg: &[u8],
) {
    let len = msg.len();
    assert_eq!(from(sim).send(c, msg), Ok(len));
    sim.run_until(Duration::from_secs(1), |n| to(n).recv_queue(s) == Ok(len));
    let mut buf = vec![0u8; len + 16];
    assert_eq!(to(sim).recv(s, &mut buf, NONE), Ok(len));
    assert_eq!(&buf[..len], msg);
}

// ---- data -------------------------------------------------------------------

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

/// A xorshift64 generator: cheap, reproducible choices for random tests.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One element of `v`.
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

/// An ICMP or ICMPv6 echo request as a ping socket takes it: header (checksum
/// and identifier left zero, the stack fills them) and payload.
pub fn echo_request(ty: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![ty, 0, 0, 0, 0, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

// ---- links ------------------------------------------------------------------

/// Decides whether a frame sent on a link at the given time goes through
/// (`true`) or is dropped; it may also just watch the frames go by.
pub type FrameFilter = Box<dyn FnMut(Instant, &[u8]) -> bool + Send>;

/// A link that passes on only the frames its filter accepts, as a firewall
/// with a DROP rule would.
pub type Filtered<L> = Layered<L, Filter>;

/// `inner` behind `keep`.
pub fn filtered<L: Link>(inner: L, keep: FrameFilter) -> Filtered<L> {
    Layered::wrap(inner, Filter(keep))
}

/// The layer of a [`Filtered`] link.
pub struct Filter(FrameFilter);

impl Layer for Filter {
    fn outbound(&mut self, link: &mut dyn Link, now: Instant, frame: Vec<u8>, mss: Option<u16>) {
        if (self.0)(now, &frame) {
            pass_on(link, now, frame, mss);
        } else {
            link.recycle(frame);
        }
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
