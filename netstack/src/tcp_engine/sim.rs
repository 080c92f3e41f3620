//! A simulated network for the engine's tests: two connections joined by
//! two one-way links on a simulated clock.
//!
//! Each link serializes frames at its rate behind a bounded queue (tail
//! drop), then delays them, and may lose (randomly or in bursts), reorder
//! (an extra random delay) or duplicate them, all decided by a seeded
//! xorshift generator so a failure replays exactly. Segments cross as bytes:
//! `TcpRepr::emit` on one side and `TcpPacket::new_checked` +
//! `TcpRepr::parse` on the other, so the engine is tested against the wire
//! format. An observer checks, independently of the engine's counters, that
//! no segment the receiver had SACKed (and the sender had heard of) is sent
//! again.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, Ipv4Address, TcpControl, TcpPacket, TcpRepr};

use super::{Connection, Segment};

/// xorshift64: small, fast, and good enough to decide drops.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // A small seed would give a run of tiny first values (and so a run
        // of losses); mix it first (splitmix64's finalizer).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)).max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A uniform value in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// One direction's behaviour.
#[derive(Debug, Clone, Copy)]
pub struct LinkParams {
    /// Propagation delay (half the base RTT).
    pub delay: Duration,
    /// Bits per second; 0 for no serialization delay.
    pub rate_bps: u64,
    /// Bytes that may wait to be serialized; more are dropped.
    pub queue_bytes: usize,
    pub loss: f64,
    /// Chance that a frame starts a burst: it and the next frames are lost,
    /// up to `burst_len` of them sent within `BURST_SPAN` (an outage, so a
    /// sparse flow's next frames long after it survive).
    pub burst: f64,
    pub burst_len: u32,
    /// How long after its first frame a burst goes on (`BURST_SPAN`); zero
    /// for frames sent at that same instant only, as when one offloaded
    /// frame of many segments is dropped whole.
    pub burst_span: Duration,
    /// Chance that a frame is held back by up to `reorder_delay`.
    pub reorder: f64,
    pub reorder_delay: Duration,
    pub duplicate: f64,
}

impl LinkParams {
    pub fn clean(rtt: Duration, rate_bps: u64) -> Self {
        let delay = Duration::from_micros(rtt.total_micros() / 2);
        // A BDP of queue, at least 64 KiB: enough for the window to grow
        // past the pipe without a standing tail drop.
        let bdp = (u128::from(rate_bps) * u128::from(rtt.total_micros()) / 8_000_000) as usize;
        LinkParams {
            delay,
            rate_bps,
            queue_bytes: bdp.max(64 * 1024),
            loss: 0.0,
            burst: 0.0,
            burst_len: 0,
            burst_span: BURST_SPAN,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            duplicate: 0.0,
        }
    }
}

/// How long a loss burst may last.
const BURST_SPAN: Duration = Duration::from_millis(1);

#[derive(Debug, Default, Clone, Copy)]
pub struct LinkStats {
    pub frames: u64,
    pub lost: u64,
    pub tail_dropped: u64,
    pub reordered: u64,
    pub duplicated: u64,
}

#[derive(Debug)]
struct Link {
    p: LinkParams,
    /// When the serializer is free, in nanoseconds.
    busy_until_ns: u128,
    burst_left: u32,
    burst_ends: Instant,
    /// A blackout: everything sent before this instant is lost.
    dark_until: Option<Instant>,
    stats: LinkStats,
}

impl Link {
    /// Arrival times for a frame of `len` bytes sent at `now` (none: lost).
    fn transmit(&mut self, now: Instant, len: usize, rng: &mut Rng) -> Vec<Instant> {
        self.stats.frames += 1;
        if self.dark_until.is_some_and(|d| now < d) {
            self.stats.lost += 1;
            return Vec::new();
        }
        let now_ns = now.total_micros().max(0) as u128 * 1000;
        let start = self.busy_until_ns.max(now_ns);
        if self.p.rate_bps > 0 {
            let backlog = (start - now_ns) * u128::from(self.p.rate_bps) / 8_000_000_000;
            if backlog as usize + len > self.p.queue_bytes {
                self.stats.tail_dropped += 1;
                return Vec::new();
            }
            self.busy_until_ns = start + len as u128 * 8_000_000_000 / u128::from(self.p.rate_bps);
        } else {
            self.busy_until_ns = start;
        }
        // Losses on the wire, after the queue.
        let in_burst = if self.p.burst_span == Duration::ZERO {
            now == self.burst_ends
        } else {
            now < self.burst_ends
        };
        if self.burst_left > 0 && in_burst {
            self.burst_left -= 1;
            self.stats.lost += 1;
            return Vec::new();
        }
        if rng.chance(self.p.burst) {
            self.burst_left = self.p.burst_len.saturating_sub(1);
            self.burst_ends = now + self.p.burst_span;
            self.stats.lost += 1;
            return Vec::new();
        }
        if rng.chance(self.p.loss) {
            self.stats.lost += 1;
            return Vec::new();
        }
        let done_us = self.busy_until_ns.div_ceil(1000) as i64;
        let mut at = Instant::from_micros(done_us) + self.p.delay;
        if rng.chance(self.p.reorder) {
            self.stats.reordered += 1;
            let extra = (rng.unit() * self.p.reorder_delay.total_micros() as f64) as u64;
            at += Duration::from_micros(extra.max(1));
        }
        let mut out = vec![at];
        if rng.chance(self.p.duplicate) {
            self.stats.duplicated += 1;
            out.push(at + Duration::from_micros(1));
        }
        out
    }
}

/// Watches one direction's data and the SACK blocks coming back.
#[derive(Debug, Default)]
pub struct Observer {
    /// The sender's ISN, from its SYN: sequence numbers are kept relative.
    base: Option<u32>,
    /// Highest sequence number sent so far (relative).
    high: u64,
    /// Ranges the sender has been told were SACKed (relative, merged).
    sacked: BTreeMap<u64, u64>,
    pub data_segments: u64,
    pub retransmitted_segments: u64,
    /// Retransmissions of data the sender knew to be SACKed: must be 0.
    pub sacked_retransmissions: u64,
    /// When each retransmission went out.
    pub retransmit_times: Vec<Instant>,
}

impl Observer {
    fn rel(&self, seq: u32) -> u64 {
        u64::from(seq.wrapping_sub(self.base.unwrap_or(0)))
    }

    fn sent(&mut self, now: Instant, r: &TcpRepr) {
        if r.control == TcpControl::Syn {
            self.base = Some(r.seq_number.0 as u32);
        }
        if r.payload.is_empty() {
            return;
        }
        self.data_segments += 1;
        let s = self.rel(r.seq_number.0 as u32);
        let e = s + r.payload.len() as u64;
        if s < self.high {
            self.retransmitted_segments += 1;
            self.retransmit_times.push(now);
            if let Some((_, &end)) = self.sacked.range(..=s).next_back()
                && end >= e
            {
                self.sacked_retransmissions += 1;
            }
        }
        self.high = self.high.max(e);
    }

    /// An ACK from the receiver reached the sender.
    fn acked(&mut self, r: &TcpRepr) {
        if self.base.is_none() {
            return;
        }
        let Some(ack) = r.ack_number else { return };
        let ack = self.rel(ack.0 as u32);
        for (i, b) in r.sack_ranges.iter().enumerate() {
            let Some((l, rr)) = *b else { continue };
            let (l, rr) = (self.rel(l), self.rel(rr));
            if rr <= ack || l >= rr || rr > self.high {
                continue;
            }
            if i == 0 {
                let inside = r.sack_ranges[1]
                    .is_some_and(|(l2, r2)| l >= self.rel(l2) && rr <= self.rel(r2));
                if inside {
                    continue;
                }
            }
            self.insert(l, rr);
        }
        // Forget what is cumulatively acknowledged.
        while let Some((&s, &e)) = self.sacked.iter().next() {
            if e <= ack {
                self.sacked.remove(&s);
            } else {
                break;
            }
        }
    }

    fn insert(&mut self, mut l: u64, mut r: u64) {
        if let Some((&s, &e)) = self.sacked.range(..=l).next_back()
            && e >= l
        {
            l = s;
            r = r.max(e);
            self.sacked.remove(&s);
        }
        while let Some((&s, &e)) = self.sacked.range(l..).next() {
            if s > r {
                break;
            }
            r = r.max(e);
            self.sacked.remove(&s);
        }
        self.sacked.insert(l, r);
    }
}

type InFlight = Reverse<(Instant, u64, usize, Vec<u8>)>;

/// Two engines, two links, one clock.
#[derive(Debug)]
pub struct Sim {
    pub now: Instant,
    pub ends: [Connection; 2],
    links: [Link; 2],
    heap: BinaryHeap<InFlight>,
    order: u64,
    rng: Rng,
    /// observers[i] watches data sent by end i.
    pub observers: [Observer; 2],
    out: Vec<Segment>,
    buf: Vec<u8>,
}

fn ip(n: u8) -> IpAddress {
    IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, n))
}

impl Sim {
    pub fn new(a: Connection, b: Connection, ab: LinkParams, ba: LinkParams, seed: u64) -> Self {
        let link = |p| Link {
            p,
            busy_until_ns: 0,
            burst_left: 0,
            burst_ends: Instant::ZERO,
            dark_until: None,
            stats: LinkStats::default(),
        };
        Sim {
            now: Instant::ZERO,
            ends: [a, b],
            links: [link(ab), link(ba)],
            heap: BinaryHeap::new(),
            order: 0,
            rng: Rng::new(seed),
            observers: [Observer::default(), Observer::default()],
            out: Vec::new(),
            buf: vec![0; 65536 + 128],
        }
    }

    pub fn link_stats(&self, from: usize) -> LinkStats {
        self.links[from].stats
    }

    /// Loses everything either way until `until`.
    pub fn blackout(&mut self, until: Instant) {
        for l in &mut self.links {
            l.dark_until = Some(until);
        }
    }

    /// Hands a segment to end `to` as if it came from the wire, and
    /// returns what the end sends in answer (not put on the link).
    pub fn inject(&mut self, to: usize, repr: &TcpRepr) -> Vec<Segment> {
        self.ends[to].input(self.now, repr);
        let mut out = Vec::new();
        self.ends[to].poll(self.now, &mut out);
        out
    }

    /// Runs the engines' output for both ends.
    fn poll_ends(&mut self) {
        for from in 0..2 {
            let mut out = std::mem::take(&mut self.out);
            self.ends[from].poll(self.now, &mut out);
            for seg in out.drain(..) {
                self.transmit(from, &seg);
            }
            self.out = out;
        }
    }

    fn transmit(&mut self, from: usize, seg: &Segment) {
        let mut scratch = Vec::new();
        let repr = self.ends[from].repr(seg, &mut scratch);
        self.observers[from].sent(self.now, &repr);
        let len = repr.buffer_len();
        let bytes = &mut self.buf[..len];
        let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
        repr.emit(
            &mut packet,
            &ip(1 + from as u8),
            &ip(2 - from as u8),
            &ChecksumCapabilities::ignored(),
        );
        // The wire also carries a 20-byte IP header.
        let arrivals = self.links[from].transmit(self.now, len + 20, &mut self.rng);
        for at in arrivals {
            self.order += 1;
            self.heap.push(Reverse((
                at,
                self.order,
                1 - from,
                self.buf[..len].to_vec(),
            )));
        }
    }

    fn deliver(&mut self, to: usize, bytes: &[u8]) {
        let Ok(packet) = TcpPacket::new_checked(bytes) else {
            panic!("the engine emitted a malformed segment");
        };
        let repr = TcpRepr::parse(
            &packet,
            &ip(2 - to as u8),
            &ip(1 + to as u8),
            &ChecksumCapabilities::ignored(),
        )
        .expect("the engine emitted an unparsable segment");
        let before = self.ends[to].stats();
        self.ends[to].input(self.now, &repr);
        let after = self.ends[to].stats();
        // What end `to` receives acknowledges the data end `to` sent, unless
        // the end dropped it whole, as RFC 7323's PAWS or the window test
        // may (Linux drops those too).
        let dropped = after.paws_rejected > before.paws_rejected
            || after.out_of_window > before.out_of_window;
        if !dropped {
            self.observers[to].acked(&repr);
        }
    }

    /// Advances until `done` says so or `deadline` passes; `app` runs after
    /// every step to move application data. Returns whether `done` held.
    pub fn run(
        &mut self,
        deadline: Instant,
        mut app: impl FnMut(&mut Sim),
        mut done: impl FnMut(&Sim) -> bool,
    ) -> bool {
        let mut same_time_steps = 0u32;
        loop {
            app(self);
            self.poll_ends();
            if done(self) {
                return true;
            }
            let next = [
                self.heap.peek().map(|Reverse((t, ..))| *t),
                self.ends[0].poll_at(),
                self.ends[1].poll_at(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else {
                return false;
            };
            if next > deadline {
                self.now = deadline;
                return false;
            }
            if next <= self.now {
                same_time_steps += 1;
                assert!(
                    same_time_steps < 100_000,
                    "livelock at {}: an engine wants to poll but sends nothing",
                    self.now
                );
            } else {
                same_time_steps = 0;
                self.now = next;
            }
            while let Some(Reverse((t, ..))) = self.heap.peek() {
                if *t > self.now {
                    break;
                }
                let Some(Reverse((_, _, to, bytes))) = self.heap.pop() else {
                    break;
                };
                self.deliver(to, &bytes);
            }
        }
    }
}

/// The byte at `offset` of test stream `seed`: a hash of its 8-byte block,
/// so a misplaced or stale byte never matches by accident of a period.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut block = u64::MAX;
    let mut word = [0u8; 8];
    for (i, b) in buf.iter_mut().enumerate() {
        let pos = offset + i as u64;
        if pos / 8 != block {
            block = pos / 8;
            let mut z = seed ^ block.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            word = (z ^ (z >> 31)).to_le_bytes();
        }
        *b = word[(pos % 8) as usize];
    }
}

/// One direction of a bulk transfer: writes a pattern stream, reads and
/// checks it at the other end.
#[derive(Debug)]
pub struct Stream {
    pub from: usize,
    pub seed: u64,
    /// Bytes to send; `u64::MAX` for as many as fit in the time.
    pub total: u64,
    pub written: u64,
    pub read: u64,
    /// Close the sending side once everything is written.
    pub close_after: bool,
    /// When the last byte was read.
    pub finished_at: Option<Instant>,
    scratch: Vec<u8>,
}

impl Stream {
    pub fn new(from: usize, seed: u64, total: u64, close_after: bool) -> Self {
        Stream {
            from,
            seed,
            total,
            written: 0,
            read: 0,
            close_after,
            finished_at: None,
            scratch: vec![0; 256 * 1024],
        }
    }

    /// Moves what can move now; panics on a byte that differs.
    pub fn step(&mut self, sim: &mut Sim) {
        let (tx, rx) = (self.from, 1 - self.from);
        loop {
            let want = (self.total - self.written).min(self.scratch.len() as u64) as usize;
            let room = sim.ends[tx].send_room().min(want);
            if room == 0 {
                break;
            }
            fill(self.seed, self.written, &mut self.scratch[..room]);
            let n = sim.ends[tx].send(&self.scratch[..room]);
            self.written += n as u64;
            if n < room {
                break;
            }
        }
        if self.close_after && self.written == self.total {
            sim.ends[tx].close();
            self.close_after = false;
        }
        let mut expect = vec![0u8; 0];
        loop {
            let n = sim.ends[rx].recv(&mut self.scratch);
            if n == 0 {
                break;
            }
            expect.resize(n, 0);
            fill(self.seed, self.read, &mut expect);
            if expect[..] != self.scratch[..n] {
                let at = (0..n).find(|&i| expect[i] != self.scratch[i]).unwrap_or(0);
                panic!(
                    "stream from end {tx}: byte {} differs",
                    self.read + at as u64
                );
            }
            self.read += n as u64;
        }
        if self.read == self.total && self.finished_at.is_none() {
            self.finished_at = Some(sim.now);
        }
    }
}
