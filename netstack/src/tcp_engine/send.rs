//! The send side: bytes the application wrote, the segments in flight, and
//! the SACK scoreboard over them.
//!
//! The application's bytes enter with `push` and stay until cumulatively
//! acknowledged. Each segment sent is recorded (`record`) with its send time
//! and state; ACKs remove segments from the front (`ack`), SACK blocks mark
//! them (`sack`), and the loss detector marks them lost (`mark_lost`), which
//! puts them up for retransmission (`next_lost`). The counters (`pipe`,
//! `sacked`, `lost`) are kept as segments change state, so the sender's
//! per-packet decisions never walk the queue.

use std::collections::VecDeque;

use crate::budget::Budget;
use smoltcp::time::Instant;
use smoltcp::wire::TcpSeqNumber;

use super::ring::ByteRing;
use super::{seq_add, seq_dist};

/// One transmitted segment, in sequence space.
#[derive(Debug, Clone)]
pub struct SentSegment {
    pub start: TcpSeqNumber,
    /// Sequence space covered: data, plus one for a SYN or a FIN.
    pub len: usize,
    pub syn: bool,
    pub fin: bool,
    /// When it was last (re)transmitted.
    pub sent_at: Instant,
    /// The timestamp value it last carried.
    pub tsval: u32,
    pub retransmits: u32,
    pub sacked: bool,
    /// Deemed lost and not yet retransmitted.
    pub lost: bool,
}

impl SentSegment {
    pub fn end(&self) -> TcpSeqNumber {
        seq_add(self.start, self.len)
    }

    pub fn data_len(&self) -> usize {
        self.len - usize::from(self.syn) - usize::from(self.fin)
    }

    /// Counted in the pipe (RFC 6675's sense): neither SACKed nor lost.
    pub fn in_flight(&self) -> bool {
        !self.sacked && !self.lost
    }
}

/// What a cumulative ACK removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acked {
    /// Sequence space newly acknowledged.
    pub bytes: usize,
    /// Of those, bytes that had been SACKed already (not newly delivered).
    pub were_sacked: usize,
    /// The SYN was among them.
    pub syn: bool,
    /// The FIN was among them.
    pub fin: bool,
}

#[derive(Debug)]
pub struct SendQueue {
    /// Application bytes from `data_seq` on: unacknowledged, then unsent.
    data: ByteRing,
    /// The sequence number of `data[0]`.
    data_seq: TcpSeqNumber,
    /// snd.una and snd.nxt.
    pub una: TcpSeqNumber,
    pub nxt: TcpSeqNumber,
    /// Segments from snd.una to snd.nxt, in sequence order.
    pub segs: VecDeque<SentSegment>,
    pipe: usize,
    sacked: usize,
    lost: usize,
    /// Lowest sequence number that may start a lost segment.
    lost_hint: TcpSeqNumber,
    /// Blocks processed lately: a receiver repeats its blocks, growing
    /// them at the right, so only what lies beyond a remembered block
    /// needs a walk (Linux keeps a similar SACK cache).
    sack_cache: [Option<(TcpSeqNumber, TcpSeqNumber)>; 4],
    /// Retransmissions, for the caller's statistics.
    pub retransmissions: u64,
    /// Retransmissions of data the peer had SACKed: should stay zero.
    pub sacked_retransmissions: u64,
}

impl SendQueue {
    #[cfg(test)]
    pub fn new(capacity: usize, iss: TcpSeqNumber) -> Self {
        SendQueue::with_budget(capacity, iss, Budget::unlimited())
    }

    pub fn with_budget(capacity: usize, iss: TcpSeqNumber, budget: Budget) -> Self {
        SendQueue {
            data: ByteRing::with_budget(capacity, budget),
            data_seq: seq_add(iss, 1),
            una: iss,
            nxt: iss,
            segs: VecDeque::new(),
            pipe: 0,
            sacked: 0,
            lost: 0,
            lost_hint: iss,
            sack_cache: [None; 4],
            retransmissions: 0,
            sacked_retransmissions: 0,
        }
    }

    /// Copies as much of `bytes` as fits; returns how much.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        self.data.push(bytes)
    }

    /// Free room for up to `want` more bytes, to be written in place and
    /// then `commit`ted.
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        self.data.spare(want)
    }

    pub fn commit(&mut self, n: usize) {
        self.data.commit(n);
    }

    pub fn room(&self) -> usize {
        self.data.room()
    }

    /// Resizes the queue's limit (`SO_SNDBUF`); what it holds stays.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.data.set_capacity(capacity);
    }

    /// Bytes written but not yet sent.
    pub fn unsent(&self) -> usize {
        let sent = if self.nxt > self.data_seq {
            seq_dist(self.data_seq, self.nxt)
        } else {
            0
        };
        self.data.len().saturating_sub(sent)
    }

    /// Bytes written and not yet acknowledged.
    pub fn buffered(&self) -> usize {
        self.data.len()
    }

    /// The sequence number just past the last byte written.
    pub fn data_end(&self) -> TcpSeqNumber {
        seq_add(self.data_seq, self.data.len())
    }

    /// Sequence space sent and not acknowledged.
    pub fn outstanding(&self) -> usize {
        seq_dist(self.una, self.nxt)
    }

    pub fn pipe(&self) -> usize {
        self.pipe
    }

    pub fn lost_bytes(&self) -> usize {
        self.lost
    }

    /// The `len` data bytes from sequence number `seq`, as one or two
    /// slices.
    pub fn range(&self, seq: TcpSeqNumber, len: usize) -> (&[u8], &[u8]) {
        let off = if seq > self.data_seq {
            seq_dist(self.data_seq, seq)
        } else {
            0
        };
        self.data.range(off, len)
    }

    /// Records a first transmission at snd.nxt.
    pub fn record(&mut self, seg: SentSegment) {
        self.nxt = seg.end();
        self.pipe += seg.len;
        self.segs.push_back(seg);
    }

    /// A retransmission of segment `i` at `now`.
    pub fn record_retransmit(&mut self, i: usize, now: Instant, tsval: u32) {
        let Some(seg) = self.segs.get_mut(i) else {
            return;
        };
        if seg.sacked {
            self.sacked_retransmissions += 1;
        }
        if seg.lost {
            seg.lost = false;
            self.lost -= seg.len;
            self.pipe += seg.len;
        }
        seg.sent_at = now;
        seg.tsval = tsval;
        seg.retransmits += 1;
        self.retransmissions += 1;
    }

    /// Marks segment `i` lost (it leaves the pipe, awaiting retransmission).
    pub fn mark_lost(&mut self, i: usize) {
        let Some(seg) = self.segs.get_mut(i) else {
            return;
        };
        if seg.sacked || seg.lost {
            return;
        }
        seg.lost = true;
        self.pipe -= seg.len;
        self.lost += seg.len;
        if seg.start < self.lost_hint {
            self.lost_hint = seg.start;
        }
    }

    /// The first segment marked lost, if any.
    pub fn first_lost(&self) -> Option<usize> {
        if self.lost == 0 {
            return None;
        }
        let hint = self.lost_hint;
        let from = self.segs.partition_point(|s| s.end() <= hint);
        (from..self.segs.len()).find(|&i| self.segs[i].lost)
    }

    /// Like `first_lost`, remembering where it was: everything before it is
    /// known not to be lost, so the next search starts there.
    pub fn next_lost(&mut self) -> Option<usize> {
        let found = self.first_lost();
        if let Some(i) = found {
            self.lost_hint = self.segs[i].start;
        }
        found
    }

    /// A cumulative acknowledgement up to `ack` (already checked to lie in
    /// (snd.una, snd.nxt]). `each` sees every segment fully acknowledged.
    pub fn ack(&mut self, ack: TcpSeqNumber, mut each: impl FnMut(&SentSegment)) -> Acked {
        let mut acked = Acked {
            bytes: seq_dist(self.una, ack),
            ..Acked::default()
        };
        while let Some(front) = self.segs.front_mut() {
            if front.end() <= ack {
                let Some(seg) = self.segs.pop_front() else {
                    break;
                };
                self.forget(&seg, seg.len);
                if seg.sacked {
                    acked.were_sacked += seg.len;
                }
                acked.syn |= seg.syn;
                acked.fin |= seg.fin;
                each(&seg);
            } else if front.start < ack {
                // A partial acknowledgement of a segment (the peer trimmed it
                // to its window): keep the rest.
                let cut = seq_dist(front.start, ack);
                let (in_flight, lost, sacked) = (front.in_flight(), front.lost, front.sacked);
                if front.syn {
                    front.syn = false;
                    acked.syn = true;
                }
                front.start = ack;
                front.len -= cut;
                if in_flight {
                    self.pipe -= cut;
                } else if lost {
                    self.lost -= cut;
                } else if sacked {
                    self.sacked -= cut;
                }
                break;
            } else {
                break;
            }
        }
        // Drop the acknowledged application bytes.
        if ack > self.data_seq {
            let n = seq_dist(self.data_seq, ack).min(self.data.len());
            self.data.consume(n);
            self.data_seq = seq_add(self.data_seq, n);
        }
        self.una = ack;
        if self.lost_hint < ack {
            self.lost_hint = ack;
        }
        acked
    }

    fn forget(&mut self, seg: &SentSegment, len: usize) {
        if seg.in_flight() {
            self.pipe -= len;
        } else if seg.lost {
            self.lost -= len;
        } else {
            self.sacked -= len;
        }
    }

    /// Marks the segments wholly inside the block [left, right) SACKed;
    /// `each` sees every newly SACKed one. Returns the bytes newly SACKed.
    pub fn sack(
        &mut self,
        left: TcpSeqNumber,
        right: TcpSeqNumber,
        mut each: impl FnMut(&SentSegment),
    ) -> usize {
        // A block outside (snd.una, snd.nxt] is stale or hostile.
        if !(left < right && left >= self.una && right <= self.nxt) {
            return 0;
        }
        let mut newly = 0;
        // Segments wholly inside a block seen before are marked already.
        let mut done_to = left;
        for &(cl, cr) in self.sack_cache.iter().flatten() {
            if cl <= left && cr > done_to {
                done_to = cr;
            }
        }
        self.sack_cache.rotate_right(1);
        self.sack_cache[0] = Some((left, right));
        let from = self
            .segs
            .partition_point(|s| s.start < left || s.end() <= done_to);
        for i in from..self.segs.len() {
            let seg = &mut self.segs[i];
            // A FIN takes no room in the receiver's queue, so a block ends
            // where the data ends: a segment with a FIN counts as covered
            // when its data is (the receiver keeps the FIN it came with).
            if seq_add(seg.start, seg.data_len() + usize::from(seg.syn)) > right {
                break;
            }
            if seg.data_len() == 0 {
                continue;
            }
            if seg.sacked {
                continue;
            }
            if seg.lost {
                self.lost -= seg.len;
            } else {
                self.pipe -= seg.len;
            }
            seg.lost = false;
            seg.sacked = true;
            self.sacked += seg.len;
            newly += seg.len;
            each(seg);
        }
        newly
    }

    /// The RTO fired: every segment not SACKed is lost (RFC 8985 (6.3)).
    pub fn mark_all_lost(&mut self) {
        for i in 0..self.segs.len() {
            self.mark_lost(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: i32, len: usize) -> SentSegment {
        SentSegment {
            start: TcpSeqNumber(start),
            len,
            syn: false,
            fin: false,
            sent_at: Instant::ZERO,
            tsval: 0,
            retransmits: 0,
            sacked: false,
            lost: false,
        }
    }

    #[test]
    fn counters_follow_state_changes() {
        let mut q = SendQueue::new(1000, TcpSeqNumber(-1));
        q.una = TcpSeqNumber(0);
        q.nxt = TcpSeqNumber(0);
        assert_eq!(q.push(&[1u8; 600]), 600);
        for i in 0..6 {
            q.record(seg(i * 100, 100));
        }
        assert_eq!((q.pipe(), q.unsent()), (600, 0));
        assert_eq!(q.sack(TcpSeqNumber(200), TcpSeqNumber(400), |_| {}), 200);
        // Blocks outside the window are ignored.
        assert_eq!(q.sack(TcpSeqNumber(500), TcpSeqNumber(700), |_| {}), 0);
        q.mark_lost(0);
        q.mark_lost(2); // SACKed: not lost
        assert_eq!((q.pipe(), q.sacked, q.lost_bytes()), (300, 200, 100));
        assert_eq!(q.next_lost(), Some(0));
        q.record_retransmit(0, Instant::ZERO, 0);
        assert_eq!(q.next_lost(), None);
        assert_eq!(q.pipe(), 400);
        let a = q.ack(TcpSeqNumber(450), |_| {});
        assert_eq!((a.bytes, a.were_sacked), (450, 200));
        assert_eq!((q.pipe(), q.sacked, q.segs.len()), (150, 0, 2));
        assert_eq!(q.buffered(), 150);
        let (a, b) = q.range(TcpSeqNumber(450), 100);
        assert_eq!(a.len() + b.len(), 100);
        assert_eq!(q.sacked_retransmissions, 0);
    }
}
