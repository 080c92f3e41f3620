//! What the connection sends: SYNs, retransmissions, new data and FINs
//! within the congestion and receive windows, and ACKs carrying our
//! window, timestamps and SACK blocks.
//!
//! `poll` runs the due timers, then fills the caller's list in priority
//! order (replies, SYN, lost segments, new data, FIN, a bare ACK);
//! `poll_at` (in `timers`) asks `has_output` whether that would send
//! anything now.

use smoltcp::time::Instant;
use smoltcp::wire::{TcpControl, TcpSeqNumber, TcpTimestampRepr};

use super::loss::Recovery;
use super::send::SentSegment;
use super::{
    AckPolicy, Connection, SACK_ROOM, Segment, State, UNDO_MAX_RETRANSMISSIONS, seq_add, seq_dist,
};

impl Connection {
    /// Runs due timers and appends every segment that may go out now.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Segment>) {
        self.now = now;
        out.append(&mut self.replies);
        if matches!(self.state, State::Closed | State::Listen) {
            return;
        }
        self.on_timers(now, out);
        if self.state == State::Closed {
            out.append(&mut self.replies);
            return;
        }
        let sent_before = out.len();
        // Our SYN (or SYN-ACK), once.
        if matches!(self.state, State::SynSent | State::SynReceived) && self.snd.nxt == self.iss {
            self.send_syn(now, out);
        }
        // Retransmissions first, then new data, within the quota.
        while let Some(i) = self.snd.next_lost() {
            let len = self.snd.segs[i].len;
            if len > self.quota() && !self.snd.segs[i].syn {
                break;
            }
            self.retransmit(now, i, out);
        }
        // Lost segments the quota held back go before any new data.
        let rtx_blocked = self.snd.first_lost().is_some();
        if self.state.is_synchronized() {
            while !rtx_blocked && let Some(len) = self.next_data_len() {
                self.send_new(now, len, out);
            }
            // Whether the window, not the application, limits sending: only
            // then may it grow. Slow start counts half a window as used, as
            // Linux does, since a window grows while it drains.
            self.cwnd_limited = rtx_blocked
                || (self.snd.unsent() > 0 && self.window_room() > 0)
                || (self.cc.in_slow_start() && 2 * self.pipe() >= self.cc.cwnd());
            if self.fin_due() {
                self.send_fin(now, out);
            }
        }
        // A retransmission that repaired the last known loss may itself be
        // lost with nothing sent after it: probe for that too.
        if self.tlp_at.is_none() {
            self.tlp_at = self.probe_at(now);
        }
        if out.len() == sent_before && self.ack_now {
            let seg = self.segment(now, self.snd.nxt, TcpControl::None, 0, true);
            self.stats.acks_sent += 1;
            out.push(seg);
        }
    }

    pub(super) fn has_output(&self) -> bool {
        if !self.replies.is_empty() {
            return true;
        }
        if matches!(self.state, State::Closed | State::Listen) {
            return false;
        }
        if self.ack_now {
            return true;
        }
        if matches!(self.state, State::SynSent | State::SynReceived) && self.snd.nxt == self.iss {
            return true;
        }
        if self.snd.lost_bytes() > 0 {
            let first_lost = self.snd.first_lost().and_then(|i| self.snd.segs.get(i));
            if first_lost.is_some_and(|s| s.len <= self.quota() || s.syn) {
                return true;
            }
        }
        self.state.is_synchronized()
            && ((self.snd.first_lost().is_none() && self.next_data_len().is_some())
                || self.fin_due())
    }

    /// How much may be put in flight now.
    pub(super) fn quota(&self) -> usize {
        match &self.recovery {
            Recovery::Fast { prr, .. } => prr.quota(),
            _ => self.cc.cwnd().saturating_sub(self.pipe()),
        }
    }

    /// Room in the peer's window beyond snd.nxt.
    pub(super) fn window_room(&self) -> usize {
        let right = seq_add(self.snd.una, self.snd_wnd);
        seq_dist(self.snd.nxt, right)
    }

    /// The size of the next new segment, if one may go now.
    pub(super) fn next_data_len(&self) -> Option<usize> {
        if !matches!(
            self.state,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        ) {
            return None;
        }
        let unsent = self.snd.unsent();
        if unsent == 0 {
            return None;
        }
        let room = self.window_room();
        let mss = if self.opts.sack && self.rcv.has_holes() {
            self.mss.saturating_sub(SACK_ROOM).max(1)
        } else {
            self.mss
        };
        let len = unsent.min(room).min(mss);
        if len == 0 || len > self.quota() {
            return None;
        }
        // Nagle: a small segment waits while data is unacknowledged, unless
        // it is the last before our FIN.
        if self.cfg.nagle && len < mss && self.snd.outstanding() > 0 && !self.fin_queued {
            return None;
        }
        // Cork: a partial segment waits for more bytes, the cork's removal
        // or its ceiling.
        if self.corked
            && len < mss
            && !self.fin_queued
            && self.cork_deadline.is_none_or(|d| self.now < d)
        {
            return None;
        }
        // Sender SWS avoidance (RFC 9293 (3.8.6.2.1)): a small segment only
        // when it empties the queue or the window is half open.
        if len < mss && len < unsent && len < self.max_snd_wnd / 2 {
            return None;
        }
        Some(len)
    }

    pub(super) fn fin_due(&self) -> bool {
        self.fin_queued
            && matches!(
                self.state,
                State::FinWait1 | State::LastAck | State::Closing
            )
            && self.snd.unsent() == 0
            && !self.fin_sent()
    }

    pub(super) fn fin_sent(&self) -> bool {
        self.snd.nxt > self.snd.data_end()
    }

    pub(super) fn send_syn(&mut self, now: Instant, out: &mut Vec<Segment>) {
        let seg = self.syn_segment(now);
        self.snd.record(SentSegment {
            start: self.iss,
            len: 1,
            syn: true,
            fin: false,
            sent_at: now,
            tsval: self.tsval(now),
            retransmits: 0,
            sacked: false,
            lost: false,
        });
        self.rto_at.get_or_insert(now + self.rtt.rto());
        self.stats.segments_sent += 1;
        out.push(seg);
    }

    /// Our SYN (active) or SYN-ACK (passive, options mirroring the peer's).
    pub(super) fn syn_segment(&mut self, now: Instant) -> Segment {
        let active = self.state == State::SynSent;
        let mut s = self.bare(self.iss, TcpControl::Syn, (!active).then(|| self.rcv.nxt()));
        let h = &mut s.header;
        h.window_len = self.rcv.window().min(65535) as u16;
        h.max_seg_size = Some(self.cfg.mss);
        let (ws, sack, ts) = if active {
            (self.cfg.window_scale, self.cfg.sack, self.cfg.timestamps)
        } else {
            (self.opts.window_scale, self.opts.sack, self.opts.timestamps)
        };
        if ws {
            h.window_scale = Some(self.our_shift());
        }
        h.sack_permitted = sack;
        if ts {
            h.timestamp = Some(TcpTimestampRepr::new(
                self.tsval(now),
                if active { 0 } else { self.ts_recent },
            ));
        }
        if !active {
            self.rcv_adv = seq_add(self.rcv.nxt(), usize::from(h.window_len));
        }
        s
    }

    pub(super) fn send_new(&mut self, now: Instant, len: usize, out: &mut Vec<Segment>) {
        let start = self.snd.nxt;
        let len = len.min(self.snd.unsent());
        let fin = self.fin_queued && len == self.snd.unsent() && self.state != State::CloseWait;
        let control = if fin {
            TcpControl::Fin
        } else {
            TcpControl::None
        };
        // Data answering data that came within the delay: interactive.
        if let AckPolicy::Interactive(d) = self.cfg.acks
            && len > 0
            && self.last_data_at.is_some_and(|t| now < t + d)
        {
            self.interactive = true;
        }
        let seg = self.segment(now, start, control, len, true);
        self.snd.record(SentSegment {
            start,
            len: len + usize::from(fin),
            syn: false,
            fin,
            sent_at: now,
            tsval: self.tsval(now),
            retransmits: 0,
            sacked: false,
            lost: false,
        });
        if let Recovery::Fast { prr, .. } = &mut self.recovery {
            prr.on_send(len);
        }
        self.after_send(now);
        out.push(seg);
    }

    pub(super) fn send_fin(&mut self, now: Instant, out: &mut Vec<Segment>) {
        let start = self.snd.nxt;
        let seg = self.segment(now, start, TcpControl::Fin, 0, true);
        self.snd.record(SentSegment {
            start,
            len: 1,
            syn: false,
            fin: true,
            sent_at: now,
            tsval: self.tsval(now),
            retransmits: 0,
            sacked: false,
            lost: false,
        });
        self.after_send(now);
        out.push(seg);
    }

    pub(super) fn after_send(&mut self, now: Instant) {
        self.stats.segments_sent += 1;
        self.rto_at.get_or_insert(now + self.rtt.rto());
        if let Some(at) = self.probe_at(now) {
            self.tlp_at = Some(at);
        }
    }

    pub(super) fn retransmit(&mut self, now: Instant, i: usize, out: &mut Vec<Segment>) {
        let Some(s) = self.snd.segs.get(i) else {
            return;
        };
        let (start, len, syn, fin) = (s.start, s.len, s.syn, s.fin);
        let seg = if syn {
            self.syn_segment(now)
        } else {
            let payload = s.data_len();
            let control = if fin {
                TcpControl::Fin
            } else {
                TcpControl::None
            };
            // A full-sized segment has no room for SACK blocks.
            let sack_fits = payload + SACK_ROOM <= self.mss;
            self.segment(now, start, control, payload, sack_fits)
        };
        let tsval = self.tsval(now);
        self.snd.record_retransmit(i, now, tsval);
        if let Some(u) = &mut self.undo {
            if u.pending.len() < UNDO_MAX_RETRANSMISSIONS && !u.pending.contains(&start) {
                u.pending.push(start);
            } else {
                // Too many to be reordering, or sent twice: keep the cut.
                self.undo = None;
            }
        }
        if let Recovery::Fast { prr, .. } = &mut self.recovery {
            prr.on_send(len);
        }
        self.stats.segments_sent += 1;
        // Retransmitting the oldest segment in fast recovery restarts the
        // timer (as Linux does): a lost retransmission takes RACK a round
        // trip to notice, and the RTO must not fire in the meantime.
        if i == 0 && matches!(self.recovery, Recovery::Fast { .. }) {
            self.rto_at = Some(now + self.rtt.rto());
        } else {
            self.rto_at.get_or_insert(now + self.rtt.rto());
        }
        out.push(seg);
    }

    /// A non-SYN segment with ACK, window, timestamp and SACK blocks, and
    /// `payload` bytes of the send queue from `seq`.
    pub(super) fn segment(
        &mut self,
        now: Instant,
        seq: TcpSeqNumber,
        control: TcpControl,
        payload: usize,
        with_sack: bool,
    ) -> Segment {
        let mut s = self.bare(seq, control, Some(self.rcv.nxt()));
        self.last_ack_sent = self.rcv.nxt();
        let h = &mut s.header;
        h.window_len = self.advertise();
        if self.opts.timestamps {
            h.timestamp = Some(TcpTimestampRepr::new(self.tsval(now), self.ts_recent));
        }
        if self.opts.sack && with_sack {
            h.sack_ranges = self.rcv.sack_blocks();
        }
        s.len = payload;
        // Every segment carries an ACK: the delayed one is sent.
        self.ack_now = false;
        self.ack_at = None;
        self.unacked_bytes = 0;
        s
    }

    /// The window field for the next segment; never moves the right edge
    /// back (RFC 9293 (3.8.6.2.2)) nor forward by a sliver (receiver SWS).
    pub(super) fn advertise(&mut self) -> u16 {
        let nxt = self.rcv.nxt();
        let mut right = seq_add(nxt, self.rcv.window());
        let sliver = (self.rcv.capacity() / 2).min(self.mss);
        if right > self.rcv_adv && seq_dist(self.rcv_adv, right) < sliver && self.rcv_adv >= nxt {
            right = self.rcv_adv;
        }
        if right < self.rcv_adv {
            right = self.rcv_adv;
        }
        let shift = self.opts.rcv_shift;
        let field = (seq_dist(nxt, right) >> shift).min(65535);
        let edge = seq_add(nxt, field << shift);
        if edge > self.rcv_adv {
            self.rcv_adv = edge;
        }
        field as u16
    }
}
