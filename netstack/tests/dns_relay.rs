//! The DNS relay on `lo`: guest queries to 127.0.0.11:53 reach a real host
//! UDP socket (a fake resolver on 127.0.0.1) and its answers come back to
//! the guest socket that asked, from 127.0.0.11:53; other traffic is not
//! touched; host sockets are bounded, evicted least recently used first and
//! closed when idle; malformed packets pass through; and a capture of `lo`
//! holds both the query and the answer.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use common::*;
use netstack::link::{
    Capture, CaptureConfig, DnsRelay, Link, Loopback, MAX_RELAYS, RELAY_IDLE, Sniffer,
};
use netstack::{Duration, Instant, NetError, Stack, StackConfig};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr};

const LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 53);

fn listen_sa() -> SocketAddr {
    SocketAddr::V4(LISTEN)
}

// ---- a fake resolver --------------------------------------------------------

/// Every datagram the resolver got: (host source, payload).
type QueryLog = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// A host UDP socket on 127.0.0.1 answering each datagram on its own thread.
struct FakeResolver {
    addr: SocketAddr,
    log: QueryLog,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeResolver {
    /// Answers `answer:` followed by the query.
    fn echoing() -> FakeResolver {
        FakeResolver::start(|q| [b"answer:", q].concat())
    }

    fn start(answer: fn(&[u8]) -> Vec<u8>) -> FakeResolver {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sock.set_read_timeout(Some(StdDuration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let log = QueryLog::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                l.lock().unwrap().push((from, buf[..n].to_vec()));
                sock.send_to(&answer(&buf[..n]), from).unwrap();
            }
        });
        FakeResolver {
            addr,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn queries(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.log.lock().unwrap().clone()
    }

    /// Host sockets connected to the resolver now, as the kernel lists
    /// them: a count independent of the relay's own bookkeeping.
    fn connected_sockets(&self) -> usize {
        let rem = format!("0100007F:{:04X}", self.addr.port());
        let table = std::fs::read_to_string("/proc/net/udp").unwrap();
        let rows = table.lines().skip(1);
        rows.filter(|l| l.split_whitespace().nth(2) == Some(rem.as_str()))
            .count()
    }
}

impl Drop for FakeResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- a guest stack whose `lo` relays DNS -------------------------------------

struct Guest {
    s: Stack,
    now: Instant,
}

impl Guest {
    fn with_lo(lo: Box<dyn Link>) -> Guest {
        let now = Instant::from_secs(1);
        let cfg = StackConfig {
            random_seed: 7,
            ..StackConfig::default()
        };
        Guest {
            s: Stack::with_loopback(cfg, now, lo),
            now,
        }
    }

    fn relaying_to(upstream: SocketAddr) -> Guest {
        let relay = DnsRelay::new(Loopback::new(), LISTEN, upstream).unwrap();
        Guest::with_lo(Box::new(relay))
    }

    fn poll(&mut self) {
        self.now += Duration::from_millis(1);
        self.s.poll(self.now);
    }

    /// Whether a link descriptor of the stack is readable within `wait`.
    fn link_readable(&self, wait: StdDuration) -> bool {
        let fds = self.s.link_fds();
        let mut pfds: Vec<PollFd> = fds
            .iter()
            .map(|(_, fd)| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        let ms = u16::try_from(wait.as_millis()).unwrap();
        poll(&mut pfds, PollTimeout::from(ms)).unwrap() > 0
    }

    /// Polls, sleeping on the link descriptors in between, until `done`
    /// holds (true) or five seconds of real time passed (false).
    fn run_until(&mut self, mut done: impl FnMut(&mut Stack) -> bool) -> bool {
        let end = StdInstant::now() + StdDuration::from_secs(5);
        loop {
            self.poll();
            if done(&mut self.s) {
                return true;
            }
            if StdInstant::now() > end {
                return false;
            }
            self.link_readable(StdDuration::from_millis(20));
        }
    }

    /// Waits for a datagram on `id` and returns it.
    fn answer(&mut self, id: netstack::SocketId) -> (Vec<u8>, SocketAddr) {
        assert!(
            self.run_until(|s| s.readiness(id).unwrap().readable),
            "no answer within 5 s"
        );
        take(&mut self.s, id).unwrap()
    }
}

// ---- hand-made packets for driving the link directly --------------------------

/// An IPv4 UDP packet from `src` to `dst`, checksums filled.
fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        hop_limit: 64,
    };
    let mut f = vec![0; 28 + payload.len()];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut f[..]), &caps);
    UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    }
    .emit(
        &mut UdpPacket::new_unchecked(&mut f[20..]),
        &IpAddress::Ipv4(*src.ip()),
        &IpAddress::Ipv4(*dst.ip()),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    f
}

/// (source, destination, payload) of an IPv4 UDP packet the relay made.
fn parse_answer(f: &[u8]) -> (SocketAddrV4, SocketAddrV4, Vec<u8>) {
    let ip = Ipv4Packet::new_checked(f).unwrap();
    assert!(ip.verify_checksum());
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    assert!(udp.verify_checksum(&IpAddress::Ipv4(s), &IpAddress::Ipv4(d)));
    (
        SocketAddrV4::new(s, udp.src_port()),
        SocketAddrV4::new(d, udp.dst_port()),
        udp.payload().to_vec(),
    )
}

/// Reads the link until `n` frames came or five seconds passed, as the
/// stack does: until `recv` says `None`, then a flush, then a wait on the
/// link's descriptor.
fn recv_frames(link: &mut impl Link, now: Instant, n: usize) -> Vec<Vec<u8>> {
    let end = StdInstant::now() + StdDuration::from_secs(5);
    let mut out = Vec::new();
    while out.len() < n && StdInstant::now() < end {
        match link.recv(now) {
            Some(f) => out.push(f),
            None => {
                link.flush(now);
                let fd = link.fd().unwrap();
                let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut p, PollTimeout::from(20u16));
            }
        }
    }
    out
}

/// Gives the resolver time to receive what might still be in flight.
fn settle() {
    std::thread::sleep(StdDuration::from_millis(100));
}

// ---- through a stack --------------------------------------------------------

#[test]
fn query_gets_the_exact_answer_from_the_resolver_address() {
    let resolver = FakeResolver::echoing();
    let mut g = Guest::relaying_to(resolver.addr);
    let c = udp_socket(&mut g.s, Some(sa(Ipv4Addr::LOCALHOST, 0)));
    let local = g.s.local_addr(c).unwrap();
    assert_eq!(g.s.send_to(c, b"query-1", listen_sa()), Ok(7));
    let (data, from) = g.answer(c);
    assert_eq!(data, b"answer:query-1");
    assert_eq!(from, listen_sa());
    assert_eq!(take(&mut g.s, c), None);
    let q = resolver.queries();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].1, b"query-1");
    // Everything read: the link's descriptor is quiet again.
    assert!(!g.link_readable(StdDuration::ZERO));

    // A connected socket (as glibc's resolver uses) gets its answer too.
    let d = udp_socket(&mut g.s, None);
    g.s.connect(d, listen_sa()).unwrap();
    assert_eq!(g.s.send(d, b"query-2"), Ok(7));
    let (data, from) = g.answer(d);
    assert_eq!(
        (data.as_slice(), from),
        (&b"answer:query-2"[..], listen_sa())
    );
    assert_ne!(g.s.local_addr(d).unwrap(), local);
    assert!(!g.link_readable(StdDuration::ZERO));
}

#[test]
fn interleaved_queries_from_two_sockets_each_get_their_own_answers() {
    let resolver = FakeResolver::echoing();
    let mut g = Guest::relaying_to(resolver.addr);
    let a = udp_socket(&mut g.s, Some(sa(Ipv4Addr::LOCALHOST, 5001)));
    let b = udp_socket(&mut g.s, Some(sa(Ipv4Addr::LOCALHOST, 5002)));
    for (id, q) in [(a, "a1"), (b, "b1"), (a, "a2"), (b, "b2"), (a, "a3")] {
        g.s.send_to(id, q.as_bytes(), listen_sa()).unwrap();
    }
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    assert!(g.run_until(|s| {
        while let Some((d, from)) = take(s, a) {
            assert_eq!(from, listen_sa());
            got_a.push(d);
        }
        while let Some((d, from)) = take(s, b) {
            assert_eq!(from, listen_sa());
            got_b.push(d);
        }
        got_a.len() == 3 && got_b.len() == 2
    }));
    assert_eq!(got_a, [&b"answer:a1"[..], b"answer:a2", b"answer:a3"]);
    assert_eq!(got_b, [&b"answer:b1"[..], b"answer:b2"]);
    // One host socket per guest source: a's queries left from one port,
    // b's from another.
    let q = resolver.queries();
    let port_of = |payload: &[u8]| q.iter().find(|(_, p)| p == payload).unwrap().0;
    assert_eq!(port_of(b"a1"), port_of(b"a2"));
    assert_eq!(port_of(b"a1"), port_of(b"a3"));
    assert_eq!(port_of(b"b1"), port_of(b"b2"));
    assert_ne!(port_of(b"a1"), port_of(b"b1"));
    assert_eq!(resolver.connected_sockets(), 2);
}

/// The guest's view of a datagram to 127.0.0.11:`port` on a stack with
/// `lo`: (datagrams received by an unconnected socket, what a connected
/// socket's receive and `SO_ERROR` then report).
fn other_port_outcome(
    mut g: Guest,
    port: u16,
) -> (usize, Result<usize, NetError>, Option<NetError>) {
    let to = sa(LISTEN.ip().to_owned(), port);
    let u = udp_socket(&mut g.s, None);
    g.s.send_to(u, b"not dns", to).unwrap();
    let c = udp_socket(&mut g.s, None);
    g.s.connect(c, to).unwrap();
    g.s.send(c, b"not dns").unwrap();
    for _ in 0..50 {
        g.poll();
        g.link_readable(StdDuration::from_millis(2));
    }
    let mut n = 0;
    while take(&mut g.s, u).is_some() {
        n += 1;
    }
    let mut buf = [0u8; 64];
    let r = g.s.recv(c, &mut buf, NONE);
    (n, r, g.s.take_error(c).unwrap())
}

#[test]
fn datagram_to_another_port_is_not_relayed() {
    let resolver = FakeResolver::echoing();
    let with_relay = other_port_outcome(Guest::relaying_to(resolver.addr), 54);
    settle();
    assert_eq!(resolver.queries(), []);
    assert_eq!(resolver.connected_sockets(), 0);
    // Exactly what the guest saw before the relay existed.
    let plain = other_port_outcome(Guest::with_lo(Box::new(Loopback::new())), 54);
    assert_eq!(with_relay, plain);
    // Which is: nothing arrives, and the connected socket hears the ICMP
    // port unreachable the stack answered with.
    assert_eq!(with_relay, (0, Err(NetError::ConnectionRefused), None));
}

#[test]
fn large_answers_arrive_intact() {
    fn big(q: &[u8]) -> Vec<u8> {
        let n: usize = std::str::from_utf8(q).unwrap().parse().unwrap();
        tagged_bytes(n as u32, n)
    }
    let resolver = FakeResolver::start(big);
    let mut g = Guest::relaying_to(resolver.addr);
    let c = udp_socket(&mut g.s, None);
    for n in [60_000usize, 65_507, 0, 1] {
        g.s.send_to(c, n.to_string().as_bytes(), listen_sa())
            .unwrap();
        let (data, from) = g.answer(c);
        assert_eq!(from, listen_sa());
        assert_eq!(data.len(), n);
        assert!(data == tagged_bytes(n as u32, n), "{n}-byte answer differs");
    }
    // A 60000-byte query goes up whole too.
    let q = vec![b'7'; 60_000];
    let resolver = FakeResolver::echoing();
    let mut g = Guest::relaying_to(resolver.addr);
    let c = udp_socket(&mut g.s, None);
    g.s.send_to(c, &q, listen_sa()).unwrap();
    let (data, _) = g.answer(c);
    assert_eq!(resolver.queries()[0].1, q);
    assert!(data == [&b"answer:"[..], &q].concat());
}

// ---- the link driven directly -----------------------------------------------

#[test]
fn three_hundred_sources_hold_at_most_256_host_sockets() {
    let resolver = FakeResolver::echoing();
    let mut relay = DnsRelay::new(Loopback::new(), LISTEN, resolver.addr).unwrap();
    let now = Instant::from_secs(1);
    let source =
        |i: u16| SocketAddrV4::new(Ipv4Addr::new(127, 0, (i >> 8) as u8, i as u8), 4000 + i);
    let mut most = 0;
    for i in 0..300u16 {
        let q = format!("q{i}");
        relay.send(now, udp_packet(source(i), LISTEN, q.as_bytes()));
        assert!(relay.relay_count() <= MAX_RELAYS);
        most = most.max(resolver.connected_sockets());
    }
    assert!(most <= MAX_RELAYS, "{most} host sockets at once");
    let held = relay.relay_count();
    assert_eq!(resolver.connected_sockets(), held);
    // A host short of ephemeral ports holds fewer: the relay then closes
    // its least recently used socket to make room, as for the table limit.
    if ephemeral_ports() >= 1024 {
        assert_eq!(held, MAX_RELAYS);
    }
    // The resolver heard all 300.
    settle();
    let q = resolver.queries();
    assert_eq!(q.len(), 300);
    for (i, (_, payload)) in q.iter().enumerate() {
        assert_eq!(payload, format!("q{i}").as_bytes());
    }
    // The sources still mapped (the most recent) each get their own
    // answer; an answer whose socket was closed before it was read is
    // lost, never misdelivered.
    let frames = recv_frames(&mut relay, now, held);
    relay.flush(now);
    assert!(relay.recv(now).is_none());
    let mut answered = Vec::new();
    for f in &frames {
        let (from, to, payload) = parse_answer(f);
        assert_eq!(from, LISTEN);
        let i = (0..300u16).find(|&i| source(i) == to).unwrap();
        assert_eq!(payload, format!("answer:q{i}").as_bytes());
        answered.push(i);
    }
    answered.sort_unstable();
    let first_held = 300 - held as u16;
    assert_eq!(answered, (first_held..300).collect::<Vec<_>>());
}

/// How many ephemeral ports the host's network namespace has.
fn ephemeral_ports() -> u32 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut r = range.split_whitespace().map(|p| p.parse::<u32>().unwrap());
    let (lo, hi) = (r.next().unwrap(), r.next().unwrap());
    hi + 1 - lo
}

#[test]
fn least_recently_used_socket_is_closed_first_and_idle_ones_expire() {
    let resolver = FakeResolver::echoing();
    let relay = DnsRelay::new(Loopback::new(), LISTEN, resolver.addr).unwrap();
    let mut relay = relay.with_max_relays(3);
    let t0 = Instant::from_secs(10);
    let src = |p: u16| SocketAddrV4::new(Ipv4Addr::LOCALHOST, p);
    let ask = |relay: &mut DnsRelay<Loopback>, now: Instant, port: u16, q: &str| {
        relay.send(now, udp_packet(src(port), LISTEN, q.as_bytes()));
        let f = recv_frames(relay, now, 1);
        assert_eq!(f.len(), 1, "no answer to {q}");
        assert_eq!(parse_answer(&f[0]).2, format!("answer:{q}").as_bytes());
    };
    ask(&mut relay, t0, 1, "a1");
    ask(&mut relay, t0, 2, "b1");
    ask(&mut relay, t0, 3, "c1");
    ask(&mut relay, t0, 1, "a2"); // a is now the most recently used
    ask(&mut relay, t0, 4, "d1"); // full: b goes
    assert_eq!(relay.relay_count(), 3);
    ask(&mut relay, t0, 1, "a3");
    ask(&mut relay, t0, 2, "b2"); // b is back on a new socket; c goes
    ask(&mut relay, t0, 3, "c2");
    let q = resolver.queries();
    let port_of = |p: &str| q.iter().find(|(_, x)| x == p.as_bytes()).unwrap().0;
    assert_eq!(port_of("a1"), port_of("a2"));
    assert_eq!(port_of("a1"), port_of("a3"));
    assert_ne!(port_of("b1"), port_of("b2"));
    assert_ne!(port_of("c1"), port_of("c2"));
    assert_eq!(resolver.connected_sockets(), 3);

    // Idle sockets close after RELAY_IDLE of the stack's time, and the link
    // asks to be polled then.
    let t1 = t0 + Duration::from_secs(30);
    ask(&mut relay, t1, 1, "a4");
    let due = relay.poll_at().unwrap();
    assert!(due <= t0 + RELAY_IDLE);
    assert!(relay.recv(t0 + RELAY_IDLE).is_none());
    assert_eq!(relay.relay_count(), 1, "only a, used at t1, stays");
    assert!(relay.poll_at().unwrap() <= t1 + RELAY_IDLE);
    assert!(relay.recv(t1 + RELAY_IDLE).is_none());
    assert_eq!(relay.relay_count(), 0);
    assert_eq!(relay.poll_at(), None);
    assert_eq!(resolver.connected_sockets(), 0);
}

#[test]
fn malformed_and_other_packets_pass_through_untouched() {
    let resolver = FakeResolver::echoing();
    let mut relay = DnsRelay::new(Loopback::new(), LISTEN, resolver.addr).unwrap();
    let now = Instant::from_secs(1);
    let guest = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4000);
    let good = udp_packet(guest, LISTEN, b"query");
    let mut passed = Vec::new();
    // Every truncation, and broken lengths and header sizes.
    for n in 0..good.len() {
        passed.push(good[..n].to_vec());
    }
    for (at, v) in [
        (0, 0x44u8),
        (0, 0x4f),
        (2, 1),
        (3, 0xff),
        (25, 0),
        (25, 7),
        (25, 200),
    ] {
        let mut f = good.clone();
        f[at] = v;
        passed.push(f);
    }
    // Fragments: the first (more fragments set) and a later one.
    let mut first = good.clone();
    first[6] |= 0x20;
    let mut later = good.clone();
    later[7] = 3;
    passed.extend([first, later]);
    // TCP to port 53, UDP to port 54 and to another address, and IPv6.
    let mut tcp = good.clone();
    tcp[9] = 6;
    let other_port = udp_packet(guest, SocketAddrV4::new(*LISTEN.ip(), 54), b"query");
    let other_addr = udp_packet(
        guest,
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 12), 53),
        b"q",
    );
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    v6.extend([0; 32]);
    v6.extend([0x0f, 0xa0, 0, 53, 0, 8, 0, 0]);
    passed.extend([tcp, other_port, other_addr, v6]);
    // Random bytes, some of them made to look like IPv4 to 127.0.0.11.
    let mut rng = Rng(0x5eed);
    for i in 0..2000 {
        let len = rng.below(80);
        let mut f: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if i % 2 == 0 && len >= 20 {
            f[0] = 0x45;
            f[6] &= 0x1f;
            f[9] = 17;
            f[16..20].copy_from_slice(&LISTEN.ip().octets());
            if len >= 24 {
                f[22..24].copy_from_slice(&54u16.to_be_bytes());
            }
        }
        passed.push(f);
    }
    for f in &passed {
        relay.send(now, f.clone());
    }
    // The inner loopback hands every one back, unchanged and in order.
    for f in &passed {
        assert_eq!(relay.recv(now).as_ref(), Some(f));
    }
    settle();
    relay.flush(now);
    assert!(relay.recv(now).is_none());
    assert_eq!(resolver.queries(), []);
    assert_eq!(relay.relay_count(), 0);

    // A query with IP options and padding after the UDP datagram is relayed.
    let mut opts = good[..20].to_vec();
    opts.extend([1, 1, 1, 0]);
    opts.extend(&good[20..]);
    opts.extend([0xee; 6]);
    opts[0] = 0x46;
    opts[2..4].copy_from_slice(&(good.len() as u16 + 4).to_be_bytes());
    relay.send(now, opts);
    let f = recv_frames(&mut relay, now, 1);
    assert_eq!(
        parse_answer(&f[0]),
        (LISTEN, guest, b"answer:query".to_vec())
    );
    assert_eq!(resolver.queries()[0].1, b"query");
}

#[test]
fn refused_queries_are_dropped_and_the_socket_recovers() {
    // Nothing listens: each query draws an ICMP port unreachable, which
    // the connected host socket reports as ECONNREFUSED.
    let dead = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let mut relay = DnsRelay::new(Loopback::new(), LISTEN, dead_addr).unwrap();
    let now = Instant::from_secs(1);
    let guest = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4000);
    for _ in 0..5 {
        relay.send(now, udp_packet(guest, LISTEN, b"query"));
    }
    std::thread::sleep(StdDuration::from_millis(50));
    assert!(relay.recv(now).is_none());
    // The error was read: the descriptor is quiet.
    let fd = relay.fd().unwrap();
    let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
    assert_eq!(poll(&mut p, PollTimeout::ZERO).unwrap(), 0);
    assert_eq!(relay.relay_count(), 1);
}

// ---- capture ----------------------------------------------------------------

/// A DNS query for example.com, type A.
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend(b"\x07example\x03com\x00");
    q.extend([0, 1, 0, 1]);
    q
}

/// The query turned into its answer: example.com is 93.184.216.34.
fn dns_answer(q: &[u8]) -> Vec<u8> {
    let mut a = q.to_vec();
    a[2..4].copy_from_slice(&[0x81, 0x80]);
    a[6..8].copy_from_slice(&[0, 1]);
    a.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 93, 184, 216, 34]);
    a
}

fn tshark_fields(file: &std::path::Path, names: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file);
    cmd.args([
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
    ]);
    cmd.args(["-T", "fields", "-E", "occurrence=f"]);
    for n in names {
        cmd.args(["-e", n]);
    }
    let out = cmd.output().expect("tshark (Debian package tshark) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

#[test]
fn capture_of_lo_holds_the_query_and_the_answer_once() {
    let resolver = FakeResolver::start(dns_answer);
    let file: PathBuf =
        std::env::temp_dir().join(format!("dns-relay-{}.pcapng", std::process::id()));
    let cap = Capture::create(&file, CaptureConfig::default()).unwrap();
    // The order the Sentry uses: the relay around lo's sniffer, recording
    // what it takes off lo and puts on it as that sniffer's interface.
    let lo: Sniffer<Loopback> = cap.wrap(Loopback::new(), "lo").sent_only();
    let iface = lo.interface();
    let relay = DnsRelay::new(lo, LISTEN, resolver.addr).unwrap();
    let mut g = Guest::with_lo(Box::new(relay.record_into(cap.clone(), iface)));

    let c = udp_socket(&mut g.s, Some(sa(Ipv4Addr::LOCALHOST, 5353)));
    let peer = udp_socket(&mut g.s, Some(sa(Ipv4Addr::LOCALHOST, 7000)));
    g.s.send_to(c, &dns_query(0xbeef), listen_sa()).unwrap();
    let (data, from) = g.answer(c);
    assert_eq!((data, from), (dns_answer(&dns_query(0xbeef)), listen_sa()));
    // Ordinary lo traffic, still recorded once.
    g.s.send_to(c, b"plain", sa(Ipv4Addr::LOCALHOST, 7000))
        .unwrap();
    let (data, _) = g.answer(peer);
    assert_eq!(data, b"plain");
    let sum = cap.finish();
    assert_eq!(sum.interfaces.len(), 1);
    assert_eq!(sum.interfaces[0].written, 3);

    let rows = tshark_fields(
        &file,
        &[
            "ip.src",
            "udp.srcport",
            "ip.dst",
            "udp.dstport",
            "dns.id",
            "dns.flags.response",
            "dns.qry.name",
            "dns.a",
            "ip.checksum.status",
            "udp.checksum.status",
        ],
    );
    let _ = std::fs::remove_file(&file);
    let row = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(rows.len(), 3, "{rows:?}");
    // The guest's query: the stack leaves checksums to lo, which needs none.
    assert_eq!(
        rows[0][..8],
        row(&[
            "127.0.0.1",
            "5353",
            "127.0.0.11",
            "53",
            "0xbeef",
            "0",
            "example.com",
            ""
        ])[..]
    );
    // The relay's answer, with checksums tshark finds good (status 1).
    assert_eq!(
        rows[1],
        row(&[
            "127.0.0.11",
            "53",
            "127.0.0.1",
            "5353",
            "0xbeef",
            "1",
            "example.com",
            "93.184.216.34",
            "1",
            "1"
        ])
    );
    assert_eq!(
        rows[2][..4],
        row(&["127.0.0.1", "5353", "127.0.0.1", "7000"])[..]
    );
}
