//! Congestion control: how much may be in flight.
//!
//! The ACK path reports delivered bytes (`on_ack`), the loss detector reports
//! congestion (`on_congestion`, `on_rto`), and the sender asks for the window
//! (`cwnd`) or, during fast recovery, for its PRR quota (`Prr`). Growth
//! counts bytes, not ACKs (RFC 3465, limit L = 2 SMSS), so delayed or
//! stretched ACKs grow the window as fast as per-segment ones. Congestion
//! avoidance is CUBIC (RFC 9438) with its Reno-friendly estimate, or plain
//! Reno; fast recovery sends by Proportional Rate Reduction (RFC 6937). The
//! first slow start ends early when the RTT starts to climb (HyStart++,
//! RFC 9406), before a full queue costs a window's worth of losses.

use smoltcp::time::{Duration, Instant};

/// Which congestion avoidance algorithm grows the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// RFC 9438, as Linux's default.
    #[default]
    Cubic,
    /// RFC 5681 with byte counting.
    Reno,
}

/// RFC 6928: ten segments.
const INITIAL_WINDOW_SEGMENTS: usize = 10;
/// RFC 3465's L: slow start grows at most 2 SMSS per ACK.
const ABC_LIMIT_SEGMENTS: usize = 2;
/// RFC 9438 (4.6): beta_cubic.
const CUBIC_BETA: f64 = 0.7;
/// RFC 9438 (5): C, in segments per second cubed.
const CUBIC_C: f64 = 0.4;
/// RFC 9406 (4.3): the delay increase that ends slow start lies within
/// [4 ms, 16 ms], an eighth of the RTT; it needs 8 samples a round.
const HYSTART_MIN_RTT_THRESH: Duration = Duration::from_millis(4);
const HYSTART_MAX_RTT_THRESH: Duration = Duration::from_millis(16);
const HYSTART_SAMPLES: u32 = 8;
/// Conservative slow start grows a quarter as fast, for 5 rounds.
const CSS_GROWTH_DIVISOR: f64 = 4.0;
const CSS_ROUNDS: u32 = 5;

#[derive(Debug, Clone)]
pub struct Congestion {
    algorithm: Algorithm,
    mss: usize,
    /// In bytes; fractional so that slow per-ACK growth is not lost.
    cwnd: f64,
    ssthresh: usize,
    /// Reno's byte counter in congestion avoidance (RFC 3465 (2.1)).
    bytes_acked: usize,
    cubic: Cubic,
    hystart: HyStart,
}

/// HyStart++'s per-round RTT minima.
#[derive(Debug, Clone, Default)]
struct HyStart {
    last_round_min: Option<Duration>,
    round_min: Option<Duration>,
    samples: u32,
    /// In conservative slow start: the RTT that started it, and rounds so far.
    css: Option<(Duration, u32)>,
}

#[derive(Debug, Clone, Default)]
struct Cubic {
    /// W_max, in segments.
    w_max: f64,
    /// The time of the current congestion avoidance epoch, with K and the
    /// Reno-friendly estimate W_est (segments).
    epoch: Option<Instant>,
    k: f64,
    w_est: f64,
}

impl Congestion {
    pub fn new(algorithm: Algorithm, mss: usize) -> Self {
        let mss = mss.max(1);
        Congestion {
            algorithm,
            mss,
            cwnd: (INITIAL_WINDOW_SEGMENTS * mss) as f64,
            ssthresh: usize::MAX,
            bytes_acked: 0,
            cubic: Cubic::default(),
            hystart: HyStart::default(),
        }
    }

    /// The MSS can shrink once the handshake is done; keep the window in
    /// segments.
    pub fn set_mss(&mut self, mss: usize) {
        let mss = mss.max(1);
        if self.ssthresh == usize::MAX && mss != self.mss {
            self.cwnd = (INITIAL_WINDOW_SEGMENTS * mss) as f64;
        }
        self.mss = mss;
    }

    pub fn cwnd(&self) -> usize {
        self.cwnd as usize
    }

    pub fn ssthresh(&self) -> usize {
        self.ssthresh
    }

    pub fn in_slow_start(&self) -> bool {
        self.cwnd() < self.ssthresh
    }

    /// `acked` bytes were newly delivered outside recovery. `app_limited`:
    /// the window was not full, so it has not been tested and must not grow
    /// (RFC 7661's spirit; Linux's `tcp_is_cwnd_limited`).
    pub fn on_ack(&mut self, now: Instant, acked: usize, rtt: Duration, cwnd_limited: bool) {
        if acked == 0 || !cwnd_limited {
            return;
        }
        let mss = self.mss as f64;
        if self.in_slow_start() {
            let mut grow = acked.min(ABC_LIMIT_SEGMENTS * self.mss) as f64;
            if self.hystart.css.is_some() {
                grow /= CSS_GROWTH_DIVISOR;
            }
            self.cwnd = (self.cwnd + grow).min(self.ssthresh.max(self.mss) as f64);
            return;
        }
        match self.algorithm {
            Algorithm::Reno => {
                self.bytes_acked += acked;
                if self.bytes_acked >= self.cwnd() {
                    self.bytes_acked -= self.cwnd();
                    self.cwnd += mss;
                }
            }
            Algorithm::Cubic => {
                let c = &mut self.cubic;
                let cwnd_seg = self.cwnd / mss;
                let epoch = *c.epoch.get_or_insert_with(|| {
                    // RFC 9438 (4.2): a new epoch starts at the first ACK of
                    // congestion avoidance.
                    if c.w_max < cwnd_seg {
                        c.k = 0.0;
                        c.w_max = cwnd_seg;
                    } else {
                        c.k = ((c.w_max - cwnd_seg) / CUBIC_C).cbrt();
                    }
                    c.w_est = cwnd_seg;
                    now
                });
                let t = (now - epoch).total_micros() as f64 / 1e6;
                let rtt_s = rtt.total_micros() as f64 / 1e6;
                let w_cubic = |t: f64| CUBIC_C * (t - c.k).powi(3) + c.w_max;
                let acked_seg = acked as f64 / mss;
                // RFC 9438 (4.3): alpha_cubic until W_est reaches W_max, then 1.
                let alpha = if c.w_est >= c.w_max {
                    1.0
                } else {
                    3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA)
                };
                c.w_est += alpha * acked_seg / cwnd_seg;
                if w_cubic(t) < c.w_est {
                    // Reno-friendly region.
                    self.cwnd = self.cwnd.max(c.w_est * mss);
                } else {
                    let target = w_cubic(t + rtt_s).clamp(cwnd_seg, 1.5 * cwnd_seg);
                    self.cwnd += (target - cwnd_seg) / cwnd_seg * acked_seg * mss;
                }
            }
        }
    }

    /// HyStart++ applies to the first slow start only (RFC 9406 (4.2)).
    fn initial_slow_start(&self) -> bool {
        self.ssthresh == usize::MAX
    }

    /// A new round began (the ACK covered what was outstanding when the
    /// last one began).
    pub fn on_round_start(&mut self) {
        if !self.initial_slow_start() {
            return;
        }
        let h = &mut self.hystart;
        h.last_round_min = h.round_min.take();
        h.samples = 0;
        if let Some((base, rounds)) = h.css {
            if rounds + 1 >= CSS_ROUNDS {
                // The delay rise held: slow start is over.
                h.css = None;
                self.ssthresh = self.cwnd().max(2 * self.mss);
            } else {
                h.css = Some((base, rounds + 1));
            }
        }
    }

    /// An RTT measured on this ACK.
    pub fn on_rtt_sample(&mut self, rtt: Duration) {
        if !self.initial_slow_start() {
            return;
        }
        let h = &mut self.hystart;
        let min = h.round_min.map_or(rtt, |m| m.min(rtt));
        h.round_min = Some(min);
        h.samples += 1;
        match (h.css, h.last_round_min) {
            (None, Some(last)) if h.samples >= HYSTART_SAMPLES => {
                let thresh = Duration::from_micros(last.total_micros() / 8)
                    .clamp(HYSTART_MIN_RTT_THRESH, HYSTART_MAX_RTT_THRESH);
                if min >= last + thresh {
                    h.css = Some((min, 0));
                }
            }
            // The rise was a blip: back to slow start (RFC 9406 (4.3)).
            (Some((base, _)), _) if min < base => h.css = None,
            _ => {}
        }
    }

    /// A loss was detected (once per round trip): set ssthresh; the window
    /// itself is brought there by PRR during recovery.
    pub fn on_congestion(&mut self, flight: usize) {
        let mss = self.mss as f64;
        let cwnd_seg = self.cwnd / mss;
        let beta = match self.algorithm {
            Algorithm::Cubic => {
                let c = &mut self.cubic;
                // RFC 9438 (4.7): fast convergence releases bandwidth to a
                // newer flow when this one's maximum keeps falling.
                c.w_max = if cwnd_seg < c.w_max {
                    cwnd_seg * (1.0 + CUBIC_BETA) / 2.0
                } else {
                    cwnd_seg
                };
                c.epoch = None;
                CUBIC_BETA
            }
            Algorithm::Reno => 0.5,
        };
        // RFC 5681 (4): on the data in flight, bounded by the window.
        let base = self.cwnd.min(flight.max(self.mss) as f64);
        self.ssthresh = ((base * beta) as usize).max(2 * self.mss);
        self.bytes_acked = 0;
    }

    /// A congestion response proved needless: back to the state before it
    /// (never below where the window is now).
    pub fn undo(&mut self, prior: &Congestion) {
        self.cwnd = self.cwnd.max(prior.cwnd);
        self.ssthresh = self.ssthresh.max(prior.ssthresh);
        self.cubic = prior.cubic.clone();
        self.bytes_acked = 0;
    }

    /// Recovery ended: continue from ssthresh (RFC 6937: cwnd = ssthresh).
    pub fn on_recovery_end(&mut self) {
        if self.ssthresh != usize::MAX {
            self.cwnd = self.ssthresh as f64;
        }
    }

    /// The retransmission timer fired. `first` is false for a further
    /// expiry of the same episode, which must not lower ssthresh again
    /// (RFC 5681 (4.3) eq. 4 applies to the first).
    pub fn on_rto(&mut self, flight: usize, first: bool) {
        if first {
            self.on_congestion(flight);
        }
        self.cwnd = self.mss as f64;
    }
}

/// Proportional Rate Reduction (RFC 6937) during one fast recovery.
#[derive(Debug, Clone)]
pub struct Prr {
    recover_fs: usize,
    delivered: usize,
    out: usize,
    /// What may still be sent since the last ACK.
    quota: usize,
}

impl Prr {
    /// `flight`: snd.nxt - snd.una when recovery starts (RecoverFS).
    pub fn new(flight: usize) -> Self {
        Prr {
            recover_fs: flight.max(1),
            delivered: 0,
            out: 0,
            quota: 0,
        }
    }

    /// One ACK delivered `delivered` bytes; `pipe` is what is still in
    /// flight. Sets how much may be sent in answer.
    pub fn on_ack(&mut self, delivered: usize, pipe: usize, ssthresh: usize, mss: usize) {
        self.delivered += delivered;
        let sndcnt = if pipe > ssthresh {
            // Proportional part: ceil(delivered * ssthresh / RecoverFS) - out.
            let target = (self.delivered as u128 * ssthresh as u128)
                .div_ceil(self.recover_fs as u128) as usize;
            target.saturating_sub(self.out)
        } else {
            // Slow-start reduction bound (PRR-SSRB).
            let limit = self.delivered.saturating_sub(self.out).max(delivered) + mss;
            ssthresh.saturating_sub(pipe).min(limit)
        };
        self.quota = sndcnt;
        // RFC 6937 (and Linux): a retransmission may always go out on the
        // first ACK of recovery, or the hole waits for the RTO.
        if self.out == 0 && self.quota == 0 {
            self.quota = mss;
        }
    }

    pub fn quota(&self) -> usize {
        self.quota
    }

    pub fn on_send(&mut self, bytes: usize) {
        self.out += bytes;
        self.quota = self.quota.saturating_sub(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;

    #[test]
    fn slow_start_counts_bytes_with_limit() {
        let mut c = Congestion::new(Algorithm::Cubic, MSS);
        let now = Instant::ZERO;
        let rtt = Duration::from_millis(1);
        assert_eq!(c.cwnd(), 10 * MSS);
        // One stretch ACK of 8 segments grows by L = 2 segments only.
        c.on_ack(now, 8 * MSS, rtt, true);
        assert_eq!(c.cwnd(), 12 * MSS);
        // Many small ACKs: exactly their bytes.
        for _ in 0..4 {
            c.on_ack(now, MSS / 2, rtt, true);
        }
        assert_eq!(c.cwnd(), 14 * MSS);
        // Not cwnd-limited: no growth.
        c.on_ack(now, MSS, rtt, false);
        assert_eq!(c.cwnd(), 14 * MSS);
    }

    #[test]
    fn hystart_ends_slow_start_when_the_rtt_climbs() {
        let mut c = Congestion::new(Algorithm::Cubic, MSS);
        let now = Instant::ZERO;
        let base = Duration::from_millis(20);
        // Two rounds at the base RTT: still slow start.
        for round in 0..2 {
            c.on_round_start();
            for _ in 0..10 {
                c.on_rtt_sample(base);
                c.on_ack(now, 2 * MSS, base, true);
            }
            assert!(c.in_slow_start(), "round {round}");
        }
        // A round whose RTT is 5 ms higher (over max(20/8, 4) ms): CSS,
        // growing at a quarter of the rate.
        c.on_round_start();
        for _ in 0..10 {
            c.on_rtt_sample(base + Duration::from_millis(5));
        }
        let before = c.cwnd();
        c.on_ack(now, 2 * MSS, base, true);
        assert_eq!(c.cwnd() - before, MSS / 2);
        // Five rounds of CSS end slow start for good.
        for _ in 0..5 {
            c.on_round_start();
            for _ in 0..10 {
                c.on_rtt_sample(base + Duration::from_millis(5));
            }
        }
        assert!(!c.in_slow_start());
        assert_eq!(c.ssthresh(), c.cwnd());
    }

    #[test]
    fn cubic_reduces_by_beta_and_regrows_to_wmax() {
        let mut c = Congestion::new(Algorithm::Cubic, MSS);
        c.cwnd = (100 * MSS) as f64;
        c.on_congestion(100 * MSS);
        assert_eq!(c.ssthresh(), 70 * MSS);
        c.on_recovery_end();
        assert_eq!(c.cwnd(), 70 * MSS);
        // K = cbrt(30 / 0.4) ≈ 4.2 s: after ~K seconds of ACKs cwnd is near
        // W_max. (At 100 ms the cubic curve is above the Reno-friendly one.)
        let rtt = Duration::from_millis(100);
        let mut now = Instant::ZERO;
        for _ in 0..42 {
            now += rtt;
            let w = c.cwnd();
            c.on_ack(now, w, rtt, true);
        }
        let w = c.cwnd() / MSS;
        assert!((95..=110).contains(&w), "cwnd {w} segments after K");
    }

    #[test]
    fn reno_adds_one_segment_per_window() {
        let mut c = Congestion::new(Algorithm::Reno, MSS);
        c.cwnd = (20 * MSS) as f64;
        c.on_congestion(20 * MSS);
        c.on_recovery_end();
        assert_eq!(c.cwnd(), 10 * MSS);
        let now = Instant::ZERO;
        for _ in 0..10 {
            c.on_ack(now, MSS, Duration::from_millis(1), true);
        }
        assert_eq!(c.cwnd(), 11 * MSS);
        c.on_rto(11 * MSS, true);
        assert_eq!(c.cwnd(), MSS);
        assert_eq!(c.ssthresh(), 5 * MSS + MSS / 2);
    }

    #[test]
    fn prr_spreads_the_reduction_over_the_round() {
        // 20 segments in flight, ssthresh 14: 14 segments go out while 20 are delivered.
        let mut p = Prr::new(20 * MSS);
        let mut pipe = 19 * MSS; // one lost
        let mut sent = 0;
        for _ in 0..19 {
            pipe -= MSS;
            p.on_ack(MSS, pipe, 14 * MSS, MSS);
            let q = p.quota();
            p.on_send(q);
            pipe += q;
            sent += q;
        }
        assert!((13 * MSS..=15 * MSS).contains(&sent), "sent {sent}");
    }
}
