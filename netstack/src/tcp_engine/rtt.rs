//! Round-trip time estimation and the retransmission timeout (RFC 6298).
//!
//! Samples come in from the ACK path (`Connection::input`): either the time
//! since a segment that was sent once was sent (Karn's rule keeps
//! retransmitted segments out), or the age of the echoed timestamp
//! (RFC 7323), which is unambiguous even for retransmissions. Out go the
//! smoothed RTT, the latest and the minimum RTT (for RACK and TLP) and the
//! RTO, which the caller backs off after each expiry.

use smoltcp::time::Duration;

/// Linux's `TCP_RTO_MIN`: RFC 6298's 1 s floor makes every tail loss a
/// second-long stall on a LAN.
pub const MIN_RTO: Duration = Duration::from_millis(200);
/// RFC 6298 (2.5): a maximum of at least 60 s; Linux's `TCP_RTO_MAX` is 120 s.
pub const MAX_RTO: Duration = Duration::from_secs(120);
/// RFC 6298 (2.1): before any sample.
pub const INITIAL_RTO: Duration = Duration::from_secs(1);
/// The clock granularity G of RFC 6298 (2.3): our clock is microseconds, but
/// a timer never fires sooner than the caller polls, so allow a millisecond.
const GRANULARITY: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min: Option<Duration>,
    /// Consecutive expiries since the last new acknowledgement.
    backoff: u32,
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self::new()
    }
}

impl RttEstimator {
    pub fn new() -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            min: None,
            backoff: 0,
        }
    }

    /// Feeds one measurement timed with our own clock (RFC 6298 (2.2) and
    /// (2.3), alpha 1/8, beta 1/4).
    pub fn sample(&mut self, rtt: Duration) {
        // A microsecond is the clock's resolution.
        let rtt = rtt.max(Duration::from_micros(1));
        self.min = Some(self.min.map_or(rtt, |m| m.min(rtt)));
        self.smooth(rtt);
    }

    /// Feeds a measurement from an echoed timestamp: millisecond ticks, so
    /// a 0 may mean anything below a millisecond. It is not a minimum, which
    /// RACK's reordering window is made of; a 0 is no sample at all.
    pub fn sample_coarse(&mut self, rtt: Duration) {
        if rtt >= Duration::from_millis(1) {
            self.smooth(rtt);
        }
    }

    fn smooth(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = Duration::from_micros(rtt.total_micros() / 2);
            }
            Some(srtt) => {
                let (s, r, v) = (
                    srtt.total_micros(),
                    rtt.total_micros(),
                    self.rttvar.total_micros(),
                );
                let err = s.abs_diff(r);
                self.rttvar = Duration::from_micros((3 * v + err) / 4);
                self.srtt = Some(Duration::from_micros((7 * s + r) / 8));
            }
        }
    }

    /// A new acknowledgement ends the back-off (RFC 6298 (5.7) keeps the
    /// backed-off value until a new sample; Linux resets on new data acked).
    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// One expiry: the next timeout is twice as long (RFC 6298 (5.5)).
    pub fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
    }

    pub fn backoff_count(&self) -> u32 {
        self.backoff
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub fn min_rtt(&self) -> Option<Duration> {
        self.min
    }

    /// The timeout before back-off: SRTT + max(G, 4 RTTVAR), within
    /// [`MIN_RTO`, `MAX_RTO`].
    pub fn base_rto(&self) -> Duration {
        match self.srtt {
            None => INITIAL_RTO,
            Some(srtt) => {
                let var = Duration::from_micros(4 * self.rttvar.total_micros()).max(GRANULARITY);
                (srtt + var).clamp(MIN_RTO, MAX_RTO)
            }
        }
    }

    /// The timeout to arm now, with the back-off applied.
    pub fn rto(&self) -> Duration {
        let base = self.base_rto().total_micros();
        let shift = self.backoff.min(20);
        Duration::from_micros(base.saturating_mul(1 << shift)).min(MAX_RTO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_backoff_and_cap() {
        let mut r = RttEstimator::new();
        assert_eq!(r.rto(), INITIAL_RTO);
        r.sample(Duration::from_micros(100));
        assert_eq!(r.rto(), MIN_RTO, "a LAN RTT still waits the 200 ms floor");
        r.back_off();
        assert_eq!(r.rto(), Duration::from_millis(400));
        r.back_off();
        assert_eq!(r.rto(), Duration::from_millis(800));
        for _ in 0..30 {
            r.back_off();
        }
        assert_eq!(r.rto(), MAX_RTO);
        r.reset_backoff();
        assert_eq!(r.rto(), MIN_RTO);
    }

    #[test]
    fn long_rtt_sets_rto_above_floor() {
        let mut r = RttEstimator::new();
        for _ in 0..50 {
            r.sample(Duration::from_millis(100));
        }
        // SRTT 100 ms, RTTVAR decays toward 0: RTO tends to SRTT + G.
        let rto = r.rto();
        assert!(rto >= Duration::from_millis(200) && rto < Duration::from_millis(300));
        r.sample(Duration::from_millis(300));
        assert!(r.rto() > Duration::from_millis(300));
        assert_eq!(r.min_rtt(), Some(Duration::from_millis(100)));
    }
}
