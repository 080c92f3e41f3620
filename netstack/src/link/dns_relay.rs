//! Relays the guest's DNS queries to Docker's embedded resolver.
//!
//! Docker answers DNS at 127.0.0.11:53 inside the container's network
//! namespace. The guest's `lo` is our in-process [`Loopback`](super::Loopback),
//! so a query sent there would never leave the Sentry; but the Sentry itself
//! lives in that namespace, where a host UDP socket reaches the resolver.
//! [`DnsRelay`] wraps the loopback link: an IPv4 UDP datagram sent to the
//! listening address leaves through a host socket connected to the upstream
//! resolver instead of the inner link, and each answer comes back from
//! [`Link::recv`] as an IPv4 UDP packet from the listening address to the
//! guest socket that asked. There is one host socket per guest source
//! address and port, so answers map back without looking inside them.
//! Everything else (TCP to port 53, other ports, fragments, IPv6, malformed
//! packets) passes to the inner link untouched.
//!
//! The host sockets sit in an epoll set, level-triggered, which is the
//! link's [`Link::fd`]: it is readable while an answer waits, and `recv`
//! reads until no socket has one, so it is not readable once `recv` returned
//! `None`. The set is looked at once per instant: after `recv` returned
//! `None`, answers that arrive are read at a later `now` or after
//! [`Link::flush`] (the stack flushes at the end of every poll). Guest input is untrusted: at most [`MAX_RELAYS`] sockets exist
//! (the least recently used one is closed for a new source), and one idle
//! for [`RELAY_IDLE`] is closed.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr};

use super::{Capture, CaptureInterface, Direction, Layer, Layered, Link, pass_on};

/// Most host sockets open at once (one per guest source address and port).
pub const MAX_RELAYS: usize = 256;
/// A host socket that neither sent nor received for this long is closed.
pub const RELAY_IDLE: Duration = Duration::from_secs(60);

/// The epoll token of the inner link's descriptor; relay sockets count up from 0.
const INNER_TOKEN: u64 = u64::MAX;
/// IPv4 and UDP headers, as synthesized (no IP options).
const HEADERS: usize = 20 + 8;
/// The largest UDP payload an IPv4 packet carries.
const MAX_ANSWER: usize = u16::MAX as usize - HEADERS;
/// Larger than any UDP payload (IPv6's is at most 65527), so nothing is cut.
const SCRATCH: usize = 1 << 16;
/// Rounds of `epoll_wait` in one `recv`: each finds sockets that turned
/// readable while the last round was read. Bounded so that a socket that
/// reports readiness but never yields data cannot hold the stack.
const WAIT_ROUNDS: usize = 8;
/// Read errors (each consumes a pending ICMP error) taken in one `recv`.
const MAX_ERRORS: usize = 64;

/// One host socket, connected to the upstream resolver, serving one guest source.
#[derive(Debug)]
struct Relay {
    sock: UdpSocket,
    /// Its epoll token, never reused: a token read from a stale event set
    /// finds no socket instead of the wrong one.
    token: u64,
    /// When it last sent or received, for the idle timeout.
    last: Instant,
    /// A counter value at its last use, for least-recently-used eviction
    /// (unlike `last`, distinct even when the clock stood still).
    used: u64,
}

/// What reading one relay socket gave.
enum Read {
    /// An answer, as a packet for the guest.
    Packet(Vec<u8>),
    /// Something that is not an answer was consumed (an error, an oversized
    /// datagram): the socket may hold more.
    Consumed,
    /// Nothing to read, or no such socket any more.
    Empty,
}

/// A link that answers the guest's UDP queries to one address (Docker's
/// 127.0.0.11:53) by relaying them through host sockets, and otherwise is
/// the link it wraps: a [`DnsRelayer`] around it.
pub type DnsRelay<L> = Layered<L, DnsRelayer>;

impl<L: Link> DnsRelay<L> {
    /// Wraps `inner` (the loopback link): UDP datagrams to `listen` go to
    /// `upstream` through host sockets, whose answers come back from
    /// `listen`. Fails if the epoll set cannot be made or the inner link's
    /// descriptor cannot join it.
    pub fn new(inner: L, listen: SocketAddrV4, upstream: SocketAddr) -> io::Result<DnsRelay<L>> {
        let relayer = DnsRelayer::new(inner.fd(), listen, upstream)?;
        Ok(Layered::wrap(inner, relayer))
    }
}

impl<L> DnsRelay<L> {
    /// Lowers the number of host sockets kept open (at least 1, at most
    /// [`MAX_RELAYS`]); sockets beyond it are closed, least recently used first.
    pub fn with_max_relays(mut self, max: usize) -> Self {
        self.layer_mut().set_max_relays(max);
        self
    }

    /// Records the datagrams that never pass through the inner link into
    /// `capture` as interface `iface`: each relayed query as sent, each
    /// answer as received. Put the relay around the sniffer of `lo` and give
    /// it that sniffer's interface: the capture then holds every packet once.
    pub fn record_into(mut self, capture: Capture, iface: CaptureInterface) -> Self {
        self.layer_mut().capture = Some((capture, iface));
        self
    }

    /// The address the relay answers at.
    pub fn listen_addr(&self) -> SocketAddrV4 {
        self.layer().listen
    }

    /// How many host sockets are open now.
    pub fn relay_count(&self) -> usize {
        self.layer().relays.len()
    }
}

/// The layer that takes the guest's queries off the link, relays them, and
/// hands the answers up. Made by [`DnsRelay::new`].
#[derive(Debug)]
pub struct DnsRelayer {
    listen: SocketAddrV4,
    upstream: SocketAddr,
    epoll: Epoll,
    relays: HashMap<SocketAddrV4, Relay>,
    by_token: HashMap<u64, SocketAddrV4>,
    next_token: u64,
    uses: u64,
    max_relays: usize,
    /// Tokens reported readable and not yet read to exhaustion.
    ready: Vec<u64>,
    events: Vec<EpollEvent>,
    scratch: Vec<u8>,
    /// When the next idle sweep is due; `None` while no socket is open.
    next_sweep: Option<Instant>,
    /// The instant at which the epoll set was last found empty, until the
    /// next flush: the stack reads its links many times in one poll, all at
    /// one instant, and one look per poll is enough (an answer that comes
    /// later makes the descriptor readable, so the event loop polls again).
    /// Without it, every round trip on `lo` paid several `epoll_wait`s.
    found_empty: Option<Instant>,
    capture: Option<(Capture, CaptureInterface)>,
}

impl DnsRelayer {
    /// A relay from `listen` to `upstream`; `inner_fd`, the wrapped link's
    /// descriptor, joins the relay's epoll set, which stands for both.
    fn new(
        inner_fd: Option<BorrowedFd<'_>>,
        listen: SocketAddrV4,
        upstream: SocketAddr,
    ) -> io::Result<DnsRelayer> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        if let Some(fd) = inner_fd {
            epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, INNER_TOKEN))?;
        }
        Ok(DnsRelayer {
            listen,
            upstream,
            epoll,
            relays: HashMap::new(),
            by_token: HashMap::new(),
            next_token: 0,
            uses: 0,
            max_relays: MAX_RELAYS,
            ready: Vec::new(),
            events: vec![EpollEvent::empty(); MAX_RELAYS + 1],
            scratch: vec![0; SCRATCH],
            next_sweep: None,
            found_empty: None,
            capture: None,
        })
    }

    fn set_max_relays(&mut self, max: usize) {
        self.max_relays = max.clamp(1, MAX_RELAYS);
        while self.relays.len() > self.max_relays {
            self.evict_lru();
        }
    }

    /// The guest source and the UDP payload's place in `frame`, if `frame`
    /// is a whole (unfragmented) IPv4 UDP datagram to the listening address.
    fn query_in(&self, frame: &[u8]) -> Option<(SocketAddrV4, Range<usize>)> {
        let ip = Ipv4Packet::new_checked(frame).ok()?;
        if ip.version() != 4
            || ip.next_header() != IpProtocol::Udp
            || ip.dst_addr() != *self.listen.ip()
            || ip.more_frags()
            || ip.frag_offset() != 0
        {
            return None;
        }
        let udp = UdpPacket::new_checked(ip.payload()).ok()?;
        if udp.dst_port() != self.listen.port() {
            return None;
        }
        let start = usize::from(ip.header_len()) + 8;
        let end = start + udp.payload().len();
        Some((SocketAddrV4::new(ip.src_addr(), udp.src_port()), start..end))
    }

    /// Sends `payload` upstream from `guest`'s socket, opened if need be.
    /// Any failure drops the datagram, as UDP may.
    fn relay(&mut self, now: Instant, guest: SocketAddrV4, payload: &[u8]) {
        if !self.relays.contains_key(&guest) && !self.open(now, guest) {
            return;
        }
        self.uses += 1;
        let Some(r) = self.relays.get_mut(&guest) else {
            return;
        };
        r.last = now;
        r.used = self.uses;
        // ECONNREFUSED (an earlier answer was an ICMP error) or a full
        // buffer: this datagram is lost, the socket stays.
        let _ = r.sock.send(payload);
    }

    /// Opens `guest`'s host socket, closing the least recently used one if
    /// the table is full, or if the host has no port left for a new one.
    fn open(&mut self, now: Instant, guest: SocketAddrV4) -> bool {
        if self.relays.len() >= self.max_relays {
            self.evict_lru();
        }
        let sock = match self.host_socket() {
            Ok(s) => s,
            Err(_) if !self.relays.is_empty() => {
                self.evict_lru();
                match self.host_socket() {
                    Ok(s) => s,
                    Err(_) => return false,
                }
            }
            Err(_) => return false,
        };
        let token = self.next_token;
        self.next_token += 1;
        let event = EpollEvent::new(EpollFlags::EPOLLIN, token);
        if self.epoll.add(&sock, event).is_err() {
            return false;
        }
        self.relays.insert(
            guest,
            Relay {
                sock,
                token,
                last: now,
                used: self.uses,
            },
        );
        self.by_token.insert(token, guest);
        self.next_sweep.get_or_insert(now + RELAY_IDLE);
        true
    }

    /// A new host socket connected to the upstream resolver: non-blocking,
    /// close-on-exec (as std makes every socket), on an ephemeral port.
    fn host_socket(&self) -> io::Result<UdpSocket> {
        let any = match self.upstream {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        let sock = UdpSocket::bind(any)?;
        // Connected: the kernel then hands it only what the resolver sends.
        sock.connect(self.upstream)?;
        sock.set_nonblocking(true)?;
        Ok(sock)
    }

    fn close(&mut self, guest: SocketAddrV4) {
        if let Some(r) = self.relays.remove(&guest) {
            self.by_token.remove(&r.token);
            let _ = self.epoll.delete(&r.sock);
        }
    }

    fn evict_lru(&mut self) {
        let oldest = self.relays.iter().min_by_key(|(_, r)| r.used);
        if let Some((&guest, _)) = oldest {
            self.close(guest);
        }
    }

    /// Closes the sockets idle for [`RELAY_IDLE`], when a sweep is due.
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| now < t) {
            return;
        }
        let idle: Vec<SocketAddrV4> = self
            .relays
            .iter()
            .filter(|(_, r)| now >= r.last + RELAY_IDLE)
            .map(|(&g, _)| g)
            .collect();
        for guest in idle {
            self.close(guest);
        }
        self.next_sweep = self.relays.values().map(|r| r.last + RELAY_IDLE).min();
    }

    /// Reads one datagram from the socket of `token`.
    fn read(&mut self, link: &mut dyn Link, token: u64, now: Instant) -> Read {
        let Some(&guest) = self.by_token.get(&token) else {
            return Read::Empty;
        };
        let Some(r) = self.relays.get_mut(&guest) else {
            return Read::Empty;
        };
        let n = match r.sock.recv(&mut self.scratch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::Empty,
            // ECONNREFUSED and the like: reading took the error.
            Err(_) => return Read::Consumed,
        };
        r.last = now;
        self.uses += 1;
        r.used = self.uses;
        if n > MAX_ANSWER {
            // Only an IPv6 upstream could send it; IPv4 cannot carry it.
            return Read::Consumed;
        }
        Read::Packet(self.answer(link, guest, n))
    }

    /// The first `n` bytes of the scratch buffer as a packet from the
    /// listening address to `guest`, with correct checksums (the loopback
    /// needs none, but a capture of `lo` then reads clean).
    fn answer(&mut self, link: &mut dyn Link, guest: SocketAddrV4, n: usize) -> Vec<u8> {
        let mut frame = link.buffer();
        frame.clear();
        frame.reserve(HEADERS + n);
        frame.extend_from_slice(&[0; HEADERS]);
        frame.extend_from_slice(&self.scratch[..n]);
        let (src, dst) = (*self.listen.ip(), *guest.ip());
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Udp,
            payload_len: 8 + n,
            hop_limit: 64,
        };
        let caps = ChecksumCapabilities::default();
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut frame[..20]), &caps);
        let udp = UdpRepr {
            src_port: self.listen.port(),
            dst_port: guest.port(),
        };
        udp.emit(
            &mut UdpPacket::new_unchecked(&mut frame[20..]),
            &IpAddress::Ipv4(src),
            &IpAddress::Ipv4(dst),
            n,
            |_| {},
            &caps,
        );
        frame
    }

    /// The next answer from any relay socket, reading until none has one.
    fn next_answer(&mut self, link: &mut dyn Link, now: Instant) -> Option<Vec<u8>> {
        let mut errors = 0;
        for _ in 0..WAIT_ROUNDS {
            while let Some(&token) = self.ready.last() {
                match self.read(link, token, now) {
                    // The token stays: its socket may hold more.
                    Read::Packet(p) => return Some(p),
                    Read::Consumed if errors < MAX_ERRORS => errors += 1,
                    Read::Consumed | Read::Empty => {
                        self.ready.pop();
                    }
                }
            }
            if self.relays.is_empty() || self.found_empty == Some(now) {
                return None;
            }
            let n = self.epoll.wait(&mut self.events, EpollTimeout::ZERO).ok()?;
            let tokens = self.events[..n].iter().map(EpollEvent::data);
            self.ready.extend(tokens.filter(|&t| t != INNER_TOKEN));
            if self.ready.is_empty() {
                self.found_empty = Some(now);
                return None;
            }
        }
        None
    }

    fn record(&self, dir: Direction, now: Instant, frame: &[u8]) {
        if let Some((capture, iface)) = &self.capture {
            capture.record(*iface, dir, now, frame);
        }
    }
}

impl Layer for DnsRelayer {
    fn inject(&mut self, link: &mut dyn Link, now: Instant) -> Option<Vec<u8>> {
        self.sweep(now);
        let answer = self.next_answer(link, now)?;
        self.record(Direction::Inbound, now, &answer);
        Some(answer)
    }

    fn outbound(&mut self, link: &mut dyn Link, now: Instant, frame: Vec<u8>, mss: Option<u16>) {
        // Only TCP segments are cut by the link: nothing to relay.
        if mss.is_some() {
            pass_on(link, now, frame, mss);
            return;
        }
        self.sweep(now);
        let Some((guest, payload)) = self.query_in(&frame) else {
            link.send(now, frame);
            return;
        };
        self.record(Direction::Outbound, now, &frame);
        self.relay(now, guest, &frame[payload]);
        link.recycle(frame);
    }

    fn poll_at(&self) -> Option<Instant> {
        self.next_sweep
    }

    // The epoll set holds the inner link's descriptor too.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.epoll.0.as_fd())
    }

    fn flush(&mut self, _link: &mut dyn Link, _now: Instant) {
        self.found_empty = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::Loopback;

    const LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 53);

    fn relay() -> DnsRelayer {
        // Nothing is sent in these tests: the upstream is never reached.
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        DnsRelayer::new(None, LISTEN, upstream).unwrap()
    }

    fn udp_packet(dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        let src = Ipv4Addr::new(127, 0, 0, 1);
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: *dst.ip(),
            next_header: IpProtocol::Udp,
            payload_len: 8 + payload.len(),
            hop_limit: 64,
        };
        let mut f = vec![0; 28 + payload.len()];
        let caps = ChecksumCapabilities::default();
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut f[..]), &caps);
        UdpRepr {
            src_port: 4000,
            dst_port: dst.port(),
        }
        .emit(
            &mut UdpPacket::new_unchecked(&mut f[20..]),
            &IpAddress::Ipv4(src),
            &IpAddress::Ipv4(*dst.ip()),
            payload.len(),
            |b| b.copy_from_slice(payload),
            &caps,
        );
        f
    }

    #[test]
    fn a_query_is_found_with_its_source_and_payload() {
        let r = relay();
        let f = udp_packet(LISTEN, b"query");
        let (guest, range) = r.query_in(&f).unwrap();
        assert_eq!(guest, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(&f[range], b"query");
    }

    #[test]
    fn ip_options_move_the_payload() {
        let r = relay();
        let f = udp_packet(LISTEN, b"query");
        // Four bytes of options (NOPs and an end): header length 24.
        let mut g = f[..20].to_vec();
        g.extend_from_slice(&[1, 1, 1, 0]);
        g.extend_from_slice(&f[20..]);
        g[0] = 0x46;
        g[2..4].copy_from_slice(&(f.len() as u16 + 4).to_be_bytes());
        let (_, range) = r.query_in(&g).unwrap();
        assert_eq!(&g[range], b"query");
    }

    #[test]
    fn other_ports_fragments_and_garbage_are_not_queries() {
        let r = relay();
        let other = SocketAddrV4::new(*LISTEN.ip(), 54);
        assert!(r.query_in(&udp_packet(other, b"q")).is_none());
        let mut frag = udp_packet(LISTEN, b"query");
        frag[6] |= 0x20; // more fragments
        assert!(r.query_in(&frag).is_none());
        let mut later = udp_packet(LISTEN, b"query");
        later[7] = 1; // offset 8
        assert!(r.query_in(&later).is_none());
        let mut bad_udp_len = udp_packet(LISTEN, b"query");
        bad_udp_len[24..26].copy_from_slice(&500u16.to_be_bytes());
        assert!(r.query_in(&bad_udp_len).is_none());
        let f = udp_packet(LISTEN, b"query");
        for n in 0..f.len() {
            let _ = r.query_in(&f[..n]);
        }
        assert!(r.query_in(&[]).is_none());
        assert!(r.query_in(&[0x60; 48]).is_none());
    }

    #[test]
    fn answers_carry_valid_checksums() {
        let mut r = relay();
        r.scratch[..6].copy_from_slice(b"answer");
        let guest: SocketAddrV4 = "127.0.0.1:4000".parse().unwrap();
        let f = r.answer(&mut Loopback::new(), guest, 6);
        let ip = Ipv4Packet::new_checked(&f[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (*LISTEN.ip(), *guest.ip()));
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        let (s, d) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        assert!(udp.verify_checksum(&s, &d));
        assert_eq!((udp.src_port(), udp.dst_port()), (53, 4000));
        assert_eq!(udp.payload(), b"answer");
    }
}
