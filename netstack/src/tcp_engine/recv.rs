//! The receive side: in-order data for the application, out-of-order
//! segments held for reassembly, and the SACK blocks that describe them.
//!
//! Segment payloads enter through `write` (already checked for
//! acceptability by the state machine, but trimmed again here to the window
//! so that nothing hostile can write outside the ring); the application
//! takes bytes out with `read`. The ring holds every byte from the first
//! unread one to the right edge of the window, so out-of-order data is
//! written in place and becomes readable by moving a counter, without a copy.
//! The ring starts empty and grows (to the buffer's size at most) only as
//! far as data reaches into the window, so an idle connection holds a page
//! of it, not its whole receive buffer.
//! `sack_blocks` reports, per RFC 2018, the block holding the latest segment
//! first, then older ones, with a D-SACK block (RFC 2883) in front when a
//! duplicate arrived.

use std::collections::BTreeMap;

use smoltcp::wire::TcpSeqNumber;

use super::{seq_add, seq_dist};
use crate::budget::Budget;

/// The smallest ring allocated once data arrives.
const MIN_RING: usize = 4096;

/// Out-of-order ranges kept at most, per KiB of buffer: an honest sender's
/// segments (a range needs one) never reach it, while a hostile peer's
/// one-byte islands cannot make the map outgrow the buffer. Linux bounds
/// the same thing by charging each queued segment's overhead to the buffer.
const OOO_RANGES_PER_KIB: usize = 1;
const MIN_OOO_RANGES: usize = 64;

/// How a segment's data fared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrival {
    /// Bytes that became readable (rcv.nxt moved by this much).
    pub advanced: usize,
    /// The data landed beyond a hole (RFC 5681 (4.2): ACK at once).
    pub out_of_order: bool,
    /// Some of the data had been received before (reported by D-SACK).
    pub duplicate: bool,
    /// The segment filled (part of) a hole (RFC 5681: ACK at once).
    pub filled_hole: bool,
}

#[derive(Debug)]
pub struct RecvBuffer {
    /// Storage, grown on demand up to `capacity`; positions wrap at its
    /// current length.
    ring: Vec<u8>,
    /// The receive buffer's size: what the window is counted from.
    capacity: usize,
    /// Ring index of the first unread byte.
    head: usize,
    /// Readable bytes from `head`.
    ready: usize,
    /// rcv.nxt: the sequence number of the byte after the readable ones.
    nxt: TcpSeqNumber,
    /// The same position counted from the start of the stream, which does
    /// not wrap: the out-of-order map is keyed by such positions.
    nxt_pos: u64,
    /// Disjoint, non-adjacent ranges beyond rcv.nxt, start -> end
    /// (stream positions).
    ooo: BTreeMap<u64, u64>,
    max_ranges: usize,
    /// Starts of the latest out-of-order arrivals, newest first.
    recent: [Option<u64>; 3],
    /// A duplicate range to report once.
    dsack: Option<(TcpSeqNumber, TcpSeqNumber)>,
    /// Charged for `ring`; bounds the window when memory is short.
    budget: Budget,
}

impl Drop for RecvBuffer {
    fn drop(&mut self) {
        self.budget.resized(self.ring.len(), 0);
    }
}

impl RecvBuffer {
    #[cfg(test)]
    pub fn new(capacity: usize) -> Self {
        RecvBuffer::with_budget(capacity, Budget::unlimited())
    }

    pub fn with_budget(capacity: usize, budget: Budget) -> Self {
        let capacity = capacity.max(1);
        RecvBuffer {
            ring: Vec::new(),
            capacity,
            head: 0,
            ready: 0,
            nxt: TcpSeqNumber(0),
            nxt_pos: 0,
            ooo: BTreeMap::new(),
            max_ranges: (capacity / 1024 * OOO_RANGES_PER_KIB).max(MIN_OOO_RANGES),
            recent: [None; 3],
            dsack: None,
            budget,
        }
    }

    /// Sets rcv.nxt once the peer's SYN is known.
    pub fn start(&mut self, nxt: TcpSeqNumber) {
        self.nxt = nxt;
    }

    pub fn nxt(&self) -> TcpSeqNumber {
        self.nxt
    }

    /// rcv.nxt moves past the peer's FIN.
    pub fn consume_fin(&mut self) {
        self.nxt = seq_add(self.nxt, 1);
        self.nxt_pos += 1;
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn readable(&self) -> usize {
        self.ready
    }

    /// Room from rcv.nxt to the end of the ring: the most we may advertise
    /// (the buffer's size, or less where the budget stops the ring's
    /// storage from growing that far).
    pub fn window(&self) -> usize {
        self.budget
            .storage_limit(self.ring.len(), self.capacity)
            .saturating_sub(self.ready)
    }

    pub fn has_holes(&self) -> bool {
        !self.ooo.is_empty()
    }

    /// The stream position of `seq`, which must not be before rcv.nxt.
    fn pos(&self, seq: TcpSeqNumber) -> u64 {
        self.nxt_pos + seq_dist(self.nxt, seq) as u64
    }

    /// The sequence number at stream position `pos` (at or after rcv.nxt).
    fn seq(&self, pos: u64) -> TcpSeqNumber {
        seq_add(self.nxt, pos.saturating_sub(self.nxt_pos) as usize)
    }

    /// Takes a segment's payload starting at `seq`.
    pub fn write(&mut self, seq: TcpSeqNumber, data: &[u8]) -> Arrival {
        let mut arrival = Arrival::default();
        let end = seq_add(seq, data.len());
        let right = seq_add(self.nxt, self.window());
        // Trim to [nxt, right).
        let (start, data) = if seq < self.nxt {
            let skip = seq_dist(seq, self.nxt).min(data.len());
            if skip > 0 {
                arrival.duplicate = true;
                self.dsack = Some((seq, seq_add(seq, skip)));
            }
            (self.nxt, &data[skip..])
        } else {
            (seq, data)
        };
        let data = if end > right {
            &data[..data.len().saturating_sub(seq_dist(right, end))]
        } else {
            data
        };
        if data.is_empty() || start >= right {
            return arrival;
        }
        let (s, e) = (self.pos(start), self.pos(start) + data.len() as u64);
        if start == self.nxt {
            self.copy_in(start, data);
            arrival.filled_hole = !self.ooo.is_empty();
            let mut new_end = e;
            // Absorb the ranges that now touch the in-order data.
            while let Some((&rs, &re)) = self.ooo.first_key_value() {
                if rs > new_end {
                    break;
                }
                if rs < e {
                    arrival.duplicate = true;
                    self.dsack = Some((self.seq(rs), self.seq(re.min(e))));
                }
                new_end = new_end.max(re);
                self.ooo.remove(&rs);
            }
            arrival.advanced = (new_end - s) as usize;
            self.ready += arrival.advanced;
            self.nxt = seq_add(self.nxt, arrival.advanced);
            self.nxt_pos = new_end;
            return arrival;
        }
        // Beyond a hole: merge into the range map.
        arrival.out_of_order = true;
        let (mut ms, mut me) = (s, e);
        let mut merged = Vec::new();
        // A range that starts before and reaches s, then those starting in [s, e].
        let before = self.ooo.range(..s).next_back().map(|(&a, &b)| (a, b));
        let touching = before
            .filter(|&(_, re)| re >= s)
            .into_iter()
            .chain(self.ooo.range(s..=e).map(|(&a, &b)| (a, b)));
        for (rs, re) in touching {
            if rs <= s && re >= e {
                // Entirely received before.
                arrival.duplicate = true;
                self.dsack = Some((start, seq_add(start, data.len())));
                self.note_recent(s);
                return arrival;
            }
            if rs < e && re > s {
                arrival.duplicate = true;
                self.dsack = Some((self.seq(rs.max(s)), self.seq(re.min(e))));
            }
            ms = ms.min(rs);
            me = me.max(re);
            merged.push(rs);
        }
        if merged.is_empty() && self.ooo.len() >= self.max_ranges {
            // No room to remember it: as if lost.
            return Arrival::default();
        }
        self.copy_in(start, data);
        for rs in merged {
            self.ooo.remove(&rs);
        }
        self.ooo.insert(ms, me);
        self.note_recent(s);
        arrival
    }

    /// Data wholly before rcv.nxt arrived again (rejected before `write`).
    pub fn report_duplicate(&mut self, start: TcpSeqNumber, end: TcpSeqNumber) {
        self.dsack = Some((start, end));
    }

    fn note_recent(&mut self, pos: u64) {
        self.recent = [Some(pos), self.recent[0], self.recent[1]];
    }

    /// Copies bytes that lie in [nxt, nxt + window) into the ring.
    fn copy_in(&mut self, seq: TcpSeqNumber, data: &[u8]) {
        self.reserve(self.ready + seq_dist(self.nxt, seq) + data.len());
        let cap = self.ring.len();
        let at = (self.head + self.ready + seq_dist(self.nxt, seq)) % cap;
        let first = data.len().min(cap - at);
        self.ring[at..at + first].copy_from_slice(&data[..first]);
        self.ring[..data.len() - first].copy_from_slice(&data[first..]);
    }

    /// Makes the ring hold at least `span` bytes from `head`, keeping
    /// every byte it holds (readable and out-of-order alike) in place
    /// relative to `head`, which moves to 0.
    fn reserve(&mut self, span: usize) {
        let old = self.ring.len();
        if span <= old {
            return;
        }
        let len = span
            .next_power_of_two()
            .max(MIN_RING)
            .min(self.budget.storage_limit(old, self.capacity))
            .max(span);
        self.budget.resized(old, len);
        let mut ring = vec![0; len];
        ring[..old - self.head].copy_from_slice(&self.ring[self.head..]);
        ring[old - self.head..old].copy_from_slice(&self.ring[..self.head]);
        self.ring = ring;
        self.head = 0;
    }

    /// The readable bytes as at most two slices (the ring may wrap), for
    /// a reader that copies straight out without a bounce buffer.
    pub fn readable_slices(&self) -> (&[u8], &[u8]) {
        let cap = self.ring.len();
        let first = self.ready.min(cap - self.head);
        (
            &self.ring[self.head..self.head + first],
            &self.ring[..self.ready - first],
        )
    }

    /// Drops `n` readable bytes (at most all of them) once they were read.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.ready);
        if n == 0 {
            return;
        }
        self.head = (self.head + n) % self.ring.len();
        self.ready -= n;
        self.release_if_idle();
    }

    /// Copies readable bytes out; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let cap = self.ring.len();
        let n = buf.len().min(self.ready);
        if n == 0 {
            return 0;
        }
        let first = n.min(cap - self.head);
        buf[..first].copy_from_slice(&self.ring[self.head..self.head + first]);
        buf[first..n].copy_from_slice(&self.ring[..n - first]);
        self.head = (self.head + n) % cap;
        self.ready -= n;
        self.release_if_idle();
        n
    }

    /// Nothing held and memory short: the storage goes back to the budget
    /// (the next bytes allocate again).
    fn release_if_idle(&mut self) {
        if self.ready == 0 && self.ooo.is_empty() && !self.ring.is_empty() && self.budget.short() {
            self.budget.resized(self.ring.len(), 0);
            self.ring = Vec::new();
            self.head = 0;
        }
    }

    /// The SACK blocks for the next ACK: a pending D-SACK first (taken,
    /// so it is reported once), then the blocks of the latest arrivals, then
    /// the highest others.
    pub fn sack_blocks(&mut self) -> [Option<(u32, u32)>; 3] {
        let mut out: [Option<(u32, u32)>; 3] = [None; 3];
        // The usual case, asked for by every segment sent.
        if self.dsack.is_none() && self.ooo.is_empty() {
            return out;
        }
        let mut n = 0;
        if let Some((s, e)) = self.dsack.take() {
            out[n] = Some((s.0 as u32, e.0 as u32));
            n += 1;
        }
        let mut chosen: [u64; 3] = [u64::MAX; 3];
        let recent = self.recent.iter().flatten().filter_map(|&p| {
            self.ooo
                .range(..=p)
                .next_back()
                .filter(|&(_, &e)| e > p)
                .map(|(&s, &e)| (s, e))
        });
        let highest = self.ooo.iter().rev().map(|(&s, &e)| (s, e));
        for (s, e) in recent.chain(highest) {
            if n == out.len() {
                break;
            }
            if chosen.contains(&s) {
                continue;
            }
            chosen[n.min(2)] = s;
            out[n] = Some((self.seq(s).0 as u32, self.seq(e).0 as u32));
            n += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: i32) -> TcpSeqNumber {
        TcpSeqNumber(n)
    }

    #[test]
    fn reassembles_out_of_order_and_wraps() {
        let mut r = RecvBuffer::new(10);
        r.start(seq(-3)); // crosses the sequence wrap
        let a = r.write(seq(0), b"def");
        assert!(a.out_of_order && a.advanced == 0);
        assert_eq!(r.sack_blocks()[0], Some((0, 3)));
        let a = r.write(seq(-3), b"abc");
        assert_eq!(a.advanced, 6);
        assert!(a.filled_hole);
        let mut buf = [0; 4];
        assert_eq!(r.read(&mut buf), 4);
        assert_eq!(&buf, b"abcd");
        // Ring wraps: window is 8 now (2 unread).
        assert_eq!(r.window(), 8);
        let a = r.write(seq(3), b"0123456789");
        assert_eq!(a.advanced, 8, "trimmed to the window");
        let mut buf = [0; 16];
        assert_eq!(r.read(&mut buf), 10);
        assert_eq!(&buf[..10], b"ef01234567");
    }

    #[test]
    fn sack_blocks_latest_first_and_dsack() {
        let mut r = RecvBuffer::new(100);
        r.start(seq(0));
        r.write(seq(10), b"xx");
        r.write(seq(20), b"xx");
        r.write(seq(30), b"xx");
        r.write(seq(40), b"xx");
        let b = r.sack_blocks();
        assert_eq!(b, [Some((40, 42)), Some((30, 32)), Some((20, 22))]);
        let a = r.write(seq(20), b"xx");
        assert!(a.duplicate);
        let b = r.sack_blocks();
        assert_eq!(b, [Some((20, 22)), Some((20, 22)), Some((40, 42))]);
        // The D-SACK is reported once.
        assert_eq!(r.sack_blocks()[0], Some((20, 22)));
        assert_eq!(r.sack_blocks()[1], Some((40, 42)));
        // Old data below rcv.nxt is a D-SACK too.
        r.write(seq(0), b"0123456789");
        r.write(seq(0), b"01");
        assert_eq!(r.sack_blocks()[0], Some((0, 2)));
    }

    #[test]
    fn merges_and_bounds_ranges() {
        let mut r = RecvBuffer::new(100_000);
        r.start(seq(0));
        r.write(seq(10), b"aa");
        r.write(seq(14), b"bb");
        r.write(seq(12), b"cc");
        assert_eq!(
            r.ooo.iter().map(|(&s, &e)| (s, e)).collect::<Vec<_>>(),
            vec![(10, 16)]
        );
        for i in 0..200 {
            r.write(seq(100 + 10 * i), b"z");
        }
        assert_eq!(r.ooo.len(), 97, "one range per KiB of buffer");
        let big = vec![7u8; 100_000];
        let a = r.write(seq(0), &big);
        assert_eq!(a.advanced, 100_000);
        assert!(r.ooo.is_empty());
    }
}
