//! A link layer that impairs frames as a bad network would: loss, delay
//! with jitter, duplication, reordering, corruption and a rate limit, set
//! for each direction on its own, as netem does on Linux (this kernel has
//! no netem; `--impair` is how a sandbox gets delay and loss).
//!
//! Decisions come from seeded xorshift generators, one per direction, so a
//! run can be replayed: with the same seed, the n-th frame sent (or
//! received) meets the same fate, whatever the other direction carries.
//! Time is an argument: frames held back (delay, jitter, rate) wait in a
//! queue ordered by release time. Sent frames leave when due, from
//! `outbound` or the `flush` at the end of every stack poll; received ones
//! are handed up through `inject`; `poll_at` says when the next is due.
//!
//! Offloads are hidden ([`Layer::passes_offloads`]): the stack gives this
//! layer frames as they go on the wire (at the NIC's MTU, checksums made),
//! so loss, corruption and the rate apply per wire frame, as on a real
//! link, and a corrupted frame is caught by the receiver's checksum.
//! Received frames are impaired as the inner link hands them over: a veth
//! peer's TSO super-frame counts as one.
//!
//! With a capture ([`Impairer::record_into`]) the layer records its NIC's
//! frames itself, each once, when its fate is settled: a sent frame when
//! it goes onto the inner link (late, corrupted, twice), a received one
//! when it reaches the stack, and a dropped frame when it is dropped, with
//! a comment saying why. A corrupted frame is recorded as it was sent,
//! with the EPB's CRC-error flag.

use std::collections::BTreeMap;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
    UdpPacket,
};

use super::{
    Capture, CaptureInterface, Direction, Layer, Layered, Link, LinkCaps, Mark, Medium, pass_on,
};

/// Frames that may wait in one direction's queue when `limit` is 0 (netem's default).
pub const DEFAULT_LIMIT: usize = 1000;
/// Longest a reordered frame waits for a frame to overtake it.
const REORDER_WAIT: Duration = Duration::from_millis(10);

/// How one direction is impaired. Probabilities are in parts per million
/// of frames; everything zero passes frames untouched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Impairments {
    /// Frames dropped.
    pub loss_ppm: u32,
    /// Frames sent twice.
    pub duplicate_ppm: u32,
    /// Frames held back and sent after the next one.
    pub reorder_ppm: u32,
    /// Frames with one bit of the IP packet flipped.
    pub corrupt_ppm: u32,
    /// Time every frame is held.
    pub delay: Duration,
    /// Each frame's delay varies by up to this much either way (uniformly);
    /// frames then leave in the order of their release times, as netem's.
    pub jitter: Duration,
    /// Bits per second the direction carries (0: no limit): a token
    /// bucket filled at this rate, `burst` bytes deep; each frame takes
    /// its length in tokens and waits until the bucket holds them.
    pub rate_bps: u64,
    /// Depth of the rate's bucket, in bytes: how much may leave at once
    /// after a pause. 0 is netem's `rate` (after each frame the link is
    /// busy for its length at the rate).
    pub burst: u64,
    /// Most frames waiting at once (0: [`DEFAULT_LIMIT`]); more are dropped.
    pub limit: usize,
    /// Seed of the generator (0 is replaced by a fixed non-zero value).
    pub seed: u64,
}

impl Impairments {
    /// True when nothing is impaired.
    pub fn is_clean(&self) -> bool {
        Impairments {
            seed: 0,
            limit: 0,
            ..*self
        } == Impairments::default()
    }
}

/// What one direction's impairment has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairCounts {
    /// Frames taken in.
    pub frames: u64,
    /// Frames dropped by `loss`.
    pub dropped: u64,
    /// Frames dropped because the queue was full.
    pub overflowed: u64,
    /// Frames sent twice.
    pub duplicated: u64,
    /// Frames held back to go after the next one.
    pub reordered: u64,
    /// Frames corrupted.
    pub corrupted: u64,
}

/// A link whose frames are impaired: an [`Impairer`] around it.
pub type Impaired<L> = Layered<L, Impairer>;

impl<L: Link> Impaired<L> {
    /// Wraps `inner`, impairing the frames sent on it as `cfg` says.
    pub fn new(inner: L, cfg: Impairments) -> Self {
        Layered::wrap(inner, Impairer::new(cfg))
    }
}

/// Why a frame is recorded with a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Delivered,
    Lost,
    Overflow,
    /// Corrupted on a link whose far end checks no checksum: dropped here,
    /// as the check would have dropped it.
    CorruptedUnchecked,
}

/// Flags on a frame in the queue.
#[derive(Debug, Clone, Copy, Default)]
struct Notes {
    corrupted: bool,
    duplicate: bool,
    reordered: bool,
}

#[derive(Debug)]
struct Pending {
    frame: Vec<u8>,
    mss: Option<u16>,
    notes: Notes,
}

/// One direction: its settings, generator, queue and counts.
#[derive(Debug)]
struct Way {
    cfg: Impairments,
    rng: u64,
    /// Frames waiting, by release time, then arrival.
    queue: BTreeMap<(Instant, u64), Pending>,
    seq: u64,
    /// A reordered frame, due at the instant given, waiting to go after the next.
    held: Option<(Instant, Pending)>,
    /// With a rate: when the link is free for the next frame.
    free_at: Option<Instant>,
    counts: ImpairCounts,
}

impl Way {
    fn new(cfg: Impairments, stream: u64) -> Self {
        let rng = match cfg.seed {
            0 => 0x9e37_79b9_7f4a_7c15,
            s => s,
        };
        // Another stream for the second direction, still non-zero.
        let rng = if stream == 0 {
            rng
        } else {
            splitmix(rng ^ stream) | 1
        };
        Way {
            cfg,
            rng,
            queue: BTreeMap::new(),
            seq: 0,
            held: None,
            free_at: None,
            counts: ImpairCounts::default(),
        }
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn roll(&mut self, ppm: u32) -> bool {
        if ppm == 0 {
            return false;
        }
        (self.next() % 1_000_000) < u64::from(ppm)
    }

    fn limit(&self) -> usize {
        match self.cfg.limit {
            0 => DEFAULT_LIMIT,
            n => n,
        }
    }

    /// When a frame of `len` bytes arriving at `now` is to leave.
    fn release_time(&mut self, now: Instant, len: usize) -> Instant {
        let mut at = now + self.cfg.delay;
        let j = self.cfg.jitter.total_micros();
        if j > 0 {
            // Uniform in [-j, +j] microseconds, never before `now`.
            let off = (self.next() % (2 * j + 1)) as i64 - j as i64;
            at = Instant::from_micros((at.total_micros() + off).max(now.total_micros()));
        }
        if self.cfg.rate_bps > 0 {
            // The bucket as a theoretical arrival time (GCRA): `free_at` is
            // when the bucket would be full again; a frame may leave as
            // early as `burst` bytes' worth of time before that.
            let micros = |bytes: u64| (bytes * 8 * 1_000_000).div_ceil(self.cfg.rate_bps);
            let due = self.free_at.map_or(at, |f| f.max(at));
            let slack = Duration::from_micros(micros(self.cfg.burst));
            self.free_at = Some(due + Duration::from_micros(micros(len as u64)));
            if due - slack > at {
                at = due - slack;
            }
        }
        at
    }

    fn push(&mut self, at: Instant, p: Pending) {
        self.seq += 1;
        self.queue.insert((at, self.seq), p);
    }

    /// The next frame due at `now`: the queue's first, or a held frame
    /// that follows it (or waited long enough).
    fn pop_due(&mut self, now: Instant) -> Option<Pending> {
        if let Some(entry) = self.queue.first_entry()
            && entry.key().0 <= now
        {
            let p = entry.remove();
            return Some(p);
        }
        None
    }

    fn poll_at(&self) -> Option<Instant> {
        let q = self.queue.keys().next().map(|k| k.0);
        let h = self.held.as_ref().map(|(at, _)| *at + REORDER_WAIT);
        match (q, h) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// splitmix64's mixing step: another well-spread seed from a seed.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where the layer records its frames.
#[derive(Debug)]
struct Recorder {
    capture: Capture,
    iface: CaptureInterface,
    inbound: bool,
}

/// The layer that impairs frames, each direction as its [`Impairments`]
/// say, and counts what it did.
#[derive(Debug)]
pub struct Impairer {
    out: Way,
    inb: Way,
    recorder: Option<Recorder>,
    /// Whether the inner link trusts checksums (an in-memory cable) while
    /// this layer corrupts frames: the stack is then told to make and
    /// check them, received frames get theirs filled in, and a corrupted
    /// sent frame is dropped here, as the far end will not check.
    fix_checksums: Option<bool>,
}

impl Impairer {
    /// Impairs sent frames as `cfg` says; received frames pass untouched.
    pub fn new(cfg: Impairments) -> Self {
        Impairer::both(cfg, Impairments::default())
    }

    /// Impairs sent frames as `out` says and received ones as `inbound`
    /// says. The two directions draw from separate streams, even when
    /// their seeds are equal.
    pub fn both(out: Impairments, inbound: Impairments) -> Self {
        Impairer {
            out: Way::new(out, 0),
            inb: Way::new(inbound, 0x5eed_0f1b),
            recorder: None,
            fix_checksums: None,
        }
    }

    /// Records every frame into `capture` as interface `iface`, drops
    /// marked (instead of a [`Sniffer`](super::Sniffer) around the link).
    pub fn record_into(mut self, capture: Capture, iface: CaptureInterface) -> Self {
        self.recorder = Some(Recorder {
            capture,
            iface,
            inbound: true,
        });
        self
    }

    /// Records sent frames only (for `lo`, where each comes back as received).
    pub fn sent_only(mut self) -> Self {
        if let Some(r) = &mut self.recorder {
            r.inbound = false;
        }
        self
    }

    /// What was done to sent frames.
    pub fn sent(&self) -> ImpairCounts {
        self.out.counts
    }

    /// What was done to received frames.
    pub fn received(&self) -> ImpairCounts {
        self.inb.counts
    }

    fn corrupts(&self) -> bool {
        self.out.cfg.corrupt_ppm > 0 || self.inb.cfg.corrupt_ppm > 0
    }

    fn record(&self, dir: Direction, now: Instant, frame: &[u8], fate: Fate, notes: Notes) {
        let Some(r) = &self.recorder else {
            return;
        };
        if dir == Direction::Inbound && !r.inbound {
            return;
        }
        let why = match fate {
            Fate::Delivered => None,
            Fate::Lost => Some("dropped (loss)"),
            Fate::Overflow => Some("dropped (queue full)"),
            Fate::CorruptedUnchecked => Some("dropped (corrupted; the far end checks no checksum)"),
        };
        let mut words: Vec<&str> = Vec::new();
        if notes.corrupted {
            words.push("corrupted");
        }
        if notes.duplicate {
            words.push("duplicate");
        }
        if notes.reordered {
            words.push("reordered");
        }
        words.extend(why);
        let comment =
            (!words.is_empty()).then(|| format!("smolvisor impair: {}", words.join(", ")));
        let mark = Mark {
            comment: comment.as_deref(),
            crc_error: notes.corrupted,
        };
        r.capture.record_marked(r.iface, dir, now, frame, mark);
    }

    /// Takes a frame into direction `dir`'s queue, or drops it.
    fn admit(
        &mut self,
        link: &mut dyn Link,
        dir: Direction,
        now: Instant,
        mut frame: Vec<u8>,
        mss: Option<u16>,
    ) {
        let fix = self.fix_checksums.unwrap_or(false);
        if fix && dir == Direction::Inbound {
            fill_checksums(link.caps().medium, &mut frame);
        }
        let way = match dir {
            Direction::Outbound => &mut self.out,
            Direction::Inbound => &mut self.inb,
        };
        way.counts.frames += 1;
        if way.roll(way.cfg.loss_ppm) {
            way.counts.dropped += 1;
            self.record(dir, now, &frame, Fate::Lost, Notes::default());
            link.recycle(frame);
            return;
        }
        if way.queue.len() + usize::from(way.held.is_some()) >= way.limit() {
            way.counts.overflowed += 1;
            self.record(dir, now, &frame, Fate::Overflow, Notes::default());
            link.recycle(frame);
            return;
        }
        let reorder = way.held.is_none() && way.roll(way.cfg.reorder_ppm);
        let duplicate = !reorder && way.roll(way.cfg.duplicate_ppm);
        let mut notes = Notes::default();
        if way.roll(way.cfg.corrupt_ppm) {
            way.counts.corrupted += 1;
            let medium = link.caps().medium;
            let r = way.next();
            corrupt(medium, &mut frame, r);
            notes.corrupted = true;
            if fix && dir == Direction::Outbound {
                self.record(dir, now, &frame, Fate::CorruptedUnchecked, notes);
                link.recycle(frame);
                return;
            }
        }
        let at = way.release_time(now, frame.len());
        if reorder {
            way.counts.reordered += 1;
            notes.reordered = true;
            way.held = Some((at, Pending { frame, mss, notes }));
            return;
        }
        if duplicate {
            way.counts.duplicated += 1;
            let mut copy = link.buffer();
            copy.clear();
            copy.extend_from_slice(&frame);
            let copy_notes = Notes {
                duplicate: true,
                ..notes
            };
            way.push(
                at,
                Pending {
                    frame: copy,
                    mss,
                    notes: copy_notes,
                },
            );
        }
        way.push(at, Pending { frame, mss, notes });
    }

    /// The next frame of direction `dir` due at `now`, recorded as delivered.
    fn release(&mut self, dir: Direction, now: Instant) -> Option<Pending> {
        let way = match dir {
            Direction::Outbound => &mut self.out,
            Direction::Inbound => &mut self.inb,
        };
        let p = match way.pop_due(now) {
            Some(p) => {
                // A frame went: the held one follows it.
                if let Some((at, held)) = way.held.take() {
                    way.push(at.min(now), held);
                }
                p
            }
            None => match way.held.take() {
                Some((at, held)) if at + REORDER_WAIT <= now => held,
                other => {
                    way.held = other;
                    return None;
                }
            },
        };
        self.record(dir, now, &p.frame, Fate::Delivered, p.notes);
        Some(p)
    }

    fn send_due(&mut self, link: &mut dyn Link, now: Instant) {
        while let Some(p) = self.release(Direction::Outbound, now) {
            pass_on(link, now, p.frame, p.mss);
        }
    }
}

impl Layer for Impairer {
    fn caps(&self, inner: LinkCaps) -> LinkCaps {
        // Corruption on a cable that trusts its frames: the stack must make
        // and check checksums, or the damage would reach the guest unseen.
        if inner.checksum_offload && self.corrupts() {
            return LinkCaps {
                checksum_offload: false,
                ..inner
            };
        }
        inner
    }

    // Frames are impaired as they go on the wire, whole and with checksums
    // that a receiver verifies: the offloads stay hidden (also what
    // tests/packet_link.rs relies on).
    fn passes_offloads(&self) -> bool {
        false
    }

    fn inbound(&mut self, link: &mut dyn Link, now: Instant, frame: Vec<u8>) -> Option<Vec<u8>> {
        self.learn_checksums(link);
        self.admit(link, Direction::Inbound, now, frame, None);
        self.release(Direction::Inbound, now).map(|p| p.frame)
    }

    fn inject(&mut self, _link: &mut dyn Link, now: Instant) -> Option<Vec<u8>> {
        self.release(Direction::Inbound, now).map(|p| p.frame)
    }

    fn outbound(&mut self, link: &mut dyn Link, now: Instant, frame: Vec<u8>, mss: Option<u16>) {
        self.learn_checksums(link);
        self.admit(link, Direction::Outbound, now, frame, mss);
        self.send_due(link, now);
    }

    fn poll_at(&self) -> Option<Instant> {
        match (self.out.poll_at(), self.inb.poll_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn flush(&mut self, link: &mut dyn Link, now: Instant) {
        self.send_due(link, now);
    }
}

impl Impairer {
    fn learn_checksums(&mut self, link: &mut dyn Link) {
        if self.fix_checksums.is_none() {
            self.fix_checksums = Some(self.corrupts() && link.caps().checksum_offload);
        }
    }
}

/// Where the IP packet starts in a frame of `medium`.
fn ip_offset(medium: Medium) -> usize {
    match medium {
        Medium::Ethernet => 14,
        _ => 0,
    }
}

/// Flips one bit of the IP packet in `frame`, chosen by `r`: the header
/// of the link is left alone, so the damage is the IP or transport
/// checksum's to find, not the Ethernet CRC's.
fn corrupt(medium: Medium, frame: &mut [u8], r: u64) {
    let start = ip_offset(medium).min(frame.len());
    let len = frame.len() - start;
    if len == 0 {
        return;
    }
    let bit = (r >> 8) % (len as u64 * 8);
    frame[start + (bit / 8) as usize] ^= 1 << (bit % 8);
}

/// Fills in the IPv4 header checksum and the TCP or UDP checksum of a
/// frame from a link that makes none (an in-memory cable), or of one that
/// was changed on purpose (the fuzz targets' mutations). Anything that
/// does not parse is left as it is.
pub fn fill_checksums(medium: Medium, frame: &mut [u8]) {
    let ip = match medium {
        Medium::Ethernet => {
            let Ok(eth) = EthernetFrame::new_checked(&*frame) else {
                return;
            };
            if !matches!(
                eth.ethertype(),
                EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6
            ) {
                return;
            }
            &mut frame[14..]
        }
        _ => frame,
    };
    match ip.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(mut p) = Ipv4Packet::new_checked(&mut *ip) else {
                return;
            };
            p.fill_checksum();
            if p.more_frags() || p.frag_offset() != 0 {
                return;
            }
            let (src, dst, proto) = (p.src_addr(), p.dst_addr(), p.next_header());
            fill_transport(proto, src.into(), dst.into(), p.payload_mut());
        }
        Some(6) => {
            let Ok(mut p) = Ipv6Packet::new_checked(&mut *ip) else {
                return;
            };
            let (src, dst, proto) = (p.src_addr(), p.dst_addr(), p.next_header());
            fill_transport(proto, src.into(), dst.into(), p.payload_mut());
        }
        _ => {}
    }
}

fn fill_transport(proto: IpProtocol, src: IpAddress, dst: IpAddress, payload: &mut [u8]) {
    match proto {
        IpProtocol::Tcp => {
            if let Ok(mut t) = TcpPacket::new_checked(payload) {
                t.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Udp => {
            if let Ok(mut u) = UdpPacket::new_checked(payload) {
                u.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Icmp => {
            if let Ok(mut i) = smoltcp::wire::Icmpv4Packet::new_checked(payload) {
                i.fill_checksum();
            }
        }
        IpProtocol::Icmpv6 => {
            if let (Ok(mut i), IpAddress::Ipv6(s), IpAddress::Ipv6(d)) =
                (smoltcp::wire::Icmpv6Packet::new_checked(payload), src, dst)
            {
                i.fill_checksum(&s, &d);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link that keeps what is sent on it, with the time, and hands up
    /// what its test puts in `incoming`.
    #[derive(Debug, Default)]
    struct Sink {
        sent: Vec<(Instant, Vec<u8>)>,
        incoming: std::collections::VecDeque<Vec<u8>>,
        trusted: bool,
    }

    impl Link for Sink {
        fn caps(&self) -> LinkCaps {
            LinkCaps {
                medium: Medium::Ethernet,
                mtu: 1500,
                checksum_offload: self.trusted,
            }
        }
        fn recv(&mut self, _now: Instant) -> Option<Vec<u8>> {
            self.incoming.pop_front()
        }
        fn send(&mut self, now: Instant, frame: Vec<u8>) {
            self.sent.push((now, frame));
        }
    }

    /// Frame `i` of `len` bytes: its number in the first four bytes after
    /// the Ethernet header.
    fn frame(i: u32, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len.max(18)];
        f[14..18].copy_from_slice(&i.to_be_bytes());
        f
    }

    fn number(f: &[u8]) -> u32 {
        u32::from_be_bytes(f[14..18].try_into().unwrap())
    }

    fn ms(n: i64) -> Instant {
        Instant::from_millis(n)
    }

    fn us(n: i64) -> Instant {
        Instant::from_micros(n)
    }

    /// Sends `n` frames one every `gap` µs, polling every 100 µs until
    /// `end` µs; returns (number, sent at, left at) of each frame that left.
    fn run_out(l: &mut Impaired<Sink>, n: u32, gap: i64, len: usize, end: i64) -> Vec<(u32, i64)> {
        let mut next = 0;
        let mut t = 0;
        while t <= end {
            while next < n && i64::from(next) * gap <= t {
                l.send(us(t), frame(next, len));
                next += 1;
            }
            l.flush(us(t));
            t += 100;
        }
        l.get_ref()
            .sent
            .iter()
            .map(|(at, f)| (number(f), at.total_micros()))
            .collect()
    }

    #[test]
    fn a_bucket_lets_a_burst_through_then_keeps_to_the_rate() {
        let cfg = Impairments {
            rate_bps: 1_000_000,
            burst: 10_000,
            limit: 100_000,
            ..Impairments::default()
        };
        let mut l = Impaired::new(Sink::default(), cfg);
        // All offered at once: 10,000 bytes' worth leave at once with the
        // first (whose own tokens the full bucket holds too), then one
        // every 8 ms.
        let out = run_out(&mut l, 200, 0, 1000, 1_000_000);
        let at_once = out.iter().filter(|&&(_, t)| t == 0).count();
        assert_eq!(at_once, 11, "{:?}", &out[..12]);
        assert_eq!(out[11].1, 8_000);
        // In one second: the burst and one second at the rate.
        let bits = (out.len() - at_once) as f64 * 8000.0;
        assert!((990_000.0..=1_010_000.0).contains(&bits), "{bits}");
        // After a pause the bucket is full again.
        l.send(us(3_000_000), frame(999, 1000));
        l.flush(us(3_000_000));
        assert_eq!(l.get_ref().sent.last().unwrap().0, us(3_000_000));
    }

    #[test]
    fn delay_holds_each_frame_exactly_and_keeps_their_order() {
        let cfg = Impairments {
            delay: Duration::from_millis(20),
            ..Impairments::default()
        };
        let mut l = Impaired::new(Sink::default(), cfg);
        l.send(ms(0), frame(0, 60));
        l.send(ms(3), frame(1, 60));
        assert!(l.get_ref().sent.is_empty());
        assert_eq!(l.poll_at(), Some(ms(20)));
        l.flush(ms(19));
        assert!(l.get_ref().sent.is_empty(), "nothing is due before 20 ms");
        l.flush(ms(20));
        assert_eq!(l.poll_at(), Some(ms(23)));
        l.flush(ms(30));
        let got: Vec<_> = l
            .get_ref()
            .sent
            .iter()
            .map(|(t, f)| (*t, number(f)))
            .collect();
        assert_eq!(got, [(ms(20), 0), (ms(30), 1)]);
        assert_eq!(l.poll_at(), None);
    }

    #[test]
    fn jitter_keeps_every_delay_within_its_bounds_and_uses_them() {
        let cfg = Impairments {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            seed: 3,
            ..Impairments::default()
        };
        let mut l = Impaired::new(Sink::default(), cfg);
        let out = run_out(&mut l, 500, 1000, 60, 600_000);
        assert_eq!(out.len(), 500);
        let delays: Vec<i64> = out
            .iter()
            .map(|&(i, at)| at - i64::from(i) * 1000)
            .collect();
        // Released on the poll after the instant due: up to 100 µs late.
        for d in &delays {
            assert!((15_000..=25_100).contains(d), "delay {d} µs");
        }
        let (lo, hi) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*lo < 16_000 && *hi > 24_000, "jitter unused: {lo}..{hi}");
        // Jitter wider than the gap between frames reorders some, as netem's.
        assert!(out.windows(2).any(|w| w[1].0 < w[0].0));
    }

    #[test]
    fn a_rate_limit_carries_its_rate_within_one_percent() {
        let cfg = Impairments {
            rate_bps: 1_000_000,
            limit: 100_000,
            ..Impairments::default()
        };
        let mut l = Impaired::new(Sink::default(), cfg);
        // 2,000 frames of 1,000 bytes offered within 0.2 s: 16 Mbit, far over the rate.
        let out = run_out(&mut l, 2000, 100, 1000, 1_000_000);
        let bits = out.len() as f64 * 8000.0;
        assert!(
            (990_000.0..=1_010_000.0).contains(&bits),
            "{bits} bits left in one second"
        );
        // One frame of 8,000 bits every 8 ms, in order.
        assert_eq!(out[0], (0, 0));
        assert!((8_000..8_100).contains(&out[1].1), "{:?}", out[1]);
        assert!(out.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    }

    fn dropped_numbers(seed: u64) -> Vec<u32> {
        let cfg = Impairments {
            loss_ppm: 100_000,
            seed,
            ..Impairments::default()
        };
        let mut l = Impaired::new(Sink::default(), cfg);
        let out = run_out(&mut l, 1000, 100, 60, 100_000);
        let left: std::collections::HashSet<u32> = out.iter().map(|&(i, _)| i).collect();
        (0..1000).filter(|i| !left.contains(i)).collect()
    }

    #[test]
    fn the_same_seed_drops_the_same_frames() {
        let a = dropped_numbers(7);
        assert!((60..=140).contains(&a.len()), "10% of 1000: {}", a.len());
        assert_eq!(a, dropped_numbers(7));
        assert_ne!(a, dropped_numbers(8));
    }

    #[test]
    fn each_direction_draws_on_its_own() {
        let lossy = Impairments {
            loss_ppm: 300_000,
            seed: 11,
            ..Impairments::default()
        };
        // Sent frames' fates, with and without traffic the other way.
        let fates = |with_inbound: bool| {
            let mut l = Layered::wrap(Sink::default(), Impairer::both(lossy, lossy));
            let mut got_in = Vec::new();
            for i in 0..400 {
                if with_inbound {
                    l.get_mut().incoming.push_back(frame(i, 60));
                    if let Some(f) = l.recv(ms(i.into())) {
                        got_in.push(number(&f));
                    }
                }
                l.send(ms(i.into()), frame(i, 60));
            }
            let out: Vec<u32> = l.get_ref().sent.iter().map(|(_, f)| number(f)).collect();
            (out, got_in)
        };
        let (alone, _) = fates(false);
        let (out, inb) = fates(true);
        assert_eq!(
            alone, out,
            "inbound traffic changed the fate of sent frames"
        );
        assert!(inb.len() < 350 && out.len() < 350);
        assert_ne!(inb, out, "both directions drew the same losses");
        // Impairing one direction leaves the other alone.
        let mut l = Layered::wrap(
            Sink::default(),
            Impairer::both(Impairments::default(), lossy),
        );
        for i in 0..100 {
            l.send(ms(i), frame(i as u32, 60));
        }
        assert_eq!(l.get_ref().sent.len(), 100);
        assert_eq!(l.layer().sent().frames, 100);
    }

    #[test]
    fn received_frames_are_delayed_and_handed_up_when_due() {
        let slow = Impairments {
            delay: Duration::from_millis(5),
            ..Impairments::default()
        };
        let mut l = Layered::wrap(
            Sink::default(),
            Impairer::both(Impairments::default(), slow),
        );
        l.get_mut().incoming.extend([frame(1, 60), frame(2, 60)]);
        assert_eq!(l.recv(ms(0)), None);
        assert_eq!(l.poll_at(), Some(ms(5)));
        assert_eq!(l.recv(ms(4)), None);
        assert_eq!(l.recv(ms(5)).map(|f| number(&f)), Some(1));
        assert_eq!(l.recv(ms(5)).map(|f| number(&f)), Some(2));
        assert_eq!(l.recv(ms(5)), None);
    }

    #[test]
    fn corruption_flips_one_bit_of_the_ip_packet_and_keeps_lengths() {
        let cfg = Impairments {
            corrupt_ppm: 1_000_000,
            seed: 5,
            ..Impairments::default()
        };
        let mut l = Impaired::new(Sink::default(), cfg);
        let lens = [60usize, 61, 1514, 100, 64];
        for (i, &len) in lens.iter().enumerate() {
            let mut f = frame(0, len);
            f.iter_mut().enumerate().for_each(|(k, b)| *b = k as u8);
            let orig = f.clone();
            l.send(ms(i as i64), f);
            let got = &l.get_ref().sent[i].1;
            assert_eq!(got.len(), len);
            assert_eq!(got[..14], orig[..14], "the Ethernet header was changed");
            let flipped: u32 = got
                .iter()
                .zip(&orig)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            assert_eq!(flipped, 1);
        }
        assert_eq!(l.layer().sent().corrupted, lens.len() as u64);
    }

    #[test]
    fn a_full_queue_drops_what_does_not_fit() {
        let cfg = Impairments {
            delay: Duration::from_millis(10),
            limit: 3,
            ..Impairments::default()
        };
        let mut l = Impaired::new(Sink::default(), cfg);
        for i in 0..5 {
            l.send(ms(0), frame(i, 60));
        }
        l.flush(ms(10));
        let out: Vec<u32> = l.get_ref().sent.iter().map(|(_, f)| number(f)).collect();
        assert_eq!(out, [0, 1, 2]);
        assert_eq!(l.layer().sent().overflowed, 2);
    }

    #[test]
    fn a_reordered_frame_goes_after_the_next_or_after_a_while() {
        let cfg = Impairments {
            reorder_ppm: 1_000_000,
            ..Impairments::default()
        };
        let mut l = Impaired::new(Sink::default(), cfg);
        l.send(ms(0), frame(0, 60));
        assert!(l.get_ref().sent.is_empty());
        l.send(ms(1), frame(1, 60));
        let out: Vec<u32> = l.get_ref().sent.iter().map(|(_, f)| number(f)).collect();
        assert_eq!(out, [1, 0]);
        // Frame 2 is held; nothing follows it, so it leaves on its own.
        l.send(ms(2), frame(2, 60));
        assert_eq!(l.get_ref().sent.len(), 2);
        assert_eq!(l.poll_at(), Some(ms(2) + REORDER_WAIT));
        l.flush(ms(2) + REORDER_WAIT);
        assert_eq!(l.get_ref().sent.len(), 3);
    }

    /// An Ethernet frame carrying an IPv4 UDP datagram, checksums unset.
    fn udp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 4];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&32u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 2, 2]);
        ip[16..20].copy_from_slice(&[10, 0, 2, 15]);
        let udp = &mut ip[20..];
        udp[0..2].copy_from_slice(&53u16.to_be_bytes());
        udp[2..4].copy_from_slice(&5353u16.to_be_bytes());
        udp[4..6].copy_from_slice(&12u16.to_be_bytes());
        udp[8..12].copy_from_slice(b"abcd");
        f
    }

    fn checksums_hold(f: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        ip.verify_checksum() && udp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into())
    }

    #[test]
    fn on_a_cable_that_trusts_its_frames_corruption_is_caught_by_checksums() {
        let corrupt = Impairments {
            corrupt_ppm: 1_000_000,
            ..Impairments::default()
        };
        let trusted = Sink {
            trusted: true,
            ..Sink::default()
        };
        let mut l = Layered::wrap(trusted, Impairer::both(corrupt, Impairments::default()));
        assert!(
            !l.caps().checksum_offload,
            "the stack must make and check checksums"
        );
        // Received frames come without checksums: they get theirs.
        l.get_mut().incoming.push_back(udp_frame());
        let f = l.recv(ms(0)).unwrap();
        assert!(checksums_hold(&f));
        // A corrupted sent frame would pass the far end unchecked: dropped.
        let mut good = udp_frame();
        fill_checksums(Medium::Ethernet, &mut good);
        l.send(ms(0), good);
        assert!(l.get_ref().sent.is_empty());
        assert_eq!(l.layer().sent().corrupted, 1);
        // Without corruption the cable's trust is kept.
        let l = Layered::wrap(
            Sink {
                trusted: true,
                ..Sink::default()
            },
            Impairer::new(Impairments::default()),
        );
        assert!(l.caps().checksum_offload);
    }

    #[test]
    fn dropped_and_corrupted_frames_are_marked_in_the_capture() {
        use pcap_file::pcapng::{Block, PcapNgReader};
        let path = std::env::temp_dir().join(format!("impair-mark-{}.pcapng", std::process::id()));
        let cap = Capture::create(&path, crate::link::CaptureConfig::default()).unwrap();
        let iface = cap.add_interface("eth0", Medium::Ethernet);
        let cfg = Impairments {
            loss_ppm: 500_000,
            corrupt_ppm: 200_000,
            seed: 9,
            ..Impairments::default()
        };
        let layer = Impairer::both(cfg, cfg).record_into(cap.clone(), iface);
        let mut l = Layered::wrap(Sink::default(), layer);
        for i in 0..100 {
            l.send(ms(i), frame(i as u32, 80));
            l.get_mut().incoming.push_back(frame(1000 + i as u32, 80));
            while l.recv(ms(i)).is_some() {}
        }
        let (sent, recv) = (l.layer().sent(), l.layer().received());
        cap.finish();
        let file = std::fs::File::open(&path).unwrap();
        let mut r = PcapNgReader::new(file).unwrap();
        let (mut frames, mut dropped, mut crc) = (0, 0, 0);
        while let Some(b) = r.next_block() {
            let Block::EnhancedPacket(epb) = b.unwrap() else {
                continue;
            };
            frames += 1;
            for o in &epb.options {
                use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption as O;
                match o {
                    O::Comment(c) if c.contains("dropped (loss)") => dropped += 1,
                    O::Flags(f) if f & EPB_CRC != 0 => crc += 1,
                    _ => {}
                }
            }
        }
        let _ = std::fs::remove_file(&path);
        assert_eq!(frames, 200, "every frame recorded once");
        assert_eq!(dropped, sent.dropped + recv.dropped);
        assert!(dropped > 60, "{dropped}");
        assert_eq!(crc, sent.corrupted + recv.corrupted);
    }

    const EPB_CRC: u32 = 1 << 24;
}
