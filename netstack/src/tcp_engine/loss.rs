//! Loss detection: RACK-TLP (RFC 8985) when the peer SACKs, NewReno's
//! duplicate ACKs and partial ACKs (RFC 6582) when it does not.
//!
//! The ACK path tells RACK about every segment newly delivered
//! (`Rack::on_delivered`), then asks it to mark lost the segments sent
//! sufficiently earlier than the most recently delivered one
//! (`Rack::detect_loss` on the send queue); the answer may include a time
//! at which to look again (the reordering timer). A D-SACK widens the
//! reordering window (`Rack::on_dsack`). The tail loss probe (`Tlp`) turns a
//! lost tail into one extra segment after two round trips instead of an RTO
//! (and, when that goes unanswered too, into a few more, spaced ever wider:
//! see `Connection::send_probe`).

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::TcpSeqNumber;

use super::cc::Prr;
use super::send::{SendQueue, SentSegment};

/// Duplicate ACKs (or, for RACK, SACKed segments) that show loss outright
/// without reordering evidence (RFC 5681's DupThresh).
pub const DUP_THRESH: usize = 3;
/// Recoveries a widened reordering window persists (RFC 8985 (6.2) step 4).
const REO_WND_PERSIST: u32 = 16;
/// A delayed ACK the peer may hold back when only one segment is in
/// flight: Linux's 40 ms minimum (RFC 8985's WCDelAckT is 200 ms, made for
/// older stacks).
const WORST_CASE_DELAYED_ACK: Duration = Duration::from_millis(40);

/// Where the connection is in loss recovery.
#[derive(Debug)]
pub enum Recovery {
    Open,
    /// Fast recovery until snd.una reaches `until` (snd.nxt at its start).
    Fast {
        until: TcpSeqNumber,
        prr: Prr,
    },
    /// After a retransmission timeout, until `until` is acknowledged:
    /// slow start resends what was lost, without PRR.
    Timeout {
        until: TcpSeqNumber,
    },
}

#[derive(Debug)]
pub struct Rack {
    /// The send time and end of the most recently sent segment delivered.
    xmit_at: Option<Instant>,
    end: TcpSeqNumber,
    rtt: Duration,
    /// The highest end of a delivered segment ("forward-most ACKed").
    fack: Option<TcpSeqNumber>,
    reordering_seen: bool,
    reo_wnd_mult: u32,
    reo_wnd_persist: u32,
    dsack_round: Option<TcpSeqNumber>,
}

impl Default for Rack {
    fn default() -> Self {
        Rack {
            xmit_at: None,
            end: TcpSeqNumber(0),
            rtt: Duration::ZERO,
            fack: None,
            reordering_seen: false,
            reo_wnd_mult: 1,
            reo_wnd_persist: 0,
            dsack_round: None,
        }
    }
}

/// RFC 8985's RACK_sent_after: sent later, or at the same time but further.
fn sent_after(t1: Instant, end1: TcpSeqNumber, t2: Instant, end2: TcpSeqNumber) -> bool {
    t1 > t2 || (t1 == t2 && end1 > end2)
}

impl Rack {
    /// A segment was newly acknowledged (`tsecr`: the ACK's echoed
    /// timestamp, for a cumulative ACK) or SACKed (`tsecr` None) at `now`.
    pub fn on_delivered(
        &mut self,
        seg: &SentSegment,
        now: Instant,
        min_rtt: Option<Duration>,
        tsecr: Option<u32>,
    ) {
        let end = seg.end();
        if let Some(fack) = self.fack
            && end < fack
            && seg.retransmits == 0
        {
            self.reordering_seen = true;
        }
        self.fack = Some(self.fack.map_or(end, |f| f.max(end)));
        let rtt = now - seg.sent_at;
        if seg.retransmits > 0 {
            // Karn: was it the retransmission that arrived? A time shorter
            // than the path's minimum says it was the original. For a
            // cumulative ACK the echoed timestamp is the hole-filler's: one
            // older than the retransmission's says it was the original, and
            // with millisecond ticks an equal one cannot tell, so that
            // sample is skipped too (later segments, sent once, advance
            // RACK soon enough). A SACK echoes an older in-order segment's
            // timestamp, which says nothing about this one.
            let echoes_older = tsecr.is_some_and(|e| (e.wrapping_sub(seg.tsval) as i32) <= 0);
            if echoes_older || min_rtt.is_some_and(|m| rtt < m) {
                return;
            }
        }
        self.rtt = rtt;
        let newer = self
            .xmit_at
            .is_none_or(|t| sent_after(seg.sent_at, end, t, self.end));
        if newer {
            self.xmit_at = Some(seg.sent_at);
            self.end = end;
        }
    }

    /// A D-SACK arrived: a retransmission was spurious, so the network
    /// reorders more than the window allowed for.
    pub fn on_dsack(&mut self, una: TcpSeqNumber, nxt: TcpSeqNumber) {
        self.reordering_seen = true;
        if self.dsack_round.is_none_or(|r| una >= r) {
            self.dsack_round = Some(nxt);
            self.reo_wnd_mult = self.reo_wnd_mult.saturating_add(1).min(32);
            self.reo_wnd_persist = REO_WND_PERSIST;
        }
    }

    /// A recovery ended: a widened window decays back after a while.
    pub fn on_recovery_end(&mut self) {
        if self.reo_wnd_persist > 0 {
            self.reo_wnd_persist -= 1;
            if self.reo_wnd_persist == 0 {
                self.reo_wnd_mult = 1;
            }
        }
    }

    /// RFC 8985 (6.2) step 4.
    fn reo_wnd(
        &self,
        in_recovery: bool,
        sacked_segments: usize,
        min_rtt: Duration,
        srtt: Duration,
    ) -> Duration {
        if !self.reordering_seen && (in_recovery || sacked_segments >= DUP_THRESH) {
            return Duration::ZERO;
        }
        let w = min_rtt.total_micros() / 4 * u64::from(self.reo_wnd_mult);
        Duration::from_micros(w).min(srtt)
    }

    /// Marks lost the segments sent before the latest delivered one by more
    /// than the reordering window. Returns when to check again, if some
    /// segment is still within the window.
    pub fn detect_loss(
        &mut self,
        q: &mut SendQueue,
        now: Instant,
        in_recovery: bool,
        min_rtt: Duration,
        srtt: Duration,
    ) -> Option<Duration> {
        let xmit_at = self.xmit_at?;
        let sacked_segments = q
            .segs
            .iter()
            .take(DUP_THRESH + 8)
            .filter(|s| s.sacked)
            .count();
        let reo_wnd = self.reo_wnd(in_recovery, sacked_segments, min_rtt, srtt);
        let deadline_base = self.rtt + reo_wnd;
        let mut timeout = None;
        for i in 0..q.segs.len() {
            let seg = &q.segs[i];
            if !sent_after(xmit_at, self.end, seg.sent_at, seg.end()) {
                if seg.retransmits == 0 {
                    // Every later segment was sent later still.
                    break;
                }
                continue;
            }
            if seg.sacked || seg.lost {
                continue;
            }
            let expires = seg.sent_at + deadline_base;
            if expires <= now {
                q.mark_lost(i);
            } else {
                let left = expires - now;
                timeout = Some(timeout.map_or(left, |t: Duration| t.max(left)));
            }
        }
        timeout
    }
}

/// The tail loss probe's state (RFC 8985 (7)).
#[derive(Debug, Default)]
pub struct Tlp {
    /// snd.nxt when the probe went out; set while a probe is unanswered.
    pub end: Option<TcpSeqNumber>,
    /// The probe was a retransmission (not new data).
    pub was_retransmission: bool,
    /// A D-SACK arrived since: the probe was the duplicate.
    pub dsacked: bool,
}

impl Tlp {
    /// The probe timeout: two round trips, more if a lone segment may sit in
    /// a delayed-ACK timer, never beyond the RTO.
    pub fn pto(srtt: Option<Duration>, lone_segment: bool, rto: Duration) -> Duration {
        let Some(srtt) = srtt else {
            return rto;
        };
        let mut pto = srtt + srtt;
        if lone_segment {
            let alt =
                srtt + Duration::from_micros(srtt.total_micros() / 2) + WORST_CASE_DELAYED_ACK;
            pto = pto.max(alt);
        }
        pto.min(rto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_of(n: usize, now: Instant) -> SendQueue {
        let mut q = SendQueue::new(1 << 20, TcpSeqNumber(-1));
        q.una = TcpSeqNumber(0);
        q.nxt = TcpSeqNumber(0);
        q.push(&vec![0; n * 100]);
        for i in 0..n {
            q.record(SentSegment {
                start: TcpSeqNumber((i * 100) as i32),
                len: 100,
                syn: false,
                fin: false,
                sent_at: now + Duration::from_micros(i as u64),
                tsval: 0,
                retransmits: 0,
                sacked: false,
                lost: false,
            });
        }
        q
    }

    #[test]
    fn marks_earlier_segments_lost_after_reordering_window() {
        let t0 = Instant::ZERO;
        let mut q = queue_of(10, t0);
        let mut rack = Rack::default();
        let now = t0 + Duration::from_millis(10);
        let min_rtt = Duration::from_millis(10);
        // Segment 5 is SACKed; 0..5 were sent earlier.
        let mut delivered = Vec::new();
        q.sack(TcpSeqNumber(500), TcpSeqNumber(600), |s| {
            delivered.push(s.clone());
        });
        for s in &delivered {
            rack.on_delivered(s, now, Some(min_rtt), None);
        }
        // Not in recovery, one SACKed segment: reo_wnd = min_rtt/4 = 2.5 ms.
        let t = rack.detect_loss(&mut q, now, false, min_rtt, min_rtt);
        assert_eq!(q.lost_bytes(), 0);
        assert!(t.is_some_and(|t| t <= Duration::from_micros(2500)));
        let later = now + Duration::from_micros(2500);
        let t = rack.detect_loss(&mut q, later, false, min_rtt, min_rtt);
        assert_eq!(q.lost_bytes(), 500, "segments 0..5 lost");
        assert_eq!(t, None);
        assert_eq!(q.next_lost(), Some(0));
    }

    #[test]
    fn lost_retransmission_is_detected_without_rto() {
        let t0 = Instant::ZERO;
        let mut q = queue_of(4, t0);
        let mut rack = Rack::default();
        let min = Duration::from_millis(1);
        q.mark_lost(0);
        // Retransmitted at 2 ms, then segment 3 (sent at t0) SACKed: the
        // retransmission was sent after it, so it is not judged yet.
        let rtx = t0 + Duration::from_millis(2);
        q.record_retransmit(0, rtx, 0);
        let mut d = Vec::new();
        q.sack(TcpSeqNumber(300), TcpSeqNumber(400), |s| d.push(s.clone()));
        for s in &d {
            rack.on_delivered(s, rtx, Some(min), None);
        }
        rack.detect_loss(&mut q, rtx, true, min, min);
        assert!(!q.segs[0].lost);
        // New data sent after the retransmission is SACKed a round trip
        // later: now the retransmission is known lost.
        q.push(&[0; 100]);
        q.record(SentSegment {
            start: TcpSeqNumber(400),
            len: 100,
            syn: false,
            fin: false,
            sent_at: rtx + Duration::from_micros(1),
            tsval: 0,
            retransmits: 0,
            sacked: false,
            lost: false,
        });
        let now = rtx + Duration::from_millis(1);
        let mut d = Vec::new();
        q.sack(TcpSeqNumber(400), TcpSeqNumber(500), |s| d.push(s.clone()));
        for s in &d {
            rack.on_delivered(s, now, Some(min), None);
        }
        rack.detect_loss(&mut q, now + min, true, min, min);
        assert!(q.segs[0].lost, "the lost retransmission is found");
    }

    #[test]
    fn pto_is_two_rtts_with_delack_allowance() {
        let rto = Duration::from_millis(200);
        let srtt = Some(Duration::from_millis(10));
        assert_eq!(Tlp::pto(srtt, false, rto), Duration::from_millis(20));
        assert_eq!(Tlp::pto(srtt, true, rto), Duration::from_millis(55));
        assert_eq!(Tlp::pto(None, false, rto), rto);
    }
}
