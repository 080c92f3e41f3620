//! The connection's timers: when to be polled next, and what each expiry
//! does (delayed ACK, RACK's reordering timer, the RTO with its back-off,
//! the tail loss probe, window and keep-alive probes, TIME-WAIT's end).
//!
//! `poll_at` tells the caller when to call `poll`; `poll` (in `output`)
//! runs `on_timers` first, which may mark segments lost or send probes.

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{TcpControl, TcpSeqNumber};

use super::loss::{Recovery, Tlp};
use super::{ConnError, Connection, Event, Segment, State};

impl Connection {
    /// When `poll` should run next; `None` if nothing is pending. A time in
    /// the past means at once.
    pub fn poll_at(&self) -> Option<Instant> {
        if self.has_output() {
            return Some(self.now);
        }
        [
            self.rto_at,
            self.tlp_at,
            self.reo_at,
            self.ack_at,
            self.persist_at,
            self.time_wait_at,
            self.keepalive_at(),
            self.cork_deadline
                .filter(|_| self.corked && self.snd.unsent() > 0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(super) fn on_timers(&mut self, now: Instant, out: &mut Vec<Segment>) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.time_wait_at) {
            self.time_wait_at = None;
            self.state = self.state.on(Event::TimeWaitOver);
            return;
        }
        if due(self.ack_at) {
            self.ack_at = None;
            self.ack_now = true;
            // No answer came to carry it: not interactive after all.
            self.interactive = false;
        }
        if due(self.reo_at) {
            self.reo_at = None;
            self.detect_loss(now);
            self.after_loss_detection();
            if let Recovery::Fast { prr, .. } = &mut self.recovery {
                let (pipe, ssthresh, mss) = (self.snd.pipe(), self.cc.ssthresh(), self.mss);
                prr.on_ack(0, pipe, ssthresh, mss);
            }
        }
        if due(self.rto_at) {
            self.rto_at = None;
            self.on_rto(now);
            if self.state == State::Closed {
                return;
            }
        }
        if due(self.tlp_at) {
            self.tlp_at = None;
            self.send_probe(now, out);
        }
        if due(self.keepalive_at()) {
            self.send_keepalive(now, out);
            if self.state == State::Closed {
                return;
            }
        }
        if due(self.persist_at) {
            self.persist_at = None;
            if self.window_blocked() && self.snd.outstanding() == 0 {
                // A window probe: what the window holds even if it is less
                // than a segment (RFC 9293's override of sender SWS
                // avoidance), or one new byte beyond a zero window; the RTO
                // repeats it with back-off until the window opens.
                let len = self
                    .window_room()
                    .max(1)
                    .min(self.mss)
                    .min(self.snd.unsent());
                self.send_new(now, len, out);
                self.rto_at = Some(now + self.rtt.rto());
            }
        }
    }

    /// The next keep-alive probe: `idle` after the peer was last heard
    /// from, then every `interval`, while nothing is in flight or queued
    /// (other timers watch a busy connection).
    pub(super) fn keepalive_at(&self) -> Option<Instant> {
        let k = self.cfg.keepalive?;
        let watched = matches!(
            self.state,
            State::Established | State::CloseWait | State::FinWait2
        );
        if !watched || self.snd.outstanding() > 0 || self.snd.unsent() > 0 {
            return None;
        }
        let probes = Duration::from_micros(
            k.interval
                .total_micros()
                .saturating_mul(u64::from(self.keepalive_probes)),
        );
        Some(self.last_heard + k.idle + probes)
    }

    /// A keep-alive probe: an ACK one byte below snd.una, which the peer
    /// must answer (RFC 9293 (3.8.4)); or, after `count` unanswered ones,
    /// the end of the connection.
    pub(super) fn send_keepalive(&mut self, now: Instant, out: &mut Vec<Segment>) {
        let Some(k) = self.cfg.keepalive else {
            return;
        };
        if self.keepalive_probes >= k.count {
            out.push(self.bare(self.snd.nxt, TcpControl::Rst, None));
            self.reset(Some(ConnError::TimedOut));
            return;
        }
        self.keepalive_probes += 1;
        let seq = TcpSeqNumber(self.snd.una.0.wrapping_sub(1));
        let probe = self.segment(now, seq, TcpControl::None, 0, false);
        out.push(probe);
    }

    pub(super) fn on_rto(&mut self, now: Instant) {
        if self.snd.outstanding() == 0 {
            return;
        }
        let limit = if self.state.is_synchronized() {
            self.cfg.max_retries
        } else {
            self.cfg.syn_retries
        };
        // A zero window may stay shut for as long as the peer keeps
        // answering the probes (Linux counts unanswered probes alone).
        let probing_zero_window = self.snd_wnd == 0 && self.state.is_synchronized();
        let tries = if probing_zero_window {
            self.unanswered_probes
        } else {
            self.rtt.backoff_count()
        };
        if tries >= limit {
            if self.state.is_synchronized() || self.state == State::SynReceived {
                let rst = self.bare(self.snd.nxt, TcpControl::Rst, None);
                self.replies.push(rst);
            }
            self.reset(Some(ConnError::TimedOut));
            return;
        }
        if probing_zero_window {
            self.unanswered_probes += 1;
        } else {
            let first = !matches!(self.recovery, Recovery::Timeout { .. });
            self.cc.on_rto(self.snd.outstanding(), first);
            self.recovery = Recovery::Timeout {
                until: self.snd.nxt,
            };
            self.stats.rto_expiries += 1;
        }
        // A timeout's response is not undone (Linux's F-RTO is not here).
        self.undo = None;
        self.snd.mark_all_lost();
        self.rtt.back_off();
        self.rto_at = Some(now + self.rtt.rto());
        self.tlp_at = None;
        self.reo_at = None;
        self.tlp = Tlp::default();
    }

    /// The tail loss probe (RFC 8985 (7.3)): new data if the window allows,
    /// else the last segment again, regardless of cwnd. In fast recovery
    /// with segments still marked lost, the first of them instead: the
    /// quota that held it back waits for ACKs that are not coming.
    ///
    /// RFC 8985 sends one probe, then waits for the RTO. With a 200 ms RTO
    /// floor and a LAN's RTT that is thousands of round trips, and a lost
    /// probe is as likely as any lost segment; so an unanswered probe is
    /// followed by others, each waiting twice as long, for as long as that
    /// is sooner than the RTO (`probe_at`).
    pub(super) fn send_probe(&mut self, now: Instant, out: &mut Vec<Segment>) {
        if !self.probe_allowed() || self.snd.outstanding() == 0 {
            return;
        }
        let room = self.window_room();
        let unsent = self.snd.unsent();
        let in_recovery = matches!(self.recovery, Recovery::Fast { .. });
        let retransmission = if in_recovery && let Some(i) = self.snd.next_lost() {
            self.retransmit(now, i, out);
            true
        } else if unsent > 0 && room > 0 {
            self.send_new(now, unsent.min(room).min(self.mss), out);
            false
        } else if let Some(i) = (0..self.snd.segs.len())
            .rev()
            .find(|&i| !self.snd.segs[i].sacked)
        {
            self.retransmit(now, i, out);
            true
        } else {
            return;
        };
        self.stats.tail_loss_probes += 1;
        self.probe_backoff += 1;
        // `poll` arms the next one, if any.
        self.tlp_at = None;
        // Outside recovery the first probe of an episode is the one whose
        // answer may call for a congestion response (`process_ack`).
        if !in_recovery && self.tlp.end.is_none() {
            self.tlp.end = Some(self.snd.nxt);
            self.tlp.was_retransmission = retransmission;
            self.tlp.dsacked = false;
            self.rto_at = Some(now + self.rtt.rto());
        }
    }
}
